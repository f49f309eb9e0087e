"""Dashboard API speed, and what each tool shows of a series with single-step spikes.

    nice -n 10 .venv/bin/python bench/ui/bench_api.py [--repeat 15]

1. `/api/runs/{run}/series` on a 1,000,000-point series (1,000 buckets: full range, a zoomed
   window, a narrow window around a spike) and `/api/runs` with 1,000 runs, through the real
   ASGI app (Starlette TestClient); medians of --repeat calls after one warm-up.
2. The same 100,000-point series with five one-step spikes, a NaN and an +inf, as
   - tunescope draws it (1,000 buckets, the width of a chart),
   - TensorBoard keeps it (torch SummaryWriter event file, read by the accumulator the
     TensorBoard server uses: 1,000 reservoir samples per scalar tag),
   - MLflow's UI gets it (SQLAlchemy store, `get_metric_history_bulk_interval`, 320 points),
     run in the separate venv .venv-bench (see bench/ui/RESULTS.md); skipped if that is missing.
Stores are built once into bench/.cache/ui/.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from starlette.testclient import TestClient
from stores import (
    CACHE,
    INF_1M,
    INF_100K,
    NAN_1M,
    NAN_100K,
    SPIKE,
    SPIKES_1M,
    SPIKES_100K,
    many_runs_store,
    series_store,
    spiky_values,
)

from tunescope.ui import create_app

ROOT = Path(__file__).resolve().parents[2]
MLFLOW_PY = ROOT / ".venv-bench" / "bin" / "python"


def timed(client: TestClient, url: str, repeat: int) -> tuple[float, Any]:
    res = client.get(url)  # warm-up (first connection, page cache)
    assert res.status_code == 200, res.text
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = client.get(url)
        times.append(time.perf_counter() - t0)
        assert res.status_code == 200, res.text
    return statistics.median(times) * 1e3, res.json()


def speed(repeat: int) -> list[tuple[str, float, float, str]]:
    rows = []
    big = series_store(1_000_000, SPIKES_1M, NAN_1M, INF_1M)
    client = TestClient(create_app(big), base_url="http://127.0.0.1")
    base = "/api/runs/spiky-1000000/series?key=train/loss&points=1000"
    for label, url in [
        ("1M-point series, full range, 1,000 buckets", base),
        ("1M-point series, zoom 400k-500k, 1,000 buckets", base + "&start=400000&end=500000"),
        ("1M-point series, zoom 654,000-656,000", base + "&start=654000&end=656000"),
    ]:
        ms, body = timed(client, url, repeat)
        buckets = [b for s in body["segments"] for b in s["buckets"]]
        spikes = [s["step"] for seg in body["segments"] for s in seg["spikes"]]
        rows.append((label, ms, 50.0, f"{len(buckets)} buckets, spike markers at {spikes}"))
    many = many_runs_store(1_000)
    client = TestClient(create_app(many), base_url="http://127.0.0.1")
    ms, body = timed(client, "/api/runs", repeat)
    rows.append(("runs list, 1,000 runs", ms, 300.0, f"{len(body['runs'])} rows"))
    return rows


# -- what each tool shows of the spiky series --------------------------------------------------
def seen(points: dict[int, float]) -> dict[str, str]:
    """Which spikes / NaN / inf a set of (step -> value) points contains."""
    spikes = sum(1 for s in SPIKES_100K if points.get(s) == SPIKE)
    nan = NAN_100K in points and math.isnan(points[NAN_100K])
    inf = points.get(INF_100K)
    inf_txt = "no" if inf is None else ("yes" if inf == math.inf else f"as {inf:.3g}")
    return {
        "spikes": f"{spikes} of {len(SPIKES_100K)}",
        "nan": "yes" if nan else "no",
        "inf": inf_txt,
        "max": f"{max((v for v in points.values() if math.isfinite(v)), default=math.nan):.3g}",
    }


def tunescope_view(store: Path) -> tuple[dict[str, str], float, int]:
    client = TestClient(create_app(store), base_url="http://127.0.0.1")
    url = "/api/runs/spiky-100000/series?key=train/loss&points=1000"
    ms, body = timed(client, url, 5)
    points: dict[int, float] = {}
    marked = set()
    n = 0
    for seg in body["segments"]:
        marked |= {s["step"] for s in seg["spikes"]}
        for b in seg["buckets"]:
            n += 1
            if b["max"] is not None:
                points[b["max_step"]] = b["max"]  # the band keeps each bucket's extreme step
            if "nonfinite_step" in b:
                kind = b["nonfinite_kind"]
                points[b["nonfinite_step"]] = math.nan if kind == "nan" else float(kind)
    view = seen(points)
    view["spikes"] += f" (marked: {len(marked & set(SPIKES_100K))})"
    return view, ms, n


def tensorboard_view(values: np.ndarray) -> tuple[dict[str, str], float, int]:
    from tensorboard.backend.event_processing import data_ingester, plugin_event_accumulator
    from tensorboard.util import tensor_util
    from torch.utils.tensorboard import SummaryWriter

    logdir = CACHE / "tensorboard-100000"
    if not (logdir / ".complete").exists():
        writer = SummaryWriter(str(logdir))
        for step, v in enumerate(values.tolist()):
            writer.add_scalar("train/loss", v, step)
        writer.close()
        (logdir / ".complete").write_text("ok\n")
    t0 = time.perf_counter()
    acc = plugin_event_accumulator.EventAccumulator(
        str(logdir),
        size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
        tensor_size_guidance=data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE,
    )
    acc.Reload()
    events = acc.Tensors("train/loss")
    ms = (time.perf_counter() - t0) * 1e3
    points = {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in events}
    return seen(points), ms, len(points)


def mlflow_view(values: np.ndarray) -> tuple[dict[str, str], float, int] | str:
    if not MLFLOW_PY.exists():
        return "MLflow not installed: python3 -m venv .venv-bench && .venv-bench/bin/pip install mlflow"
    data = CACHE / "mlflow-100000.npz"
    np.savez(data, steps=np.arange(len(values)), values=values)
    out = subprocess.run(
        [
            str(MLFLOW_PY),
            str(Path(__file__).with_name("mlflow_sample.py")),
            str(data),
            str(CACHE / "mlflow-100000"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    body = json.loads(out.stdout)
    points = {int(s): float(v) for s, v in body["points"]}
    return seen(points), body["query_ms"], len(points)


def spike_table() -> list[list[str]]:
    values = spiky_values(100_000, SPIKES_100K, NAN_100K, INF_100K)
    store = series_store(100_000, SPIKES_100K, NAN_100K, INF_100K)
    rows = []
    for name, fn in [
        ("tunescope (1,000 buckets: last + min/max band)", lambda: tunescope_view(store)),
        ("TensorBoard 2.21 (1,000 reservoir samples)", lambda: tensorboard_view(values)),
        ("MLflow (UI asks for 320 points)", lambda: mlflow_view(values)),
    ]:
        got = fn()
        if isinstance(got, str):
            rows.append([name, got, "", "", "", "", ""])
            continue
        view, ms, n = got
        rows.append(
            [name, str(n), view["spikes"], view["nan"], view["inf"], view["max"], f"{ms:.1f}"]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    print("## Dashboard API speed (median of", args.repeat, "calls, ASGI app in process)\n")
    print("| request | median ms | target ms | ok | answer |")
    print("|---|---:|---:|---|---|")
    for label, ms, target, note in speed(args.repeat):
        print(f"| {label} | {ms:.1f} | {target:.0f} | {'yes' if ms <= target else 'NO'} | {note} |")
    print(
        f"\n## A 100,000-point loss with one-step spikes (={SPIKE}) at steps {SPIKES_100K}, "
        f"NaN at {NAN_100K}, +inf at {INF_100K}\n"
    )
    print(
        "| tool | points kept | spikes shown | NaN shown | +inf shown | highest value shown | query ms |"
    )
    print("|---|---:|---|---|---|---:|---:|")
    for row in spike_table():
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
