"""Match findings (and baseline stops) to the suite's labels; per-kind scores and tables.

Rules (also written into RESULTS.md):
- A run is *positive* for a kind when the kind is in its confirmed `expected` list. A finding of
  that kind at or after the onset (step-level kinds: up to `STEP_TOLERANCE` steps before it, since
  the onset is read off a smoothed curve) is a detection; the first one gives the delay. A
  finding only before the onset is counted as `early` and is not a detection.
- A finding of a kind the run is neither labelled with nor `allowed` to show is a false
  positive for that kind. precision = detected positives / (detected positives + false-positive
  runs); recall = detected positives / positives.
- Delay in evaluations = number of evaluations (steps with an `eval/*` value) after the onset up
  to and including the finding's step; delay in steps = finding step - onset.
- A healthy control (no intended kind) with any finding above `info` is a false alarm.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from common import KINDS

STEP_LEVEL = ("divergence", "loss_spike", "exploding_gradients")
STEP_TOLERANCE = 25
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
BASELINE_KINDS = ("overfitting", "plateau", "divergence")


@dataclass
class RunResult:
    """Everything the scores need about one run."""

    name: str
    split: str
    family: str
    scenario: str
    expected: dict[str, int]  # kind -> onset step
    allowed: set[str]
    healthy: bool
    eval_steps: np.ndarray
    findings: list[tuple[str, int, str]] | None  # (kind, step, severity); None: no tunescope
    unchecked: dict[str, str] = field(default_factory=dict)
    stops: dict[str, tuple[int, str] | None] = field(default_factory=dict)  # baseline -> stop
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> label evidence


def _evals_between(r: RunResult, onset: int, step: int) -> int:
    e = r.eval_steps
    return (
        int(((e > onset) & (e <= step)).sum())
        if step >= onset
        else -int(((e > step) & (e <= onset)).sum())
    )


def _first_hit(r: RunResult, kind: str, steps: Iterable[int]) -> tuple[int | None, bool]:
    """(first detection step at/after the onset, whether anything came before it)."""
    onset = r.expected[kind]
    start = onset - (STEP_TOLERANCE if kind in STEP_LEVEL else 0)
    steps = sorted(steps)
    hit = next((s for s in steps if s >= start), None)
    return hit, any(s < start for s in steps)


@dataclass
class KindScore:
    kind: str
    positives: int = 0
    detected: int = 0
    early: int = 0
    false_pos: int = 0
    unchecked: int = 0
    delays_evals: list[int] = field(default_factory=list)
    delays_steps: list[int] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false_runs: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        n = self.detected + self.false_pos
        return self.detected / n if n else None

    @property
    def recall(self) -> float | None:
        return self.detected / self.positives if self.positives else None


def _median(xs: Sequence[int]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def score_kinds(results: Sequence[RunResult], min_severity: str = "info") -> dict[str, KindScore]:
    """Per-kind precision, recall, delay of tunescope's findings."""
    floor = SEVERITY_RANK[min_severity]
    out = {k: KindScore(k) for k in KINDS}
    for r in results:
        if r.findings is None:
            continue
        by_kind: dict[str, list[int]] = {}
        for kind, step, sev in r.findings:
            if SEVERITY_RANK[sev] >= floor:
                by_kind.setdefault(kind, []).append(step)
        for kind, sc in out.items():
            steps = by_kind.get(kind, [])
            if kind in r.expected:
                sc.positives += 1
                sc.unchecked += kind in r.unchecked
                hit, early = _first_hit(r, kind, steps)
                sc.early += early and hit is None
                if hit is None:
                    sc.missed.append(r.name)
                    continue
                sc.detected += 1
                sc.delays_evals.append(_evals_between(r, r.expected[kind], hit))
                sc.delays_steps.append(hit - r.expected[kind])
            elif steps and kind not in r.allowed:
                sc.false_pos += 1
                sc.false_runs.append(f"{r.name}@{min(steps)}")
    return out


