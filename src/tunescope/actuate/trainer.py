"""What `tunescope.TrainerCallback` does in mode `act`: snapshots, best weights, interventions.

The state lives in `offset.OffsetActuation` (shared with the Lightning adapter); this module
says how Trainer's arguments map onto it and why it works the way it does.

Everything goes through what Trainer hands a callback — `model`, `optimizer`, `lr_scheduler`,
`state`, `control` — and nothing else:

- *snapshots* at the start, every `snapshot_every` optimizer steps (default: Trainer's
  evaluation cadence) and *best weights* at each evaluation;
- *stop*: `control.should_training_stop` (set by the callback from `run.control`);
- *LR scale*: on the optimizer's groups and the scheduler's `base_lrs` (it survives the
  schedule; see `lrscale`);
- *rollback*: the snapshot's weights, optimizer, scheduler and RNG are loaded in place. Trainer's
  own `state.global_step` is left alone: its loop runs over epochs and batches (not over the
  step counter), but `_maybe_log_save_evaluate` only logs once `global_step` passes the step it
  last logged and divides the accumulated loss by the difference, and checkpoints are named by
  it — moving it back would silence logging for the rolled-back stretch, then report a loss
  averaged over the wrong number of steps, and overwrite checkpoints. Instead the callback logs
  at `global_step - offset`, where `offset` grows by the steps abandoned: the store sees the
  step go back (a new segment; the abandoned points stay), Trainer's counters stay consistent.
  The abandoned steps count against Trainer's budget (`max_steps`, epochs): a rollback does not
  extend training, and the batches of the abandoned steps are not replayed;
- *restore-best*: Trainer with `load_best_model_at_end` loads its best checkpoint after the loop,
  just before `on_train_end`; the restore therefore waits for `on_train_end`, so the weights
  tunescope chose (e.g. the forgetting trade-off) are the ones training ends with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..names import canonical
from .config import ActSettings
from .offset import OffsetActuation

if TYPE_CHECKING:
    from ..run import Run


def best_metric(args: Any) -> str:
    """The metric that picks the best weights: Trainer's `metric_for_best_model`, else eval/loss."""
    name = getattr(args, "metric_for_best_model", None)
    if not name:
        return "eval/loss"
    return canonical(name if name.startswith("eval_") else f"eval_{name}")


def default_every(state: Any) -> int:
    """Steps between snapshots: Trainer's evaluation cadence, else a tenth of the budget."""
    every = getattr(state, "eval_steps", None)
    if isinstance(every, int) and every > 0:
        return every
    return max(int(getattr(state, "max_steps", 0) or 0) // 10, 1)


def trainer_actuation(
    run: Run,
    args: Any,
    state: Any,
    model: Any,
    optimizer: Any,
    lr_scheduler: Any,
    settings: ActSettings | None = None,
    *,
    console: Any = None,
) -> OffsetActuation:
    """The act-mode state of one `Trainer.train()`, from what Trainer hands a callback."""
    if model is None or optimizer is None:
        raise RuntimeError("tunescope act mode needs the model and optimizer Trainer hands in")
    return OffsetActuation(
        run,
        model,
        optimizer,
        lr_scheduler,
        start=int(state.global_step),
        every=default_every(state),
        best_metric=best_metric(args),
        settings=settings,
        console=console,
    )
