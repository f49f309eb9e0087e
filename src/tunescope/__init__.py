"""tunescope: fine-tune pretrained models and watch the fine-tuning as it happens.

>>> import tunescope
>>> run = tunescope.init(project="bbc", config={"lr": 3e-5})      # doctest: +SKIP
>>> run.log({"train/loss": 0.42}, step=10)                          # doctest: +SKIP
>>> run.finish()                                                    # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .control import Control
from .run import Run
from .store import Store, StoreError

if TYPE_CHECKING:
    from .actuate import Guard
    from .diagnose import Context
    from .integrations.transformers import TrainerCallback
    from .policy import PolicyConfig

__version__ = "0.1.0"
__all__ = [
    "Control",
    "Guard",
    "Run",
    "Store",
    "StoreError",
    "TrainerCallback",
    "__version__",
    "init",
]


def init(
    project: str,
    name: str | None = None,
    config: Any = None,
    store: str | Path | None = None,
    *,
    resume: str | None = None,
    mode: str | None = "advise",
    context: Context | None = None,
    policy: PolicyConfig | None = None,
) -> Run:
    """Start recording a run (or continue one with `resume=` its name or id).

    `store` is a directory (created if missing); default `$TUNESCOPE_STORE`, else `./.tunescope`.
    `mode` sets what the online monitor does with findings: `observe` (record them), `advise`
    (also print them with the change to make), `act` (also decide interventions on
    `run.control`), or None (no monitor). `context` tells the detectors what the config does
    not (e.g. the number of classes); `policy` sets the limits of `act`.
    Only global rank 0 writes; other ranks get a run that writes nothing.

    >>> with init("bbc", config={"lr": 3e-5}) as run:                 # doctest: +SKIP
    ...     run.log({"train/loss": 0.42}, step=10)
    """
    return Run(
        project,
        name=name,
        config=config,
        store=store,
        resume=resume,
        mode=mode,
        context=context,
        policy=policy,
    )


def __getattr__(name: str) -> Any:
    # Integrations import heavy libraries (transformers, lightning); load them on first use.
    if name == "TrainerCallback":
        from .integrations.transformers import TrainerCallback

        return TrainerCallback
    if name == "Guard":
        from .actuate import Guard

        return Guard
    if name == "LightningCallback":
        from .integrations.lightning import LightningCallback

        return LightningCallback
    raise AttributeError(f"module 'tunescope' has no attribute {name!r}")
