"""Property-based tests of `Run.log` (issue 18): whatever a caller passes is either stored
exactly (same step, the same float64 bits, NaN and ±inf included) or refused with a clear
error, and nothing else that was logged, in this run or another, is ever lost."""

from __future__ import annotations

import math
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tunescope
from tunescope.errors import TunescopeError
from tunescope.names import canonical
from tunescope.run import Run
from tunescope.store import Store
from tunescope.values import MAX_STEP

SAFE_KEYS = ("a", "b/c", "eval_acc", "train/loss")
# Any text, lone surrogates and control characters included (Hypothesis leaves surrogates out
# unless asked).
_any_char = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from("\x00\x1b\x7f[]/ _"),
)
keys = st.one_of(
    st.sampled_from((*SAFE_KEYS, "loss", " a ", "", "k" * 201)),
    st.text(_any_char, max_size=6),
)
_odd_values = st.sampled_from(
    [
        "1.0",
        None,
        [1.0],
        1 + 2j,
        np.ones(2),
        np.array(["x"]),
        np.datetime64("2020-01-01"),
        torch.ones(2),
        torch.tensor(1 + 1j),
        torch.empty((), device="meta"),
    ]
)
values = st.one_of(
    st.floats(),  # every float64, NaN (with any payload), ±inf and -0.0 included
    st.integers(min_value=-(2**1100), max_value=2**1100),
    st.booleans(),
    st.floats(width=32).map(np.float32),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(np.int64),
    st.floats().map(lambda x: torch.tensor(x, dtype=torch.float64)),
    st.floats(width=32).map(lambda x: torch.tensor([x])),
    _odd_values,
)
steps = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=2**65),
    st.sampled_from([0, 1, MAX_STEP, MAX_STEP + 1, -1]),
    st.integers(min_value=0, max_value=MAX_STEP).map(np.int64),
    st.floats(),
    st.just(True),
)
walls = st.one_of(
    st.none(), st.floats(), st.sampled_from(["now", 1.7e9, np.float64(1.7e9), 0, -1.0])
)
calls = st.lists(
    st.tuples(st.dictionaries(keys, values, max_size=4), steps, walls), min_size=1, max_size=10
)


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _as_float(v: Any) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


def _obviously_fine(data: dict[Any, Any], step: Any, wall: Any) -> bool:
    """Inputs nobody should ever have refused."""
    names = [canonical(k) for k in data if k in SAFE_KEYS]
    return (
        len(names) == len(data) == len(set(names))
        and all(type(v) is float for v in data.values())
        and (step is None or (type(step) is int and 0 <= step <= MAX_STEP))
        and (wall is None or (type(wall) is float and math.isfinite(wall)))
    )


@pytest.fixture(scope="module")
def store() -> Iterator[Path]:
    # One store for every example (a fresh run each): Hypothesis runs many examples per test.
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / "s"


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=calls)
def test_every_log_call_is_stored_exactly_or_refused_clearly(
    store: Path, calls: list[tuple[dict[Any, Any], Any, Any]]
) -> None:
    run = tunescope.init("prop", store=store, mode=None)
    witness = tunescope.init("prop-witness", store=store, mode=None)
    expected: dict[str, list[tuple[int, bytes]]] = {}
    expected_walls: dict[str, list[float | None]] = {}
    last: int | None = None
    for i, (data, step, wall) in enumerate(calls):
        witness.log({"w": float(i)}, step=i)
        try:
            run.log(data, step=step, wall_time=wall)
        except TunescopeError as exc:
            assert isinstance(exc, ValueError | TypeError)
            message = str(exc)
            named = [repr(k) for k in data] + ["step", "wall_time", "metric key"]
            assert any(n in message for n in named), message
            assert not _obviously_fine(data, step, wall), message
            continue
        at = (0 if last is None else last + 1) if step is None else int(step)
        assert 0 <= at <= MAX_STEP
        last = at
        assert run.step == at
        for k, v in data.items():
            expected.setdefault(canonical(k), []).append((at, _bits(_as_float(v))))
            expected_walls.setdefault(canonical(k), []).append(
                None if wall is None else float(wall)
            )
    run.finish()
    witness.finish()
    reader = Store(store).reader()
    assert {k["key"] for k in reader.keys(run.id)} == set(expected)
    for key, points in expected.items():
        s = reader.series(run.id, key)
        assert list(zip(s.steps.tolist(), map(_bits, s.values.tolist()), strict=True)) == points
        for got, want in zip(s.walls.tolist(), expected_walls[key], strict=True):
            assert want is None or _bits(got) == _bits(want)
    assert reader.series(witness.id, "w").steps.tolist() == list(range(len(calls)))
    assert reader.run(run.id).status == "finished"


def _fresh_run(store: Path) -> Run:
    return tunescope.init("prop", store=store, mode=None)


@settings(max_examples=40, deadline=None, database=None)
@given(
    values=st.lists(st.floats(), min_size=1, max_size=600),
    step0=st.integers(min_value=0, max_value=MAX_STEP - 600),
)
def test_any_float_sequence_round_trips_bit_for_bit(
    store: Path, values: list[float], step0: int
) -> None:
    """Long enough to cross chunk boundaries (256 points), with the largest steps included."""
    run = _fresh_run(store)
    for i, v in enumerate(values):
        run.log({"v": v}, step=step0 + i)
    run.finish()
    s = Store(store).reader().series(run.id, "v")
    assert s.steps.tolist() == list(range(step0, step0 + len(values)))
    assert list(map(_bits, s.values.tolist())) == list(map(_bits, values))


texts = st.text(_any_char, max_size=8)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts)
json_data = st.dictionaries(
    texts, st.recursive(json_leaves, lambda c: st.lists(c, max_size=3), max_leaves=6), max_size=3
)


@settings(max_examples=40, deadline=None, database=None)
@given(
    events=st.lists(
        st.tuples(
            texts,
            texts,
            st.one_of(st.none(), st.integers(min_value=-2, max_value=2**64)),
            json_data,
            st.one_of(st.none(), texts),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_every_event_is_stored_or_refused_clearly(
    store: Path, events: list[tuple[str, str, Any, dict[str, Any], str | None]]
) -> None:
    run = _fresh_run(store)
    run.log({"a": 1.0}, step=0)
    kept: list[tuple[str, str, int]] = []
    for kind, message, step, data, ref in events:
        try:
            run.event("note", kind, message, step=step, data=data, ref=ref)
        except TunescopeError as exc:
            assert isinstance(exc, ValueError | TypeError)
            assert any(w in str(exc) for w in ("kind", "message", "step", "ref", "data"))
            continue
        kept.append((kind, message, 0 if step is None else step))
    run.log({"a": 2.0}, step=1)
    run.finish()
    reader = Store(store).reader()
    assert [(e.kind, e.message, e.step) for e in reader.events(run.id)] == kept
    assert reader.series(run.id, "a").steps.tolist() == [0, 1]
