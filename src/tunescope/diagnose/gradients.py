"""Gradient-norm trouble: exploding (a sudden, sustained jump) and vanishing (lower layers starved
while the loss does not move).

Exploding compares the current level (median of the last few points) of the pre-clip gradient
norm with its own trailing median, so slow drifts of the norm during healthy training pass.
Vanishing needs per-layer norms (`train/grad_norm/bottom` and `/top`, or numbered layers) and a
loss that stays at the no-learning level — a small gradient in a model that *is* learning is
convergence, not a fault.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar, NamedTuple

from ..values import fmt
from .detector import GRAD, LAYER, Signal, resolved
from .findings import Kind, Recommendation, Severity
from .state import RECENT, State, Track
from .stats import Baseline, safe_log

EXPLODE_WINDOW = 50  # trailing gradient-norm points in the baseline
EXPLODE_MIN_POINTS = 20  # baseline points needed before judging (early training is wild)
EXPLODE_RATIO = 10.0  # a pre-clip norm this many times its trailing median ...
EXPLODE_Z = 2.0  # ... and at least this many robust sigmas (log space) above it
EXPLODE_SIGMA_FLOOR = 0.05
EXPLODE_CRITICAL = 100.0  # ratio that makes it critical (or RECURRING explosions)
RECURRING = 3
EXPLODE_QUIET = 50  # gradient points without an explosion that end the finding

VANISH_ABS = 1e-4  # bottom-layer norm this small has vanished (AUTOTRAINER) ...
VANISH_RATIO = 1e-3  # ... or this small relative to the top layer
VANISH_GLOBAL = 1e-6  # with no per-layer norms: a total norm this small
VANISH_STUCK = 0.95  # loss level >= this x the no-learning level = not learning ...
VANISH_NEVER = 0.8  # ... and its best level never below this x: it never learnt
VANISH_MIN_POINTS = 2 * RECENT
VANISH_EVERY = 5


class ExplodingDetector:
    """A pre-clip gradient norm 10x (and 5 robust sigmas) above its trailing median.

    Exploding gradients come in bursts (an RNN's norm jumps 100x for one step, a deep net's
    blows up for good); each exploding point counts, the trailing baseline never includes them,
    and the finding ends after `EXPLODE_QUIET` calm points.
    """

    kinds: ClassVar[tuple[Kind, ...]] = (Kind.EXPLODING_GRADIENTS,)
    channels: ClassVar[int] = GRAD

    def __init__(self) -> None:
        self.base = Baseline(EXPLODE_WINDOW)  # log grad norm of non-exploding points
        self.events: list[dict[str, float | int]] = []  # explosions of the active finding
        self.calm = 0  # points since the last explosion

    def check(self, step: int, st: State, touched: int) -> list[Signal]:
        g = st.grad
        x = g.last
        if g.last_step != step or x - x != 0.0 or x <= 0:
            return []  # non-finite norms are divergence
        lx = safe_log(x)
        base = self.base
        if len(base) >= EXPLODE_MIN_POINTS:
            med, sig = base.band(EXPLODE_SIGMA_FLOOR)
            if lx - med >= _LOG_RATIO and (lx - med) / sig >= EXPLODE_Z:
                if st.huge_updates():
                    return []  # every step overshoots: the learning rate's finding, not this
                self.calm = 0
                self.events.append(
                    {"step": step, "value": x, "ratio": math.exp(lx - med), "z": (lx - med) / sig}
                )
                return [self._signal(st, math.exp(med))]
        base.add(step, lx)
        if self.events:
            self.calm += 1
            if self.calm >= EXPLODE_QUIET:
                self.events = []
                return [resolved(Kind.EXPLODING_GRADIENTS, g.key)]
        return []

    def _signal(self, st: State, med: float) -> Signal:
        ev = self.events
        last = ev[-1]
        n = len(ev)
        peak = max(float(e["ratio"]) for e in ev)
        loss = st.loss
        sev = Severity.CRITICAL if peak >= EXPLODE_CRITICAL or n >= RECURRING else Severity.WARNING
        again = f" ({n} times since step {ev[0]['step']})" if n > 1 else ""
        msg = (
            f"train/grad_norm jumped to {fmt(float(last['value']))} at step {last['step']}, "
            f"{float(last['ratio']):.0f}x its trailing median {fmt(med)}{again}: exploding gradients."
        )
        evidence = {
            "metric": st.grad.key,
            "value": last["value"],
            "step": last["step"],
            "trailing_median": med,
            "ratio": last["ratio"],
            "z": last["z"],
            "count": n,
            "first_step": ev[0]["step"],
            "peak_ratio": peak,
            "explosions": ev[-5:],
            "train_loss_level": loss.level if loss.level == loss.level else None,
        }
        rec = Recommendation(
            "Clip gradients (max_grad_norm=1.0) and lower the learning rate (x0.5); check for "
            "an LR schedule bug or unnormalised inputs.",
            {"action": "scale_lr", "factor": 0.5},
        )
        return Signal(
            Kind.EXPLODING_GRADIENTS, st.grad.key, sev, msg, evidence, rec, headline=float(n)
        )

    def rewind(self, step: int, st: State) -> None:
        self.base.rewind(step)
        self.events = [e for e in self.events if int(e["step"]) < step]

    def unchecked(self, st: State) -> dict[Kind, str]:
        if not st.grad.n and not st.grad.nonfinite:
            return {Kind.EXPLODING_GRADIENTS: "no train/grad_norm logged"}
        if st.grad.n <= EXPLODE_MIN_POINTS:
            return {
                Kind.EXPLODING_GRADIENTS: f"only {st.grad.n} train/grad_norm points; "
                f"need more than {EXPLODE_MIN_POINTS} for a trailing baseline"
            }
        return {}


_LOG_RATIO = math.log(EXPLODE_RATIO)


_LAYER_NUM = re.compile(r"(\d+)")


def bottom_top(layers: dict[str, Track]) -> tuple[Track, Track] | None:
    """The lowest and highest layer's tracks: `/bottom` and `/top`, else by layer number."""
    bottom = layers.get("train/grad_norm/bottom")
    top = layers.get("train/grad_norm/top")
    if bottom is not None and top is not None:
        return bottom, top
    numbered = []
    for key, tr in layers.items():
        m = _LAYER_NUM.search(key.rsplit("/", 1)[-1])
        if m:
            numbered.append((int(m.group(1)), key, tr))
    if len(numbered) < 2:
        return None
    numbered.sort()
    return numbered[0][2], numbered[-1][2]


