"""Downsampled curves against a brute-force computation on the raw points."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import tunescope
from tunescope.store import Store
from tunescope.store.chunks import CHUNK, ROLLUP


def brute_force(
    steps: np.ndarray, values: np.ndarray, start: int, end: int, buckets: int
) -> dict[int, dict[str, float | int | None]]:
    """Bucket id -> exact last/min/max/counts over the raw points."""
    width = max(1.0, (end - start + 1) / buckets)
    keep = (steps >= start) & (steps <= end)
    steps, values = steps[keep], values[keep]
    ids = np.clip(np.floor((steps - start) / width).astype(int), 0, buckets - 1)
    out: dict[int, dict[str, float | int | None]] = {}
    for b in np.unique(ids):
        s, v = steps[ids == b], values[ids == b]
        fin = np.isfinite(v)
        out[int(b)] = {
            "step": int(s[-1]),
            "last": float(v[-1]),
            "min": float(v[fin].min()) if fin.any() else None,
            "max": float(v[fin].max()) if fin.any() else None,
            "n": len(v),
            "nan": int(np.isnan(v).sum()),
            "posinf": int((v == np.inf).sum()),
            "neginf": int((v == -np.inf).sum()),
        }
    return out


@pytest.fixture(scope="module")
def spiky_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, np.ndarray]:
    """A 3-rollup-long series (~50k points) with a one-step spike, a NaN and infinities."""
    n = CHUNK * ROLLUP * 3 + 1234
    rng = np.random.default_rng(0)
    values = 2.0 / np.sqrt(np.arange(1, n + 1)) + 0.01 * rng.standard_normal(n)
    values[17_777] = 1000.0  # a one-step spike
    values[23_456] = math.nan
    values[40_000] = math.inf
    values[40_001] = -math.inf
    path = tmp_path_factory.mktemp("ds") / "store"
    with tunescope.init("ds", store=path) as run:
        for step, v in enumerate(values.tolist()):
            run.log({"train/loss": v}, step=step)
    return path, run.id, values


@pytest.mark.parametrize(
    ("points", "start", "end"),
    [
        (1000, None, None),
        (37, None, None),
        (5, None, None),
        (1000, 10_000, 30_000),
        (1000, 17_700, 17_900),
        (200, 0, 260),
        (1000, 20_000, 41_000),
        (3, 100, 49_999),
    ],
)
def test_buckets_match_brute_force(
    spiky_run: tuple[Path, str, np.ndarray], points: int, start: int | None, end: int | None
) -> None:
    path, run_id, values = spiky_run
    steps = np.arange(len(values))
    lo = 0 if start is None else start
    hi = len(values) - 1 if end is None else end
    [curve] = Store(path).reader().downsample(run_id, "train/loss", points, start, end)
    buckets = curve["buckets"]
    assert 0 < len(buckets) <= points
    exact = brute_force(steps, values, lo, hi, points)
    # every point is accounted for exactly once
    assert sum(b["n"] for b in buckets) == hi - lo + 1
    for key in ("nan", "posinf", "neginf"):
        assert sum(b[key] for b in buckets) == sum(e[key] for e in exact.values())  # type: ignore[misc]
    # the band never hides an extreme: global min/max over buckets equal the raw ones
    fin = np.isfinite(values[lo : hi + 1])
    assert max(b["max"] for b in buckets if b["max"] is not None) == values[lo : hi + 1][fin].max()
    assert min(b["min"] for b in buckets if b["min"] is not None) == values[lo : hi + 1][fin].min()
    width = max(1.0, (hi - lo + 1) / points)
    if width < CHUNK:  # few points per bucket: answered from raw points, exactly
        got = {int((b["step"] - lo) // width): b for b in buckets}
        assert sorted(got) == sorted(exact)
        for i, e in exact.items():
            b = got[i]
            assert (b["step"], b["n"], b["min"], b["max"]) == (
                e["step"],
                e["n"],
                e["min"],
                e["max"],
            )
    for b in buckets:
        # extremes carry their exact steps and values
        if b["max"] is not None:
            assert values[b["max_step"]] == b["max"]
        if b["min"] is not None:
            assert values[b["min_step"]] == b["min"]
        # last value is exact where the bucket's last point is its own
        last = values[b["step"]]
        assert (b["value"] is None and not math.isfinite(last)) or b["value"] == last


def test_spike_nan_and_inf_stay_visible_at_any_zoom(
    spiky_run: tuple[Path, str, np.ndarray],
) -> None:
    path, run_id, _ = spiky_run
    reader = Store(path).reader()
    for start, end in [(None, None), (0, 40_000), (17_000, 18_000), (17_777, 17_777)]:
        [curve] = reader.downsample(run_id, "train/loss", 100, start, end)
        spike = [b for b in curve["buckets"] if b["max"] == 1000.0]
        assert len(spike) == 1 and spike[0]["max_step"] == 17_777
    [curve] = reader.downsample(run_id, "train/loss", 100)
    assert sum(b["nan"] for b in curve["buckets"]) == 1
    assert sum(b["posinf"] for b in curve["buckets"]) == 1
    assert sum(b["neginf"] for b in curve["buckets"]) == 1
    [curve] = reader.downsample(run_id, "train/loss", 1000, 40_000, 40_000)
    [b] = curve["buckets"]
    assert b["value"] is None and b["nonfinite"] == "inf" and b["posinf"] == 1


def test_rollups_are_written_for_long_series(spiky_run: tuple[Path, str, np.ndarray]) -> None:
    path, _, _ = spiky_run
    con = Store(path).connect()
    (n,) = con.execute("SELECT count(*) FROM rollups").fetchone()
    assert n == 3
    (npts,) = con.execute("SELECT sum(n) FROM rollups").fetchone()
    assert npts == 3 * CHUNK * ROLLUP


def test_unknown_key_gives_no_curve(spiky_run: tuple[Path, str, np.ndarray]) -> None:
    path, run_id, _ = spiky_run
    assert Store(path).reader().downsample(run_id, "nope", 100) == []
