"""The actuator applies interventions exactly, records each one, and respects the order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import tunescope
from tunescope.actuate import Actuator
from tunescope.actuate.actuator import timeline
from tunescope.actuate.lrscale import learning_rates
from tunescope.store import Store

from . import tiny


def _item(action: str, **params: Any) -> dict[str, Any]:
    return {
        "action": action,
        "step": 0,
        "finding": f"divergence@{params.get('before_step', 0)}",
        "kind": "divergence",
        "params": params,
        "reason": f"test {action}",
    }


def _setup(store_dir: Path, **kw: Any) -> tuple[Any, torch.nn.Module, Any, Any, Actuator]:
    run = tunescope.init("act", mode="act")
    net = tiny.model()
    opt = tiny.optimizer(net)
    sched = tiny.scheduler(opt)
    return run, net, opt, sched, Actuator(run, net, opt, sched, **kw)


def test_rollback_restores_and_keeps_earlier_lr_reductions(store_dir: Path) -> None:
    run, net, opt, sched, act = _setup(store_dir)
    for s in range(1, 11):
        tiny.train_step(net, opt, sched, s)
    act.snapshot(10)
    at_10 = tiny.weights(net)
    lr_10 = learning_rates(opt)
    for s in range(11, 21):
        tiny.train_step(net, opt, sched, s)
    act.apply([_item("scale_lr", factor=0.5)], 20)  # decided after the snapshot
    pending = [_item("rollback", before_step=18), _item("scale_lr", factor=0.5)]
    act.resolve(pending)
    assert pending[0]["params"]["to_step"] == 10
    applied = act.apply(pending, 20)
    assert applied.rollback_to == 10 and not applied.stop
    assert tiny.same(tiny.weights(net), at_10)
    # Both reductions hold on the restored state: 0.25 x the rate the schedule had at step 10.
    assert learning_rates(opt) == pytest.approx([0.25 * v for v in lr_10])
    assert sched.base_lrs == pytest.approx([0.25 * 1e-2])
    tiny.train_step(net, opt, sched, 11)
    assert sched.last_epoch == 11
    run.finish()
    events = Store().reader().events(run.id, types=["intervention"])
    assert [(e.kind, e.step) for e in events] == [
        ("scale_lr", 20),
        ("rollback", 20),
        ("scale_lr", 20),
    ]
    rollback = events[1]
    assert rollback.ref == "divergence@18" and rollback.severity == "warning"
    assert rollback.data["before"] == {"step": 20}
    assert rollback.data["after"]["step"] == 10 and rollback.data["applied"] is True
    assert rollback.data["finding_kind"] == "divergence"
    assert events[2].data["before"]["lr_scale"] == 0.5
    assert events[2].data["after"]["lr_scale"] == 0.25


def test_rollback_without_a_snapshot_is_recorded_not_faked(store_dir: Path) -> None:
    run, net, _, _, act = _setup(store_dir)
    act.snapshot(10)
    pending = [_item("rollback", before_step=5)]
    act.resolve(pending)
    before = tiny.weights(net)
    assert act.apply(pending, 12).rollback_to is None
    assert tiny.same(tiny.weights(net), before)
    assert act.records[-1]["applied"] is False
    run.finish()


def test_restore_best_picks_the_best_evaluation(store_dir: Path) -> None:
    run, net, opt, sched, act = _setup(store_dir, best_metric="eval/accuracy")
    kept = {}
    for step, acc in [(10, 0.6), (20, 0.8), (30, 0.7)]:
        for s in range(step - 9, step + 1):
            tiny.train_step(net, opt, sched, s)
        act.evaluated(step, {"eval_accuracy": acc})  # Trainer's names are fine too
        kept[step] = tiny.weights(net)
    pending = [_item("restore_best"), _item("stop")]
    act.resolve(pending)
    applied = act.apply(pending, 30)
    assert applied.stop
    assert tiny.same(tiny.weights(net), kept[20])
    run.finish()
    info = Store().reader().run(run.id)
    assert info.summary["restored"] == {"step": 20, "metric": "eval/accuracy", "value": 0.8}


def test_deferred_restore_waits_for_finish(store_dir: Path) -> None:
    run, net, opt, sched, act = _setup(store_dir, defer_restore=True)
    act.evaluated(5, {"eval/loss": 0.3})
    best = tiny.weights(net)
    tiny.train_step(net, opt, sched, 6)
    pending = [_item("restore_best")]
    act.resolve(pending)
    assert act.apply(pending, 6).restore_deferred
    assert not tiny.same(tiny.weights(net), best)
    act.finish()
    assert tiny.same(tiny.weights(net), best)
    run.finish()


def test_forgetting_restores_the_best_trade_off(store_dir: Path) -> None:
    run, net, opt, sched, act = _setup(store_dir, best_metric="eval/accuracy")
    # Task accuracy climbs, retain accuracy falls: step 30 is within 1 point of the best task
    # accuracy (step 50) with far less forgotten.
    curve = [
        (10, 0.70, 0.90),
        (20, 0.85, 0.88),
        (30, 0.905, 0.86),
        (40, 0.91, 0.80),
        (50, 0.912, 0.7),
    ]
    run.log({"retain/accuracy": 0.9}, step=0)
    kept = {}
    for step, task, retain in curve:
        tiny.train_step(net, opt, sched, step)
        run.log({"eval/accuracy": task, "retain/accuracy": retain}, step=step)
        act.evaluated(step, {"eval/accuracy": task, "retain/accuracy": retain})
        kept[step] = tiny.weights(net)
    run.flush()
    pending = [_item("restore_best", criterion="tradeoff", tolerance=0.01)]
    act.resolve(pending)
    assert "trade-off" in pending[0]["params"]["why"]
    act.apply(pending, 50)
    assert tiny.same(tiny.weights(net), kept[30])
    # The default criterion (overfitting) restores the best task metric.
    pending = [_item("restore_best")]
    act.resolve(pending)
    act.apply(pending, 50)
    assert tiny.same(tiny.weights(net), kept[50])
    run.finish()


def test_snapshot_and_weights_files_are_removed_at_the_end(store_dir: Path) -> None:
    run, _, _, _, act = _setup(store_dir, memory_limit=0)
    act.snapshot(1)
    act.evaluated(1, {"eval/loss": 1.0})
    files = list((run.dir / "act").rglob("*.pt"))
    assert len(files) == 2
    act.finish()
    assert list((run.dir / "act").rglob("*.pt")) == []
    run.finish()


def test_timeline_drops_abandoned_points() -> None:
    assert timeline([0, 10, 20, 30, 20, 25], [0, 1, 2, 3, 4, 5]) == [
        (0, 0.0),
        (10, 1.0),
        (20, 4.0),
        (25, 5.0),
    ]


def test_a_second_rollback_goes_further_back(store_dir: Path) -> None:
    # The state at the first target led straight back into trouble: it may hold the cause.
    run, net, opt, sched, act = _setup(store_dir)
    for step in (10, 20, 30):
        tiny.train_step(net, opt, sched, step)
        act.snapshot(step)
    first = [_item("rollback", before_step=35)]
    act.resolve(first)
    assert act.apply(first, 36).rollback_to == 30
    again = [_item("rollback", before_step=33)]
    act.resolve(again)
    assert act.apply(again, 34).rollback_to == 20
    # A healthy snapshot after the rollback is a fine target again.
    act.snapshot(25)
    later = [_item("rollback", before_step=40)]
    act.resolve(later)
    assert later[0]["params"]["to_step"] == 25
    run.finish()


def test_restore_best_without_evaluations_ends_on_the_last_snapshot(store_dir: Path) -> None:
    # E.g. a run stopped after repeated divergence: never end on non-finite weights.
    run, net, opt, sched, act = _setup(store_dir)
    tiny.train_step(net, opt, sched, 1)
    act.snapshot(1)
    good = tiny.weights(net)
    with torch.no_grad():
        net[4].weight.fill_(float("nan"))
    pending = [_item("restore_best"), _item("stop")]
    act.resolve(pending)
    assert act.apply(pending, 5).stop
    assert tiny.same(tiny.weights(net), good)
    assert act.records[0]["after"] == {"step": 1, "snapshot": "memory"}
    run.finish()
