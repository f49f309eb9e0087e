"""The detector protocol and the `Signal` a detector returns.

A detector is pure: it reads the shared `State` (filled by the monitor) and its own small
state, and says which problems hold *now*. It never does I/O, never reads a clock, never looks
at a later point. The monitor turns signals into findings with a lifecycle (raised once, updated
when they change materially, resolved when they end).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..values import fmt
from .findings import Kind, Recommendation, Severity
from .state import State

# Channels: which kind of value a log call carried. A detector runs only on its channels.
LOSS = 1  # train/loss
GRAD = 2  # train/grad_norm
LAYER = 4  # train/grad_norm/<layer>
LR = 8  # train/lr
UPDATE = 16  # train/update_ratio
EVAL = 32  # eval/<quality metric>
RETAIN = 64  # retain/<quality metric>
PROBE = 128  # probe/<name>
EPOCH = 256  # train/epoch


@dataclass(frozen=True, slots=True)
class Signal:
    """A detector's verdict on one (kind, metric) at the current step.

    `severity` None means the condition no longer holds (the finding is resolved). `headline`
    is the signal's main number (e.g. the % rise of eval/loss): when it moves by half or more,
    the stored finding is updated.
    """

    kind: Kind
    metric: str
    severity: Severity | None
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    recommendation: Recommendation = field(default_factory=lambda: Recommendation(""))
    headline: float = 0.0


def resolved(kind: Kind, metric: str) -> Signal:
    """The signal that ends a finding."""
    return Signal(kind, metric, None)


class Detector(Protocol):
    """A pure detector: `check` after each log call that touched one of its `channels`."""

    kinds: ClassVar[tuple[Kind, ...]]
    channels: ClassVar[int]

    def check(self, step: int, st: State, touched: int) -> list[Signal]:
        """The signals that hold at `step` (`touched`: channels of this log call)."""
        ...

    def rewind(self, step: int, st: State) -> None:
        """A rollback/restart to `step`: drop what was learnt from abandoned points."""
        ...

    def unchecked(self, st: State) -> dict[Kind, str]:
        """Kinds this detector could not check on what it has seen, with the reason."""
        ...


def pct(x: float) -> str:
    """A relative change as a percentage: 0.183 -> '18%'."""
    if x != x:
        return "nan%"
    return f"{x * 100:.0f}%" if abs(x) >= 0.095 else f"{x * 100:.1f}%"


__all__ = [
    "EPOCH",
    "EVAL",
    "GRAD",
    "LAYER",
    "LOSS",
    "LR",
    "PROBE",
    "RETAIN",
    "UPDATE",
    "Detector",
    "Signal",
    "fmt",
    "pct",
    "resolved",
]
