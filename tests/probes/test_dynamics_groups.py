"""Per-layer-group gradient norms and update ratios, clipping and loss scale (`Watcher`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import tunescope
from tinymodels import bert_config
from tunescope.probes.dynamics import Watcher
from tunescope.probes.groups import layer_groups
from tunescope.store import Store


def _bert() -> torch.nn.Module:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    cfg = bert_config(num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def _group_norms(model: torch.nn.Module) -> dict[str, float]:
    groups = layer_groups(model.named_parameters()).of
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            sq[groups[name]] = sq.get(groups[name], 0.0) + float(p.grad.double().pow(2).sum())
    return {g: math.sqrt(v) for g, v in sq.items()}


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(4, 64, (8, 12), generator=g),
        "labels": torch.randint(0, 3, (8,), generator=g),
    }


@pytest.mark.parametrize("scaled", [False, True])
def test_group_norms_are_pre_clip_and_unscaled(store_dir: Path, scaled: bool) -> None:
    model = _bert()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if scaled else None
    expected: dict[int, dict[str, float]] = {}
    with tunescope.init("dyn", mode=None) as run:
        Watcher(run, model, opt, every=2, scaler=scaler)
        for step in range(1, 7):
            opt.zero_grad()
            for micro in range(2):  # gradient accumulation: the copy must be the full sum
                loss = model(**_batch(10 * step + micro)).loss / 2
                (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(opt)
            norms = _group_norms(model)
            expected[step] = norms
            # Clip hard on odd steps only: half of the steps between measurements are clipped.
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3 if step % 2 else 1e9)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            run.log({"train/loss": loss.detach()}, step=step)
    reader = Store(store_dir).reader()
    keys = {k["key"] for k in reader.keys(run.id)}
    names = ("embeddings", "layer_0", "layer_1", "head")
    assert {f"train/grad_norm/{g}" for g in (*names, "bottom", "top")} <= keys
    assert {f"train/update_ratio/{g}" for g in names} <= keys
    for g, alias in (
        ("embeddings", "bottom"),
        ("head", "top"),
        ("layer_0", None),
        ("layer_1", None),
    ):
        series = reader.series(run.id, f"train/grad_norm/{g}")
        assert series.steps.tolist() == [2, 4, 6]
        want = [expected[s][g] for s in (2, 4, 6)]
        assert series.values.tolist() == pytest.approx(want, rel=1e-4)
        if alias:
            assert reader.series(
                run.id, f"train/grad_norm/{alias}"
            ).values.tolist() == pytest.approx(want, rel=1e-4)
    total = reader.series(run.id, "train/grad_norm").values.tolist()
    assert total == pytest.approx(
        [math.sqrt(sum(v**2 for v in expected[s].values())) for s in (2, 4, 6)], rel=1e-4
    )
    assert reader.series(run.id, "train/clip_fraction").values.tolist() == [0.5, 0.5, 0.5]
    if scaled:
        assert set(reader.series(run.id, "train/loss_scale").values.tolist()) == {1024.0}
    else:
        assert "train/loss_scale" not in keys


def test_update_ratio_per_group(store_dir: Path) -> None:
    model = _bert()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    groups = layer_groups(model.named_parameters()).of
    with tunescope.init("dyn", mode=None) as run:
        Watcher(run, model, opt, every=1)
        opt.zero_grad()
        model(**_batch(0)).loss.backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        run.log({"train/loss": 1.0}, step=1)
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for n, p in model.named_parameters():
        g = groups[n]
        num[g] = num.get(g, 0.0) + float((p.detach() - before[n]).double().pow(2).sum())
        den[g] = den.get(g, 0.0) + float(before[n].double().pow(2).sum())
    reader = Store(store_dir).reader()
    for g in num:
        got = reader.series(run.id, f"train/update_ratio/{g}").values.tolist()
        assert got == pytest.approx([math.sqrt(num[g] / den[g])], rel=1e-4)


def test_frozen_groups_are_left_out_and_bottom_is_the_first_trained(store_dir: Path) -> None:
    model = _bert()
    model.bert.embeddings.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with tunescope.init("dyn", mode=None) as run:
        Watcher(run, model, opt, every=1)
        model(**_batch(0)).loss.backward()
        expected = _group_norms(model)
        opt.step()
        run.log({"train/loss": 1.0}, step=1)
    reader = Store(store_dir).reader()
    keys = {k["key"] for k in reader.keys(run.id)}
    assert "train/grad_norm/embeddings" not in keys
    bottom = reader.series(run.id, "train/grad_norm/bottom").values.tolist()
    assert bottom == pytest.approx([expected["layer_0"]], rel=1e-4)
