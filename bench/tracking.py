"""Logging cost: tunescope against the trackers a user would otherwise pick, in one run.

Each tool logs the same load — N steps x 5 scalars through its ordinary per-step API — in its own
subprocess (so one tool's threads and imports never slow another). We report the caller-side
cost of one step's logging call(s) (median and p99, µs) and the end-to-end time until the data
is durable (the tool's finish/close returned). The floor is a bare batched SQLite insert loop
writing the same rows into the same table layout a per-point store would use.

    .venv-bench/bin/python bench/tracking.py            # all tools (needs mlflow, aim, wandb)
    .venv/bin/python bench/tracking.py --tools tunescope,tensorboard,sqlite-floor
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap

KEYS = ("train/loss", "train/lr", "train/grad_norm", "train/throughput", "eval/loss")

# Each snippet defines setup(), step(s, values) and finish(); the harness times them.
TOOLS: dict[str, str] = {
    # The tracking core alone (no online monitor), as the other tools are trackers only.
    "tunescope": """
        import tunescope
        def setup():
            global run
            run = tunescope.init("bench", store=os.path.join(WORK, "ts"), mode=None)
        def step(s, values):
            run.log(values, step=s)
        def finish():
            run.finish()
    """,
    # The default: every log call also runs the diagnosis detectors (on the writer thread).
    "tunescope+diagnosis": """
        import tunescope
        def setup():
            global run
            run = tunescope.init("bench", store=os.path.join(WORK, "ts"), mode="observe")
        def step(s, values):
            run.log(values, step=s)
        def finish():
            run.finish()
    """,
    "tensorboard": """
        from torch.utils.tensorboard import SummaryWriter
        def setup():
            global w
            w = SummaryWriter(log_dir=os.path.join(WORK, "tb"))
        def step(s, values):
            for k, v in values.items():
                w.add_scalar(k, v, s)
        def finish():
            w.close()
    """,
    "mlflow-sync": """
        import mlflow
        def setup():
            mlflow.set_tracking_uri("sqlite:///" + os.path.join(WORK, "mlflow.db"))
            mlflow.start_run()
        def step(s, values):
            mlflow.log_metrics(values, step=s)
        def finish():
            mlflow.end_run()
    """,
    "mlflow-async": """
        import mlflow
        def setup():
            mlflow.set_tracking_uri("sqlite:///" + os.path.join(WORK, "mlflow.db"))
            mlflow.start_run()
        def step(s, values):
            mlflow.log_metrics(values, step=s, synchronous=False)
        def finish():
            mlflow.end_run()
    """,
    "aim": """
        import aim
        def setup():
            global run
            run = aim.Run(repo=os.path.join(WORK, "aim"))
        def step(s, values):
            run.track(values, step=s)
        def finish():
            run.close()
    """,
    "wandb-offline": """
        os.environ["WANDB_MODE"] = "offline"
        os.environ["WANDB_SILENT"] = "true"
        import wandb
        def setup():
            global run
            run = wandb.init(project="bench", dir=WORK)
        def step(s, values):
            run.log(values, step=s)
        def finish():
            run.finish()
    """,
    "sqlite-floor": """
        import sqlite3, time
        def setup():
            global con, rows
            con = sqlite3.connect(os.path.join(WORK, "floor.db"), isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("CREATE TABLE points (run INTEGER, key INTEGER, step INTEGER, value REAL, "
                        "wall REAL)")
            con.execute("CREATE INDEX points_key ON points(run, key, step)")
            rows = []
        def step(s, values):
            w = time.time()
            for i, v in enumerate(values.values()):
                rows.append((1, i, s, v, w))
            if len(rows) >= 10000:
                flush()
        def flush():
            global rows
            con.execute("BEGIN")
            con.executemany("INSERT INTO points VALUES (?,?,?,?,?)", rows)
            con.execute("COMMIT")
            rows = []
        def finish():
            if rows:
                flush()
            con.close()
    """,
}

HARNESS = """
import json, os, sys, time, math
WORK = sys.argv[1]
N = int(sys.argv[2])
{tool}
vals = [{{k: 1.0 / (s + 1) + i for i, k in enumerate({keys!r})}} for s in range(N)]
pc = time.perf_counter_ns
setup()
costs = []
t0 = time.perf_counter()
for s in range(N):
    a = pc()
    step(s, vals[s])
    costs.append(pc() - a)
t1 = time.perf_counter()
finish()
t2 = time.perf_counter()
costs.sort()
print(json.dumps({{"median_us": costs[len(costs) // 2] / 1e3, "p99_us": costs[int(len(costs) * .99)] / 1e3,
                  "loop_s": t1 - t0, "finish_s": t2 - t1, "e2e_s": t2 - t0}}))
"""


def run_tool(name: str, steps: int, timeout: float) -> dict[str, float] | str:
    """Run one tool in a fresh subprocess; its result dict, or the reason it failed."""
    work = tempfile.mkdtemp(prefix=f"bench-{name}-")
    code = HARNESS.format(tool=textwrap.dedent(TOOLS[name]), keys=KEYS)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, work, str(steps)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f}s"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed: {last[:120]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool; medians reported")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {', '.join(TOOLS)}")
    results: dict[str, list[dict[str, float]]] = {t: [] for t in tools}
    failures: dict[str, str] = {}
    # Interleave tools across repeats so drifting machine load hits all of them alike.
    for rep in range(args.repeats):
        for tool in tools:
            if tool in failures:
                continue
            r = run_tool(tool, args.steps, args.timeout)
            if isinstance(r, str):
                failures[tool] = r
            else:
                results[tool].append(r)
            print(f"  repeat {rep + 1}/{args.repeats} {tool}: {r}", file=sys.stderr, flush=True)
    med = {
        t: {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        for t, rs in results.items()
        if rs
    }
    ts = med.get("tunescope")
    print(
        f"\n{args.steps:,} steps x {len(KEYS)} scalars, median of {args.repeats} runs each "
        f"(python {sys.version.split()[0]})\n"
    )
    print("| tool | caller µs/step (median) | p99 µs | end-to-end s | tunescope faster by |")
    print("|---|---:|---:|---:|---:|")
    for tool in tools:
        if tool in med:
            m = med[tool]
            ratio = f"{m['e2e_s'] / ts['e2e_s']:.1f}×" if ts and tool != "tunescope" else "—"
            print(
                f"| {tool} | {m['median_us']:.2f} | {m['p99_us']:.1f} | {m['e2e_s']:.3f} | {ratio} |"
            )
        else:
            print(f"| {tool} | — | — | — | {failures.get(tool, 'not run')} |")


if __name__ == "__main__":
    main()
