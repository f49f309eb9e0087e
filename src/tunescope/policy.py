"""The policy: findings in, interventions out — decided here, applied by an adapter.

`Policy.decide(finding)` is pure given the policy's state (how many LR reductions and rollbacks
were used): it returns the interventions the finding calls for, by mode:

- `observe`: none (findings are only recorded);
- `advise`: none applied — the finding's recommendation is shown to the user;
- `act`: interventions to apply, within limits (LR factor 0.5, at most 3 reductions, at most 2
  rollbacks; past a limit the policy stops the run instead).

`apply(interventions, control)` turns them into `Control` flags; the Trainer callback (or the
plain-loop helpers in `tunescope.control`) read those flags and act through public APIs.

>>> from tunescope.diagnose.findings import Finding, Kind, Recommendation, Severity
>>> p = Policy(PolicyConfig(mode="act"))
>>> f = Finding(Kind.LR_TOO_HIGH, 40, Severity.WARNING, "loss oscillates", {}, Recommendation(""))
>>> [(i.action, i.params) for i in p.decide(f)]
[('scale_lr', {'factor': 0.5})]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from .control import Control
from .diagnose.findings import Finding, Kind, Severity
from .diagnose.learning import COLLAPSED, LEARNED
from .records import EventRecord


class Mode(StrEnum):
    """What tunescope does with findings."""

    OBSERVE = "observe"
    ADVISE = "advise"
    ACT = "act"


class Response(StrEnum):
    """What the policy does with one kind of finding in `act` mode."""

    ROLLBACK = "rollback"  # roll back to the last good snapshot and scale the LR down
    SCALE_LR = "scale_lr"  # scale the LR down; stop once reductions are used up
    SCALE_LR_THEN_STOP = "scale_lr_then_stop"  # plateau: scale down, stop when used up
    RESTORE_BEST = "restore_best"  # stop and restore the best checkpoint
    RESTORE_TRADEOFF = "restore_tradeoff"  # stop, restore best task/retain trade-off
    ADVISE = "advise"  # only tell the user
    IGNORE = "ignore"


DEFAULT_RESPONSES: dict[Kind, Response] = {
    Kind.DIVERGENCE: Response.ROLLBACK,
    Kind.LR_TOO_HIGH: Response.SCALE_LR,
    Kind.PLATEAU: Response.SCALE_LR_THEN_STOP,
    Kind.OVERFITTING: Response.RESTORE_BEST,
    Kind.FORGETTING: Response.RESTORE_TRADEOFF,
    # A spike that recovers needs no action; one that does not is reported as divergence.
    Kind.LOSS_SPIKE: Response.ADVISE,
    Kind.EXPLODING_GRADIENTS: Response.ADVISE,
    Kind.LR_TOO_LOW: Response.ADVISE,
    Kind.UNDERFITTING: Response.ADVISE,
    Kind.VANISHING_GRADIENTS: Response.ADVISE,
}


@dataclass(frozen=True)
class PolicyConfig:
    """Limits and per-kind responses.

    `responses` overrides `DEFAULT_RESPONSES` per kind, e.g. `{"plateau": "advise"}`.
    `forgetting_tolerance` is how much task metric (absolute, e.g. 0.01 = 1 point) the
    trade-off restore may give up to keep retain metrics closest to their baseline.
    """

    mode: Mode = Mode.ADVISE
    lr_factor: float = 0.5
    max_lr_reductions: int = 3
    max_rollbacks: int = 2
    min_severity: Severity = Severity.WARNING
    forgetting_tolerance: float = 0.01
    responses: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        object.__setattr__(self, "min_severity", Severity(self.min_severity))
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1); got {self.lr_factor}")
        for kind, response in self.responses.items():
            if kind not in Kind.__members__.values():
                raise ValueError(f"unknown finding kind {kind!r}; kinds: {[k.value for k in Kind]}")
            Response(response)

    def response(self, kind: Kind) -> Response:
        """The configured response to a kind."""
        return Response(self.responses.get(kind.value, DEFAULT_RESPONSES[kind]))


@dataclass(frozen=True)
class Intervention:
    """One decision: `action` is stop | scale_lr | rollback | restore_best | save_checkpoint."""

    action: str
    step: int
    finding: str  # id of the finding that caused it
    kind: Kind
    params: dict[str, Any]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (how interventions travel in `Control.pending`)."""
        return {
            "action": self.action,
            "step": self.step,
            "finding": self.finding,
            "kind": str(self.kind),
            "params": dict(self.params),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Intervention:
        """Inverse of `to_dict`."""
        return cls(
            str(data["action"]),
            int(data["step"]),
            str(data["finding"]),
            Kind(data["kind"]),
            dict(data["params"]),
            str(data["reason"]),
        )

    def to_event(
        self, before: dict[str, Any] | None = None, after: dict[str, Any] | None = None
    ) -> EventRecord:
        """The intervention as a stored event (`type="intervention"`, `kind` = the action)."""
        return EventRecord(
            type="intervention",
            kind=self.action,
            severity="warning",
            message=self.reason,
            data={
                "finding": self.finding,
                "finding_kind": str(self.kind),
                "params": self.params,
                "before": before or {},
                "after": after or {},
            },
            step=self.step,
            ref=self.finding,
        )


@dataclass
class PolicyState:
    """What the policy has used up; round-trips through `state_dict`."""

    lr_reductions: int = 0
    rollbacks: int = 0
    stopped: bool = False
    handled: list[str] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        self.lr_reductions = int(state["lr_reductions"])
        self.rollbacks = int(state["rollbacks"])
        self.stopped = bool(state["stopped"])
        self.handled = list(state["handled"])


class Policy:
    """Maps findings to interventions under a `PolicyConfig` (see module docstring)."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.state = PolicyState()

    def decide(self, finding: Finding) -> list[Intervention]:
        """The interventions a newly raised finding calls for (empty unless mode is `act`)."""
        cfg, st = self.config, self.state
        if cfg.mode is not Mode.ACT or st.stopped or finding.id in st.handled:
            return []
        if finding.severity.rank < cfg.min_severity.rank:
            return []
        response = cfg.response(finding.kind)
        if response in (Response.ADVISE, Response.IGNORE):
            return []
        rec = finding.recommendation.intervention or {}
        if response is Response.RESTORE_BEST and rec.get("action") == "keep_training":
            # the detector advises to keep training (overfitting while the task metric still
            # improves): stopping would cost task accuracy. Not marked handled, so the same
            # finding is acted on once its advice becomes a restore.
            return []
        st.handled.append(finding.id)
        step, kind = finding.last_step, finding.kind

        def make(action: str, reason: str, **params: Any) -> Intervention:
            return Intervention(action, step, finding.id, kind, params, reason)

        if response is Response.ROLLBACK:
            if st.rollbacks >= cfg.max_rollbacks:
                return self._stop(
                    make,
                    f"{kind} again after {st.rollbacks} rollbacks: stopping "
                    "and restoring the best checkpoint",
                )
            st.rollbacks += 1
            out = [
                make(
                    "rollback",
                    f"{kind} at step {finding.step}: rolling back to the last "
                    f"snapshot before step {finding.step} (rollback {st.rollbacks}/"
                    f"{cfg.max_rollbacks})",
                    before_step=finding.step,
                )
            ]
            return out + self._scale(make, kind, stop_when_used_up=True, f=finding)
        if response is Response.SCALE_LR_THEN_STOP and rec.get("action") == "restore_best":
            # the detector measured that a lower LR cannot help (the weights barely move)
            return self._stop(
                make,
                f"{kind} since step {finding.step} with the weights barely moving: "
                "stopping and restoring the best checkpoint",
            )
        if response in (Response.SCALE_LR, Response.SCALE_LR_THEN_STOP):
            back = rollback_point(finding)
            if back is not None and st.rollbacks < cfg.max_rollbacks:
                # The weights are already broken (a collapse): a lower rate alone would go
                # on from them; return to a state from before the damage first.
                st.rollbacks += 1
                rollback = make(
                    "rollback",
                    f"{kind} at step {finding.step}: the model is back at the no-learning "
                    f"level; rolling back to the last snapshot at or before step {back - 1} "
                    f"(rollback {st.rollbacks}/{cfg.max_rollbacks})",
                    before_step=back,
                )
                return [rollback, *self._scale(make, kind, stop_when_used_up=True, f=finding)]
            return self._scale(make, kind, stop_when_used_up=True, f=finding)
        if response is Response.RESTORE_BEST:
            return self._stop(
                make,
                f"{kind} since step {finding.step}: stopping and restoring the best checkpoint",
            )
        # RESTORE_TRADEOFF
        return self._stop(
            make,
            f"{kind} since step {finding.step}: stopping and restoring the "
            "checkpoint with the best task/retain trade-off",
            criterion="tradeoff",
            tolerance=cfg.forgetting_tolerance,
        )

    def _scale(
        self, make: Any, kind: Kind, *, stop_when_used_up: bool, f: Finding | None = None
    ) -> list[Intervention]:
        cfg, st = self.config, self.state
        if st.lr_reductions >= cfg.max_lr_reductions:
            if stop_when_used_up:
                return self._stop(
                    make,
                    f"{kind} after {st.lr_reductions} learning-rate "
                    "reductions: stopping and restoring the best checkpoint",
                )
            return []
        st.lr_reductions += 1
        factor = recommended_factor(f, cfg.lr_factor) if f is not None else cfg.lr_factor
        return [
            make(
                "scale_lr",
                f"{kind}: scaling the learning rate by {factor:g} "
                f"(reduction {st.lr_reductions}/{cfg.max_lr_reductions})",
                factor=factor,
            )
        ]

    def _stop(self, make: Any, reason: str, **params: Any) -> list[Intervention]:
        self.state.stopped = True
        return [make("restore_best", reason, **params), make("stop", reason)]


def rollback_point(finding: Finding) -> int | None:
    """For a finding answered by an LR cut: the step a rollback must go back before, when the
    weights themselves are broken, else None.

    Two signs: the detector recommends a rollback (`{"action": "rollback", "step": S}`: go back
    to S or earlier), or an `lr_too_high` finding whose evidence puts the training loss at the
    no-learning level (`level` >= 0.9 x `reference`: the model collapsed, go back to its best
    point `best_step` or earlier) — or, when even its best level stayed above 0.6 x `reference`
    (`best_level`: it never learnt, its "best" point is noise in a loss that was already
    broken), to the start of training.
    """
    rec = finding.recommendation.intervention or {}
    step = rec.get("step")
    if rec.get("action") == "rollback" and isinstance(step, int):
        return step + 1
    ev = finding.evidence
    level, ref, best = ev.get("level"), ev.get("reference"), ev.get("best_step")
    if (
        finding.kind is Kind.LR_TOO_HIGH
        and isinstance(level, int | float)
        and isinstance(ref, int | float)
        and ref > 0
        and level >= COLLAPSED * ref
    ):
        best_level = ev.get("best_level")
        if isinstance(best_level, int | float) and best_level > LEARNED * ref:
            return 1  # the snapshot at step 0 (or the earliest kept): the last good state
        return (int(best) if isinstance(best, int | float) else finding.step - 1) + 1
    return None


def recommended_factor(finding: Finding, default: float) -> float:
    """The LR factor to apply: the policy's, or the finding's own when it asks for a larger cut
    (a finding that measured the rate 10x too high recommends 0.1)."""
    rec = finding.recommendation.intervention or {}
    for key in ("lr_factor", "factor"):
        value = rec.get(key)
        if isinstance(value, int | float) and 0 < value < default:
            return float(value)
    return default


def apply(interventions: Iterable[Intervention], control: Control) -> None:
    """Set the `Control` flags that carry out the interventions (the adapter acts on them)."""
    for i in interventions:
        if i.action == "scale_lr":
            control.scale_lr(float(i.params["factor"]), i.reason)
        elif i.action == "rollback":
            control.rollback_to = f"before:{i.params['before_step']}"
            control.reason = i.reason
        elif i.action == "restore_best":
            control.restore_best = True
            control.restore_criterion = dict(i.params)
            control.reason = i.reason
        elif i.action == "stop":
            control.request_stop(i.reason)
        elif i.action == "save_checkpoint":
            control.save_checkpoint = True
        control.pending.append(i.to_dict())
        control.history.append(i.to_dict())
