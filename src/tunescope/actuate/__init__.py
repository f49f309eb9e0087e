"""Acting on findings: snapshots, LR scaling, rollback and restore-best, for every adapter.

The policy (`tunescope.policy`) decides; this package applies: `Actuator` carries out the
interventions queued on `run.control` on a torch model/optimizer/scheduler, `Guard` wires it
into a plain PyTorch loop, `OffsetActuation` into `tunescope.TrainerCallback` and
`tunescope.LightningCallback` (loops that own their step counter).

>>> from tunescope.actuate import Guard        # also `tunescope.Guard`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actuator import Actuator, Applied
    from .best import BestWeights
    from .guard import Guard
    from .lrscale import learning_rates, scale_lr
    from .snapshots import SnapshotInfo, Snapshots

# torch is imported on first use: `tunescope.actuate.config` (the config section) stays light.
_WHERE = {
    "Actuator": "actuator",
    "Applied": "actuator",
    "BestWeights": "best",
    "Guard": "guard",
    "learning_rates": "lrscale",
    "scale_lr": "lrscale",
    "SnapshotInfo": "snapshots",
    "Snapshots": "snapshots",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'tunescope.actuate' has no attribute {name!r}")


__all__ = [
    "Actuator",
    "Applied",
    "BestWeights",
    "Guard",
    "SnapshotInfo",
    "Snapshots",
    "learning_rates",
    "scale_lr",
]
