"""`Control`: the small set of flags through which decisions reach the training loop.

Deciding and acting live apart: the policy (on rank 0) sets these flags; an adapter (the Trainer
callback, the Lightning callback, the plain-loop helpers) reads them and acts through public
APIs. In distributed training `synchronize()` broadcasts rank 0's flags, so every rank applies
the same decision at the same step.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from .rank import distributed


@dataclass
class Control:
    """Flags for the training loop.

    >>> c = Control()
    >>> c.request_stop("overfitting since step 120"); c.should_stop
    True
    """

    should_stop: bool = False
    lr_scale: float = 1.0  # cumulative factor on the optimizer's base learning rates
    rollback_to: str | None = None  # name of a snapshot to restore, consumed by the adapter
    restore_best: bool = False  # restore the best checkpoint (consumed by the adapter)
    restore_criterion: dict[str, Any] = field(default_factory=dict)  # e.g. forgetting trade-off
    save_checkpoint: bool = False
    reason: str = ""
    # Interventions decided but not yet carried out by an adapter (dicts, see policy.py).
    pending: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after the current step."""
        self.should_stop = True
        self.reason = reason

    def scale_lr(self, factor: float, reason: str) -> None:
        """Multiply the learning rate of every param group by `factor` from now on."""
        if not factor > 0:
            raise ValueError(f"lr scale factor must be > 0, got {factor}")
        self.lr_scale *= factor
        self.reason = reason

    def consume_rollback(self) -> str | None:
        """The snapshot to roll back to, once; None when no rollback is pending."""
        target, self.rollback_to = self.rollback_to, None
        return target

    def consume_restore_best(self) -> bool:
        """Whether to restore the best checkpoint now, once."""
        flag, self.restore_best = self.restore_best, False
        return flag

    def take_pending(self) -> list[dict[str, Any]]:
        """The interventions to carry out now, once (the adapter records each as an event)."""
        pending, self.pending = self.pending, []
        return pending

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        for name, value in state.items():
            if hasattr(self, name):
                setattr(self, name, value)

    def synchronize(self) -> None:
        """Make every rank hold rank 0's flags (no-op outside distributed training)."""
        if not distributed():
            return
        dist = sys.modules["torch"].distributed
        payload = [self.state_dict()]
        dist.broadcast_object_list(payload, src=0)
        self.load_state_dict(payload[0])
