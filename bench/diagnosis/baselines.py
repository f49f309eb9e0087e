"""What users have today, replayed on the same curves: early stopping on the eval loss.

The REAL classes are driven, not re-implementations:

- `transformers.EarlyStoppingCallback` (patience 1 — its default — and 3): `on_evaluate` is
  called with real `TrainingArguments` / `TrainerState` / `TrainerControl`, then the state's
  `best_metric` is updated exactly as `Trainer._determine_best_metric` does right after it.
- `lightning.pytorch.callbacks.EarlyStopping(patience=3, check_finite=True,
  divergence_threshold=...)`: its pure decision method `_evaluate_stopping_criteria(tensor)`.

Each returns the step of the evaluation at which training would have stopped (None: never)
and why.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

MONITOR = "eval/loss"
BASELINES = ("hf-p1", "hf-p3", "lightning-p3")


@dataclass(frozen=True)
class Stop:
    """Where a baseline stopped training, and its reason."""

    step: int
    reason: str


@cache
def _training_args() -> Any:
    from transformers import TrainingArguments

    # What EarlyStoppingCallback needs: a metric, evaluation and saving on the same schedule,
    # and load_best_model_at_end (without it the callback only warns).
    return TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="ts-bench-"),
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        report_to=[],
        use_cpu=True,
    )


def hf_early_stopping(points: Sequence[tuple[int, float]], patience: int) -> Stop | None:
    """Replay `transformers.EarlyStoppingCallback(early_stopping_patience=patience)`."""
    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState

    args = _training_args()
    state, control = TrainerState(), TrainerControl()
    callback = EarlyStoppingCallback(early_stopping_patience=patience)
    callback.on_train_begin(args, state, control)
    for step, value in points:
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_loss": value})
        # Trainer._determine_best_metric runs after the callbacks' on_evaluate
        if state.best_metric is None:
            state.best_metric = math.inf
        if np.less(value, state.best_metric):
            state.best_metric = value
            state.best_global_step = step
        if control.should_training_stop:
            why = f"eval loss not below its best ({state.best_metric:.4g}) for {patience} evals"
            return Stop(step, why)
    return None


def lightning_early_stopping(
    points: Sequence[tuple[int, float]], divergence_threshold: float | None, patience: int = 3
) -> Stop | None:
    """Replay Lightning's `EarlyStopping(monitor=eval/loss, patience, check_finite=True,
    divergence_threshold)` decision on each evaluation."""
    import torch
    from lightning.pytorch.callbacks import EarlyStopping

    es = EarlyStopping(
        monitor=MONITOR,
        mode="min",
        patience=patience,
        check_finite=True,
        divergence_threshold=divergence_threshold,
    )
    for step, value in points:
        stop, _ = es._evaluate_stopping_criteria(torch.tensor(value, dtype=torch.float64))
        if stop:
            return Stop(step, str(es.stopping_reason.name).lower())
    return None


def run_baselines(
    points: Sequence[tuple[int, float]], chance_loss: float | None
) -> dict[str, Stop | None]:
    """All baselines on one run's eval-loss points. Lightning's divergence threshold is set
    the way a user would: 1.5 x the chance-level loss (ln C, or ln V for a character LM)."""
    threshold = 1.5 * chance_loss if chance_loss else None
    return {
        "hf-p1": hf_early_stopping(points, 1),
        "hf-p3": hf_early_stopping(points, 3),
        "lightning-p3": lightning_early_stopping(points, threshold),
    }
