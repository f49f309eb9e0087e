"""What a diagnosis says: `Finding` (kind, step, severity, message, evidence, recommendation).

Findings are stored as events (`type="finding"`, `ref=<finding id>`): one `raised` event, then
`updated` events when the severity or the evidence changes materially, and a `resolved` event
when the problem goes away. `findings_from_events` collapses those events back into findings;
the CLI, the dashboard and the policy all read findings through it.

>>> f = Finding(Kind.DIVERGENCE, 42, Severity.CRITICAL, "train/loss is nan at step 42.",
...             {"metric": "train/loss"}, Recommendation("Roll back.", {"action": "stop"}),
...             id="divergence:train/loss@42")
>>> f.to_json()["kind"], f.last_step
('divergence', 42)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ..values import jsonable


class Kind(StrEnum):
    """The kinds of finding (DESIGN.md)."""

    OVERFITTING = "overfitting"
    UNDERFITTING = "underfitting"
    FORGETTING = "forgetting"
    DIVERGENCE = "divergence"
    LOSS_SPIKE = "loss_spike"
    LR_TOO_HIGH = "lr_too_high"
    LR_TOO_LOW = "lr_too_low"
    PLATEAU = "plateau"
    EXPLODING_GRADIENTS = "exploding_gradients"
    VANISHING_GRADIENTS = "vanishing_gradients"


class Severity(StrEnum):
    """How urgent a finding is; compare with `rank`."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for critical."""
        return _RANK[self]


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

# The lifecycle of a stored finding (the `state` field of its events' data).
RAISED, UPDATED, RESOLVED = "raised", "updated", "resolved"
STATES = (RAISED, UPDATED, RESOLVED)

# Root causes and the symptoms that follow from them: a learning rate (or a bad batch) that
# blows the loss or the gradient norm up leaves a loss stuck at chance (underfitting, lr_too_low
# by its tiny updates) and starved lower layers (vanishing gradients) behind it.
ROOT_KINDS = frozenset({"divergence", "lr_too_high", "exploding_gradients"})
CONSEQUENCE_KINDS = frozenset({"underfitting", "lr_too_low", "vanishing_gradients"})

