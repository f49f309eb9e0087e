"""Advice that contradicts the evidence: the checked property of the diagnosis issue.

A finding's advice contradicts the run it is about when it

- says to **raise** the learning rate on a run whose loss or gradient norm blew up at its
  current LR (a non-finite value, a train loss far above where it started, a gradient norm far
  above its early level) — raising it makes the blow-up worse; or
- says to **lower** the learning rate on a run that moves slowly with small, smooth updates
  (a tiny update/weight ratio, or a train loss that creeps down with almost no step-to-step
  noise and never blew up) — lowering it slows the run further.

Only points logged up to the finding's step are read (what the detector could have known).
The rules are independent of tunescope's detectors: they read the raw curves, as a reviewer
would. `contradictions(rows, findings)` returns one sentence per contradicting finding.

    >>> from tunescope.io.csv import Row
    >>> rows = [Row(s, "train/loss", 2.3 if s < 5 else 40.0, None) for s in range(30)]
    >>> bad = {"kind": "underfitting", "step": 29, "recommendation": {"text": "Raise the "
    ...        "learning rate about 10x.", "intervention": {"action": "scale_lr", "factor": 10}}}
    >>> contradictions(rows, [bad])[0].split(":")[0]
    'underfitting@29 advises a higher LR'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

BLOWUP_LOSS = 3.0  # a train loss point this many times its initial level (positive losses)
BLOWUP_GRAD = 10.0  # a gradient norm this many times its early median
EARLY = 10  # points that set the early level
TINY_UPDATE = 1e-4  # update/weight ratio per step: a step too small to be the problem
SMOOTH = 0.01  # robust sigma of the relative step-to-step change of the train loss
MIN_POINTS = 20  # points needed before a curve counts as "moving slowly and smoothly"

_RAISE = re.compile(
    r"\b(raise|increase|higher)\b[^.;]*\blearning rate|learning rate[^.;]*\b(up|higher)\b", re.I
)
_LOWER = re.compile(
    r"\b(lower|reduce|decrease|cut|halve)\b[^.;]*\blearning rate|learning rate[^.;]*\bdown\b", re.I
)


def _lr_direction(rec: Mapping[str, Any]) -> int:
    """+1 when the advice raises the LR, -1 when it lowers it, 0 when it does neither."""
    inter = rec.get("intervention") or {}
    factor = None
    if inter.get("action") == "scale_lr":
        factor = inter.get("factor")
    elif inter.get("action") == "rollback":
        factor = inter.get("lr_factor")
    if isinstance(factor, int | float) and math.isfinite(factor) and factor != 1:
        return 1 if factor > 1 else -1
    text = str(rec.get("text") or "")
    if _RAISE.search(text):
        return 1
    if _LOWER.search(text):
        return -1
    return 0


def _series(rows: Iterable[Any], key: str, until: int) -> np.ndarray:
    return np.array([r.value for r in rows if r.metric == key and r.step <= until], dtype=float)


def blew_up(rows: Sequence[Any], until: int) -> str | None:
    """Why the run blew up at or before `until` (None when it did not)."""
    for key in ("train/loss", "train/grad_norm"):
        v = _series(rows, key, until)
        if len(v) and not np.isfinite(v).all():
            return f"{key} became non-finite"
    loss = _series(rows, "train/loss", until)
    loss = loss[np.isfinite(loss)]
    if len(loss) > EARLY:
        start = float(np.median(loss[:5]))
        if start > 0 and loss.max() >= BLOWUP_LOSS * start:
            return f"train/loss reached {loss.max():.4g}, {loss.max() / start:.1f}x its start"
    grad = _series(rows, "train/grad_norm", until)
    grad = grad[np.isfinite(grad) & (grad > 0)]
    if len(grad) > EARLY:
        early = float(np.median(grad[:EARLY]))
        if early > 0 and grad.max() >= BLOWUP_GRAD * early:
            return f"train/grad_norm reached {grad.max():.4g}, {grad.max() / early:.0f}x its early level"
    return None


def moves_slowly(rows: Sequence[Any], until: int) -> str | None:
    """Why the run moves slowly with small, smooth updates at `until` (None when it does not)."""
    if blew_up(rows, until):
        return None
    upd = _series(rows, "train/update_ratio", until)
    upd = upd[np.isfinite(upd)]
    if len(upd) >= 3:
        med = float(np.median(upd[-10:]))
        return f"update/weight ratio {med:.2g} per step" if med <= TINY_UPDATE else None
    loss = _series(rows, "train/loss", until)
    loss = loss[np.isfinite(loss)]
    if len(loss) < MIN_POINTS or (loss <= 0).any():
        return None
    tail = loss[-MIN_POINTS:]
    rel = np.diff(tail) / tail[:-1]
    q1, q3 = np.quantile(rel, [0.25, 0.75])
    sigma = float(q3 - q1) / 1.349
    falling = tail[-5:].mean() < tail[:5].mean()
    if sigma <= SMOOTH and falling:
        return f"train/loss creeps down smoothly (step-to-step sigma {sigma:.2%})"
    return None


def contradictions(rows: Sequence[Any], findings: Iterable[Mapping[str, Any]]) -> list[str]:
    """One sentence per finding whose LR advice contradicts the run's own evidence."""
    rows = list(rows)
    out = []
    for f in findings:
        rec = f.get("recommendation") or {}
        direction = _lr_direction(rec)
        if not direction:
            continue
        step = int(f.get("last_step", f.get("step", 0)))
        at = f"{f.get('kind')}@{f.get('step')}"
        if direction > 0:
            why = blew_up(rows, step)
            if why:
                out.append(f"{at} advises a higher LR: {why}")
        else:
            why = moves_slowly(rows, step)
            if why:
                out.append(f"{at} advises a lower LR: {why}")
    return out
