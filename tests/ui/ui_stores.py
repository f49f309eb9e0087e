"""Stores with known content for the dashboard tests, written through the real `tunescope.init`."""

from __future__ import annotations

import math
from pathlib import Path

import tunescope

XSS = "<img src=x onerror=alert(1)>"


def spiky(store: Path, n: int = 5_000, spike_at: int = 3_217) -> str:
    """A run whose train/loss has one-step spike, a NaN and an inf; returns the run id."""
    with tunescope.init("ui-test", name="spiky", store=store) as run:
        for i in range(n):
            v = 2.0 * math.exp(-i / 1500) + 0.01 * math.sin(i)
            if i == spike_at:
                v = 40.0
            elif i == 4_000:
                v = math.nan
            elif i == 4_500:
                v = math.inf
            run.log({"train/loss": v}, step=i)
        return run.id


def annotated(store: Path) -> str:
    """A finished run with eval/test metrics, a finding raised then updated, an intervention,
    a rollback, a confusion matrix and hostile strings everywhere a user can put one."""
    config = {"lr": 3e-5, "model": {"name": XSS, "layers": 2}, "note": "a & b < c"}
    with tunescope.init("ui-test", name=XSS, config=config, store=store) as run:
        for step in range(0, 60):
            run.log({"train/loss": 2.0 - step * 0.02, f"train/{XSS}": float(step)}, step=step)
            if step % 10 == 9:
                run.log(
                    {"eval/loss": 1.5 - step * 0.005, "eval/accuracy": 0.5 + step * 0.004},
                    step=step,
                )
        run.event(
            "finding",
            "overfitting",
            f"eval/loss rose 12% while train/loss fell {XSS}",
            severity="warning",
            step=40,
            ref="f1",
            data={"first_step": 30, "last_step": 40, "state": "raised", "recommendation": "stop"},
        )
        run.event(
            "finding",
            "overfitting",
            "eval/loss rose 20% while train/loss fell",
            severity="critical",
            step=50,
            ref="f1",
            data={"first_step": 30, "last_step": 50, "state": "updated", "recommendation": "stop"},
        )
        run.event(
            "finding",
            "plateau",
            "eval/accuracy flat for 3 evaluations",
            severity="info",
            step=45,
            ref="f2",
            data={"first_step": 35, "last_step": 45},
        )
        run.event(
            "intervention",
            "rollback",
            "rolled back to step 40 after overfitting",
            step=55,
            data={"before": 55, "after": 40, "finding": "f1"},
        )
        for step in range(41, 50):  # the rollback: a new segment from step 41
            run.log({"train/loss": 1.3 - step * 0.01}, step=step)
        run.summarize(
            {
                "test/accuracy": 0.91,
                "test/f1": 0.9,
                "test/confusion_matrix": [[5, 1], [0, 4]],
                "test/labels": [XSS, "sport"],
            }
        )
        return run.id


def diverged(store: Path) -> str:
    """A run that crashed into NaN: its last logged value is NaN, its status `failed`."""
    run = tunescope.init("ui-test", name="diverged", store=store)
    for i in range(100):
        run.log({"train/loss": 1.0 / (i + 1), "train/grad_norm": 1.0}, step=i)
    run.log({"train/loss": math.nan, "train/grad_norm": math.inf}, step=100)
    run.finish("failed")
    return run.id
