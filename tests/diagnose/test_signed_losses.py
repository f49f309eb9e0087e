"""Losses that are negative or tiny: ratios and "above initial" are sign- and scale-aware.

A DPO/GRPO objective, a log-likelihood or an ELBO falls below 0 while the run is healthy; a
memorised loss sits near 0. Such runs must not read as diverging, stuck or overfitting.
"""

from __future__ import annotations

import math

import numpy as np

from tunescope.diagnose import Context, Kind, Severity
from tunescope.diagnose.engine import replay
from tunescope.io.csv import Row


def _warned(report: object) -> set[Kind]:
    return {f.kind for f in report.findings if f.severity.rank >= Severity.WARNING.rank}  # type: ignore[attr-defined]


def test_a_falling_negative_loss_is_not_divergence() -> None:
    # a DPO-style objective: -1.02 at the start, falling to about -1.41 with noise
    rng = np.random.default_rng(0)
    rows = []
    for s in range(300):
        x = -1.02 - 0.39 * (1 - math.exp(-s / 80)) + 0.02 * rng.standard_normal()
        rows.append(Row(s, "train/loss", float(x), None))
        if s % 30 == 29:
            rows.append(Row(s, "eval/loss", float(x) + 0.05, None))
    report = replay(rows)
    assert not {f.kind for f in report.findings} & {
        Kind.DIVERGENCE,
        Kind.LR_TOO_HIGH,
        Kind.LOSS_SPIKE,
        Kind.UNDERFITTING,
    }, [f.message for f in report.findings]


def test_a_negative_loss_that_blows_up_is_still_divergence() -> None:
    rows = [Row(s, "train/loss", -1.0 - 0.001 * s, None) for s in range(100)]
    rows += [Row(s, "train/loss", 50.0 + s, None) for s in range(100, 200)]
    kinds = {f.kind for f in replay(rows).findings}
    assert Kind.DIVERGENCE in kinds


def test_a_constant_subnormal_loss_raises_nothing() -> None:
    rows = [Row(s, "train/loss", 5e-324, None) for s in range(400)]
    assert replay(rows).findings == []
    assert replay(rows, Context(max_steps=400)).findings == []


def test_an_eval_loss_moving_by_float_noise_is_not_overfitting() -> None:
    rows = []
    for s in range(200):
        rows.append(Row(s, "train/loss", 1.0 / (1 + s), None))
        if s % 20 == 19:
            rows.append(Row(s, "eval/loss", 1e-320 if s < 60 else 2e-318 * s, None))
    assert Kind.OVERFITTING not in {f.kind for f in replay(rows).findings}


def test_a_loss_that_starts_at_zero_is_fine() -> None:
    rows = [Row(s, "train/loss", 0.0, None) for s in range(5)]
    rows += [Row(s, "train/loss", 1e-9 * (s % 3), None) for s in range(5, 300)]
    assert not _warned(replay(rows))
