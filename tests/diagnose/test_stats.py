"""The streaming window against numpy, and its rewind/round-trip."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tunescope.diagnose.stats import Window


def test_window_matches_numpy_on_its_last_points() -> None:
    rng = random.Random(1)
    w = Window(25)
    xs = []
    for i in range(300):
        x = rng.lognormvariate(0, 1)
        xs.append(x)
        w.add(i, x)
        tail = np.array(xs[-25:])
        assert w.median() == pytest.approx(float(np.median(tail)))
        assert w.quantile(0.75) == pytest.approx(float(np.quantile(tail, 0.75)))
        assert w.min() == tail.min() and w.max() == tail.max()
    assert len(w) == 25 and w.steps() == list(range(275, 300))


def test_window_rewind_drops_abandoned_points_and_state_round_trips() -> None:
    w = Window(10)
    for i in range(20):
        w.add(i, float(i))
    w.rewind(15)
    assert w.steps() == list(range(10, 15)) and w.median() == pytest.approx(12.0)
    back = Window.from_state(w.state_dict())
    assert back.values() == w.values() and back.steps() == w.steps() and back.size == 10


def test_empty_window_is_nan() -> None:
    w = Window(3)
    assert np.isnan(w.median()) and np.isnan(w.quantile(0.5)) and np.isnan(w.sigma())
