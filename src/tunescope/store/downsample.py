"""Bucketing a series for drawing: last value per bucket plus a min/max band (pure numpy).

Input is a sorted list of *units*: either single points or summaries of stretches (chunks,
rollups), each small relative to a bucket. Every unit lands in the bucket of its own step, so a
one-step spike keeps its step and value (it is the bucket's max), and NaN/±inf are counted per
bucket instead of being averaged away or dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Units:
    """Columns of consecutive units in step order (a point is a unit with n=1)."""

    step_hi: np.ndarray  # int64: step of the unit's last point
    wall_hi: np.ndarray  # float64
    last: np.ndarray  # float64, may be NaN/inf
    vmin: np.ndarray  # float64, +inf when the unit has no finite value
    min_step: np.ndarray  # int64
    vmax: np.ndarray  # float64, -inf when the unit has no finite value
    max_step: np.ndarray  # int64
    n: np.ndarray  # int64
    nan: np.ndarray  # int64
    posinf: np.ndarray  # int64
    neginf: np.ndarray  # int64

    @staticmethod
    def from_points(steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> Units:
        """Each point as its own unit."""
        finite = np.isfinite(values)
        one = np.ones(len(values), dtype=np.int64)
        return Units(
            step_hi=steps.astype(np.int64, copy=False),
            wall_hi=walls,
            last=values,
            vmin=np.where(finite, values, np.inf),
            min_step=steps.astype(np.int64, copy=False),
            vmax=np.where(finite, values, -np.inf),
            max_step=steps.astype(np.int64, copy=False),
            n=one,
            nan=np.isnan(values).astype(np.int64),
            posinf=(values == np.inf).astype(np.int64),
            neginf=(values == -np.inf).astype(np.int64),
        )

    @staticmethod
    def from_rows(rows: list[tuple[Any, ...]]) -> Units:
        """Units from summary rows in `SUMMARY_COLUMNS` order (NULL first/last meaning NaN)."""
        if not rows:
            return Units.empty()
        # None (NULL) becomes NaN in a float array: NULL first/last mean NaN, NULL extremes mean
        # "no finite value", which the min/max reductions must ignore.
        m = np.array(rows, dtype=np.float64)
        step_hi = m[:, 2].astype(np.int64)
        vmin, vmax = m[:, 7], m[:, 8]
        min_step, max_step = m[:, 9], m[:, 10]
        return Units(
            step_hi=step_hi,
            wall_hi=m[:, 4],
            last=m[:, 6],
            vmin=np.where(np.isnan(vmin), np.inf, vmin),
            min_step=np.where(np.isnan(min_step), m[:, 2], min_step).astype(np.int64),
            vmax=np.where(np.isnan(vmax), -np.inf, vmax),
            max_step=np.where(np.isnan(max_step), m[:, 2], max_step).astype(np.int64),
            n=m[:, 0].astype(np.int64),
            nan=m[:, 11].astype(np.int64),
            posinf=m[:, 12].astype(np.int64),
            neginf=m[:, 13].astype(np.int64),
        )

    @staticmethod
    def empty() -> Units:
        """No units."""
        i = np.zeros(0, dtype=np.int64)
        f = np.zeros(0, dtype=np.float64)
        return Units(i, f, f, f, i, f, i, i, i, i, i)

    @staticmethod
    def concat(parts: list[Units]) -> Units:
        """Units of several consecutive stretches, in order."""
        parts = [p for p in parts if len(p.n)]
        if not parts:
            return Units.empty()
        if len(parts) == 1:
            return parts[0]
        return Units(*(np.concatenate([getattr(p, f) for p in parts]) for f in Units.__slots__))


def _num(x: float) -> float | None:
    return None if (math.isnan(x) or math.isinf(x)) else x


def _marker(x: float) -> str | None:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return None


def _first_hit(
    values: np.ndarray, group_value: np.ndarray, first_pos: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """Per group, the step of the first unit whose value equals the group's extreme."""
    sizes = np.diff(np.append(first_pos, len(values)))
    hits = np.flatnonzero(values == np.repeat(group_value, sizes))
    groups = np.searchsorted(first_pos, hits, side="right") - 1
    _, first = np.unique(groups, return_index=True)
    out = np.zeros(len(first_pos), dtype=np.int64)
    out[groups[first]] = steps[hits[first]]
    return out


def bucketize(units: Units, start: int, end: int, buckets: int) -> list[dict[str, Any]]:
    """Reduce units within [start, end] to at most `buckets` buckets of equal step width.

    Each bucket: `step` and `wall` of its last point, `value` (last; None if non-finite, with
    `nonfinite` set to "nan"/"inf"/"-inf"), finite `min`/`max` with their steps, point count
    `n`, and counts `nan`/`posinf`/`neginf` of non-finite points it holds.
    """
    if len(units.n) == 0 or buckets < 1:
        return []
    width = max(1.0, (end - start + 1) / buckets)

    def index(steps: np.ndarray) -> np.ndarray:
        b = np.floor((steps - start) / width).astype(np.int64)
        return np.clip(b, 0, buckets - 1)

    # A unit lands in the bucket of its last point; its extremes keep their own exact steps.
    # Units are in step order, so bucket ids are non-decreasing: reduce over runs of equal id.
    b_last = index(units.step_hi)
    out_ids, first_pos = np.unique(b_last, return_index=True)
    last_pos = np.append(first_pos[1:], len(b_last)) - 1
    counts = {
        f: np.add.reduceat(getattr(units, f), first_pos) for f in ("n", "nan", "posinf", "neginf")
    }
    gmin = np.minimum.reduceat(units.vmin, first_pos)
    gmax = np.maximum.reduceat(units.vmax, first_pos)
    smin = _first_hit(units.vmin, gmin, first_pos, units.min_step)
    smax = _first_hit(units.vmax, gmax, first_pos, units.max_step)
    result = []
    for k in range(len(out_ids)):
        lp = int(last_pos[k])
        last = float(units.last[lp])
        lo, hi = float(gmin[k]), float(gmax[k])
        result.append(
            {
                "step": int(units.step_hi[lp]),
                "wall": float(units.wall_hi[lp]),
                "value": _num(last),
                "nonfinite": _marker(last),
                "min": None if math.isinf(lo) else lo,
                "min_step": None if math.isinf(lo) else int(smin[k]),
                "max": None if math.isinf(hi) else hi,
                "max_step": None if math.isinf(hi) else int(smax[k]),
                "n": int(counts["n"][k]),
                "nan": int(counts["nan"][k]),
                "posinf": int(counts["posinf"][k]),
                "neginf": int(counts["neginf"][k]),
            }
        )
    return result
