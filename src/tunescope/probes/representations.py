"""The fixed probe batch and what the model makes of it: one pooled vector per text per layer.

The probe batch is tokenized once, sorted by length (less padding) and cut into chunks; every
probe feeds the same chunks in the same order, so row i of every feature matrix is the same
text. Hidden states are pooled by a masked mean over the tokens, so each layer gives an
n x d matrix to compare with CKA. The starting model's features are computed once, when
training begins, and kept (n x d per layer: 2.7 MB for MiniLM at n = 256) — not a second model.
With LoRA the starting model is the base with its adapters switched off (`disable_adapter()`),
so even a resumed run compares with the true start.

>>> rows = [{"input_ids": [5, 6, 7]}, {"input_ids": [5, 6]}]
>>> batch = ProbeBatch.from_rows(rows, pad_id=0, chunk_size=8, max_length=16)
>>> batch.chunks[0]["attention_mask"].tolist()
[[1, 1, 0], [1, 1, 1]]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LogitsHook = Callable[[int, torch.Tensor, torch.Tensor], None]  # (chunk, logits, mask)


@dataclass
class ProbeBatch:
    """Tokenized texts, padded into chunks of `chunk_size` (kept on the CPU)."""

    chunks: list[dict[str, torch.Tensor]]
    size: int

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Mapping[str, Any]],
        *,
        pad_id: int,
        chunk_size: int,
        max_length: int,
    ) -> ProbeBatch:
        """Chunks from tokenized rows (`input_ids`, optional `attention_mask`/`token_type_ids`)."""
        if not rows:
            raise ValueError("the probe batch is empty: give at least 4 tokenized texts")
        cut = [{k: list(r[k])[:max_length] for k in INPUTS if k in r} for r in rows]
        order = sorted(range(len(cut)), key=lambda i: len(cut[i]["input_ids"]))
        chunks = []
        for start in range(0, len(order), chunk_size):
            chunks.append(_pad([cut[i] for i in order[start : start + chunk_size]], pad_id))
        return cls(chunks, len(rows))


def _pad(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)
    out: dict[str, torch.Tensor] = {}
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = torch.tensor(r["attention_mask"]) if "attention_mask" in r else 1
    out["input_ids"], out["attention_mask"] = ids, mask
    if all("token_type_ids" in r for r in rows):
        types = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            types[i, : len(r["token_type_ids"])] = torch.tensor(r["token_type_ids"])
        out["token_type_ids"] = types
    return out


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's first parameter lives (inputs go there)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens: (batch, tokens, d) -> (batch, d), in float32."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return ((hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)).float()


def layer_names(count: int) -> list[str]:
    """Names of the `count` hidden states a model returns: `embeddings`, then `layer_N`."""
    return ["embeddings"] + [f"layer_{i}" for i in range(count - 1)]


def features(
    model: torch.nn.Module, batch: ProbeBatch, *, on_logits: LogitsHook | None = None
) -> list[torch.Tensor]:
    """Pooled hidden states of the probe batch, one n x d matrix per hidden state.

    Call it inside `isolation.untouched(model)`. `on_logits(chunk, logits, mask)` sees each
    chunk's output logits (for KL) so they never pile up in memory.
    """
    device = model_device(model)
    pooled: list[list[torch.Tensor]] = []
    for i, chunk in enumerate(batch.chunks):
        inputs = {k: v.to(device) for k, v in chunk.items()}
        out = model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states
        if hidden is None:
            raise TypeError(
                f"{type(model).__name__} returned no hidden states; probes need a Hugging Face "
                "model that accepts output_hidden_states=True"
            )
        if not pooled:
            pooled = [[] for _ in hidden]
        for store, h in zip(pooled, hidden, strict=True):
            store.append(pool(h, inputs["attention_mask"]))
        if on_logits is not None:
            on_logits(i, out.logits, inputs["attention_mask"])
        del out, hidden
    return [torch.cat(parts) for parts in pooled]


@contextlib.contextmanager
def starting_model(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model as it was before fine-tuning: a peft model with its adapters switched off.

    A plain model is already its own start when training begins (no copy is made).
    """
    disable = getattr(model, "disable_adapter", None)
    if callable(disable) and hasattr(model, "peft_config"):
        with disable():
            yield model
    else:
        yield model
