"""Scale a torch optimizer's learning rate so that the scale survives its scheduler.

Setting `group["lr"]` alone does not last: a `LambdaLR` (every Hugging Face schedule: linear,
cosine, constant with warmup, ...) recomputes the rate from `scheduler.base_lrs` at each step.
So the scale goes everywhere a rate is kept: each param group's `lr`, `initial_lr`, `max_lr` and
`min_lr` (OneCycleLR), and the scheduler's `base_lrs`, `max_lrs` (CyclicLR) and last rates —
also inside the schedulers a `SequentialLR`/`ChainedScheduler` holds. Schedulers that update the
rate from its current value (StepLR, ExponentialLR, ReduceLROnPlateau, ...) keep the scale
because the group's rate carries it.

>>> import torch
>>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
>>> sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
>>> scale_lr(opt, sched, 0.5); sched.step(); round(opt.param_groups[0]["lr"], 3)
0.25
"""

from __future__ import annotations

from typing import Any

from .snapshots import inner_optimizer, inner_scheduler

GROUP_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")
SCHEDULER_LISTS = ("base_lrs", "max_lrs", "_last_lr")


def _scaled_group_value(value: Any, factor: float) -> Any:
    # A tensor rate (capturable optimizers) is updated in place, as torch's schedulers do.
    if hasattr(value, "fill_"):
        return value.fill_(float(value) * factor)
    return value * factor


def _schedulers(scheduler: Any) -> list[Any]:
    """The scheduler and every scheduler nested inside it (SequentialLR, ChainedScheduler)."""
    if scheduler is None:
        return []
    sched = inner_scheduler(scheduler)
    out = [sched]
    for child in getattr(sched, "_schedulers", None) or []:
        out.extend(_schedulers(child))
    return out


def scale_lr(optimizer: Any, scheduler: Any, factor: float) -> None:
    """Multiply the learning rate by `factor` now and at every later scheduler step."""
    if not factor > 0:
        raise ValueError(f"a learning-rate factor must be > 0, got {factor}")
    for group in inner_optimizer(optimizer).param_groups:
        for key in GROUP_KEYS:
            if key in group and group[key] is not None:
                group[key] = _scaled_group_value(group[key], factor)
    scale_scheduler(scheduler, factor)


def scale_scheduler(scheduler: Any, factor: float) -> None:
    """Multiply the rates a scheduler (and any scheduler nested in it) recomputes from."""
    seen: set[int] = set()
    for sched in _schedulers(scheduler):
        if id(sched) in seen:
            continue
        seen.add(id(sched))
        for name in SCHEDULER_LISTS:
            values = getattr(sched, name, None)
            if isinstance(values, list | tuple):
                # A new list: a snapshot's copy of the old one must not change with it.
                setattr(sched, name, [v * factor for v in values])


def learning_rates(optimizer: Any) -> list[float]:
    """The current learning rate of every param group."""
    return [float(g["lr"]) for g in inner_optimizer(optimizer).param_groups]
