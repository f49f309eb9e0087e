"""Record types both sides of the store share: a metric value read back (`Row`) and an event
(`EventRecord`) queued in log order with the metrics.

They live here, below `store`, `io` and `diagnose`, so the pure diagnosis package can take rows
and return events without importing the store or the readers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Row(NamedTuple):
    """One metric value read from a file or a store, in log order (a tuple: files hold millions)."""

    step: int
    metric: str
    value: float
    wall_time: float | None


@dataclass(slots=True)
class EventRecord:
    """A finding, intervention or note, queued in log order with the metrics."""

    type: str
    kind: str
    severity: str
    message: str
    data: dict[str, Any]
    step: int | None = None
    ref: str | None = None
    wall: float = field(default_factory=time.time)
