"""What `tunescope.TrainerCallback` does in mode `act`: snapshots, best weights, interventions.

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
from .actuator import Actuator
from .config import ActSettings

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


class TrainerActuation:
    """Act-mode state of one Trainer run (see the module docstring)."""

    def __init__(
        self,
        run: Run,
        args: Any,
        state: Any,
        model: Any,
        optimizer: Any,
        lr_scheduler: Any,
        settings: ActSettings | None = None,
        *,
        console: Any = None,
    ) -> None:
        if model is None or optimizer is None:
            raise RuntimeError("tunescope act mode needs the model and optimizer Trainer hands in")
        settings = settings or ActSettings()
        self.every = settings.snapshot_every or default_every(state)
        self.offset = 0
        self.done = False  # training ended: later logs (trainer.evaluate()) change nothing
        self.actuator = Actuator(
            run,
            model,
            optimizer,
            lr_scheduler,
            best_metric=best_metric(args),
            keep=settings.keep,
            memory_limit=settings.memory_limit,
            defer_restore=True,
            console=console,
        )
        self.actuator.snapshot(self.step(state))

    def step(self, state: Any) -> int:
        """The step of the current timeline (Trainer's step less the steps rolled back)."""
        return int(state.global_step) - self.offset

    def on_step_end(self, state: Any) -> None:
        """Snapshot on schedule."""
        if not self.done and state.global_step % self.every == 0:
            self.actuator.snapshot(self.step(state))

    def on_log(self, state: Any, control: Any, metrics: dict[str, float]) -> None:
        """After a log: offer evaluated weights, then apply the decisions taken so far."""
        run = self.actuator.run
        if self.done:
            run.flush()
            run.control.synchronize()
            return
        step = self.step(state)
        if any(k.startswith("eval/") for k in metrics):
            self.actuator.evaluated(step, metrics)
        applied = self.actuator.obey(step)
        if applied.rollback_to is not None:
            self.offset += step - applied.rollback_to
        # A stop sets run.control.should_stop: the callback turns it into
        # control.should_training_stop (and a checkpoint of the state training stopped in).

    def on_train_end(self) -> None:
        """The deferred restore-best, then drop the snapshots."""
        self.done = True
        self.actuator.finish()
