"""Score tunescope's diagnosis on a fresh set, two ways, side by side with early stopping.

    .venv/bin/python bench/diagnosis/fresh/evaluate.py --set A                 # development set
    .venv/bin/python bench/diagnosis/fresh/evaluate.py --set A --detail        # + one line a run
    .venv/bin/python bench/diagnosis/fresh/evaluate.py --set A --code /tmp/frozen/src --write

Set B is the final holdout: score it only when the lead asks (the frozen "before" score is
the one exception; --detail is refused on B).

Every run the hindsight checks kept is diagnosed

- **api**: `tunescope.diagnose.engine.replay(rows, Context(...))` with the context a user's
  config gives (classes, budget, task, warm-up);
- **cli** (context stripped): `python -m tunescope diagnose RUN.csv --json`, no flags, the file
  alone in a temporary directory.

`--code PATH` puts PATH first on sys.path (api) and on PYTHONPATH (cli), and checks that
`tunescope` is imported from there. Scores count **warning and critical** findings only, per
group: overfitting; forgetting; unstable (divergence, lr_too_high, loss_spike,
exploding_gradients); slow (lr_too_low, underfitting); vanishing (vanishing_gradients).
See README.md for the matching rules.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
RUNS = HERE / "runs"
RESULTS = HERE / "RESULTS.md"

GROUPS: dict[str, tuple[str, ...]] = {
    "overfitting": ("overfitting",),
    "forgetting": ("forgetting",),
    "unstable": ("divergence", "lr_too_high", "loss_spike", "exploding_gradients"),
    "slow": ("lr_too_low", "underfitting"),
    "vanishing": ("vanishing_gradients",),
}
GROUP_OF = {k: g for g, ks in GROUPS.items() for k in ks}
LOUD = {"warning", "critical"}
STEP_TOLERANCE = 25  # unstable kinds: the onset is read off a smoothed curve (as in scoring.py)
MODES = ("api", "cli")


# -- the code under test -------------------------------------------------------------------------
def use_code(path: str | None) -> dict[str, str]:
    """Put `path` first for this process and for the CLI subprocesses; the env to run them."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if path:
        src = str(Path(path).resolve())
        sys.path.insert(0, src)
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    import tunescope

    where = str(Path(tunescope.__file__).resolve())
    out = subprocess.run(
        [sys.executable, "-c", "import tunescope; print(tunescope.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    cli_where = str(Path(out.stdout.strip()).resolve())
    if path:
        src = str(Path(path).resolve())
        for w in (where, cli_where):
            if not w.startswith(src + os.sep):
                raise SystemExit(f"--code {path}: tunescope imported from {w}, not from {src}")
    env["TS_FRESH_IMPORTED"] = where
    return env


def advice_module() -> Any:
    """bench/diagnosis/advice.py's `contradictions`, or None when it is not there (yet)."""
    sys.path.insert(1, str(HERE.parent))
    try:
        from advice import contradictions
    except ImportError:
        return None
    return contradictions


# -- one run -----------------------------------------------------------------------------------------
@dataclass
class Diagnosis:
    findings: list[dict[str, Any]] | None  # JSON findings; None: the diagnose crashed
    crash: str | None = None
    contradictions: list[str] = field(default_factory=list)


@dataclass
class Scored:
    entry: dict[str, Any]
    eval_steps: list[int]
    points: list[tuple[int, float]]
    diag: dict[str, Diagnosis] = field(default_factory=dict)
    stops: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.entry["name"])

    @property
    def healthy(self) -> bool:
        return not self.entry["intended"]

    @property
    def expected(self) -> dict[str, int]:
        return {e["kind"]: int(e["onset_step"]) for e in self.entry["expected"]}


def context_of(entry: dict[str, Any]) -> Any:
    """The Context a user's config would give: classes, budget, task, warm-up if any."""
    import dataclasses

    from tunescope.diagnose.engine import Context

    fields = {f.name for f in dataclasses.fields(Context)}
    task = {"causal-lm": "causal_lm"}.get(entry["task"], entry["task"])
    wanted = {
        "num_classes": entry.get("num_classes"),
        "max_steps": entry.get("max_steps"),
        "task": task,
        "warmup_steps": entry["facts"].get("warmup_steps"),
    }
    return Context(**{k: v for k, v in wanted.items() if k in fields and v is not None})


def _last_line(text: str) -> str:
    """A traceback's last line, with where it was raised (file:line in function)."""
    import re

    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "(no output)"
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text)
    where = ""
    if frames:
        f, line, fn = frames[-1]
        where = f" ({Path(f).parent.name}/{Path(f).name}:{line} in {fn})"
    return lines[-1][:300] + where


