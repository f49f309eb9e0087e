"""A tiny model and loop for the actuation tests: an MLP with dropout (so the RNG matters),
AdamW, a warmup-then-linear LambdaLR, and fixed batches."""

from __future__ import annotations

from typing import Any

import torch


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 16),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.BatchNorm1d(16),  # a buffer that changes with training
        torch.nn.Linear(16, 3),
    )
    net[0].requires_grad_(False)  # a frozen layer: not in snapshots, never changes
    return net


def optimizer(net: torch.nn.Module, lr: float = 1e-2) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr)


def scheduler(opt: torch.optim.Optimizer, total: int = 100, warmup: int = 5) -> Any:
    """Linear warmup then linear decay, as transformers' default schedule (a LambdaLR)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / (total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(16, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def train_step(net: torch.nn.Module, opt: Any, sched: Any, step: int) -> float:
    net.train()
    x, y = batch(step)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    opt.zero_grad()
    return float(loss.detach())


def weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
