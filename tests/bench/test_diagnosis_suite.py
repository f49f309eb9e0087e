"""Integrity of the diagnosis benchmark's labelled suite (bench/diagnosis/suite/).

The suite is committed data: these tests check that labels.json and the CSV files agree, that
the suite is as large and as varied as the benchmark claims, and that every label still follows
from its run's curves by the hindsight checks in bench/diagnosis/labels.py.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "diagnosis"
SUITE = BENCH / "suite"
sys.path.insert(0, str(BENCH))

import labels as hindsight  # noqa: E402
from common import HOLDOUT_SEEDS, KINDS  # noqa: E402

from tunescope.io.csv import read  # noqa: E402


@cache
def _runs() -> dict[str, dict[str, Any]]:
    data: dict[str, Any] = json.loads((SUITE / "labels.json").read_text())
    runs: dict[str, dict[str, Any]] = data["runs"]
    return runs


def _kept() -> list[dict[str, Any]]:
    return [r for r in _runs().values() if not r["excluded"]]


@cache
def _curves(name: str) -> hindsight.Curves:
    return hindsight.curves(read(SUITE / f"{name}.csv"))


def test_labels_and_csv_files_match() -> None:
    csvs = {p.stem for p in SUITE.glob("*.csv")}
    assert csvs == set(_runs()), "every run in labels.json has a CSV and every CSV a label"
    for name, run in _runs().items():
        assert run["name"] == name
        assert run["split"] == ("holdout" if run["seed"] in HOLDOUT_SEEDS else "tune")
        for e in run["expected"]:
            assert e["kind"] in KINDS and e["kind"] in run["intended"]
            assert 0 <= e["onset_step"] <= run["max_steps"]


def test_suite_is_large_and_varied() -> None:
    kept = _kept()
    assert len(kept) >= 40
    healthy = [r for r in kept if not r["intended"]]
    assert len(healthy) >= 10
    assert len({r["family"] for r in healthy}) >= 3, "healthy controls across model families"
    # seeds 13-15 of every scenario are held out; the extra tuning seeds (3-12) of the cheap
    # families make the tuning split larger, so the held-out share is well below a half
    holdout = sum(r["split"] == "holdout" for r in kept) / len(kept)
    assert 0.1 <= holdout <= 0.4
    assert {r["family"] for r in kept if r["split"] == "holdout"} == {r["family"] for r in kept}


def test_every_kind_has_positive_runs_in_both_splits() -> None:
    counts = Counter((e["kind"], r["split"]) for r in _kept() for e in r["expected"])
    missing = [(k, s) for k in KINDS for s in ("tune", "holdout") if counts[(k, s)] == 0]
    assert not missing, f"kinds without positive runs: {missing}"


def test_every_scenario_has_several_seeds() -> None:
    seeds: dict[tuple[str, str], set[int]] = {}
    for r in _runs().values():
        seeds.setdefault((r["family"], r["scenario"]), set()).add(r["seed"])
    # every scenario has the three base tuning seeds and the held-out ones: it is in both splits
    assert all({0, 1, 2, *HOLDOUT_SEEDS} <= s for s in seeds.values())


@pytest.mark.parametrize("name", sorted(_runs()))
def test_hindsight_checks_hold(name: str) -> None:
    run = _runs()[name]
    ref = _curves(run["reference"]) if run.get("reference") else None
    facts = {**run["facts"], "max_steps": run["max_steps"]}
    expected, why = hindsight.label(run["intended"], run["allowed"], _curves(name), facts, ref)
    assert why == run["excluded"]
    assert [(e["kind"], e["onset_step"]) for e in expected] == [
        (e["kind"], e["onset_step"]) for e in run["expected"]
    ]


def test_hindsight_checks_can_fail() -> None:
    """The checks are not rubber stamps: a healthy run does not pass as overfitting, and a
    scenario's intended kind missing from its curves excludes the run."""
    healthy = next(r for r in _kept() if r["scenario"] == "healthy" and r["family"] == "digits")
    curves = _curves(healthy["name"])
    facts = {**healthy["facts"], "max_steps": healthy["max_steps"]}
    assert not hindsight.overfitting(curves, facts).positive
    expected, why = hindsight.label(["overfitting"], [], curves, facts, None)
    assert expected == [] and why is not None and why.startswith("overfitting not confirmed")
