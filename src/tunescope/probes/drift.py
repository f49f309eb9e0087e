"""Relative parameter drift ‖θ−θ₀‖/‖θ₀‖, per layer group and overall, against the start of training.

Only what can move is remembered: a copy of θ₀ for each trainable parameter (frozen ones only
add their norm to the denominator). With LoRA the model's effective weight is W + s·BA, so the
drift that matters is ‖s(BA − B₀A₀)‖ against ‖W‖ — computed from the r x r products
(‖B̃Ã‖² = tr(B̃ᵀB̃ · ÃÃᵀ) with B̃ = [B, −B₀], Ã = [A; A₀]) without ever forming BA or storing W
twice. So LoRA costs a copy of the adapters only, and full fine-tuning one copy of the weights,
kept in CPU memory when the model is on an accelerator.

Other adapter types (IA3, prompt tuning, DoRA's magnitude) are compared parameter by parameter.

>>> import torch
>>> m = torch.nn.Linear(4, 4)
>>> d = Drift(m)
>>> with torch.no_grad():
...     _ = m.weight.mul_(1.1)
>>> 0.0 < float(d.measure()["probe/param_drift"]) < 0.11
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from .groups import Groups, layer_groups
from .isolation import one_thread

KEY = "probe/param_drift"
# LoRA's own parameters: not weights of the model, but a low-rank change of them.
ADAPTER = re.compile(r"\.lora_(?:A|B|embedding_A|embedding_B|magnitude_vector)\.")
ORIGINAL = ".original_module."  # peft's frozen copy of a module it trains a replica of


def _wide(t: torch.Tensor) -> torch.Tensor:
    """float64 where the device has it (Apple's MPS does not)."""
    return t.float() if t.device.type == "mps" else t.double()


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each tensor (one fused kernel per device), as a float64 CPU vector."""
    if not tensors:
        return torch.zeros(0, dtype=torch.float64)
    return torch.stack([n.cpu() for n in torch._foreach_norm(tensors)]).double()


@dataclass
class _LoraPair:
    group: int
    a: torch.Tensor  # the A parameter (r rows)
    b: torch.Tensor  # the B parameter (r columns once flattened)
    a0: torch.Tensor  # A₀ as an (r, fan_in) matrix
    b0: torch.Tensor  # B₀ as a (fan_out, r) matrix
    scale: float

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current A (r x fan_in) and B (fan_out x r); conv kernels are flattened."""
        r = self.a.shape[0]
        return self.a.detach().reshape(r, -1), self.b.detach().reshape(-1, r)


@dataclass
class _Plain:
    group: int
    param: torch.Tensor
    start: torch.Tensor


def _lora_pairs(model: torch.nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    """(name of A, A, B, scaling) of each active plain-LoRA adapter."""
    out = []
    for name, module in model.named_modules():
        scaling = getattr(module, "scaling", None)
        if not isinstance(scaling, dict) or not hasattr(module, "lora_A"):
            continue
        dora = getattr(module, "use_dora", {})
        for adapter in getattr(module, "active_adapters", []):
            if dora.get(adapter) or adapter not in scaling:
                continue  # DoRA rescales W too: its parameters are compared one by one
            if adapter in module.lora_A:
                a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
                a_name = f"{name}.lora_A.{adapter}.weight"
            elif adapter in getattr(module, "lora_embedding_A", {}):
                a, b = module.lora_embedding_A[adapter], module.lora_embedding_B[adapter]
                a_name = f"{name}.lora_embedding_A.{adapter}"
            else:
                continue
            out.append((a_name, a, b, float(scaling[adapter])))
    return out


class Drift:
    """Measures ‖θ−θ₀‖/‖θ₀‖ against the parameters the model has when it is created.

    `measure()` returns 0-d tensors (no host sync) keyed `probe/param_drift` and
    `probe/param_drift/<group>` for every group that has trainable parameters.
    """

    def __init__(self, model: torch.nn.Module, *, offload: bool | None = None) -> None:
        named = [(n, p) for n, p in model.named_parameters() if ORIGINAL not in n]
        self.groups: Groups = layer_groups(named)
        weights = [(n, p.detach()) for n, p in named if not ADAPTER.search(n)]
        norms = _norms([p for _, p in weights])
        base = torch.zeros(len(self.groups.names), dtype=torch.float64)
        base.index_add_(0, torch.tensor([self.groups.index(n) for n, _ in weights]), norms**2)
        self.base_sq = base
        self.pairs: list[_LoraPair] = []
        in_pairs: set[int] = set()
        for a_name, a, b, scale in _lora_pairs(model):
            group = self.groups.index(a_name) if a_name in self.groups.of else 0
            pair = _LoraPair(group, a, b, a, b, scale)
            pair.a0, pair.b0 = (m.clone() for m in pair.matrices())
            self.pairs.append(pair)
            in_pairs.update((id(a), id(b)))
        self.plain: list[_Plain] = []
        for n, p in named:
            if p.requires_grad and id(p) not in in_pairs:
                off = p.device.type != "cpu" if offload is None else offload
                start = p.detach().to("cpu", copy=True) if off else p.detach().clone()
                self.plain.append(_Plain(self.groups.index(n), p, start))
        self._device = named[0][1].device if named else torch.device("cpu")
        moving = {x.group for x in self.plain} | {x.group for x in self.pairs}
        self.moving = sorted(moving)

    def _lora_sq(self, pair: _LoraPair) -> torch.Tensor:
        a_now, b_now = pair.matrices()
        a = _wide(torch.cat([a_now, pair.a0.to(a_now.device)]))
        b = _wide(torch.cat([b_now, -pair.b0.to(b_now.device)], dim=1))
        # ‖B̃Ã‖² = tr((B̃ᵀB̃)(ÃÃᵀ)): two 2r x 2r matrices instead of a fan_out x fan_in one.
        return (b.T @ b * (a @ a.T)).sum() * pair.scale**2

    def measure(self) -> dict[str, torch.Tensor]:
        """Drift per trainable group and overall (0 at creation)."""
        sq: list[torch.Tensor | None] = [None] * len(self.groups.names)

        def add(group: int, value: torch.Tensor) -> None:
            value = _wide(value)
            cur = sq[group]
            sq[group] = value if cur is None else cur + value.to(cur.device)

        with torch.no_grad(), one_thread(self._device):
            for x in self.plain:
                # One tensor at a time: the temporary difference is never bigger than one weight.
                start = x.start.to(x.param.device, non_blocking=True)
                add(x.group, torch.linalg.vector_norm(x.param.detach() - start).pow(2))
            for pair in self.pairs:
                add(pair.group, self._lora_sq(pair))
        out: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for group in self.moving:
            value = sq[group]
            assert value is not None
            den = self.base_sq[group].to(value.device, value.dtype)
            out[f"{KEY}/{self.groups.names[group]}"] = (value / den.clamp_min(1e-30)).sqrt()
            total = value if total is None else total + value.to(total.device)
        if total is not None:
            den = self.base_sq.sum().to(total.device, total.dtype)
            out[KEY] = (total / den.clamp_min(1e-30)).sqrt()
        return out

    def state_dict(self) -> dict[str, Any]:
        """θ₀ of what moves (for resuming a run with the same reference)."""
        return {
            "plain": [x.start for x in self.plain],
            "lora": [(x.a0, x.b0) for x in self.pairs],
            "base_sq": self.base_sq,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Use a θ₀ saved by `state_dict()` (the same model and adapters)."""
        if len(state["plain"]) != len(self.plain) or len(state["lora"]) != len(self.pairs):
            raise ValueError(
                "the saved parameter-drift reference is for a different model "
                f"({len(state['plain'])} trainable tensors and {len(state['lora'])} adapters "
                f"saved, {len(self.plain)} and {len(self.pairs)} now)"
            )
        for x, start in zip(self.plain, state["plain"], strict=True):
            x.start = start.to(x.start.device)
        for pair, (a0, b0) in zip(self.pairs, state["lora"], strict=True):
            pair.a0, pair.b0 = a0.to(pair.a0.device), b0.to(pair.b0.device)
        self.base_sq = state["base_sq"]