def diagnose_api(rows: list[Any], entry: dict[str, Any]) -> Diagnosis:
    try:
        from tunescope.diagnose.engine import replay

        report = replay(rows, context_of(entry))
        data = json.loads(json.dumps(report.to_json(), allow_nan=True, default=str))
    except Exception:
        return Diagnosis(None, _last_line(traceback.format_exc()))
    return Diagnosis(list(data.get("findings", [])))


def diagnose_cli(csv_path: Path, env: dict[str, str]) -> Diagnosis:
    with tempfile.TemporaryDirectory(prefix="ts-fresh-cli-") as tmp:
        target = Path(tmp) / csv_path.name
        shutil.copyfile(csv_path, target)
        proc = subprocess.run(
            [sys.executable, "-m", "tunescope", "diagnose", target.name, "--json"],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    if proc.returncode != 0:
        return Diagnosis(None, f"exit {proc.returncode}: {_last_line(proc.stderr or proc.stdout)}")
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        return Diagnosis(None, f"exit 0 but no JSON: {exc}")
    return Diagnosis(list(data.get("findings", [])))


def score_run(entry: dict[str, Any], env: dict[str, str], contradictions: Any) -> Scored:
    from baselines import MONITOR, run_baselines

    from tunescope.io.csv import read

    path = RUNS / entry["set"] / f"{entry['name']}.csv"
    rows = list(read(path))
    eval_steps = sorted({r.step for r in rows if r.metric.startswith("eval/")})
    points = [(r.step, r.value) for r in rows if r.metric == MONITOR]
    s = Scored(entry, eval_steps, points)
    s.diag["api"] = diagnose_api(rows, entry)
    s.diag["cli"] = diagnose_cli(path, env)
    if contradictions is not None:
        for d in s.diag.values():
            if d.findings is not None:
                try:
                    d.contradictions = list(contradictions(rows, d.findings))
                except Exception:  # the checker's own bug must not hide the diagnosis
                    d.contradictions = [f"advice.py raised: {_last_line(traceback.format_exc())}"]
    chance = entry["facts"].get("chance_loss")
    stops = run_baselines(points, chance)
    s.stops = {k: (v.step, v.reason) if v else None for k, v in stops.items()}
    return s


# -- scoring ---------------------------------------------------------------------------------------
def loud(findings: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [f for f in findings or [] if str(f.get("severity")) in LOUD]


def linked(f: dict[str, Any]) -> bool:
    """A finding reported as the consequence of another (issue 12: `caused_by`)."""
    return bool(f.get("caused_by"))


def tolerated(s: Scored) -> set[str]:
    """Groups whose findings are no false positive on this run: its own, and those of the
    kinds its scenario allows — except that a run positive for `unstable` (blown up at its
    LR, or NaN) tolerates slow / vanishing findings only when linked to a cause."""
    groups = {GROUP_OF[k] for k in s.entry["allowed"] if k in GROUP_OF}
    groups |= {GROUP_OF[k] for k in s.expected if k in GROUP_OF}
    if any(GROUP_OF.get(k) == "unstable" for k in s.expected):
        groups -= {"slow", "vanishing"}
    return groups


def evals_between(s: Scored, onset: int, step: int) -> int:
    return sum(onset < e <= step for e in s.eval_steps)


@dataclass
class GroupScore:
    positives: int = 0
    detected: int = 0
    early: int = 0
    false_pos: int = 0
    delays: list[int] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false_runs: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.detected / self.positives if self.positives else None

    @property
    def precision(self) -> float | None:
        n = self.detected + self.false_pos
        return self.detected / n if n else None


def group_onset(s: Scored, group: str) -> int | None:
    onsets = [v for k, v in s.expected.items() if GROUP_OF.get(k) == group]
    return min(onsets) if onsets else None


def first_hit(s: Scored, mode: str, group: str) -> tuple[int | None, bool]:
    onset = group_onset(s, group)
    assert onset is not None
    start = onset - (STEP_TOLERANCE if group == "unstable" else 0)
    found = [f for f in loud(s.diag[mode].findings) if GROUP_OF.get(f["kind"]) == group]
    steps = sorted(int(f["step"]) for f in found)
    if group == "slow":
        # underfitting's labelled onset is the first evaluation after 25% of the budget (a
        # hindsight convention): a finding raised before it and still held there counts, at it
        held = [
            f for f in found if int(f["step"]) < start and int(f.get("last_step") or -1) >= onset
        ]
        if held:
            steps = sorted([*steps, onset])
    hit = next((x for x in steps if x >= start), None)
    return hit, any(x < start for x in steps)


def score_groups(results: list[Scored], mode: str) -> dict[str, GroupScore]:
    out = {g: GroupScore() for g in GROUPS}
    for s in results:
        d = s.diag[mode]
        if d.findings is None:  # a crash: positives missed, no false positives counted
            for g in GROUPS:
                if group_onset(s, g) is not None:
                    out[g].positives += 1
                    out[g].missed.append(f"{s.name} (crash)")
            continue
        ok = tolerated(s)
        for g, sc in out.items():
            if group_onset(s, g) is not None:
                sc.positives += 1
                hit, early = first_hit(s, mode, g)
                if hit is None:
                    sc.early += early
                    sc.missed.append(s.name + (" (early only)" if early else ""))
                    continue
                sc.detected += 1
                sc.delays.append(evals_between(s, group_onset(s, g) or 0, hit))
                continue
            bad = [
                f
                for f in loud(d.findings)
                if GROUP_OF.get(f["kind"]) == g and g not in ok and not linked(f)
            ]
            if bad:
                sc.false_pos += 1
                first = min(bad, key=lambda f: int(f["step"]))
                sc.false_runs.append(f"{s.name}: {first['kind']}@{first['step']}")
    return out


def healthy_warned(results: list[Scored], mode: str) -> tuple[int, list[str]]:
    n, flagged = 0, []
    for s in results:
        if not s.healthy:
            continue
        n += 1
        d = s.diag[mode]
        if d.findings is None:  # counted among the crashes, not here
            n -= 1
            continue
        kinds = sorted({f"{f['kind']}@{f['step']}" for f in loud(d.findings)})
        if kinds:
            flagged.append(f"{s.name}: {', '.join(kinds)}")
    return n, flagged


def nonfinite(results: list[Scored], mode: str) -> tuple[int, int, list[str]]:
    """Runs with a non-finite value: how many got a warning/critical divergence within 1 step."""
    n, ok, late = 0, 0, []
    for s in results:
        exp = next((e for e in s.entry["expected"] if e["kind"] == "divergence"), None)
        if exp is None or "first_nonfinite_step" not in exp["evidence"]:
            continue
        n += 1
        onset = int(exp["onset_step"])
        steps = [
            int(f["step"])
            for f in loud(s.diag[mode].findings)
            if f["kind"] == "divergence" and int(f["step"]) >= onset
        ]
        if steps and min(steps) - onset <= 1:
            ok += 1
        else:
            late.append(f"{s.name}: {'none' if not steps else min(steps) - onset}")
    return n, ok, late


def _median(xs: list[int]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def group_table(scores: dict[str, GroupScore]) -> str:
    lines = [
        "| group | positives | detected | recall | false-positive runs | precision | early only | median delay (evals) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g, sc in scores.items():
        lines.append(
            f"| {g} | {sc.positives} | {sc.detected} | {fmt(sc.recall)} | {sc.false_pos} | "
            f"{fmt(sc.precision)} | {sc.early} | {fmt(_median(sc.delays), 1)} |"
        )
    return "\n".join(lines)


def baseline_rows(results: list[Scored]) -> dict[str, dict[str, str]]:
    """hf-p1 / hf-p3 / lightning-p3: a stop counts as a detection of overfitting or of an
    unstable run (at/after its onset) and as a false alarm on a healthy run."""
    out: dict[str, dict[str, str]] = {}
    for b in ("hf-p1", "hf-p3", "lightning-p3"):
        row: dict[str, str] = {}
        for g in ("overfitting", "unstable"):
            pos = [s for s in results if group_onset(s, g) is not None]
            hits, delays = 0, []
            for s in pos:
                stop = s.stops.get(b)
                onset = group_onset(s, g) or 0
                start = onset - (STEP_TOLERANCE if g == "unstable" else 0)
                if stop is not None and stop[0] >= start:
                    hits += 1
                    delays.append(evals_between(s, onset, stop[0]))
            row[g] = f"{hits}/{len(pos)}"
            row[f"{g}-delay"] = fmt(_median(delays), 1)
        healthy = [s for s in results if s.healthy]
        row["healthy"] = f"{sum(s.stops.get(b) is not None for s in healthy)}/{len(healthy)}"
        out[b] = row
    return out


def section(results: list[Scored], title: str, advice_ok: bool, show_runs: bool = True) -> str:
    out = [f"### {title} ({len(results)} runs)", ""]
    summary = [
        "| figure (target) | " + " | ".join(MODES) + " |",
        "|---|" + "---:|" * len(MODES),
    ]
    per_mode: dict[str, dict[str, GroupScore]] = {}
    cells: dict[str, list[str]] = {m: [] for m in MODES}
    for m in MODES:
        per_mode[m] = score_groups(results, m)
        n_h, flagged = healthy_warned(results, m)
        of = _median(per_mode[m]["overfitting"].delays)
        n_nf, ok_nf, _ = nonfinite(results, m)
        crashes = sum(s.diag[m].findings is None for s in results)
        contra = sum(bool(s.diag[m].contradictions) for s in results)
        worst_p = min(
            (x.precision for x in per_mode[m].values() if x.precision is not None), default=None
        )
        worst_r = min(
            (x.recall for x in per_mode[m].values() if x.recall is not None), default=None
        )
        cells[m] = [
            fmt(worst_p),
            fmt(worst_r),
            f"{len(flagged)}/{n_h}",
            fmt(of, 1),
            f"{ok_nf}/{n_nf}",
            str(crashes),
            str(contra) if advice_ok else "n/a",
        ]
    labels = [
        "lowest group precision (>= 0.9)",
        "lowest group recall (>= 0.9)",
        "healthy runs with a warning (<= 1 in 20)",
        "overfitting median delay, evals after the eval-loss minimum (<= 2)",
        "non-finite flagged within 1 step (all)",
        "crashes (0)",
        "runs with contradicting advice (0)",
    ]
    for i, lab in enumerate(labels):
        summary.append(f"| {lab} | " + " | ".join(cells[m][i] for m in MODES) + " |")
    out += [*summary, ""]
    for m in MODES:
        name = {"api": "API replay with context", "cli": "CLI, context stripped"}[m]
        out += [f"**{name}** (`{m}`)", "", group_table(per_mode[m]), ""]
    base = baseline_rows(results)
    out += [
        "**Side by side with early stopping** (a stop = a detection; tunescope: warning/critical)",
        "",
        "| detector | overfitting recall | overfitting delay (evals) | unstable recall | healthy runs stopped / warned |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in MODES:
        g = per_mode[m]
        n_h, flagged = healthy_warned(results, m)
        out.append(
            f"| tunescope {m} | {g['overfitting'].detected}/{g['overfitting'].positives} | "
            f"{fmt(_median(g['overfitting'].delays), 1)} | "
            f"{g['unstable'].detected}/{g['unstable'].positives} | {len(flagged)}/{n_h} |"
        )
    for b, row in base.items():
        out.append(
            f"| {b} | {row['overfitting']} | {row['overfitting-delay']} | {row['unstable']} | "
            f"{row['healthy']} |"
        )
    out.append("")
    if not show_runs:  # the holdout: counts only; crash messages without run names
        for m in MODES:
            msgs = sorted({str(s.diag[m].crash) for s in results if s.diag[m].findings is None})
            if msgs:
                out += [f"{m} crash messages: " + "; ".join(f"`{x}`" for x in msgs), ""]
        return "\n".join(out)
    for m in MODES:
        g = per_mode[m]
        n_h, flagged = healthy_warned(results, m)
        _, _, late = nonfinite(results, m)
        crashes = [f"{s.name}: {s.diag[m].crash}" for s in results if s.diag[m].findings is None]
        contra = [
            f"{s.name}: {s.diag[m].contradictions[0]}" for s in results if s.diag[m].contradictions
        ]
        notes = [
            ("missed", [f"{k}: {x}" for k, v in g.items() for x in v.missed]),
            ("false positives", [f"{k}: {x}" for k, v in g.items() for x in v.false_runs]),
            ("healthy runs with a warning", flagged),
            ("non-finite not flagged within 1 step", late),
            ("crashes", crashes),
            ("contradicting advice (first per run)", contra),
        ]
        body = [f"- {what} ({len(xs)}): " + "; ".join(xs) for what, xs in notes if xs]
        if body:
            out += [
                f"<details><summary>{m}: runs behind the numbers</summary>",
                "",
                *body,
                "",
                "</details>",
                "",
            ]
    return "\n".join(out)


def detail(results: list[Scored]) -> str:
    lines = [
        "| run | expected (kind@onset) | api findings (warning+) | cli findings (warning+) | hf-p1 | hf-p3 | lightning-p3 |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for s in sorted(results, key=lambda r: r.name):
        exp = ", ".join(f"{k}@{v}" for k, v in s.expected.items()) or "healthy"
        cols = []
        for m in MODES:
            d = s.diag[m]
            if d.findings is None:
                cols.append(f"CRASH {d.crash}")
                continue
            cols.append(
                ", ".join(
                    f"{f['kind']}@{f['step']} {f['severity']}"
                    + (f" <-{f['caused_by']}" if linked(f) else "")
                    for f in loud(d.findings)
                )
                or "—"
            )
        stops = [
            "—" if s.stops.get(b) is None else str(s.stops[b][0])
            for b in ("hf-p1", "hf-p3", "lightning-p3")
        ]
        lines.append(f"| {s.name} | {exp} | {cols[0]} | {cols[1]} | " + " | ".join(stops) + " |")
    return "\n".join(lines)


def write_section(key: str, text: str) -> None:
    """Replace (or append) the block between this key's markers in RESULTS.md."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    doc = RESULTS.read_text() if RESULTS.exists() else "# Fresh diagnosis sets: results\n\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in doc and end in doc:
        a, b = doc.index(begin), doc.index(end) + len(end)
        doc = doc[:a] + block + doc[b:]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--set", required=True, choices=["A", "B"])
    ap.add_argument(
        "--code", help="a tunescope source tree to score instead (e.g. /tmp/frozen/src)"
    )
    ap.add_argument("--write", action="store_true", help="write the tables into RESULTS.md")
    ap.add_argument("--detail", action="store_true", help="one line per run (set A only)")
    ap.add_argument("--label", help="section label in RESULTS.md (default: from --code / git)")
    args = ap.parse_args(argv)
    if args.detail and args.set == "B":
        print("--detail is refused on set B: it is the final holdout", file=sys.stderr)
        return 2
    env = use_code(args.code)
    sys.path.insert(1, str(HERE.parent))
    contradictions = advice_module()
    data = json.loads((RUNS / args.set / "labels.json").read_text())
    entries = [e for e in data["runs"].values() if "excluded" in e and not e["excluded"]]
    t0 = time.time()
    results = [score_run(e, env, contradictions) for e in entries]
    seconds = time.time() - t0
    label = args.label or (f"code {args.code}" if args.code else f"working tree at {_git_rev()}")
    n_h = sum(not e["intended"] for e in entries)
    head = (
        f"Set {args.set}, {label}: `tunescope` imported from `{env['TS_FRESH_IMPORTED']}`; "
        f"{len(entries)} runs kept of {len(data['runs'])} ({n_h} healthy); scored in "
        f"{seconds:.0f} s on {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}."
    )
    if contradictions is None:
        head += " bench/diagnosis/advice.py not importable: no contradicting-advice column."
    body = section(
        results, f"Set {args.set} — {label}", contradictions is not None, args.set == "A"
    )
    print(head + "\n\n" + body)
    if args.detail:
        print(detail(results))
    if args.write:
        cmd = "python bench/diagnosis/fresh/evaluate.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        )
        text = f"Command: `{cmd.strip()}`\n\n{head}\n\n{body}"
        if args.set == "A":
            text += (
                "\n<details><summary>every run of set A</summary>\n\n"
                + detail(results)
                + "\n\n</details>\n"
            )
        write_section(f"set {args.set}: {label}", text)
        print(f"wrote {RESULTS}")
    return 0


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return out.stdout.strip() + (" + uncommitted src changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
