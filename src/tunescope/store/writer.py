"""The background writer: drains runs' log queues into SQLite in batched transactions.

`Run.log` only appends a tuple to a `collections.deque` (thread-safe, no lock, no I/O); this
thread wakes at least every `interval` seconds, drains every attached run, and writes all of it
in one transaction. A failed transaction (disk full, database locked for too long) is rolled
back, the drained records go back to the front of their queues and the in-memory chunk state is
reloaded from the database, so a point is never dropped; the error is reported to the caller at
the next `log()`/`finish()`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import TunescopeError
from ..values import resolve
from .chunks import CHUNK, ROLLUP, SUMMARY_COLUMNS, Summary, decode, encode, merge, summarize
from .schema import SUMMARY_SELECT, connect

log = logging.getLogger("tunescope")

HEARTBEAT_EVERY = 2.0  # seconds between heartbeats of a live run (see status.py)

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


@dataclass(slots=True)
class EventRecord:
    """A finding, intervention or note, queued in log order with the metrics."""

    type: str
    kind: str
    severity: str
    message: str
    data: dict[str, Any]
    step: int | None = None
    ref: str | None = None
    wall: float = field(default_factory=time.time)


@dataclass(slots=True)
class SummaryRecord:
    """Keys to merge into the run's JSON summary (final metrics, best checkpoint, ...)."""

    values: dict[str, Any]


class Observer(Protocol):
    """Sees every logged record after its values are numbers (runs on the writer thread).

    Returns events to store in the same transaction, e.g. findings of the online monitor.
    """

    def observe(self, step: int, wall: float, values: list[tuple[str, float]]) -> list[EventRecord]:
        """Called once per `log()` call, in log order."""
        ...

    # Optional: `finish(wall) -> list[EventRecord]`, called once in the run's last transaction.


Listener = Callable[[list[EventRecord]], None]


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


@dataclass
class _RunState:
    run_id: str
    queue: deque[Any]
    seg: int = 0
    last_step: int | None = None
    series: dict[str, _Series] = field(default_factory=dict)
    closing: tuple[str, float] | None = None  # (status, ended)
    loaded: bool = False
    observer: Observer | None = None
    listener: Listener | None = None
    committed: list[EventRecord] = field(default_factory=list)


class WriterError(TunescopeError, RuntimeError):
    """The writer thread could not write to the store; the points are still queued."""


