"""`Guard`: let tunescope act on a plain PyTorch training loop, in a few added lines.

The guard owns the step counter (a rollback moves it back), logs what you hand it, takes
snapshots on a schedule and at evaluations, and applies the policy's interventions (mode
`act`): it lowers the learning rate, rolls back, and on `stop` restores the best evaluated
weights and tells the loop to end. In `observe` and `advise` modes it only logs and counts.

>>> run = tunescope.init("bbc", mode="act")                                # doctest: +SKIP
>>> guard = tunescope.Guard(run, model, optimizer, scheduler)              # doctest: +SKIP
>>> for epoch in range(num_epochs):                                        # doctest: +SKIP
...     for batch in train_dataloader:
...         loss = model(**batch).loss
...         loss.backward(); optimizer.step(); scheduler.step(); optimizer.zero_grad()
...         if guard.step({"train/loss": loss}):
...             break
...     if guard.log(evaluate(model)):      # {"eval/loss": ..., "eval/accuracy": ...}
...         break
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..names import canonical
from ..policy import Mode
from .actuator import Actuator
from .config import DEFAULT_MEMORY_LIMIT

if TYPE_CHECKING:
    import torch

    from ..run import Run

EVALUATION_PREFIXES = ("eval/", "retain/")


class Guard:
    """Plain-loop adapter (see the module docstring).

    `snapshot_every`: steps between snapshots (each evaluation logged with `log()` also takes
    one). `check_every`: steps between reading the monitor's decisions (each costs a flush of
    the store). `best_metric`: the evaluation metric whose best weights `stop` restores.
    `watch`: also record lr, gradient norm and update/weight ratio (`run.watch`) every
    `check_every` steps.
    """

    def __init__(
        self,
        run: Run,
        model: torch.nn.Module,
        optimizer: Any,
        scheduler: Any = None,
        *,
        snapshot_every: int = 50,
        check_every: int = 10,
        best_metric: str = "eval/loss",
        keep: int = 3,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        directory: str | Path | None = None,
        console: Any = "stderr",
        watch: bool = True,
    ) -> None:
        if snapshot_every < 1 or check_every < 1:
            raise ValueError(
                f"snapshot_every and check_every must be >= 1 (got {snapshot_every}, {check_every})"
            )
        self.run = run
        self.global_step = 0
        self.should_stop = False
        self.snapshot_every = snapshot_every
        self.check_every = check_every
        self.actuator: Actuator | None = None
        if watch:  # lr, gradient norm, update/weight ratio: what the monitor judges the LR by
            run.watch(model, optimizer, every=check_every)
        if run.mode is Mode.ACT:
            if console == "stderr":
                from rich.console import Console

                console = Console(stderr=True)
            self.actuator = Actuator(
                run,
                model,
                optimizer,
                scheduler,
                best_metric=best_metric,
                keep=keep,
                memory_limit=memory_limit,
                directory=directory,
                console=console,
            )
            self.actuator.snapshot(0)  # the state before training: always a place to go back to
            self._finalizer = weakref.finalize(self, self.actuator.close)

    @property
    def acting(self) -> bool:
        """Whether the guard applies interventions (the run's mode is `act`)."""
        return self.actuator is not None

    def step(self, values: Mapping[str, Any] | None = None) -> bool:
        """One optimizer step is done: count it, log `values` at it, act. True: stop training."""
        self.global_step += 1
        if values:
            self.run.log(values, step=self.global_step)
        act = self.actuator
        if act is None or self.should_stop:
            return self.should_stop
        rolled_back = self.global_step % self.check_every == 0 and self._obey()
        if not (rolled_back or self.should_stop) and self.global_step % self.snapshot_every == 0:
            act.snapshot(self.global_step)
        return self.should_stop

    def log(self, values: Mapping[str, Any]) -> bool:
        """Log values (evaluation, retain metrics) at the current step and act on them at once.

        Evaluation metrics make the current weights a candidate for restore-best, and a
        snapshot to roll back to. True: stop training.
        """
        self.run.log(values, step=self.global_step)
        act = self.actuator
        if act is None or self.should_stop:
            return self.should_stop
        evals = {
            k: float(v) for k, v in values.items() if canonical(k).startswith(EVALUATION_PREFIXES)
        }
        if evals:  # before obeying: a restore-best may pick these very weights
            act.evaluated(self.global_step, evals)
        if not self._obey() and evals and not self.should_stop:
            act.snapshot(self.global_step)
        return self.should_stop

    def _obey(self) -> bool:
        """Apply the decisions so far; True when training rolled back."""
        assert self.actuator is not None
        applied = self.actuator.obey(self.global_step)
        if applied.stop or self.run.control.should_stop:
            self.should_stop = True
        if applied.rollback_to is None:
            return False
        self.global_step = applied.rollback_to
        return True

    def finish(self) -> None:
        """Apply what is still pending and delete the snapshots (idempotent)."""
        if self.actuator is not None:
            self.actuator.finish()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def state_dict(self) -> dict[str, Any]:
        """The counter, the stop flag and the LR scale (snapshots are not carried over)."""
        act = self.actuator
        return {
            "global_step": self.global_step,
            "should_stop": self.should_stop,
            "lr_scale": act.scale if act else 1.0,
            "applied": act.applied if act else 1.0,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()` (the optimizer's own state carries the scaled rates)."""
        self.global_step = int(state["global_step"])
        self.should_stop = bool(state["should_stop"])
        if self.actuator is not None:
            self.actuator.scale = float(state["lr_scale"])
            self.actuator.applied = float(state["applied"])
