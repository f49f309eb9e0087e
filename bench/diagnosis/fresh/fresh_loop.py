"""One plain PyTorch training loop for the fresh families `cnn`, `reg` and `optim`.

The loop follows the suite's step convention (bench/diagnosis/common.py): step 0 is the model
before any update, `train/loss` at step s is the s-th batch's loss before the s-th update, an
evaluation at step s sees the model after s updates. Everything is logged through `log`
(`tunescope.Run.log` in the generator), every step.

What is new against the tuned families: a small CNN on the digits *images*, an MSE regression
head on scikit-learn's diabetes data, and optimizers / schedules the detectors were never
tuned on (SGD+momentum, Adam, AdamW, transformers' Adafactor; constant, cosine, linear, step;
with and without warm-up and clipping).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from common import (
    Batches,
    LogFn,
    Probe,
    RunFacts,
    eval_schedule,
    seed_everything,
    short,
)

DATA_SEED = 4321  # the fresh families' fixed digits split (the tuned families use 1234)
# diabetes split: one whose validation target has the training variance (chance MSE ~1.0)
DIABETES_SEED = 99


@dataclass(frozen=True)
class Setup:
    """One run of the plain loop: data, model, optimizer, schedule and the fault, if any."""

    data: str = "digits"  # digits | diabetes
    model: str = "mlp"  # mlp | cnn
    steps: int = 400
    eval_every: int = 20
    irregular: bool = False
    hidden: int = 64
    depth: int = 2
    act: str = "relu"
    channels: int = 16
    opt: str = "adam"  # sgd | adam | adamw | adafactor | adafactor-rel
    lr: float = 1e-3
    momentum: float = 0.0
    wd: float = 0.0
    batch: int = 32
    clip: float | None = None
    schedule: str = "constant"  # constant | cosine | linear | step
    warmup_steps: int = 0
    decay_at: int = 0
    decay_factor: float = 0.1
    n_train: int | None = None
    label_noise: float = 0.0
    shuffle_labels: bool = False
    frozen_body: bool = False  # only the head trains
    bad_batch_step: int | None = None  # classification: labels off by one; regression: y x 8
    inf_step: int | None = None  # one input holds inf (classification) / a NaN target (reg)
    lr_glitch: tuple[int, int, float] | None = None
    sequential: bool = False  # classification: upright digits first, then rotated (new head)
    phase1_steps: int = 300
    raw_target: bool = False  # regression: the target not standardised


# -- data --------------------------------------------------------------------------------------
@cache
def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(DATA_SEED))
    x, y = x[perm], y[perm]
    return x[:1300], y[:1300], x[1300:], y[1300:]


@cache
def _diabetes(raw: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diabetes (442 x 10): features and target standardised on the training part (`raw`: the
    target left in its own units, 25-346 — a user who forgot to scale it)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.float32)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(DIABETES_SEED))
    x, y = x[perm], y[perm]
    xtr, ytr, xva, yva = x[:340], y[:340], x[340:], y[340:]
    mx, sx = xtr.mean(0), xtr.std(0)
    my, sy = ytr.mean(), ytr.std()
    if raw:
        return (xtr - mx) / sx, ytr, (xva - mx) / sx, yva
    return (xtr - mx) / sx, (ytr - my) / sy, (xva - mx) / sx, (yva - my) / sy


def _rotate(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x.reshape(-1, 8, 8), 1, (1, 2)).reshape(-1, 64)


@dataclass
class Data:
    xtr: torch.Tensor
    ytr: torch.Tensor
    xva: torch.Tensor
    yva: torch.Tensor
    old: tuple[torch.Tensor, torch.Tensor] | None = None
    retain: tuple[torch.Tensor, torch.Tensor] | None = None


def _prepare(s: Setup, gen: torch.Generator) -> Data:
    if s.data == "diabetes":
        xtr, ytr, xva, yva = _diabetes(s.raw_target)
        d = Data(xtr, ytr.clone(), xva, yva)
    else:
        xtr, ytr, xva, yva = _digits()
        d = Data(xtr, ytr.clone(), xva, yva)
        if s.sequential:
            d = Data(_rotate(xtr), ytr.clone(), _rotate(xva), yva, (xtr, ytr), (xva, yva))
    if s.n_train is not None:
        d.xtr, d.ytr = d.xtr[: s.n_train], d.ytr[: s.n_train]
    if s.label_noise:
        flip = torch.rand(len(d.ytr), generator=gen) < s.label_noise
        d.ytr[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=gen)
    if s.shuffle_labels:
        d.ytr = d.ytr[torch.randperm(len(d.ytr), generator=gen)]
    return d


# -- models ------------------------------------------------------------------------------------
_ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


class Body(nn.Module):
    """Features (an MLP or a small CNN over the 8x8 image) and one or two heads."""

    def __init__(self, s: Setup, n_in: int, n_out: int) -> None:
        super().__init__()
        act = _ACTS[s.act]
        layers: list[nn.Module] = []
        if s.model == "cnn":
            c = s.channels
            layers = [
                nn.Unflatten(1, (1, 8, 8)),
                nn.Conv2d(1, c, 3, padding=1),
                act(),
                nn.Conv2d(c, 2 * c, 3, padding=1),
                act(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(2 * c * 16, s.hidden),
                act(),
            ]
        else:
            width = n_in
            for _ in range(s.depth):
                layers += [nn.Linear(width, s.hidden), act()]
                width = s.hidden
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(s.hidden, n_out)
        self.new = nn.Linear(s.hidden, n_out) if s.sequential else None
        self.regression = s.data == "diabetes"

    def old(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (self.new or self.head)(self.features(x))
        return out.squeeze(-1) if self.regression else out

    def groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        first = next(m for m in self.features if isinstance(m, nn.Linear | nn.Conv2d))
        return list(first.parameters()), list((self.new or self.head).parameters())


def _loss(net: Body, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = net(x)
    if net.regression:
        return nn.functional.mse_loss(out, y)
    return nn.functional.cross_entropy(out, y)


# -- optimizers and schedules ------------------------------------------------------------------
def _optimizer(s: Setup, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if s.opt == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.wd)
    if s.opt == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.wd)
    if s.opt == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.wd)
    from transformers.optimization import Adafactor

    if s.opt == "adafactor-rel":  # its own relative step size: the lr is not ours to set
        return Adafactor(params, lr=None, relative_step=True, scale_parameter=True)
    return Adafactor(params, lr=s.lr, relative_step=False, scale_parameter=False, warmup_init=False)


def lr_at(s: Setup, step: int) -> float:
    """The learning rate of update `step` (1-based): warm-up, then the schedule."""
    if s.warmup_steps and step <= s.warmup_steps:
        return s.lr * step / s.warmup_steps
    t = (step - 1 - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    if s.schedule == "cosine":
        return s.lr * 0.5 * (1 + math.cos(math.pi * t))
    if s.schedule == "linear":
        return s.lr * (1 - t)
    if s.schedule == "step":
        return s.lr * (s.decay_factor if step >= s.decay_at else 1.0)
    return s.lr


# -- evaluation --------------------------------------------------------------------------------
def _evaluate(net: Body, x: torch.Tensor, y: torch.Tensor, old: bool = False) -> dict[str, float]:
    net.eval()
    with torch.no_grad():
        out = net.old(x) if old else net(x)
    net.train()
    if net.regression and not old:
        mse = float(nn.functional.mse_loss(out, y))
        mae = float((out - y).abs().mean())
        r2 = 1.0 - mse / float(((y - y.mean()) ** 2).mean())
        return {"loss": mse, "mae": mae, "r2": r2}
    from sklearn.metrics import f1_score

    loss = float(nn.functional.cross_entropy(out, y))
    pred = out.argmax(1)
    acc = float((pred == y).float().mean())
    f1 = float(f1_score(y.numpy(), pred.numpy(), average="macro", zero_division=0))
    return {"loss": loss, "accuracy": acc, "f1": f1}


def _eval_values(net: Body, d: Data, probe: Probe) -> dict[str, float]:
    out = {f"eval/{k}": short(v) for k, v in _evaluate(net, d.xva, d.yva).items()}
    out["probe/param_drift"] = probe.drift()
    if d.retain is not None:
        r = _evaluate(net, *d.retain, old=True)
        out.update({"retain/loss": short(r["loss"]), "retain/accuracy": short(r["accuracy"])})
    return out


def _phase1(net: Body, s: Setup, d: Data, gen: torch.Generator) -> None:
    """Train the earlier task (upright digits) before the monitored run; not logged."""
    assert d.old is not None
    x, y = d.old
    opt = torch.optim.AdamW([*net.features.parameters(), *net.head.parameters()], lr=1e-3)
    batches = Batches(len(y), s.batch, gen)
    for _ in range(s.phase1_steps):
        idx = batches.next()
        loss = nn.functional.cross_entropy(net.old(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _batch(s: Setup, d: Data, step: int, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    idx = batches.next()
    xb, yb = d.xtr[idx], d.ytr[idx]
    regression = s.data == "diabetes"
    if step == s.bad_batch_step:
        yb = yb * 8.0 if regression else (yb + 1) % 10  # a shard written wrongly
    if step == s.inf_step:
        if regression:
            yb = yb.clone()
            yb[0] = float("nan")  # a missing target read as NaN
        else:
            xb = xb.clone()
            xb[0, 10] = float("inf")  # one corrupted sample
    return xb, yb


def fit(s: Setup, seed: int, log: LogFn) -> RunFacts:
    """Train one run under `s`, logging everything through `log`."""
    gen = seed_everything(seed)
    d = _prepare(s, gen)
    regression = s.data == "diabetes"
    net = Body(s, d.xtr.shape[1], 1 if regression else 10)
    if s.sequential:
        _phase1(net, s, d, gen)
    if s.frozen_body:
        for p in net.features.parameters():
            p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    if s.sequential:  # the old head is not part of the new task
        params = [*net.features.parameters(), *(net.new.parameters() if net.new else [])]
    opt = _optimizer(s, params)
    probe = Probe(net, *net.groups(), clip=s.clip)
    evals = eval_schedule(s.steps, s.eval_every, irregular=s.irregular, seed=seed)
    batches = Batches(len(d.ytr), s.batch, gen)
    net.train()
    for step in range(0, s.steps + 1):
        values: dict[str, float] = {}
        if step > 0:
            if s.opt != "adafactor-rel":
                lr = lr_at(s, step)
                if s.lr_glitch and s.lr_glitch[0] <= step < s.lr_glitch[0] + s.lr_glitch[1]:
                    lr *= s.lr_glitch[2]  # a scheduler bug
                for g in opt.param_groups:
                    g["lr"] = lr
            xb, yb = _batch(s, d, step, batches)
            loss = _loss(net, xb, yb)
            opt.zero_grad()
            loss.backward()
            values["train/loss"] = short(loss.detach())
            values.update(probe.after_backward(step))
            opt.step()
            upd = probe.after_update(step, _LrView(opt, s))
            values.update({k: v for k, v in upd.items() if math.isfinite(v) or k != "train/lr"})
        if step in evals:
            values.update(_eval_values(net, d, probe))
        log(values, step)
    return _facts(s, d)


class _LrView:
    """What Probe.after_update reads (`param_groups[0]["lr"]`), for Adafactor's relative step
    size too (its param group holds lr=None; the step size it used is in its state)."""

    def __init__(self, opt: torch.optim.Optimizer, s: Setup) -> None:
        lr = opt.param_groups[0]["lr"]
        if lr is None:
            from transformers.optimization import Adafactor

            g = opt.param_groups[0]
            st = opt.state[g["params"][0]]
            lr = Adafactor._get_lr(g, st) if st else float("nan")
        self.param_groups = [{"lr": float(lr)}]


def _facts(s: Setup, d: Data) -> RunFacts:
    facts: dict[str, Any] = {"n_train": len(d.ytr)}
    if s.data == "diabetes":
        # chance: predicting the training mean (0 on the standardised target, whose chance
        # MSE is then the validation target's mean square, ~1.0)
        mean = float(_diabetes(s.raw_target)[1].mean()) if s.raw_target else 0.0
        facts["chance_loss"] = round(float(((d.yva - mean) ** 2).mean()), 6)
        facts["task"] = "regression"
        task, classes = "regression", None
    else:
        counts = np.bincount(d.yva.numpy(), minlength=10)
        facts["chance_loss"] = math.log(10)
        facts["majority_accuracy"] = float(counts.max() / counts.sum())
        task, classes = "classification", 10
    for key in ("bad_batch_step", "inf_step", "lr_glitch"):
        if getattr(s, key):
            facts[key] = getattr(s, key)
    if s.warmup_steps:
        facts["warmup_steps"] = s.warmup_steps
    fault = s.bad_batch_step or s.inf_step or (s.lr_glitch[0] if s.lr_glitch else None)
    if fault is not None:
        facts["fault_step"] = fault
    return RunFacts(task=task, max_steps=s.steps, num_classes=classes, facts=facts)
