"""`Monitor`: runs the detectors on every log call and keeps each finding's lifecycle.

Online it is the store writer's observer (`Run(..., observer=Monitor(ctx))`): `observe()` is
called on the writer thread for every `log()` call, in order, and the finding events it returns
are committed with the points. Offline, `engine.replay` drives the very same object over old
logs, so both give the same findings for the same points.

A finding is *raised* once (at the step its evidence first sufficed), *updated* only when its
severity changes, its headline number moves by half or more, or it has persisted twice as long
as when last stored, and *resolved* when it ends or a rollback abandons the points behind it.

>>> m = Monitor()
>>> events = [e for s in range(3) for e in m.observe(s, 0.0, [("train/loss", float("nan"))])]
>>> [(e.kind, e.data["state"]) for e in events]
[('divergence', 'raised')]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..records import EventRecord
from .context import Context
from .detector import (
    EPOCH,
    EVAL,
    GRAD,
    LAYER,
    LOSS,
    LR,
    PROBE,
    RETAIN,
    UPDATE,
    Detector,
    Signal,
)
from .evalnoise import Wobble
from .findings import (
    CONSEQUENCE_KINDS,
    RAISED,
    RESOLVED,
    ROOT_KINDS,
    UPDATED,
    Finding,
    Kind,
    Recommendation,
    Severity,
    finding_id,
)
from .forgetting import ForgettingDetector
from .generalization import OverfittingDetector, PlateauDetector
from .gradients import ExplodingDetector, VanishingDetector
from .learning import LearningDetector
from .numeric import DivergenceDetector, SpikeDetector
from .persist import dump, load, register
from .state import EvalTrack, LRTrack, State, Track, is_quality_metric
from .stats import Baseline, Window

OnFinding = Callable[[Finding, str], None]
_Adder = Callable[[int, float], None]

STATE_VERSION = 3  # 3: tracks keep their peaks, the state its root causes
HEADLINE_CHANGE = 0.5  # a relative change of the headline number that is worth an update
PERSIST_STEPS = 50  # a finding that persisted twice as long (and >= 2 x this) is stored again


def default_detectors() -> list[Detector]:
    """One instance of every detector, in the order they run (causes before symptoms)."""
    return [
        DivergenceDetector(),
        SpikeDetector(),
        ExplodingDetector(),
        VanishingDetector(),
        LearningDetector(),
        OverfittingDetector(),
        PlateauDetector(),
        ForgettingDetector(),
    ]


@dataclass
class _Active:
    finding: Finding  # as last stored
    headline: float  # headline number when last stored
    seen: int  # last step at which the condition held


class Monitor:
    """The online monitor: an `Observer` for the store writer (see module docstring).

    `on_finding(finding, state)` is called for every stored change ("raised", "updated",
    "resolved"), e.g. by the policy to turn findings into interventions on `run.control`.
    """

    def __init__(
        self,
        context: Context | None = None,
        on_finding: OnFinding | None = None,
        *,
        detectors: Sequence[Detector] | None = None,
    ) -> None:
        self.context = context or Context()
        self.state = State(self.context)
        self.on_finding = on_finding
        self.detectors: list[Detector] = (
            list(detectors) if detectors is not None else default_detectors()
        )
        self._by_mask: dict[int, list[Callable[..., list[Signal]]]] = {}  # channels -> checks
        self._routes: dict[str, tuple[int, _Adder | None]] = {}
        self._active: dict[tuple[Kind, str], _Active] = {}
        self._all: dict[str, Finding] = {}
        self._last_step: int | None = None
        self.errors: list[str] = []  # detectors disabled after raising, with the error
        self._pending_links: list[tuple[str, Kind, int]] = []  # roots raised, to link symptoms

    # -- the observer ------------------------------------------------------------------------
    def observe(self, step: int, wall: float, values: list[tuple[str, float]]) -> list[EventRecord]:
        """Take one log call; return the finding events it caused (usually none)."""
        st = self.state
        out: list[EventRecord] = []
        if self._last_step is not None and step < self._last_step:
            out.extend(self._rewind(step, wall))
        self._last_step = step
        st.step = step
        touched = 0
        routes = self._routes
        for key, value in values:
            route = routes.get(key)
            if route is None:
                route = self._route(key)
            channel, add = route
            if add is not None:
                add(step, value)
                touched |= channel
        if not touched:
            return out
        if st.nonfinite_step < 0 and (st.loss.nonfinite or st.grad.nonfinite):
            st.nonfinite_step = step
        checks = self._by_mask.get(touched)
        if checks is None:
            checks = self._by_mask[touched] = [
                d.check for d in self.detectors if d.channels & touched
            ]
        for check in checks:
            try:
                signals = check(step, st, touched)
            except Exception as exc:  # a detector bug must never stop training or a replay
                out.append(self._disable(check, step, wall, exc))
                continue
            if signals:
                out.extend(self._apply(step, wall, signals))
        return out

    def _disable(
        self, check: Callable[..., Any], step: int, wall: float, exc: Exception
    ) -> EventRecord:
        """Take a detector that raised out of this run; the note says so once, with the error."""
        det = getattr(check, "__self__", None)
        self.detectors = [d for d in self.detectors if d is not det]
        self._by_mask = {}
        name = type(det).__name__ if det is not None else repr(check)
        self.errors.append(f"{name} failed at step {step} ({type(exc).__name__}: {exc})")
        return EventRecord(
            "note",
            "detector_error",
            "warning",
            f"{name} raised {type(exc).__name__} at step {step}: {exc}; it is disabled for the "
            "rest of this run (the other detectors go on). Please report this as a tunescope bug.",
            {"detector": name, "error": f"{type(exc).__name__}: {exc}", "step": step},
            step,
            None,
            wall,
        )

    def finish(self, wall: float = 0.0) -> list[EventRecord]:
        """Store the last step of every finding still active (call once, at the end).

        Returns `updated` events for findings seen after their last stored event; offline
        `replay` calls it at the end of the history, and so should the online wiring when
        the run finishes, so both store the same `last_step`.
        """
        out = []
        for act in self._active.values():
            if act.seen > act.finding.last_step:
                f = act.finding.replace(last_step=act.seen, state=UPDATED)
                out.append(self._store(f, UPDATED, act.seen, wall, act))
        return out

    # -- results -------------------------------------------------------------------------------
    def findings(self) -> list[Finding]:
        """Every finding so far (active and resolved), as last stored, by first step."""
        return sorted(self._all.values(), key=lambda f: (f.step, f.kind, f.id))

    def active(self) -> list[Finding]:
        """Findings that still hold."""
        return [a.finding for a in self._active.values()]

    def unchecked(self) -> dict[Kind, str]:
        """Kinds that could not be checked on what was logged, with the reason."""
        out: dict[Kind, str] = {}
        for det in self.detectors:
            for kind, why in det.unchecked(self.state).items():
                out.setdefault(kind, why)
        return out

    def notes(self) -> list[str]:
        """What missing context weakened (not disabled) some checks, for the report."""
        st = self.state
        out = []
        if st.loss.n:
            chance, source = st.chance()
            if chance is None:
                why = (
                    "a language model has no chance level"
                    if st.context.is_language_model
                    else (
                        "the number of classes is unknown (pass --num-classes or set it in the config)"
                    )
                )
                out.append(
                    f"{why}: underfitting, LR-collapse and vanishing-gradient checks compare the "
                    "train loss with its initial value instead of ln C"
                )
            elif source == "variance":
                out.append(
                    f"a regression head: the no-learning level is the target variance {chance:.4g}, "
                    "inferred from eval/loss / (1 - eval/r2)"
                )
            elif source == "inferred":
                pre, first = st.pre_training_eval(), st.loss.first
                if pre is not None and st.context.chance_loss(pre)[0] == chance:
                    what = f"eval/loss before training {pre:.4g}"
                elif first is not None and st.context.chance_loss(first)[0] == chance:
                    what = f"first train loss {first:.4g}"
                else:
                    what = f"initial train loss {st.loss.initial:.4g}"
                out.append(
                    f"the number of classes was inferred as {round(math.exp(chance))} from the "
                    f"{what} (= ln C)"
                )
            if st.lr.n:
                out.append(
                    f"the learning rate was read from train/lr: peak {st.lr.peak:.3g} at step "
                    f"{st.lr.peak_step}, {st.lr.last:.3g} at the end"
                )
            if not st.context.max_steps and st.epoch == st.epoch:
                out.append(
                    f"the training budget was taken as {st.context.epochs or 3.0:g} epochs "
                    f"({'the config' if st.context.epochs else 'HF Trainer default'}) from "
                    "train/epoch (pass --max-steps to set it)"
                )
            b = st.blowup() if st.roots else None
            if b is not None:
                out.append(
                    f"{b.get('metric')} blew up at step {b.get('step')} ({b.get('rule')}): "
                    "findings that follow from it name their root cause (caused_by)"
                )
            if self.errors:
                out.append("detectors disabled after an internal error: " + "; ".join(self.errors))
            if st.budget_used(st.step) is None:
                out.append(
                    "the training budget is unknown (pass --max-steps): 'not learning' is judged "
                    "after 100 train-loss points instead of 25% of the budget"
                )
            if not st.update.n:
                out.append(
                    "no train/update_ratio logged (run.watch() logs it): a learning rate too high "
                    "or too low is told from underfitting by the loss curve alone"
                )
        return out

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the monitor knows, as JSON-able data (the `on_finding` hook excluded).

        Save it with a checkpoint; `load_state_dict` on a fresh Monitor continues exactly
        where this one stopped (a resumed run keeps its baselines and open findings).
        """
        return {
            "version": STATE_VERSION,
            "state": dump(self.state),
            "detectors": dump(self.detectors),
            "active": dump(self._active),
            "all": dump(self._all),
            "last_step": self._last_step,
        }

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Restore `state_dict()` output (from this version of tunescope)."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(
                f"monitor state version {data.get('version')!r} is not {STATE_VERSION}; "
                "start a fresh Monitor (or replay the run's history with `diagnose`)"
            )
        self.state = load(data["state"])
        self.context = self.state.context
        self.detectors = load(data["detectors"])
        self._by_mask = {}
        self._active = load(data["active"])
        self._all = load(data["all"])
        self._last_step = data["last_step"]
        self._routes = {}

    # -- routing -------------------------------------------------------------------------------
    def _route(self, key: str) -> tuple[int, _Adder | None]:
        st = self.state
        st.seen.add(key)
        st.reconsider_chance()
        route: tuple[int, _Adder | None] = (0, None)
        if key == "train/loss":
            route = (LOSS, st.loss.add)
        elif key == "train/grad_norm":
            route = (GRAD, st.grad.add)
        elif key.startswith("train/grad_norm/"):
            track = st.layers.get(key) or Track(key, long=False, eager=False)
            st.layers[key] = track
            route = (LAYER, track.add)
        elif key == "train/lr":
            route = (LR, st.lr.add)
        elif key == "train/update_ratio":
            route = (UPDATE, st.update.add)
        elif key == "train/epoch":
            route = (EPOCH, self._set_epoch)
        elif key.startswith("probe/"):
            route = (PROBE, self._eval_track(st.probes, key).add)
        elif is_quality_metric(key):
            if key.startswith("eval/"):
                route = (EVAL, self._eval_track(st.evals, key).add)
            elif key.startswith("retain/"):
                route = (RETAIN, self._eval_track(st.retain, key).add)
        self._routes[key] = route
        return route

    @staticmethod
    def _eval_track(tracks: dict[str, EvalTrack], key: str) -> EvalTrack:
        track = tracks.get(key) or EvalTrack.for_key(key)
        tracks[key] = track
        return track

    def _set_epoch(self, step: int, value: float) -> None:
        self.state.epoch = value

    # -- lifecycle -----------------------------------------------------------------------------
    def _apply(self, step: int, wall: float, signals: list[Signal]) -> list[EventRecord]:
        out = []
        for sig in signals:
            key = (sig.kind, sig.metric)
            act = self._active.get(key)
            if sig.severity is None:
                if act is not None:
                    out.append(self._resolve(key, act, step, wall))
                continue
            if act is None:
                out.append(self._raise(sig, step, wall))
                if self._pending_links:
                    out.extend(self._link(step, wall))
                continue
            act.seen = step
            f = act.finding
            h0 = act.headline
            if (
                sig.severity != f.severity
                or abs(sig.headline - h0) >= HEADLINE_CHANGE * max(abs(h0), 1e-12)
                or step - f.step >= 2 * max(f.last_step - f.step, PERSIST_STEPS)
            ):
                new = f.replace(
                    severity=sig.severity,
                    message=sig.message,
                    evidence=sig.evidence,
                    recommendation=sig.recommendation,
                    last_step=step,
                    state=UPDATED,
                )
                if f.caused_by:
                    new = _consequence(new, self._root(f.caused_by))
                act.headline = sig.headline
                out.append(self._store(new, UPDATED, step, wall, act))
        return out

    def _raise(self, sig: Signal, step: int, wall: float) -> EventRecord:
        assert sig.severity is not None
        fid = finding_id(sig.kind, sig.metric, step)
        n = 2
        while fid in self._all:
            fid = f"{finding_id(sig.kind, sig.metric, step)}#{n}"
            n += 1
        f = Finding(
            kind=sig.kind,
            step=step,
            severity=sig.severity,
            message=sig.message,
            evidence=sig.evidence,
            recommendation=sig.recommendation,
            id=fid,
            last_step=step,
            state=RAISED,
            metric=sig.metric,
        )
        st = self.state
        root = st.roots[-1] if st.roots and sig.kind in CONSEQUENCE_KINDS else None
        if root is not None:
            f = _consequence(f, root)
        act = _Active(f, sig.headline, step)
        self._active[(sig.kind, sig.metric)] = act
        st.active.add(sig.kind)
        st.raised.add(sig.kind)
        out = self._store(f, RAISED, step, wall, act)
        if sig.kind in ROOT_KINDS:
            st.roots.append((fid, sig.kind, step))
            self._pending_links.append((fid, sig.kind, step))
        return out

    def _link(self, step: int, wall: float) -> list[EventRecord]:
        """Symptoms raised before their root (dead lower layers seen before the loss was judged
        stuck): once the root is raised, they name it and lose their own advice."""
        out = []
        while self._pending_links:
            root = self._pending_links.pop(0)
            for act in self._active.values():
                f = act.finding
                if f.kind in CONSEQUENCE_KINDS and not f.caused_by and f.id != root[0]:
                    new = _consequence(f, root).replace(last_step=max(step, f.last_step))
                    out.append(self._store(new, UPDATED, step, wall, act))
        return out

    def _resolve(self, key: tuple[Kind, str], act: _Active, step: int, wall: float) -> EventRecord:
        del self._active[key]
        if not any(k == key[0] for k, _ in self._active):
            self.state.active.discard(key[0])
        f = act.finding.replace(last_step=max(act.seen, act.finding.last_step), state=RESOLVED)
        return self._store(f, RESOLVED, step, wall, act)

    def _store(self, f: Finding, state: str, step: int, wall: float, act: _Active) -> EventRecord:
        act.finding = f
        self._all[f.id] = f
        if self.on_finding is not None:
            self.on_finding(f, state)
        return EventRecord(
            "finding",
            str(f.kind),
            str(f.severity),
            f.message,
            f.event_data(state),
            f.step if state == RAISED else step,
            f.id,
            wall,
        )

    def _rewind(self, step: int, wall: float) -> list[EventRecord]:
        """A step went back (rollback, resume): a new segment begins at `step`."""
        st = self.state
        st.segment += 1
        st.segment_start = step
        for track in (st.loss, st.grad, st.update, *st.layers.values()):
            track.rewind(step)
        for group in (st.evals, st.retain, st.probes):
            for ev in group.values():
                ev.rewind(step)
        for det in self.detectors:
            det.rewind(step, st)
        st.roots = [r for r in st.roots if r[2] < step]
        if st.nonfinite_step >= step:
            st.nonfinite_step = -1
        # Findings whose evidence lies in the abandoned points end here.
        out = []
        for key, act in list(self._active.items()):
            if act.finding.step >= step:
                out.append(self._resolve(key, act, step, wall))
        return out

    def _root(self, fid: str) -> tuple[str, Kind, int]:
        f = self._all.get(fid)
        return (fid, f.kind, f.step) if f is not None else (fid, Kind.DIVERGENCE, -1)

    def __repr__(self) -> str:
        return f"Monitor(active={[a.finding.id for a in self._active.values()]!r})"


def _consequence(f: Finding, root: tuple[str, Kind, int]) -> Finding:
    """`f` as a symptom of `root`: it names the root, is info, and defers to the root's advice."""
    fid, kind, step = root
    note = f" It follows from {kind} at step {step} ({fid})."
    message = f.message if f.message.endswith(note) else f.message + note
    return f.replace(
        caused_by=fid,
        severity=Severity.INFO,
        message=message,
        recommendation=Recommendation(
            f"A consequence of {kind} at step {step}: act on that finding ({fid}); this one "
            "should go away with it.",
            None,
        ),
    )


register(
    Wobble,
    Window,
    Baseline,
    Track,
    EvalTrack,
    LRTrack,
    State,
    Context,
    Finding,
    Recommendation,
    Kind,
    Severity,
    _Active,
    DivergenceDetector,
    SpikeDetector,
    ExplodingDetector,
    VanishingDetector,
    LearningDetector,
    OverfittingDetector,
    PlateauDetector,
    ForgettingDetector,
)
