"""`Probes`: baseline, interval, what each probe reports, reference round trip, no trace left."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tinymodels import bert_config
from tunescope.probes.isolation import untouched
from tunescope.probes.manager import Probes, Settings
from tunescope.probes.representations import ProbeBatch
from tunescope.probes.retain import Evaluator, RetainSet


class Log:
    def __init__(self) -> None:
        self.calls: list[tuple[int | None, dict[str, float]]] = []

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        self.calls.append((step, {k: float(v) for k, v in data.items()}))


def _bert(dropout: float = 0.1) -> torch.nn.Module:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config(num_labels=2, hidden_dropout_prob=dropout))


def _rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "input_ids": [2, *rng.integers(4, 64, size=int(rng.integers(4, 12))).tolist()],
            "labels": i % 2,
        }
        for i in range(n)
    ]


def _probes(every: int = 5, retain: bool = False) -> Probes:
    batch = ProbeBatch.from_rows(_rows(24), pad_id=1, chunk_size=8, max_length=16)
    ev = None
    if retain:
        rs = RetainSet(
            "old", _rows(20, 1), head="readout", fit_rows=_rows(30, 2), class_names=["a", "b"]
        )
        ev = Evaluator([rs], pad_id=1, batch_size=8)
    return Probes(Settings(every=every), batch, ev)


def test_baseline_then_interval_and_last_step() -> None:
    model, log, probes = _bert(), Log(), _probes(every=5, retain=True)
    probes.begin(model, log, step=0)
    step, base = log.calls[0]
    assert step == 0
    cka = {f"probe/cka/{n}" for n in ("embeddings", "layer_0", "layer_1")}
    drift = {f"probe/param_drift/{g}" for g in ("embeddings", "layer_0", "layer_1", "head")}
    assert cka | drift | {"probe/cka", "probe/param_drift", "retain/accuracy"} <= set(base)
    assert base["probe/cka"] == 1.0 and base["probe/param_drift"] == 0.0
    done = [s for s in range(1, 13) if probes.step_end(model, log, s, last=s == 12)]
    assert done == [5, 10, 12]
    probes.evaluate(model, log, step=12)
    assert log.calls[-1] == (12, {"retain/accuracy": base["retain/accuracy"]})


def test_cka_falls_most_where_the_model_moved() -> None:
    model, log, probes = _bert(), Log(), _probes(every=1)
    probes.begin(model, log)
    probes.step_end(model, log, 1)
    same = log.calls[-1][1]
    assert same["probe/cka"] == pytest.approx(1.0, abs=1e-9)
    assert same["probe/param_drift"] == 0.0
    with torch.no_grad():  # scramble the top layer only
        for p in model.bert.encoder.layer[1].parameters():
            if p.dim() == 2:
                p.copy_(torch.randn_like(p) * p.std() * 30)
    probes.step_end(model, log, 2)
    moved = log.calls[-1][1]
    assert moved["probe/cka/layer_0"] == pytest.approx(1.0, abs=1e-9)
    assert moved["probe/cka/layer_1"] < 0.9
    assert moved["probe/param_drift/layer_1"] > 0.5 and "probe/param_drift/layer_0" in moved
    assert moved["probe/param_drift/layer_0"] == 0.0
    # The summary weighs layer 0 twice as much as layer 1 (of two layers).
    want = (2 * moved["probe/cka/layer_0"] + moved["probe/cka/layer_1"]) / 3
    assert moved["probe/cka"] == pytest.approx(want)


def test_reference_round_trip(tmp_path: Path) -> None:
    model, log, probes = _bert(), Log(), _probes(every=1, retain=True)
    probes.begin(model, log)
    probes.save(tmp_path / "ref.pt")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    probes.step_end(model, log, 1)
    again = _probes(every=1, retain=True)
    again.load(tmp_path / "ref.pt", model)  # a resumed run: the start is not the model now
    assert again.last == 0
    again.step_end(model, log, 1)
    for _, values in log.calls[-2:]:
        values.pop("sys/probe_seconds")
    assert log.calls[-1][1] == pytest.approx(log.calls[-2][1])
    again.evaluate(model, log, 1)
    probes.evaluate(model, log, 1)
    assert log.calls[-1] == log.calls[-2]


def test_untouched_restores_every_generator_and_mode() -> None:
    model = _bert()
    model.train()
    model.bert.embeddings.eval()  # a user's own choice must survive too
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state())
    with untouched(model):
        assert not model.training and not torch.is_grad_enabled()
        random.random(), np.random.rand(), torch.rand(3)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.random.get_rng_state(), states[2])
    assert model.training and not model.bert.embeddings.training
    assert model.bert.encoder.training and torch.is_grad_enabled()