def healthy_alarms(results: Sequence[RunResult]) -> tuple[int, list[str]]:
    """(healthy controls scored, list of 'run: kinds' with a finding above info)."""
    n, flagged = 0, []
    for r in results:
        if not r.healthy or r.findings is None:
            continue
        n += 1
        loud = sorted({k for k, _, sev in r.findings if SEVERITY_RANK[sev] > 0})
        if loud:
            flagged.append(f"{r.name}: {', '.join(loud)}")
    return n, flagged


def score_baseline(results: Sequence[RunResult], baseline: str) -> dict[str, Any]:
    """Recall / delay per kind a stop can stand for, and where the baseline stops."""
    per_kind: dict[str, dict[str, Any]] = {}
    for kind in BASELINE_KINDS:
        pos = [r for r in results if kind in r.expected]
        hits, early, d_evals, d_steps = 0, 0, [], []
        for r in pos:
            stop = r.stops.get(baseline)
            if stop is None:
                continue
            hit, was_early = _first_hit(r, kind, [stop[0]])
            if hit is None:
                early += was_early
                continue
            hits += 1
            d_evals.append(_evals_between(r, r.expected[kind], hit))
            d_steps.append(hit - r.expected[kind])
        per_kind[kind] = {
            "positives": len(pos),
            "detected": hits,
            "early": early,
            "delay_evals": _median(d_evals),
            "delay_steps": _median(d_steps),
        }
    healthy = [r for r in results if r.healthy]
    stopped = [r for r in results if r.stops.get(baseline) is not None]
    return {
        "kinds": per_kind,
        "healthy": len(healthy),
        "healthy_stopped": sum(r.stops.get(baseline) is not None for r in healthy),
        "stops": len(stopped),
        "stops_on_other": sum(
            not r.healthy and not set(r.expected) & set(BASELINE_KINDS) for r in stopped
        ),
    }


def fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def kind_table(scores: dict[str, KindScore]) -> str:
    lines = [
        "| kind | positives | detected | recall | false-positive runs | precision | early only | median delay (evals) | median delay (steps) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, sc in scores.items():
        lines.append(
            f"| {kind} | {sc.positives} | {sc.detected} | {fmt(sc.recall)} | {sc.false_pos} | "
            f"{fmt(sc.precision)} | {sc.early} | {fmt(_median(sc.delays_evals), 1)} | "
            f"{fmt(_median(sc.delays_steps), 0)} |"
        )
    return "\n".join(lines)


def comparison_table(results: Sequence[RunResult], scores: dict[str, KindScore] | None) -> str:
    """tunescope vs the early-stopping baselines on the kinds a stop can stand for."""
    cols = ["tunescope", *[b for b in ("hf-p1", "hf-p3", "lightning-p3")]]
    base = {b: score_baseline(results, b) for b in cols[1:]}
    lines = [
        "| kind | " + " | ".join(f"{c} recall | {c} delay (evals)" for c in cols) + " |",
        "|---|" + "---:|" * (2 * len(cols)),
    ]
    for kind in BASELINE_KINDS:
        cells = []
        if scores is None:
            cells += ["n/a", "n/a"]
        else:
            sc = scores[kind]
            cells += [f"{sc.detected}/{sc.positives}", fmt(_median(sc.delays_evals), 1)]
        for b in cols[1:]:
            k = base[b]["kinds"][kind]
            cells += [f"{k['detected']}/{k['positives']}", fmt(k["delay_evals"], 1)]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    n_h, flagged = healthy_alarms(results)
    cells = ["n/a", ""] if scores is None else [f"{len(flagged)}/{n_h}", ""]
    for b in cols[1:]:
        cells += [f"{base[b]['healthy_stopped']}/{base[b]['healthy']}", ""]
    lines.append("| false alarms on healthy runs | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stops_table(results: Sequence[RunResult]) -> str:
    """Where each baseline stops: on which kind of run."""
    lines = [
        "| baseline | runs stopped | healthy | overfitting | plateau | divergence | runs of other kinds | early (before onset) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in ("hf-p1", "hf-p3", "lightning-p3"):
        s = score_baseline(results, b)
        k = s["kinds"]
        early = sum(k[x]["early"] for x in BASELINE_KINDS)
        lines.append(
            f"| {b} | {s['stops']}/{len(results)} | {s['healthy_stopped']}/{s['healthy']} | "
            f"{k['overfitting']['detected']}/{k['overfitting']['positives']} | "
            f"{k['plateau']['detected']}/{k['plateau']['positives']} | "
            f"{k['divergence']['detected']}/{k['divergence']['positives']} | "
            f"{s['stops_on_other']} | {early} |"
        )
    return "\n".join(lines)


def targets_table(results: Sequence[RunResult], scores: dict[str, KindScore]) -> str:
    """The issue's targets, met or not, on these runs."""
    n_h, flagged = healthy_alarms(results)
    worst_p = min((s.precision for s in scores.values() if s.precision is not None), default=None)
    worst_r = min((s.recall for s in scores.values() if s.recall is not None), default=None)
    # a kind with no positives or no detections has no precision: that counts as not met
    low_p = [k for k, s in scores.items() if s.precision is None or s.precision < 0.9]
    low_r = [k for k, s in scores.items() if s.recall is None or s.recall < 0.9]
    of = _median(scores["overfitting"].delays_evals)
    nonfinite = []  # steps from the first non-finite value to the divergence finding
    for r in results:
        if r.findings is None or "first_nonfinite_step" not in r.evidence.get("divergence", {}):
            continue
        onset = r.expected["divergence"]
        hit, _ = _first_hit(r, "divergence", [s for k, s, _ in r.findings if k == "divergence"])
        nonfinite.append(None if hit is None else hit - onset)
    within = sum(d is not None and 0 <= d <= 1 for d in nonfinite)

    def ok(flag: bool) -> str:
        return "met" if flag else "**not met**"

    rows = [
        ("precision >= 0.9 for every kind", f"lowest {fmt(worst_p)}", ok(not low_p)),
        ("recall >= 0.9 for every kind", f"lowest {fmt(worst_r)}", ok(not low_r)),
        (
            "<= 1 healthy run in 20 with a finding above info",
            f"{len(flagged)}/{n_h}",
            ok(len(flagged) * 20 <= max(n_h, 1)),
        ),
        (
            "overfitting flagged at median <= 2 evaluations after onset",
            fmt(of, 1),
            ok(of is not None and of <= 2),
        ),
        (
            "non-finite values flagged within 1 step",
            f"{within}/{len(nonfinite)}",
            ok(within == len(nonfinite)),
        ),
    ]
    lines = ["| target | measured | |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if low_p or low_r:
        lines += [
            "",
            f"Below 0.9: precision — {', '.join(low_p) or 'none'}; recall — {', '.join(low_r) or 'none'}.",
        ]
    return "\n".join(lines)


def _stop_step(stop: tuple[int, str] | None) -> str:
    return "—" if stop is None else str(stop[0])


def detail_table(results: Sequence[RunResult]) -> str:
    """One line per run: labels, tunescope's findings, where each baseline stopped."""
    lines = [
        "| run | split | expected (kind@onset) | tunescope findings (kind@step severity) | hf-p1 | hf-p3 | lightning-p3 |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: r.name):
        exp = ", ".join(f"{k}@{s}" for k, s in r.expected.items()) or "healthy"
        if r.findings is None:
            found = "n/a"
        else:
            firsts: dict[tuple[str, str], int] = {}
            for kind, step, sev in r.findings:
                firsts.setdefault((kind, sev), step)
            found = (
                ", ".join(
                    f"{k}@{s} {sev}" for (k, sev), s in sorted(firsts.items(), key=lambda x: x[1])
                )
                or "—"
            )
        stops = [_stop_step(r.stops.get(b)) for b in ("hf-p1", "hf-p3", "lightning-p3")]
        lines.append(f"| {r.name} | {r.split} | {exp} | {found} | " + " | ".join(stops) + " |")
    return "\n".join(lines)
