"""Overfitting needs a model that has seen its training examples more than once."""

from __future__ import annotations

from tunescope.diagnose import Context, Kind
from tunescope.diagnose.engine import replay
from tunescope.io.csv import Row


def _rising_eval(epochs_per_step: float) -> list[Row]:
    rows = []
    for s in range(1, 151):
        rows.append(Row(s, "train/loss", 1.6 * 0.98**s + 0.05, None))
        rows.append(Row(s, "train/epoch", s * epochs_per_step, None))
        if s % 15 == 0:
            loss = 0.35 if s <= 30 else 0.35 * (1 + 0.3 * (s - 30) / 15)
            rows.append(Row(s, "eval/loss", loss, None))
            rows.append(Row(s, "eval/accuracy", 0.9 if s <= 30 else 0.87, None))
    return rows


def test_a_rise_in_the_first_pass_over_the_data_is_not_overfitting() -> None:
    ctx = Context(num_classes=5, max_steps=150)
    first_pass = replay(_rising_eval(1 / 150), ctx)  # 150 steps = one epoch
    assert Kind.OVERFITTING not in {f.kind for f in first_pass.findings}
    many = replay(_rising_eval(1 / 15), ctx)  # 10 epochs: memorisation is possible
    assert Kind.OVERFITTING in {f.kind for f in many.findings}
