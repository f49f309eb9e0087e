"""Read-side queries on a store: runs, series, downsampled curves, events.

Readers never write: the dashboard, `diagnose`, `export` and `runs` all go through here on their
own connection, while training processes append through the writer.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TunescopeError
from ..values import jsonable
from .chunks import CHUNK, ROLLUP, decode
from .downsample import Units, bucketize
from .schema import SUMMARY_SELECT
from .status import effective_status


class RunNotFound(TunescopeError, LookupError):
    """No run matches the given name or id."""


@dataclass(frozen=True)
class RunInfo:
    """One run as readers see it (status already corrected for crashed processes)."""

    id: str
    name: str
    project: str
    status: str
    config: dict[str, Any]
    env: dict[str, Any]
    summary: dict[str, Any]
    created: float
    ended: float | None
    heartbeat: float
    last_step: int | None
    segments: int
    last: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds from start to end (or to the last heartbeat while running / once crashed)."""
        end = self.ended if self.ended is not None else self.heartbeat
        return max(0.0, end - self.created)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become strings "nan"/"inf"/"-inf")."""
        return jsonable(
            {
                "id": self.id,
                "name": self.name,
                "project": self.project,
                "status": self.status,
                "config": self.config,
                "env": self.env,
                "summary": self.summary,
                "created": self.created,
                "ended": self.ended,
                "duration": self.duration,
                "last_step": self.last_step,
                "segments": self.segments,
                "last": self.last,
            }
        )


@dataclass(frozen=True)
class Series:
    """Every point of one metric, in log order, with the segment each was logged in."""

    key: str
    steps: np.ndarray
    values: np.ndarray
    walls: np.ndarray
    segs: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class Event:
    """A stored finding, intervention or note."""

    id: int
    run: str
    step: int
    seg: int
    wall: float
    type: str
    kind: str
    severity: str
    message: str
    data: dict[str, Any]
    ref: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return jsonable(
            {
                "id": self.id,
                "type": self.type,
                "kind": self.kind,
                "step": self.step,
                "segment": self.seg,
                "wall": self.wall,
                "severity": self.severity,
                "message": self.message,
                "data": self.data,
                "ref": self.ref,
            }
        )


_RUN_COLS = (
    "id, name, project, status, config, env, summary, created, ended, heartbeat, "
    "last_step, segment, proc"
)


class Reader:
    """Queries over one store database connection."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    # -- runs --------------------------------------------------------------------------------
    def _run_from_row(self, row: tuple[Any, ...], now: float) -> RunInfo:
        (
            rid,
            name,
            project,
            status,
            config,
            env,
            summary,
            created,
            ended,
            heartbeat,
            last_step,
            segment,
            proc,
        ) = row
        return RunInfo(
            id=rid,
            name=name,
            project=project,
            status=effective_status(status, proc, heartbeat, now),
            config=json.loads(config),
            env=json.loads(env),
            summary=json.loads(summary or "{}"),
            created=created,
            ended=ended,
            heartbeat=heartbeat,
            last_step=last_step,
            segments=segment + 1,
        )

    def runs(self, project: str | None = None, with_last: bool = True) -> list[RunInfo]:
        """All runs, newest first, each with the last value of every metric."""
        now = time.time()
        sql = f"SELECT {_RUN_COLS} FROM runs"
        args: tuple[Any, ...] = ()
        if project is not None:
            sql += " WHERE project=?"
            args = (project,)
        rows = self.con.execute(sql + " ORDER BY created DESC", args).fetchall()
        runs = [self._run_from_row(r, now) for r in rows]
        if with_last and runs:
            last: dict[str, dict[str, float]] = {}
            for run, key, value, nan in self.con.execute(
                "SELECT run, key, last_value, last_nan FROM series WHERE n > 0 ORDER BY key"
            ):
                last.setdefault(run, {})[key] = math.nan if nan else float(value)
            for r in runs:
                r.last.update(last.get(r.id, {}))
        return runs

    def run(self, ref: str) -> RunInfo:
        """The run whose id is `ref`, else the newest run named `ref`; `RunNotFound` otherwise."""
        now = time.time()
        row = self.con.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (ref,)).fetchone()
        if row is None:
            row = self.con.execute(
                f"SELECT {_RUN_COLS} FROM runs WHERE name=? ORDER BY created DESC LIMIT 1", (ref,)
            ).fetchone()
        if row is None:
            names = [
                r[0]
                for r in self.con.execute("SELECT name FROM runs ORDER BY created DESC LIMIT 200")
            ]
            import difflib

            close = difflib.get_close_matches(ref, names, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise RunNotFound(
                f"no run named or with id {ref!r} in this store.{hint} "
                "List runs with `tunescope runs`."
            )
        info = self._run_from_row(row, now)
        for key, value, nan in self.con.execute(
            "SELECT key, last_value, last_nan FROM series WHERE run=? AND n > 0 ORDER BY key",
            (info.id,),
        ):
            info.last[key] = math.nan if nan else float(value)
        return info

    def same_name(self, name: str) -> int:
        """How many runs share this name."""
        return int(
            self.con.execute("SELECT count(*) FROM runs WHERE name=?", (name,)).fetchone()[0]
        )

    # -- series --------------------------------------------------------------------------------
    def keys(self, run_id: str) -> list[dict[str, Any]]:
        """The metrics of a run: key, number of points, last step and value."""
        out = []
        for key, n, last_step, value, nan in self.con.execute(
            "SELECT key, n, last_step, last_value, last_nan FROM series WHERE run=? AND n > 0 "
            "ORDER BY key",
            (run_id,),
        ):
            out.append(
                {"key": key, "n": n, "last_step": last_step, "last": math.nan if nan else value}
            )
        return out

    def _series_id(self, run_id: str, key: str) -> int | None:
        row = self.con.execute(
            "SELECT id FROM series WHERE run=? AND key=?", (run_id, key)
        ).fetchone()
        return None if row is None else int(row[0])

    def series(self, run_id: str, key: str) -> Series:
        """Every point of one metric (empty arrays if the run never logged it)."""
        sid = self._series_id(run_id, key)
        parts: list[tuple[np.ndarray, ...]] = []
        if sid is not None:
            for seg, steps, vals, walls in self.con.execute(
                "SELECT seg, steps, vals, walls FROM chunk_data WHERE series=? ORDER BY seg, idx",
                (sid,),
            ):
                s, v, w = decode(steps, vals, walls)
                parts.append((s, v, w, np.full(len(s), seg, dtype=np.int64)))
        if not parts:
            e_i, e_f = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
            return Series(key, e_i, e_f, e_f, e_i)
        cols = [np.concatenate([p[i] for p in parts]) for i in range(4)]
        return Series(key, cols[0], cols[1], cols[2], cols[3])

    def history(self, run_id: str) -> dict[str, Series]:
        """Every series of a run."""
        return {k["key"]: self.series(run_id, k["key"]) for k in self.keys(run_id)}

    def segment_starts(self, run_id: str) -> dict[int, int]:
        """First step of each segment of a run (over all its metrics)."""
        rows = self.con.execute(
            "SELECT c.seg, min(c.step_lo) FROM chunks c JOIN series s ON s.id = c.series "
            "WHERE s.run=? GROUP BY c.seg",
            (run_id,),
        ).fetchall()
        return {int(seg): int(lo) for seg, lo in rows}

    # -- downsampling --------------------------------------------------------------------------
    def downsample(
        self, run_id: str, key: str, points: int, start: int | None = None, end: int | None = None
    ) -> list[dict[str, Any]]:
        """A curve reduced to at most `points` buckets per segment over steps [start, end].

        Returns one entry per segment: `segment`, `start_step`, `abandoned_from` (the step from
        which a later segment replaced this one, or None) and `buckets` (see `bucketize`).
        """
        sid = self._series_id(run_id, key)
        if sid is None:
            return []
        segs = self.con.execute(
            "SELECT seg, min(step_lo), max(step_hi) FROM chunks WHERE series=? GROUP BY seg "
            "ORDER BY seg",
            (sid,),
        ).fetchall()
        if not segs:
            return []
        lo = min(s[1] for s in segs) if start is None else start
        hi = max(s[2] for s in segs) if end is None else end
        run_starts = self.segment_starts(run_id) if len(segs) > 1 else {}
        out = []
        for seg, seg_lo, seg_hi in segs:
            later = [s for g, s in run_starts.items() if g > seg]
            abandoned = min(later) if later else None
            if seg_hi < lo or seg_lo > hi:
                continue
            units = self._units(sid, seg, lo, hi, points)
            out.append(
                {
                    "segment": seg,
                    "start_step": seg_lo,
                    "abandoned_from": abandoned,
                    "buckets": bucketize(units, lo, hi, points),
                }
            )
        return out

    def _first_chunk(self, sid: int, seg: int, op: str, step: int) -> tuple[int, int] | None:
        row = self.con.execute(
            f"SELECT idx, step_lo FROM chunks WHERE series=? AND seg=? AND step_hi {op} ? "
            "ORDER BY step_hi, idx LIMIT 1",
            (sid, seg, step),
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def _raw(self, sid: int, seg: int, i_lo: int, i_hi: int, lo: int, hi: int) -> Units:
        rows = self.con.execute(
            "SELECT steps, vals, walls FROM chunk_data WHERE series=? AND seg=? AND idx BETWEEN ? "
            "AND ? ORDER BY idx",
            (sid, seg, i_lo, i_hi),
        ).fetchall()
        if not rows:
            return Units.empty()
        # One decode over the joined bytes instead of one small array per chunk.
        s, v, w = decode(*(b"".join(col) for col in zip(*rows, strict=True)))
        mask = (s >= lo) & (s <= hi)
        return Units.from_points(s[mask], v[mask], w[mask])

    def _summaries(self, table: str, sid: int, seg: int, a: int, b: int) -> list[tuple[Any, ...]]:
        return self.con.execute(
            f"SELECT idx, {SUMMARY_SELECT} FROM {table} WHERE series=? AND seg=? AND idx BETWEEN "
            "? AND ? ORDER BY idx",
            (sid, seg, a, b),
        ).fetchall()

    def _units(self, sid: int, seg: int, lo: int, hi: int, buckets: int) -> Units:
        """Cover steps [lo, hi] of one segment with units no wider than about one bucket."""
        first = self._first_chunk(sid, seg, ">=", lo)
        if first is None:
            return Units.empty()
        i_lo = first[0]
        after = self._first_chunk(sid, seg, ">", hi)
        if after is None:
            i_hi = int(
                self.con.execute(
                    "SELECT max(idx) FROM chunks WHERE series=? AND seg=?", (sid, seg)
                ).fetchone()[0]
            )
        else:
            i_hi = after[0] if after[1] <= hi else after[0] - 1
        if i_hi < i_lo:
            return Units.empty()
        per_bucket = (i_hi - i_lo + 1) * CHUNK / max(1, buckets)
        if per_bucket < CHUNK or i_hi - i_lo < 2:
            return self._raw(sid, seg, i_lo, i_hi, lo, hi)
        # Interior chunks lie wholly inside [lo, hi]; the two edge chunks are read point by point.
        a, b = i_lo + 1, i_hi - 1
        parts = [self._raw(sid, seg, i_lo, i_lo, lo, hi)]
        if per_bucket >= CHUNK * ROLLUP:
            g_lo, g_hi = -(-a // ROLLUP), (b + 1) // ROLLUP - 1
            rolls = self._summaries("rollups", sid, seg, g_lo, g_hi) if g_hi >= g_lo else []
            if rolls:
                covered_lo = rolls[0][0] * ROLLUP
                covered_hi = rolls[-1][0] * ROLLUP + ROLLUP - 1
                parts.append(
                    Units.from_rows(
                        [r[1:] for r in self._summaries("chunks", sid, seg, a, covered_lo - 1)]
                    )
                )
                parts.append(Units.from_rows([r[1:] for r in rolls]))
                a = covered_hi + 1
        parts.append(Units.from_rows([r[1:] for r in self._summaries("chunks", sid, seg, a, b)]))
        parts.append(self._raw(sid, seg, i_hi, i_hi, lo, hi))
        return Units.concat(parts)

    # -- events --------------------------------------------------------------------------------
    def events(self, run_id: str, types: tuple[str, ...] | None = None) -> list[Event]:
        """Events of a run in log order."""
        rows = self.con.execute(
            "SELECT id, run, step, seg, wall, type, kind, severity, message, data, ref FROM events "
            "WHERE run=? ORDER BY id",
            (run_id,),
        ).fetchall()
        out = [
            Event(
                id=r[0],
                run=r[1],
                step=r[2],
                seg=r[3],
                wall=r[4],
                type=r[5],
                kind=r[6],
                severity=r[7],
                message=r[8],
                data=json.loads(r[9]),
                ref=r[10],
            )
            for r in rows
        ]
        return [e for e in out if types is None or e.type in types]
