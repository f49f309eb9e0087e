"""Layer groups across architectures, and parameter drift with and without LoRA."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tinymodels import bert_config
from tunescope.probes.drift import Drift
from tunescope.probes.groups import layer_groups


def _bert(num_labels: int = 3) -> torch.nn.Module:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config(num_labels=num_labels))


def _lora(model: torch.nn.Module) -> torch.nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"]
    )
    return get_peft_model(model, cfg)


def test_groups_bert_gpt2_peft_and_plain() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    bert = layer_groups(_bert().named_parameters())
    assert bert.names == ("embeddings", "layer_0", "layer_1", "head")
    assert bert.of["bert.encoder.layer.1.output.dense.weight"] == "layer_1"
    assert bert.of["bert.pooler.dense.weight"] == bert.of["classifier.bias"] == "head"
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2))
    g = layer_groups(gpt.named_parameters())
    assert g.names == ("embeddings", "layer_0", "layer_1", "layer_2", "head")
    assert (
        g.of["transformer.wpe.weight"] == "embeddings" and g.of["transformer.ln_f.bias"] == "head"
    )
    peft = layer_groups(_lora(_bert()).named_parameters())
    assert peft.names == bert.names
    trained = [n for n, p in _lora(_bert()).named_parameters() if p.requires_grad]
    assert peft.subset(trained).names == ("layer_0", "layer_1", "head")
    assert peft.subset(trained).bottom == "layer_0"
    seq = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    plain = layer_groups(seq.named_parameters())
    assert (plain.names, plain.bottom, plain.top) == (("0", "2"), "0", "2")


def _manual(
    start: dict[str, torch.Tensor], now: dict[str, torch.Tensor], groups: dict[str, str]
) -> dict[str, float]:
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for name, p0 in start.items():
        g = groups[name]
        num[g] = num.get(g, 0.0) + float((now[name].detach().double() - p0.double()).pow(2).sum())
        den[g] = den.get(g, 0.0) + float(p0.double().pow(2).sum())
    out = {f"probe/param_drift/{g}": math.sqrt(num[g] / den[g]) for g in num if num[g] > 0}
    out["probe/param_drift"] = math.sqrt(sum(num.values()) / sum(den.values()))
    return out


def test_full_fine_tuning_drift_matches_definition() -> None:
    model = _bert()
    model.bert.embeddings.requires_grad_(False)  # frozen: only in the denominator
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    drift = Drift(model)
    assert set(drift.measure()) == {
        "probe/param_drift",
        "probe/param_drift/layer_0",
        "probe/param_drift/layer_1",
        "probe/param_drift/head",
    }
    assert all(float(v) == 0.0 for v in drift.measure().values())
    # Only trainable parameters are copied.
    copied = sum(x.start.numel() for x in drift.plain)
    assert copied == sum(p.numel() for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    got = {k: float(v) for k, v in drift.measure().items()}
    groups = layer_groups(model.named_parameters()).of
    want = _manual(start, dict(model.named_parameters()), groups)
    assert got == pytest.approx(want, rel=1e-6)  # the difference is taken in float32


def test_lora_drift_is_the_drift_of_the_merged_weights() -> None:
    base = _bert()
    original = copy.deepcopy(base)
    model = _lora(base)
    drift = Drift(model)
    # The copies are the adapters and the classifier head only, not the base weights.
    kept = sum(x.start.numel() for x in drift.plain) + sum(
        x.a0.numel() + x.b0.numel() for x in drift.pairs
    )
    assert kept < 0.2 * sum(p.numel() for p in original.parameters())
    assert float(drift.measure()["probe/param_drift"]) == 0.0
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    got = {k: float(v) for k, v in drift.measure().items()}
    merged = copy.deepcopy(model).merge_and_unload()
    start = {n: p.detach() for n, p in original.named_parameters()}
    want = _manual(
        start, dict(merged.named_parameters()), layer_groups(original.named_parameters()).of
    )
    assert "probe/param_drift/embeddings" not in got  # LoRA never moves them
    assert got == pytest.approx(want, rel=1e-6)


def test_drift_state_round_trip() -> None:
    model = _lora(_bert())
    drift = Drift(model)
    state = drift.state_dict()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)
    before = {k: float(v) for k, v in drift.measure().items()}
    other = Drift(model)  # taken after the change: drift 0 against itself
    assert float(other.measure()["probe/param_drift"]) == 0.0
    other.load_state_dict(state)
    assert {k: float(v) for k, v in other.measure().items()} == pytest.approx(before)
    with pytest.raises(ValueError, match="different model"):
        Drift(_bert()).load_state_dict(state)
