"""Which buckets of a downsampled curve hold a spike worth a marker (pure numpy, no I/O).

The min/max band already keeps every extreme visible; this picks out the few bucket extremes
that stand far above (or below) their neighbourhood, so a one-step spike in a million points
gets an explicit marker at its exact step instead of being one more wiggle in the band.

A bucket's excursion is how far its max rises above the higher of the maxima two buckets to
either side (skipping the adjacent ones, so a spike straddling a bucket edge still counts). On
a rising or falling trend the excursion is negative, so slopes never look like spikes; only
local peaks do, and only peaks far beyond the curve's typical peak height get a marker.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_BUCKETS = 30  # fewer buckets than this: every point is drawn and readable as it is
MADS = 8.0  # median absolute deviations above the typical excursion that make a spike
RANGE_SHARE = 0.05  # ...and at least this share of the curve's spread (smooth curves have MAD 0)


def _neighbour(a: np.ndarray, offset: int, near: int) -> np.ndarray:
    """a[i + offset], falling back to a[i + near] where that is out of range; NaN past both."""
    n = len(a)
    out = np.full(n, np.nan)
    idx = np.arange(n)
    for off in (near, offset):  # the far neighbour wins where it exists
        j = idx + off
        ok = (j >= 0) & (j < n)
        out[ok] = a[j[ok]]
    return out


def _excursion(extreme: np.ndarray) -> np.ndarray:
    left = _neighbour(extreme, -2, -1)
    right = _neighbour(extreme, 2, 1)
    ex = extreme - np.fmax(left, right)
    ex[0] = ex[-1] = np.nan  # edge buckets have one side only: a steep start is no spike
    return ex


def _threshold(excursion: np.ndarray, spread: float) -> float:
    ok = excursion[np.isfinite(excursion)]
    if len(ok) == 0:
        return np.inf
    med = float(np.median(ok))
    mad = float(np.median(np.abs(ok - med)))
    return max(med + MADS * mad, RANGE_SHARE * spread, 1e-300)


def spikes(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bucket extremes far above or below their neighbours' extremes.

    Returns `{"step", "value", "direction": "up"|"down", "baseline"}` per spike, in step order
    (`baseline`: the neighbouring extreme it stands out from).

    >>> flat = [{"min": 1.0, "max": 1.0, "min_step": i, "max_step": i} for i in range(50)]
    >>> flat[20] = {"min": 9.0, "max": 9.0, "min_step": 20, "max_step": 20}
    >>> [(s["step"], s["value"]) for s in spikes(flat)]
    [(20, 9.0)]
    """
    if len(buckets) < MIN_BUCKETS:
        return []
    nan = float("nan")
    vmin = np.array([nan if b["min"] is None else b["min"] for b in buckets], dtype=np.float64)
    vmax = np.array([nan if b["max"] is None else b["max"] for b in buckets], dtype=np.float64)
    both = np.concatenate([vmin[np.isfinite(vmin)], vmax[np.isfinite(vmax)]])
    if len(both) < MIN_BUCKETS:
        return []
    spread = float(np.percentile(both, 99) - np.percentile(both, 1))
    out = []
    for direction, extreme, sign, step_key in (
        ("up", vmax, 1.0, "max_step"),
        ("down", vmin, -1.0, "min_step"),
    ):
        ex = _excursion(sign * extreme)
        limit = _threshold(ex, spread)
        for i in np.flatnonzero(np.nan_to_num(ex, nan=-np.inf) > limit):
            b = buckets[int(i)]
            out.append(
                {
                    "step": b[step_key],
                    "value": float(extreme[i]),
                    "direction": direction,
                    "baseline": float(sign * (sign * extreme[i] - ex[i])),
                }
            )
    out.sort(key=lambda s: s["step"])
    return out
