"""What the monitor knows of a run so far, shared read-only by the detectors.

The monitor feeds every logged value into one of these tracks before any detector runs, so a
detector sees the same state whatever order the values of one `log()` call came in. Tracks keep
O(1) summaries and bounded windows; evaluation tracks keep their (sparse) points.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..names import higher_is_better
from .context import Context
from .findings import Kind
from .stats import NOISE_FLOOR, Window, median, scale_of, times

INITIAL_POINTS = 5  # the initial loss is the median of the first finite points
RECENT = 7  # points in a "current level" median
LONG = 50  # points in a "long level" median
# An update/weight ratio (‖Δθ‖/‖θ‖ per step) above this means the learning rate itself is too
# high: healthy AdamW/SGD fine-tuning stays around 1e-3 (measured on the suite: <= 0.017).
UPDATE_HIGH = 5e-2
# A blow-up: a train-loss point this many times (sign-aware) where training started (the larger
# of its initial and no-learning levels), or its level (median of 7) this many times, or a
# gradient norm this many times its initial level (the median of its first 5 points). Healthy
# runs of the diagnosis suite: loss points <= 1.11x, levels <= 1.01x; gradient norms of healthy
# SGD runs grow up to 14x as the model leaves its initialisation.
BLOWUP_POINT = 2.0
NOISE_SIGMAS = 5.0  # ... a single point also this many robust sigmas above the loss's median
UPDATE_LOW = 1e-4  # update/weight ratio per step below this: the weights barely move
BLOWUP_LEVEL = 1.5
BLOWUP_GRAD = 30.0


class Track:
    """A noisy per-step metric (train loss, gradient norm, update ratio): levels and extremes."""

    __slots__ = (
        "_firsts",
        "best_level",
        "best_long",
        "best_long_step",
        "best_step",
        "eager",
        "initial",
        "key",
        "last",
        "last_finite",
        "last_finite_step",
        "last_step",
        "level",
        "level_peak",
        "level_peak_step",
        "long",
        "n",
        "nonfinite",
        "peak",
        "peak_step",
        "recent",
        "rise_step",
        "seg_points",
    )

    def __init__(self, key: str, *, long: bool = True, eager: bool = True) -> None:
        self.key = key
        # eager: keep `level` and the best levels current at every point (the train loss and
        # the update ratio); else only `level_now()` on demand (gradient norms).
        self.eager = eager
        self.n = 0  # finite points seen
        self.seg_points = 0  # finite points since the current segment began
        self.last = math.nan
        self.last_step = -1
        self.last_finite = math.nan
        self.last_finite_step = -1
        self.nonfinite = 0  # non-finite points seen
        # the highest finite point of the segment and its step: a blow-up leaves it behind even
        # when the level comes back down (the root cause of a loss then stuck at chance)
        self.peak = -math.inf
        self.peak_step = -1
        self.level_peak = -math.inf  # ... and the highest level (median of 7): noise-proof
        self.level_peak_step = -1
        # the first step with a point BLOWUP_POINT x (sign-aware) the start: where a blow-up
        # began (its peak may come a step or two later); a rollback goes back before it
        self.rise_step = -1
        self._firsts: list[float] = []
        self.initial: float | None = None
        self.recent: deque[float] = deque(maxlen=RECENT)  # a median of 7 is cheapest sorted
        self.long = Window(LONG if long else 0)  # size 0: no long level kept
        self.level = math.nan  # median of the last RECENT finite points
        self.best_level = math.inf  # lowest level so far (noisy: biased low on long runs)
        self.best_step = -1
        self.best_long = math.inf  # lowest long level (median of up to LONG points): robust
        self.best_long_step = -1

    def add(self, step: int, x: float) -> None:
        """Take one value (NaN/inf counted, kept out of the windows)."""
        self.last = x
        self.last_step = step
        if x - x != 0.0:  # NaN or ±inf, without a function call
            self.nonfinite += 1
            return
        self.n += 1
        self.seg_points += 1
        self.last_finite = x
        self.last_finite_step = step
        if x > self.peak:
            self.peak, self.peak_step = x, step
            if self.rise_step < 0 and self._firsts and x >= times(self.start or 0.0, BLOWUP_POINT):
                self.rise_step = step
        if self.initial is None:
            self._firsts.append(x)
            if len(self._firsts) >= INITIAL_POINTS:
                s = sorted(self._firsts)
                self.initial = s[len(s) // 2]
        recent = self.recent
        recent.append(x)
        if not self.eager:
            return
        if len(recent) >= RECENT:
            lvl = self.level = sorted(recent)[RECENT >> 1]
            if lvl < self.best_level:
                self.best_level, self.best_step = lvl, step
            if lvl > self.level_peak:
                self.level_peak, self.level_peak_step = lvl, step
        long = self.long
        if long.size:
            long.add(step, x)
            if len(long) >= RECENT:
                lng = long.median()
                if lng < self.best_long:
                    self.best_long, self.best_long_step = lng, step

    def level_now(self) -> float:
        """The median of the last RECENT points (NaN with fewer), computed now."""
        r = self.recent
        return sorted(r)[RECENT >> 1] if len(r) >= RECENT else math.nan

    @property
    def first(self) -> float | None:
        """The first finite point (None before any)."""
        return self._firsts[0] if self._firsts else None

    @property
    def start(self) -> float | None:
        """The initial value, or the median of the first points while fewer than 5 exist."""
        if self.initial is not None:
            return self.initial
        if not self._firsts:
            return None
        s = sorted(self._firsts)
        return s[len(s) // 2]

    @property
    def finite(self) -> bool:
        """Whether the last value was finite."""
        return self.last - self.last == 0.0

    def rewind(self, step: int) -> None:
        """A rollback to `step`: forget points logged at or after it, keep the baselines.

        The current level restarts from the new segment's points (the last few before `step`
        are not kept for it); the long window keeps the points logged before `step`.
        """
        self.recent.clear()
        self.long.rewind(step)
        self.seg_points = 0
        self.level = math.nan
        if self.peak_step >= step:
            self.peak, self.peak_step = -math.inf, -1
        if self.level_peak_step >= step:
            self.level_peak, self.level_peak_step = -math.inf, -1
        if self.rise_step >= step:
            self.rise_step = -1
        if self.best_step >= step:
            self.best_level, self.best_step = math.inf, -1
        if self.best_long_step >= step:
            ok = len(self.long) >= RECENT
            self.best_long = self.long.median() if ok else math.inf
            self.best_long_step = self.long.steps()[-1] if ok else -1


@dataclass
class EvalTrack:
    """A sparse metric (evaluation, retain set, probe): every point, its best and baseline."""

    key: str
    higher: bool
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    best: float = math.nan
    best_step: int = -1
    best_index: int = -1

    @classmethod
    def for_key(cls, key: str) -> EvalTrack:
        """A track with the direction of `key` (accuracy up, loss down)."""
        return cls(key, higher_is_better(key))

    def add(self, step: int, x: float) -> None:
        """Take one value; non-finite values are kept but never become the best."""
        self.steps.append(step)
        self.values.append(x)
        if x - x == 0.0 and (self.best != self.best or self.better(x, self.best)):
            self.best, self.best_step, self.best_index = x, step, len(self.values) - 1

    def better(self, a: float, b: float) -> bool:
        """Whether a is better than b."""
        return a > b if self.higher else a < b

    def __len__(self) -> int:
        return len(self.values)

    @property
    def first(self) -> float:
        """The first finite value (the baseline), NaN if none."""
        for v in self.values:
            if v - v == 0.0:
                return v
        return math.nan

    @property
    def last(self) -> float:
        """The latest value."""
        return self.values[-1] if self.values else math.nan

    @property
    def since_best(self) -> int:
        """Evaluations after the best one."""
        return len(self.values) - 1 - self.best_index if self.best_index >= 0 else 0

    def rewind(self, step: int) -> None:
        """Forget points logged at or after `step` (abandoned by a rollback) and re-find the best."""
        kept = [(s, v) for s, v in zip(self.steps, self.values, strict=True) if s < step]
        self.steps, self.values = [], []
        self.best, self.best_step, self.best_index = math.nan, -1, -1
        for s, v in kept:
            self.add(s, v)


class LRTrack:
    """The learning rate: its peak, and whether it is still rising (warmup)."""

    __slots__ = ("last", "n", "peak", "peak_step", "rising")

    def __init__(self) -> None:
        self.n = 0
        self.last = math.nan
        self.peak = 0.0
        self.peak_step = -1
        self.rising = False  # the last change was an increase

    def add(self, step: int, x: float) -> None:
        """Take one LR value."""
        if x - x != 0.0:
            return
        if self.n:
            self.rising = x > self.last * (1 + 1e-9)
        self.n += 1
        self.last = x
        if x > self.peak:
            self.peak, self.peak_step = x, step

    @property
    def warm(self) -> bool:
        """Whether warmup is over: two LR values seen and the LR no longer rising."""
        return self.n >= 2 and not self.rising


# Metric names that say the loss has no chance level ln C: regression, language modelling.
_NO_CHANCE_LEAVES = frozenset(
    {"r2", "mae", "mse", "rmse", "explained_variance", "perplexity", "ppl", "bits_per_byte"}
)

# Keys that describe an evaluation run rather than the model's quality.
_EVAL_NOISE = ("runtime", "per_second", "epoch", "step", "mem", "flos", "time")


def is_perplexity(key: str) -> bool:
    """Perplexity is exp(loss): relative changes are judged on its log, the loss."""
    leaf = key.rsplit("/", 1)[-1].lower()
    return "perplexity" in leaf or leaf == "ppl"


def relative_rise(key: str, value: float, base: float) -> float:
    """How much worse a minimised metric is than `base`, relatively (perplexity via its log)."""
    if is_perplexity(key) and value > NOISE_FLOOR and base > NOISE_FLOOR:
        value, base = math.log(value), math.log(base)
    # A relative rise for a positive loss, never measured against less than the float-noise
    # floor (1e-320 -> 2e-318 is not +21000%); a loss at or below 0 (a log-likelihood, a DPO
    # objective) rises by its difference over |base|, or over 1 near 0 (no relative scale)
    if base > 0:
        return (value - base) / scale_of(base)
    return (value - base) / max(abs(base), 1.0)


def is_quality_metric(key: str) -> bool:
    """Whether a key (eval/retain/probe) measures model quality with a known direction."""
    leaf = key.rsplit("/", 1)[-1].lower()
    if any(tok in leaf for tok in _EVAL_NOISE):
        return False
    minimised = ("loss", "perplexity", "ppl", "error", "mae", "mse")
    return higher_is_better(key) or any(t in leaf for t in minimised)


@dataclass
class State:
    """Everything the detectors may read. The monitor writes it; detectors only read it."""

    context: Context
    step: int = -1
    segment: int = 0
    segment_start: int = 0
    loss: Track = field(default_factory=lambda: Track("train/loss"))
    grad: Track = field(default_factory=lambda: Track("train/grad_norm", long=False, eager=False))
    update: Track = field(default_factory=lambda: Track("train/update_ratio"))
    lr: LRTrack = field(default_factory=LRTrack)
    layers: dict[str, Track] = field(default_factory=dict)  # train/grad_norm/<layer>
    evals: dict[str, EvalTrack] = field(default_factory=dict)  # eval/*
    retain: dict[str, EvalTrack] = field(default_factory=dict)  # retain/*
    probes: dict[str, EvalTrack] = field(default_factory=dict)  # probe/*
    epoch: float = math.nan
    active: set[Kind] = field(default_factory=set)  # kinds with an active finding
    raised: set[Kind] = field(default_factory=set)  # kinds ever raised in this run
    seen: set[str] = field(default_factory=set)  # keys seen, for the "unchecked" report
    # root-cause findings raised in the current segment: (finding id, kind, first step); the
    # monitor links later symptoms (a loss stuck at chance, dead lower layers) to the last one
    roots: list[tuple[str, Kind, int]] = field(default_factory=list)
    nonfinite_step: int = -1  # first step of the segment with a non-finite loss / grad norm
    _chance: tuple[float | None, str] | None = None

    def chance(self) -> tuple[float | None, str]:
        """ln C and where C came from ("config", "inferred" or "" when unknown)."""
        if self._chance is not None:
            return self._chance
        if self.context.num_classes is not None:
            self._chance = self.context.chance_loss(None)
            return self._chance
        if self.loss.initial is None:
            return None, ""  # decide once the initial loss is known
        if self.regression_keys() or self.context.is_regression:
            # an MSE of ~1.1 is not ln 3, nor an LM's loss of 2.3 ln 10: a log without a config
            # says which task it is by its metrics. A regression head's no-learning level is the
            # target variance (the MSE of predicting the mean), which eval/r2 gives away.
            var = self._target_variance()
            if var is None and self.evals.get("eval/r2") is not None:
                return None, ""  # decide at the first evaluation with both numbers
            self._chance = (var, "variance") if var is not None else (None, "")
            return self._chance
        # a fresh classification head starts at ln C: the evaluation made before the first
        # update says so exactly, where Trainer's first logged train loss (a mean over the
        # first 5-50 steps) may already have moved
        # ... and so does the very first train-loss point (one batch before any update: a fresh
        # head's logits are ~0, so its loss is ~ln C whatever the batch), which a too-high LR
        # cannot have moved yet — the median of the first 5 can be (MiniLM at 3e-3 throws points
        # 3-5 up to 2.4: their median reads as ln 7 for a 5-class head)
        for start in (self.pre_training_eval(), self.loss.first, self.loss.initial):
            if start is None:
                continue
            guess = self.context.chance_loss(start)
            if guess[0] is not None:
                self._chance = guess
                return guess
        self._chance = (None, "")
        return self._chance

    def pre_training_eval(self) -> float | None:
        """eval/loss measured before the first update of the segment (e.g. `eval_on_start`)."""
        ev = self.evals.get("eval/loss")
        if ev is None or not len(ev) or ev.steps[0] > self.segment_start:
            return None
        x = ev.values[0]
        return x if x == x else None

    def _target_variance(self) -> float | None:
        """The evaluation targets' variance from an MSE and an R² of the same evaluation:
        R² = 1 - MSE / var, so var = MSE / (1 - R²) (None without both, or at R² ~ 1)."""
        r2 = self.evals.get("eval/r2")
        mse = self.evals.get("eval/mse") or self.evals.get("eval/loss")
        if r2 is None or mse is None:
            return None
        at = dict(zip(mse.steps, mse.values, strict=True))
        for step, r in zip(reversed(r2.steps), reversed(r2.values), strict=True):
            m = at.get(step)
            if m is not None and m == m and r == r and m > NOISE_FLOOR and r < 0.99:
                return m / (1.0 - r)
        return None

    def reconsider_chance(self) -> None:
        """Forget a chance level guessed from the first losses once a key shows the task has
        none (an MSE of 1.1 read as ln 3, an LM loss of 2.3 as ln 10): it is decided again."""
        if self._chance is not None and self._chance[1] == "inferred" and self.regression_keys():
            self._chance = None

    def regression_keys(self) -> bool:
        """Whether the logged metrics name a task with no ln C: regression (eval/r2, eval/mae,
        eval/mse) or language modelling (eval/perplexity)."""
        return any(k.rsplit("/", 1)[-1].lower() in _NO_CHANCE_LEAVES for k in self.seen)

    def reference_loss(self) -> float | None:
        """The "no learning yet" loss level: ln C when known, else the initial train loss."""
        c, _ = self.chance()
        return c if c is not None else self.loss.initial

    def blowup(self) -> dict[str, Any] | None:
        """Evidence that the loss or the gradient norm blew up in this segment, else None.

        A non-finite loss or gradient norm; a train-loss point at `BLOWUP_LOSS` x (sign-aware)
        the larger of its initial and no-learning levels; or a gradient norm at `BLOWUP_GRAD` x
        its initial level. Read from the segment's peaks, so it holds after the level came back
        (a too-high LR throws the loss up, then leaves it at chance with dead lower layers).
        """
        if self.nonfinite_step >= 0:
            metric = self.loss.key if self.loss.nonfinite else self.grad.key
            return {"rule": "non-finite", "step": self.nonfinite_step, "metric": metric}
        loss, grad = self.loss, self.grad
        upd = self.update.recent
        if len(upd) >= 3 and median(upd) <= UPDATE_LOW:
            return None  # weights that barely move cannot have been thrown anywhere by the LR
        ref = self.reference_loss()
        if loss.initial is not None and ref is not None and loss.peak_step >= 0:
            base = max(loss.initial, ref)
            if (
                base > NOISE_FLOOR
                and loss.peak >= times(base, BLOWUP_POINT)
                and self._outside_noise(loss.peak)
            ):
                value, at = loss.peak, loss.peak_step
            elif base > NOISE_FLOOR and loss.level_peak >= times(base, BLOWUP_LEVEL):
                value, at = loss.level_peak, loss.level_peak_step
            else:
                value, at = math.nan, -1
            if at >= 0:
                if 0 <= loss.rise_step < at:
                    at = loss.rise_step  # where it began
                return {
                    "rule": "loss blow-up",
                    "metric": loss.key,
                    "step": at,
                    "value": value,
                    "base": base,
                }
        g0 = grad.initial
        if g0 is not None and g0 > NOISE_FLOOR and grad.peak >= BLOWUP_GRAD * g0:
            at = grad.peak_step
            if 0 <= grad.rise_step < at:
                at = grad.rise_step  # where the norm began to climb (2x its start)
            return {
                "rule": "gradient blow-up",
                "metric": grad.key,
                "step": at,
                "value": grad.peak,
                "base": grad.initial,
            }
        return None

    def _outside_noise(self, x: float) -> bool:
        """Whether one loss point is far outside the loss's own per-step noise: `NOISE_SIGMAS`
        robust sigmas (log space) above its 50-point median. A batch MSE is heavy-tailed (2x its
        median is ordinary noise for a regression head); a cross-entropy at chance is calm."""
        long = self.loss.long
        if len(long) < RECENT:
            return True
        lo, hi, med = long.quantile(0.25), long.quantile(0.75), long.median()
        if not (lo > NOISE_FLOOR and med > NOISE_FLOOR and x > NOISE_FLOOR):
            return True
        sigma = math.log(hi / lo) / 1.349
        return math.log(x / med) >= NOISE_SIGMAS * sigma

    def huge_updates(self) -> bool:
        """Whether the recent update/weight ratios say every step overshoots (LR too high)."""
        upd = self.update.recent
        return len(upd) >= 3 and median(upd) >= UPDATE_HIGH

    def budget_used(self, step: int) -> float | None:
        """Fraction of the training budget used at `step`, when the budget is known.

        From `Context.max_steps`; else from `train/epoch` over `Context.epochs` (3, HF
        Trainer's default, when unknown). None when neither is known.
        """
        if self.context.max_steps:
            return step / self.context.max_steps
        if self.epoch == self.epoch:
            return self.epoch / (self.context.epochs or 3.0)
        return None

    def primary_eval(self) -> EvalTrack | None:
        """The evaluation metric to judge generalisation by: eval/loss, else the first to maximise."""
        ev = self.evals
        if "eval/loss" in ev:
            return ev["eval/loss"]
        for key in sorted(ev):
            if ev[key].higher:
                return ev[key]
        return next(iter(sorted(ev.items())), (None, None))[1]

    def task_eval(self) -> EvalTrack | None:
        """The task metric users care about: eval/accuracy, eval/f1, else another to maximise."""
        ev = self.evals
        for key in ("eval/accuracy", "eval/f1"):
            if key in ev:
                return ev[key]
        for key in sorted(ev):
            if ev[key].higher:
                return ev[key]
        return None
