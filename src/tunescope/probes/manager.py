"""`Probes`: the one object a training loop calls to measure drift and forgetting.

- `begin(model, logger, step)` when training begins: keeps θ₀ of what can move, the starting
  model's features of the probe batch (and its next-token distributions for causal LMs), fits
  the retain readouts, and logs the baseline: `retain/*` as measured, `probe/cka*` = 1,
  `probe/param_drift*` = 0, `probe/kl` = 0.
- `step_end(model, logger, step, last=...)` after each optimizer step: measures every
  `settings.every` steps (and at the last step) — `probe/cka/<layer>`, `probe/cka`,
  `probe/kl`, `probe/param_drift[/<group>]`.
- `evaluate(model, logger, step)` after each evaluation: the retain sets.

Every measurement runs inside `isolation.untouched` (eval mode, no gradients, RNG and
train/eval flags restored) and never touches the data loader, so training is bit-identical with
or without probes. `sys/probe_seconds` records what each one cost.

>>> probes = Probes(Settings(every=50), batch)                     # doctest: +SKIP
>>> probes.begin(model, run, step=0)                               # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from .cka import Reference
from .drift import Drift
from .isolation import untouched
from .kl import KEY as KL_KEY
from .kl import KLReference
from .representations import ProbeBatch, features, layer_names, starting_model
from .retain import Evaluator

CKA = "probe/cka"
SECONDS = "sys/probe_seconds"
FORMAT = 1  # version of the saved reference


class Logger(Protocol):
    """Where measurements go (a `tunescope.Run`)."""

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None: ...


@dataclass(frozen=True)
class Settings:
    """What to measure and how often (see docs/probes.md)."""

    every: int = 50  # optimizer steps between probes
    cka: bool = True
    kl: bool = False  # causal LMs only: the builder turns it on for them
    param_drift: bool = True
    debiased: bool = True  # debiased linear CKA (see cka.py for why)
    top_k: int = 64  # next-token distribution kept per token for probe/kl

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"probes every must be >= 1 step, got {self.every}")


def _log(logger: Logger, values: Mapping[str, Any], step: int) -> None:
    """Log at `step` without taking the values watchers staged for the run's next `log()`.

    `Run.log` attaches staged values (lr, gradient norms of the step just taken) to whatever
    it logs next; a probe logged between the optimizer step and Trainer's own log of that step
    would take them, and Trainer's log would then record the learning rate a second time.
    `Run.log_apart` leaves them staged; a plain logger without it stages nothing.
    """
    log_apart = getattr(logger, "log_apart", None)
    if log_apart is not None:
        log_apart(values, step=step)
    else:
        logger.log(values, step=step)


def summary_cka(values: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """`probe/cka`: mean of `probe/cka/layer_i`, layer i weighted L - i (lower layers count more).

    Fine-tuning is expected to move the top layers (Merchant et al. 2020); lower layers moving is
    the warning sign, so they weigh most. The embedding output is reported but not averaged in.
    """
    layers = sorted(
        (int(k.rsplit("_", 1)[1]), v) for k, v in values.items() if k.startswith(f"{CKA}/layer_")
    )
    if not layers:
        return None
    n = len(layers)
    weights = [n - i for i in range(n)]
    total = sum(w * v.to(layers[0][1].device) for w, (_, v) in zip(weights, layers, strict=True))
    assert isinstance(total, torch.Tensor)
    return total / sum(weights)


class Probes:
    """Drift and forgetting probes for one training run (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        batch: ProbeBatch | None = None,
        retain: Evaluator | None = None,
    ) -> None:
        if batch is not None and batch.size < 4 and settings.cka:
            raise ValueError(f"CKA needs a probe batch of at least 4 texts; got {batch.size}")
        self.settings = settings
        self.batch = batch if settings.cka or settings.kl else None
        self.retain = retain
        self.drift: Drift | None = None
        self.refs: dict[str, Reference] = {}
        self.kl: KLReference | None = None
        self.last: int | None = None  # step of the last probe

    # -- the reference ---------------------------------------------------------------------------
    def _reference(self, model: torch.nn.Module) -> None:
        s = self.settings
        if s.param_drift:
            self.drift = Drift(model)  # first: θ₀ is the model before anything else runs
        if self.batch is None:
            return
        self.kl = KLReference(s.top_k) if s.kl else None
        with starting_model(model) as start:
            feats = features(start, self.batch, on_logits=self.kl.add if self.kl else None)
        if s.cka:
            names = layer_names(len(feats))
            self.refs = {
                n: Reference(f, debiased=s.debiased) for n, f in zip(names, feats, strict=True)
            }

    def begin(self, model: torch.nn.Module, logger: Logger, step: int = 0) -> None:
        """Keep the reference and log the baseline (before the first training step)."""
        started = time.perf_counter()
        with untouched(model):
            self._reference(model)
            values: dict[str, Any] = {}
            if self.refs:
                values |= {f"{CKA}/{n}": 1.0 for n in self.refs} | {CKA: 1.0}
            if self.kl is not None:
                values[KL_KEY] = 0.0
            if self.drift is not None:
                values |= {k: 0.0 for k in self.drift.measure()}
            if self.retain is not None:
                values |= self.retain.begin(model)
        values[SECONDS] = time.perf_counter() - started
        _log(logger, values, step)
        self.last = step

    # -- measuring -----------------------------------------------------------------------------
    def due(self, step: int, *, last: bool = False) -> bool:
        """Whether `step` is a probe step (every `settings.every`, and the last one)."""
        if self.last is None:
            return False
        if step <= self.last:  # rolled back to an earlier checkpoint: count from there
            self.last = step - 1
        return step - self.last >= self.settings.every or last

    def measure(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Drift, CKA and KL of the model now against the reference (inside `untouched`)."""
        values: dict[str, torch.Tensor] = {}
        if self.drift is not None:
            values |= self.drift.measure()
        if self.batch is None:
            return values
        kl_sum: list[torch.Tensor] = []
        tokens = [0]

        def on_logits(chunk: int, logits: torch.Tensor, mask: torch.Tensor) -> None:
            assert self.kl is not None
            total, n = self.kl.divergence(chunk, logits, mask)
            kl_sum.append(total)
            tokens[0] += n

        feats = features(model, self.batch, on_logits=on_logits if self.kl else None)
        for (name, ref), f in zip(self.refs.items(), feats, strict=False):
            values[f"{CKA}/{name}"] = ref.similarity(f)
        summary = summary_cka(values)
        if summary is not None:
            values[CKA] = summary
        if kl_sum:
            values[KL_KEY] = torch.stack(kl_sum).sum() / max(tokens[0], 1)
        return values

    def step_end(
        self, model: torch.nn.Module, logger: Logger, step: int, *, last: bool = False
    ) -> bool:
        """Probe if `step` is due; returns whether it did."""
        nothing = self.drift is None and not self.refs and self.kl is None
        if nothing or not self.due(step, last=last):
            return False
        started = time.perf_counter()
        with untouched(model):
            values: dict[str, Any] = dict(self.measure(model))
        values[SECONDS] = time.perf_counter() - started
        _log(logger, values, step)
        self.last = step
        return True

    def evaluate(self, model: torch.nn.Module, logger: Logger, step: int) -> None:
        """Score the retain sets (call after each evaluation)."""
        if self.retain is None:
            return
        with untouched(model):
            values = self.retain.evaluate(model)
        _log(logger, values, step)

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The reference (θ₀, starting features, distributions, readouts) and the last probe step."""
        return {
            "format": FORMAT,
            "last": self.last,
            "drift": self.drift.state_dict() if self.drift is not None else None,
            "cka": {n: r.state_dict() for n, r in self.refs.items()},
            "kl": self.kl.state_dict() if self.kl is not None else None,
            "retain": self.retain.state_dict() if self.retain is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any], model: torch.nn.Module) -> None:
        """Continue with a saved reference (a resumed run): no new baseline is taken."""
        if state.get("format") != FORMAT:
            raise ValueError(f"unknown probe reference format {state.get('format')!r}")
        self.last = state["last"]
        if state["drift"] is not None and self.settings.param_drift:
            self.drift = Drift(model)
            self.drift.load_state_dict(state["drift"])
        if self.settings.cka:
            self.refs = {n: Reference.from_state_dict(r) for n, r in state["cka"].items()}
        if state["kl"] is not None and self.settings.kl:
            self.kl = KLReference()
            self.kl.load_state_dict(state["kl"])
        if state["retain"] is not None and self.retain is not None:
            self.retain.load_state_dict(state["retain"])

    def start(
        self, model: torch.nn.Module, logger: Logger, step: int, reference: Path | None = None
    ) -> None:
        """`begin` for a new run, or continue a resumed one (step > 0) from its saved reference.

        `reference` is where the reference is kept for a later resume (the run's folder).
        """
        if reference is not None and step > 0 and reference.exists():
            self.load(reference, model)
            self.last = step  # the next probe comes `every` steps after the resumed checkpoint
            return
        self.begin(model, logger, step)
        if reference is not None:
            self.save(reference)

    def save(self, path: Path) -> None:
        """Write `state_dict()` to `path` (torch format)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path)

    def load(self, path: Path, model: torch.nn.Module) -> None:
        """Read a reference written by `save`."""
        self.load_state_dict(torch.load(path, weights_only=True), model)
