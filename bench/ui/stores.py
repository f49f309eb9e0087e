"""The stores the dashboard benchmarks read, written once through `tunescope.init` and cached
under bench/.cache/ui/ (delete that folder to rebuild)."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import tunescope

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "ui"

SPIKE = 25.0
SPIKES_1M = [123_457, 654_321, 987_653]
NAN_1M, INF_1M = 800_000, 900_000
SPIKES_100K = [12_345, 33_333, 50_505, 71_717, 88_888]
NAN_100K, INF_100K = 60_000, 95_000


def spiky_values(n: int, spikes: list[int], nan: int, inf: int, seed: int = 0) -> np.ndarray:
    """A decaying noisy loss with one-step spikes, one NaN and one +inf."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    v = 2.0 * np.exp(-steps / (n / 5)) + 0.3 + 0.05 * rng.standard_normal(n)
    v[spikes] = SPIKE
    v[nan] = math.nan
    v[inf] = math.inf
    return v


def _build(path: Path, fill: Callable[[Path], None]) -> Path:
    done = path / ".complete"
    if done.exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    fill(path)
    done.write_text(f"{time.perf_counter() - t0:.1f} s to build\n")
    return path


def series_store(n: int, spikes: list[int], nan: int, inf: int) -> Path:
    """One run `spiky-<n>` logging `n` points of `spiky_values`."""

    def fill(path: Path) -> None:
        values = spiky_values(n, spikes, nan, inf).tolist()
        with tunescope.init("bench-ui", name=f"spiky-{n}", store=path) as run:
            for step, v in enumerate(values):
                run.log({"train/loss": v}, step=step)

    return _build(CACHE / f"series-{n}", fill)


def many_runs_store(runs: int = 1_000) -> Path:
    """`runs` finished runs, each with train/eval/test metrics, a config and findings."""

    def fill(path: Path) -> None:
        for i in range(runs):
            cfg = {"lr": 1e-5 * (1 + i % 7), "batch": 16, "model": {"layers": 2 + i % 3}}
            with tunescope.init(f"proj-{i % 10}", name=f"run-{i}", config=cfg, store=path) as run:
                for step in range(100):
                    run.log({"train/loss": 2.0 / (1 + step + i % 5)}, step=step)
                    if step % 10 == 9:
                        run.log(
                            {"eval/loss": 1.0 / (step + 1), "eval/accuracy": step / 100}, step=step
                        )
                run.event("finding", "plateau", "flat", severity="info", step=50, ref="a")
                run.event("finding", "overfitting", "up", severity="warning", step=60, ref="b")
                run.event(
                    "finding", "overfitting", "up more", severity="critical", step=70, ref="b"
                )
                run.summarize({"test/accuracy": 0.8 + (i % 10) / 100})

    return _build(CACHE / f"runs-{runs}", fill)


def page_store(charts: int = 20, points: int = 10_000) -> Path:
    """One run with `charts` metrics of `points` points each, and a few findings."""

    def fill(path: Path) -> None:
        groups = ["train", "eval", "probe", "sys"]
        keys = [f"{groups[k % 4]}/metric_{k:02d}" for k in range(charts)]
        rng = np.random.default_rng(1)
        data = {
            k: (np.exp(-np.arange(points) / 3000) + 0.05 * rng.standard_normal(points)).tolist()
            for k in keys
        }
        with tunescope.init("bench-ui", name="page-20", store=path) as run:
            for step in range(points):
                run.log({k: data[k][step] for k in keys}, step=step)
            for j, s in enumerate((1_000, 4_000, 7_000)):
                run.event(
                    "finding",
                    "loss_spike",
                    f"spike {j}",
                    severity="warning",
                    step=s,
                    ref=f"f{j}",
                    data={"first_step": s - 200, "last_step": s},
                )

    return _build(CACHE / f"page-{charts}x{points}", fill)
