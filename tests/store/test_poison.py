"""A value SQLite cannot store never stops the writer (issue 18, defect 1).

Two layers: `Run.log` / `Run.event` refuse what cannot be stored, naming the key or parameter;
and the writer isolates a bad record that reaches its queue anyway (rejects it, reports it once,
writes everything else), so one bad record can never cost the points of other runs.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import tunescope
from tunescope.errors import TunescopeError
from tunescope.run import Run
from tunescope.store import EventRecord, Store


def _run(store: Path, name: str) -> Run:
    return tunescope.init("p", name=name, store=store, mode=None)


def _steps(store: Path, run: Run, key: str = "l") -> list[int]:
    return Store(store).reader().series(run.id, key).steps.tolist()


def test_the_issue_repro_loses_nothing_of_either_run(tmp_path: Path) -> None:
    store = tmp_path / "s"
    a, b = _run(store, "a"), _run(store, "b")
    for i in range(100):
        a.log({"l": 1.0}, step=i)
        b.log({"l": 1.0}, step=i)
    with pytest.raises(ValueError, match="step"):
        b.log({"l": 1.0}, step=2**63)
    time.sleep(0.7)  # at least one writer cycle
    a.log({"l": 1.0}, step=100)
    b.log({"l": 1.0}, step=100)
    a.finish()
    b.finish()
    reader = Store(store).reader()
    for run in (a, b):
        assert reader.run(run.id).status == "finished"
        assert _steps(store, run) == list(range(101))


def _meta() -> torch.Tensor:
    return torch.empty((), device="meta")


def _circular() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["self"] = d
    return d


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda r: r.log({"l": 1.0}, step=2**63), ["step", "2**63"]),
        (lambda r: r.log({"l": 1.0}, step=1e30), ["step", "1e+30"]),
        (lambda r: r.log({"l": 1.0}, step=math.nan), ["step", "nan"]),
        (lambda r: r.log({"l": 1.0}, step=math.inf), ["step", "inf"]),
        (lambda r: r.log({"a\ud800": 1.0}, step=1), ["'a\\ud800'", "UTF-8"]),
        (lambda r: r.log({"ok": 1.0, "b\udfff/x": 2.0}, step=1), ["'b\\udfff/x'"]),
        (lambda r: r.log({"m": _meta()}, step=1), ["'m'", "meta"]),
        (lambda r: r.log({"loss": 1.0, "train/loss": 2.0}, step=1), ["'loss'", "'train/loss'"]),
        (lambda r: r.log({"l": 1.0}, step=1, wall_time="now"), ["wall_time", "'now'"]),
        (lambda r: r.log({"l": 1.0}, step=1, wall_time=math.nan), ["wall_time", "nan"]),
        (lambda r: r.log({"l": 1.0}, step=1, wall_time=math.inf), ["wall_time", "inf"]),
        (lambda r: r.event("note", "k", "bad \ud800 message"), ["message", "UTF-8"]),
        (lambda r: r.event("note", "k\udc80", "m"), ["kind"]),
        (lambda r: r.event("note", "k", "m", ref="\ud800"), ["ref"]),
        (lambda r: r.event("note", "k", "m", step=2**64), ["step"]),
        (lambda r: r.event("note", "k", "m", data=_circular()), ["data"]),
        (lambda r: r.summarize(_circular()), ["summarize"]),
    ],
)
def test_log_refuses_what_the_store_cannot_hold_and_keeps_going(
    tmp_path: Path, call: Any, names: list[str]
) -> None:
    store = tmp_path / "s"
    run, other = _run(store, "r"), _run(store, "other")
    run.log({"l": 0.0}, step=0)
    with pytest.raises(TunescopeError) as info:
        call(run)
    assert isinstance(info.value, ValueError | TypeError)
    for name in names:
        assert name in str(info.value)
    for step in range(1, 50):
        run.log({"l": float(step)}, step=step)
        other.log({"l": float(step)}, step=step)
    run.event("note", "after", "still writing")
    run.finish()
    other.finish()
    assert _steps(store, run) == list(range(50))
    assert _steps(store, other) == list(range(1, 50))
    kinds = [e.kind for e in Store(store).reader().events(run.id)]
    assert kinds == ["after"]  # the refused call left no trace


def test_the_writer_isolates_a_poisoned_record_that_reaches_the_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defence in depth: records that slipped past validation are rejected one by one."""
    store = tmp_path / "s"
    bad, good = _run(store, "bad"), _run(store, "good")
    now = time.time()
    poison: list[Any] = [
        (2**63, now, [("l", 1.0)]),  # int64 overflow
        (10**30, now, [("l", 1.0)]),
        (3, now, [("k\ud800", 1.0)]),  # a key SQLite cannot encode
        (3, now, [("l", _meta())]),  # a tensor without data
        (3, math.nan, [("l", 1.0)]),  # a NaN wall time (NOT NULL column)
        (3, now, [("l", "text")]),
        EventRecord("note", "k", "warning", "msg \ud800", {}, 3),
        EventRecord("note", "k", "warning", "msg", _circular(), 3),
        EventRecord("note", "k", "warning", "msg", {}, 2**70),
    ]
    caplog.set_level(logging.WARNING, logger="tunescope")
    for step in range(300):
        good.log({"l": float(step)}, step=step)
        bad.log({"l": float(step)}, step=step)
        if step % 30 == 15:
            bad._queue.append(poison[(step // 30) % len(poison)])
    bad._queue.extend(poison)  # several bad ones in one transaction
    bad.flush()  # the rejected records are reported, not raised
    for step in range(300, 400):
        good.log({"l": float(step)}, step=step)
        bad.log({"l": float(step)}, step=step)
    bad.finish()
    good.finish()
    reader = Store(store).reader()
    assert _steps(store, good) == list(range(400))
    assert _steps(store, bad) == list(range(400))
    assert reader.series(bad.id, "l").values.tolist() == [float(s) for s in range(400)]
    assert reader.run(bad.id).status == "finished"
    notes = [e for e in reader.events(bad.id) if e.kind == "rejected_record"]
    assert 1 <= len(notes) <= 20  # reported, but never a flood
    assert any("int64" in n.message or "step" in n.message for n in notes)
    assert reader.events(good.id) == []
    warned = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(warned) == 1  # one warning per run, not one per record
