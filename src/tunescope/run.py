"""`Run`: what `tunescope.init()` returns — log metrics, watch a model, read decisions, finish.

The caller's thread only validates and appends to an in-memory queue; the store's writer thread
does all I/O (see store/writer.py). On ranks other than 0 the same API validates input and
keeps `control` in step with rank 0, but writes nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import secrets
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import env as _env
from .control import Control
from .errors import TunescopeError
from .names import MetricNameError, canonical
from .policy import Mode, Policy, PolicyConfig
from .policy import apply as apply_interventions
from .rank import global_rank
from .store import EventRecord, Store, StoreError, SummaryRecord, Writer, WriterError
from .store.status import process_identity
from .store.writer import Listener, Observer, Progress
from .values import MAX_STEP, Pending, check_step, check_text, check_wall_time, coerce

if TYPE_CHECKING:
    from .diagnose import Context, Finding, Monitor
    from .probes.dynamics import Watcher

log = logging.getLogger("tunescope")

# The most values (a call counts at least one) waiting for the writer before `log()` waits. The
# writer lowers it to about 0.25 s of its own measured speed (store/writer.py), so that a kill
# never loses more than a fraction of a second; this is the ceiling.
DEFAULT_MAX_QUEUE = 100_000
SEVERITIES = ("info", "warning", "critical")


class RunFinishedError(RuntimeError):
    """`log()` was called after `finish()`."""


class RecordError(TunescopeError, ValueError):
    """Event data or summary values that cannot be stored as JSON."""


def _json(what: str, value: Any) -> Any:
    """`value` as the store will give it back (a JSON round trip), or `RecordError`."""
    try:
        return json.loads(json.dumps(value, default=str, allow_nan=True))
    except (TypeError, ValueError, RecursionError) as exc:
        raise RecordError(f"{what} cannot be stored as JSON: {exc}") from None


def _bad_mode(mode: object) -> Mode:
    raise ValueError(
        f"mode must be one of {[m.value for m in Mode]} (or None for no monitoring); got {mode!r}"
    )


def _jsonable_config(config: Any) -> dict[str, Any]:
    """Turn a config (dict, dataclass, pydantic model, argparse Namespace) into JSON data."""
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    elif hasattr(config, "__dataclass_fields__"):
        import dataclasses

        config = dataclasses.asdict(config)
    elif hasattr(config, "to_dict") and callable(config.to_dict):
        config = config.to_dict()
    elif not isinstance(config, Mapping) and hasattr(config, "__dict__"):
        config = vars(config)
    if not isinstance(config, Mapping):
        raise TypeError(
            f"config must be a mapping (dict, dataclass, pydantic model or Namespace); "
            f"got {type(config).__name__}"
        )
    # Round-trip through JSON so what is stored is exactly what readers will get back;
    # values JSON cannot hold (paths, dtypes, ...) are stored as their str().
    return json.loads(json.dumps(dict(config), default=str))  # type: ignore[no-any-return,unused-ignore]


class Run:
    """A training run being recorded.

    >>> import tunescope
    >>> with tunescope.init(project="demo", store="/tmp/ts-doc") as run:   # doctest: +SKIP
    ...     for step in range(3):
    ...         run.log({"train/loss": 1.0 / (step + 1)}, step=step)
    """

    def __init__(
        self,
        project: str,
        name: str | None = None,
        config: Any = None,
        store: str | Path | None = None,
        *,
        resume: str | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        mode: str | None = None,
        context: Context | None = None,
        policy: PolicyConfig | None = None,
        observer: Observer | None = None,
        listener: Listener | None = None,
    ) -> None:
        if not isinstance(project, str) or not project.strip():
            raise ValueError('project must be a non-empty string, e.g. tunescope.init("bbc")')
        # Checked before the store is touched: a name SQLite cannot hold must not leave a run.
        self.project = check_text("project", project)
        if name is not None:
            check_text("name", name)
        if resume is not None:
            check_text("resume", resume)
        self.config = _jsonable_config(config)
        self.control = Control()
        self.rank = global_rank()
        self._queue: deque[Any] = deque()
        self._max_queue = max_queue
        self._queued = 0  # values queued so far (a call counts at least one); see _wait_for_room
        self._progress = Progress()
        self._aliased = False  # some key was renamed by canonical(): two keys may now collide
        self._keys: dict[str, str] = {}
        self._step: int | None = None
        self._pending: dict[str, Pending] = {}
        self._closed = False
        self._warned_full = False
        self._writer: Writer | None = None
        self._watchers: list[Watcher] = []
        self.store: Store | None = None
        self._resumed = resume is not None
        self.id = ""
        self.name = name or ""
        self.mode: Mode | None = None
        self.policy: Policy | None = None
        self.monitor: Monitor | None = None
        if mode is not None:
            self.mode = Mode(mode) if mode in Mode.__members__.values() else _bad_mode(mode)
        if self.rank == 0:
            self.store = Store(store)
            if resume is not None:
                self._reopen(resume)
            else:
                self._create(name)
            if self.mode is not None and observer is None:
                observer, listener = self._monitor(context, policy, listener)
            self._writer = self.store.writer()
            self._progress = self._writer.attach(
                self.id, self._queue, observer=observer, listener=listener, max_backlog=max_queue
            )
        _live_runs.add(self)

    # -- monitoring ----------------------------------------------------------------------------
    def _monitor(
        self, context: Context | None, policy: PolicyConfig | None, listener: Listener | None
    ) -> tuple[Observer, Listener | None]:
        """The online monitor for `self.mode`, its policy, and what prints its findings."""
        from .diagnose import Context as Ctx
        from .diagnose import Monitor
        from .diagnose.terminal import terminal_listener

        assert self.mode is not None
        cfg = policy or PolicyConfig()
        self.policy = Policy(dataclasses.replace(cfg, mode=self.mode))
        self.monitor = Monitor(context or Ctx.from_config(self.config), on_finding=self._decide)
        if self._resumed:
            self._catch_up(self.monitor, self.policy)
        if listener is None and self.mode is not Mode.OBSERVE:
            from rich.console import Console

            listener = terminal_listener(Console(stderr=True))
        return self.monitor, listener

    def _catch_up(self, monitor: Monitor, policy: Policy) -> None:
        """A resumed run's monitor sees the stored history first, so baselines (e.g. retain
        values before fine-tuning) and open findings carry over; the policy's limits count the
        interventions already made. Nothing is stored or decided again for old points."""
        from .diagnose.engine import run_calls

        assert self.store is not None
        reader = self.store.reader()
        monitor.on_finding = None
        for step, wall, values in run_calls(reader, self.id):
            monitor.observe(step, wall, values)
        monitor.on_finding = self._decide
        for event in reader.events(self.id, types=("intervention",)):
            if event.kind == "scale_lr":
                policy.state.lr_reductions += 1
            elif event.kind == "rollback":
                policy.state.rollbacks += 1
            if event.ref:
                policy.state.handled.append(event.ref)
        policy.state.handled.extend(f.id for f in monitor.findings())
        reader.con.close()

    def _decide(self, finding: Finding, state: str) -> None:
        """Monitor hook (writer thread): findings become interventions on `control` in act mode.

        Updates count too: a finding raised as info that becomes a warning (an eval-loss rise
        that grows past 10%), or whose advice turns from keep-training into a restore, is acted
        on then; the policy handles each finding once."""
        if state == "resolved" or self.policy is None:
            return
        interventions = self.policy.decide(finding)
        if interventions:
            apply_interventions(interventions, self.control)

    # -- creation ----------------------------------------------------------------------------
    def _create(self, name: str | None) -> None:
        assert self.store is not None
        now = time.time()
        env = _env.collect()
        con = self.store.connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            self.id = secrets.token_hex(4)
            if name is None:
                (count,) = con.execute(
                    "SELECT count(*) FROM runs WHERE project=?", (self.project,)
                ).fetchone()
                name = f"{self.project}-{count + 1}"
            self.name = name
            con.execute(
                "INSERT INTO runs (id, name, project, status, config, env, created, heartbeat, "
                "host, pid, proc) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.id,
                    name,
                    self.project,
                    json.dumps(self.config),
                    json.dumps(env, default=str),
                    now,
                    now,
                    env["host"],
                    env["pid"],
                    process_identity(),
                ),
            )
            con.execute("COMMIT")
        finally:
            con.close()
        self.dir.mkdir(parents=True, exist_ok=True)

    def _reopen(self, ref: str) -> None:
        """Continue an existing run: same id, new points appended (a lower step starts a segment)."""
        assert self.store is not None
        info = self.store.reader().run(ref)
        if info.status == "running":
            raise StoreError(
                f"run {info.name} ({info.id}) is still running in another process; wait for it "
                "to end before resuming it"
            )
        env = _env.collect()
        con = self.store.connect()
        try:
            con.execute(
                "UPDATE runs SET status='running', ended=NULL, heartbeat=?, host=?, pid=?, proc=? "
                "WHERE id=?",
                (time.time(), env["host"], env["pid"], process_identity(), info.id),
            )
        finally:
            con.close()
        self.id, self.name = info.id, info.name
        self._step = info.last_step
        if not self.config:
            self.config = info.config

    # -- properties ----------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        """This run's folder in the store (checkpoints, artifacts). Rank 0 only."""
        if self.store is None:
            raise RuntimeError("only rank 0 has a run directory")
        return self.store.run_dir(self.id)

    @property
    def step(self) -> int | None:
        """The last step logged (None before the first `log`)."""
        return self._step

    @property
    def writes(self) -> bool:
        """Whether this process records the run (global rank 0)."""
        return self._writer is not None

    # -- logging -------------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        name = canonical(key)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise MetricNameError(
                f"metric key {key!r} cannot be stored: it is not valid UTF-8 (a lone surrogate "
                "usually comes from decoding bytes with errors='surrogateescape'); rename it"
            ) from None
        self._aliased = self._aliased or name != key
        self._keys[key] = name
        return name

    @staticmethod
    def _collision(data: Mapping[str, Any], items: list[tuple[str, Pending]]) -> None:
        """Two keys of one call that name the same metric (`loss`, `train/loss`): refuse, as
        one of the two values would silently shadow the other."""
        seen: dict[str, str] = {}
        for raw, (name, _) in zip(data, items, strict=False):
            if name in seen:
                raise MetricNameError(
                    f"metric keys {seen[name]!r} and {raw!r} both name {name!r}; log one of them"
                )
            seen[name] = raw

    def log(
        self, data: Mapping[str, Any], step: int | None = None, *, wall_time: float | None = None
    ) -> None:
        """Record metric values at a step (the next step when `step` is None).

        Values: Python numbers, numpy scalars, or one-element torch tensors (a GPU tensor is
        read on the writer thread, so it never makes this call wait). NaN and ±inf are kept.
        A step lower than the last one is legal (rollback, resume): it starts a new segment.
        `wall_time` (Unix seconds) defaults to now; importers pass the original time.
        What the store cannot hold is refused here, naming the key or parameter, and nothing
        is queued: steps outside 0..2**63-1 (`StepError`), a `wall_time` that is not a finite
        number (`WallTimeError`), keys that are not UTF-8 or that name one metric twice
        (`MetricNameError`), values that are not one real number (`MetricValueError`).
        When logging outpaces the writer, this call waits (about 0.25 s of the writer's work
        may be queued), so a killed process never loses more than a fraction of a second.
        """
        if self._closed:
            raise RunFinishedError(f"run {self.name} is finished; start a new one with init()")
        if step is None:
            step = 0 if self._step is None else self._step + 1
            if step > MAX_STEP:
                check_step(step, "the next step")
        elif type(step) is not int or not 0 <= step <= MAX_STEP:
            step = check_step(step)
        wall = time.time() if wall_time is None else check_wall_time(wall_time)
        keys = self._keys
        try:
            items = [
                (keys.get(k) or self._key(k), v if type(v) is float else coerce(k, v))
                for k, v in data.items()
            ]
        except AttributeError:
            raise TypeError(
                f"run.log() takes a dict of metric name -> value; got {type(data).__name__}"
            ) from None
        if self._aliased and len(items) > 1:
            self._collision(data, items)
        if self._pending:
            present = {k for k, _ in items}
            items.extend(kv for kv in self._pending.items() if kv[0] not in present)
            self._pending.clear()
        self._step = step
        if self._writer is None:
            return
        # Queued before any error is raised: a call that raises WriterError keeps its point.
        self._queue.append((step, wall, items))
        self._queued += len(items) or 1
        if self._writer.error is not None:
            self._report_writer_error()
        progress = self._progress
        if self._queued - progress.done > progress.limit:
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """Logging outpaces the writer: wait (backpressure) rather than let unwritten points pile
        up, since those are what a killed process loses. Said once, at info level: a loop
        that logs faster than a disk can take is normal (an import, a tight benchmark)."""
        writer = self._writer
        assert writer is not None
        progress = self._progress
        if not self._warned_full:
            self._warned_full = True
            log.info(
                "tunescope: %d values are waiting to be written to %s; log() waits for the "
                "writer (at most about %d may wait) instead of letting points pile up unwritten",
                self._queued - progress.done,
                writer.db_path,
                progress.limit,
            )
        writer.wake()
        while self._queued - progress.done > progress.limit // 2:
            if writer.error is not None:
                self._report_writer_error()
            if not writer.alive:
                raise WriterError(
                    f"the tunescope writer thread stopped; {len(self._queue)} log calls are "
                    "held in memory but will not be written"
                )
            time.sleep(0.002)

    def log_apart(self, data: Mapping[str, Any], step: int | None = None) -> None:
        """Like `log()`, but the values watchers staged for the next `log()` (learning rate,
        gradient norms of the step just taken) stay staged for it.

        For measurements taken between an optimizer step and the training loop's own log of
        that step (probes, retain evaluations): with `log()` they would carry the staged
        values away, and the loop's log would then miss them.
        """
        staged, self._pending = self._pending, {}
        try:
            self.log(data, step)
        finally:
            self._pending = {**staged, **self._pending}

    def _report_writer_error(self) -> None:
        assert self._writer is not None
        err = self._writer.error
        raise WriterError(
            f"tunescope cannot write to {self._writer.db_path}: {err}. Nothing is lost: "
            f"{len(self._queue)} log calls, this one included, are held in memory and retried "
            "until the store can be written again."
        ) from err

    def _stage(self, key: str, value: Any) -> None:
        """Queue a value to be logged with the next `log()` call (used by watchers)."""
        self._pending[self._keys.get(key) or self._key(key)] = (
            value if type(value) is float else coerce(key, value)
        )

    # -- events and summary ----------------------------------------------------------------------
    def event(
        self,
        type: str,
        kind: str,
        message: str,
        *,
        severity: str = "info",
        step: int | None = None,
        data: Mapping[str, Any] | None = None,
        ref: str | None = None,
    ) -> None:
        """Record a finding, intervention or note at `step` (default: the last logged step)."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}; got {severity!r}")
        check_text("event type", type)
        check_text("event kind", kind)
        check_text("event message", message)
        if ref is not None:
            check_text("event ref", ref)
        at = self._step if step is None else check_step(step, "event step")
        stored = _json("event data", dict(data or {}))
        if self._writer is None:
            return
        self._queue.append(EventRecord(type, kind, severity, message, stored, at, ref))

    def summarize(self, values: Mapping[str, Any]) -> None:
        """Merge values (final test metrics, best checkpoint, ...) into the run's summary."""
        stored = _json("summarize() values", dict(values))
        if self._writer is not None:
            self._queue.append(SummaryRecord(stored))

    # -- watching ------------------------------------------------------------------------------
    def watch(self, model: Any, optimizer: Any = None, *, every: int = 10) -> Watcher:
        """Collect lr per param group, global grad norm and update/weight ratio.

        Measured every `every` optimizer steps only (reading a GPU value syncs the device), and
        logged with the next `log()` call. Returns the `Watcher`; `watcher.remove()` stops it.
        """
        from .probes.dynamics import Watcher

        watcher = Watcher(self, model, optimizer, every=every)
        self._watchers.append(watcher)
        return watcher

    # -- finishing -----------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Block until everything logged so far is durable in the store.

        The online monitor runs as points are written, so after `flush()` the findings and
        `control` reflect every point logged so far (adapters call it before reading `control`).
        """
        if self._writer is not None:
            self._writer.flush(timeout)

    def finish(self, status: str = "finished", timeout: float | None = 120.0) -> None:
        """Write everything still queued and mark the run `finished` (idempotent)."""
        if self._closed:
            return
        for w in self._watchers:
            w.remove()
        if self._pending and self._step is not None:
            self.log({}, step=self._step)
        self._closed = True
        _live_runs.discard(self)
        if self._writer is not None:
            self._writer.close_run(self.id, status, timeout)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish("finished" if exc_type is None else "failed")

    def __repr__(self) -> str:
        return f"Run(project={self.project!r}, name={self.name!r}, id={self.id!r})"


# Runs still open at interpreter exit are finished: `failed` if an uncaught exception is on its
# way out (recorded by the excepthook below), else `finished`.
_live_runs: weakref.WeakSet[Run] = weakref.WeakSet()
_failed = threading.Event()
_previous_excepthook = sys.excepthook


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    _failed.set()
    _previous_excepthook(exc_type, exc, tb)


sys.excepthook = _excepthook


@atexit.register
def _finish_open_runs() -> None:
    status = "failed" if _failed.is_set() else "finished"
    for run in list(_live_runs):
        with contextlib.suppress(Exception):
            run.finish(status)
