"""`OffsetActuation`: act mode for a training loop that owns its step counter (HF Trainer,
Lightning) and cannot be told to move it back.

- *snapshots* at the start and every `every` optimizer steps; *best weights* at evaluations;
- *rollback*: the snapshot's weights, optimizer, scheduler and RNG are loaded in place; the
  loop's own counter is left alone (it names checkpoints, paces logging and holds the budget).
  Instead the adapter logs at `counter - offset`, where `offset` grows by the steps abandoned:
  the store sees the step go back (a new segment; the abandoned points stay) while the loop's
  counters stay consistent. The abandoned steps count against the loop's budget (`max_steps`,
  epochs): a rollback does not extend training, and their batches are not replayed;
- *restore-best*: deferred to `on_train_end` (`defer_restore`), so the weights tunescope chose
  are the ones training ends with, whatever the loop loads or saves after its last step;
- *stop*, *LR scale*: applied by the `Actuator`; the adapter turns `run.control.should_stop`
  into its loop's own stop flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .actuator import Actuator
from .config import ActSettings

if TYPE_CHECKING:
    from ..run import Run


class OffsetActuation:
    """Act-mode state of one training run driven by a loop's own counter (see the module)."""

    def __init__(
        self,
        run: Run,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        *,
        start: int,
        every: int,
        best_metric: str,
        settings: ActSettings | None = None,
        console: Any = None,
    ) -> None:
        settings = settings or ActSettings()
        self.every = max(int(settings.snapshot_every or every), 1)
        self.offset = 0
        self._snapped = int(start)  # the counter of the last snapshot (accumulation repeats it)
        self.done = False  # training ended: later logs (an evaluation after fit) change nothing
        self.actuator = Actuator(
            run,
            model,
            optimizer,
            scheduler,
            best_metric=best_metric,
            keep=settings.keep,
            memory_limit=settings.memory_limit,
            defer_restore=True,
            console=console,
        )
        self.actuator.snapshot(int(start))  # the state before training: always a way back

    def step(self, counter: int) -> int:
        """The step of the current timeline: the loop's counter less the steps rolled back."""
        return int(counter) - self.offset

    def on_step_end(self, counter: int) -> None:
        """One optimizer step done: snapshot on schedule."""
        if not self.done and counter % self.every == 0 and counter != self._snapped:
            self._snapped = counter
            self.actuator.snapshot(self.step(counter))

    def on_log(self, counter: int, metrics: Mapping[str, Any]) -> None:
        """After a log: offer evaluated weights, then apply the decisions taken so far."""
        run = self.actuator.run
        if self.done:
            run.flush()
            run.control.synchronize()
            return
        step = self.step(counter)
        if any(k.startswith("eval/") for k in metrics):  # retain/* ride along (trade-off)
            self.actuator.evaluated(step, {k: float(v) for k, v in metrics.items()})
        applied = self.actuator.obey(step)
        if applied.rollback_to is not None:
            self.offset += step - applied.rollback_to

    def on_train_end(self) -> None:
        """The deferred restore-best, then drop the snapshots."""
        self.done = True
        self.actuator.finish()
