"""Reading a long series back for a chart: 1,000 buckets from up to millions of points.

For each series length, log a noisy decaying curve with a one-step spike, a NaN and an inf through
`tunescope.init`, then time `Reader.downsample` (last/min/max per bucket, non-finite counted) for
the whole range and for zoomed windows of several widths, each a median of repeated cold-cache
queries on a fresh connection. It checks that the spike, the NaN and the inf are in every answer
that covers them. Side by side: reading all points and bucketing them in numpy, which is what a
store without summaries must do.

    .venv/bin/python bench/downsample.py                 # 100k, 1M and 4M points
    .venv/bin/python bench/downsample.py --sizes 1000000
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import tunescope
from tunescope.store import Store
from tunescope.store.downsample import Units, bucketize

CACHE = Path(__file__).parent / ".cache"


def build(n: int) -> tuple[Path, str, dict[str, int]]:
    """A store with one n-point series (reused across runs of the benchmark)."""
    path = CACHE / f"downsample-{n}"
    marks = {"spike": n // 2 + 123, "nan": int(n * 0.7), "inf": int(n * 0.8)}
    if (path / "store.db").exists():
        return path, Store(path).reader().runs()[0].id, marks
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(0)
    values = 1.0 / np.sqrt(np.arange(1, n + 1)) + 0.01 * rng.standard_normal(n)
    values[marks["spike"]] = 50.0
    values[marks["nan"]] = math.nan
    values[marks["inf"]] = math.inf
    run = tunescope.init("bench", name=f"series-{n}", store=path)
    for step, v in enumerate(values.tolist()):
        run.log({"train/loss": v}, step=step)
    run.finish()
    return path, run.id, marks


def downsampled(
    store: Store, run_id: str, buckets: int, start: int | None, end: int | None
) -> list[dict[str, Any]]:
    """What the dashboard asks for: a fresh reader, one downsample query."""
    return store.reader().downsample(run_id, "train/loss", buckets, start, end)


def read_all(store: Store, run_id: str, buckets: int, lo: int, hi: int) -> list[dict[str, Any]]:
    """What a store without summaries must do: read every point, bucket in numpy."""
    s = store.reader().series(run_id, "train/loss")
    m = (s.steps >= lo) & (s.steps <= hi)
    return bucketize(Units.from_points(s.steps[m], s.values[m], s.walls[m]), lo, hi, buckets)


def timed(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,4000000")
    parser.add_argument("--buckets", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(
        f"\n{args.buckets} buckets, median of {args.repeats} queries (ms), each on a new "
        "connection\n"
    )
    print(
        "| points stored | window | points in window | tunescope ms | read-all + numpy ms | "
        "spike/NaN/inf kept |"
    )
    print("|---:|---|---:|---:|---:|---|")
    for n in [int(s) for s in args.sizes.split(",")]:
        path, run_id, marks = build(n)
        store = Store(path)
        windows = {
            "full": (None, None),
            "zoom 20%": (int(n * 0.4), int(n * 0.6)),
            "zoom 2%": (n // 2 - n // 100, n // 2 + n // 100),
            "zoom 0.1%": (n // 2, n // 2 + n // 1000),
        }
        for label, (start, end) in windows.items():
            query = partial(downsampled, store, run_id, args.buckets, start, end)
            naive = partial(
                read_all,
                store,
                run_id,
                args.buckets,
                0 if start is None else start,
                n - 1 if end is None else end,
            )
            ms, curves = timed(query, args.repeats)
            naive_ms, _ = timed(naive, max(1, args.repeats // 3))
            buckets = curves[0]["buckets"]  # type: ignore[index]
            lo = 0 if start is None else start
            hi = n - 1 if end is None else end
            kept = []
            for name, step in marks.items():
                if lo <= step <= hi:
                    ok = (
                        any(b["max_step"] == step and b["max"] == 50.0 for b in buckets)
                        if name == "spike"
                        else any(b[{"nan": "nan", "inf": "posinf"}[name]] for b in buckets)
                    )
                    kept.append(f"{name} {'yes' if ok else 'NO'}")
            print(
                f"| {n:,} | {label} | {hi - lo + 1:,} | {ms:.1f} | {naive_ms:.1f} | "
                f"{', '.join(kept) or '—'} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
