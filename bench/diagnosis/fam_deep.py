"""Family `deep`: deep networks on the digits whose gradients vanish or explode (plus healthy
deep controls). Same data, loop and logging as `fam_digits`; only the model changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, cast

import torch
from common import CHEAP_SEEDS, WOBBLE_SEEDS, LogFn, RunFacts, Scenario
from fam_digits import BASE, Setup, build_mlp, fit
from torch import nn

FAMILY = "deep"


class PixelRNN(nn.Module):
    """A vanilla tanh RNN reading the 64 pixels one at a time ("sequential digits")."""

    def __init__(self, hidden: int, gain: float, nonlinearity: str = "tanh") -> None:
        super().__init__()
        self.rnn = nn.RNN(1, hidden, nonlinearity=nonlinearity, batch_first=True)
        weight = cast(torch.Tensor, self.rnn.weight_hh_l0)
        with torch.no_grad():
            if nonlinearity == "relu":  # IRNN (Le et al. 2015): identity recurrence
                weight.copy_(gain * torch.eye(hidden))
                cast(torch.Tensor, self.rnn.bias_hh_l0).zero_()
            else:
                nn.init.orthogonal_(weight, gain=gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.rnn(x.unsqueeze(-1))
        return h[-1]


def rnn(hidden: int = 64, gain: float = 1.0, nonlinearity: str = "tanh") -> nn.Sequential:
    return nn.Sequential(PixelRNN(hidden, gain, nonlinearity), nn.Linear(hidden, 10))


_STUCK = ("underfitting", "plateau", "lr_too_low")  # a net whose gradients vanish learns nothing
_UNSTABLE = ("loss_spike", "divergence", "plateau", "underfitting", "lr_too_high")


def _sgd(**changes: Any) -> Setup:
    """The deep nets' loop: SGD with momentum 0.9, lr 0.1."""
    return replace(BASE, opt="sgd", lr=0.1, momentum=0.9, **changes)


# scenario -> (what it should produce, model builder, loop setup); a few CPU-seconds a run, so
# every scenario also runs the extra tuning seeds, and the healthy deep net and the RNNs (whose
# eval loss wobbles) more of them
_WOBBLY = ("relu-bn-12", "rnn-exploding", "irnn-exploding", "irnn-1.05-exploding")
SCENARIOS: dict[str, tuple[Scenario, Callable[[], nn.Module], Setup]] = {
    sc.name: (replace(sc, seeds=WOBBLE_SEEDS if sc.name in _WOBBLY else CHEAP_SEEDS), build, setup)
    for sc, build, setup in [
        (
            Scenario(
                "sigmoid-12",
                ("vanishing_gradients",),
                _STUCK,
                "12 sigmoid layers of 64, default init, SGD momentum lr 0.1",
            ),
            lambda: build_mlp(replace(BASE, depth=12, act="sigmoid")),
            _sgd(depth=12, act="sigmoid"),
        ),
        (
            Scenario(
                "sigmoid-8",
                ("vanishing_gradients",),
                _STUCK,
                "8 sigmoid layers of 64, default init, SGD momentum lr 0.1",
            ),
            lambda: build_mlp(replace(BASE, depth=8, act="sigmoid")),
            _sgd(depth=8, act="sigmoid"),
        ),
        (
            Scenario(
                "tanh-small-init",
                ("vanishing_gradients",),
                _STUCK,
                "12 tanh layers initialised with std 0.3/sqrt(fan_in), SGD momentum lr 0.1",
            ),
            lambda: build_mlp(replace(BASE, depth=12, act="tanh", init_gain=0.3)),
            _sgd(depth=12, act="tanh", init_gain=0.3),
        ),
        (
            Scenario("relu-bn-12", (), describe="12 ReLU layers with BatchNorm, AdamW 1e-3"),
            lambda: build_mlp(replace(BASE, depth=12, norm=True)),
            replace(BASE, depth=12, norm=True),
        ),
        (
            Scenario(
                "rnn-exploding",
                ("exploding_gradients",),
                _UNSTABLE,
                "vanilla tanh RNN over the 64 pixels, recurrent init gain 1.5, SGD momentum "
                "lr 0.05, gradients clipped at 1 (pre-clip norm logged)",
            ),
            lambda: rnn(64, 1.5),
            replace(BASE, opt="sgd", lr=0.05, momentum=0.9, clip=1.0),
        ),
        (
            Scenario(
                "irnn-exploding",
                ("exploding_gradients",),
                _UNSTABLE,
                "ReLU RNN over the 64 pixels with identity recurrence (IRNN), SGD momentum "
                "lr 0.01, gradients clipped at 1",
            ),
            lambda: rnn(64, 1.0, "relu"),
            replace(BASE, opt="sgd", lr=0.01, momentum=0.9, clip=1.0),
        ),
        (
            Scenario(
                "irnn-1.05-exploding",
                ("exploding_gradients",),
                _UNSTABLE,
                "as irnn-exploding with the recurrence initialised at 1.05 x identity",
            ),
            lambda: rnn(64, 1.05, "relu"),
            replace(BASE, opt="sgd", lr=0.01, momentum=0.9, clip=1.0),
        ),
    ]
}


def train(scenario: str, seed: int, log: LogFn) -> RunFacts:
    _, build, setup = SCENARIOS[scenario]
    torch.manual_seed(seed)  # the model's init is part of the seeded run
    facts = fit(setup, seed, log, mlp=cast(nn.Sequential, build()))
    facts.config = {"model": scenario, **asdict(setup)}
    return facts
