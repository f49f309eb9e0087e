"""A metric curve as the charts get it: `Reader.downsample` buckets, plus exact marker steps.

Bucket summaries count NaN/±inf but do not say at which step they occurred; for a marker at the
exact step this reads only the chunks that hold non-finite points, at most about one per bucket,
so the cost still follows the buckets drawn and not the points logged.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np

from ..store import Reader
from ..store.chunks import decode
from .marks import spikes

MAX_CHUNK_READS = 2_000  # chunks read for exact non-finite steps per request (~0.5 M points)


def _kind(x: float) -> str:
    return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")


class _Bucketing:
    """The same equal-width step buckets as `store.downsample.bucketize`."""

    def __init__(self, lo: int, hi: int, points: int) -> None:
        self.lo, self.points = lo, points
        self.width = max(1.0, (hi - lo + 1) / points)

    def index(self, steps: np.ndarray) -> np.ndarray:
        b = np.floor((steps - self.lo) / self.width).astype(np.int64)
        return np.clip(b, 0, self.points - 1)


def _nonfinite_chunks(
    con: sqlite3.Connection, sid: int, seg: int, lo: int, hi: int
) -> list[tuple[int, int, int]]:
    return con.execute(
        "SELECT idx, step_lo, step_hi FROM chunks WHERE series=? AND seg=? AND step_hi >= ? "
        "AND step_lo <= ? AND (nan > 0 OR posinf > 0 OR neginf > 0) ORDER BY idx",
        (sid, seg, lo, hi),
    ).fetchall()


def _first_nonfinite(
    con: sqlite3.Connection, sid: int, seg: int, idxs: list[int], lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of the non-finite points of the given chunks within [lo, hi]."""
    steps: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for i in range(0, len(idxs), 500):  # stay under SQLite's bound-parameter limit
        part = idxs[i : i + 500]
        marks = ",".join("?" * len(part))
        for s_b, v_b, w_b in con.execute(
            f"SELECT steps, vals, walls FROM chunk_data WHERE series=? AND seg=? AND idx IN "
            f"({marks}) ORDER BY idx",
            (sid, seg, *part),
        ):
            s, v, _ = decode(s_b, v_b, w_b)
            keep = ~np.isfinite(v) & (s >= lo) & (s <= hi)
            steps.append(s[keep])
            vals.append(v[keep])
    if not steps:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(steps), np.concatenate(vals)


def mark_nonfinite(
    con: sqlite3.Connection, sid: int, seg: dict[str, Any], grid: _Bucketing, lo: int, hi: int
) -> None:
    """Give each bucket holding NaN/±inf the exact step and kind of its first such point."""
    buckets = seg["buckets"]
    wanted = {
        int(grid.index(np.array([b["step"]]))[0]): b
        for b in buckets
        if b["nan"] or b["posinf"] or b["neginf"]
    }
    if not wanted:
        return
    chosen: list[int] = []
    open_buckets = set(wanted)
    for idx, s_lo, s_hi in _nonfinite_chunks(con, sid, seg["segment"], lo, hi):
        b_lo, b_hi = (int(x) for x in grid.index(np.array([s_lo, s_hi])))
        hit = {b for b in open_buckets if b_lo <= b <= b_hi}
        if hit:
            chosen.append(idx)
            open_buckets -= hit
        if len(chosen) >= MAX_CHUNK_READS:
            break
    steps, vals = _first_nonfinite(con, sid, seg["segment"], chosen, lo, hi)
    if len(steps):
        ids = grid.index(steps)
        _, first = np.unique(ids, return_index=True)
        for j in first:
            b = wanted.get(int(ids[j]))
            if b is not None:
                b["nonfinite_step"] = int(steps[j])
                b["nonfinite_kind"] = _kind(float(vals[j]))
    for b in wanted.values():  # past the read cap: the bucket's own last step, marked inexact
        if "nonfinite_step" not in b:
            b["nonfinite_step"] = b["step"]
            b["nonfinite_kind"] = b["nonfinite"] or ("nan" if b["nan"] else "inf")
            b["nonfinite_exact"] = False


def curve(
    reader: Reader,
    run_id: str,
    key: str,
    points: int,
    start: int | None = None,
    end: int | None = None,
) -> dict[str, Any]:
    """The downsampled curve of one metric, with spikes and exact non-finite steps marked.

    >>> curve(reader, run.id, "train/loss", 800)["segments"][0]["buckets"][0]  # doctest: +SKIP
    {'step': 0, 'value': 2.3, 'min': 2.3, 'max': 2.3, 'n': 1, 'nan': 0, ...}
    """
    con = reader.con
    row = con.execute(
        "SELECT s.id, min(c.step_lo), max(c.step_hi) FROM series s JOIN chunks c "
        "ON c.series = s.id WHERE s.run=? AND s.key=?",
        (run_id, key),
    ).fetchone()
    segments = reader.downsample(run_id, key, points, start, end)
    if row is None or row[0] is None:
        return {"key": key, "points": points, "start": start, "end": end, "segments": []}
    sid, first, last = row
    lo = first if start is None else start
    hi = last if end is None else end
    grid = _Bucketing(lo, hi, points)
    for seg in segments:
        mark_nonfinite(con, sid, seg, grid, lo, hi)
        seg["spikes"] = spikes(seg["buckets"])
    return {
        "key": key,
        "points": points,
        "start": lo,
        "end": hi,
        "first_step": first,
        "last_step": last,
        "segments": segments,
    }
