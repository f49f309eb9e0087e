"""A run that is not learning, and why: learning rate too high, too low, or underfitting.

One detector decides among the three, because they share the symptom — the training loss sits
at the no-learning level (ln C for C classes, else its initial value) after a fair share of the
budget — and differ in the cause, read from the update/weight ratio (‖Δθ‖/‖θ‖ per step, the
measure DeepDiagnosis uses) and, without it, from the loss's own dynamics:

- *lr_too_high*: the loss fell well below the no-learning level and came back (the collapse of
  a too-high LR on a pretrained model), or it is stuck with huge updates or erratic values;
- *lr_too_low*: it is stuck with tiny updates, or creeps down smoothly and slowly;
- *underfitting*: it is stuck with neither (a data or capacity problem: shuffled labels, frozen
  parameters, a model too small).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..values import fmt
from .detector import EVAL, LOSS, Signal, pct, resolved
from .findings import Kind, Recommendation, Severity
from .gradients import bottom_top
from .state import LONG, RECENT, UPDATE_HIGH, UPDATE_LOW, State  # UPDATE_LOW: LR too low
from .stats import IQR_TO_SIGMA, NOISE_FLOOR, Window, median, times

FAIR_SHARE = 0.25  # fraction of the budget after which "not learning yet" is a finding
MIN_POINTS = 2 * LONG  # loss points needed when the budget is unknown
EVERY = 5  # judge every 5th loss point (levels move slowly; keeps the monitor cheap)
STUCK = 0.9  # long loss level >= this x reference: no meaningful learning
UNSTUCK = 0.8  # ... and below this x reference it is learning again
LEARNED = 0.6  # best level <= this x reference: the model had learned
COLLAPSED = 0.9  # ... and a level back >= this x reference: collapse
UPDATE_ELEVATED = 1e-2  # a plateau with updates this large: the LR is too high to settle
UPDATE_SMALL = 1e-3  # below the healthy ~1e-3: a higher LR is worth trying on a stuck run
UNSTABLE = 1.1  # with large updates, a loss level this x its (long) best: unstable
ERRATIC = 1.5  # stuck with loss points above this x reference in the window: too high
# The per-step spread of the stuck loss (robust sigma of log loss over the last 50 points): a
# too-high LR makes the loss bounce (the suite's stuck LR-too-high runs: 0.11-0.19); a loss
# that sits calmly at chance (<= 0.01: a frozen model whose only trainable bias takes large
# relative steps, shuffled labels) is not moved by its updates, however large.
CALM = 0.02  # below this, large updates are not the cause
BOUNCING = 0.05  # at or above this with updates >= UPDATE_ELEVATED: the LR is too high
WILD = 0.08  # at or above this whatever the update ratio: the LR is too high (MiniLM at LR
# x30 stuck at chance: 0.08-0.10 within 30 steps; shuffled labels, frozen weights: <= 0.05)
ABOVE_CHANCE = 1.05  # a train-loss level this x ln C, not coming down: worse than guessing
SPARSE_POINTS = 12  # logged loss points that suffice for it (Trainer logs every 5-50 steps)
DIED = 1e3  # a bottom-layer gradient norm this many times below its initial level: dead
FALLING = 0.9  # a current level below this x the 50-point level: still coming down fast
FLAT = 0.02  # without a chance level, "stuck" means within 2% of where training started
SPARSE_SPAN = 100  # ... for a stuck verdict, when they span this many steps
DAMAGED = 1.05  # every evaluation since the start this x (sign-aware) the one before training
DAMAGED_EVALS = 2  # ... over at least this many evaluations
CHANCE_MARGIN = 0.1  # eval accuracy within this (absolute) of 1/C (or of its first value): chance


class LearningDetector:
    """Decides between lr_too_high, lr_too_low and underfitting for a run that does not learn."""

    kinds: ClassVar[tuple[Kind, ...]] = (Kind.LR_TOO_HIGH, Kind.LR_TOO_LOW, Kind.UNDERFITTING)
    channels: ClassVar[int] = LOSS | EVAL

    def __init__(self) -> None:
        self.kind: Kind | None = None  # the kind of the active finding
        self.first: dict[str, Any] = {}
        self._tick = 0

    def check(self, step: int, st: State, touched: int) -> list[Signal]:
        if not touched & EVAL:
            self._tick += 1
            if self._tick % EVERY:
                return []
        loss = st.loss
        ref = st.reference_loss()
        if ref is None or ref <= NOISE_FLOOR or loss.level != loss.level:
            return []  # no no-learning level to compare with (a loss at or near 0, or below)
        if self.kind is not None:
            if self._over(st, ref):
                kind, self.kind = self.kind, None
                return [resolved(kind, "train/loss")]
            refined = self._refine(step, st, ref)
            if refined is not None:
                return refined
            return [self._signal(step, st, ref, self.first)]
        if Kind.DIVERGENCE in st.active:
            return []  # the cause is already named
        verdict = (
            self._collapse(st, ref)
            or self._blown_up(st, ref)
            or self._above_chance(st)
            or self._damaged(st)
            or self._killed(st, ref)
            or self._unstable(st)
            or self._stalled_big_steps(st)
            or self._stuck(step, st, ref)
        )
        if verdict is None:
            return []
        if Kind.VANISHING_GRADIENTS in st.active and verdict["kind"] is not Kind.LR_TOO_HIGH:
            # vanishing gradients explain a run that does not learn; but steps too large also
            # starve the lower layers (a collapsed transformer) and then the LR is the cause
            return []
        self.kind = verdict["kind"]
        self.first = {**self._snapshot(st, ref), **verdict, "step": step}
        return [self._signal(step, st, ref, self.first)]

    # -- verdicts --------------------------------------------------------------------------------
    @staticmethod
    def _collapse(st: State, ref: float) -> dict[str, Any] | None:
        """Learnt (best level <= 0.6 x reference), then back at >= 0.9 x reference for good:
        more than half of the last 50 points, so a recovering spike never counts."""
        loss = st.loss
        if loss.best_level > LEARNED * ref or not _enough(loss.long):
            return None
        if loss.level < COLLAPSED * ref or loss.long.median() < COLLAPSED * ref:
            return None
        return {"kind": Kind.LR_TOO_HIGH, "rule": "collapse"}

    @staticmethod
    def _blown_up(st: State, ref: float) -> dict[str, Any] | None:
        """The loss or the gradient norm blew up (`State.blowup`), and the loss has sat at the
        no-learning level since: the root cause is the LR, whatever the budget used (the lower
        layers die and the loss stays at chance — underfitting and vanishing gradients are the
        symptoms). Not when a root cause is already named (its symptoms link to it)."""
        if st.roots:
            return None
        b = st.blowup()
        loss = st.loss
        if b is None or not _enough(loss.long):
            return None
        after = sum(1 for s in loss.long.steps() if s > b["step"])
        if after < RECENT:
            return None  # not yet seen where the loss settles after the blow-up
        if loss.level < STUCK * ref or loss.long.median() < STUCK * ref or not _eval_fails(st, ref):
            return None
        return {"kind": Kind.LR_TOO_HIGH, "rule": "blow-up, then stuck", "blowup": b}

    @staticmethod
    def _killed(st: State, ref: float) -> dict[str, Any] | None:
        """The lowest layer's gradient was alive when training began and has died since
        (`DIED` x lower), and the loss sits at the no-learning level: the steps killed the units
        (a pretrained transformer at a far too high LR saturates within a few steps). Gradients
        that vanish by architecture (a deep sigmoid stack) are small from the first step."""
        loss = st.loss
        if st.roots or not _units_died(st) or not _enough(loss.long):
            return None
        if loss.level < STUCK * ref or loss.long.median() < STUCK * ref or not _eval_fails(st, ref):
            return None
        return {"kind": Kind.LR_TOO_HIGH, "rule": "stuck, units died"}

    @staticmethod
    def _above_chance(st: State) -> dict[str, Any] | None:
        """The train loss sits above the chance level ln C and does not come down: the model is
        worse than a uniform guess *on its own training data* — confidently wrong, which only
        steps too large do (shuffled labels or a frozen body leave it at or below ln C, the
        entropy of the class shares). Works at any logging cadence (Trainer logs every 5-50
        steps): `SPARSE_POINTS` logged points suffice."""
        chance, source = st.chance()
        loss = st.loss
        if chance is None or source not in ("config", "inferred") or st.roots:
            return None
        if len(loss.long) < SPARSE_POINTS or loss.level != loss.level:
            return None
        # above where training started, too: a deep sigmoid stack starts above ln C and stays
        # there from vanishing gradients, not from steps too large. The start is the
        # evaluation made before the first update when there is one (Trainer's logged loss
        # averages the first 5-50 steps, already blown up), else the initial train loss.
        ev = st.evals.get("eval/loss")
        pre = (
            ev.values[0] if ev is not None and len(ev) and ev.steps[0] <= st.segment_start else None
        )
        start = pre if pre is not None and pre == pre else loss.initial
        base = max(chance, start if start is not None else chance)
        level = loss.long.median()
        if level < ABOVE_CHANCE * base or loss.level < ABOVE_CHANCE * base:
            return None
        if loss.level < loss.long.median() * 0.97:
            return None  # still coming down
        if not _eval_fails(st, chance):
            return None
        return {"kind": Kind.LR_TOO_HIGH, "rule": "stuck above chance"}

    @staticmethod
    def _damaged(st: State) -> dict[str, Any] | None:
        """Every evaluation since training began is worse than the one made before the first
        update (a pretrained model evaluated at the start): the first steps damaged what the
        model knew, and nothing won it back — the LR is too high for this model (a language
        model, whose loss has no chance level to be stuck at, shows it this way)."""
        ev = st.evals.get("eval/loss")
        start = st.pre_training_eval()
        if ev is None or len(ev) < DAMAGED_EVALS + 1 or st.roots or not st.loss.n:
            return None
        if start is None or not start > NOISE_FLOOR:
            return None  # no evaluation before training began (or one at ~0)
        after = [v for v in ev.values[1:] if v == v]
        if len(after) < DAMAGED_EVALS or min(after) < times(start, DAMAGED):
            return None
        return {
            "kind": Kind.LR_TOO_HIGH,
            "rule": "damaged from the start",
            "eval_start": start,
            "eval_best_since": min(after),
            "evaluations": len(after),
        }

    @staticmethod
    def _unstable(st: State) -> dict[str, Any] | None:
        """Large updates (median of the recent update/weight ratios) while the loss level has
        climbed well above its best: every step overshoots."""
        upd = st.update
        loss = st.loss
        if len(upd.recent) < RECENT or loss.best_long == math.inf:
            return None
        ratio = median(upd.recent)
        if ratio < UPDATE_HIGH or loss.level < UNSTABLE * loss.best_long:
            return None
        return {"kind": Kind.LR_TOO_HIGH, "rule": "unstable, large updates", "update_ratio": ratio}

    @staticmethod
    def _stalled_big_steps(st: State) -> dict[str, Any] | None:
        """A plateau while the optimizer still takes large steps (update/weight ratio >= 1e-2,
        ten times the healthy ~1e-3): it bounces across the valley instead of descending."""
        if Kind.PLATEAU not in st.active:
            return None
        upd = st.update.long
        if len(upd) < RECENT:
            return None
        ratio = upd.median()
        if ratio < UPDATE_ELEVATED:
            return None
        return {"kind": Kind.LR_TOO_HIGH, "rule": "plateau, large updates", "update_ratio": ratio}

    def _stuck(self, step: int, st: State, ref: float) -> dict[str, Any] | None:
        loss = st.loss
        used = st.budget_used(step)
        if used is not None and used < FAIR_SHARE:
            return None
        if used is None and loss.n < MIN_POINTS:
            return None
        if not _enough(loss.long):
            return None
        level = loss.long.median()
        if level < STUCK * ref or loss.level < STUCK * ref or not _eval_fails(st, ref):
            return None
        if loss.level < FALLING * level:
            return None  # still coming down fast (a head that starts above the no-learning level)
        if st.chance()[0] is None and not _flat(st, ref):
            # no chance level (a language model, a regression head, unknown classes): the
            # reference is where training started, and fine-tuning a pretrained model lowers
            # its loss by a few percent only — a slow, steady descent is learning
            return None
        upd = st.update
        ratio = upd.long.median() if len(upd.long) else None
        spread = _log_spread(loss.long)
        if ratio is not None and ratio <= UPDATE_LOW:
            # weights that barely move: whatever the loss does (a heavy-tailed batch MSE is
            # erratic by itself) comes from the data, not from steps too large
            return {"kind": Kind.LR_TOO_LOW, "rule": "stuck, tiny updates", "update_ratio": ratio}
        if st.chance()[1] == "variance" or st.regression_keys():
            # a batch MSE is heavy-tailed by itself (chi-square-like): its bounce and its
            # outliers say nothing about the step size, unlike a cross-entropy's
            kind = Kind.LR_TOO_HIGH if ratio is not None and ratio >= UPDATE_HIGH else None
            if kind is not None:
                return {"kind": kind, "rule": "stuck, large updates", "update_ratio": ratio}
            return {"kind": Kind.UNDERFITTING, "rule": "stuck", "update_ratio": ratio}
        if ratio is not None and ratio >= UPDATE_HIGH and spread >= CALM:
            return {"kind": Kind.LR_TOO_HIGH, "rule": "stuck, large updates", "update_ratio": ratio}
        if ratio is not None and ratio >= UPDATE_HIGH and _units_died(st):
            # huge steps and lower layers whose gradient was alive at the start and is gone
            # now: the steps killed the units (dead ReLUs). A frozen body never had a gradient.
            return {"kind": Kind.LR_TOO_HIGH, "rule": "stuck, units died", "update_ratio": ratio}
        if loss.long.max() >= ERRATIC * ref:
            # steps so large they throw the loss far above chance: no data bug does that
            return {"kind": Kind.LR_TOO_HIGH, "rule": "stuck, erratic loss", "update_ratio": ratio}
        if spread >= (BOUNCING if ratio is not None and ratio >= UPDATE_ELEVATED else WILD):
            # PRIOR_ART's LR-too-high signature: updates > 1e-2 and a loss that bounces. A
            # transformer's global ratio is diluted by its embedding matrix (MiniLM at LR x30:
            # ~1e-3), so a loss stuck at chance that bounces hard decides alone: the model swings
            # between confident wrong answers, which only steps too large do (a model that learns
            # nothing from bad labels or frozen weights outputs the class shares: a calm loss)
            return {
                "kind": Kind.LR_TOO_HIGH,
                "rule": "stuck, bouncing loss",
                "update_ratio": ratio,
                "spread": spread,
            }
        if ratio is not None and ratio <= UPDATE_LOW:
            return {"kind": Kind.LR_TOO_LOW, "rule": "stuck, tiny updates", "update_ratio": ratio}
        return {"kind": Kind.UNDERFITTING, "rule": "stuck", "update_ratio": ratio}

    def _refine(self, step: int, st: State, ref: float) -> list[Signal] | None:
        """An underfitting verdict becomes the LR finding it turns out to be: once update
        ratios arrive for a verdict made without them (sparse measurements), or when a loss
        still stuck starts to bounce or jump (a too-high LR shows itself over a few more steps;
        underfitting is what is left when no cause is visible yet)."""
        if self.kind is not Kind.UNDERFITTING:
            return None
        verdict = self._blown_up(st, ref) or self._stuck(step, st, ref)
        if verdict is None or verdict["kind"] is Kind.UNDERFITTING:
            return None
        if self.first.get("update_ratio") is not None and verdict["kind"] is not Kind.LR_TOO_HIGH:
            return None
        self.kind = verdict["kind"]
        self.first = {**self._snapshot(st, ref), **verdict, "step": step}
        return [resolved(Kind.UNDERFITTING, "train/loss"), self._signal(step, st, ref, self.first)]

    def _over(self, st: State, ref: float) -> bool:
        """Whether the model learns again (hysteresis: below 0.8 x reference, not 0.9)."""
        loss = st.loss
        rule = self.first.get("rule")
        if rule == "collapse":
            return loss.level < LEARNED * ref
        if rule == "plateau, large updates":
            long = st.update.long
            return Kind.PLATEAU not in st.active or (
                len(long) > 0 and long.median() < UPDATE_ELEVATED
            )
        if rule == "unstable, large updates":
            recent = st.update.recent
            calm = len(recent) and median(recent) < UPDATE_HIGH / 3
            return bool(calm) and loss.level <= 1.1 * loss.best_long
        return len(loss.long) >= RECENT and loss.long.median() < UNSTUCK * ref

    # -- the finding -------------------------------------------------------------------------------
    @classmethod
    def _snapshot(cls, st: State, ref: float) -> dict[str, Any]:
        """The numbers at the step the verdict was reached (the message never drifts)."""
        loss = st.loss
        chance, source = st.chance()
        snap: dict[str, Any] = {
            "metric": "train/loss",
            "level": loss.long.median() if len(loss.long) else loss.level,
            "current_level": loss.level,
            "reference": ref,
            "reference_source": source or "initial train/loss",
            "classes": round(math.exp(chance))
            if chance is not None and source != "variance"
            else None,
            "initial": loss.initial,
            "best_level": loss.best_level,
            "best_step": loss.best_step,
            "best_long": loss.best_long,
            "best_long_step": loss.best_long_step,
            "lr_peak": st.lr.peak if st.lr.n else None,
            "max_point": loss.long.max() if len(loss.long) else None,
        }
        acc = cls._accuracy(st)
        if acc is not None:
            snap["eval_metric"], snap["eval_value"] = acc
        return snap

    def _signal(self, step: int, st: State, ref: float, first: dict[str, Any]) -> Signal:
        kind: Kind = first["kind"]
        evidence = {k: v for k, v in first.items() if k != "kind"}
        evidence["since_step"] = first["step"]
        evidence["budget_used"] = st.budget_used(first["step"])
        evidence["now"] = {"step": step, "level": st.loss.level}
        msg, rec = _explain(first)
        critical = first["rule"] in (
            "collapse",
            "blow-up, then stuck",
            "stuck above chance",
            "stuck, units died",
        )
        sev = Severity.CRITICAL if critical else Severity.WARNING
        return Signal(kind, "train/loss", sev, msg, evidence, rec, 1.0)

    @staticmethod
    def _accuracy(st: State) -> tuple[str, float] | None:
        ev = st.task_eval()
        if ev is None or not len(ev) or ev.last != ev.last:
            return None
        return ev.key, ev.last

    def rewind(self, step: int, st: State) -> None:
        if self.kind is not None and self.first.get("step", -1) >= step:
            self.kind, self.first = None, {}

    def unchecked(self, st: State) -> dict[Kind, str]:
        if not st.loss.n:
            why = "no train/loss logged"
            return {k: why for k in self.kinds}
        if st.reference_loss() is None:
            why = "too few train/loss points to set the initial level"
            return {k: why for k in self.kinds}
        return {}


def _eval_fails(st: State, ref: float) -> bool:
    """Whether evaluation agrees the model has learnt nothing (True when nothing is evaluated).

    The task metric (accuracy/F1) within `CHANCE_MARGIN` of chance (1/C) or of its first value;
    else eval/loss at >= `STUCK` x the reference.
    """
    task = st.task_eval()
    if task is not None and len(task) and task.last == task.last:
        scale = 100.0 if task.best > 1.5 else 1.0
        c = st.context.num_classes
        floor = 1.0 / c if c else task.first / scale
        if task.key.rsplit("/", 1)[-1].lower() == "r2":
            floor = 0.0  # R² 0: no better than predicting the mean
        if floor != floor:
            floor = 0.0
        return task.last / scale <= floor + CHANCE_MARGIN
    ev = st.evals.get("eval/loss")
    if ev is not None and len(ev) and ev.last == ev.last:
        return ev.last >= STUCK * ref
    return True


def _units_died(st: State) -> bool:
    """Whether the bottom layer's gradient norm was alive at the start (its initial level) and
    has fallen `DIED` x or more since (per-layer norms needed)."""
    pair = bottom_top(st.layers)
    if pair is None:
        return False
    bottom = pair[0]
    start, now = bottom.initial, bottom.level_now()
    return start is not None and start > NOISE_FLOOR and now == now and now * DIED <= start


def _flat(st: State, ref: float) -> bool:
    """No progress at all from the start: the train level within `FLAT` of the initial one and
    the primary evaluation (when there is one) within `FLAT` of its first value."""
    if st.loss.long.median() < (1.0 - FLAT) * ref:
        return False
    ev = st.evals.get("eval/loss")
    if ev is not None and len(ev) >= 2 and ev.first == ev.first and ev.first > NOISE_FLOOR:
        best = ev.best if ev.best == ev.best else ev.first
        return best >= (1.0 - FLAT) * ev.first
    return True


def _enough(window: Window) -> bool:
    """Enough loss points for a level to be judged: half the long window, or — at a sparse
    logging cadence (HF Trainer logs a mean over every 5-50 steps) — `SPARSE_POINTS` points
    spanning at least `SPARSE_SPAN` steps."""
    n = len(window)
    if n >= LONG // 2:
        return True
    if n < SPARSE_POINTS:
        return False
    steps = window.steps()
    return steps[-1] - steps[0] >= SPARSE_SPAN


def _log_spread(window: Window) -> float:
    """Robust sigma of the log of a window of positive losses (quantiles survive the log)."""
    lo, hi = window.quantile(0.25), window.quantile(0.75)
    if not lo > 0.0:  # empty (NaN) or non-positive losses: no spread to speak of
        return 0.0
    return (math.log(hi) - math.log(lo)) * IQR_TO_SIGMA


def _explain(f: dict[str, Any]) -> tuple[str, Recommendation]:
    """The sentence and the recommendation for a verdict, from its snapshot numbers."""
    lr = f" (peak lr {fmt(f['lr_peak'])})" if f["lr_peak"] is not None else ""
    upd = f.get("update_ratio")
    upd_text = f" with update/weight ratio {fmt(upd)} per step" if upd is not None else ""
    if f["rule"] == "collapse":
        return _explain_collapse(f, lr)
    if f["rule"] == "blow-up, then stuck":
        return _explain_blowup(f, lr)
    if f["rule"] == "stuck above chance":
        msg = (
            f"train/loss level {fmt(f['current_level'])} sits above {_reference_name(f)} "
            f"({pct(f['current_level'] / f['reference'])} of it) at step {f['step']} and does "
            "not come down: the model is worse than guessing on its own training data, "
            f"confidently wrong — the learning rate is too high{lr}."
        )
        return msg, Recommendation(
            "Lower the learning rate about 10x and restart from the start (or the last checkpoint "
            "before the loss rose above chance); raising it makes it worse.",
            {"action": "rollback", "step": 0, "lr_factor": 0.1},
        )
    if f["rule"] == "damaged from the start":
        msg = (
            f"every evaluation since training began is worse than before it: eval/loss "
            f"{fmt(f['eval_start'])} at the start, at best {fmt(f['eval_best_since'])} over "
            f"{f['evaluations']} evaluations since (step {f['step']}): the first steps damaged "
            f"what the model knew — the learning rate is too high{lr}."
        )
        return msg, Recommendation(
            "Restart from the pretrained weights with a learning rate about 10x lower (and a "
            "warmup); the checkpoints of this run are all worse than the start.",
            {"action": "rollback", "step": 0, "lr_factor": 0.1},
        )
    if f["rule"] == "unstable, large updates":
        msg = (
            f"train/loss level rose to {fmt(f['current_level'])} by step {f['step']}, "
            f"{f['current_level'] / f['best_long']:.1f}x its lowest 50-point median "
            f"{fmt(f['best_long'])},{upd_text} (above {UPDATE_HIGH:g}): the learning rate is too "
            f"high{lr}."
        )
        return msg, Recommendation(
            f"Lower the learning rate about 10x; roll back to step {f['best_long_step']} if the "
            "model got worse.",
            {"action": "rollback", "step": f["best_long_step"], "lr_factor": 0.1},
        )
    if f["rule"] == "plateau, large updates":
        msg = (
            f"the evaluation metric stopped improving by step {f['step']} while every step still "
            f"moves the weights by {fmt(upd or 0.0)} of their norm (>= {UPDATE_ELEVATED:g}, ten "
            f"times the usual): the learning rate is too high to settle{lr}."
        )
        return msg, Recommendation(
            "Lower the learning rate (x0.3) or decay it; the plateau should give way.",
            {"action": "scale_lr", "factor": 0.3},
        )
    return _explain_stuck(f, lr, upd_text)


def _reference_name(f: dict[str, Any]) -> str:
    ref = f["reference"]
    if f.get("reference_source") == "variance":
        return f"the target variance {fmt(ref)} (the MSE of predicting the mean)"
    if f["classes"] is not None:
        return f"the chance level ln {f['classes']} = {fmt(ref)}"
    return f"its initial value {fmt(ref)}"


def _explain_collapse(f: dict[str, Any], lr: str) -> tuple[str, Recommendation]:
    msg = (
        f"train/loss fell to {fmt(f['best_level'])} at step {f['best_step']} and came back to "
        f"{fmt(f['current_level'])}, {pct(f['current_level'] / f['reference'])} of "
        f"{_reference_name(f)}, by step {f['step']}: the learning rate is too high{lr}."
    )
    return msg, Recommendation(
        f"Roll back to step {f['best_step']} and lower the learning rate (x0.3), or warm it up "
        "more gently.",
        {"action": "rollback", "step": f["best_step"], "lr_factor": 0.3},
    )


def _explain_blowup(f: dict[str, Any], lr: str) -> tuple[str, Recommendation]:
    b = f["blowup"]
    at = int(b["step"])
    if b["rule"] == "non-finite":
        what = f"{b['metric']} became non-finite at step {at}"
    elif b["rule"] == "loss blow-up":
        what = (
            f"train/loss blew up to {fmt(b['value'])} at step {at} "
            f"({b['value'] / b['base']:.1f}x where training started, {fmt(b['base'])})"
        )
    else:
        what = (
            f"train/grad_norm jumped to {fmt(b['value'])} at step {at} "
            f"({b['value'] / b['base']:.0f}x its initial level {fmt(b['base'])})"
        )
    msg = (
        f"{what} and train/loss has sat at {fmt(f['current_level'])}, "
        f"{pct(f['current_level'] / f['reference'])} of {_reference_name(f)}, since (step "
        f"{f['step']}): the learning rate is too high{lr}; stuck loss and dying lower-layer "
        "gradients are its consequences."
    )
    # Before the blow-up began; or the start when the model had learnt nothing by then (its
    # best level above LEARNED x the reference): the start is as good and surely undamaged
    never_learnt = f["best_level"] > LEARNED * f["reference"]
    back = 0 if never_learnt else max(at - 1, 0)
    where = "the start (nothing was learnt before it)" if never_learnt else f"before step {at}"
    return msg, Recommendation(
        f"Roll back to a checkpoint from {where} and lower the learning rate about 10x "
        "(and clip gradients); raising it, or training longer, makes it worse.",
        {"action": "rollback", "step": back, "lr_factor": 0.1},
    )


def _explain_stuck(f: dict[str, Any], lr: str, upd_text: str) -> tuple[str, Recommendation]:
    stuck = (
        f"train/loss level {fmt(f['level'])} is still {pct(f['level'] / f['reference'])} of "
        f"{_reference_name(f)} at step {f['step']}"
    )
    if f["kind"] is Kind.LR_TOO_HIGH:
        if f["rule"] == "stuck, units died":
            why = (
                f"{upd_text}, and the lowest layer's gradient died (dead units): steps this large "
                "killed them"
            )
            return f"{stuck}{why}: the learning rate is too high{lr}.", Recommendation(
                "Restart from the initial weights with a learning rate about 10x lower (dead "
                "units do not come back).",
                {"action": "rollback", "step": 0, "lr_factor": 0.1},
            )
        if f["rule"] == "stuck, bouncing loss":
            why = (
                f", bouncing from step to step (robust sigma of its log {f['spread']:.2f})"
                f"{upd_text}"
            )
        else:
            why = upd_text or f" with points up to {fmt(f['max_point'])}"
        return f"{stuck}{why}: the learning rate is too high{lr}.", Recommendation(
            "Lower the learning rate about 10x and restart from the last good checkpoint.",
            {"action": "scale_lr", "factor": 0.1},
        )
    if f["kind"] is Kind.LR_TOO_LOW:
        return f"{stuck}{upd_text}: the learning rate is too low{lr}.", Recommendation(
            "Raise the learning rate about 10x (AdamW fine-tuning usually uses 1e-5 to 1e-4).",
            {"action": "scale_lr", "factor": 10.0},
        )
    tail = f" and {f['eval_metric']} is {fmt(f['eval_value'])}" if "eval_metric" in f else ""
    # A higher LR only where the steps were measured small: on a run whose updates are
    # unknown or large (or whose loss bounced) it could be the cause, and raising it the harm.
    upd = f.get("update_ratio")
    small = upd is not None and upd < UPDATE_SMALL
    higher = (
        "a higher learning rate, a larger model, or training longer"
        if small
        else ("a larger model or training longer")
    )
    return f"{stuck}{tail}{upd_text}: the model is not learning (underfitting).", Recommendation(
        "Check the labels and the data pipeline (shuffled or misaligned labels?) and that the "
        f"right parameters are trainable; then try {higher}.",
        None,
    )
