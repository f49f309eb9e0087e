"""The eval metric's own wobble and noise, the yardsticks the overfitting detector judges by."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from tunescope.diagnose.evalnoise import Wobble, change_sigma, worsening
from tunescope.diagnose.state import EvalTrack


def _track(key: str, values: list[float]) -> tuple[EvalTrack, Wobble]:
    ev, w = EvalTrack.for_key(key), Wobble()
    for i, v in enumerate(values):
        ev.add(10 * i, v)
        w.add(ev)
    return ev, w


def test_wobble_keeps_the_recent_rises_that_came_back() -> None:
    # 1.0 -> 1.2 (+20%) back to 0.9; 0.9 -> 0.99 (+10%) back to 0.8; 0.8 -> 0.84 still open
    _, w = _track("eval/loss", [1.0, 1.2, 0.9, 0.99, 0.8, 0.84])
    assert list(w.recent) == pytest.approx([0.2, 0.1])
    assert w.bar == pytest.approx(0.2)
    assert w.peak == pytest.approx(0.05)  # the open excursion is not evidence of wobble yet


def test_wobble_forgets_old_excursions_and_is_zero_on_a_smooth_curve() -> None:
    _, smooth = _track("eval/loss", [1.0 / (1 + i) for i in range(20)])
    assert smooth.bar == 0.0
    # one early 50% excursion, then three 2% ones: only the last three count
    _, w = _track("eval/loss", [1.0, 1.5, 0.9, 0.918, 0.8, 0.816, 0.7, 0.714, 0.6])
    assert w.bar == pytest.approx(0.02)


def test_wobble_of_a_score_is_in_points_and_rebuild_matches_incremental() -> None:
    ev, w = _track("eval/accuracy", [0.5, 0.7, 0.64, 0.75, 0.8])
    assert w.bar == pytest.approx(0.06)  # 0.70 -> 0.64: 6 points, back at 0.75
    fresh = Wobble()
    fresh.rebuild(ev)
    assert list(fresh.recent) == list(w.recent) and fresh.peak == w.peak


def test_change_sigma_estimates_the_noise_of_one_evaluation() -> None:
    rng = random.Random(0)
    estimates = []
    for _ in range(400):
        # a falling curve (its best is last) with 2% multiplicative noise
        values = [2.0 - 0.05 * i + rng.gauss(0, 0.02) for i in range(10)]
        values[-1] = min(values) - 1e-9
        ev, _ = _track("eval/loss", values)
        sigma = change_sigma(ev)
        assert sigma is not None
        estimates.append(sigma * ev.best)  # back to absolute units
    assert statistics.median(estimates) == pytest.approx(0.02, rel=0.25)


def test_a_smooth_descent_is_not_noise() -> None:
    quadratic = [0.5 + 2.0 * (1 - i / 12) ** 2 for i in range(13)]  # slowing steadily
    ev, _ = _track("eval/loss", quadratic)
    sigma = change_sigma(ev)
    assert sigma is not None and sigma < 1e-9
    assert change_sigma(_track("eval/loss", [1.0, 0.9, 0.8])[0]) is None  # too few points


def test_one_stray_evaluation_in_a_short_descent_is_not_taken_for_the_noise() -> None:
    # MiniLM on noisy labels (suite: minilm-noisy-overfit-s15): the fast descent from the
    # untrained model has one stray evaluation (1.058 between 0.919 and 0.779). It enters all
    # three second differences, so their MAD would call a 35% wobble one evaluation's noise.
    short = [1.614, 1.253, 0.919, 1.058, 0.779]
    assert change_sigma(_track("eval/loss", short)[0]) is None
    # with enough evaluations up to the best the stray is outvoted: 2% noise, one 15% stray
    rng = random.Random(1)
    values = [2.0 - 0.1 * i + rng.gauss(0, 0.02) for i in range(10)]
    values[4] += 0.3
    values[-1] = min(values) - 1e-9
    sigma = change_sigma(_track("eval/loss", values)[0])
    assert sigma is not None and sigma * min(values) < 0.06


def test_perplexity_noise_and_worsening_are_judged_on_its_log() -> None:
    losses = [3.2, 3.1, 3.0, 2.8, 2.7, 2.75, 2.6, 2.62, 2.5]
    ev_loss, _ = _track("eval/loss", losses)
    ev_ppl, _ = _track("eval/perplexity", [math.exp(x) for x in losses])
    a, b = change_sigma(ev_loss), change_sigma(ev_ppl)
    assert a is not None and b is not None and a == pytest.approx(b)
    assert worsening(ev_ppl, math.exp(2.75)) == pytest.approx(worsening(ev_loss, 2.75))
