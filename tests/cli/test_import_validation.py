"""`tunescope import` checks the whole input before it creates the run: a value the store cannot
hold is one error naming the row and column and the fix, and the store is left as it was — no
run half imported, none left behind `failed` or `crashed` with 0 points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunescope.store import Store


def _import(store: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunescope", "import", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TUNESCOPE_STORE": str(store), "COLUMNS": "2000"},
        timeout=300,
    )


def _refused(tmp_path: Path, content: str, *parts: str) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(content)
    store = tmp_path / "store"
    proc = _import(store, path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for part in (str(path), *parts):
        assert part in lines[0], (part, lines[0])
    if (store / "store.db").exists():
        assert Store(store, create_if_missing=False).reader().runs() == []


GOOD = "".join(f"{s},loss,{1 / (s + 1)!r},{1000.0 + s}\n" for s in range(5000))
HEAD = "step,metric,value,wall_time\n"


@pytest.mark.parametrize(
    ("content", "parts"),
    [
        (HEAD + "9223372036854775808,loss,1.0,\n", [":2:", "step", "2**63"]),
        (HEAD + "0,loss,1.0,\n1e30,loss,1.0,\n", [":3:", "step", "2**63"]),
        (HEAD + "0,loss,1.0,nan\n1,loss,0.5,nan\n", [":2:", "wall_time", "empty"]),
        (HEAD + GOOD + "5000,loss,0.1,inf\n", [":5002:", "wall_time", "finite"]),
        (HEAD + GOOD + "99999999999999999999,loss,0.1,\n", [":5002:", "step"]),
        ("step,loss,wall_time\n0,1.0,-inf\n", [":2:", "wall_time"]),
        ("step,loss\n0,1.0\n9223372036854775808,1.0\n", [":3:", "step", "2**63"]),
        (HEAD + "0," + "x" * 300 + ",1.0,\n", [":2:", "metric"]),
    ],
    ids=[
        "step-2**63",
        "float-step-1e30",
        "all-nan-wall-times",
        "inf-wall-time-after-5000-good-rows",
        "huge-step-after-5000-good-rows",
        "wide-minus-inf-wall-time",
        "wide-step-2**63",
        "metric-name-too-long",
    ],
)
def test_bad_input_is_refused_before_the_run_exists(
    tmp_path: Path, content: str, parts: list[str]
) -> None:
    _refused(tmp_path, content, *parts)


def test_the_largest_step_and_empty_wall_times_import(tmp_path: Path) -> None:
    path = tmp_path / "edge.csv"
    path.write_text(HEAD + "0,loss,1.0,\n9223372036854775807,loss,0.5,1000.5\n")
    proc = _import(tmp_path / "store", path)
    assert proc.returncode == 0, proc.stderr
    reader = Store(tmp_path / "store", create_if_missing=False).reader()
    (info,) = reader.runs()
    assert info.status == "finished"
    assert reader.series(info.id, "train/loss").steps.tolist() == [0, 2**63 - 1]


def test_a_negative_step_in_tensorboard_is_refused_before_the_run_exists(tmp_path: Path) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    d = tmp_path / "tb"
    d.mkdir()
    writer = EventFileWriter(str(d))
    for step in (0, 1, -5):
        value = Summary.Value(tag="train/loss", simple_value=1.0)
        writer.add_event(Event(wall_time=1000.0 + step, step=step, summary=Summary(value=[value])))
    writer.close()
    store = tmp_path / "store"
    proc = _import(store, d)
    assert proc.returncode == 2, proc.stderr
    assert "train/loss" in proc.stderr and "-5" in proc.stderr and str(d) in proc.stderr
    if (store / "store.db").exists():
        assert Store(store, create_if_missing=False).reader().runs() == []
