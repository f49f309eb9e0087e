"""Configs of the tiny randomly initialised transformers the tests build (nothing is
downloaded): a 2-layer, 32-wide BERT and GPT-2 over a 64-token vocabulary. Callers seed and
override what their test needs (labels, positions, dropout)."""

from __future__ import annotations

from typing import Any


def bert_config(**overrides: Any) -> Any:
    """A `BertConfig`: 2 layers, width 32, 2 heads, 64 positions, unless overridden."""
    from transformers import BertConfig

    base: dict[str, Any] = {
        "vocab_size": 64,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    }
    return BertConfig(**{**base, **overrides})


def gpt2_config(**overrides: Any) -> Any:
    """A `GPT2Config`: 2 layers, width 32, 2 heads, 64 positions, token 3 as BOS/EOS."""
    from transformers import GPT2Config

    base: dict[str, Any] = {
        "vocab_size": 64,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 2,
        "n_positions": 64,
        "bos_token_id": 3,
        "eos_token_id": 3,
    }
    return GPT2Config(**{**base, **overrides})
