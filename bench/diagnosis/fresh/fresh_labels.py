"""The hindsight checks for the fresh runs: labels.py's, plus one for regression.

labels.py's `underfitting` check reads eval accuracy against the majority class, which a
regression run has not; for a run whose facts say `task: regression` it is replaced by the
same test on the MSE: over the whole second half the eval loss stays >= 0.9 x the chance
MSE (predicting the training mean, ~1.0 on a standardised target) and it never got below
0.85 x chance; clearly absent when the best eval loss is <= 0.8 x chance (a run that learned
and then overfitted back towards chance is overfitting, not underfitting). Everything else is
labels.py unchanged (it never calls tunescope's detectors).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import labels as L
import numpy as np


def underfitting_regression(c: L.Curves, facts: Mapping[str, Any]) -> L.Verdict:
    es, ev = L._get(c, "eval/loss")
    chance = float(facts["chance_loss"])
    max_steps = int(facts["max_steps"])
    ok = np.isfinite(ev)
    if ok.sum() < 4:
        return L.Verdict(False, True)
    fail = ~ok | (ev >= 0.9 * chance)
    half = es >= max_steps / 2
    positive = bool(fail[half].all())
    onset = None
    if positive:
        for j in np.nonzero((es >= 0.25 * max_steps) & fail)[0]:
            if fail[j:].all():
                onset = int(es[j])
                break
    best = float(np.nanmin(ev))
    last = float(ev[ok][-1])
    # it never got well below chance (a run that learned and then overfitted back towards
    # chance is overfitting's business, not underfitting)
    positive = positive and best >= 0.85 * chance
    negative = best <= 0.8 * chance
    evidence = {"chance_mse": L._r(chance), "best_eval_loss": L._r(best), "final": L._r(last)}
    return L.Verdict(positive and onset is not None, negative, onset, evidence)


def label(
    intended: Iterable[str],
    allowed: Iterable[str],
    c: L.Curves,
    facts: Mapping[str, Any],
    ref: L.Curves | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """labels.label, with the regression underfitting check swapped in where it applies."""
    if facts.get("task") != "regression":
        return L.label(intended, allowed, c, facts, ref)
    saved = L.CHECKS["underfitting"]
    L.CHECKS["underfitting"] = underfitting_regression
    try:
        return L.label(intended, allowed, c, facts, ref)
    finally:
        L.CHECKS["underfitting"] = saved