# Actions a recommendation may suggest (the policy turns them into `Control` flags).
# `keep_training` says, in structure, that the right response is *not* to intervene (overfitting
# while the task metric still improves: stopping would cost accuracy); the policy applies nothing.
ACTIONS = ("stop", "scale_lr", "rollback", "restore_best", "save_checkpoint", "keep_training")


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What to do: a sentence for people and, when one fits, a structured intervention.

    `intervention` is `{"action": <one of ACTIONS>, ...params}`, e.g.
    `{"action": "scale_lr", "factor": 0.5}` or
    `{"action": "restore_best", "metric": "eval/loss", "step": 120}`.
    """

    text: str
    intervention: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """`{"text": ..., "intervention": ...}`, strict-JSON safe."""
        return {"text": self.text, "intervention": jsonable(self.intervention)}


@dataclass(frozen=True, slots=True)
class Finding:
    """One diagnosis of a run, with the evidence behind it.

    `step` is the first step at which the evidence sufficed (computed from points up to that
    step only); `last_step` is the last step at which it was still seen; `state` is
    `raised`/`updated` while it persists and `resolved` once it is gone.
    """

    kind: Kind
    step: int
    severity: Severity
    message: str
    evidence: dict[str, Any]
    recommendation: Recommendation
    id: str = ""
    last_step: int = -1
    state: str = RAISED
    metric: str = field(default="", compare=False)  # what it is about, e.g. "eval/loss"
    # the id of the finding this one follows from (its root cause), "" when it is a root: a
    # loss stuck at chance or dead lower layers after an LR blow-up name the blow-up here and
    # carry no advice of their own (the root's recommendation stands)
    caused_by: str = ""

    def __post_init__(self) -> None:
        if self.last_step < self.step:
            object.__setattr__(self, "last_step", self.step)
        if not self.id:
            object.__setattr__(self, "id", finding_id(self.kind, self.metric, self.step))

    @property
    def active(self) -> bool:
        """Whether the problem still persisted at the last point seen."""
        return self.state != RESOLVED

    def replace(self, **changes: Any) -> Finding:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The DESIGN.md shape plus `id`, `last_step`, `state`; strict-JSON safe."""
        return {
            "kind": str(self.kind),
            "step": self.step,
            "severity": str(self.severity),
            "message": self.message,
            "evidence": jsonable(self.evidence),
            "recommendation": self.recommendation.to_json(),
            "id": self.id,
            "last_step": self.last_step,
            "state": self.state,
            "caused_by": self.caused_by or None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        """Inverse of `to_json` (non-finite numbers stay as their strings)."""
        rec = data.get("recommendation") or {}
        return cls(
            kind=Kind(data["kind"]),
            step=int(data["step"]),
            severity=Severity(data["severity"]),
            message=str(data["message"]),
            evidence=dict(data.get("evidence") or {}),
            recommendation=Recommendation(str(rec.get("text", "")), rec.get("intervention")),
            id=str(data.get("id", "")),
            last_step=int(data.get("last_step", data["step"])),
            state=str(data.get("state", RAISED)),
            caused_by=str(data.get("caused_by") or ""),
        )

    def event_data(self, state: str) -> dict[str, Any]:
        """The `data` of the event that stores this finding in `state`."""
        return {
            "evidence": jsonable(self.evidence),
            "recommendation": self.recommendation.to_json(),
            "first_step": self.step,
            "last_step": self.last_step,
            "state": state,
            "metric": self.metric,
            "caused_by": self.caused_by or None,
        }


def finding_id(kind: Kind, metric: str, step: int) -> str:
    """A readable id, stable for the life of the finding: `overfitting:eval/loss@200`."""
    return f"{kind}:{metric}@{step}" if metric else f"{kind}@{step}"


class _EventLike(Protocol):
    type: str
    kind: str
    severity: str
    message: str
    data: dict[str, Any]
    step: int | None
    ref: str | None


def findings_from_events(events: Iterable[_EventLike]) -> list[Finding]:
    """Collapse stored finding events (raised/updated/resolved) into one `Finding` each.

    Accepts `store.Event`s (from `Reader.events`) or `store.EventRecord`s, in log order.
    Events of other types, and findings of kinds tunescope does not know, are skipped.
    Returns findings sorted by first step.

    >>> from tunescope.records import EventRecord
    >>> ev = [EventRecord("finding", "plateau", "info", "stalled", {"first_step": 5,
    ...       "last_step": 5, "state": "raised"}, 5, "plateau@5")]
    >>> [(f.kind.value, f.step) for f in findings_from_events(ev)]
    [('plateau', 5)]
    """
    by_ref: dict[str, Finding] = {}
    for n, ev in enumerate(events):
        if ev.type != "finding" or ev.kind not in _KINDS:
            continue
        data = ev.data or {}
        ref = ev.ref or f"{ev.kind}#{n}"
        step = int(ev.step or 0)
        rec = data.get("recommendation") or {}
        state = str(data.get("state", RAISED))
        previous = by_ref.get(ref)
        first = int(data.get("first_step", previous.step if previous else step))
        try:
            severity = Severity(ev.severity)
        except ValueError:
            severity = Severity.WARNING
        by_ref[ref] = Finding(
            kind=Kind(ev.kind),
            step=first,
            severity=severity,
            message=ev.message,
            evidence=dict(data.get("evidence") or {}),
            recommendation=Recommendation(str(rec.get("text", "")), rec.get("intervention")),
            id=ref,
            last_step=int(data.get("last_step", first if state == RAISED else step)),
            state=state if state in STATES else RAISED,
            metric=str(data.get("metric", "")),
            caused_by=str(data.get("caused_by") or ""),
        )
    return sorted(by_ref.values(), key=lambda f: (f.step, f.kind, f.id))


_KINDS = frozenset(k.value for k in Kind)
