"""Diagnosis: pure detectors over a run's history, online (`Monitor`) and offline (`replay`).

>>> from tunescope.diagnose import Context, Monitor
>>> monitor = Monitor(Context(num_classes=5))   # pass as Run(..., observer=monitor)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .context import Context
from .findings import Finding, Kind, Recommendation, Severity, findings_from_events
from .monitor import Monitor

if TYPE_CHECKING:
    from .engine import Report, history_rows, replay, replay_run

# The offline engine reads CSV/TensorBoard/stores; it is loaded on first use so that the run
# (which imports the monitor and the policy) never imports the readers.
_LAZY = {"Report", "history_rows", "replay", "replay_run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'tunescope.diagnose' has no attribute {name!r}")


__all__ = [
    "Context",
    "Finding",
    "Kind",
    "Monitor",
    "Recommendation",
    "Report",
    "Severity",
    "findings_from_events",
    "history_rows",
    "replay",
    "replay_run",
]
