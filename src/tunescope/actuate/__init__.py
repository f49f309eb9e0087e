"""Acting on findings: snapshots, LR scaling, rollback and restore-best, for every adapter.

The policy (`tunescope.policy`) decides; this package applies: `Actuator` carries out the
interventions queued on `run.control` on a torch model/optimizer/scheduler, `Guard` wires it
into a plain PyTorch loop, `TrainerActuation` into `tunescope.TrainerCallback`.

>>> from tunescope.actuate import Guard        # also `tunescope.Guard`
"""

from __future__ import annotations

from .actuator import Actuator, Applied
from .best import BestWeights
from .guard import Guard
from .lrscale import learning_rates, scale_lr
from .snapshots import SnapshotInfo, Snapshots

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
