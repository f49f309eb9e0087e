"""The background writer: drains runs' log queues into SQLite in bounded transactions.

`Run.log` only appends a tuple to a `collections.deque` (thread-safe, no lock, no I/O); this
thread starts a cycle at least every `interval` seconds and drains every attached run. A cycle
writes in transactions of at most `budget` seconds of work each, so under any logging rate a
commit lands at least every `interval + budget` seconds and a killed process loses well under a
second of points (bench/reliability/kill_under_load.py measures it). Faster than the writer can
go, `log()` waits: each run's `Progress.limit` caps the values it may have queued and not yet
written at about `BACKLOG_SECONDS` of the writer's measured speed.

Two kinds of failure, handled differently:
- The environment (disk full, database locked, read-only, I/O error): the transaction is rolled
  back, every drained record goes back to the front of its queue, the in-memory chunk state is
  reloaded from the database, and the error is reported to the caller at the next
  `log()`/`flush()`/`finish()`. A point is never dropped; writing resumes once the cause is gone.
- One record SQLite cannot hold (a step beyond int64, text that is not UTF-8, a tensor without
  data): points are checked before they touch the chunk state or the monitor and a bad one is
  rejected; anything else that fails a transaction is isolated by bisection (transactions of
  half the records until the bad one is alone). A rejected record is reported once (a warning
  and a `note` event, `kind="rejected_record"`) and everything else is written.
"""

from __future__ import annotations

import contextlib
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
from ..records import EventRecord
from .records import Point, SummaryRecord, check_point, safe_text, weight
from .schema import connect
from .tables import RunTables

log = logging.getLogger("tunescope")

HEARTBEAT_EVERY = 2.0  # seconds between heartbeats of a live run (see status.py)
# Work per transaction, in seconds. With the cycle interval (0.25 s) and the backlog cap below it
# bounds how old an uncommitted point can get: interval + backlog + budget, about 0.65 s.
BUDGET = 0.15
MAX_RECORDS = 50_000  # records per transaction, whatever their speed (bounds rollback memory)
# `log()` waits once this much of the writer's measured work is queued and not yet written:
# what piles up beyond the writer's speed is what a kill would lose.
BACKLOG_SECONDS = 0.25
MIN_BACKLOG = 2_000  # values; below this the writer's speed is never the limit
START_BACKLOG = 50_000  # values, until the writer has measured its speed on this machine
MAX_REJECT_NOTES = 10  # `note` events per run for rejected records; more are only counted


def retryable(exc: BaseException) -> bool:
    """Whether a failed write should be retried with the same records (the environment failed:
    disk full, locked, read-only, I/O error, a damaged file) rather than isolated record by
    record (a value SQLite refuses: an integer beyond int64, text that is not UTF-8, JSON it
    cannot hold). When in doubt, retry: a wrong retry only waits, a wrong rejection loses."""
    if isinstance(exc, MemoryError | OSError | sqlite3.OperationalError | sqlite3.InternalError):
        return True
    if isinstance(
        exc,
        sqlite3.IntegrityError
        | sqlite3.DataError
        | sqlite3.ProgrammingError
        | sqlite3.NotSupportedError
        | sqlite3.InterfaceError,
    ):
        return False
    # A bare DatabaseError is a damaged or foreign file; anything else (OverflowError,
    # UnicodeEncodeError, ValueError from JSON) comes from one record's contents.
    return isinstance(exc, sqlite3.DatabaseError)


def _hint(exc: BaseException | None) -> str:
    """What the user can do about a write error."""
    text = str(exc).lower()
    if "full" in text or "i/o" in text:
        return "free disk space"
    if "locked" in text or "busy" in text:
        return "another process holds the store's write lock; let it finish"
    if "readonly" in text or "read-only" in text or "permission" in text or "open" in text:
        return "fix the store's permissions"
    return "free disk space or fix permissions"


@dataclass(slots=True)
class Progress:
    """How far the writer got with one run's queue; shared with the run's caller.

    Written by the writer thread only: `done` counts values (a call counts at least one) taken
    off the queue and committed or rejected; `limit` is how many the caller may have queued
    beyond `done` before `log()` waits.
    """

    done: int = 0
    limit: int = START_BACKLOG
    cap: int = 10**9  # the run's own ceiling (`max_queue`)


class Observer(Protocol):
    """Sees every logged record after its values are numbers (runs on the writer thread).

    Returns events to store in the same transaction, e.g. findings of the online monitor.
    """

    def observe(self, step: int, wall: float, values: list[tuple[str, float]]) -> list[EventRecord]:
        """Called once per `log()` call, in log order."""
        ...

    # Optional: `finish(wall) -> list[EventRecord]`, called once in the run's last transaction.


Listener = Callable[[list[EventRecord]], None]


