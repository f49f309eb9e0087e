"""How far an evaluation metric is from its best, and how much it wobbles on its own.

An evaluation metric is measured a few dozen times per run, on a finite evaluation set, by a
model that SGD keeps jostling: it wobbles. Its best value is the luckiest of those draws, so a
later evaluation above the best is expected even when nothing is wrong. Two cheap, robust
measures of that wobble, both in the units of `worsening` (relative rise for a loss, points
for a score), let the overfitting detector tell a trend from noise:

- `Wobble`: the recent *recovered excursions* — how far the metric rose above its best before
  it came back to a new best. A rise no larger than rises already seen to reverse in this run
  is no evidence of anything.
- `change_sigma`: a robust sigma of one evaluation, from the median absolute deviation of the
  second differences of the evaluations up to the best (a descent that is steady or slowing
  steadily — linear or quadratic — has constant second differences: it is not noise).

>>> from tunescope.diagnose.state import EvalTrack
>>> ev, w = EvalTrack.for_key("eval/loss"), Wobble()
>>> for x in [1.0, 0.8, 0.88, 0.7, 0.75]:
...     ev.add(0, x); w.add(ev)
>>> round(w.bar, 3)  # 0.8 -> 0.88 came back (to 0.7): a 10% wobble; 0.75 has not come back
0.1
"""

from __future__ import annotations

import itertools
import math
from collections import deque

from .state import EvalTrack, is_perplexity, relative_rise
from .stats import median

WOBBLE_KEEP = 3  # recovered excursions remembered: the metric's *recent* wobble
NOISE_WINDOW = 8  # second differences of the evaluations that measure one evaluation's noise
# One stray evaluation enters three second differences: the MAD ignores it only when those are
# fewer than half, so at least 7 second differences (9 evaluations) up to the best, else no
# estimate. With 3 (the old minimum), a bump during the fast early descent of a pretrained
# model became "the noise" and hid a 44% rise (suite: minilm-noisy-overfit-s15).
MIN_POINTS = 9
MAD_TO_SIGMA = 1.4826  # MAD x this estimates the standard deviation of a normal sample


def score_scale(best: float) -> float:
    """Scores above 1.5 are percentages: compare them on a 0-1 scale."""
    return 100.0 if best > 1.5 else 1.0


def worsening(ev: EvalTrack, value: float) -> float:
    """How much worse `value` is than the best: relative rise for losses, points for scores."""
    best = ev.best
    if ev.higher:
        return (best - value) / score_scale(best)
    return relative_rise(ev.key, value, best)


class Wobble:
    """The largest of the last `WOBBLE_KEEP` recovered excursions of one evaluation metric."""

    __slots__ = ("key", "peak", "recent")

    def __init__(self) -> None:
        self.key = ""
        self.peak = 0.0  # the open excursion: the worst value since the best, as a worsening
        self.recent: deque[float] = deque(maxlen=WOBBLE_KEEP)

    def add(self, ev: EvalTrack) -> None:
        """Take the evaluation just appended to `ev`."""
        if ev.key != self.key:
            self.key, self.peak = ev.key, 0.0
            self.recent.clear()
        if ev.since_best == 0:  # a new best ends the open excursion: it came back
            if self.peak > 0.0:
                self.recent.append(self.peak)
            self.peak = 0.0
        else:
            w = worsening(ev, ev.last)
            if w > self.peak:  # NaN compares False
                self.peak = w

    @property
    def bar(self) -> float:
        """The rise (as a worsening) already seen to reverse recently; 0 when none did."""
        return max(self.recent, default=0.0)

    def rebuild(self, ev: EvalTrack) -> None:
        """Recompute from `ev`'s points (after a rollback dropped some of them)."""
        self.key, self.peak = "", 0.0
        self.recent.clear()
        replayed = EvalTrack(ev.key, ev.higher)
        for s, v in zip(ev.steps, ev.values, strict=True):
            replayed.add(s, v)
            self.add(replayed)


def change_sigma(ev: EvalTrack) -> float | None:
    """The noise of one evaluation of `ev`'s metric, as a worsening; None with fewer than
    `MIN_POINTS` finite evaluations up to the best.

    MAD of the last `NOISE_WINDOW` second differences (v[i+1] - 2 v[i] + v[i-1]) of the
    evaluations up to the best, x 1.4826 / sqrt(6) (for independent noise of sigma, a second
    difference has variance 6 sigma^2). Second differences cancel a trend that is linear or
    steadily slowing, so a smooth descent does not pass for noise. Judged up to the best so
    that a rise being tested never inflates its own yardstick. A perplexity is judged on its
    log, like `relative_rise` does.
    """
    end = ev.best_index + 1
    if end <= 0:
        return None
    log = is_perplexity(ev.key)
    vals = [
        math.log(v) if log and v > 0 else v
        for v in ev.values[max(0, end - NOISE_WINDOW - 2) : end]
        if v - v == 0.0
    ]
    if len(vals) < MIN_POINTS:
        return None
    changes = [b - a for a, b in itertools.pairwise(vals)]
    curv = [b - a for a, b in itertools.pairwise(changes)]
    mid = median(curv)
    sigma = median(abs(c - mid) for c in curv) * MAD_TO_SIGMA / math.sqrt(6.0)
    if ev.higher:
        return sigma / score_scale(ev.best)
    base = vals[-1]  # the best, transformed like the changes
    return sigma / base if base > 0 else sigma
