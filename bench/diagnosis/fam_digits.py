"""Family `digits`: small MLPs on scikit-learn's 8x8 digits (10 classes), plain PyTorch loops.

Cheap (a few seconds a run), so most of the suite's count lives here. Every fault is a real
thing happening to a real loop: a learning rate far off, labels shuffled by a data bug, a
warm-up to a peak the model cannot take, one batch of unnormalised pixels, a sample holding
inf, training on a second task without (or with) replay of the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cache
from typing import Any

import numpy as np
import torch
from common import (
    CHEAP_SEEDS,
    WOBBLE_SEEDS,
    Batches,
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
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score
from torch import nn

FAMILY = "digits"
DATA_SEED = 1234  # the train/val split is fixed; run seeds vary init and data order


@dataclass(frozen=True)
class Setup:
    """One digits run: model, optimiser, data and the fault, if any."""

    steps: int = 400
    eval_every: int = 20
    irregular: bool = False
    hidden: int = 64
    depth: int = 2  # hidden layers
    act: str = "relu"
    norm: bool = False
    init_gain: float | None = None  # None: torch default init
    opt: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    wd: float = 0.0
    dropout: float = 0.0
    batch: int = 32
    clip: float | None = None
    schedule: str = "constant"  # constant | cosine | linear | warmup | step
    warmup_steps: int = 0
    decay_at: int = 0  # schedule "step": lr x decay_factor from this step on
    decay_factor: float = 1.0
    n_train: int | None = None
    label_noise: float = 0.0
    shuffle_labels: bool = False
    train_only_head_bias: bool = False
    bad_shard_step: int | None = None  # one batch whose labels are off by one at this step
    inf_step: int | None = None  # one batch holding an inf pixel at this step
    lr_glitch: tuple[int, int, float] | None = None  # (first step, length, factor)
    sequential: str | None = None  # None | "forget" | "replay"
    phase1_steps: int = 300


@cache
def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(DATA_SEED))
    x, y = x[perm], y[perm]
    return x[:1200], y[:1200], x[1200:], y[1200:]


def build_mlp(s: Setup, n_in: int = 64, n_out: int = 10) -> nn.Sequential:
    act: Callable[[], nn.Module] = {
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "gelu": nn.GELU,
    }[s.act]
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(s.depth):
        layers.append(nn.Linear(width, s.hidden))
        if s.norm:
            layers.append(nn.BatchNorm1d(s.hidden))
        layers.append(act())
        if s.dropout:
            layers.append(nn.Dropout(s.dropout))
        width = s.hidden
    layers.append(nn.Linear(width, n_out))
    if s.init_gain is not None:
        for m in layers:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=s.init_gain / math.sqrt(m.in_features))
                nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def _rotate(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x.reshape(-1, 8, 8), 1, (1, 2)).reshape(-1, 64)


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _evaluate(model: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    module = getattr(model, "__self__", model)  # a bound method's module
    module.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(nn.functional.cross_entropy(logits, y))
        pred = logits.argmax(1)
    module.train()
    acc = float((pred == y).float().mean())
    f1 = float(f1_score(y.numpy(), pred.numpy(), average="macro", zero_division=0))
    return loss, acc, f1


def _lr_at(s: Setup, step: int) -> float:
    if s.schedule == "cosine":
        return s.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / s.steps))
    if s.schedule == "linear":
        return s.lr * (1 - 0.9 * (step - 1) / s.steps)
    if s.schedule == "step":
        return s.lr * (s.decay_factor if step >= s.decay_at else 1.0)
    if s.schedule == "warmup":
        return s.lr * min(1.0, step / max(1, s.warmup_steps))
    return s.lr


def _optimizer(s: Setup, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if s.opt == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.wd)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.wd)


class Tasks(nn.Module):
    """The model and, for sequential runs, a second output head for the new task.

    The earlier task keeps its own head (`old`); the new task trains the shared body with a
    fresh head — the usual way a pretrained network meets a new task. `forward` is the new task.
    """

    def __init__(self, mlp: nn.Sequential, sequential: bool) -> None:
        super().__init__()
        self.mlp = mlp
        last = mlp[-1]
        assert isinstance(last, nn.Linear)
        self.new = nn.Linear(last.in_features, last.out_features) if sequential else None

    def old(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.new is None:
            return self.mlp(x)
        return self.new(self.mlp[:-1](x))

    def groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(bottom, top) parameter groups: first layer, and the head being trained."""
        linears = _linears(self.mlp)
        top = self.new if self.new is not None else linears[-1]
        return list(linears[0].parameters()), list(top.parameters())


