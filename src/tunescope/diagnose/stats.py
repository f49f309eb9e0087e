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
from typing import Any

# IQR / 1.349 estimates the standard deviation of a normal sample, robustly.
IQR_TO_SIGMA = 1.0 / 1.349


class Window:
    """The last `size` (step, value) points, kept sorted too, for medians and quantiles."""

    __slots__ = ("_fifo", "_sorted", "_steps", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._fifo: deque[float] = deque()
        self._steps: deque[int] = deque()
        self._sorted: list[float] = []

    def add(self, step: int, x: float) -> None:
        """Append a (finite) value, dropping the oldest when full."""
        fifo = self._fifo
        if len(fifo) >= self.size:
            old = fifo.popleft()
            self._steps.popleft()
            s = self._sorted
            del s[bisect_left(s, old)]
        fifo.append(x)
        self._steps.append(step)
        insort(self._sorted, x)

    def __len__(self) -> int:
        return len(self._fifo)

    def clear(self) -> None:
        """Forget every point."""
        self._fifo.clear()
        self._steps.clear()
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
        return list(self._fifo)

    def steps(self) -> list[int]:
        """Steps oldest first."""
        return list(self._steps)

    def first_step(self) -> int | None:
        """Step of the oldest point held."""
        return self._steps[0] if self._steps else None

    def rewind(self, step: int) -> None:
        """Drop points logged at or after `step` (a rollback abandoned them)."""
        kept = [(s, v) for s, v in zip(self._steps, self._fifo, strict=True) if s < step]
        self.clear()
        for s, v in kept:
            self.add(s, v)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state."""
        return {"size": self.size, "steps": list(self._steps), "values": list(self._fifo)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Window:
        """Inverse of `state_dict`."""
        w = cls(int(state["size"]))
        for s, v in zip(state["steps"], state["values"], strict=True):
            w.add(int(s), float(v))
        return w


def safe_log(x: float) -> float:
    """log(x) for positive x; losses at or below 0 are clamped (log space needs x > 0)."""
    return math.log(x) if x > 1e-12 else -27.631021115928547  # log(1e-12)


def rel_change(new: float, old: float) -> float:
    """(new - old) / |old|, 0 when old is 0."""
    return (new - old) / abs(old) if old else 0.0
