"""Catastrophic forgetting: what the model knew before fine-tuning, measured on a retain set.

Each `retain/*` metric is compared with its first recorded value (logged before or at the start
of fine-tuning): a loss up by more than 10% (a perplexity: its log, the loss), or an accuracy-like score down by
more than 3 points, for two retain evaluations in a row. `probe/cka` (representation similarity
to the pretrained model) and `probe/param_drift` (‖θ−θ₀‖/‖θ₀‖) are reported as supporting,
label-free evidence; CKA alone raises a finding only when it has fallen below 0.5.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..values import fmt
from .detector import PROBE, RETAIN, Signal, pct, resolved
from .findings import Kind, Recommendation, Severity
from .state import EvalTrack, State, relative_rise

LOSS_RISE = 0.10  # retain loss/perplexity up 10% over its first value
SCORE_DROP = 0.03  # retain accuracy-like score down 3 points
CRITICAL_FACTOR = 3.0  # three times the threshold: critical
PERSIST = 2  # retain evaluations in a row beyond the threshold
CKA_MIN = 0.5  # with no retain metric: CKA to the pretrained model below this
SUMMARY_PROBES = ("probe/cka", "probe/param_drift")  # the summaries named in the message


def degradation(ev: EvalTrack, value: float) -> tuple[float, float]:
    """(how much worse than the first value, the threshold for it) for a retain metric."""
    base = ev.first
    if ev.higher:
        scale = 100.0 if base > 1.5 else 1.0
        return (base - value) / scale, SCORE_DROP
    return relative_rise(ev.key, value, base), LOSS_RISE


class ForgettingDetector:
    """Retain-set metrics worse than before fine-tuning; CKA/drift as supporting evidence."""

    kinds: ClassVar[tuple[Kind, ...]] = (Kind.FORGETTING,)
    channels: ClassVar[int] = RETAIN | PROBE

    def __init__(self) -> None:
        self.metric = ""
        self.since = -1

    def check(self, step: int, st: State, touched: int) -> list[Signal]:
        worst = self._worst(st)
        if worst is None:
            if self.metric and touched & (RETAIN if st.retain else PROBE):
                metric, self.metric = self.metric, ""
                return [resolved(Kind.FORGETTING, metric)]
            return []
        if not self.metric:
            self.metric, self.since = worst["metric"], step
        return [self._signal(st, worst)]

    def _worst(self, st: State) -> dict[str, Any] | None:
        worst: dict[str, Any] | None = None
        for key in sorted(st.retain):
            ev = st.retain[key]
            if len(ev) < PERSIST + 1:
                continue
            recent = [degradation(ev, v) for v in ev.values[-PERSIST:]]
            if any(d != d or d < thr for d, thr in recent):
                continue
            d, thr = recent[-1]
            score = d / thr
            if worst is None or score > worst["score"]:
                worst = {
                    "metric": key,
                    "first": ev.first,
                    "value": ev.last,
                    "change": d,
                    "threshold": thr,
                    "score": score,
                    "higher": ev.higher,
                }
        if worst is not None and not worst["higher"]:
            # Only a retain loss rose: with a retain score (accuracy) that holds, the model is
            # less confident on the old data but still right — reported as info.
            scores = [ev for ev in st.retain.values() if ev.higher and len(ev) > PERSIST]
            if scores and all(degradation(ev, ev.last)[0] < SCORE_DROP for ev in scores):
                worst["score_holds"] = scores[0].key
        if worst is None and not st.retain:
            cka = self._cka(st)
            if (
                cka is not None
                and cka.last < CKA_MIN
                and cka.values[-PERSIST:]
                and max(cka.values[-PERSIST:]) < CKA_MIN
            ):
                worst = {
                    "metric": cka.key,
                    "first": cka.first,
                    "value": cka.last,
                    "change": cka.first - cka.last,
                    "threshold": CKA_MIN,
                    "score": 1.0,
                    "higher": True,
                    "rule": "cka",
                }
        return worst

    @staticmethod
    def _cka(st: State) -> EvalTrack | None:
        for key in sorted(st.probes):
            if "cka" in key and len(st.probes[key]) >= PERSIST:
                return st.probes[key]
        return None

    def _signal(self, st: State, w: dict[str, Any]) -> Signal:
        sev = Severity.CRITICAL if w["score"] >= CRITICAL_FACTOR else Severity.WARNING
        if "score_holds" in w:
            sev = Severity.INFO
        if w.get("rule") == "cka":
            what = (
                f"{w['metric']} fell to {fmt(w['value'])} (from {fmt(w['first'])}), below {CKA_MIN}"
            )
        elif w["higher"]:
            what = (
                f"{w['metric']} fell {w['change'] * 100:.1f} points from its value before "
                f"fine-tuning ({fmt(w['first'])} -> {fmt(w['value'])})"
            )
        else:
            what = (
                f"{w['metric']} rose {pct(w['change'])} over its value before fine-tuning "
                f"({fmt(w['first'])} -> {fmt(w['value'])})"
            )
        support = []
        evidence: dict[str, Any] = {k: v for k, v in w.items() if k not in ("score", "higher")}
        evidence["since_step"] = self.since
        for key in sorted(st.probes):
            p = st.probes[key]
            if len(p):
                evidence[key] = {"first": p.first, "last": p.last}
        # the sentence names the two summaries only; every per-layer value is in the evidence
        for key in SUMMARY_PROBES:
            if key in st.probes and len(p := st.probes[key]):
                support.append(f"{key} {fmt(p.first)} -> {fmt(p.last)}")
        tail = f" ({', '.join(support)})" if support and w.get("rule") != "cka" else ""
        if "score_holds" in w:
            held = st.retain[w["score_holds"]]
            tail += f"; {held.key} holds at {fmt(held.last)} (from {fmt(held.first)})"
        msg = f"{what}{tail}: forgetting."
        rec = Recommendation(
            "Lower the learning rate (x0.5), freeze the lower layers or use LoRA / linear-probe-"
            "then-fine-tune, or mix retain data into training.",
            {"action": "scale_lr", "factor": 0.5},
        )
        return Signal(Kind.FORGETTING, self.metric, sev, msg, evidence, rec, headline=w["score"])

    def rewind(self, step: int, st: State) -> None:
        if self.since >= step:
            self.metric, self.since = "", -1

    def unchecked(self, st: State) -> dict[Kind, str]:
        if not st.retain and self._cka(st) is None:
            return {
                Kind.FORGETTING: "no retain/* metric (a retain set evaluated before and during "
                "fine-tuning) and no probe/cka logged"
            }
        if st.retain and all(len(ev) < PERSIST + 1 for ev in st.retain.values()):
            return {
                Kind.FORGETTING: f"fewer than {PERSIST + 1} evaluations of each retain/* metric"
            }
        return {}
