"""Tiny data and tokenizers for the fine-tuning tests: keyword-separable topics, a word-level
tokenizer trained on the test texts. Nothing is downloaded."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from tinymodels import bert_config, gpt2_config

TOPICS = {
    "sport": "match goal team coach league score player season",
    "money": "market stock profit bank shares price trade economy",
    "film": "actor movie director award cinema music star festival",
}
FILLER = ["the", "a", "of", "and", "in", "on", "with", "for", "today", "said", "new", "year"]


def make_rows(n_per_class: int = 20, seed: int = 0) -> list[dict[str, str]]:
    """Short texts whose topic words give away the label (a tiny model can learn them)."""
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        vocab = words.split()
        for _ in range(n_per_class):
            text = [rng.choice(vocab if rng.random() < 0.5 else FILLER) for _ in range(12)]
            rows.append({"text": " ".join(text), "label": label})
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_tokenizer(texts: list[str], path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        texts, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[CLS]", "<eos>"])
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", special_tokens=[("[CLS]", tok.token_to_id("[CLS]"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        eos_token="<eos>",
        model_max_length=64,
    )
    fast.save_pretrained(path)


def corpus() -> list[str]:
    return [r["text"] for r in make_rows(40, seed=1)] + [" ".join(FILLER)]


def save_tiny_bert(path: Path) -> Path:
    """A 2-layer, 32-wide BERT encoder with random weights (dropout on) and the word-level
    tokenizer, saved as a model directory."""
    from transformers import BertModel, set_seed

    make_tokenizer(corpus(), path)
    set_seed(0)
    BertModel(bert_config()).save_pretrained(path)
    return path


def save_tiny_gpt2(path: Path) -> Path:
    """A 2-layer, 32-wide GPT-2 with random weights and the word-level tokenizer, saved as a
    model directory."""
    from transformers import GPT2LMHeadModel, set_seed

    make_tokenizer(corpus(), path)
    set_seed(0)
    GPT2LMHeadModel(gpt2_config()).save_pretrained(path)
    return path
