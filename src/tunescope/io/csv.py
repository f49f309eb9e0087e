"""Metrics as CSV: long `step,metric,value[,wall_time]` or wide `step,<metric>,...`.

Export writes long CSV in log order, so importing it again reproduces the run, segments included
(a step lower than the previous one starts a new segment, as it did when the run was logged).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import TunescopeError
from ..names import MetricNameError, canonical
from ..records import Row
from ..store import Reader
from . import files

if TYPE_CHECKING:
    from ..run import Run

LONG_COLUMNS = ("step", "metric", "value", "wall_time")
# The csv module refuses fields over 128 KB; generated samples logged next to the metrics can be
# longer. 16 MiB still bounds what an unclosed quote (the rest of the file as one field) reads.
FIELD_LIMIT = 16 * 1024 * 1024
MAX_STEP = 2**63 - 1  # steps are SQLite INTEGERs and packed int64 columns


class CSVFormatError(TunescopeError, ValueError):
    """A CSV file that is neither long nor wide metrics CSV; the message says what is wrong."""


def format_value(value: float) -> str:
    """Exact text for a float (round-trips through float()), NaN/inf as nan/inf/-inf."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


class TextSink(Protocol):
    """Where CSV text goes: a file, stdout, or anything with `write(str)`."""

    def write(self, text: str, /) -> object: ...


def write_long(reader: Reader, run_id: str, out: TextSink) -> int:
    """Write every point of a run as long CSV in log order; returns the number of rows."""
    history = reader.history(run_id)
    keys = sorted(history)
    if not keys:
        out.write(",".join(LONG_COLUMNS) + "\n")
        return 0
    segs = np.concatenate([history[k].segs for k in keys])
    steps = np.concatenate([history[k].steps for k in keys])
    walls = np.concatenate([history[k].walls for k in keys])
    values = np.concatenate([history[k].values for k in keys])
    key_idx = np.concatenate([np.full(len(history[k]), i) for i, k in enumerate(keys)])
    order = np.lexsort((key_idx, walls, steps, segs))  # last key is the primary sort key
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LONG_COLUMNS)
    for i in order.tolist():
        writer.writerow(
            (int(steps[i]), keys[key_idx[i]], format_value(values[i]), repr(float(walls[i])))
        )
    return len(order)


def _shown(text: str) -> str:
    """`text` quoted for an error message, shortened: a field can be megabytes long."""
    return repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text):,} characters)"


def _number(text: str, what: str, line: int, path: Path) -> float:
    try:
        return float(text)
    except ValueError:
        raise CSVFormatError(
            f"{path}:{line}: {what} {_shown(text)} is not a number "
            "(NaN and inf are written nan, inf, -inf)"
        ) from None


def _step(text: str, line: int, path: Path) -> int:
    try:
        step = int(text)  # the common case, without a float round-trip
        if 0 <= step <= MAX_STEP:
            return step
    except ValueError:
        pass
    value = _number(text, "step", line, path)
    if not value.is_integer() or value < 0:
        raise CSVFormatError(f"{path}:{line}: step {_shown(text)} must be a non-negative integer")
    if value > MAX_STEP:
        raise CSVFormatError(
            f"{path}:{line}: step {_shown(text)} is above 2**63 - 1, the largest step a store "
            "holds; number the steps from 0"
        )
    return int(value)


def _wall(text: str, line: int, path: Path) -> float | None:
    """The wall_time cell: Unix seconds, or None (empty: the time of the import)."""
    if not text.strip():
        return None
    wall = _number(text, "wall_time", line, path)
    if not math.isfinite(wall):
        raise CSVFormatError(
            f"{path}:{line}: wall_time {_shown(text)} must be a finite Unix time in seconds; "
            "leave the cell empty where it is unknown"
        )
    return wall


def _metric(raw: str, line: int, path: Path) -> str:
    if not raw.strip():
        raise CSVFormatError(f"{path}:{line}: empty metric name")
    try:
        return canonical(raw.strip())
    except MetricNameError as exc:
        raise CSVFormatError(f"{path}:{line}: metric {_shown(raw)}: {exc}") from None


