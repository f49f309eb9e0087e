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
import operator
import secrets
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from . import env as _env
from .control import Control
from .names import canonical
from .policy import Mode, Policy, PolicyConfig
from .policy import apply as apply_interventions
from .rank import global_rank
from .store import EventRecord, Store, StoreError, SummaryRecord, Writer, WriterError
from .store.status import process_identity
from .store.writer import Listener, Observer
from .values import Pending, coerce

if TYPE_CHECKING:
    from .diagnose import Context, Finding, Monitor
    from .probes.dynamics import Watcher

log = logging.getLogger("tunescope")

DEFAULT_MAX_QUEUE = 100_000  # log calls held in memory before `log()` waits for the writer
SEVERITIES = ("info", "warning", "critical")


class RunFinishedError(RuntimeError):
    """`log()` was called after `finish()`."""


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
        self.project = project
        self.config = _jsonable_config(config)
        self.control = Control()
        self.rank = global_rank()
        self._queue: deque[Any] = deque()
        self._max_queue = max_queue
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
            self._writer.attach(self.id, self._queue, observer=observer, listener=listener)
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
        """Monitor hook (writer thread): findings become interventions on `control` in act mode."""
        if state != "raised" or self.policy is None:
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
        self._keys[key] = name
        return name

    def log(
        self, data: Mapping[str, Any], step: int | None = None, *, wall_time: float | None = None
    ) -> None:
        """Record metric values at a step (the next step when `step` is None).

        Values: Python numbers, numpy scalars, or one-element torch tensors (resolved on the
        writer thread, so a GPU tensor never makes this call wait). NaN and ±inf are kept.
        A step lower than the last one is legal (rollback, resume): it starts a new segment.
        `wall_time` (Unix seconds) defaults to now; importers pass the original time.
        """
        if self._closed:
            raise RunFinishedError(f"run {self.name} is finished; start a new one with init()")
        if step is None:
            step = 0 if self._step is None else self._step + 1
        elif type(step) is not int:
            step = self._check_step(step)
        elif step < 0:
            self._check_step(step)
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
        if self._pending:
            present = {k for k, _ in items}
            items.extend(kv for kv in self._pending.items() if kv[0] not in present)
            self._pending.clear()
        self._step = step
        if self._writer is None:
            return
        if self._writer.error is not None:
            self._report_writer_error()
        q = self._queue
        q.append((step, time.time() if wall_time is None else float(wall_time), items))
        if len(q) >= self._max_queue:
            self._wait_for_room()

    @staticmethod
    def _check_step(given: Any) -> int:
        step: Any = given
        np = sys.modules.get("numpy")
        numbers: tuple[type, ...] = (int,) if np is None else (int, np.integer)
        if isinstance(step, bool) or not isinstance(step, numbers):
            if isinstance(step, float) and step.is_integer():
                return int(step)
            raise TypeError(
                f"step must be a non-negative integer; got {type(step).__name__} {step!r}"
            )
        value = operator.index(cast(Any, step))
        if value < 0:
            raise ValueError(f"step must be a non-negative integer; got {step}")
        return value

    def _wait_for_room(self) -> None:
        """The writer is behind: wait rather than drop points (warn once)."""
        assert self._writer is not None
        if not self._warned_full:
            self._warned_full = True
            warnings.warn(
                f"tunescope: {len(self._queue)} log calls are waiting to be written to "
                f"{self._writer.db_path}; log() waits for the writer instead of dropping points",
                RuntimeWarning,
                stacklevel=3,
            )
        self._writer.wake()
        while len(self._queue) >= self._max_queue // 2:
            if not self._writer._thread.is_alive():
                raise WriterError("the tunescope writer thread stopped; points are kept in memory")
            time.sleep(0.005)

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
            f"{len(self._queue)} log calls are held in memory and retried."
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
        if self._writer is None:
            return
        self._queue.append(
            EventRecord(
                type,
                kind,
                severity,
                message,
                dict(data or {}),
                step if step is not None else self._step,
                ref,
            )
        )

    def summarize(self, values: Mapping[str, Any]) -> None:
        """Merge values (final test metrics, best checkpoint, ...) into the run's summary."""
        if self._writer is not None:
            self._queue.append(SummaryRecord(json.loads(json.dumps(dict(values), default=str))))

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
