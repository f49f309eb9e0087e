"""`Context`: what the detectors know about a run besides its curves.

The number of classes sets the chance-level loss (ln C) that underfitting, collapse and
vanishing-gradient checks compare with; the step budget says when a "fair share" of training has
passed. Both are read leniently from the run's config; what is missing is inferred only when it
is clearly so, else left None — `Report.unchecked` and the docs say what that disables.

>>> Context.from_config({"model": {"num_labels": 5}, "train": {"max_steps": 900}})
Context(num_classes=5, max_steps=900, task=None, warmup_steps=None, epochs=None)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_CLASS_KEYS = ("num_labels", "num_classes", "n_classes", "n_labels")
_CLASS_LIST_KEYS = ("classes", "labels", "label_names", "id2label")
_STEP_KEYS = ("max_steps", "total_steps", "num_training_steps", "max_iters", "train_steps")
_WARMUP_KEYS = ("warmup_steps", "num_warmup_steps")
_TASK_KEYS = ("task", "task_type", "objective")
_EPOCH_KEYS = ("num_train_epochs", "max_epochs", "epochs")
# HF model classes name their head: *ForCausalLM, *LMHeadModel, *ForMaskedLM, *ForConditionalGeneration.
_LM_HEADS = ("CausalLM", "LMHead", "MaskedLM", "ConditionalGeneration", "Seq2SeqLM")


@dataclass(frozen=True)
class Context:
    """Facts about a run that sharpen the diagnosis; every field may be None.

    `num_classes`: C for classification (chance loss ln C). `max_steps`: the training budget in
    optimizer steps. `task`: e.g. "classification" or "causal_lm" (a language model has no
    chance level, so C is never inferred for it). `warmup_steps`: LR warmup length, when known.
    `epochs`: the budget in epochs (used with a logged `train/epoch` when `max_steps` is unknown).
    """

    num_classes: int | None = None
    max_steps: int | None = None
    task: str | None = None
    warmup_steps: int | None = None
    epochs: float | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Context:
        """Read what a run config holds (any nesting; unknown or missing keys are fine).

        >>> Context.from_config({"data": {"classes": ["a", "b", "c"]}}).num_classes
        3
        """
        if not config:
            return cls()
        flat = list(_walk(config))
        ctx = cls(
            num_classes=_first_classes(flat),
            max_steps=_first_int(flat, _STEP_KEYS, minimum=1),
            task=_first_str(flat, _TASK_KEYS) or _task_from_architecture(flat),
            warmup_steps=_first_int(flat, _WARMUP_KEYS, minimum=0),
            epochs=_first_positive(flat, _EPOCH_KEYS),
        )
        if ctx.is_language_model:
            # every HF config carries an id2label (2 labels by default): not classes of an LM
            ctx = dataclasses.replace(ctx, num_classes=None)
        return ctx

    @property
    def is_language_model(self) -> bool:
        """Whether the task is language modelling (no chance-level loss to compare with)."""
        t = (self.task or "").lower()
        return any(s in t for s in ("lm", "language", "causal", "seq2seq", "generation"))

    @property
    def is_regression(self) -> bool:
        """Whether the task is regression (an MSE has no ln C: its chance is the variance)."""
        t = (self.task or "").lower()
        return "regress" in t

    def chance_loss(self, initial_loss: float | None) -> tuple[float | None, str]:
        """The chance-level cross-entropy ln C and where C came from ("config"/"inferred").

        Without `num_classes`, C is inferred from the initial loss only when that loss is
        clearly ln C for a small C (a freshly initialised classification head starts there):
        within a quarter of the gap to the neighbouring ln(C±1), for 2 <= C <= 10.
        """
        if self.num_classes is not None and self.num_classes >= 2:
            return math.log(self.num_classes), "config"
        if initial_loss is None or not math.isfinite(initial_loss):
            return None, ""
        if self.is_language_model or self.is_regression:
            return None, ""
        if not 0.5 < initial_loss < math.log(11):
            return None, ""  # outside ln 2 .. ln 10 (and exp() of a huge loss overflows)
        c = round(math.exp(initial_loss))
        if not 2 <= c <= 10:
            return None, ""
        gap = min(math.log(c + 1) - math.log(c), math.log(c) - math.log(c - 1))
        if abs(initial_loss - math.log(c)) <= gap / 4:
            return math.log(c), "inferred"
        return None, ""


def _walk(obj: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(key, value) pairs of a nested config, shallow keys first."""
    if depth > 6 or not isinstance(obj, Mapping):
        return
    nested = []
    for k, v in obj.items():
        yield str(k).lower(), v
        if isinstance(v, Mapping):
            nested.append(v)
    for v in nested:
        yield from _walk(v, depth + 1)


def _as_int(value: Any, minimum: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value) and float(value).is_integer():
        return int(value) if int(value) >= minimum else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value) if int(value) >= minimum else None
    return None


def _first_int(flat: list[tuple[str, Any]], keys: tuple[str, ...], minimum: int) -> int | None:
    for key, value in flat:
        if key in keys:
            n = _as_int(value, minimum)
            if n is not None:
                return n
    return None


def _first_classes(flat: list[tuple[str, Any]]) -> int | None:
    n = _first_int(flat, _CLASS_KEYS, minimum=2)
    if n is not None:
        return n
    for key, value in flat:
        if (
            key in _CLASS_LIST_KEYS
            and isinstance(value, list | tuple | Mapping)
            and len(value) >= 2
        ):
            return len(value)
    return None


def _first_positive(flat: list[tuple[str, Any]], keys: tuple[str, ...]) -> float | None:
    for key, value in flat:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key in keys and number and math.isfinite(value) and value > 0:
            return float(value)
    return None


def _task_from_architecture(flat: list[tuple[str, Any]]) -> str | None:
    """ "causal_lm" when an HF config's `architectures` names a language-model head."""
    for key, value in flat:
        if key == "architectures" and isinstance(value, list):
            if any(isinstance(a, str) and any(h in a for h in _LM_HEADS) for a in value):
                return "causal_lm"
            if any(isinstance(a, str) and "Classification" in a for a in value):
                return "classification"
    return None


def _first_str(flat: list[tuple[str, Any]], keys: tuple[str, ...]) -> str | None:
    for key, value in flat:
        if key in keys and isinstance(value, str) and value.strip():
            return value.strip()
    return None
