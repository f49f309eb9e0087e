"""Fresh families on the plain loop (fresh_loop.py): `cnn`, `reg` and `optim`.

- `cnn`: a two-conv CNN on scikit-learn's 8x8 digits images.
- `reg`: an MLP regression head trained with MSE on scikit-learn's diabetes data (standardised
  target: chance = predicting the mean = ~1.0 MSE, not ln C).
- `optim`: a digits MLP under optimizers and schedules the tuned families never used.

Each scenario states what it is meant to produce before any run exists; labels.py's hindsight
checks (and, for regression underfitting, fresh_labels.py's) confirm it or exclude the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace

from common import LogFn, RunFacts, Scenario
from fresh_loop import Setup, fit

Build = Callable[[int], Setup]

_BLOWUP = ("underfitting", "plateau", "loss_spike", "exploding_gradients", "divergence")
_SPIKE_SIDE = ("exploding_gradients",)


def fault(base: int, seed: int, room: int = 120) -> int:
    """A seeded fault step inside the run."""
    return base + (seed * 37) % room


def odd(seed: int) -> bool:
    return seed % 2 == 1


CNN = Setup(model="cnn", steps=250, eval_every=15, hidden=64, lr=1e-3)
REG = Setup(data="diabetes", hidden=16, depth=1, steps=300, eval_every=15, lr=1e-3, wd=0.1)
OPT = Setup(steps=300, eval_every=15, hidden=64, depth=2)


def _sc(
    name: str, intended: tuple[str, ...] = (), allowed: tuple[str, ...] = (), **kw: str
) -> Scenario:
    """A scenario; `plateau` (a converged run's flat tail; in no scored group) is always allowed."""
    if "plateau" not in allowed and "plateau" not in intended:
        allowed = (*allowed, "plateau")
    return Scenario(name, intended, allowed, kw.get("describe", ""), kw.get("reference"))


FAMILIES: dict[str, dict[str, tuple[Scenario, Build]]] = {
    "cnn": {
        sc.name: (sc, fn)
        for sc, fn in [
            (
                _sc(
                    "healthy",
                    (),
                    ("plateau",),
                    describe="CNN 16/32 ch, Adam 1e-3, cosine, 250 steps",
                ),
                lambda seed: replace(CNN, schedule="cosine", irregular=odd(seed)),
            ),
            (
                _sc(
                    "healthy-adamw-warmup",
                    (),
                    ("plateau",),
                    describe="AdamW 1e-3 wd 0.05, 20 warm-up steps, linear decay",
                ),
                lambda seed: replace(CNN, opt="adamw", wd=0.05, schedule="linear", warmup_steps=20),
            ),
            (
                _sc(
                    "noisy-overfit",
                    ("overfitting",),
                    describe="120 training images, 40% of labels resampled, 700 steps",
                ),
                lambda seed: replace(
                    CNN, n_train=120, label_noise=0.4, steps=700, eval_every=25, irregular=odd(seed)
                ),
            ),
            (
                _sc(
                    "lr-high",
                    ("lr_too_high",),
                    (*_BLOWUP, "vanishing_gradients"),
                    describe="SGD lr 3.0: blows up in the first steps, then sits at chance",
                    reference="healthy",
                ),
                lambda seed: replace(CNN, opt="sgd", lr=3.0),
            ),
            (
                _sc(
                    "lr-low",
                    ("lr_too_low",),
                    ("underfitting", "plateau"),
                    describe="Adam lr 2e-7 (/10000)",
                    reference="healthy",
                ),
                lambda seed: replace(CNN, lr=2e-7),
            ),
            (
                _sc(
                    "inf-input",
                    ("divergence",),
                    ("exploding_gradients", "underfitting", "plateau", "vanishing_gradients"),
                    describe="one training image holds inf mid-run",
                ),
                lambda seed: replace(CNN, inf_step=fault(110, seed)),
            ),
            (
                _sc(
                    "bad-batch",
                    ("loss_spike",),
                    _SPIKE_SIDE,
                    describe="one batch with labels off by one (a bad shard)",
                ),
                lambda seed: replace(CNN, bad_batch_step=fault(130, seed)),
            ),
            (
                _sc(
                    "forget",
                    ("forgetting",),
                    describe="upright digits first, then 150 steps on digits turned 90 degrees "
                    "(new head); retain = upright held-out digits",
                ),
                lambda seed: replace(CNN, sequential=True, steps=150, eval_every=10),
            ),
            (
                _sc(
                    "shuffled-labels",
                    ("underfitting",),
                    ("plateau",),
                    describe="data bug: training labels permuted; 8 channels, hidden 16",
                ),
                lambda seed: replace(CNN, shuffle_labels=True, channels=8, hidden=16),
            ),
        ]
    },
    "reg": {
        sc.name: (sc, fn)
        for sc, fn in [
            (
                _sc(
                    "healthy",
                    (),
                    ("plateau",),
                    describe="MLP 10-16-1, Adam 1e-3, weight decay 0.1, MSE",
                ),
                lambda seed: replace(REG, irregular=odd(seed)),
            ),
            (
                _sc(
                    "healthy-sgd",
                    (),
                    ("plateau",),
                    describe="SGD momentum 0.9 lr 0.002, linear decay, clip 1.0",
                ),
                lambda seed: replace(
                    REG, opt="sgd", lr=0.002, momentum=0.9, schedule="linear", clip=1.0, wd=0.01
                ),
            ),
            (
                _sc(
                    "raw-target",
                    (),
                    ("plateau",),
                    describe="the target left unscaled (25-346; first MSE ~3e4), Adam 0.05: "
                    "a healthy run whose loss starts large",
                ),
                lambda seed: replace(REG, raw_target=True, lr=0.05, wd=0.0, hidden=32),
            ),
            (
                _sc(
                    "overfit",
                    ("overfitting",),
                    describe="120 training rows, 2 x 128 wide, Adam 1e-3, no weight decay, 800 steps",
                ),
                lambda seed: replace(
                    REG,
                    n_train=120,
                    hidden=128,
                    depth=2,
                    lr=1e-3,
                    wd=0.0,
                    steps=800,
                    eval_every=25,
                ),
            ),
            (
                _sc(
                    "lr-high",
                    ("lr_too_high",),
                    (*_BLOWUP, "vanishing_gradients"),
                    describe="SGD lr 3.0: blows up in the first steps",
                    reference="healthy",
                ),
                lambda seed: replace(REG, opt="sgd", lr=3.0),
            ),
            (
                _sc(
                    "lr-low",
                    ("lr_too_low",),
                    ("underfitting", "plateau"),
                    describe="Adam lr 1e-7",
                    reference="healthy",
                ),
                lambda seed: replace(REG, lr=1e-7),
            ),
            (
                _sc(
                    "nan-target",
                    ("divergence",),
                    ("exploding_gradients", "underfitting", "plateau", "vanishing_gradients"),
                    describe="one training target is NaN (a missing value) mid-run",
                ),
                lambda seed: replace(REG, inf_step=fault(110, seed)),
            ),
            (
                _sc(
                    "bad-batch",
                    ("loss_spike",),
                    _SPIKE_SIDE,
                    describe="one batch whose targets are in the wrong unit (x8)",
                ),
                lambda seed: replace(REG, bad_batch_step=fault(130, seed)),
            ),
            (
                _sc(
                    "shuffled-targets",
                    ("underfitting",),
                    ("plateau",),
                    describe="data bug: training targets permuted; width 8, weight decay 0.1",
                ),
                lambda seed: replace(REG, shuffle_labels=True, hidden=8, wd=0.1),
            ),
        ]
    },
    "optim": {
        sc.name: (sc, fn)
        for sc, fn in [
            (
                _sc("sgdm-constant", (), ("plateau",), describe="SGD momentum 0.9, lr 0.05"),
                lambda seed: replace(OPT, opt="sgd", lr=0.05, momentum=0.9, irregular=odd(seed)),
            ),
            (
                _sc(
                    "sgdm-step",
                    (),
                    ("plateau",),
                    describe="SGD momentum 0.9, lr 0.05, x0.1 at step 100, clip 1.0, wd 5e-4",
                ),
                lambda seed: replace(
                    OPT,
                    opt="sgd",
                    lr=0.05,
                    momentum=0.9,
                    schedule="step",
                    decay_at=100,
                    clip=1.0,
                    wd=5e-4,
                ),
            ),
            (
                _sc(
                    "adam-cosine-warmup",
                    (),
                    ("plateau",),
                    describe="Adam 3e-3, 30 warm-up steps, cosine",
                ),
                lambda seed: replace(OPT, lr=3e-3, schedule="cosine", warmup_steps=30),
            ),
            (
                _sc(
                    "adamw-linear-clip",
                    (),
                    ("plateau",),
                    describe="AdamW 2e-3 wd 0.01, linear decay, clip 0.5",
                ),
                lambda seed: replace(
                    OPT, opt="adamw", lr=2e-3, wd=0.01, schedule="linear", clip=0.5
                ),
            ),
            (
                _sc("adafactor", (), ("plateau",), describe="Adafactor lr 3e-3, constant"),
                lambda seed: replace(OPT, opt="adafactor", lr=3e-3, irregular=odd(seed)),
            ),
            (
                _sc(
                    "adafactor-relative",
                    (),
                    ("plateau",),
                    describe="Adafactor with its own relative step size (no lr given)",
                ),
                lambda seed: replace(OPT, opt="adafactor-rel"),
            ),
            (
                _sc(
                    "tanh-sgd-linear-warmup",
                    (),
                    ("plateau",),
                    describe="tanh MLP, SGD momentum 0.9 lr 0.05, 20 warm-up steps, linear",
                ),
                lambda seed: replace(
                    OPT,
                    act="tanh",
                    opt="sgd",
                    lr=0.05,
                    momentum=0.9,
                    schedule="linear",
                    warmup_steps=20,
                ),
            ),
            (
                _sc(
                    "sgd-lr3",
                    ("lr_too_high",),
                    (*_BLOWUP, "vanishing_gradients"),
                    describe="plain SGD lr 3.0: blows up in the first steps, then sits at chance",
                    reference="sgdm-constant",
                ),
                lambda seed: replace(OPT, opt="sgd", lr=3.0),
            ),
            (
                _sc(
                    "adam-lr-high",
                    ("lr_too_high",),
                    (*_BLOWUP, "vanishing_gradients"),
                    describe="Adam lr 0.3",
                    reference="adam-cosine-warmup",
                ),
                lambda seed: replace(OPT, lr=0.3),
            ),
            (
                _sc(
                    "adafactor-lr-low",
                    ("lr_too_low",),
                    ("underfitting", "plateau"),
                    describe="Adafactor lr 1e-6",
                    reference="adafactor",
                ),
                lambda seed: replace(OPT, opt="adafactor", lr=1e-6),
            ),
            (
                _sc(
                    "sgdm-lr-low",
                    ("lr_too_low",),
                    ("underfitting", "plateau"),
                    describe="SGD momentum 0.9, lr 5e-6",
                    reference="sgdm-constant",
                ),
                lambda seed: replace(OPT, opt="sgd", lr=5e-6, momentum=0.9),
            ),
            (
                _sc(
                    "adamw-noisy-overfit",
                    ("overfitting",),
                    describe="150 digits, 40% labels resampled, width 256, AdamW cosine, 700 steps",
                ),
                lambda seed: replace(
                    OPT,
                    opt="adamw",
                    lr=2e-3,
                    schedule="cosine",
                    n_train=150,
                    label_noise=0.4,
                    hidden=256,
                    steps=700,
                    eval_every=25,
                    irregular=odd(seed),
                ),
            ),
            (
                _sc(
                    "sgdm-lr-glitch",
                    ("loss_spike",),
                    _SPIKE_SIDE,
                    describe="SGD momentum 0.9: a scheduler bug multiplies lr by 40 for one step",
                ),
                lambda seed: replace(
                    OPT, opt="sgd", lr=0.05, momentum=0.9, lr_glitch=(fault(140, seed), 1, 40.0)
                ),
            ),
            (
                _sc(
                    "adam-inf",
                    ("divergence",),
                    ("exploding_gradients", "underfitting", "plateau", "vanishing_gradients"),
                    describe="Adam 3e-3 cosine; one input holds inf mid-run",
                ),
                lambda seed: replace(OPT, lr=3e-3, schedule="cosine", inf_step=fault(100, seed)),
            ),
            (
                _sc(
                    "frozen-body",
                    ("underfitting",),
                    ("plateau", "lr_too_low"),
                    describe="bug: a 6-layer sigmoid body frozen at init, only the head trains",
                ),
                lambda seed: replace(
                    OPT, act="sigmoid", depth=6, hidden=32, frozen_body=True, lr=1e-2
                ),
            ),
            (
                _sc(
                    "sigmoid-deep",
                    ("vanishing_gradients",),
                    ("underfitting", "plateau", "lr_too_low"),
                    describe="12 sigmoid layers of 32, SGD lr 0.05",
                ),
                lambda seed: replace(OPT, act="sigmoid", depth=12, hidden=32, opt="sgd", lr=0.05),
            ),
        ]
    },
}


def train(family: str, scenario: str, seed: int, log: LogFn) -> RunFacts:
    setup = FAMILIES[family][scenario][1](seed)
    facts = fit(setup, seed, log)
    facts.config = asdict(setup)
    return facts
