"""One run's rows as the writer builds them: series, open chunks, rollups, events, summary.

`RunTables` holds what the writer keeps in memory between transactions — the run's segment and
last step, and per metric the open (partial) chunk — and writes records into an open
transaction. After a rollback the memory no longer matches the database: `reset()`, and the
next use reloads it (`load`). The thread, the transactions and the failure handling are the
writer's (writer.py); this module is the SQL.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..records import EventRecord
from .chunks import CHUNK, ROLLUP, SUMMARY_COLUMNS, Summary, decode, encode, merge, summarize
from .records import Point
from .schema import SUMMARY_SELECT

_CHUNK_UPSERT = (
    f"INSERT OR REPLACE INTO chunks (series, seg, idx, {SUMMARY_SELECT}) "
    f"VALUES ({', '.join('?' * (3 + len(SUMMARY_COLUMNS)))})"
)
_DATA_UPSERT = (
    "INSERT OR REPLACE INTO chunk_data (series, seg, idx, steps, vals, walls) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_ROLLUP_UPSERT = (
    f"INSERT OR REPLACE INTO rollups (series, seg, idx, {SUMMARY_SELECT}) "
    f"VALUES ({', '.join('?' * (3 + len(SUMMARY_COLUMNS)))})"
)
_EVENT_INSERT = (
    "INSERT INTO events (run, step, seg, wall, type, kind, severity, message, data, ref) "
    "VALUES (?,?,?,?,?,?,?,?,?,?)"
)


@dataclass(slots=True)
class _Series:
    sid: int
    seg: int
    idx: int
    steps: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    n: int = 0
    dirty: bool = False


class RunTables:
    """The writer's view of one run's rows (see the module docstring)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.seg = 0
        self.last_step: int | None = None
        self.series: dict[str, _Series] = {}
        self.loaded = False

    def reset(self) -> None:
        """Forget the memory (after a rollback); the next transaction reloads it."""
        self.loaded = False
        self.series.clear()

    def load(self, con: sqlite3.Connection) -> None:
        """(Re)build the in-memory state of the run from the database (resume, after an error)."""
        row = con.execute(
            "SELECT segment, last_step FROM runs WHERE id=?", (self.run_id,)
        ).fetchone()
        self.seg, self.last_step = (row[0], row[1]) if row else (0, None)
        self.series.clear()
        for sid, key, n in con.execute(
            "SELECT id, key, n FROM series WHERE run=?", (self.run_id,)
        ).fetchall():
            last = con.execute(
                "SELECT c.seg, c.idx, c.n, d.steps, d.vals, d.walls FROM chunks c JOIN chunk_data d "
                "USING (series, seg, idx) WHERE c.series=? ORDER BY c.seg DESC, c.idx DESC LIMIT 1",
                (sid,),
            ).fetchone()
            if last is None:
                self.series[key] = _Series(sid, self.seg, 0, n=n)
                continue
            seg, idx, cn, steps, vals, walls = last
            ser = _Series(sid, seg, idx, n=n)
            if cn < CHUNK:  # continue the open chunk
                s, v, w = decode(steps, vals, walls)
                ser.steps, ser.vals, ser.walls = s.tolist(), v.tolist(), w.tolist()
            else:
                ser.idx = idx + 1
            self.series[key] = ser
        self.loaded = True

    # -- records -------------------------------------------------------------------------------
    def add_point(self, con: sqlite3.Connection, point: Point) -> None:
        """Append a checked point to its series' open chunks (full chunks are written now)."""
        step, wall, series = point.step, point.wall, self.series
        if self.last_step is not None and step < self.last_step:
            self.seg += 1  # a step went back: rollback or resume; start a new segment
        self.last_step = step
        seg = self.seg
        for key, value in point.values:
            ser = series.get(key)
            if ser is None:
                ser = self._new_series(con, key)
            if ser.seg != seg:
                if ser.steps:
                    self._write_chunk(con, ser)
                ser.seg, ser.idx = seg, 0
                ser.steps, ser.vals, ser.walls = [], [], []
            ser.steps.append(step)
            ser.vals.append(value)
            ser.walls.append(wall)
            ser.n += 1
            ser.dirty = True
            if len(ser.steps) >= CHUNK:
                self._write_chunk(con, ser)

    def add_event(self, con: sqlite3.Connection, rec: EventRecord) -> None:
        """Insert an event in the current segment (at the last step when it names none)."""
        if rec.step is None:
            rec.step = self.last_step or 0
        con.execute(
            _EVENT_INSERT,
            (
                self.run_id,
                rec.step,
                self.seg,
                rec.wall,
                rec.type,
                rec.kind,
                rec.severity,
                rec.message,
                json.dumps(rec.data, default=str, allow_nan=True),
                rec.ref,
            ),
        )

    def merge_summary(self, con: sqlite3.Connection, values: dict[str, Any]) -> None:
        """Merge keys into the run's JSON summary."""
        row = con.execute("SELECT summary FROM runs WHERE id=?", (self.run_id,)).fetchone()
        current = json.loads(row[0]) if row and row[0] else {}
        current.update(values)
        con.execute(
            "UPDATE runs SET summary=? WHERE id=?",
            (json.dumps(current, default=str, allow_nan=True), self.run_id),
        )

    def finalize(self, con: sqlite3.Connection) -> None:
        """Write the open chunks and the series and run rows of what this transaction added."""
        updates = []
        for ser in self.series.values():
            if not ser.dirty:
                continue
            if ser.steps:
                self._write_chunk(con, ser)
            ser.dirty = False
            updates.append(ser)
        if updates:
            rows = []
            for ser in updates:
                last_val, last_step, last_wall = self._last_point(con, ser)
                nan = last_val != last_val
                rows.append(
                    (ser.n, last_step, None if nan else last_val, int(nan), last_wall, ser.sid)
                )
            con.executemany(
                "UPDATE series SET n=?, last_step=?, last_value=?, last_nan=?, last_wall=? "
                "WHERE id=?",
                rows,
            )
        con.execute(
            "UPDATE runs SET last_step=?, segment=? WHERE id=?",
            (self.last_step, self.seg, self.run_id),
        )

    # -- chunks --------------------------------------------------------------------------------
    def _new_series(self, con: sqlite3.Connection, key: str) -> _Series:
        cur = con.execute("INSERT INTO series(run, key) VALUES (?, ?)", (self.run_id, key))
        sid = cur.lastrowid
        assert sid is not None
        ser = _Series(sid, self.seg, 0)
        self.series[key] = ser
        return ser

    @staticmethod
    def _last_point(con: sqlite3.Connection, ser: _Series) -> tuple[float, int, float]:
        if ser.steps:
            return ser.vals[-1], ser.steps[-1], ser.walls[-1]
        row = con.execute(
            "SELECT last, step_hi, wall_hi FROM chunks WHERE series=? "
            "ORDER BY seg DESC, idx DESC LIMIT 1",
            (ser.sid,),
        ).fetchone()
        return (float("nan") if row[0] is None else row[0]), row[1], row[2]

    def _write_chunk(self, con: sqlite3.Connection, ser: _Series) -> None:
        """Write the open chunk (partial chunks are rewritten until full)."""
        steps = np.asarray(ser.steps, dtype=np.int64)
        vals = np.asarray(ser.vals, dtype=np.float64)
        walls = np.asarray(ser.walls, dtype=np.float64)
        summary = summarize(steps, vals, walls)
        con.execute(_CHUNK_UPSERT, (ser.sid, ser.seg, ser.idx, *summary.to_row()))
        con.execute(
            _DATA_UPSERT, (ser.sid, ser.seg, ser.idx, *encode(ser.steps, ser.vals, ser.walls))
        )
        if len(ser.steps) >= CHUNK:
            if ser.idx % ROLLUP == ROLLUP - 1:
                self._write_rollup(con, ser.sid, ser.seg, ser.idx // ROLLUP)
            ser.idx += 1
            ser.steps, ser.vals, ser.walls = [], [], []

    @staticmethod
    def _write_rollup(con: sqlite3.Connection, sid: int, seg: int, group: int) -> None:
        rows = con.execute(
            f"SELECT {SUMMARY_SELECT} FROM chunks WHERE series=? AND seg=? AND idx BETWEEN ? AND ? "
            "ORDER BY idx",
            (sid, seg, group * ROLLUP, group * ROLLUP + ROLLUP - 1),
        ).fetchall()
        summary = merge([Summary.from_row(r) for r in rows])
        con.execute(_ROLLUP_UPSERT, (sid, seg, group, *summary.to_row()))
