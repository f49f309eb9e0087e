"""`probe/kl` (top-k next-token KL) and retain-set scoring (model head, readout, perplexity)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tunescope.probes.kl import KLReference
from tunescope.probes.retain import Evaluator, Readout, RetainSet


def _full_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    logp, logq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    return float((logp.exp() * (logp - logq)).sum(-1).mean())


def test_kl_is_exact_with_the_whole_vocabulary_and_a_lower_bound_below() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(2, 6, 40, generator=g) * 3
    q = p + torch.randn(2, 6, 40, generator=g)
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0  # padding is not scored
    full = _full_kl(p[mask.bool()], q[mask.bool()])
    exact = KLReference(top_k=40)
    exact.add(0, p, mask)
    total, n = exact.divergence(0, q, mask)
    assert n == 10 and float(total) / n == pytest.approx(full, rel=1e-5)
    coarse = KLReference(top_k=5)
    coarse.add(0, p, mask)
    total, n = coarse.divergence(0, q, mask)
    assert 0 < float(total) / n <= full
    same, _ = coarse.divergence(0, p, mask)
    assert abs(float(same)) < 1e-5


class _Tiny(torch.nn.Module):
    """A bag-of-embeddings classifier / LM with HF-style outputs."""

    def __init__(self, vocab: int = 16, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, width)
        self.head = torch.nn.Linear(width, classes)
        self.lm = torch.nn.Linear(width, vocab)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        output_hidden_states: bool = False,
    ) -> object:
        h = self.emb(input_ids)
        pooled = (h * attention_mask.unsqueeze(-1)).sum(1) / attention_mask.sum(1, keepdim=True)

        class Out:
            logits = self.head(pooled) if not getattr(self, "as_lm", False) else self.lm(h)
            hidden_states = (h, h * 2)

        return Out()


def _rows(n: int, seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 3
        ids = [int(x) for x in rng.integers(3 + 4 * label, 7 + 4 * label, size=5)]
        rows.append({"input_ids": ids, "attention_mask": [1] * 5, "labels": label})
    return rows


def test_readout_knows_the_old_task_and_forgets_when_features_move() -> None:
    model = _Tiny()
    rs = RetainSet(
        "old",
        _rows(60, 1),
        metric="accuracy",
        head="readout",
        fit_rows=_rows(90, 2),
        class_names=["a", "b", "c"],
    )
    ev = Evaluator([rs], pad_id=0, batch_size=16)
    base = ev.begin(model)
    assert base["retain/accuracy"] > 0.95  # the three token ranges are linearly separable
    with torch.no_grad():
        model.emb.weight.copy_(torch.randn_like(model.emb.weight)[torch.randperm(16)])
    assert ev.evaluate(model)["retain/accuracy"] < 0.8
    # The readout is kept as arrays and survives a round trip.
    again = Evaluator([rs], pad_id=0, batch_size=16)
    again.load_state_dict(ev.state_dict())
    assert again.evaluate(model) == ev.evaluate(model)


def test_readout_matches_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    for classes in (2, 4):
        x, y = rng.normal(size=(80, 5)), rng.integers(0, classes, 80)
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
        r = Readout(
            pipe[0].mean_,
            pipe[0].scale_,
            pipe[1].coef_,
            pipe[1].intercept_,
            pipe[1].classes_,
            classes,
        )
        np.testing.assert_allclose(r.probabilities(x), pipe.predict_proba(x), rtol=1e-9)


def test_model_head_maps_class_names_and_rejects_unknown_ones() -> None:
    model = _Tiny()
    rows = _rows(30, 3)
    rs = RetainSet("same", rows, metric="accuracy", class_names=["a", "b", "c"])
    labels = {"c": 0, "a": 1, "b": 2}  # the model's own order
    acc = Evaluator([rs], pad_id=0, model_labels=labels).evaluate(model)["retain/accuracy"]
    with torch.no_grad():
        pred = torch.stack(
            [model(torch.tensor([r["input_ids"]]), torch.ones(1, 5)).logits[0] for r in rows]
        ).argmax(-1)
    want = np.mean(
        [int(p) == labels["abc"[int(r["labels"])]] for p, r in zip(pred, rows, strict=True)]
    )
    assert acc == pytest.approx(want)
    other = RetainSet("other", rows, class_names=["a", "b", "zebra"])
    with pytest.raises(ValueError, match=r"zebra.*head=readout"):
        Evaluator([other], pad_id=0, model_labels=labels)


def test_perplexity_is_exp_of_mean_token_loss_and_keys_name_each_set() -> None:
    model = _Tiny()
    model.as_lm = True  # type: ignore[attr-defined]
    rows = [
        {"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]} for r in _rows(6, 4)
    ]
    sets = [
        RetainSet("web", rows, metric="perplexity", task="causal-lm"),
        RetainSet("code", rows, metric="loss", task="causal-lm"),
    ]
    out = Evaluator(sets, pad_id=0, batch_size=4).evaluate(model)
    with torch.no_grad():
        ids = torch.tensor([r["input_ids"] for r in rows])
        logits = model(ids, torch.ones_like(ids)).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, 16), ids[:, 1:].reshape(-1)
        )
    assert out["retain/code/loss"] == pytest.approx(float(loss), rel=1e-5)
    assert out["retain/web/perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-5)
    with pytest.raises(ValueError, match="perplexity"):
        RetainSet("x", rows, metric="accuracy", task="causal-lm")
    with pytest.raises(ValueError, match="unique"):
        Evaluator([sets[0], sets[0]], pad_id=0)