def read(path: str | Path) -> Iterator[Row]:
    """Rows of a long or wide metrics CSV, in file order (metric names made canonical).

    Raises `CSVFormatError` naming the file (and line) for anything that is not such a file:
    not a regular file, binary, not UTF-8 (UTF-16/32 with a byte-order mark are read), a field
    over `FIELD_LIMIT`, a bad header or value.
    """
    path = Path(path)
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    with files.open_text(path, CSVFormatError) as fh:
        records = csv.reader(fh)
        try:
            header = next(records, None)
            if header is None or not any(h.strip() for h in header):
                raise CSVFormatError(
                    f"{path} is empty; expected a header such as step,metric,value,wall_time"
                )
            cols = [h.strip() for h in header]
            lower = [c.lower() for c in cols]
            if {"step", "metric", "value"} <= set(lower):
                yield from _read_long(records, lower, path)
            elif lower[0] == "step" and len(cols) > 1:
                yield from _read_wide(records, cols, path)
            else:
                raise CSVFormatError(
                    f"{path}: header {','.join(cols)!r} is neither long CSV (columns step, "
                    "metric, value[, wall_time]) nor wide CSV (first column step, one column "
                    "per metric)"
                )
        except UnicodeDecodeError:
            raise CSVFormatError(files.decode_error(path, fh.encoding)) from None
        except csv.Error as exc:
            raise CSVFormatError(_csv_error(path, exc)) from None


def _csv_error(path: Path, exc: csv.Error) -> str:
    """The message for an error of the csv module, with the line its record starts on: found by
    reading the file again up to the error (the error path only, so reading stays fast)."""
    line = 0
    with files.open_text(path, CSVFormatError) as fh:
        reader = csv.reader(fh)
        try:
            for _ in reader:
                line = reader.line_num
        except csv.Error:
            pass
    if "field larger than field limit" in str(exc):
        return (
            f"{path}: a field starting on line {line + 1} is longer than "
            f"{FIELD_LIMIT // 2**20} MiB (an unclosed quote makes the rest of the file one field)"
        )
    return f"{path}: line {line + 1}: {exc}"


def _read_long(reader: Iterator[list[str]], lower: list[str], path: Path) -> Iterator[Row]:
    i_step, i_metric, i_value = lower.index("step"), lower.index("metric"), lower.index("value")
    i_wall = lower.index("wall_time") if "wall_time" in lower else None
    width = len(lower)
    names: dict[str, str] = {}  # raw metric -> canonical: files repeat a handful of names
    for line, rec in enumerate(reader, start=2):
        if len(rec) < width:
            if not rec or not any(f.strip() for f in rec):
                continue
            raise CSVFormatError(f"{path}:{line}: expected {width} fields, got {len(rec)}")
        raw = rec[i_metric]
        metric = names.get(raw)
        if metric is None:
            metric = names[raw] = _metric(raw, line, path)
        try:  # fast path; the slow path below names the bad field
            value = float(rec[i_value])
            wall = float(rec[i_wall]) if i_wall is not None and rec[i_wall] else None
            if wall is not None and not math.isfinite(wall):
                raise ValueError
        except ValueError:
            value = _number(rec[i_value], "value", line, path)
            wall = _wall(rec[i_wall], line, path) if i_wall is not None else None
        yield Row(_step(rec[i_step], line, path), metric, value, wall)


def _read_wide(reader: Iterator[list[str]], cols: list[str], path: Path) -> Iterator[Row]:
    names = [_metric(c, 1, path) if c else "" for c in cols]
    wall_col = next((i for i, c in enumerate(cols) if c.lower() == "wall_time"), None)
    for line, rec in enumerate(reader, start=2):
        if not rec or not any(f.strip() for f in rec):
            continue
        step = _step(rec[0], line, path)
        wall = (
            _wall(rec[wall_col], line, path)
            if wall_col is not None and wall_col < len(rec)
            else None
        )
        for i in range(1, min(len(rec), len(cols))):
            if i == wall_col or not rec[i].strip():
                continue  # wide CSV leaves a cell empty where a metric was not logged
            if not names[i]:
                raise CSVFormatError(f"{path}: column {i + 1} has no name in the header")
            yield Row(step, names[i], _number(rec[i], cols[i], line, path), wall)


def log_rows(run: Run, rows: Iterator[Row]) -> int:
    """Log rows into a run in file order, one `log()` call per run of equal steps."""
    count = 0
    batch: dict[str, float] = {}
    current: tuple[int, float | None] | None = None
    for row in rows:
        key = (row.step, row.wall_time)
        if current is not None and (key != current or row.metric in batch):
            run.log(batch, step=current[0], wall_time=current[1])
            batch = {}
        current = key
        batch[row.metric] = row.value
        count += 1
    if current is not None and batch:
        run.log(batch, step=current[0], wall_time=current[1])
    return count
