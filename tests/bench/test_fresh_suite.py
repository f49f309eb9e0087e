"""Integrity of the fresh diagnosis sets (bench/diagnosis/fresh/runs/A and B).

The runs are committed data: every CSV parses, labels.json and the files agree, the labels are
consistent with the scenarios, the two sets use disjoint seeds never used by the tuned suite,
and each set is as large as promised (set B: >= 100 runs kept, >= 40 healthy). No diagnosis is
run here: set B is scored only when asked.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tunescope.io.csv import read

BENCH = Path(__file__).resolve().parents[2] / "bench" / "diagnosis"
RUNS = BENCH / "fresh" / "runs"
KINDS = {
    "overfitting",
    "underfitting",
    "forgetting",
    "divergence",
    "loss_spike",
    "lr_too_high",
    "lr_too_low",
    "plateau",
    "exploding_gradients",
    "vanishing_gradients",
}
TARGETS = {"A": {"kept": 60, "healthy": 20}, "B": {"kept": 100, "healthy": 40}}
TUNED_SEEDS = set(range(0, 24))  # bench/diagnosis/suite: tuning 0-19, holdout 20-23


@cache
def _labels(set_: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RUNS / set_ / "labels.json").read_text())
    return data


def _runs(set_: str) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = _labels(set_)["runs"]
    return runs


@pytest.mark.parametrize("set_", ["A", "B"])
def test_files_and_labels_match(set_: str) -> None:
    csvs = {p.stem for p in (RUNS / set_).glob("*.csv")}
    assert csvs == set(_runs(set_)), "every run in labels.json has a CSV and every CSV a label"


@pytest.mark.parametrize("set_", ["A", "B"])
def test_every_csv_parses(set_: str) -> None:
    for name, run in _runs(set_).items():
        rows = list(read(RUNS / set_ / f"{name}.csv"))
        assert len(rows) == run["rows"], name
        metrics = {r.metric for r in rows}
        assert {"train/loss", "eval/loss"} <= metrics, name
        steps = [r.step for r in rows]
        assert min(steps) == 0 and max(steps) <= run["max_steps"], name
        assert all(isinstance(r.value, float) for r in rows), name


@pytest.mark.parametrize("set_", ["A", "B"])
def test_labels_are_consistent(set_: str) -> None:
    runs = _runs(set_)
    for name, run in runs.items():
        assert name == f"{run['family']}-{run['scenario']}-s{run['seed']}"
        assert run["set"] == set_
        assert set(run["intended"]) <= KINDS and set(run["allowed"]) <= KINDS
        assert not set(run["intended"]) & set(run["allowed"]), name
        assert "excluded" in run and "expected" in run, f"{name} was never labelled"
        if run["excluded"]:
            assert run["expected"] == [], name
            continue
        # a kept run has every intended kind confirmed, with an onset inside the run
        assert [e["kind"] for e in run["expected"]] == run["intended"], name
        for e in run["expected"]:
            assert 0 <= e["onset_step"] <= run["max_steps"], name
        if run["reference"]:
            assert run["reference"] in runs, name
        chance = run["facts"].get("chance_loss")
        assert chance is not None and math.isfinite(chance) and chance > 0, name


def test_seed_sets_are_disjoint_and_new() -> None:
    seeds = {s: {r["seed"] for r in _runs(s).values()} for s in ("A", "B")}
    assert seeds["A"] and seeds["B"]
    assert not seeds["A"] & seeds["B"]
    assert not (seeds["A"] | seeds["B"]) & TUNED_SEEDS
    assert set(_labels("A")["seeds"]) == seeds["A"]
    assert set(_labels("B")["seeds"]) == seeds["B"]


@pytest.mark.parametrize("set_", ["A", "B"])
def test_sets_are_large_enough(set_: str) -> None:
    kept = [r for r in _runs(set_).values() if not r["excluded"]]
    healthy = [r for r in kept if not r["intended"]]
    assert len(kept) >= TARGETS[set_]["kept"]
    assert len(healthy) >= TARGETS[set_]["healthy"]
    families = {r["family"] for r in kept}
    assert {"cnn", "reg", "optim", "hfbert", "hfgpt"} <= families
    # every scored group has positives
    kinds = {e["kind"] for r in kept for e in r["expected"]}
    assert {
        "overfitting",
        "forgetting",
        "lr_too_high",
        "lr_too_low",
        "vanishing_gradients",
    } <= kinds


def test_csv_size_is_reasonable() -> None:
    total = sum(p.stat().st_size for p in RUNS.glob("*/*.csv"))
    assert total < 20e6  # ~14 MB in the tree, ~2.5 MB compressed
