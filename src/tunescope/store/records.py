"""What travels through a run's log queue to the writer, and the checks a point passes there.

`Run.log` refuses what the store cannot hold before it queues anything (see values.py); the
writer checks each point again before it touches the chunk state or the monitor, because a
record that reaches the queue some other way (a bug, a direct `Writer` user) must cost only
itself, never the records around it (see writer.py).
"""

from __future__ import annotations

import math
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from ..values import MAX_STEP, resolve


@dataclass(slots=True)
class SummaryRecord:
    """Keys to merge into the run's JSON summary (final metrics, best checkpoint, ...)."""

    values: dict[str, Any]


@dataclass(slots=True)
class Point:
    """A logged step whose values are checked floats and which the observer has seen.

    A failed transaction puts these (not the raw tuples) back in the queue, so a retry writes
    the same numbers and never shows the monitor a point twice.
    """

    step: int
    wall: float
    values: list[tuple[str, float]]
    weight: int  # what the caller counted for it in its backlog (values, at least 1)


def weight(item: Any) -> int:
    """What a queued record counts in its caller's backlog: its values, at least 1 per call."""
    if type(item) is Point:
        return item.weight
    if type(item) is tuple:
        try:
            return max(1, len(item[2]))
        except (IndexError, TypeError):
            return 1
    return 0  # events and summaries are not counted by the caller


def check_point(item: Any, known: Container[str]) -> Point | str:
    """The checked `Point` of a queued `(step, wall, [(key, value), ...])` tuple, or why it
    cannot be stored. `known` holds keys already checked (the run's series)."""
    try:
        step, wall, kv = item
    except (TypeError, ValueError):
        return f"not a (step, wall time, values) record: {item!r:.80}"
    if type(step) is not int or not 0 <= step <= MAX_STEP:
        return f"step {step!r:.40} is not an integer from 0 to 2**63 - 1 (int64)"
    if type(wall) is not float:
        if isinstance(wall, bool) or not isinstance(wall, int | float):
            return f"wall time {wall!r:.40} is not a number"
        wall = float(wall)
    if not math.isfinite(wall):
        return f"wall time {wall!r} is not a finite number"
    values: list[tuple[str, float]] = []
    try:
        pairs = list(kv)
    except TypeError:
        return f"values {kv!r:.60} are not a list of (key, value) pairs"
    for pair in pairs:
        try:
            key, val = pair
        except (TypeError, ValueError):
            return f"{pair!r:.60} is not a (key, value) pair"
        if key not in known:
            if type(key) is not str:
                return f"metric key {key!r:.60} is not a string"
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                return f"metric key {key!r:.80} is not valid UTF-8"
        if type(val) is not float:
            try:
                val = resolve(val)
            except Exception as exc:
                return f"metric {key!r:.80}: cannot read a {type(val).__name__} as a number ({exc})"
            if type(val) is not float:
                return f"metric {key!r:.80}: a {type(val).__name__} is not a float"
        values.append((key, val))
    return Point(step, wall, values, max(1, len(pairs)))


def safe_text(text: str) -> str:
    """`text` with anything UTF-8 cannot hold (lone surrogates) written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
