"""Columnar chunks of a metric series and their summaries (pure numpy, no I/O).

A series is stored as chunks of up to `CHUNK` points: three packed arrays (steps int64, values
float64, wall times float64) plus a summary (first/last/min/max with the steps of the extremes,
counts of NaN/+inf/-inf). Every `ROLLUP` chunks also get a rollup row with the same summary.
Readers downsample from summaries, so the cost of drawing a curve follows the number of
buckets drawn, not the number of points logged (MLflow builds ~25k rows for 320 points).

Values are float64 bytes, so NaN and ±inf round-trip exactly (SQLite's REAL turns NaN into NULL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK = 256  # points per chunk
ROLLUP = 64  # chunks per rollup (16,384 points)

SUMMARY_COLUMNS = (
    "n",
    "step_lo",
    "step_hi",
    "wall_lo",
    "wall_hi",
    "first",
    "last",
    "vmin",
    "vmax",
    "min_step",
    "max_step",
    "nan",
    "posinf",
    "neginf",
)


@dataclass(frozen=True, slots=True)
class Summary:
    """What a reader needs of a stretch of points without decoding them.

    `vmin`/`vmax` are over finite values (None when there are none); `first`/`last` may be
    NaN or ±inf. In SQLite, NaN in `first`/`last` is stored as NULL (see `to_row`).
    """

    n: int
    step_lo: int
    step_hi: int
    wall_lo: float
    wall_hi: float
    first: float
    last: float
    vmin: float | None
    vmax: float | None
    min_step: int | None
    max_step: int | None
    nan: int
    posinf: int
    neginf: int

    def to_row(self) -> tuple[object, ...]:
        """Values in `SUMMARY_COLUMNS` order, NaN written as NULL."""
        return (
            self.n,
            self.step_lo,
            self.step_hi,
            self.wall_lo,
            self.wall_hi,
            _nan_to_none(self.first),
            _nan_to_none(self.last),
            self.vmin,
            self.vmax,
            self.min_step,
            self.max_step,
            self.nan,
            self.posinf,
            self.neginf,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...] | list[Any]) -> Summary:
        """Inverse of `to_row`."""
        v = list(row)
        v[5] = _none_to_nan(v[5])
        v[6] = _none_to_nan(v[6])
        return cls(*v)


def _nan_to_none(x: float) -> float | None:
    return None if x != x else x


def _none_to_nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def summarize(steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> Summary:
    """Summary of a non-empty stretch of points (steps non-decreasing)."""
    finite = np.isfinite(values)
    nan = np.isnan(values)
    n_nan = int(nan.sum())
    n_posinf = int(np.count_nonzero(values == np.inf))
    n_neginf = int(np.count_nonzero(values == -np.inf))
    vmin: float | None = None
    vmax: float | None = None
    min_step: int | None = None
    max_step: int | None = None
    if finite.all():
        i_min, i_max = int(values.argmin()), int(values.argmax())
        vmin, vmax = float(values[i_min]), float(values[i_max])
        min_step, max_step = int(steps[i_min]), int(steps[i_max])
    elif finite.any():
        fv = np.where(finite, values, np.inf)
        i_min = int(fv.argmin())
        fv = np.where(finite, values, -np.inf)
        i_max = int(fv.argmax())
        vmin, vmax = float(values[i_min]), float(values[i_max])
        min_step, max_step = int(steps[i_min]), int(steps[i_max])
    return Summary(
        n=len(values),
        step_lo=int(steps[0]),
        step_hi=int(steps[-1]),
        wall_lo=float(walls[0]),
        wall_hi=float(walls[-1]),
        first=float(values[0]),
        last=float(values[-1]),
        vmin=vmin,
        vmax=vmax,
        min_step=min_step,
        max_step=max_step,
        nan=n_nan,
        posinf=n_posinf,
        neginf=n_neginf,
    )


def merge(parts: list[Summary]) -> Summary:
    """Summary of consecutive stretches, from their summaries (used for rollups)."""
    if not parts:
        raise ValueError("merge() needs at least one summary")
    mins = [(p.vmin, p.min_step) for p in parts if p.vmin is not None]
    maxs = [(p.vmax, p.max_step) for p in parts if p.vmax is not None]
    # Ties keep the earliest step, as argmin/argmax do.
    vmin, min_step = min(mins, key=lambda t: t[0]) if mins else (None, None)
    vmax, max_step = max(maxs, key=lambda t: t[0]) if maxs else (None, None)
    return Summary(
        n=sum(p.n for p in parts),
        step_lo=parts[0].step_lo,
        step_hi=parts[-1].step_hi,
        wall_lo=parts[0].wall_lo,
        wall_hi=parts[-1].wall_hi,
        first=parts[0].first,
        last=parts[-1].last,
        vmin=vmin,
        vmax=vmax,
        min_step=min_step,
        max_step=max_step,
        nan=sum(p.nan for p in parts),
        posinf=sum(p.posinf for p in parts),
        neginf=sum(p.neginf for p in parts),
    )


def encode(steps: list[int], values: list[float], walls: list[float]) -> tuple[bytes, bytes, bytes]:
    """Pack a chunk's columns as little-endian int64/float64 bytes."""
    return (
        np.asarray(steps, dtype="<i8").tobytes(),
        np.asarray(values, dtype="<f8").tobytes(),
        np.asarray(walls, dtype="<f8").tobytes(),
    )


def decode(steps: bytes, values: bytes, walls: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unpack a chunk's columns (read-only arrays over the bytes)."""
    return (
        np.frombuffer(steps, dtype="<i8"),
        np.frombuffer(values, dtype="<f8"),
        np.frombuffer(walls, dtype="<f8"),
    )
