"""Generalisation over evaluations: overfitting (Prechelt's generalisation loss) and plateaus.

Both read the primary evaluation metric (`eval/loss`, else the first metric to maximise) at the
evaluations only, so sparse and irregular evaluation schedules cost nothing and per-step noise
never reaches them.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from typing import Any, ClassVar

from ..values import fmt
from .detector import EVAL, LOSS, Signal, pct, resolved
from .evalnoise import Wobble, change_sigma, score_scale, worsening
from .findings import Kind, Recommendation, Severity
from .learning import STUCK, UPDATE_LOW
from .state import EvalTrack, State
from .stats import median

PATIENCE = 2  # evaluations after the best that must all be worse
GL_MIN = 0.05  # generalisation loss (relative rise of a loss over its best) to flag: 5%
GL_CRITICAL = 0.5  # ... and to call critical
EARLY_GL = 0.015  # a loss up 1.5%, rising at every evaluation, when the task metric also fell
UP_EVALS = 3  # with no task metric: rising at each of this many evaluations (1.5% in all)
UP_EVALS_LM = 2  # ... for a language model (its loss averages many tokens) ...
UP_GL_LM = 0.01  # ... by 1% in all
DROP_MIN = 0.02  # for a metric to maximise on a 0-1 scale: an absolute drop of 2 points
INTERVAL_POINTS = 64  # most recent train-loss points kept between two evaluations
TRAIN_MIN_FALL = 0.05  # train loss level must have fallen 5% since the best evaluation
MEMORISED = 0.05  # ... unless it is already this small (x the no-learning level): memorised
TRAIN_STABLE = 1.25  # recent train level at most this x its best: training is not unstable
FITTED = 0.8  # ... and be below this x the no-learning level (the model fits its training data)
TRAIN_UPTICK = 0.05  # train level over one interval 5% above the interval before: it got worse
# Evaluation rises while the model is unstable or not learning belong to those findings.
_NOT_OVERFITTING = frozenset(
    {
        Kind.DIVERGENCE,
        Kind.EXPLODING_GRADIENTS,
        Kind.LR_TOO_HIGH,
        Kind.LR_TOO_LOW,
        Kind.UNDERFITTING,
        Kind.VANISHING_GRADIENTS,
    }
)
TASK_CONFIRM = 0.03  # a task metric 3 points below its best confirms a rising eval loss
FIRST_PASS = 1.0  # train/epoch up to this: the model has not seen any example twice
GL_SUSTAINED = 0.10  # each of the last PATIENCE evaluations this far above the best: a warning
TASK_GAIN = 0.01  # the task metric now a point above its value at the loss's best: improving
NOISE_Z = 2.0  # a loss rise the task metric does not confirm must clear 2 sigmas of its noise

PLATEAU_EVALS = 5  # evaluations without a 1% improvement of the best ...
PLATEAU_SPAN = 0.15  # ... spanning at least this fraction of the steps so far
PLATEAU_EPS = 0.01  # improvement smaller than 1% (relative) is no improvement
RECOVERING = 0.02  # the latest evaluation 2% better than the window's worst: still moving
CONVERGED = 0.1  # train level below this x reference: converged, not stalled
SATURATED = 0.99  # a 0-1 task metric this high cannot improve much: not a plateau
LR_DECAYED = 0.05  # an LR below this fraction of its peak has all but stopped the weights


def _threshold(ev: EvalTrack) -> float:
    return DROP_MIN if ev.higher else GL_MIN


class OverfittingDetector:
    """Evaluation metric worse than its best for `PATIENCE` evaluations while train loss falls.

    Every evaluation after the best must be worse than the metric's own recent wobble (rises
    seen to come back), and the train loss must be lower than at the best both over the
    interval and right at the evaluation; a rise the task metric does not confirm must also
    clear `NOISE_Z` sigmas of the metric's evaluation-to-evaluation noise.
    """

    kinds: ClassVar[tuple[Kind, ...]] = (Kind.OVERFITTING,)
    channels: ClassVar[int] = EVAL | LOSS

    def __init__(self) -> None:
        # Train loss between evaluations: its median is "the train loss at" an evaluation, so
        # the comparison is not blurred by a window reaching back past the previous one.
        self.interval: deque[float] = deque(maxlen=INTERVAL_POINTS)
        self.train_at: dict[int, float] = {}  # eval step -> train level over the interval
        self.train_best = math.inf  # lowest of those levels
        # eval step -> train level right at the evaluation (median of the last 7 points): a
        # train loss that jumps with the eval loss is instability, whatever the interval says
        self.level_at: dict[int, float] = {}
        self.wobble = Wobble()  # the primary eval metric's recovered excursions
        self.metric = ""

    def check(self, step: int, st: State, touched: int) -> list[Signal]:
        if touched & LOSS and st.loss.last_step == step and st.loss.finite:
            self.interval.append(st.loss.last)
        if not touched & EVAL:
            return []
        ev = st.primary_eval()
        if ev is None or not ev.steps or ev.steps[-1] != step:
            return []
        if len(self.interval):
            self.train_at[step] = level = median(self.interval)
            self.train_best = min(self.train_best, level)
            self.interval.clear()
        if st.loss.level == st.loss.level:
            self.level_at[step] = st.loss.level
        self.wobble.add(ev)
        if self.metric and (ev.since_best == 0 or ev.key != self.metric):
            metric, self.metric = self.metric, ""
            return [resolved(Kind.OVERFITTING, metric)]
        found = self._measure(st, ev)
        if found is None:
            return []
        self.metric = ev.key
        return [self._signal(ev, found)]

    def _measure(self, st: State, ev: EvalTrack) -> dict[str, Any] | None:
        k = ev.since_best
        if k < PATIENCE or ev.best != ev.best or st.active & _NOT_OVERFITTING:
            return None
        if st.huge_updates():
            return None  # every step overshoots: eval rises from instability (LR too high)
        if st.epoch == st.epoch and st.epoch <= FIRST_PASS:
            # within the first pass over the training data no example has been seen twice:
            # a held-out loss that rises now is not memorisation (an LR still too high after a
            # cut swings it: MiniLM at 1e-3, bench/interventions c-lr1e-2 seed 30, stopped at
            # epoch 0.3 as "overfitting" and lost 5 points)
            return None
        after = ev.values[ev.best_index + 1 :]
        gl = worsening(ev, ev.last)
        thr = _threshold(ev)
        if gl != gl:
            return None
        # Persistence judged against the metric's own wobble: each of the last PATIENCE
        # evaluations higher than any rise that came back recently (0 on a smooth curve).
        lowest = min(worsening(ev, v) for v in after[-PATIENCE:])
        if lowest <= self.wobble.bar:
            return None
        task = st.task_eval()
        task_drop = None
        if task is not None and task is not ev and len(task) and task.best == task.best:
            task_drop = worsening(task, task.last)
        confirmed = task_drop is None or task_drop >= TASK_CONFIRM
        sigma = None
        if gl >= thr:
            if lowest < thr / 5:
                return None  # one high evaluation after a flat one: noise until it persists
            if not confirmed:
                # Only the loss rises while the task metric holds: noise or overconfidence
                # until every one of PATIENCE + 1 evaluations is clearly above the best, and
                # the last PATIENCE by NOISE_Z sigmas of the loss's own noise (the best is
                # the luckiest of noisy draws; a lucky dip makes every later value look high).
                need = PATIENCE if self._memorised(st, ev) else PATIENCE + 1
                tail = after[-need:]
                if k < need or min(worsening(ev, v) for v in tail) < thr:
                    return None
                sigma = change_sigma(ev)
                if sigma is not None and lowest < NOISE_Z * sigma:
                    return None
        elif not self._early(st, ev, k, gl, task, task_drop is not None and confirmed):
            return None
        train_change = self._train_change(st, ev)
        if train_change is False:
            return None
        return {
            "gl": gl,
            "k": k,
            "train_change": train_change if isinstance(train_change, float) else None,
            "task": task,
            "task_drop": task_drop,
            "confirmed": confirmed,
            "wobble": self.wobble.bar,
            "noise": sigma,
        }

    def _memorised(self, st: State, ev: EvalTrack) -> bool:
        """The train loss over the last interval is below `MEMORISED` x the no-learning level."""
        now, ref = self.train_at.get(ev.steps[-1]), st.reference_loss()
        return now is not None and ref is not None and now <= MEMORISED * ref

    @staticmethod
    def _early(
        st: State, ev: EvalTrack, k: int, gl: float, task: EvalTrack | None, task_fell: bool
    ) -> bool:
        """Below 5% but consistent: the loss rose at each of the last PATIENCE evaluations and
        the task metric (accuracy, F1) fell clearly too. With no task metric, a rise at each
        of the last UP_EVALS evaluations (Prechelt's UP_s) — two for a language model, whose
        loss averages many tokens and barely jitters, three otherwise."""
        if task is not None and task is not ev:
            return gl >= EARLY_GL and task_fell and _rising(ev.values[-PATIENCE - 1 :])
        lm = st.context.is_language_model
        ups, need = (UP_EVALS_LM, UP_GL_LM) if lm else (UP_EVALS, EARLY_GL)
        return gl >= need and k >= ups and _rising(ev.values[-ups - 1 :])

    def _train_change(self, st: State, ev: EvalTrack) -> float | bool | None:
        """The train loss's relative change since the best evaluation; False when training
        does not look like a model fitting its data ever better (then it is not overfitting)."""
        train_best = self.train_at.get(ev.best_step)
        train_now = self.train_at.get(ev.steps[-1])
        ref = st.reference_loss()
        if train_now is not None and ref is not None and train_now >= FITTED * ref:
            # the model does not fit its training data yet (judged even when the best
            # evaluation has no train loss of its own, e.g. the untrained model at step 0)
            return False
        if train_best is None or train_now is None or train_best <= 0:
            return None  # no train loss logged: judge by the evaluations alone
        change = train_now / train_best - 1.0
        memorised = ref is not None and train_now <= MEMORISED * ref
        if change > -TRAIN_MIN_FALL and not memorised:
            return False  # training is not improving: not a generalisation problem
        if train_now > TRAIN_STABLE * self.train_best:
            return False  # training is unstable: eval rises with it, not from overfitting
        at_best, at_now = self.level_at.get(ev.best_step), self.level_at.get(ev.steps[-1])
        if at_best is not None and at_now is not None and at_now > at_best:
            return False  # the train loss jumped with the eval loss: instability, not memorising
        # Overfitting fits the training data ever better while held-out data gets worse. A
        # train loss that also rose between two of the evaluations the evidence rests on (the
        # last PATIENCE since the best, and the one before them) means the whole model got
        # worse for a while (an SGD-momentum bounce): instability that may come back, not
        # memorising. Only those: an old uptick of a noisy loss must not veto a long rise.
        first = max(ev.best_index, len(ev.steps) - PATIENCE - 1)
        recent = [self.train_at[s] for s in ev.steps[first:] if s in self.train_at]
        if any(b > a * (1.0 + TRAIN_UPTICK) for a, b in itertools.pairwise(recent)):
            return False
        return change

    def _signal(self, ev: EvalTrack, f: dict[str, Any]) -> Signal:
        gl: float = f["gl"]
        task: EvalTrack | None = f["task"]
        task_drop: float | None = f["task_drop"]
        holds = not f["confirmed"]
        sustained = (
            not ev.higher and min(worsening(ev, v) for v in ev.values[-PATIENCE:]) >= GL_SUSTAINED
        )
        gain = _task_gain(task, ev.best_step) if task is not None and task is not ev else None
        if holds and not sustained:
            sev = Severity.INFO  # a small rise of the loss only (noise or overconfidence)
        elif holds:
            # the loss is >= 10% above its best at each of the last evaluations while the
            # training loss falls: a warning whatever the task metric does (real fine-tunes
            # often keep their accuracy while the held-out loss climbs 50-100%)
            sev = Severity.WARNING
        elif gl >= (GL_CRITICAL if not ev.higher else 5 * DROP_MIN):
            sev = Severity.CRITICAL
        else:
            sev = Severity.WARNING
        moved = f"rose {pct(gl)}" if not ev.higher else f"fell {gl * 100:.1f} points"
        train = (
            f" while train/loss fell {pct(-f['train_change'])}"
            if f["train_change"] is not None and f["train_change"] < 0
            else (" while train/loss held" if f["train_change"] is not None else "")
        )
        task_txt = ""
        if task is not None and task_drop is not None:
            if gain is not None and gain > TASK_GAIN:
                task_txt = (
                    f" while {task.key} still improves ({fmt(task.last)} now, up "
                    f"{gain * 100:.1f} points since step {ev.best_step})"
                )
            elif holds:
                task_txt = (
                    f" ({task.key} holds at {fmt(task.last)}: no gain since step {ev.best_step})"
                )
            else:
                task_txt = f" and {task.key} fell to {fmt(task.last)} from {fmt(task.best)}"
        msg = (
            f"{ev.key} {moved} over {f['k']} evaluations since step {ev.best_step} "
            f"({fmt(ev.best)} -> {fmt(ev.last)}){train}{task_txt}: overfitting."
        )
        if task is not None and gain is not None and gain > TASK_GAIN:
            # over-confident but getting more answers right: stopping would cost task accuracy
            rec = Recommendation(
                f"{task.key} is still improving, so keep training: the model grows over-confident "
                "(calibrate with label smoothing or temperature scaling) and keep two checkpoints, "
                f"the best {ev.key} (step {ev.best_step}) and the best {task.key}.",
                {"action": "keep_training", "metric": task.key},
            )
        elif task is not None and task is not ev and task_drop is not None:
            rec = Recommendation(
                f"No gain in {task.key} since step {ev.best_step}: further steps waste compute "
                f"and worsen calibration. Stop and restore the checkpoint at step {ev.best_step}; "
                "next time add weight decay, dropout or data.",
                {"action": "restore_best", "metric": ev.key, "step": ev.best_step},
            )
        else:
            rec = Recommendation(
                f"Stop and restore the checkpoint at step {ev.best_step}; or add weight decay, "
                "dropout or data.",
                {"action": "restore_best", "metric": ev.key, "step": ev.best_step},
            )
        evidence = {
            "metric": ev.key,
            "best": ev.best,
            "best_step": ev.best_step,
            "value": ev.last,
            "step": ev.steps[-1],
            "evaluations_since_best": f["k"],
            "generalization_loss": gl,
            "train_loss_change": f["train_change"],
            "task_metric": task.key if task is not None else None,
            "task_drop": task_drop,
            "task_gain_since_best": gain,
            "wobble": f["wobble"],
            "noise": f["noise"],
            "recent": list(zip(ev.steps[-PATIENCE - 1 :], ev.values[-PATIENCE - 1 :], strict=True)),
        }
        return Signal(Kind.OVERFITTING, ev.key, sev, msg, evidence, rec, headline=gl)

    def rewind(self, step: int, st: State) -> None:
        self.train_at = {s: v for s, v in self.train_at.items() if s < step}
        self.train_best = min(self.train_at.values(), default=math.inf)
        self.level_at = {s: v for s, v in self.level_at.items() if s < step}
        self.interval.clear()
        ev = st.primary_eval()  # already rewound by the monitor
        if ev is not None:
            self.wobble.rebuild(ev)
        else:
            self.wobble = Wobble()
        # `metric` stays: the next evaluation re-signals or resolves whatever is still active

    def unchecked(self, st: State) -> dict[Kind, str]:
        ev = st.primary_eval()
        if ev is None:
            return {
                Kind.OVERFITTING: "no eval/* quality metric (eval/loss, eval/accuracy, ...) logged"
            }
        if len(ev) < PATIENCE + 2:
            return {
                Kind.OVERFITTING: f"only {len(ev)} evaluations of {ev.key}; overfitting needs "
                f"at least {PATIENCE + 2}"
            }
        return {}


class PlateauDetector:
    """No improvement of the primary evaluation metric over several evaluations, not converged."""

    kinds: ClassVar[tuple[Kind, ...]] = (Kind.PLATEAU,)
    channels: ClassVar[int] = EVAL

    def __init__(self) -> None:
        self.metric = ""
        self.since = -1

    def check(self, step: int, st: State, touched: int) -> list[Signal]:
        ev = st.primary_eval()
        if ev is None or not ev.steps or ev.steps[-1] != step:
            return []
        found = self._measure(st, ev)
        if found is None:
            if self.metric:
                metric, self.metric = self.metric, ""
                return [resolved(Kind.PLATEAU, metric)]
            return []
        if not self.metric:
            self.metric, self.since = ev.key, step
        return [self._signal(st, ev, found)]

    def _measure(self, st: State, ev: EvalTrack) -> dict[str, Any] | None:
        n = len(ev)
        if n <= PLATEAU_EVALS or Kind.OVERFITTING in st.active:
            return None
        start = n - 1 - PLATEAU_EVALS  # the evaluation the window is measured from
        span = ev.steps[-1] - ev.steps[start]
        if span < PLATEAU_SPAN * max(ev.steps[-1] - st.segment_start, 1):
            return None
        before = _best(ev, ev.values[: start + 1])
        window = _best(ev, ev.values[start + 1 :])
        if before is None or window is None:
            return None
        gain = (window - before) if ev.higher else (before - window)
        rel = gain / abs(before) if before else gain
        if rel >= PLATEAU_EPS or worsening(ev, ev.last) >= _threshold(ev):
            return None  # still improving, or getting worse (overfitting's business)
        values = [v for v in ev.values[start + 1 :] if v - v == 0.0]
        worst = min(values) if ev.higher else max(values)
        if (
            worst
            and ((ev.last - worst) if ev.higher else (worst - ev.last)) / abs(worst) >= RECOVERING
        ):
            return None  # climbing back after a setback (a spike): progress, not a stall
        task = st.task_eval()
        if task is not None and task.best == task.best:
            scale = 100.0 if task.best > 1.5 else 1.0
            if task.best / scale >= SATURATED:
                return None
        ref = st.reference_loss()
        loss = st.loss
        if ref is not None and len(loss.long):
            level = loss.long.median()
            if level < CONVERGED * ref or level >= STUCK * ref:
                return None  # converged, or never learned (LearningDetector's business)
        return {
            "before": before,
            "window": window,
            "rel": rel,
            "span": span,
            "start": ev.steps[start],
        }

    def _signal(self, st: State, ev: EvalTrack, f: dict[str, Any]) -> Signal:
        msg = (
            f"{ev.key} has not improved on {fmt(f['before'])} (step {ev.best_step}) over the "
            f"last {PLATEAU_EVALS} evaluations ({f['span']} steps, best change "
            f"{pct(f['rel'])}) and train/loss is not converging: plateau."
        )
        rec = Recommendation(
            "Reduce the learning rate (x0.3) to settle into the minimum, or stop if the metric "
            "is good enough; a larger model may be needed if it persists.",
            {"action": "scale_lr", "factor": 0.3},
        )
        still = _barely_moving(st)
        if still:
            # the weights barely move already (a schedule decayed to ~0, tiny updates): a lower
            # LR cannot settle anything, it only makes the stall permanent
            msg = msg[: -len("plateau.")] + f"plateau, and {still}."
            rec = Recommendation(
                f"A lower learning rate cannot help ({still}): stop and keep the checkpoint at "
                f"step {ev.best_step} if {ev.key} is good enough; else restart from it with a "
                "slower decay or a higher learning rate.",
                {"action": "restore_best", "metric": ev.key, "step": ev.best_step},
            )
        evidence = {
            "metric": ev.key,
            "best": ev.best,
            "best_step": ev.best_step,
            "window_start_step": f["start"],
            "evaluations": PLATEAU_EVALS,
            "span_steps": f["span"],
            "relative_gain": f["rel"],
            "since_step": self.since,
            "train_loss_level": st.loss.long.median() if len(st.loss.long) else None,
        }
        return Signal(Kind.PLATEAU, ev.key, Severity.WARNING, msg, evidence, rec, headline=1.0)

    def rewind(self, step: int, st: State) -> None:
        if self.since >= step:
            self.metric, self.since = "", -1

    def unchecked(self, st: State) -> dict[Kind, str]:
        ev = st.primary_eval()
        if ev is None:
            return {Kind.PLATEAU: "no eval/* quality metric logged"}
        if len(ev) <= PLATEAU_EVALS:
            return {
                Kind.PLATEAU: f"only {len(ev)} evaluations of {ev.key}; a plateau needs more than "
                f"{PLATEAU_EVALS}"
            }
        return {}


def _task_gain(task: EvalTrack, since: int) -> float | None:
    """How much better the task metric is now (the better of its last PATIENCE values) than at
    step `since` (0-1 scale; None without a value at or before `since` and one after it)."""
    before = [v for s, v in zip(task.steps, task.values, strict=True) if s <= since and v == v]
    after = [v for s, v in zip(task.steps, task.values, strict=True) if s > since and v == v]
    if not before or not after:
        return None
    recent = after[-PATIENCE:]
    best_after = max(recent) if task.higher else min(recent)
    gain = (best_after - before[-1]) if task.higher else (before[-1] - best_after)
    return gain / score_scale(max(abs(best_after), abs(before[-1])))


def _barely_moving(st: State) -> str:
    """Why the weights barely move now ("" when they do): tiny update/weight ratios, or an LR
    decayed below `LR_DECAYED` of its peak."""
    upd = st.update.long
    if len(upd) >= 3 and upd.median() <= UPDATE_LOW:
        return f"the weights move by only {fmt(upd.median())} of their norm per step"
    lr = st.lr
    if lr.n >= 2 and lr.peak > 0 and lr.last < LR_DECAYED * lr.peak:
        return (
            f"the learning rate has decayed to {fmt(lr.last)}, "
            f"{pct(lr.last / lr.peak)} of its peak {fmt(lr.peak)}"
        )
    return ""


def _rising(values: list[float]) -> bool:
    """Each value higher than the one before."""
    return all(b > a for a, b in itertools.pairwise(values))


def _best(ev: EvalTrack, values: list[float]) -> float | None:
    finite = [v for v in values if v - v == 0.0]
    if not finite:
        return None
    return max(finite) if ev.higher else min(finite)
