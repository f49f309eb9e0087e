"""Numerical trouble in the training loss: divergence (non-finite or blown-up) and loss spikes.

Divergence is raised at the very step a loss or gradient norm turns NaN/inf (or the loss passes
1e5), and when the loss level blows up far above where training started and stays there (a
blown-up level that is already coming back down is a spike in the making, not divergence).
A loss spike is a jump far outside the loss's own recent spread that *recovers*; it is raised
when the recovery is seen (before that, a spike is indistinguishable from divergence).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..values import fmt
from .detector import EVAL, GRAD, LOSS, Signal, resolved
from .findings import Kind, Recommendation, Severity
from .state import LONG, RECENT, State
from .stats import NOISE_FLOOR, Baseline, safe_log, times

HUGE_LOSS = 1e5  # a loss this large is divergence outright (AUTOTRAINER)
BLOWUP_FACTOR = 3.0  # recent loss level this many times the no-learning reference ...
BLOWUP_BEST = 5.0  # ... and this many times the best level so far: blown up at once
BLOWUP_EVERY = 5  # loss points between blow-up checks
BAND_BEST = 1.5  # long loss level above max(initial, 1.5 x best level): left the healthy band
SPIKE_WINDOW = 50  # trailing points the spike baseline is drawn from
SPIKE_MIN_POINTS = 20  # baseline points needed before judging spikes
SPIKE_Z = 5.0  # robust z-score (log space) that makes a point a spike candidate
SPIKE_MIN_RATIO = 3.0  # ... and reach this many times the baseline median, or
SPIKE_BACK = 0.4  # ... this fraction of the way back to the no-learning level (the lower)
SPIKE_SIGMA_FLOOR = (
    0.05  # log-space spread floor (5%), so a very smooth curve is not over-sensitive
)
SPIKE_RECOVERY_Z = 3.0  # back within this many sigmas = recovered
SPIKE_MAX_POINTS = 30  # a "spike" not recovered after this many points is a level change
RECURRING = 3  # spikes that make the finding a warning about instability


def _divergence_rec(last_good: int) -> Recommendation:
    return Recommendation(
        f"Roll back to the last checkpoint at or before step {last_good} and lower the learning rate "
        "(x0.5); enable gradient clipping, and check the data and fp16/bf16 overflow.",
        {"action": "rollback", "step": last_good, "lr_factor": 0.5},
    )


class DivergenceDetector:
    """Non-finite or huge loss / gradient norm at once; a sustained blow-up of the loss level."""

    kinds: ClassVar[tuple[Kind, ...]] = (Kind.DIVERGENCE,)
    channels: ClassVar[int] = LOSS | GRAD | EVAL

    def __init__(self) -> None:
        self.metric = ""  # the metric of the active divergence finding, "" when none
        self.first: dict[str, Any] = {}
        self._tick = 0
        # a blown-up level seen but not yet judged: (loss points when first seen, last level)
        self.pending: tuple[int, float] | None = None

    def check(self, step: int, st: State, touched: int) -> list[Signal]:
        bad = self._nonfinite(st, touched)
        if bad is None and touched & LOSS:
            # Levels move slowly: judge a blow-up every BLOWUP_EVERY-th loss point (and on
            # every point once diverged, to keep the evidence current).
            self._tick += 1
            if self.metric or not self._tick % BLOWUP_EVERY:
                bad = self._blowup(st)
        if bad is not None:
            if not self.metric:
                self.metric = bad["metric"]
                self.first = {**bad, "step": step}
            return [self._signal(step, bad)]
        if self.metric and touched & LOSS and self._recovered(st):
            metric, self.metric = self.metric, ""
            return [resolved(Kind.DIVERGENCE, metric)]
        return []

    @staticmethod
    def _nonfinite(st: State, touched: int) -> dict[str, Any] | None:
        tracks = []
        if touched & LOSS:
            tracks.append(st.loss)
        if touched & GRAD:
            tracks.append(st.grad)
        for tr in tracks:
            x = tr.last
            if tr.last_step == st.step and (x - x != 0.0 or (tr is st.loss and x >= HUGE_LOSS)):
                return {
                    "metric": tr.key,
                    "value": x,
                    "rule": "non-finite" if x - x != 0.0 else f"loss >= {HUGE_LOSS:g}",
                    "last_finite": tr.last_finite if tr.n else None,
                    "last_finite_step": tr.last_finite_step if tr.n else None,
                }
        if touched & EVAL:
            ev = st.evals.get("eval/loss")
            if ev is not None and ev.steps and ev.steps[-1] == st.step and ev.last - ev.last != 0.0:
                good = [(s, v) for s, v in zip(ev.steps, ev.values, strict=True) if v - v == 0.0]
                return {
                    "metric": ev.key,
                    "value": ev.last,
                    "rule": "non-finite",
                    "last_finite": good[-1][1] if good else None,
                    "last_finite_step": good[-1][0] if good else None,
                }
        return None

    def _blowup(self, st: State) -> dict[str, Any] | None:
        """The loss level far above where it started and its best, and staying there.

        Fast: the recent level (median of 7) at 3x the no-learning level and 5x the best, at
        two checks in a row with the second no lower than the first — a level that recedes
        from a sudden jump is a spike in the making (`SpikeDetector` names it once it is back)
        unless it is still blown up after a spike's recovery window (`SPIKE_MAX_POINTS`).
        Slow: the long level (median of 50) above max(initial, no-learning level, 1.5 x best) —
        more than half of the last 50 points out of the healthy band, so a spike that recovers
        never counts, and a collapse back to the chance level is `lr_too_high`, not this.
        """
        loss = st.loss
        ref = st.reference_loss()
        initial = loss.initial
        if (
            ref is None
            or initial is None
            or loss.seg_points < 2 * RECENT
            or loss.level != loss.level
        ):
            return None
        best = loss.best_long
        # sign-aware multiples: a falling negative loss (DPO, a log-likelihood) is never above
        # "3x" its start, and a loss near 0 never blows up by float noise
        fast = max(times(ref, BLOWUP_FACTOR), times(best, BLOWUP_BEST))
        if loss.level < fast:
            self.pending = None
        if loss.level >= fast and self._sustained(loss.n, loss.level):
            level, limit, rule = loss.level, fast, "blow-up"
        elif len(loss.long) >= LONG // 2 and loss.long.median() > _band(max(initial, ref), best):
            level, limit = loss.long.median(), _band(max(initial, ref), best)
            rule = "left the healthy band"
        else:
            return None
        return {
            "metric": loss.key,
            "value": level,
            "rule": rule,
            "level": level,
            "reference": ref,
            "initial": initial,
            "best_level": best,
            "best_step": loss.best_long_step,
            "limit": limit,
        }

    def _sustained(self, n: int, level: float) -> bool:
        """Whether a blown-up level (at `n` loss points) is not receding (see `_blowup`)."""
        if self.metric:
            return True  # diverged already: keep the evidence current
        if self.pending is None:
            self.pending = (n, level)
            return False
        since, before = self.pending
        self.pending = (since, level)
        return level >= before or n - since >= SPIKE_MAX_POINTS

    @staticmethod
    def _recovered(st: State) -> bool:
        """Every watched value finite again and the loss level back in its healthy band.

        (HF Trainer replaces a NaN loss by the running mean by default, so a finite loss alone
        does not mean the model recovered: the gradient norm and eval/loss must agree.)
        """
        loss = st.loss
        ref = st.reference_loss()
        if not loss.finite or loss.level != loss.level or loss.initial is None or ref is None:
            return False
        if (st.grad.n or st.grad.nonfinite) and not st.grad.finite:
            return False
        ev = st.evals.get("eval/loss")
        if ev is not None and len(ev) and ev.last - ev.last != 0.0:
            return False
        band = _band(max(loss.initial, ref), loss.best_long)
        return loss.level < band and (not len(loss.long) or loss.long.median() < band)

    def _signal(self, step: int, bad: dict[str, Any]) -> Signal:
        first = self.first
        if "limit" in first:
            last_good = int(first["best_step"])
            msg = (
                f"{first['metric']} level rose to {fmt(first['level'])} by step {first['step']}, "
                f"above its initial {fmt(first['initial'])} and the no-learning level "
                f"{fmt(first['reference'])}, {_times_text(first['level'], first['best_level'])} "
                f"its best {fmt(first['best_level'])} (step {first['best_step']}), and stays there: "
                "the run diverged."
            )
        else:
            prev = first.get("last_finite")
            last_good = int(first.get("last_finite_step") or 0)
            tail = (
                f" (last finite value {fmt(prev)} at step {last_good})" if prev is not None else ""
            )
            msg = (
                f"{first['metric']} became {fmt(first['value'])} at step {first['step']}{tail}: "
                "the run diverged."
            )
        evidence = {**first, "now": {"metric": bad["metric"], "value": bad["value"], "step": step}}
        return Signal(
            Kind.DIVERGENCE,
            self.metric,
            Severity.CRITICAL,
            msg,
            evidence,
            _divergence_rec(last_good),
            headline=1.0,
        )

    def rewind(self, step: int, st: State) -> None:
        self.pending = None
        if self.first.get("step", -1) >= step:
            self.metric, self.first = "", {}

    def unchecked(self, st: State) -> dict[Kind, str]:
        if not st.loss.n and not st.loss.nonfinite and not st.grad.n and not st.grad.nonfinite:
            return {Kind.DIVERGENCE: "no train/loss or train/grad_norm logged"}
        return {}


class SpikeDetector:
    """A train-loss point far above its trailing robust band that comes back down."""

    kinds: ClassVar[tuple[Kind, ...]] = (Kind.LOSS_SPIKE,)
    channels: ClassVar[int] = LOSS

    def __init__(self) -> None:
        self.base = Baseline(SPIKE_WINDOW)  # log loss, frozen while a candidate is open
        self.cand: dict[str, Any] | None = None
        self.spikes: list[dict[str, Any]] = []

    def check(self, step: int, st: State, touched: int) -> list[Signal]:
        loss = st.loss
        if loss.last_step != step:
            return []
        x = loss.last
        if x - x != 0.0 or x >= HUGE_LOSS:
            self.cand = None  # divergence, not a spike
            return []
        if x <= NOISE_FLOOR:
            # spikes are judged in log space, which a loss at or below 0 does not have (a DPO
            # objective, a log-likelihood): such a loss's jumps are the divergence check's
            self.cand = None
            return []
        lx = safe_log(x)
        cand = self.cand
        if cand is None:
            base = self.base
            if len(base) >= SPIKE_MIN_POINTS:
                med, sig = base.band(SPIKE_SIGMA_FLOOR)
                if lx - med >= SPIKE_Z * sig and x >= _spike_limit(math.exp(med), st):
                    self.cand = {
                        "step": step,
                        "peak": x,
                        "peak_step": step,
                        "n": 1,
                        "med": med,
                        "sig": sig,
                    }
                    return []
            base.add(step, lx)
            return []
        cand["n"] += 1
        if x > cand["peak"]:
            cand["peak"], cand["peak_step"] = x, step
        if lx - cand["med"] <= SPIKE_RECOVERY_Z * cand["sig"]:
            self.cand = None
            self.base.add(step, lx)
            return [self._confirm(step, cand)]
        if cand["n"] > SPIKE_MAX_POINTS:
            self.cand = None  # a level change, not a spike: the baseline follows it
            self.base.clear()
        return []

    def _confirm(self, step: int, cand: dict[str, Any]) -> Signal:
        base = math.exp(cand["med"])
        spike = {
            "spike_step": cand["step"],
            "peak": cand["peak"],
            "peak_step": cand["peak_step"],
            "baseline_median": base,
            "ratio": cand["peak"] / base,
            "z": (safe_log(cand["peak"]) - cand["med"]) / cand["sig"],
            "recovered_step": step,
        }
        self.spikes.append(spike)
        n = len(self.spikes)
        sev = Severity.WARNING
        again = f"; {n} spikes so far" if n > 1 else ""
        msg = (
            f"train/loss spiked to {fmt(spike['peak'])} at step {spike['peak_step']}, "
            f"{spike['ratio']:.1f}x its trailing median {fmt(base)} "
            f"({spike['z']:.0f} robust sigmas), and recovered by step {step}{again}."
        )
        if n >= RECURRING:
            rec = Recommendation(
                "Spikes keep recurring: lower the learning rate (x0.5) or tighten gradient "
                "clipping, and look for bad batches at the spike steps.",
                {"action": "scale_lr", "factor": 0.5},
            )
        else:
            rec = Recommendation(
                f"Check the batch at step {spike['peak_step']} for bad data; if spikes recur, "
                "lower the learning rate or tighten gradient clipping.",
                None,
            )
        evidence = {"metric": "train/loss", "count": n, "spikes": self.spikes[-5:], **spike}
        return Signal(Kind.LOSS_SPIKE, "train/loss", sev, msg, evidence, rec, headline=float(n))

    def rewind(self, step: int, st: State) -> None:
        self.cand = None
        self.base.rewind(step)
        self.spikes = [sp for sp in self.spikes if sp["recovered_step"] < step]

    def unchecked(self, st: State) -> dict[Kind, str]:
        if not st.loss.n:
            return {Kind.LOSS_SPIKE: "no train/loss logged"}
        if st.loss.n < SPIKE_MIN_POINTS + 1:
            return {
                Kind.LOSS_SPIKE: f"only {st.loss.n} train/loss points; spikes need "
                f"{SPIKE_MIN_POINTS + 1} (a trailing baseline)"
            }
        return {}


def _spike_limit(median: float, st: State) -> float:
    """The loss a spike must reach: 3x the trailing median, or — when that is further than a
    loss can go (a language model's loss cannot triple) — 40% of the way back to the
    no-learning level."""
    ref = st.reference_loss()
    excess = (SPIKE_MIN_RATIO - 1.0) * median
    if ref is not None and ref > median:
        excess = min(excess, SPIKE_BACK * (ref - median))
    return median + excess


def _band(initial: float, best: float) -> float:
    """The top of the healthy band of the loss level: max(initial, 1.5 x best), sign-aware."""
    return max(initial, times(best, BAND_BEST))


def _times_text(level: float, best: float) -> str:
    """ "4.2x" (its best) for a positive best; "1.3 above" (its best) for one at or below 0."""
    if best > NOISE_FLOOR:
        return f"{level / best:.1f}x"
    return f"{fmt(level - best)} above"