@dataclass
class _RunState:
    run_id: str
    queue: deque[Any]
    tables: RunTables
    closing: tuple[str, float] | None = None  # (status, ended)
    observer: Observer | None = None
    listener: Listener | None = None
    committed: list[EventRecord] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    rejected: int = 0
    final_done: bool = False  # the observer has had its last word (see `_final_events`)


class WriterError(TunescopeError, RuntimeError):
    """The writer thread could not write to the store; the points are still queued."""


class _Retry(Exception):
    """The environment failed while isolating a bad record: stop and keep the rest."""


class Writer:
    """One background thread per store database, shared by every run of the process."""

    def __init__(
        self,
        db_path: Path,
        interval: float = 0.25,
        busy_timeout: float = 30.0,
        budget: float = BUDGET,
    ) -> None:
        self.db_path = db_path
        self.interval = interval
        self.busy_timeout = busy_timeout
        self.budget = budget
        self._runs: dict[str, _RunState] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._started = 0
        self._done = 0
        self._stopping = False
        self.error: BaseException | None = None
        self._last_heartbeat = 0.0
        self._rate = 0.0  # values per second the writer managed in recent transactions
        self._con: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._loop, name="tunescope-writer", daemon=True)
        self._thread.start()

    # -- called from user threads -------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """Whether the writer thread is running."""
        return self._thread.is_alive()

    def attach(
        self,
        run_id: str,
        queue: deque[Any],
        observer: Observer | None = None,
        listener: Listener | None = None,
        max_backlog: int | None = None,
    ) -> Progress:
        """Start draining `queue` into run `run_id` (whose row already exists).

        `observer` sees every record once its values are numbers; `listener` gets the events
        of each committed transaction (e.g. to print findings), on the writer thread. Returns
        the run's `Progress`, which the caller reads to wait when it logs faster than the
        writer writes; `max_backlog` caps its `limit`.
        """
        state = _RunState(run_id, queue, RunTables(run_id), observer=observer, listener=listener)
        if max_backlog is not None:
            state.progress.cap = max(1, max_backlog)
            state.progress.limit = min(state.progress.limit, state.progress.cap)
        with self._lock:
            self._runs[run_id] = state
        return state.progress

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
                f"and retried; {_hint(self.error)}."
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
        started = 0.0
        while True:
            # Cycles start every `interval` seconds, not `interval` after the last one ended:
            # a long cycle is followed at once by the next, so points never wait twice.
            remaining = self.interval - (time.monotonic() - started)
            if remaining > 0:
                self._wake.wait(remaining)
            self._wake.clear()
            started = time.monotonic()
            with self._cond:
                self._started += 1
                runs = list(self._runs.values())
            try:
                self._cycle(runs)
            except Exception as exc:  # a writer bug must not end the thread: keep and retry
                log.warning("tunescope: the store writer failed (%r); will retry", exc)
                self._rollback(self._con, runs)
                self.error = exc
            with self._cond:
                self._done += 1
                self._cond.notify_all()
            if self._stopping:
                self._con.close()
                return

    def _cycle(self, runs: list[_RunState]) -> None:
        """Write every record queued when the cycle starts, in bounded transactions."""
        # Read each run's closing request *before* counting its queue: `finish()` sets it after
        # the last `log()`, so a run seen closing here has all its records in this cycle. (A
        # request that arrives mid-cycle waits for the next cycle, which drains the rest.)
        closing = [state.closing for state in runs]
        left = [len(state.queue) for state in runs]
        closed = [False] * len(runs)
        turn = 0
        while True:
            beat = time.time() - self._last_heartbeat >= HEARTBEAT_EVERY
            to_close = [
                i for i, c in enumerate(closing) if c is not None and not closed[i] and not left[i]
            ]
            if not any(left) and not beat and not to_close:
                break
            # Start each transaction at the next run, so one busy run never starves the others.
            order = [(i + turn) % len(runs) for i in range(len(runs))]
            turn += 1
            if not self._transaction(runs, order, left, closing, closed):
                return  # the environment failed: everything taken is back in its queue
        with self._lock:
            for state, done in zip(runs, closed, strict=True):
                if done:
                    self._runs.pop(state.run_id, None)

    def _transaction(
        self,
        runs: list[_RunState],
        order: list[int],
        left: list[int],
        closing: list[tuple[str, float] | None],
        closed: list[bool],
    ) -> bool:
        """One transaction of at most `budget` seconds of work; False if it must be retried."""
        assert self._con is not None
        con = self._con
        t0 = time.monotonic()
        deadline = t0 + self.budget
        taken: list[tuple[_RunState, list[Any]]] = []
        try:
            con.execute("BEGIN IMMEDIATE")
            budget = MAX_RECORDS
            for i in order:
                state = runs[i]
                ending = closing[i] is not None and not closed[i] and not state.final_done
                if (not left[i] or budget <= 0) and not (ending and not left[i]):
                    continue
                entries: list[Any] = []
                taken.append((state, entries))
                if not state.tables.loaded:
                    state.tables.load(con)
                q = state.queue
                # At least one record per transaction, however slow, so a cycle always ends.
                while left[i] and budget > 0 and (not entries or time.monotonic() < deadline):
                    item = q.popleft()
                    left[i] -= 1
                    budget -= 1
                    for entry in self._prepare(state, item):
                        entries.append(entry)
                        self._apply(con, state, entry)
                if not left[i] and closing[i] is not None:
                    for entry in self._final_events(state):
                        entries.append(entry)
                        self._apply(con, state, entry)
                state.tables.finalize(con)
            finishing = self._mark(con, runs, left, closing, closed)
            con.execute("COMMIT")
        except Exception as exc:
            self._rollback(con, runs)
            if retryable(exc):
                self._put_back(taken)
                if self.error is None:
                    log.warning(
                        "tunescope: writing to %s failed (%s); will retry", self.db_path, exc
                    )
                self.error = exc
                return False
            # A record the checks let through that SQLite refuses: find it, write the rest.
            try:
                for state, entries in taken:
                    notes = self._isolate(con, state, entries)
                    if notes:  # written next, still in this cycle (flush() waits for them)
                        state.queue.extendleft(reversed(notes))
                        left[runs.index(state)] += len(notes)
                finishing = self._commit_marks(con, runs, left, closing, closed)
            except _Retry as retry:
                if self.error is None:
                    log.warning(
                        "tunescope: writing to %s failed (%s); will retry", self.db_path, retry
                    )
                self.error = retry.__cause__
                return False
        else:
            self._committed(taken)
            values = sum(e.weight for _, entries in taken for e in entries if type(e) is Point)
            self._measure(values, time.monotonic() - t0)
        for i in finishing:
            closed[i] = True
        self.error = None
        return True

    # -- transactions --------------------------------------------------------------------------
    def _rollback(self, con: sqlite3.Connection, runs: list[_RunState]) -> None:
        """Undo the open transaction; the chunk state in memory is reloaded before next use."""
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")
        for state in runs:
            state.tables.reset()
            state.committed = []

    @staticmethod
    def _put_back(taken: list[tuple[_RunState, list[Any]]]) -> None:
        """Return what a failed transaction took to the front of its queues, in order."""
        for state, entries in taken:
            state.queue.extendleft(reversed(entries))

    def _committed(self, taken: list[tuple[_RunState, list[Any]]]) -> None:
        """After a commit: the callers' backlog shrinks and listeners hear the new events."""
        for state, entries in taken:
            state.progress.done += sum(e.weight for e in entries if type(e) is Point)
            events, state.committed = state.committed, []
            if events and state.listener is not None:
                try:
                    state.listener(events)
                except Exception as exc:  # printing must never stop the writing
                    log.warning("tunescope: event listener failed: %s", exc)

    def _measure(self, values: int, seconds: float) -> None:
        """Track the writer's speed and set each run's backlog limit from it."""
        if values >= 1_000 and seconds > 0:  # tiny transactions measure their overhead only
            rate = values / seconds
            self._rate = rate if not self._rate else 0.7 * self._rate + 0.3 * rate
        if not self._rate:
            return
        with self._lock:
            states = list(self._runs.values())
        # The backlog bound is per writer: several runs logging at once share it.
        share = max(MIN_BACKLOG, int(self._rate * BACKLOG_SECONDS / max(1, len(states))))
        for state in states:
            state.progress.limit = min(share, state.progress.cap)

    def _isolate(
        self, con: sqlite3.Connection, state: _RunState, entries: list[Any]
    ) -> list[EventRecord]:
        """Write `entries` in transactions of half as many until each bad one is alone; reject
        those and return the notes that report them. Raises `_Retry` (the rest put back) if
        the environment fails meanwhile."""
        notes: list[EventRecord] = []
        parts: deque[list[Any]] = deque([entries])
        while parts:
            part = parts.popleft()
            try:
                con.execute("BEGIN IMMEDIATE")
                if not state.tables.loaded:
                    state.tables.load(con)
                for entry in part:
                    self._apply(con, state, entry)
                state.tables.finalize(con)
                con.execute("COMMIT")
            except Exception as exc:
                self._rollback(con, [state])
                if retryable(exc):
                    self._put_back([(state, [e for p in (part, *parts) for e in p])])
                    raise _Retry(str(exc)) from exc
                if len(part) > 1:
                    half = len(part) // 2
                    parts.extendleft([part[half:], part[:half]])
                else:
                    notes.extend(self._reject(state, part[0], repr(exc)))
                continue
            self._committed([(state, part)])
        return notes

    def _mark(
        self,
        con: sqlite3.Connection,
        runs: list[_RunState],
        left: list[int],
        closing: list[tuple[str, float] | None],
        closed: list[bool],
    ) -> list[int]:
        """Heartbeat the live runs (every `HEARTBEAT_EVERY` s) and close the runs that are done;
        returns the indices of the runs closed."""
        now = time.time()
        finishing = [
            i for i, c in enumerate(closing) if c is not None and not closed[i] and not left[i]
        ]
        for i in finishing:
            status, ended = closing[i]  # type: ignore[misc]
            con.execute(
                "UPDATE runs SET status=?, ended=?, heartbeat=? WHERE id=?",
                (status, ended, now, runs[i].run_id),
            )
        if now - self._last_heartbeat >= HEARTBEAT_EVERY:
            live = [(now, s.run_id) for s, c in zip(runs, closing, strict=True) if c is None]
            con.executemany("UPDATE runs SET heartbeat=? WHERE id=?", live)
            self._last_heartbeat = now  # (a rollback only delays the next one by a beat)
        return finishing

    def _commit_marks(
        self,
        con: sqlite3.Connection,
        runs: list[_RunState],
        left: list[int],
        closing: list[tuple[str, float] | None],
        closed: list[bool],
    ) -> list[int]:
        """`_mark` in a transaction of its own (after an isolation)."""
        try:
            con.execute("BEGIN IMMEDIATE")
            finishing = self._mark(con, runs, left, closing, closed)
            con.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise _Retry(str(exc)) from exc
        return finishing

    # -- records -------------------------------------------------------------------------------
    def _prepare(self, state: _RunState, item: Any) -> list[Any]:
        """Turn a queued record into what `_apply` writes, in order: a checked `Point`, then
        the events the observer returned for it; or the record itself (events, summaries); or
        a `note` saying why it was rejected."""
        if type(item) is tuple:
            point = check_point(item, state.tables.series)
            if isinstance(point, str):
                return self._reject(state, item, point)
            entries: list[Any] = [point]
            if state.observer is not None:
                self._observe(state, state.observer, point, entries)
            return entries
        if isinstance(item, Point | EventRecord | SummaryRecord):
            return [item]
        return self._reject(state, item, f"not a record tunescope writes ({type(item).__name__})")

    def _reject(self, state: _RunState, item: Any, reason: str) -> list[Any]:
        """Drop a record SQLite cannot hold; report it (one warning, a few notes per run)."""
        state.rejected += 1
        state.progress.done += weight(item)
        at = getattr(item, "step", None)
        if type(item) is tuple:
            at = item[0]
        what = f"{type(item).__name__} at step {at!r:.40}"
        if state.rejected == 1:
            log.warning(
                "tunescope: run %s: rejected a record SQLite cannot store (%s: %s); the other "
                "records are written. Further rejections are noted in the run's events.",
                state.run_id,
                what,
                reason,
            )
        if state.rejected > MAX_REJECT_NOTES:
            return []
        more = (
            f" (the {MAX_REJECT_NOTES}th such note; later rejections are not noted)"
            if state.rejected == MAX_REJECT_NOTES
            else ""
        )
        message = safe_text(f"rejected and not stored: a {what}: {reason}{more}")
        return [EventRecord("note", "rejected_record", "warning", message, {}, None)]

    def _final_events(self, state: _RunState) -> list[EventRecord]:
        """The observer's last word (e.g. the final step of findings still active), once."""
        if state.final_done:
            return []
        state.final_done = True
        finish = getattr(state.observer, "finish", None)
        if finish is None:
            return []
        try:
            return list(finish(time.time()))
        except Exception as exc:
            log.warning("tunescope: the monitor failed while finishing: %r", exc)
            return []

    def _apply(self, con: sqlite3.Connection, state: _RunState, entry: Any) -> None:
        """Write one prepared entry into the open transaction."""
        if type(entry) is Point:
            state.tables.add_point(con, entry)
        elif isinstance(entry, EventRecord):
            state.tables.add_event(con, entry)
            state.committed.append(entry)
        elif isinstance(entry, SummaryRecord):
            state.tables.merge_summary(con, entry.values)

    @staticmethod
    def _observe(state: _RunState, observer: Observer, point: Point, out: list[Any]) -> None:
        try:
            out.extend(observer.observe(point.step, point.wall, point.values))
        except Exception as exc:  # a monitor bug must not cost the user their points
            step = point.step
            log.warning("tunescope: the monitor failed at step %s and is disabled: %r", step, exc)
            out.append(
                EventRecord(
                    "note",
                    "monitor_error",
                    "warning",
                    safe_text(
                        f"the online monitor failed at step {step} and was disabled: {exc!r}"
                    ),
                    {},
                    step,
                )
            )
            state.observer = None
