"""The weights worth restoring at the end: the best evaluation, and the forgetting trade-off.

`BestWeights.offer(step, metrics, model)` is called at each evaluation. It keeps a copy of the
trainable weights (and buffers) when the evaluation is the best so far by `metric`; with the
trade-off enabled it also keeps up to `max_tradeoff` evaluations whose task metric is within
`tolerance` of the best (the earliest first: forgetting grows as training goes on). `choose()`
then picks the best one, or — for `forgetting` — among those within tolerance of the best task
metric, the one whose retain metrics stayed closest to their baseline.

>>> pool = BestWeights("eval/accuracy")                                   # doctest: +SKIP
>>> pool.offer(100, {"eval/accuracy": 0.91}, model)                        # doctest: +SKIP
>>> pool.restore(pool.best(), model)                                      # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..names import higher_is_better
from .config import DEFAULT_MEMORY_LIMIT
from .snapshots import finite, load_model_state, model_state, nbytes

# steps -> {step: retain score}: higher is better (see `retain_score`).
RetainLookup = Callable[[list[int]], dict[int, float]]


@dataclass(frozen=True)
class Candidate:
    """Weights kept from one evaluation."""

    step: int
    value: float  # the task metric there
    nbytes: int
    key: int  # unique (a rollback may evaluate the same step twice)
    path: Path | None = None  # None: in memory


class BestWeights:
    """Weights at evaluations that a restore may need (see the module docstring)."""

    def __init__(
        self,
        metric: str,
        *,
        directory: str | Path | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        tolerance: float = 0.01,
        tradeoff: bool = False,
        max_tradeoff: int = 3,
    ) -> None:
        self.metric = metric
        self.higher = higher_is_better(metric)
        self.directory = Path(directory) if directory is not None else None
        self.memory_limit = memory_limit
        self.tolerance = tolerance
        self.tradeoff = tradeoff
        self.max_tradeoff = max_tradeoff
        self._best: Candidate | None = None
        self._others: list[Candidate] = []  # trade-off candidates, oldest first
        self._memory: dict[int, dict[str, torch.Tensor]] = {}  # key -> weights
        self._keys = 0

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.higher else a < b

    def _within(self, value: float, best: float, tolerance: float) -> bool:
        gap = best - value if self.higher else value - best
        return gap <= tolerance

    # -- collecting ------------------------------------------------------------------------------
    def offer(self, step: int, metrics: Mapping[str, float], model: torch.nn.Module) -> bool:
        """Consider the weights evaluated at `step`; True when they were kept."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        best = self._best
        is_best = best is None or self._better(value, best.value)
        wanted = (
            self.tradeoff and best is not None and self._within(value, best.value, self.tolerance)
        )
        wanted = wanted and len(self._others) < self.max_tradeoff
        if not (is_best or wanted):
            return False
        state = model_state(model)
        if not finite(state):
            return False
        cand = self._store(step, value, state)
        if is_best:
            if best is not None and self.tradeoff:
                self._others.append(best)
            elif best is not None:
                self._drop(best)
            self._best = cand
            self._prune()
        else:
            self._others.append(cand)
        return True

    def _store(self, step: int, value: float, state: dict[str, torch.Tensor]) -> Candidate:
        size = nbytes(state)
        self._keys += 1
        key = self._keys
        if self.directory is not None and size > self.memory_limit:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"weights-{key}-step{step}.pt"
            torch.save(state, path)
            return Candidate(step, value, size, key, path)
        self._memory[key] = state
        return Candidate(step, value, size, key)

    def _prune(self) -> None:
        """Drop trade-off candidates no longer within tolerance of the best (it only improves)."""
        assert self._best is not None
        keep = []
        for c in self._others:
            if self._within(c.value, self._best.value, self.tolerance):
                keep.append(c)
            else:
                self._drop(c)
        # Over the cap: the latest go first (forgetting grows with training).
        while len(keep) > self.max_tradeoff:
            self._drop(keep.pop())
        self._others = keep

    def _drop(self, c: Candidate) -> None:
        self._memory.pop(c.key, None)
        if c.path is not None:
            c.path.unlink(missing_ok=True)

    def discard_after(self, step: int) -> None:
        """Forget evaluations after `step` (a rollback abandoned them)."""
        if self._best is not None and self._best.step > step:
            self._drop(self._best)
            self._best = None
            if self._others:  # the best of what remains takes its place
                top = max(self._others, key=lambda c: c.value if self.higher else -c.value)
                self._best = top
                self._others.remove(top)
        for c in [c for c in self._others if c.step > step]:
            self._others.remove(c)
            self._drop(c)

    # -- choosing and restoring ----------------------------------------------------------------------
    @property
    def candidates(self) -> list[Candidate]:
        """Every kept evaluation, by step."""
        found = ([self._best] if self._best else []) + self._others
        return sorted(found, key=lambda c: c.step)

    def best(self) -> Candidate | None:
        """The best evaluation by `metric`."""
        return self._best

    def choose(
        self, criterion: Mapping[str, Any] | None = None, retain: RetainLookup | None = None
    ) -> tuple[Candidate | None, str]:
        """The evaluation to restore under `criterion`, and why (one sentence)."""
        best = self._best
        if best is None:
            return None, f"no evaluation of {self.metric} to restore"
        why = f"best {self.metric} {best.value:.4g} at step {best.step}"
        if not criterion or criterion.get("criterion") != "tradeoff":
            return best, why
        tolerance = float(criterion.get("tolerance", self.tolerance))
        near = [c for c in self.candidates if self._within(c.value, best.value, tolerance)]
        scores = retain([c.step for c in near]) if retain is not None else {}
        scored = [c for c in near if c.step in scores]
        if not scored:
            return best, why + " (no retain metrics at the kept evaluations)"
        sign = 1.0 if self.higher else -1.0
        pick = max(scored, key=lambda c: (scores[c.step], sign * c.value))
        return pick, (
            f"best retain trade-off: {self.metric} {pick.value:.4g} at step {pick.step} "
            f"(within {tolerance:g} of the best {best.value:.4g} at step {best.step}), "
            f"retain score {scores[pick.step]:+.4f}"
        )

    def restore(self, c: Candidate, model: torch.nn.Module) -> None:
        """Load the candidate's weights into the model, in place."""
        if c.path is None:
            state = self._memory[c.key]
        else:
            state = torch.load(c.path, map_location="cpu", weights_only=True)
        load_model_state(model, state)

    def clear(self) -> None:
        """Drop everything kept (files included)."""
        for c in self.candidates:
            self._drop(c)
        self._best, self._others = None, []

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The index and the in-memory weights (for `torch.save`)."""

        def row(c: Candidate) -> dict[str, Any]:
            return {
                "step": c.step,
                "value": c.value,
                "nbytes": c.nbytes,
                "key": c.key,
                "path": str(c.path) if c.path else None,
                "state": self._memory.get(c.key),
            }

        return {
            "metric": self.metric,
            "tolerance": self.tolerance,
            "tradeoff": self.tradeoff,
            "best": row(self._best) if self._best else None,
            "others": [row(c) for c in self._others],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        self.metric = state["metric"]
        self.tolerance = float(state["tolerance"])
        self.tradeoff = bool(state["tradeoff"])
        self.higher = higher_is_better(self.metric)
        self._memory = {}

        def cand(row: dict[str, Any]) -> Candidate:
            c = Candidate(int(row["step"]), float(row["value"]), int(row["nbytes"]), row["key"])
            self._keys = max(self._keys, c.key)
            if row["path"]:
                return replace(c, path=Path(row["path"]))
            self._memory[c.key] = row["state"]
            return c

        self._best = cand(state["best"]) if state["best"] else None
        self._others = [cand(r) for r in state["others"]]


def retain_score(values: Mapping[str, float], baseline: Mapping[str, float]) -> float | None:
    """How well retain metrics held up: the mean signed relative change from their baseline
    (0 = unchanged; negative = forgotten), over the keys present in both."""
    parts = []
    for key, value in values.items():
        base = baseline.get(key)
        if base is None or not math.isfinite(value) or not math.isfinite(base) or base == 0:
            continue
        sign = 1.0 if higher_is_better(key) else -1.0
        parts.append(sign * (value - base) / abs(base))
    return sum(parts) / len(parts) if parts else None