@dataclass
class Data:
    xtr: torch.Tensor
    ytr: torch.Tensor
    xva: torch.Tensor
    yva: torch.Tensor
    old: tuple[torch.Tensor, torch.Tensor] | None = None  # earlier task: train
    retain: tuple[torch.Tensor, torch.Tensor] | None = None  # earlier task: held out


def _prepare(s: Setup, gen: torch.Generator) -> Data:
    xtr, ytr, xva, yva = _data()
    d = Data(xtr, ytr.clone(), xva, yva)
    if s.sequential:
        # the earlier task is the digits as scanned; the new one the same digits turned 90
        # degrees (a new domain); retain = the earlier task's held-out set
        d = Data(_rotate(xtr), ytr.clone(), _rotate(xva), yva, (xtr, ytr), (xva, yva))
    if s.n_train is not None:
        d.xtr, d.ytr = d.xtr[: s.n_train], d.ytr[: s.n_train]
    if s.label_noise:
        flip = torch.rand(len(d.ytr), generator=gen) < s.label_noise
        d.ytr[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=gen)
    if s.shuffle_labels:
        d.ytr = d.ytr[torch.randperm(len(d.ytr), generator=gen)]
    return d


def _phase1(net: Tasks, s: Setup, d: Data, gen: torch.Generator) -> None:
    """Train the earlier task before the monitored run starts; not logged."""
    assert d.old is not None
    x, y = d.old
    opt = torch.optim.AdamW(net.mlp.parameters(), lr=1e-3)
    batches = Batches(len(y), s.batch, gen)
    for _ in range(s.phase1_steps):
        idx = batches.next()
        loss = nn.functional.cross_entropy(net.old(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _batch_loss(s: Setup, net: Tasks, d: Data, step: int, batches: list[Batches]) -> torch.Tensor:
    idx = batches[0].next()
    xb, yb = d.xtr[idx], d.ytr[idx]
    if step == s.bad_shard_step:
        yb = (yb + 1) % 10  # a shard written with an off-by-one label map
    if step == s.inf_step:
        xb = xb.clone()
        xb[0, 10] = float("inf")  # one corrupted sample
    loss = nn.functional.cross_entropy(net(xb), yb)
    if len(batches) > 1 and d.old is not None:  # replay: the same number of earlier examples
        oi = batches[1].next()
        loss = 0.5 * loss + 0.5 * nn.functional.cross_entropy(net.old(d.old[0][oi]), d.old[1][oi])
    return loss


def _eval_values(net: Tasks, d: Data, probe: Probe) -> dict[str, float]:
    loss, acc, f1 = _evaluate(net, d.xva, d.yva)
    out = {"eval/loss": short(loss), "eval/accuracy": short(acc), "eval/f1": short(f1)}
    out["probe/param_drift"] = probe.drift()
    if d.retain is not None:
        r_loss, r_acc, _ = _evaluate(net.old, *d.retain)
        out.update({"retain/loss": short(r_loss), "retain/accuracy": short(r_acc)})
    return out


def fit(s: Setup, seed: int, log: LogFn, *, mlp: nn.Sequential | None = None) -> RunFacts:
    """Train one digits run under `s`, logging everything through `log`."""
    gen = seed_everything(seed)
    d = _prepare(s, gen)
    net = Tasks(mlp if mlp is not None else build_mlp(s), bool(s.sequential))
    if s.sequential:
        _phase1(net, s, d, gen)
    if s.train_only_head_bias:
        for p in net.parameters():
            p.requires_grad_(False)
        _linears(net.mlp)[-1].bias.requires_grad_(True)
    opt = _optimizer(s, [p for p in net.parameters() if p.requires_grad])
    probe = Probe(net, *net.groups(), clip=s.clip)
    evals = eval_schedule(s.steps, s.eval_every, irregular=s.irregular, seed=seed)
    batches = [Batches(len(d.ytr), s.batch, gen)]
    if s.sequential == "replay" and d.old is not None:
        batches.append(Batches(len(d.old[1]), s.batch, gen))
    net.train()
    for step in range(0, s.steps + 1):
        values: dict[str, float] = {}
        if step > 0:
            lr = _lr_at(s, step)
            if s.lr_glitch and s.lr_glitch[0] <= step < s.lr_glitch[0] + s.lr_glitch[1]:
                lr *= s.lr_glitch[2]  # a scheduler bug: the lr multiplied for a step or two
            for g in opt.param_groups:
                g["lr"] = lr
            loss = _batch_loss(s, net, d, step, batches)
            opt.zero_grad()
            loss.backward()
            values["train/loss"] = short(loss.detach())
            values.update(probe.after_backward(step))
            opt.step()
            values.update(probe.after_update(step, opt))
        if step in evals:
            values.update(_eval_values(net, d, probe))
        log(values, step)
    return _facts(s, d)


def _facts(s: Setup, d: Data) -> RunFacts:
    counts = np.bincount(d.yva.numpy(), minlength=10)
    facts: dict[str, object] = {
        "chance_loss": math.log(10),
        "majority_accuracy": float(counts.max() / counts.sum()),
        "n_train": len(d.ytr),
    }
    for key in ("bad_shard_step", "inf_step", "lr_glitch", "warmup_steps"):
        if getattr(s, key):
            facts[key] = getattr(s, key)
    fault = s.bad_shard_step or s.inf_step or (s.lr_glitch[0] if s.lr_glitch else None)
    if fault is not None:
        facts["fault_step"] = fault
    return RunFacts(task="classification", max_steps=s.steps, num_classes=10, facts=facts)


BASE = Setup()
_DIVERGED = ("lr_too_high", "exploding_gradients", "loss_spike", "underfitting", "plateau")
_SPIKE_SIDE = ("exploding_gradients",)  # the faulty batch's gradient is large too

# A digits run costs about a CPU-second: every scenario also runs the extra tuning seeds, and
# those whose eval loss wobbles (or that overfit) more of them.
_WOBBLY = ("healthy", "healthy-sgd", "noisy-labels-healthy", "noisy-overfit", "lr-high")
SCENARIOS: dict[str, tuple[Scenario, Callable[[int], Setup]]] = {
    sc.name: (replace(sc, seeds=WOBBLE_SEEDS if sc.name in _WOBBLY else CHEAP_SEEDS), fn)
    for sc, fn in [
        (
            Scenario("healthy", (), describe="MLP 64-64-64-10, AdamW 1e-3, 400 steps"),
            lambda seed: replace(BASE, irregular=irregular_seed(seed)),
        ),
        (
            Scenario("healthy-sgd", (), describe="SGD momentum 0.9, lr 0.05 decaying linearly"),
            lambda seed: replace(
                BASE, opt="sgd", lr=0.05, momentum=0.9, schedule="linear", steps=250, eval_every=10
            ),
        ),
        (
            Scenario(
                "noisy-labels-healthy",
                (),
                describe="half of all training labels resampled, one hidden layer of 16, "
                "weight decay 0.1, AdamW 3e-3, 600 steps: high loss, no overfitting",
            ),
            lambda seed: replace(
                BASE, label_noise=0.5, hidden=16, depth=1, wd=0.1, lr=3e-3, steps=600
            ),
        ),
        (
            Scenario(
                "noisy-overfit",
                ("overfitting",),
                describe="150 training digits, 40% of labels resampled, width 256, 800 steps",
            ),
            lambda seed: replace(
                BASE,
                n_train=150,
                label_noise=0.4,
                hidden=256,
                steps=800,
                eval_every=25,
                irregular=irregular_seed(seed),
            ),
        ),
        (
            Scenario(
                "lr-high",
                ("lr_too_high",),
                ("underfitting", "plateau", "loss_spike", "exploding_gradients", "divergence"),
                "plain SGD lr 1.0 (the healthy SGD run uses 0.05)",
                reference="healthy",
            ),
            lambda seed: replace(BASE, opt="sgd", lr=1.0, irregular=irregular_seed(seed)),
        ),
        (
            Scenario(
                "lr-low",
                ("lr_too_low",),
                ("underfitting", "plateau"),
                "AdamW lr 1e-6 (/1000)",
                reference="healthy",
            ),
            lambda seed: replace(BASE, lr=1e-6),
        ),
        (
            Scenario(
                "shuffled-labels",
                ("underfitting",),
                ("plateau",),
                "data bug: training labels permuted; width 16",
            ),
            lambda seed: replace(BASE, shuffle_labels=True, hidden=16),
        ),
        (
            Scenario(
                "head-bias-only",
                ("underfitting",),
                ("plateau",),
                "bug: every parameter frozen except the output bias",
            ),
            lambda seed: replace(BASE, train_only_head_bias=True, lr=1e-2),
        ),
        (
            Scenario(
                "warmup-diverge",
                ("divergence",),
                (*_DIVERGED, "vanishing_gradients"),  # dead ReLUs after the blow-up
                "SGD momentum 0.9, linear warm-up towards lr 2 over 400 steps",
            ),
            lambda seed: replace(
                BASE, opt="sgd", lr=2.0, momentum=0.9, schedule="warmup", warmup_steps=400
            ),
        ),
        (
            Scenario(
                "inf-batch",
                ("divergence",),
                ("exploding_gradients", "underfitting", "plateau"),
                "one training sample holds inf mid-run",
            ),
            lambda seed: replace(BASE, inf_step=fault_step(150, 37, seed, 190)),
        ),
        (
            Scenario(
                "bad-shard-spike",
                ("loss_spike",),
                _SPIKE_SIDE,
                "one batch mid-run with labels off by one (a bad shard)",
            ),
            lambda seed: replace(BASE, bad_shard_step=fault_step(180, 41, seed, 160)),
        ),
        (
            Scenario(
                "lr-glitch-spike",
                ("loss_spike",),
                _SPIKE_SIDE,
                "scheduler bug: lr x100 for one step mid-run",
            ),
            lambda seed: replace(BASE, lr_glitch=(fault_step(180, 41, seed, 160), 1, 100.0)),
        ),
        (
            Scenario(
                "forget",
                ("forgetting",),
                describe="trained on upright digits, then 200 steps on digits turned 90 degrees "
                "(new head); retain = upright held-out digits",
            ),
            lambda seed: replace(BASE, sequential="forget", steps=200, eval_every=10),
        ),
        (
            Scenario(
                "replay", (), describe="as forget, each step also replays a batch of upright digits"
            ),
            lambda seed: replace(BASE, sequential="replay", steps=200, eval_every=10),
        ),
        (
            Scenario(
                "early-decay-plateau",
                ("plateau",),
                ("lr_too_low",),
                "step schedule misconfigured: lr x0.001 from step 120 on, 600 steps",
            ),
            lambda seed: replace(
                BASE,
                schedule="step",
                decay_at=120,
                decay_factor=0.001,
                steps=600,
                irregular=irregular_seed(seed),
            ),
        ),
    ]
}


def train(scenario: str, seed: int, log: LogFn) -> RunFacts:
    setup = SCENARIOS[scenario][1](seed)
    facts = fit(setup, seed, log)
    facts.config = asdict(setup)
    return facts
