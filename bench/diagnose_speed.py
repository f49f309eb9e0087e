"""Diagnosis cost: the online monitor per log step, offline `diagnose` of a 1M-point run, and
HF `EarlyStoppingCallback` replayed on the same curve, side by side in one process.

    .venv/bin/python bench/diagnose_speed.py                  # full: 100k steps, 1M points
    .venv/bin/python bench/diagnose_speed.py --quick          # 20k steps, 200k points

Rows:
- online, monitor only: `Monitor.observe` per log call on a 100,000-step history shaped like a
  real fine-tune (train/loss, lr, grad norm, epoch every step; update ratio and per-layer grad
  norms every 10 steps; eval loss/accuracy every 1,000 steps). Median of `--repeats`.
- online, through the store: `tunescope.init(mode="observe")` vs `mode=None` logging the same
  history and finishing; the difference per step is what diagnosis adds to the writer thread
  (training never waits for it: `log()` only appends to a queue).
- offline: `replay_run` (read every point from SQLite, rebuild log calls, replay) and
  `tunescope diagnose RUN --json` on a stored run of `--points` points; and `replay` of the same
  run exported as long CSV.
- HF EarlyStoppingCallback (patience 3) replayed on the run's eval/loss points with real
  `TrainingArguments`/`TrainerState`/`TrainerControl` — what a user gets today, checking one
  metric at evaluations only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

Call = tuple[int, float, list[tuple[str, float]]]


def history(steps: int, seed: int = 0) -> list[Call]:
    """A healthy-looking fine-tune with an overfitting tail (so findings do get raised)."""
    rng = random.Random(seed)
    calls: list[Call] = []
    for s in range(1, steps + 1):
        t = s / steps
        loss = 1.6 * (0.05 + 0.95 * math.exp(-6 * t)) * math.exp(rng.gauss(0, 0.2))
        values = [
            ("train/loss", loss),
            ("train/lr", 5e-5 * (1 - t)),
            ("train/grad_norm", 2.0 * math.exp(rng.gauss(0, 0.3))),
            ("train/epoch", 3 * t),
        ]
        if s % 10 == 0:
            values += [
                ("train/update_ratio", 1e-3 * math.exp(rng.gauss(0, 0.2))),
                ("train/grad_norm/bottom", 0.3),
                ("train/grad_norm/top", 1.1),
            ]
        calls.append((s, float(s), values))
        if s % 1000 == 0:
            ev = 0.25 + 1.35 * math.exp(-8 * t) + (0.3 * (t - 0.6) if t > 0.6 else 0.0)
            calls.append((s, s + 0.5, [("eval/loss", ev), ("eval/accuracy", 0.95 - ev / 10)]))
    return calls


def n_points(calls: list[Call]) -> int:
    return sum(len(v) for _, _, v in calls)


def bench_monitor(calls: list[Call], repeats: int) -> tuple[float, float, float, int]:
    """(median µs per log call, µs/call over the first 10%, over the last 10%, findings)."""
    from tunescope.diagnose import Context, Monitor

    per_call, first, last = [], [], []
    n = len(calls)
    tenth = max(1, n // 10)
    findings = 0
    for _ in range(repeats):
        m = Monitor(Context(num_classes=5, max_steps=calls[-1][0]))
        observe = m.observe
        t0 = time.perf_counter()
        for c in calls[:tenth]:
            observe(*c)
        t1 = time.perf_counter()
        for c in calls[tenth : n - tenth]:
            observe(*c)
        t2 = time.perf_counter()
        for c in calls[n - tenth :]:
            observe(*c)
        t3 = time.perf_counter()
        m.finish()
        per_call.append((t3 - t0) / n * 1e6)
        first.append((t1 - t0) / tenth * 1e6)
        last.append((t3 - t2) / tenth * 1e6)
        findings = len(m.findings())
    return statistics.median(per_call), statistics.median(first), statistics.median(last), findings


def log_run(store: Path, name: str, calls: list[Call], mode: str | None) -> tuple[str, float]:
    """Log `calls` into a run and finish it; (run id, seconds until durable)."""
    import tunescope

    config = {"model": {"num_labels": 5}, "train": {"max_steps": calls[-1][0]}}
    t0 = time.perf_counter()
    run = tunescope.init("speed", name=name, config=config, store=store, mode=mode)
    for step, _, values in calls:
        run.log(dict(values), step=step)
    run.finish(timeout=None)
    return run.id, time.perf_counter() - t0


def bench_offline(store: Path, run_id: str, tmp: Path) -> dict[str, float]:
    from tunescope.cli import main as cli
    from tunescope.diagnose import Context, replay
    from tunescope.diagnose.engine import replay_run
    from tunescope.io import csv as csv_io
    from tunescope.store import Store

    out: dict[str, float] = {}
    reader = Store(store, create_if_missing=False).reader()
    t0 = time.perf_counter()
    report = replay_run(reader, run_id)
    out["replay_run"] = time.perf_counter() - t0
    out["findings"] = len(report.findings)
    out["points"] = report.source["points"]
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        cli(["diagnose", run_id, "--json", "--store", str(store)])
        out["cli"] = time.perf_counter() - t0
    path = tmp / "run.csv"
    with path.open("w", newline="") as fh:
        csv_io.write_long(reader, run_id, fh)
    info = reader.run(run_id)
    t0 = time.perf_counter()
    replay(csv_io.read(path), Context.from_config(info.config))
    out["csv"] = time.perf_counter() - t0
    return out


def bench_hf(calls: list[Call], repeats: int) -> tuple[float, int]:
    """Seconds to replay EarlyStoppingCallback(patience=3) over the eval/loss points."""
    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState, TrainingArguments

    evals = [(s, v) for s, _, vals in calls for k, v in vals if k == "eval/loss"]
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="ts-speed-"),
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        report_to=[],
        use_cpu=True,
    )
    times = []
    for _ in range(repeats):
        state, control = TrainerState(), TrainerControl()
        cb = EarlyStoppingCallback(early_stopping_patience=3)
        t0 = time.perf_counter()
        cb.on_train_begin(args, state, control)
        for step, value in evals:
            state.global_step = step
            cb.on_evaluate(args, state, control, metrics={"eval_loss": value})
            if state.best_metric is None or value < state.best_metric:
                state.best_metric, state.best_global_step = value, step
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(evals)


def store_rows(calls: list[Call], steps: int, points: int) -> list[tuple[str, str, str]]:
    """The rows that go through a real SQLite store (online writer cost, offline diagnose)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="ts-speed-") as tmpdir:
        tmp = Path(tmpdir)
        _, plain = log_run(tmp / "a", "plain", calls, None)
        _, watched = log_run(tmp / "b", "watched", calls, "observe")
        out.append(
            (
                f"online, through the store: log {steps:,} steps + finish",
                f"{plain:.2f} s without, {watched:.2f} s with the monitor",
                f"{(watched - plain) / steps * 1e6:+.1f} µs/step on the writer thread",
            )
        )
        per_step = n_points(history(1000)) / 1000
        big = history(math.ceil(points / per_step), seed=1)
        t0 = time.perf_counter()
        run_id, _ = log_run(tmp / "big", "big", big, None)
        build = time.perf_counter() - t0
        off = bench_offline(tmp / "big", run_id, tmp)
        pts = int(off["points"])
        out.append(
            (
                f"offline: replay_run, stored run of {pts:,} points",
                f"{off['replay_run']:.2f} s ({off['replay_run'] / pts * 1e6:.2f} µs/point)",
                f"<= 5 s per 1M points; {int(off['findings'])} findings",
            )
        )
        out.append(
            (
                f"offline: `tunescope diagnose RUN --json`, {pts:,} points",
                f"{off['cli']:.2f} s",
                "CLI end to end",
            )
        )
        out.append(
            (
                f"offline: replay of the run as long CSV, {pts:,} rows",
                f"{off['csv']:.2f} s",
                "CSV parsing included",
            )
        )
        print(f"(building the {pts:,}-point run took {build:.1f} s)", file=sys.stderr)
    return out


