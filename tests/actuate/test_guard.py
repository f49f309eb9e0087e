"""`Guard` in a plain PyTorch loop, with the real monitor and policy deciding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tunescope
from tunescope.policy import PolicyConfig
from tunescope.store import Store

from . import tiny


def _loop(
    guard: Any,
    net: torch.nn.Module,
    opt: Any,
    sched: Any,
    steps: int,
    sabotage: dict[int, float] | None = None,
) -> list[int]:
    """Train `steps` optimizer steps; at the given steps multiply the schedule's base LR (a bad
    setting that persists until a rollback restores the scheduler). Returns the steps logged."""
    logged = []
    for i in range(1, steps + 1):
        if sabotage and i in sabotage:
            sched.base_lrs = [b * sabotage[i] for b in sched.base_lrs]
        loss = tiny.train_step(net, opt, sched, i)
        stop = guard.step({"train/loss": loss})
        logged.append(guard.global_step)
        if stop:
            break
    return logged


def test_divergence_is_rolled_back_and_training_recovers(store_dir: Path) -> None:
    run = tunescope.init("guard", name="diverge", mode="act")
    net = tiny.model()
    opt = tiny.optimizer(net)
    sched = tiny.scheduler(opt, total=200)
    guard = tunescope.Guard(run, net, opt, sched, snapshot_every=20, check_every=5)
    _loop(guard, net, opt, sched, 120, sabotage={50: 1e6})
    guard.finish()
    run.finish()
    reader = Store().reader()
    events = reader.events(run.id)
    acts = [(e.kind, e.data["after"].get("step")) for e in events if e.type == "intervention"]
    assert acts[0] == ("rollback", 40)  # the last snapshot before the blow-up at step 50
    assert acts[1][0] == "scale_lr"
    divergence = next(e for e in events if e.type == "finding" and e.kind == "divergence")
    assert events[[e.type for e in events].index("intervention")].ref == divergence.ref
    # The abandoned points stay; the resumed ones form a new segment from step 41.
    loss = reader.series(run.id, "train/loss")
    assert set(loss.segs.tolist()) == {0, 1}
    resumed = loss.steps[loss.segs == 1]
    assert resumed[0] == 41 and resumed[-1] > 50
    # The restored scheduler no longer holds the sabotage; the LR is halved.
    assert sched.base_lrs == pytest.approx([0.5e-2])
    assert np.isfinite(loss.values[loss.segs == 1][-10:]).all()
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert not guard.should_stop


def test_rollbacks_are_limited_then_the_run_stops(store_dir: Path) -> None:
    run = tunescope.init("guard", mode="act", policy=PolicyConfig(max_rollbacks=1))
    net = tiny.model()
    opt = tiny.optimizer(net)
    sched = tiny.scheduler(opt, total=300)
    guard = tunescope.Guard(run, net, opt, sched, snapshot_every=20, check_every=5)
    logged = _loop(guard, net, opt, sched, 200, sabotage={50: 1e6, 90: 1e6})
    assert guard.should_stop and logged[-1] < 120
    guard.finish()
    run.finish()
    kinds = [e.kind for e in Store().reader().events(run.id, types=["intervention"])]
    assert kinds.count("rollback") == 1
    assert kinds[-2:] == ["restore_best", "stop"]


def test_overfitting_stops_and_restores_the_best_weights(store_dir: Path) -> None:
    run = tunescope.init("guard", mode="act")
    net = tiny.model()
    opt = tiny.optimizer(net)
    sched = tiny.scheduler(opt, total=1000)
    guard = tunescope.Guard(run, net, opt, sched, best_metric="eval/loss", check_every=5)
    # Real training; a scripted validation curve: best at the 4th evaluation, then rising.
    evals = [1.0, 0.8, 0.6, 0.5, 0.56, 0.64, 0.75, 0.9, 1.1, 1.3]
    weights = {}
    for value in evals:
        stop = False
        for _ in range(10):
            stop = guard.step({"train/loss": tiny.train_step(net, opt, sched, guard.global_step)})
        weights[guard.global_step] = tiny.weights(net)
        if stop or guard.log({"eval/loss": value, "eval/accuracy": 1 - value / 2}):
            break
    assert guard.should_stop and len(weights) < len(evals)
    assert tiny.same(tiny.weights(net), weights[40])
    guard.finish()
    run.finish()
    events = Store().reader().events(run.id, types=["intervention"])
    restore = next(e for e in events if e.kind == "restore_best")
    assert restore.data["after"] == {"step": 40, "metric": "eval/loss", "value": 0.5}
    assert restore.data["finding_kind"] == "overfitting"


@pytest.mark.parametrize("mode", ["observe", "advise"])
def test_other_modes_change_nothing(store_dir: Path, mode: str) -> None:
    def train(guarded: bool) -> dict[str, torch.Tensor]:
        net = tiny.model()
        opt = tiny.optimizer(net)
        sched = tiny.scheduler(opt)
        run = tunescope.init("guard", mode=mode) if guarded else None
        guard = tunescope.Guard(run, net, opt, sched) if run is not None else None
        for i in range(1, 41):
            loss = tiny.train_step(net, opt, sched, i)
            if guard is not None:
                assert not guard.step({"train/loss": loss})
        if run is not None:
            assert guard is not None and not guard.acting and guard.global_step == 40
            run.finish()
        return tiny.weights(net)

    assert tiny.same(train(False), train(True))


def test_state_dict_round_trips(store_dir: Path) -> None:
    run = tunescope.init("guard", mode="act")
    net = tiny.model()
    opt = tiny.optimizer(net)
    guard = tunescope.Guard(run, net, opt)
    for _ in range(3):
        guard.step()
    guard.actuator.scale = guard.actuator.applied = 0.25  # type: ignore[union-attr]
    other = tunescope.Guard(run, net, opt)
    other.load_state_dict(guard.state_dict())
    assert (
        other.state_dict()
        == guard.state_dict()
        == {
            "global_step": 3,
            "should_stop": False,
            "lr_scale": 0.25,
            "applied": 0.25,
        }
    )
    with pytest.raises(ValueError, match="snapshot_every"):
        tunescope.Guard(run, net, opt, snapshot_every=0)
    run.finish()
