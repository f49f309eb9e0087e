"""Offline diagnosis: replay a history through the same `Monitor` the online path uses.

`replay(rows)` regroups rows into the log calls they came from — consecutive rows with the same
step and wall time (rows without a wall time: the same step), a repeated metric starting a new
call — and feeds them to a fresh `Monitor` in order. Every finding therefore has the step at
which its evidence first sufficed, computed from earlier points only, exactly as online.

>>> from tunescope.records import Row
>>> rows = [Row(s, "train/loss", float("nan") if s == 3 else 1.0, None) for s in range(5)]
>>> [(f.kind.value, f.step) for f in replay(rows).findings]
[('divergence', 3)]
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from ..records import Row
from .context import Context
from .findings import Finding, Kind
from .monitor import Monitor

if TYPE_CHECKING:
    import numpy.typing as npt


class _Series(Protocol):
    """One stored series as parallel arrays (what `store.Series` gives)."""

    @property
    def segs(self) -> npt.NDArray[Any]: ...
    @property
    def steps(self) -> npt.NDArray[Any]: ...
    @property
    def walls(self) -> npt.NDArray[Any]: ...
    @property
    def values(self) -> npt.NDArray[Any]: ...
    def __len__(self) -> int: ...


class _RunInfo(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...


class Reader(Protocol):
    """What replaying a stored run reads through (`store.Reader` is one): the package stays
    pure — it never imports the store."""

    def history(self, run_id: str) -> Mapping[str, _Series]: ...

    def run(self, ref: str) -> _RunInfo: ...


Call = tuple[int, float, list[tuple[str, float]]]


@dataclass(frozen=True)
class Report:
    """What `diagnose` found: findings by first step, kinds it could not check, the source."""

    findings: list[Finding]
    unchecked: dict[Kind, str]
    source: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """`{"source": ..., "findings": [...], "unchecked": {kind: why}}`, strict-JSON safe."""
        return {
            "source": self.source,
            "findings": [f.to_json() for f in self.findings],
            "unchecked": {str(k): v for k, v in sorted(self.unchecked.items())},
        }


def group_calls(rows: Iterable[Row], *, by_wall: bool = True) -> Iterator[Call]:
    """Regroup rows into log calls: same step (and wall time when `by_wall`), no repeated metric.

    TensorBoard stamps every scalar with its own wall time, so its rows are grouped by step.
    """
    step: int | None = None
    wall: float | None = None
    values: list[tuple[str, float]] = []
    names: set[str] = set()
    for row in rows:
        w = row.wall_time if by_wall else None
        if step is not None and (row.step != step or w != wall or row.metric in names):
            yield step, wall or 0.0, values
            values, names = [], set()
        step, wall = row.step, w
        values.append((row.metric, row.value))
        names.add(row.metric)
    if step is not None and values:
        yield step, wall or 0.0, values


def replay_calls(
    calls: Iterable[Call], context: Context | None = None, source: dict[str, Any] | None = None
) -> Report:
    """Feed log calls to a fresh `Monitor`; the `Report` of what it found."""
    monitor = Monitor(context)
    observe = monitor.observe
    points = 0
    first: int | None = None
    last = 0
    segments = 1
    for step, wall, values in calls:
        if first is None:
            first = step
        elif step < last:
            segments += 1
        last = step
        points += len(values)
        observe(step, wall, values)
    monitor.finish()
    info = dict(source or {})
    info.update(
        {
            "points": points,
            "first_step": first,
            "last_step": last if first is not None else None,
            "segments": segments if first is not None else 0,
        }
    )
    if monitor.context != Context():
        info["context"] = {k: v for k, v in vars(monitor.context).items() if v is not None}
    notes = monitor.notes()
    if notes:
        info["notes"] = notes
    return Report(monitor.findings(), monitor.unchecked(), info)


def replay(
    rows: Iterable[Row],
    context: Context | None = None,
    *,
    by_wall: bool = True,
    source: dict[str, Any] | None = None,
) -> Report:
    """Diagnose a history given as rows in log order (CSV, TensorBoard or a stored run).

    >>> from tunescope.records import Row
    >>> replay([Row(0, "train/loss", 2.3, None)]).findings
    []
    """
    return replay_calls(group_calls(rows, by_wall=by_wall), context, source)


class _Points(NamedTuple):
    """Every point of a run as parallel arrays in log order."""

    keys: list[str]
    kidx: np.ndarray  # index into keys
    steps: np.ndarray
    walls: np.ndarray
    values: np.ndarray


def _merged(reader: Reader, run_id: str) -> _Points:
    history = reader.history(run_id)
    keys = sorted(history)
    if not keys:
        e = np.zeros(0)
        return _Points(keys, e.astype(np.int64), e.astype(np.int64), e, e)
    segs = np.concatenate([history[k].segs for k in keys])
    steps = np.concatenate([history[k].steps for k in keys])
    walls = np.concatenate([history[k].walls for k in keys])
    values = np.concatenate([history[k].values for k in keys])
    kidx = np.concatenate([np.full(len(history[k]), i, dtype=np.int64) for i, k in enumerate(keys)])
    order = np.lexsort((kidx, walls, steps, segs))  # the last key sorts first
    return _Points(keys, kidx[order], steps[order], walls[order], values[order])


def history_rows(reader: Reader, run_id: str) -> Iterator[Row]:
    """A stored run's points as rows in log order (by segment, step, wall time, key)."""

    keys, kidx, steps, walls, values = _merged(reader, run_id)
    for k, s, w, v in zip(
        kidx.tolist(), steps.tolist(), walls.tolist(), values.tolist(), strict=True
    ):
        yield Row(s, keys[k], v, w)


def run_calls(reader: Reader, run_id: str) -> Iterator[Call]:
    """A stored run's log calls, rebuilt from its points (same grouping as `group_calls`)."""
    keys, kidx, steps, walls, values = _merged(reader, run_id)
    n = len(steps)
    if not n:
        return
    # A call ends where the step or the wall time changes, or where a key repeats inside one
    # (step, wall) group (keys are sorted within a group, so a repeat is adjacent).
    change = np.ones(n, dtype=bool)
    change[1:] = (steps[1:] != steps[:-1]) | (walls[1:] != walls[:-1]) | (kidx[1:] == kidx[:-1])
    starts = np.flatnonzero(change).tolist()
    starts.append(n)
    names = [keys[k] for k in kidx.tolist()]
    vals, s_l, w_l = values.tolist(), steps.tolist(), walls.tolist()
    for a, b in itertools.pairwise(starts):
        yield s_l[a], w_l[a], list(zip(names[a:b], vals[a:b], strict=True))


def replay_run(reader: Reader, run_ref: str, context: Context | None = None) -> Report:
    """Diagnose a stored run (by name or id); the context defaults to one read from its config."""
    info = reader.run(run_ref)
    ctx = context if context is not None else Context.from_config(info.config)
    source = {"type": "run", "run": info.name, "id": info.id, "status": info.status}
    return replay_calls(run_calls(reader, info.id), ctx, source)
