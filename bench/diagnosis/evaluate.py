"""Score tunescope's diagnosis on the labelled suite, side by side with early stopping.

    .venv/bin/python bench/diagnosis/evaluate.py                 # print the tables
    .venv/bin/python bench/diagnosis/evaluate.py --write         # also write RESULTS.md

Every run in suite/labels.json that the hindsight checks kept is replayed offline through
`tunescope.diagnose.engine.replay` (the same Monitor the online path uses) and, on its eval
loss, through HF `EarlyStoppingCallback` (patience 1 and 3) and Lightning `EarlyStopping`
(patience 3, check_finite, divergence_threshold). The `tune` and `holdout` splits are reported
separately; the holdout third is never used to tune detectors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from baselines import MONITOR, run_baselines  # noqa: E402
from common import KINDS  # noqa: E402
from scoring import (  # noqa: E402
    RunResult,
    comparison_table,
    detail_table,
    healthy_alarms,
    kind_table,
    score_kinds,
    stops_table,
    targets_table,
)

SUITE = HERE / "suite"
RESULTS = HERE / "RESULTS.md"


def _diagnose_api() -> tuple[Any, Any] | str:
    """(replay, Context) from tunescope.diagnose, or why they cannot be imported."""
    try:
        from tunescope.diagnose.engine import Context, replay
    except ImportError as exc:  # part of the tool not built yet: say so, never fake a result
        return f"tunescope.diagnose is not importable ({exc}); the tunescope column is empty"
    return replay, Context


def _context(Context: Any, entry: dict[str, Any]) -> Any:
    """The Context a user's config would give: classes, budget, task, warm-up if any."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(Context)}
    task = "causal_lm" if entry["task"] == "causal-lm" else entry["task"]
    wanted = {
        "num_classes": entry.get("num_classes"),
        "max_steps": entry.get("max_steps"),
        "task": task,
        "warmup_steps": entry["facts"].get("warmup_steps"),
    }
    return Context(**{k: v for k, v in wanted.items() if k in fields and v is not None})


def evaluate_run(entry: dict[str, Any], api: tuple[Any, Any] | str) -> RunResult:
    from tunescope.io.csv import read

    rows = list(read(SUITE / f"{entry['name']}.csv"))
    eval_steps = np.array(sorted({r.step for r in rows if r.metric.startswith("eval/")}))
    points = [(r.step, r.value) for r in rows if r.metric == MONITOR]
    findings, unchecked = None, {}
    if not isinstance(api, str):
        replay, Context = api
        report = replay(rows, _context(Context, entry))
        # a consequence linked to its root cause (caused_by) is part of the root's report, not
        # a detection of its own kind
        findings = [
            (str(f.kind), int(f.step), str(f.severity)) for f in report.findings if not f.caused_by
        ]
        unchecked = {str(k): v for k, v in report.unchecked.items()}
    stops = run_baselines(points, entry["facts"].get("chance_loss"))
    return RunResult(
        name=entry["name"],
        split=entry["split"],
        family=entry["family"],
        scenario=entry["scenario"],
        expected={e["kind"]: int(e["onset_step"]) for e in entry["expected"]},
        allowed=set(entry["allowed"]),
        healthy=not entry["intended"],
        eval_steps=eval_steps,
        findings=findings,
        unchecked=unchecked,
        stops={k: (s.step, s.reason) if s else None for k, s in stops.items()},
        evidence={e["kind"]: e["evidence"] for e in entry["expected"]},
    )


def split_section(results: list[RunResult], split: str, min_severity: str, api_ok: bool) -> str:
    part = [r for r in results if r.split == split]
    out = [f"### Split `{split}` ({len(part)} runs)", ""]
    scores = score_kinds(part, min_severity) if api_ok else None
    if scores is not None:
        out += ["**Targets**", "", targets_table(part, scores), ""]
        out += ["**tunescope, per kind**", "", kind_table(scores), ""]
        n_h, flagged = healthy_alarms(part)
        out.append(
            f"Healthy controls with a finding above `info`: **{len(flagged)}/{n_h}**"
            + (":" if flagged else ".")
        )
        out += [f"- {f}" for f in flagged]
        out.append("")
        misses = [(k, s.missed) for k, s in scores.items() if s.missed]
        fps = [(k, s.false_runs) for k, s in scores.items() if s.false_runs]
        if misses:
            out += ["Missed positives: " + "; ".join(f"{k}: {', '.join(m)}" for k, m in misses), ""]
        if fps:
            out += ["False positives: " + "; ".join(f"{k}: {', '.join(m)}" for k, m in fps), ""]
    out += ["**Side by side with early stopping (stop = a detection of that kind)**", ""]
    out += [comparison_table(part, scores), "", stops_table(part), ""]
    return "\n".join(out)


