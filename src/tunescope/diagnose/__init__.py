"""Diagnosis: pure detectors over a run's history, online (`Monitor`) and offline (`replay`).

>>> from tunescope.diagnose import Context, Monitor
>>> monitor = Monitor(Context(num_classes=5))   # pass as Run(..., observer=monitor)
"""

from __future__ import annotations

from .context import Context
from .engine import Report, history_rows, replay, replay_run
from .findings import Finding, Kind, Recommendation, Severity, findings_from_events
from .monitor import Monitor

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
