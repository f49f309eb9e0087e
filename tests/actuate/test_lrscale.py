"""A learning-rate scale holds across scheduler steps, whatever the scheduler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler as S

from tunescope.actuate.lrscale import learning_rates, scale_lr

from . import tiny

Factory = Callable[[torch.optim.Optimizer], Any]

SCHEDULERS: dict[str, Factory] = {
    "none": lambda opt: None,
    "lambda (HF linear warmup)": lambda opt: tiny.scheduler(opt, total=40),
    "step": lambda opt: S.StepLR(opt, step_size=7, gamma=0.5),
    "exponential": lambda opt: S.ExponentialLR(opt, gamma=0.95),
    "cosine": lambda opt: S.CosineAnnealingLR(opt, T_max=40),
    "one cycle": lambda opt: S.OneCycleLR(opt, max_lr=0.1, total_steps=60),
    "cyclic": lambda opt: S.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=5),
    "sequential": lambda opt: S.SequentialLR(
        opt,
        [S.LinearLR(opt, start_factor=0.1, total_iters=5), S.ExponentialLR(opt, gamma=0.9)],
        milestones=[5],
    ),
}


def _pair(make: Factory) -> tuple[Any, Any, Any, Any]:
    nets = [tiny.model(), tiny.model()]
    opts = [torch.optim.SGD([p for p in n.parameters() if p.requires_grad], lr=0.1) for n in nets]
    opts[0].add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.05})
    opts[1].add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.05})
    return opts[0], make(opts[0]), opts[1], make(opts[1])


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scale_survives_every_later_scheduler_step(name: str) -> None:
    ref_opt, ref_sched, opt, sched = _pair(SCHEDULERS[name])
    for step in range(30):
        if step == 12:
            scale_lr(opt, sched, 0.5)
        if step >= 12:
            got, want = learning_rates(opt), learning_rates(ref_opt)
            assert got == pytest.approx([0.5 * w for w in want], rel=1e-9), f"step {step}"
            if sched is not None:
                assert sched.get_last_lr() == pytest.approx(got)
        for o, s in ((ref_opt, ref_sched), (opt, sched)):
            o.step()
            if s is not None:
                s.step()


def test_reduce_on_plateau_keeps_the_scale_and_still_reduces() -> None:
    ref_opt, ref_sched, opt, sched = _pair(lambda o: S.ReduceLROnPlateau(o, patience=1))
    scale_lr(opt, sched, 0.5)
    for metric in [1.0, 0.9, 0.95, 0.96, 0.97, 0.98]:
        ref_sched.step(metric)
        sched.step(metric)
        assert learning_rates(opt) == pytest.approx([0.5 * w for w in learning_rates(ref_opt)])
    assert learning_rates(ref_opt)[0] < 0.1  # it did reduce


def test_scales_compose_and_bad_factors_are_refused() -> None:
    _, _, opt, sched = _pair(SCHEDULERS["lambda (HF linear warmup)"])
    base = list(sched.base_lrs)
    scale_lr(opt, sched, 0.5)
    scale_lr(opt, sched, 0.5)
    assert sched.base_lrs == pytest.approx([b * 0.25 for b in base])
    with pytest.raises(ValueError, match="> 0"):
        scale_lr(opt, sched, 0.0)