def suite_section(data: dict[str, Any]) -> str:
    runs = list(data["runs"].values())
    kept = [r for r in runs if not r["excluded"]]
    out = ["## The suite", ""]
    out.append(
        f"{len(runs)} real training runs generated, {len(kept)} kept after the hindsight checks "
        f"({len(runs) - len(kept)} excluded), seeds "
        f"{sorted({r['seed'] for r in runs})}, seed 2 of every scenario held out "
        f"({sum(r['split'] == 'holdout' for r in kept)} holdout / "
        f"{sum(r['split'] == 'tune' for r in kept)} tune runs kept)."
    )
    cpu = sum(r.get("cpu_seconds", 0) for r in runs)
    wall = sum(r.get("seconds", 0) for r in runs)
    size = sum((SUITE / f"{r['name']}.csv").stat().st_size for r in runs) / 1e6
    per_family = Counter[str]()
    for r in runs:
        per_family[r["family"]] += r.get("cpu_seconds", 0)
    split_cpu = ", ".join(f"{f} {s / 60:.1f}" for f, s in per_family.most_common())
    out.append(
        f"Generation: {cpu / 60:.1f} CPU-minutes ({split_cpu}; {wall / 60:.1f} wall-minutes, one "
        f"job, one torch thread, measured while other jobs shared the two cores); CSVs "
        f"{size:.1f} MB."
    )
    out += ["", "| kind | positives (tune) | positives (holdout) |", "|---|---:|---:|"]
    for kind in KINDS:
        c = Counter(r["split"] for r in kept for e in r["expected"] if e["kind"] == kind)
        out.append(f"| {kind} | {c['tune']} | {c['holdout']} |")
    h = Counter(r["split"] for r in kept if not r["intended"])
    out.append(f"| *healthy controls* | {h['tune']} | {h['holdout']} |")
    out += [
        "",
        "| family / scenario | intended | allowed | kept / run | what was done |",
        "|---|---|---|---:|---|",
    ]
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        seen.setdefault((r["family"], r["scenario"]), []).append(r)
    for (fam, sc), rs in seen.items():
        r0 = rs[0]
        ok = sum(not r["excluded"] for r in rs)
        out.append(
            f"| {fam} / {sc} | {', '.join(r0['intended']) or 'healthy'} | "
            f"{', '.join(r0['allowed']) or '—'} | {ok}/{len(rs)} | {r0['describe']} |"
        )
    excluded = [r for r in runs if r["excluded"]]
    if excluded:
        out += ["", "Excluded by the hindsight checks:", ""]
        out += [f"- `{r['name']}`: {r['excluded']}" for r in excluded]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--split", choices=["tune", "holdout", "both"], default="both")
    ap.add_argument("--detail", action="store_true", help="also print one line per run")
    ap.add_argument(
        "--min-severity",
        choices=["info", "warning", "critical"],
        default="info",
        help="lowest severity that counts as a detection (default info)",
    )
    ap.add_argument(
        "--write", action="store_true", help=f"write {RESULTS.relative_to(HERE.parent.parent)}"
    )
    args = ap.parse_args(argv)
    data = json.loads((SUITE / "labels.json").read_text())
    api = _diagnose_api()
    if isinstance(api, str):
        print(f"NOTE: {api}", file=sys.stderr)
    t0 = time.time()
    entries = [e for e in data["runs"].values() if not e["excluded"]]
    results = [evaluate_run(e, api) for e in entries]
    seconds = time.time() - t0
    splits = ["tune", "holdout"] if args.split == "both" else [args.split]
    body = "\n".join(
        split_section(results, s, args.min_severity, not isinstance(api, str)) for s in splits
    )
    print(body)
    if args.detail:  # only the splits asked for: holdout rows stay unread while tuning
        print(detail_table([r for r in results if r.split in splits]))
    if args.write:
        cmd = "python bench/diagnosis/evaluate.py " + " ".join(
            shlex.quote(a) for a in (argv or sys.argv[1:])
        )
        doc = [
            "# Diagnosis on real training runs",
            "",
            f"Command: `{cmd.strip()}` — {dt.date.today().isoformat()}, "
            f"{len(results)} runs scored in {seconds:.0f} s.",
            "",
            "Detections count findings of severity >= `" + args.min_severity + "`. "
            "See README.md for the matching rules.",
            "",
            "## Results",
            "",
            body,
            suite_section(data),
            "",
            "## Every run",
            "",
            "<details><summary>labels, tunescope's findings and baseline stops per run</summary>",
            "",
            detail_table(results),
            "",
            "</details>",
            "",
        ]
        if isinstance(api, str):
            doc.insert(2, f"**{api}.**\n")
        RESULTS.write_text("\n".join(doc))
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
