"""Synthetic training histories shaped like real ones, for table-driven detector tests.

A `Run` is a list of log calls `(step, wall, [(key, value), ...])`. `healthy()` builds a run
that learns (noisy per-step loss falling from ln C, evaluations improving, sane gradients and
updates); each scenario edits one aspect of it, the way a real fault would.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

Call = tuple[int, float, list[tuple[str, float]]]
Fn = Callable[[int], float]

LN10 = math.log(10)


@dataclass
class Spec:
    """What to log at each step; every function maps step -> value."""

    steps: int = 400
    loss: Fn = field(default=lambda s: LN10 * (0.03 + 0.97 * math.exp(-s / 60)))
    noise: float = 0.15  # multiplicative (log-normal) per-step loss noise
    eval_every: int = 20
    eval_loss: Fn | None = field(default=lambda s: 0.2 + (LN10 - 0.2) * math.exp(-s / 60))
    eval_acc: Fn | None = field(default=lambda s: 0.96 - 0.86 * math.exp(-s / 50))
    grad: Fn | None = field(default=lambda s: 1.0)
    grad_noise: float = 0.3
    lr: Fn | None = field(default=lambda s: 1e-3)
    update: Fn | None = field(default=lambda s: 3e-3)
    layers: tuple[Fn, Fn] | None = None  # (bottom, top) grad norms
    retain: dict[str, Fn] = field(default_factory=dict)
    extra: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> overrides
    seed: int = 0
    separate_eval_calls: bool = False


def build(spec: Spec) -> list[Call]:
    """The log calls of a run: step 0 evaluates the untrained model, steps 1.. train."""
    rng = random.Random(spec.seed)
    calls: list[Call] = []
    for s in range(0, spec.steps + 1):
        train: dict[str, float] = {}
        if s > 0:
            train["train/loss"] = spec.loss(s) * math.exp(rng.gauss(0, spec.noise))
            if spec.grad is not None:
                train["train/grad_norm"] = spec.grad(s) * math.exp(rng.gauss(0, spec.grad_noise))
            if s % 5 == 0 or s == 1:
                if spec.lr is not None:
                    train["train/lr"] = spec.lr(s)
                if spec.update is not None:
                    train["train/update_ratio"] = spec.update(s) * math.exp(rng.gauss(0, 0.2))
                if spec.layers is not None:
                    train["train/grad_norm/bottom"] = spec.layers[0](s)
                    train["train/grad_norm/top"] = spec.layers[1](s)
        ev: dict[str, float] = {}
        if s % spec.eval_every == 0 or s == spec.steps:
            if spec.eval_loss is not None:
                ev["eval/loss"] = spec.eval_loss(s) * math.exp(rng.gauss(0, 0.01))
            if spec.eval_acc is not None:
                ev["eval/accuracy"] = min(1.0, spec.eval_acc(s) + rng.gauss(0, 0.003))
            for key, fn in spec.retain.items():
                ev[key] = fn(s)
        train.update(spec.extra.get(s, {}))
        if spec.separate_eval_calls:
            if train:
                calls.append((s, float(s), list(train.items())))
            if ev:
                calls.append((s, s + 0.5, list(ev.items())))
        else:
            merged = {**train, **ev}
            if merged:
                calls.append((s, float(s), list(merged.items())))
    return calls


def warmup(peak: float, steps: int) -> Fn:
    """Linear warmup to `peak` over `steps`, then constant."""
    return lambda s: peak * min(1.0, s / steps)


def u_shape(best: float, at: int, rise: float, start: float = LN10) -> Fn:
    """An eval loss that falls to `best` at step `at`, then rises by `rise` (relative) per 100 steps."""

    def f(s: int) -> float:
        if s <= at:
            return best + (start - best) * (1 - s / at) ** 2
        return best * (1 + rise * (s - at) / 100)

    return f
