"""`run.watch`: lr, gradient norm and update ratio, measured on log steps only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import tunescope
from tunescope.store import Store


def test_watch_measures_every_nth_step(store_dir: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[2].parameters(), "lr": 0.01},
        ]
    )
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    expected: dict[int, tuple[float, float]] = {}
    with tunescope.init("w") as run:
        run.watch(model, opt, every=3)
        for step in range(1, 10):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if step % 3 == 0:
                grads = [p.grad.detach().clone() for p in model.parameters()]
                before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            if step % 3 == 0:
                gn = math.sqrt(sum(float((g**2).sum()) for g in grads))
                upd = math.sqrt(
                    sum(
                        float(((p.detach() - b) ** 2).sum())
                        for p, b in zip(model.parameters(), before, strict=True)
                    )
                )
                wn = math.sqrt(sum(float((b**2).sum()) for b in before))
                expected[step] = (gn, upd / wn)
            run.log({"train/loss": loss.detach()}, step=step)
    reader = Store(store_dir).reader()
    keys = {k["key"] for k in reader.keys(run.id)}
    assert {"train/lr", "train/lr/group_1", "train/grad_norm", "train/update_ratio"} <= keys
    gn = reader.series(run.id, "train/grad_norm")
    assert gn.steps.tolist() == [3, 6, 9]
    for step, value in zip(gn.steps.tolist(), gn.values.tolist(), strict=True):
        assert value == pytest.approx(expected[step][0], rel=1e-5)
    ratio = reader.series(run.id, "train/update_ratio")
    for step, value in zip(ratio.steps.tolist(), ratio.values.tolist(), strict=True):
        assert value == pytest.approx(expected[step][1], rel=1e-4)
    assert reader.series(run.id, "train/lr").values.tolist() == [0.1, 0.1, 0.1]
    assert reader.series(run.id, "train/lr/group_1").values.tolist() == [0.01] * 3
    assert reader.series(run.id, "train/loss").steps.tolist() == list(range(1, 10))


def test_watch_needs_an_optimizer(store_dir: Path) -> None:
    with tunescope.init("w") as run, pytest.raises(TypeError, match="optimizer"):
        run.watch(torch.nn.Linear(2, 2), None)


def test_log_apart_leaves_watched_values_for_the_loops_own_log(store_dir: Path) -> None:
    # a probe logged between the optimizer step and the loop's log must not carry away the
    # learning rate and gradient norm measured for that step
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tunescope.init("w") as run:
        run.watch(model, opt, every=1)
        model(torch.randn(8, 4)).square().mean().backward()
        opt.step()
        run.log_apart({"probe/cka": 0.9}, step=0)  # e.g. the baseline, logged at step 0
        run.log({"train/loss": 1.0}, step=1)
    reader = Store(store_dir).reader()
    assert reader.series(run.id, "probe/cka").steps.tolist() == [0]
    assert reader.series(run.id, "train/lr").steps.tolist() == [1]
    assert reader.series(run.id, "train/grad_norm").steps.tolist() == [1]
