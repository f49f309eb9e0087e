"""Files that are not what `import` and `diagnose` expect, as a real `tunescope` process meets them:
other encodings, compressed and binary files, huge fields, directories and FIFOs under event-file
names. Each is one clear line that names the file and the problem, exit 2, and no run — never a
traceback, and never a hang."""

from __future__ import annotations

import gzip
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunescope.store import Store

CSV = "step,metric,value\n0,loss,1.0\n1,loss,0.5\n"


def _cli(store: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TUNESCOPE_STORE": str(store), "COLUMNS": "2000"}
    return subprocess.run(
        [sys.executable, "-m", "tunescope", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,  # a reader that blocks fails the test instead of hanging it
    )


def _one_clear_line(proc: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def _no_run(store: Path) -> None:
    if (store / "store.db").exists():
        assert Store(store, create_if_missing=False).reader().runs() == []


def _both(tmp_path: Path, path: Path, *parts: str) -> None:
    """`diagnose PATH` and `import PATH` both refuse it with one line naming it; no run."""
    store = tmp_path / "store"
    for command in ("diagnose", "import"):
        _one_clear_line(_cli(store, command, str(path)), str(path), *parts)
    _no_run(store)


def _sqlite_file(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    return path


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4

# (file content, words the error must contain)
BAD_FILES = {
    "latin-1": (
        "step,metric,value\n0,précision,0.9\n".encode("latin-1"),
        ["not UTF-8", "Latin-1", "iconv -f"],
    ),
    "utf-16 without BOM": (CSV.encode("utf-16-le"), ["UTF-16", "iconv -f UTF-16LE"]),
    "gzip": (gzip.compress(CSV.encode()), ["gzip", "gunzip"]),
    "png": (PNG, ["PNG image"]),
    "zip": (b"PK\x03\x04" + bytes(100), ["ZIP"]),
    "binary": (bytes(range(256)) * 8, ["binary"]),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_files_that_are_not_utf8_csv(tmp_path: Path, kind: str) -> None:
    content, words = BAD_FILES[kind]
    path = tmp_path / "metrics.csv"
    path.write_bytes(content)
    _both(tmp_path, path, *words)


def test_an_sqlite_file(tmp_path: Path) -> None:
    path = _sqlite_file(tmp_path / "store.db")
    _both(tmp_path, path, "SQLite database")


def test_an_event_file_given_as_the_csv(tmp_path: Path) -> None:
    _event_file(tmp_path / "tb")
    (event_file,) = (tmp_path / "tb").iterdir()
    _both(tmp_path, event_file, "a TensorBoard event file", "pass the directory")


def test_a_bad_byte_deep_in_the_file_names_its_line(tmp_path: Path) -> None:
    """Past the part read to recognise the encoding: the error still names the line."""
    rows = [f"{i},loss,{1 / (i + 1)!r}" for i in range(5000)]
    rows[4000] = "4000,lo\xe9ss,0.1"
    path = tmp_path / "late.csv"
    path.write_bytes(("step,metric,value\n" + "\n".join(rows) + "\n").encode("latin-1"))
    _both(tmp_path, path, "not UTF-8", "line 4002")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_unicode_with_a_byte_order_mark_is_read(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("step,metric,value\n0,précision,0.9\n1,précision,0.95\n".encode(encoding))
    proc = _cli(tmp_path / "store", "import", str(path))
    assert proc.returncode == 0, proc.stderr
    reader = Store(tmp_path / "store", create_if_missing=False).reader()
    (info,) = reader.runs()
    assert reader.series(info.id, "précision").values.tolist() == [0.9, 0.95]


def test_a_field_over_128_kb_in_an_extra_column_is_read(tmp_path: Path) -> None:
    """Generated samples logged next to the metrics can be long: more than csv's 128 KB."""
    path = tmp_path / "samples.csv"
    path.write_text(f"step,metric,value,sample\n0,loss,1.0,{'x' * 300_000}\n1,loss,0.5,short\n")
    proc = _cli(tmp_path / "store", "import", str(path))
    assert proc.returncode == 0, proc.stderr


def test_a_long_field_that_is_no_number_is_shown_shortened(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(f"step,metric,value\n0,loss,{'9' * 300_000}x\n")
    line = _one_clear_line(_cli(tmp_path / "store", "import", str(path)), "long.csv:2", "value")
    assert len(line) < 500


def test_a_field_over_the_limit_is_a_clear_error(tmp_path: Path) -> None:
    """An unclosed quote makes the rest of the file one field: refused, not read into memory."""
    path = tmp_path / "quote.csv"
    with path.open("w") as fh:
        fh.write('step,metric,value\n0,loss,"1.0\n')
        for _ in range(17):
            fh.write("1,loss,0.5\n" * 100_000)  # 1.1 MB each: 18.7 MB in one field
    _both(tmp_path, path, "line 2", "MiB", "unclosed quote")


def test_a_fifo_given_as_the_csv(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    os.mkfifo(path)
    _both(tmp_path, path, "FIFO", "not a regular file")


def test_a_fifo_named_like_an_event_file_does_not_hang(tmp_path: Path) -> None:
    """`mkdir d && mkfifo d/events.out.tfevents.1.h && tunescope diagnose d` hung for ever."""
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "events.out.tfevents.1.h")
    _both(tmp_path, d, str(d / "events.out.tfevents.1.h"), "FIFO")


def test_a_fifo_next_to_a_good_event_file_does_not_hang(tmp_path: Path) -> None:
    d = tmp_path / "d"
    _event_file(d)
    os.mkfifo(d / "events.out.tfevents.2.h")
    _both(tmp_path, d, "events.out.tfevents.2.h", "FIFO")
    (d / "events.out.tfevents.2.h").unlink()  # without it, the good file reads as before
    proc = _cli(tmp_path / "store", "import", str(d))
    assert proc.returncode == 0, proc.stderr
    reader = Store(tmp_path / "store", create_if_missing=False).reader()
    (info,) = reader.runs()
    assert reader.series(info.id, "train/loss").steps.tolist() == [0, 1, 2]


def test_a_directory_named_like_an_event_file(tmp_path: Path) -> None:
    d = tmp_path / "d"
    (d / "events.out.tfevents.x").mkdir(parents=True)
    _both(tmp_path, d, str(d / "events.out.tfevents.x"), "is a directory")


@pytest.mark.parametrize("kind", ["png", "gzip", "sqlite"])
def test_an_event_file_that_is_something_else(tmp_path: Path, kind: str) -> None:
    d = tmp_path / "d"
    d.mkdir()
    path = d / "events.out.tfevents.1.h"
    if kind == "sqlite":
        _sqlite_file(path)
    else:
        path.write_bytes(PNG if kind == "png" else gzip.compress(CSV.encode()))
    words = {"png": "PNG image", "gzip": "gzip", "sqlite": "SQLite database"}[kind]
    _both(tmp_path, d, str(path), "not a TensorBoard event file", words)


def _event_file(d: Path) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    d.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(d))
    for step in range(3):
        value = Summary.Value(tag="train/loss", simple_value=1.0 / (step + 1))
        writer.add_event(Event(wall_time=1000.0 + step, step=step, summary=Summary(value=[value])))
    writer.close()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.binary(max_size=300)
    | st.text(max_size=200).map(lambda t: ("step,metric,value\n" + t).encode("utf-8", "replace"))
    | st.lists(
        st.sampled_from(
            [
                "step,metric,value",
                "0,loss,1",
                "\xe9",
                '"',
                "\x00",
                ",",
                "\n",
                "step,loss",
                "nan",
                "1e400",
                "-1",
                "2.5",
                "\ufeff",
            ]
        ),
        max_size=12,
    ).map(lambda p: "".join(p).encode("utf-8"))
)
def test_any_bytes_are_rows_or_one_clear_error(tmp_path: Path, content: bytes) -> None:
    """Whatever a file holds, the CSV reader yields rows or raises `CSVFormatError` naming it."""
    from tunescope.io.csv import CSVFormatError, read

    path = tmp_path / "any.csv"
    path.write_bytes(content)
    try:
        rows = list(read(path))
    except CSVFormatError as exc:
        assert str(path) in str(exc)
        assert "\n" not in str(exc)
    else:
        for row in rows:
            assert isinstance(row.step, int) and row.step >= 0
            assert isinstance(row.value, float)
