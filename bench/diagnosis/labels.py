"""Hindsight checks: did each scenario produce the behaviour it was built to produce?

Labels come from the scenario (what was done to the run) and are *confirmed* here from the
whole recorded run, looking at the future the way no online detector can. Nothing here calls
tunescope's detectors. For every run and every kind:

- an intended kind must be confirmed (`positive`), and its onset step is computed here;
- a kind that is neither intended nor allowed must be clearly absent (`negative`);
- anything in between (an overfitting run whose eval loss rose only 6%, a replay run whose
  retain accuracy dipped 2.5 points) is ambiguous: the run is excluded and the reason kept.

Thresholds are deliberately two-sided (positive needs a clear signal, negative a clear absence)
so that no label sits on a knife edge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Curves = dict[str, tuple[np.ndarray, np.ndarray]]  # metric -> (steps, values), in log order


@dataclass
class Verdict:
    """The outcome of one hindsight check: positive, negative or ambiguous (neither)."""

    positive: bool
    negative: bool
    onset_step: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ambiguous(self) -> bool:
        return not self.positive and not self.negative


def curves(rows: Iterable[Any]) -> Curves:
    """Group `tunescope.io.csv.Row`s (or anything with step/metric/value) by metric."""
    acc: dict[str, tuple[list[int], list[float]]] = {}
    for r in rows:
        s, v = acc.setdefault(r.metric, ([], []))
        s.append(int(r.step))
        v.append(float(r.value))
    return {k: (np.asarray(s, dtype=np.int64), np.asarray(v)) for k, (s, v) in acc.items()}


def _get(c: Curves, key: str) -> tuple[np.ndarray, np.ndarray]:
    if key not in c:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return c[key]


def _r(x: float) -> float:
    return float(f"{x:.6g}") if math.isfinite(x) else x


def ema(values: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    out = np.empty_like(values)
    acc = values[0]
    for i, v in enumerate(values):
        acc = alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


# -- overfitting --------------------------------------------------------------------------------
def overfitting(c: Curves, facts: Mapping[str, Any]) -> Verdict:
    """Onset = step of minimum eval loss; positive only if eval loss then rises >=10% (and stays
    >=5% above the minimum for the last two evaluations) while train loss keeps falling."""
    es, ev = _get(c, "eval/loss")
    ts, tv = _get(c, "train/loss")
    ok = np.isfinite(ev)
    es, ev = es[ok], ev[ok]
    if len(ev) < 4 or not np.isfinite(tv).all():
        return Verdict(False, not np.isfinite(tv).all() or len(ev) >= 2)
    i = int(np.argmin(ev))
    best, onset = float(ev[i]), int(es[i])
    tail = float(np.mean(ev[-2:]))
    gl = tail / best - 1.0
    after = ts > onset
    before = (ts <= onset) & (ts > onset - max(20, int(0.1 * ts.max())))
    falling = False
    if after.sum() >= 4 and before.sum() >= 2:
        late = tv[after][len(tv[after]) // 2 :]
        falling = float(np.median(late)) < 0.9 * float(np.median(tv[before]))
    ev_after = ev[i + 1 :]
    positive = i <= len(ev) - 3 and gl >= 0.10 and bool((ev[-2:] >= 1.05 * best).all()) and falling
    negative = gl < 0.05 or len(ev_after) == 0 or not falling
    evidence = {
        "min_eval_loss": _r(best),
        "eval_loss_end": _r(tail),
        "gl_end": _r(gl),
        "train_loss_falling": falling,
    }
    return Verdict(positive, negative and not positive, onset if positive else None, evidence)


# -- underfitting -------------------------------------------------------------------------------
def underfitting(c: Curves, facts: Mapping[str, Any]) -> Verdict:
    """Eval accuracy within 5 points of the majority class (or eval loss >= 0.95 ln C) over the
    whole second half; onset = first evaluation after 25% of the budget where that holds."""
    majority, chance = facts.get("majority_accuracy"), facts.get("chance_loss")
    as_, av = _get(c, "eval/accuracy")
    _es, ev = _get(c, "eval/loss")
    max_steps = int(facts["max_steps"])
    if majority is None or len(av) < 4:
        return Verdict(False, True)
    fail = av <= majority + 0.05
    if chance is not None and len(ev) == len(av):
        fail = fail | (ev >= 0.95 * chance)
    half = as_ >= max_steps / 2
    positive = bool(fail[half].all())
    onset = None
    if positive:
        later = np.nonzero((as_ >= 0.25 * max_steps) & fail)[0]
        # the failure must hold from this evaluation on
        for j in later:
            if fail[j:].all():
                onset = int(as_[j])
                break
    best = float(np.nanmax(av))
    negative = best >= majority + 0.20 and float(av[-1]) >= majority + 0.15
    return Verdict(
        positive and onset is not None,
        negative,
        onset,
        {
            "majority_accuracy": _r(majority),
            "best_eval_accuracy": _r(best),
            "final": _r(float(av[-1])),
        },
    )


# -- forgetting ---------------------------------------------------------------------------------
def forgetting(c: Curves, facts: Mapping[str, Any]) -> Verdict:
    """Retain accuracy > 3 points (or retain loss > 10%) worse than at step 0, persistently;
    onset = first evaluation from which it stays that bad. Negative: never > 1.5 points (5%)."""
    if "retain/accuracy" in c:
        rs, rv = c["retain/accuracy"]
        drop = rv[0] - rv  # points lost (as a fraction)
        bad, clean = drop > 0.03, drop <= 0.02
        what = {"retain_accuracy_0": _r(float(rv[0])), "retain_accuracy_end": _r(float(rv[-1]))}
    elif "retain/loss" in c:
        rs, rv = c["retain/loss"]
        rise = rv / rv[0] - 1.0
        bad, clean = rise > 0.10, rise <= 0.05
        what = {"retain_loss_0": _r(float(rv[0])), "retain_loss_end": _r(float(rv[-1]))}
    else:
        return Verdict(False, True)
    if rs[0] != 0:
        raise ValueError("retain metrics must be measured at step 0, before fine-tuning")
    onset = next((int(rs[j]) for j in range(1, len(rs)) if bad[j:].all()), None)
    positive = onset is not None
    return Verdict(positive, bool(clean.all()), onset, what)


# -- divergence ---------------------------------------------------------------------------------
def _nonfinite_step(c: Curves) -> int | None:
    first: int | None = None
    for key in ("train/loss", "train/grad_norm"):
        s, v = _get(c, key)
        bad = np.nonzero(~np.isfinite(v))[0]
        if len(bad):
            step = int(s[bad[0]])
            first = step if first is None else min(first, step)
    return first


def _band_exit(c: Curves) -> tuple[int | None, bool]:
    """Onset of a train-loss EMA that ends above max(initial, 1.5 x best EMA) and stays there:
    the step it last rose above 1.5 x its best; and whether it ever left the band at all."""
    s, v = _get(c, "train/loss")
    if len(v) < 20:
        return None, False
    e = ema(v)
    initial = float(np.median(v[:5]))
    best = np.minimum.accumulate(e)
    above = e > np.maximum(initial, 1.5 * best)
    if not above.any():
        return None, False
    # the run must stay out of the band until the end (it did not come back)
    last_in = np.nonzero(~above)[0]
    start = 0 if len(last_in) == 0 else int(last_in[-1]) + 1
    if start >= len(e) or len(e) - start < 10:
        return None, True
    # the excursion began where the EMA last left 1.5x its best (it may have climbed back to
    # the initial loss only later)
    while start > 0 and e[start - 1] > 1.5 * best[start - 1]:
        start -= 1
    return int(s[start]), True


def divergence(c: Curves, facts: Mapping[str, Any]) -> Verdict:
    """Onset = first non-finite loss/grad norm, else first step of a train-loss EMA that leaves
    the healthy band (above max(initial, 1.5 x best)) and never comes back."""
    nf = _nonfinite_step(c)
    if nf is not None:
        return Verdict(True, False, nf, {"first_nonfinite_step": nf})
    onset, left = _band_exit(c)
    if onset is not None:
        return Verdict(True, False, onset, {"ema_left_band_at": onset})
    # an excursion that comes back (a loss spike) is not divergence
    return Verdict(False, True, None, {"ema_left_band_briefly": left})


# -- loss spike ---------------------------------------------------------------------------------
def _spike_threshold(base: float, mad: float, chance: float) -> float:
    """Excess over the trailing median that makes a spike: 2x the median, or 40% of the way to
    the chance-level loss (a language model's loss cannot triple), and 8 MADs of the noise."""
    return max(min(2.0 * base, 0.4 * max(chance - base, 0.0)), 8.0 * mad)


def _worst_spike(s: np.ndarray, v: np.ndarray, chance: float) -> float:
    """Largest excess of a train loss over the median of the 50 before it, as a multiple of
    the spike threshold (after 20 steps; >= 1 is a spike)."""
    worst = 0.0
    for j in range(20, len(v)):
        window = v[max(0, j - 50) : j]
        base = float(np.median(window))
        mad = float(np.median(np.abs(window - base)))
        worst = max(worst, float(v[j] - base) / max(_spike_threshold(base, mad, chance), 1e-12))
    return worst


def loss_spike(c: Curves, facts: Mapping[str, Any]) -> Verdict:
    """A spike at the injected fault (see `_spike_threshold`) within 3 steps of it, whose
    10-step median comes back within a quarter of the spike's height within 100 steps.
    Negative (no fault injected): nothing reaching 2x the spike threshold anywhere."""
    s, v = _get(c, "train/loss")
    if not np.isfinite(v).all():
        return Verdict(False, True, None, {"reason": "non-finite loss: divergence, not a spike"})
    chance = float(facts.get("chance_loss") or 10.0)
    fault = facts.get("fault_step")
    if fault is None:
        worst = _worst_spike(s, v, chance)
        return Verdict(False, worst < 2, None, {"worst_excess_over_threshold": _r(worst)})
    pre = v[(s < fault) & (s >= fault - 50)]
    if len(pre) < 10:
        return Verdict(False, False, None, {"reason": "no trailing window before the fault"})
    base = float(np.median(pre))
    limit = base + _spike_threshold(base, float(np.median(np.abs(pre - base))), chance)
    window = np.nonzero((s >= fault) & (s <= fault + 3))[0]
    hits = [j for j in window if v[j] > limit]
    if not hits:
        return Verdict(False, False, None, {"trailing_median": _r(base), "limit": _r(limit)})
    j0 = hits[0]
    peak = float(v[hits].max())
    recovered_at = None
    for j in range(j0 + 1, len(v) - 9):
        if s[j] > s[j0] + 100:
            break
        if float(np.median(v[j : j + 10])) <= base + 0.25 * (peak - base):
            recovered_at = int(s[j])
            break
    evidence = {
        "trailing_median": _r(base),
        "peak": _r(peak),
        "recovered_at": recovered_at,
    }
    return Verdict(recovered_at is not None, False, int(s[j0]), evidence)


# -- learning rate ------------------------------------------------------------------------------
def _best_eval(c: Curves) -> float:
    _, ev = _get(c, "eval/loss")
    ev = ev[np.isfinite(ev)]
    return float(ev.min()) if len(ev) else math.inf


def lr_too_high(c: Curves, facts: Mapping[str, Any], ref: Curves | None) -> Verdict:
    """The best eval loss stays >= 20% of the reference run's improvement short of the
    reference's best (same seed, base learning rate), or train loss returns to the chance level
    after having been well below it. Negative: within 5%."""
    if ref is None:
        return Verdict(False, False, None, {"reason": "no reference run"})
    mine, theirs = _best_eval(c), _best_eval(ref)
    _, rv = _get(ref, "eval/loss")
    gap = (mine - theirs) / max(float(rv[0]) - theirs, 1e-12)
    s, v = _get(c, "train/loss")
    collapsed = False
    chance = facts.get("chance_loss")
    if chance is not None and len(v) > 20:
        e = ema(v[np.isfinite(v)])
        collapsed = bool(e.min() < 0.7 * chance and e[-1] >= 0.9 * chance)
    onset = int(s[0]) if len(s) else 1
    evidence = {"best_eval_loss": _r(mine), "reference_best": _r(theirs), "gap": _r(gap)}
    return Verdict(gap >= 0.2 or collapsed, gap <= 0.05 and not collapsed, onset, evidence)


def lr_too_low(c: Curves, facts: Mapping[str, Any], ref: Curves | None) -> Verdict:
    """The eval loss moved less than 15% of the distance the reference run covered."""
    if ref is None:
        return Verdict(False, False, None, {"reason": "no reference run"})
    _, ev = _get(c, "eval/loss")
    _, rv = _get(ref, "eval/loss")
    mine = float(ev[0] - np.nanmin(ev))
    theirs = float(rv[0] - np.nanmin(rv))
    frac = mine / theirs if theirs > 0 else math.inf
    s, _ = _get(c, "train/loss")
    onset = int(s[0]) if len(s) else 1
    evidence = {"eval_loss_drop": _r(mine), "reference_drop": _r(theirs), "fraction": _r(frac)}
    return Verdict(frac <= 0.15, frac >= 0.5, onset, evidence)


# -- plateau ------------------------------------------------------------------------------------
PLATEAU_EPS = 0.01  # relative improvement of the best eval loss that counts as progress
PLATEAU_WINDOW = 5  # evaluations


def plateau(c: Curves, facts: Mapping[str, Any]) -> Verdict:
    """Positive: from some evaluation on, no window of 5 evaluations improves the best eval loss
    by 1% (relative) — to the end of the run, >= 6 evaluations and >= 25% of them — and the run
    does not overfit; onset = that evaluation. Negative: every 5-evaluation window (once the
    loss has started to fall) improves it by >= 1%, or the run overfits (a plateau is the
    absence of that signature)."""
    es, ev = _get(c, "eval/loss")
    ok = np.isfinite(ev)
    es, ev = es[ok], ev[ok]
    n = len(ev)
    if n < 6:
        return Verdict(False, True)
    if overfitting(c, facts).positive:
        return Verdict(False, True, None, {"overfits": True})
    best = np.minimum.accumulate(ev)
    w = PLATEAU_WINDOW
    stalled = np.array([best[min(i + w, n - 1)] >= best[i] * (1 - PLATEAU_EPS) for i in range(n)])
    moved = ev < ev[0] - 0.05 * max(float(ev[0] - best[-1]), 1e-12)
    onset = None
    for j in range(1, n):
        if stalled[j:].all():
            if n - 1 - j >= max(6, n // 4):
                onset = int(es[j])
            break
    stalls = [int(es[j]) for j in range(1, n - w) if moved[j] and stalled[j]]
    evidence = {"evals": n, "first_stall": stalls[0] if stalls else None}
    return Verdict(onset is not None, not stalls and onset is None, onset, evidence)


# -- gradients ----------------------------------------------------------------------------------
def exploding_gradients(c: Curves, facts: Mapping[str, Any]) -> Verdict:
    """Pre-clip grad norm > 10x its trailing median (previous 50 steps, >= 10 of them), or
    non-finite; onset = first such step. Negative: never above 5x."""
    s, v = _get(c, "train/grad_norm")
    if len(v) < 20:
        return Verdict(False, True)
    worst, onset = 0.0, None
    for j in range(10, len(v)):
        window = v[max(0, j - 50) : j]
        window = window[np.isfinite(window)]
        if len(window) < 10:
            continue
        ratio = float(v[j] / max(np.median(window), 1e-12)) if np.isfinite(v[j]) else math.inf
        if ratio > 10 and onset is None:
            onset = int(s[j])
        worst = max(worst, ratio)
    return Verdict(
        onset is not None, worst <= 5, onset, {"max_ratio_to_trailing_median": _r(worst)}
    )


def vanishing_gradients(c: Curves, facts: Mapping[str, Any]) -> Verdict:
    """Bottom-layer grad norm < 1e-3 of the top layer's (median over the run) or < 1e-4, while
    train loss stays >= 0.9 ln C for the first half; onset = first step logged."""
    bs, bv = _get(c, "train/grad_norm/bottom")
    _, tv = _get(c, "train/grad_norm/top")
    if len(tv) != len(bv):
        return Verdict(False, False, None, {"reason": "bottom and top logged at different steps"})
    ok = np.isfinite(bv) & np.isfinite(tv)
    bs, bv, tv = bs[ok], bv[ok], tv[ok]
    if len(bv) < 5:
        return Verdict(False, True)
    ratio = float(np.median(bv / np.maximum(tv, 1e-30)))
    bottom = float(np.median(bv))
    _s, v = _get(c, "train/loss")
    chance = facts.get("chance_loss")
    stuck = chance is not None and float(np.median(v[: len(v) // 2])) >= 0.9 * chance
    positive = (ratio < 1e-3 or bottom < 1e-4) and stuck
    evidence = {"median_bottom_top_ratio": _r(ratio), "median_bottom": _r(bottom)}
    return Verdict(
        positive, ratio > 1e-2 and bottom > 1e-3, int(bs[0]) if positive else None, evidence
    )


CHECKS = {
    "overfitting": overfitting,
    "underfitting": underfitting,
    "forgetting": forgetting,
    "divergence": divergence,
    "loss_spike": loss_spike,
    "plateau": plateau,
    "exploding_gradients": exploding_gradients,
    "vanishing_gradients": vanishing_gradients,
}
REFERENCED = {"lr_too_high": lr_too_high, "lr_too_low": lr_too_low}


def check(kind: str, c: Curves, facts: Mapping[str, Any], ref: Curves | None = None) -> Verdict:
    """Run the hindsight check for one kind."""
    if kind in REFERENCED:
        return REFERENCED[kind](c, facts, ref)
    return CHECKS[kind](c, facts)


def label(
    intended: Iterable[str],
    allowed: Iterable[str],
    c: Curves,
    facts: Mapping[str, Any],
    ref: Curves | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Confirm a run's labels: (expected kinds with onsets, None) or ([], why it is excluded)."""
    intended, allowed = list(intended), set(allowed)
    expected: list[dict[str, Any]] = []
    for kind in intended:
        v = check(kind, c, facts, ref)
        if not v.positive:
            return [], f"{kind} not confirmed: {v.evidence}"
        expected.append({"kind": kind, "onset_step": v.onset_step, "evidence": v.evidence})
    for kind in (*CHECKS, *REFERENCED):
        if kind in intended or kind in allowed:
            continue
        if kind in REFERENCED and (ref is None or set(REFERENCED) & set(intended)):
            # lr checks need a reference run; and a run whose lr was moved one way is not
            # checked for the other way
            continue
        v = check(kind, c, facts, ref)
        if not v.negative:
            state = "present" if v.positive else "ambiguous"
            return [], f"unintended {kind} {state}: {v.evidence}"
    return expected, None
