"""The `monitor.probes` and `monitor.retain` sections of a `tunescope train` config.

Validated like every other section (unknown keys and bad values are errors that name the field);
`finetune/config.py` holds them under `monitor`. docs/probes.md is the reference.

>>> ProbesConfig().batch_size, RetainConfig(name="old", dataset="builtin:bbc-news").metric
(256, None)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="after")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        # Paths are stored with the run; absolute ones still work when resumed from elsewhere.
        return value.expanduser().absolute() if isinstance(value, Path) else value


class ProbesConfig(_Section):
    """`monitor.probes`: label-free drift probes and per-layer training dynamics."""

    enabled: bool = Field(
        True, description="Measure drift against the starting model and per-layer dynamics."
    )
    every: int | None = Field(
        None,
        gt=0,
        description="Optimizer steps between probes (and always the last step); null: twice "
        "per run (the middle and the last step), which keeps the demo's cost under 3%.",
    )
    batch_size: int = Field(
        256, ge=4, description="Texts in the fixed probe batch (from training and retain data)."
    )
    max_length: int = Field(32, gt=0, description="Tokens per probe text (longer ones are cut).")
    cka: bool = Field(True, description="probe/cka/layer_N and probe/cka: CKA to the start.")
    kl: bool = Field(True, description="probe/kl: next-token KL to the start (causal-lm only).")
    param_drift: bool = Field(True, description="probe/param_drift[/<group>]: ‖θ−θ₀‖/‖θ₀‖.")
    dynamics: bool = Field(
        True,
        description="train/grad_norm/<group>, train/update_ratio/<group>, train/clip_fraction, "
        "train/loss_scale at log steps.",
    )
    debiased: bool = Field(True, description="Debiased linear CKA (false: the classic estimator).")
    top_k: int = Field(64, gt=0, description="Next-token probabilities kept per token for kl.")


class RetainConfig(_Section):
    """One entry of `monitor.retain`: data the model must keep knowing."""

    name: str = Field(description="Set name: metrics are retain/<name>/<metric>.")
    dataset: str | None = Field(
        None, description="A built-in dataset (builtin:bbc-news); or give file."
    )
    file: Path | None = Field(
        None, description="CSV, JSONL/JSON, Parquet, plain text or a saved `datasets` directory."
    )
    text_column: str = Field("text", description="Column holding the text.")
    label_column: str = Field("label", description="Column holding the class (classification).")
    classes: list[str | int] | None = Field(
        None, description="Keep these classes only (names or label ids); null: all."
    )
    metric: str | None = Field(
        None,
        description="accuracy, precision, recall, f1, loss (classification) or perplexity, "
        "loss (causal-lm); null: accuracy or perplexity.",
    )
    head: Literal["auto", "model", "readout"] = Field(
        "auto",
        description="Classification: score with the model's own head (the set's classes are "
        "among the model's) or a readout fitted on the starting model; auto: model when it can.",
    )
    max_samples: int = Field(512, gt=0, description="Rows scored at each evaluation.")
    fit_samples: int = Field(512, gt=1, description="Rows the readout is fitted on (readout).")
    max_length: int | None = Field(
        None, gt=0, description="Tokens per row (LM: block size); null: data.max_length."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(
                f"retain set name {value!r} must be letters, digits, '_', '.' or '-' (it becomes "
                "part of the metric name retain/<name>/<metric>)"
            )
        return value

    @model_validator(mode="after")
    def _source(self) -> RetainConfig:
        if (self.dataset is None) == (self.file is None):
            raise ValueError(
                f"retain set {self.name!r}: give exactly one of dataset (builtin:bbc-news) or file"
            )
        return self

    def metric_for(self, task: str) -> str:
        """The metric to log: `metric`, else accuracy (classification) or perplexity."""
        return self.metric or ("perplexity" if task == "causal-lm" else "accuracy")


def _unique(sets: list[RetainConfig]) -> list[RetainConfig]:
    names = [s.name for s in sets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"retain set names must be unique; {', '.join(twice)} used twice")
    return sets


RetainList = Annotated[list[RetainConfig], AfterValidator(_unique)]
