"""KL divergence of next-token distributions from the starting model's (causal LMs): `probe/kl`.

KL(p₀ ‖ p) per token, averaged over the probe batch's tokens, with p₀ the starting model. Keeping
p₀ whole would take n x tokens x vocabulary floats (6.6 GB for GPT-2 at 256 x 128), so only its
top-k tokens (default 64) are kept and the rest of the vocabulary is one more bin. KL on that
coarser partition is a lower bound of the full KL (data-processing inequality) and equals it
when p₀'s mass sits in its top-k, as it does for a trained LM on text it models well. Memory:
256 x 128 tokens x 65 values, ~17 MB.

>>> import torch
>>> logits = torch.randn(1, 5, 50)
>>> ref = KLReference(top_k=8)
>>> ref.add(0, logits, torch.ones(1, 5))
>>> total, tokens = ref.divergence(0, logits, torch.ones(1, 5))
>>> abs(float(total)) < 1e-5, int(tokens)
(True, 5)
"""

from __future__ import annotations

import math

import torch

KEY = "probe/kl"


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Mächler 2012)."""
    x = x.clamp(max=-1e-12)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _bins(logp: torch.Tensor) -> torch.Tensor:
    """(tokens, k) log-probabilities -> (tokens, k + 1) with the rest of the mass appended."""
    rest = _log1mexp(torch.logsumexp(logp, dim=-1, keepdim=True))
    return torch.cat([logp, rest], dim=-1)


class KLReference:
    """The starting model's top-k next-token log-probabilities, per probe chunk."""

    def __init__(self, top_k: int = 64) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k
        self.index: dict[int, torch.Tensor] = {}  # chunk -> (tokens, k) vocabulary ids
        self.logp: dict[int, torch.Tensor] = {}  # chunk -> (tokens, k + 1) log p₀ per bin

    def add(self, chunk: int, logits: torch.Tensor, mask: torch.Tensor) -> None:
        """Remember the starting model's distributions for one chunk."""
        logp = torch.log_softmax(logits[mask.bool()].float(), dim=-1)
        top = logp.topk(min(self.top_k, logp.shape[-1]), dim=-1)
        self.index[chunk] = top.indices
        self.logp[chunk] = _bins(top.values)

    def divergence(
        self, chunk: int, logits: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """(sum of per-token KL(p₀ ‖ p) over the chunk, number of tokens)."""
        logq = torch.log_softmax(logits[mask.bool()].float(), dim=-1)
        index = self.index[chunk].to(logq.device)
        logp = self.logp[chunk].to(logq.device)
        logq_bins = _bins(logq.gather(-1, index))
        p = logp.exp()
        # Bins p₀ gives no mass add nothing (0 · log 0 = 0), whatever q says.
        kl = torch.where(p > 0, p * (logp - logq_bins), torch.zeros_like(p))
        return kl.sum(), index.shape[0]

    def state_dict(self) -> dict[str, object]:
        """The kept distributions (for resuming with the same reference)."""
        return {"top_k": self.top_k, "index": self.index, "logp": self.logp}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Use distributions saved by `state_dict()`."""
        self.top_k = int(state["top_k"])  # type: ignore[call-overload]
        self.index = dict(state["index"])  # type: ignore[call-overload]
        self.logp = dict(state["logp"])  # type: ignore[call-overload]