class Writer:
    """One background thread per store database, shared by every run of the process."""

    def __init__(self, db_path: Path, interval: float = 0.5, busy_timeout: float = 30.0) -> None:
        self.db_path = db_path
        self.interval = interval
        self.busy_timeout = busy_timeout
        self._runs: dict[str, _RunState] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._started = 0
        self._done = 0
        self._stopping = False
        self.error: BaseException | None = None
        self._last_heartbeat = 0.0
        self._con: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._loop, name="tunescope-writer", daemon=True)
        self._thread.start()

    # -- called from user threads -------------------------------------------------------------
    def attach(
        self,
        run_id: str,
        queue: deque[Any],
        observer: Observer | None = None,
        listener: Listener | None = None,
    ) -> None:
        """Start draining `queue` into run `run_id` (whose row already exists).

        `observer` sees every record once its values are numbers; `listener` gets the events
        of each committed transaction (e.g. to print findings), on the writer thread.
        """
        with self._lock:
            self._runs[run_id] = _RunState(run_id, queue, observer=observer, listener=listener)

    def close_run(self, run_id: str, status: str, timeout: float | None = None) -> None:
        """Write everything queued for the run, set its final status, and detach it."""
        with self._lock:
            state = self._runs.get(run_id)
            if state is None:
                return
            state.closing = (status, time.time())
        self.flush(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything queued before this call is committed to the database."""
        with self._cond:
            target = self._started + 1
            self._wake.set()
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._done < target:
                if not self._thread.is_alive():
                    raise WriterError(f"the tunescope writer thread for {self.db_path} has stopped")
                remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if remaining <= 0:
                    raise WriterError(
                        f"timed out after {timeout}s waiting for the store writer "
                        f"({self.db_path}); last error: {self.error!r}"
                    )
                self._cond.wait(remaining)
                self._wake.set()
        if self.error is not None:
            raise WriterError(
                f"could not write to {self.db_path}: {self.error}. The points are kept in memory "
                "and retried; free disk space or fix permissions."
            ) from self.error

    def wake(self) -> None:
        """Ask for a cycle now (the queue is filling up)."""
        self._wake.set()

    def stop(self) -> None:
        """Flush and end the thread (idempotent)."""
        if self._thread.is_alive():
            with contextlib.suppress(WriterError):
                self.flush(timeout=60)
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout=10)

    # -- the thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        self._con = connect(self.db_path, timeout=self.busy_timeout)
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._cond:
                self._started += 1
                runs = list(self._runs.values())
            self._cycle(runs)
            with self._cond:
                self._done += 1
                self._cond.notify_all()
            if self._stopping:
                self._con.close()
                return

    def _cycle(self, runs: list[_RunState]) -> None:
        assert self._con is not None
        con = self._con
        # Read each run's closing request *before* draining its queue: `finish()` sets it after
        # the last `log()`, so a run seen closing here has all its records in this drain. (A
        # request that arrives mid-cycle waits for the next cycle, which drains the rest.)
        closing = [(state, state.closing) for state in runs]
        drained: list[tuple[_RunState, list[Any]]] = []
        for state in runs:
            q = state.queue
            items = [q.popleft() for _ in range(len(q))]
            drained.append((state, items))
        closed = [(s, c) for s, c in closing if c is not None]
        now = time.time()
        beat = now - self._last_heartbeat >= HEARTBEAT_EVERY
        if not any(items for _, items in drained) and not beat and not closed:
            return
        try:
            con.execute("BEGIN IMMEDIATE")
            for state, items in drained:
                if not state.loaded:
                    self._load(con, state)
                self._write(con, state, items)
            for s, _ in closed:
                self._finish_observer(con, s)
            live = [s.run_id for s, c in closing if c is None]
            if live:
                con.executemany("UPDATE runs SET heartbeat=? WHERE id=?", [(now, r) for r in live])
            for s, (status, ended) in closed:
                con.execute(
                    "UPDATE runs SET status=?, ended=?, heartbeat=? WHERE id=?",
                    (status, ended, now, s.run_id),
                )
            con.execute("COMMIT")
        except Exception as exc:  # keep the points: put them back and retry next cycle
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            for state, items in drained:
                state.queue.extendleft(reversed(items))
                state.loaded = False
                state.series.clear()
                state.committed = []
            if self.error is None:
                log.warning("tunescope: writing to %s failed (%s); will retry", self.db_path, exc)
            self.error = exc
            return
        self.error = None
        self._last_heartbeat = now
        for state, _ in drained:
            events, state.committed = state.committed, []
            if events and state.listener is not None:
                try:
                    state.listener(events)
                except Exception as exc:  # printing must never stop the writing
                    log.warning("tunescope: event listener failed: %s", exc)
        with self._lock:
            for s, _ in closed:
                self._runs.pop(s.run_id, None)

    # -- state -------------------------------------------------------------------------------------
    def _load(self, con: sqlite3.Connection, state: _RunState) -> None:
        """(Re)build the in-memory state of a run from the database (resume, after an error)."""
        row = con.execute(
            "SELECT segment, last_step FROM runs WHERE id=?", (state.run_id,)
        ).fetchone()
        state.seg, state.last_step = (row[0], row[1]) if row else (0, None)
        state.series.clear()
        for sid, key, n in con.execute(
            "SELECT id, key, n FROM series WHERE run=?", (state.run_id,)
        ).fetchall():
            last = con.execute(
                "SELECT c.seg, c.idx, c.n, d.steps, d.vals, d.walls FROM chunks c JOIN chunk_data d "
                "USING (series, seg, idx) WHERE c.series=? ORDER BY c.seg DESC, c.idx DESC LIMIT 1",
                (sid,),
            ).fetchone()
            if last is None:
                state.series[key] = _Series(sid, state.seg, 0, n=n)
                continue
            seg, idx, cn, steps, vals, walls = last
            ser = _Series(sid, seg, idx, n=n)
            if cn < CHUNK:  # continue the open chunk
                s, v, w = decode(steps, vals, walls)
                ser.steps, ser.vals, ser.walls = s.tolist(), v.tolist(), w.tolist()
            else:
                ser.idx = idx + 1
            state.series[key] = ser
        state.loaded = True

    def _new_series(self, con: sqlite3.Connection, state: _RunState, key: str) -> _Series:
        cur = con.execute("INSERT INTO series(run, key) VALUES (?, ?)", (state.run_id, key))
        sid = cur.lastrowid
        assert sid is not None
        ser = _Series(sid, state.seg, 0)
        state.series[key] = ser
        return ser

    # -- writing -------------------------------------------------------------------------------
    def _write(self, con: sqlite3.Connection, state: _RunState, items: list[Any]) -> None:
        series = state.series
        records: list[EventRecord] = []
        observer = state.observer
        for rec in items:
            if type(rec) is tuple:
                step, wall, kv = rec
                if state.last_step is not None and step < state.last_step:
                    state.seg += 1  # a step went back: rollback or resume; start a new segment
                state.last_step = step
                seg = state.seg
                resolved: list[tuple[str, float]] = []
                for key, val in kv:
                    ser = series.get(key)
                    if ser is None:
                        ser = self._new_series(con, state, key)
                    if ser.seg != seg:
                        if ser.steps:
                            self._write_chunk(con, ser)
                        ser.seg, ser.idx = seg, 0
                        ser.steps, ser.vals, ser.walls = [], [], []
                    value = val if type(val) is float else resolve(val)
                    resolved.append((key, value))
                    ser.steps.append(step)
                    ser.vals.append(value)
                    ser.walls.append(wall)
                    ser.n += 1
                    ser.dirty = True
                    if len(ser.steps) >= CHUNK:
                        self._write_chunk(con, ser)
                if observer is not None:
                    observer = self._observe(state, observer, step, wall, resolved, records)
            elif isinstance(rec, EventRecord):
                if rec.step is None:
                    rec.step = state.last_step or 0
                records.append(rec)
            elif isinstance(rec, SummaryRecord):
                self._merge_summary(con, state.run_id, rec.values)
        self._insert_events(con, state, records)
        updates = []
        for ser in series.values():
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
            (state.last_step, state.seg, state.run_id),
        )

    @staticmethod
    def _insert_events(
        con: sqlite3.Connection, state: _RunState, records: list[EventRecord]
    ) -> None:
        if not records:
            return
        con.executemany(
            "INSERT INTO events (run, step, seg, wall, type, kind, severity, message, data, ref) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    state.run_id,
                    rec.step,
                    state.seg,
                    rec.wall,
                    rec.type,
                    rec.kind,
                    rec.severity,
                    rec.message,
                    json.dumps(rec.data, default=str, allow_nan=True),
                    rec.ref,
                )
                for rec in records
            ],
        )
        state.committed.extend(records)

    def _finish_observer(self, con: sqlite3.Connection, state: _RunState) -> None:
        """Give the observer its last word (e.g. the final step of findings still active)."""
        finish = getattr(state.observer, "finish", None)
        if finish is None:
            return
        try:
            records = list(finish(time.time()))
        except Exception as exc:
            log.warning("tunescope: the monitor failed while finishing: %r", exc)
            return
        for rec in records:
            if rec.step is None:
                rec.step = state.last_step or 0
        self._insert_events(con, state, records)

    @staticmethod
    def _observe(
        state: _RunState,
        observer: Observer,
        step: int,
        wall: float,
        values: list[tuple[str, float]],
        out: list[EventRecord],
    ) -> Observer | None:
        try:
            out.extend(observer.observe(step, wall, values))
            return observer
        except Exception as exc:  # a monitor bug must not cost the user their points
            log.warning("tunescope: the monitor failed at step %s and is disabled: %r", step, exc)
            out.append(
                EventRecord(
                    "note",
                    "monitor_error",
                    "warning",
                    f"the online monitor failed at step {step} and was disabled: {exc!r}",
                    {},
                    step,
                )
            )
            state.observer = None
            return None

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
        import numpy as np

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

    @staticmethod
    def _merge_summary(con: sqlite3.Connection, run_id: str, values: dict[str, Any]) -> None:
        row = con.execute("SELECT summary FROM runs WHERE id=?", (run_id,)).fetchone()
        current = json.loads(row[0]) if row and row[0] else {}
        current.update(values)
        con.execute(
            "UPDATE runs SET summary=? WHERE id=?",
            (json.dumps(current, default=str, allow_nan=True), run_id),
        )
