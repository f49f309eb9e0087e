"""Streaming robust statistics for the detectors: bounded windows, medians, quantile spreads.

Everything here is O(log n) or O(window) with a small fixed window per point, so the online
monitor never rescans history (100,000 logged steps cost the same per step as 100).

>>> w = Window(5)
>>> for x in [1.0, 9.0, 2.0, 3.0, 2.5, 2.0]:
...     w.add(0, x)
>>> w.median(), len(w)
(2.5, 5)
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable
from typing import Any

# IQR / 1.349 estimates the standard deviation of a normal sample, robustly.
IQR_TO_SIGMA = 1.0 / 1.349


class Window:
    """The last `size` (step, value) points, kept sorted too, for medians and quantiles."""

    __slots__ = ("_fifo", "_sorted", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._fifo: deque[tuple[int, float]] = deque()
        self._sorted: list[float] = []

    def add(self, step: int, x: float) -> None:
        """Append a (finite) value, dropping the oldest when full."""
        fifo = self._fifo
        s = self._sorted
        if len(s) >= self.size:
            old = fifo.popleft()[1]
            del s[bisect_left(s, old)]
        fifo.append((step, x))
        insort(s, x)

    def __len__(self) -> int:
        return len(self._sorted)

    def clear(self) -> None:
        """Forget every point."""
        self._fifo.clear()
        self._sorted.clear()

    def median(self) -> float:
        """The median (NaN when empty)."""
        s = self._sorted
        n = len(s)
        if not n:
            return math.nan
        h = n >> 1
        return s[h] if n & 1 else 0.5 * (s[h - 1] + s[h])

    def quantile(self, q: float) -> float:
        """Linearly interpolated quantile, 0 <= q <= 1 (NaN when empty)."""
        s = self._sorted
        n = len(s)
        if not n:
            return math.nan
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    def sigma(self) -> float:
        """A robust standard deviation: interquartile range / 1.349."""
        return (self.quantile(0.75) - self.quantile(0.25)) * IQR_TO_SIGMA

    def min(self) -> float:
        """The smallest value (NaN when empty)."""
        return self._sorted[0] if self._sorted else math.nan

    def max(self) -> float:
        """The largest value (NaN when empty)."""
        return self._sorted[-1] if self._sorted else math.nan

    def values(self) -> list[float]:
        """Values oldest first."""
        return [v for _, v in self._fifo]

    def steps(self) -> list[int]:
        """Steps oldest first."""
        return [s for s, _ in self._fifo]

    def rewind(self, step: int) -> None:
        """Drop points logged at or after `step` (a rollback abandoned them)."""
        kept = [(s, v) for s, v in self._fifo if s < step]
        self.clear()
        for s, v in kept:
            self.add(s, v)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state."""
        return {"size": self.size, "steps": self.steps(), "values": self.values()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Window:
        """Inverse of `state_dict`."""
        w = cls(int(state["size"]))
        for s, v in zip(state["steps"], state["values"], strict=True):
            w.add(int(s), float(v))
        return w


class Baseline:
    """A trailing window whose median and robust sigma are refreshed every `every` points.

    Spike detectors test each new point against the trailing band; the band moves slowly, so
    recomputing it every few points keeps the per-point cost at one comparison.
    """

    __slots__ = ("_stale", "every", "med", "sig", "window")

    def __init__(self, size: int, every: int = 4) -> None:
        self.window = Window(size)
        self.every = every
        self.med = math.nan
        self.sig = math.nan
        self._stale = 0

    def add(self, step: int, x: float) -> None:
        """Append a value; the band is refreshed lazily."""
        self.window.add(step, x)
        self._stale += 1

    def band(self, floor: float) -> tuple[float, float]:
        """(median, max(robust sigma, floor)) of the window, at most `every` points old."""
        if self._stale >= self.every or self.med != self.med:
            w = self.window
            self.med = w.median()
            self.sig = max(w.sigma(), floor)
            self._stale = 0
        return self.med, self.sig

    def __len__(self) -> int:
        return len(self.window)

    def clear(self) -> None:
        """Forget every point."""
        self.window.clear()
        self.med = self.sig = math.nan

    def rewind(self, step: int) -> None:
        """Drop points logged at or after `step`."""
        self.window.rewind(step)
        self.med = self.sig = math.nan


def median(values: Iterable[float]) -> float:
    """The median of a few values (NaN when empty)."""
    s = sorted(values)
    n = len(s)
    if not n:
        return math.nan
    h = n >> 1
    return s[h] if n & 1 else 0.5 * (s[h - 1] + s[h])


def safe_log(x: float) -> float:
    """log(x) for positive x; losses at or below 0 are clamped (log space needs x > 0)."""
    return math.log(x) if x > 1e-12 else -27.631021115928547  # log(1e-12)


# Absolute differences of a loss below this are float noise, not a change worth a finding (a
# constant 5e-324 loss, an eval loss going 1e-320 -> 2e-318). Above any loss a real fine-tune
# reaches at its best (fp32 cross-entropy of a memorised batch: ~1e-7).
NOISE_FLOOR = 1e-8


def scale_of(x: float) -> float:
    """The size a change of `x` is judged against: |x|, never below `NOISE_FLOOR`."""
    return max(abs(x), NOISE_FLOOR)


def times(x: float, k: float) -> float:
    """`k` times a level, sign-aware: k·x for x well above 0, else x raised by (k-1)·|x|.

    Losses can be negative (DPO/GRPO objectives, log-likelihoods, an ELBO) or ~0; "3x the
    initial loss" then means "3 of its own sizes higher", never a number below it.

    >>> times(2.0, 3.0), times(-1.0, 3.0)
    (6.0, 1.0)
    """
    return x + (k - 1.0) * scale_of(x)


def ratio(x: float, base: float) -> float:
    """x / base for a positive base, sign-aware otherwise (1 + (x - base) / |base|)."""
    return 1.0 + (x - base) / scale_of(base)


def rel_change(new: float, old: float) -> float:
    """(new - old) / |old|, 0 when old is 0."""
    return (new - old) / abs(old) if old else 0.0
