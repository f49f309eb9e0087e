"""Snapshots restore the training state exactly: weights, optimizer, scheduler and RNG."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tunescope.actuate.snapshots import Snapshots, capture, model_state

from . import tiny


def _train(net: torch.nn.Module, opt: torch.optim.Optimizer, sched: object, steps: range) -> None:
    for s in steps:
        tiny.train_step(net, opt, sched, s)


@pytest.mark.parametrize("on_disk", [False, True])
def test_training_resumed_from_a_snapshot_is_bit_for_bit_the_same(
    tmp_path: Path, on_disk: bool
) -> None:
    net = tiny.model()
    opt = tiny.optimizer(net)
    sched = tiny.scheduler(opt)
    snaps = Snapshots(tmp_path, keep=2, memory_limit=0 if on_disk else 1 << 30)
    _train(net, opt, sched, range(1, 11))
    info = snaps.take(10, net, opt, sched)
    assert info is not None and (info.path is not None) is on_disk
    _train(net, opt, sched, range(11, 21))
    reference = tiny.weights(net)
    ref_lr = sched.get_last_lr()
    ref_draws = (random.random(), float(np.random.rand()), torch.rand(1))

    snaps.restore(info, net, opt, sched)
    assert sched.last_epoch == 10
    _train(net, opt, sched, range(11, 21))
    assert tiny.same(tiny.weights(net), reference)  # dropout masks, Adam moments, schedule
    assert sched.get_last_lr() == ref_lr
    draws = (random.random(), float(np.random.rand()), torch.rand(1))
    assert draws[:2] == ref_draws[:2] and torch.equal(draws[2], ref_draws[2])


def test_restore_without_rng_would_differ() -> None:
    # The RNG is part of the state: dropout masks drawn after a restore repeat exactly.
    net = tiny.model()
    opt = tiny.optimizer(net)
    snaps = Snapshots()
    info = snaps.take(0, net, opt)
    assert info is not None
    first = torch.rand(4)
    snaps.restore(info, net, opt)
    assert torch.equal(torch.rand(4), first)


def test_frozen_weights_are_not_copied_and_buffers_are() -> None:
    net = tiny.model()
    state = model_state(net)
    assert "0.weight" not in state and "4.weight" in state
    assert "3.running_mean" in state  # BatchNorm statistics change with training
    full = capture(net, tiny.optimizer(net))
    assert set(full) == {"model", "optimizer", "scheduler", "rng"}


def test_keeps_the_first_and_the_last_few_and_deletes_files(tmp_path: Path) -> None:
    net = tiny.model()
    opt = tiny.optimizer(net)
    snaps = Snapshots(tmp_path, keep=2, memory_limit=0)
    for step in (0, 10, 20, 30, 40):
        tiny.train_step(net, opt, None, step)
        snaps.take(step, net, opt)
    assert [i.step for i in snaps.infos] == [0, 30, 40]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "snapshot-0.pt",
        "snapshot-30.pt",
        "snapshot-40.pt",
    ]
    before = snaps.before(35)
    assert before is not None and before.step == 30
    assert snaps.before(0) is None
    assert snaps.before(5) is not None and snaps.before(5).step == 0  # type: ignore[union-attr]
    snaps.restore(before, net, opt)  # the snapshot at 40 belongs to an abandoned future
    assert [i.step for i in snaps.infos] == [0, 30]
    assert not (tmp_path / "snapshot-40.pt").exists()
    snaps.clear()
    assert list(tmp_path.iterdir()) == [] and len(snaps) == 0


def test_a_state_that_is_not_finite_is_not_kept() -> None:
    net = tiny.model()
    opt = tiny.optimizer(net)
    with torch.no_grad():
        net[4].weight[0, 0] = float("nan")
    snaps = Snapshots()
    assert snaps.take(7, net, opt) is None
    assert snaps.skipped == [7] and len(snaps) == 0


@pytest.mark.parametrize("on_disk", [False, True])
def test_state_dict_round_trips(tmp_path: Path, on_disk: bool) -> None:
    net = tiny.model()
    opt = tiny.optimizer(net)
    sched = tiny.scheduler(opt)
    snaps = Snapshots(tmp_path / "snaps", keep=3, memory_limit=0 if on_disk else 1 << 30)
    _train(net, opt, sched, range(1, 6))
    snaps.take(5, net, opt, sched, lr_scale=0.5)
    saved = tiny.weights(net)
    torch.save(snaps.state_dict(), tmp_path / "index.pt")

    other = Snapshots()
    other.load_state_dict(torch.load(tmp_path / "index.pt", weights_only=False))
    assert other.infos == snaps.infos and other.infos[0].lr_scale == 0.5
    _train(net, opt, sched, range(6, 9))
    other.restore(other.infos[0], net, opt, sched)
    assert tiny.same(tiny.weights(net), saved) and sched.last_epoch == 5


def test_restoring_into_another_model_names_the_problem() -> None:
    net = tiny.model()
    snaps = Snapshots()
    info = snaps.take(1, net, tiny.optimizer(net))
    assert info is not None
    other = torch.nn.Linear(3, 3)
    with pytest.raises(KeyError, match="does not have"):
        snaps.restore(info, other, torch.optim.SGD(other.parameters(), lr=0.1))
