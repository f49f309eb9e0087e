"""The `monitor.policy` section of a `tunescope train` config: what mode `act` may do.

Validated like every other section (unknown keys and bad values are errors that name the field);
`finetune/config.py` holds it under `monitor`. docs/interventions.md is the reference.

>>> PolicySection(lr_factor=0.3).policy("act").lr_factor
0.3
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..diagnose.findings import Kind
from ..policy import Mode, PolicyConfig, Response

DEFAULT_MEMORY_LIMIT = 256 * 2**20  # bytes; a full MiniLM with AdamW state (~270 MB) goes to disk


@dataclass(frozen=True)
class ActSettings:
    """Snapshot settings of act mode in a Trainer (`TrainerCallback(act=...)`).

    `snapshot_every`: optimizer steps between snapshots (None: Trainer's evaluation cadence);
    `keep`: snapshots kept (plus the first); `memory_limit`: bytes up to which a snapshot stays
    in memory (larger ones go to the run's folder).
    """

    snapshot_every: int | None = None
    keep: int = 3
    memory_limit: int = DEFAULT_MEMORY_LIMIT


class PolicySection(BaseModel):
    """`monitor.policy`: the limits of mode `act`, per-kind responses, and snapshots."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    lr_factor: float = Field(
        0.5, gt=0, lt=1, description="Each LR reduction multiplies the learning rate by this."
    )
    max_lr_reductions: int = Field(
        3, ge=0, description="LR reductions allowed; one more reason to cut stops the run."
    )
    max_rollbacks: int = Field(
        2, ge=0, description="Rollbacks allowed; one more divergence stops the run."
    )
    forgetting_tolerance: float = Field(
        0.01,
        ge=0,
        description="forgetting: task metric (absolute, 0.01 = 1 point) the restore may give "
        "up for retain metrics closer to their start.",
    )
    responses: dict[str, str] = Field(
        default_factory=dict,
        description="Per finding kind, override the response: rollback, scale_lr, "
        "scale_lr_then_stop, restore_best, restore_tradeoff, advise, ignore.",
    )
    snapshot_every: int | None = Field(
        None, gt=0, description="Optimizer steps between snapshots; null: at each evaluation."
    )
    keep_snapshots: int = Field(
        3, ge=1, description="Snapshots kept (the newest ones, plus the first)."
    )
    snapshot_memory_mb: float = Field(
        256,
        ge=0,
        description="Snapshots up to this size stay in memory; larger ones go to the run's "
        "folder (and are deleted when the run ends).",
    )

    @field_validator("responses")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        kinds = [k.value for k in Kind]
        choices = [r.value for r in Response]
        for kind, response in value.items():
            if kind not in kinds:
                raise ValueError(f"unknown finding kind {kind!r}; kinds: {', '.join(kinds)}")
            if response not in choices:
                raise ValueError(
                    f"{kind}: unknown response {response!r}; responses: {', '.join(choices)}"
                )
        return value

    def policy(self, mode: str) -> PolicyConfig:
        """The `PolicyConfig` for `tunescope.init(..., policy=...)`."""
        return PolicyConfig(
            mode=Mode(mode),
            lr_factor=self.lr_factor,
            max_lr_reductions=self.max_lr_reductions,
            max_rollbacks=self.max_rollbacks,
            forgetting_tolerance=self.forgetting_tolerance,
            responses=dict(self.responses),
        )

    def act(self) -> ActSettings:
        """The snapshot settings for `TrainerCallback(act=...)`."""
        return ActSettings(
            snapshot_every=self.snapshot_every,
            keep=self.keep_snapshots,
            memory_limit=int(self.snapshot_memory_mb * 2**20),
        )
