"""TensorBoard event files: read scalars (what HF Trainer writes with `report_to="tensorboard"`)
with TensorBoard's own `EventAccumulator`, and write a run with `SummaryWriter`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from ..errors import TunescopeError
from ..names import canonical
from ..store import Reader
from . import files
from .csv import Row


class TensorBoardError(TunescopeError, ValueError):
    """A directory without readable TensorBoard scalars."""


def event_dirs(root: Path) -> list[Path]:
    """Directories under `root` (itself included) that hold event files."""
    dirs = sorted({p.parent for p in root.rglob("events.out.tfevents.*")})
    return dirs


def check_event_files(d: Path) -> None:
    """Refuse, by name, what TensorBoard's loader would open in `d` and fail or hang on.

    The loader opens every entry whose name contains "tfevents" (its own rule): a directory
    raises `IsADirectoryError`, a FIFO blocks for ever, a file of another format is skipped
    without a word. Each is a `TensorBoardError` naming the file here.
    """
    for entry in sorted(d.iterdir()):
        if "tfevents" not in entry.name:
            continue
        with files.open_binary(entry, TensorBoardError) as fh:
            head = fh.read(64)  # a record's framing, or enough to recognise another format
        if len(head) < 12 or files.is_tfrecord(head):
            continue  # empty or still being written: TensorBoard reads what is there
        found = files.describe(head)
        what = f"it is {found[0]}" if found else "its first record is not a TFRecord"
        raise TensorBoardError(f"{entry} is not a TensorBoard event file ({what})")


def read(root: str | Path) -> Iterator[Row]:
    """Every scalar under `root`, in the order it was written (wall time, then step)."""
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        TENSORS,
        EventAccumulator,
    )

    root = Path(root)
    if not root.is_dir():
        raise TensorBoardError(f"{root} is not a directory")
    try:
        dirs = event_dirs(root)
    except OSError as exc:  # an unreadable directory somewhere under root
        raise TensorBoardError(f"{exc.filename or root}: cannot list it: {exc.strerror}") from None
    if not dirs:
        raise TensorBoardError(f"no TensorBoard event files (events.out.tfevents.*) under {root}")
    rows: list[Row] = []
    seen: dict[str, Path] = {}
    for d in dirs:
        check_event_files(d)
    for d in dirs:
        acc = EventAccumulator(str(d), size_guidance={SCALARS: 0, TENSORS: 0})
        try:
            acc.Reload()
        except OSError as exc:
            raise TensorBoardError(f"{exc.filename or d}: cannot read it: {exc.strerror}") from None
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            _claim(seen, tag, d, root)
            for ev in acc.Scalars(tag):
                _check(ev.step, ev.wall_time, tag, d)
                rows.append(Row(int(ev.step), canonical(tag), float(ev.value), float(ev.wall_time)))
        for tag in tags.get("tensors", []):
            events = acc.Tensors(tag)
            if not events or _scalar(events[0].tensor_proto) is None:
                continue
            _claim(seen, tag, d, root)
            for ev in events:
                value = _scalar(ev.tensor_proto)
                if value is not None:
                    _check(ev.step, ev.wall_time, tag, d)
                    rows.append(Row(int(ev.step), canonical(tag), value, float(ev.wall_time)))
    if not rows:
        raise TensorBoardError(f"the event files under {root} hold no scalar values")
    rows.sort(key=lambda r: (r.wall_time or 0.0, r.step))
    yield from rows


def _check(step: int, wall: float, tag: str, d: Path) -> None:
    """What the store cannot hold, refused before the import creates a run."""
    if step < 0:
        raise TensorBoardError(
            f"{d}: tag {tag!r} has a value at step {step}; steps must be non-negative"
        )
    if not math.isfinite(wall):
        raise TensorBoardError(
            f"{d}: tag {tag!r} has a value at step {step} with wall time {wall}; "
            "wall times must be finite Unix seconds"
        )


def _claim(seen: dict[str, Path], tag: str, d: Path, root: Path) -> None:
    if tag in seen and seen[tag] != d:
        raise TensorBoardError(
            f"tag {tag!r} appears in two runs under {root} ({seen[tag].relative_to(root)} and "
            f"{d.relative_to(root)}); point at one of those directories"
        )
    seen[tag] = d


def _scalar(proto: object) -> float | None:
    from tensorboard.util import tensor_util

    try:
        arr = tensor_util.make_ndarray(proto)
    except Exception:
        return None
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        return None
    return float(arr.reshape(()))


def write(reader: Reader, run_id: str, log_dir: str | Path) -> int:
    """Write every point of a run as TensorBoard scalars; returns the number written."""
    from torch.utils.tensorboard import SummaryWriter

    count = 0
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for key, series in reader.history(run_id).items():
            for step, value, wall in zip(
                series.steps.tolist(), series.values.tolist(), series.walls.tolist(), strict=True
            ):
                writer.add_scalar(key, value, global_step=step, walltime=wall)
                count += 1
    finally:
        writer.close()
    return count