class _Vanished(NamedTuple):
    metric: str  # the starved (bottom) layer's key
    bottom: float
    top_key: str | None
    top: float | None
    ratio: float | None


class VanishingDetector:
    """Lower-layer gradients ~0 (absolutely or next to the top layer) while the loss is stuck."""

    kinds: ClassVar[tuple[Kind, ...]] = (Kind.VANISHING_GRADIENTS,)
    channels: ClassVar[int] = LAYER | GRAD

    def __init__(self) -> None:
        self.metric = ""
        self.since = -1
        self._tick = 0

    def check(self, step: int, st: State, touched: int) -> list[Signal]:
        # Judge when per-layer norms arrive (every few steps); with only a total norm, every
        # VANISH_EVERY-th one (levels move slowly).
        if st.layers:
            if not touched & LAYER:
                return []
        else:
            self._tick += 1
            if self._tick % VANISH_EVERY:
                return []
        found = self._measure(st)
        if found is None:
            if self.metric and touched & (LAYER | GRAD):
                metric, self.metric = self.metric, ""
                return [resolved(Kind.VANISHING_GRADIENTS, metric)]
            return []
        if not self.metric:
            self.metric, self.since = found.metric, step
        return [self._signal(found)]

    def _measure(self, st: State) -> _Vanished | None:
        loss = st.loss
        ref = st.reference_loss()
        if ref is None or loss.level != loss.level or loss.n < VANISH_MIN_POINTS:
            return None
        if loss.level < VANISH_STUCK * ref or loss.best_long < VANISH_NEVER * ref:
            return None  # the model learns or has learnt: small gradients are not the cause
        pair = bottom_top(st.layers)
        if pair is not None:
            bottom, top = pair
            if len(bottom.recent) < RECENT or len(top.recent) < RECENT:
                return None
            b, t = bottom.level_now(), top.level_now()
            ratio = b / t if t > 0 else math.inf
            if b < VANISH_ABS or ratio < VANISH_RATIO:
                return _Vanished(bottom.key, b, top.key, t, ratio)
            return None
        g = st.grad
        level = g.level_now()
        if level < VANISH_GLOBAL:
            return _Vanished(g.key, level, None, None, None)
        return None

    def _signal(self, v: _Vanished) -> Signal:
        if v.top is not None and v.ratio is not None:
            what = (
                f"{v.metric} level {fmt(v.bottom)} is {fmt(v.ratio)}x the top layer's {fmt(v.top)}"
            )
        else:
            what = f"{v.metric} level is only {fmt(v.bottom)}"
        msg = (
            f"{what} since step {self.since} while train/loss stays at the no-learning level: "
            "vanishing gradients."
        )
        rec = Recommendation(
            "Lower layers are not learning: check the initialisation and activations (avoid "
            "saturating sigmoid/tanh stacks), add normalisation or residual connections, or "
            "raise the learning rate of the lower layers.",
            None,
        )
        evidence = {**v._asdict(), "since_step": self.since}
        return Signal(
            Kind.VANISHING_GRADIENTS,
            self.metric,
            Severity.WARNING,
            msg,
            evidence,
            rec,
            headline=-math.log10(max(v.bottom, 1e-30)),
        )

    def rewind(self, step: int, st: State) -> None:
        if self.since >= step:
            self.metric, self.since = "", -1

    def unchecked(self, st: State) -> dict[Kind, str]:
        if bottom_top(st.layers) is None and not st.grad.n:
            return {
                Kind.VANISHING_GRADIENTS: "no per-layer gradient norms (train/grad_norm/bottom "
                "and train/grad_norm/top) and no train/grad_norm logged"
            }
        if st.reference_loss() is None:
            return {Kind.VANISHING_GRADIENTS: "no train/loss logged (needed to tell a stuck model)"}
        return {}