def rows(table: list[tuple[str, str, str]]) -> Iterator[str]:
    w = [max(len(r[i]) for r in table) for i in range(3)]
    for i, r in enumerate(table):
        yield "| " + " | ".join(c.ljust(w[j]) for j, c in enumerate(r)) + " |"
        if i == 0:
            yield "|" + "|".join("-" * (x + 2) for x in w) + "|"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=100_000, help="log steps for the online rows")
    ap.add_argument("--points", type=int, default=1_000_000, help="points of the offline run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="20k steps, 200k points")
    ap.add_argument("--skip-store", action="store_true", help="monitor and HF rows only")
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.points = 20_000, 200_000
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    calls = history(a.steps)
    us, first, last, nf = bench_monitor(calls, a.repeats)
    table = [("what", "cost", "target / note")]
    table.append(
        (
            f"online: Monitor.observe, {a.steps:,} steps ({n_points(calls):,} points)",
            f"{us:.1f} µs/step (first 10%: {first:.1f}, last 10%: {last:.1f})",
            f"<= 50 µs/step; {nf} findings",
        )
    )
    hf_s, hf_n = bench_hf(calls, a.repeats)
    table.append(
        (
            f"HF EarlyStoppingCallback(patience=3), same curve ({hf_n} evals)",
            f"{hf_s * 1e3:.2f} ms total, {hf_s / hf_n * 1e6:.1f} µs/eval",
            "checks eval/loss only",
        )
    )
    if not a.skip_store:
        table += store_rows(calls, a.steps, a.points)
    print("\n".join(rows(table)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
