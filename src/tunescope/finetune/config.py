"""The validated configuration of `tunescope train`: one pydantic model per section.

A config is YAML (`model:`, `data:`, `train:`, `monitor:`), overridden by `key=value` arguments
with dotted keys whose values are parsed as YAML (`data.classes=[3,4]`, `data.name=null`).
Every field is documented once, here; docs/finetuning.md shows the same reference.

>>> cfg = load_config(None, ["train.learning_rate=3e-5", "data.max_length=64"])
>>> cfg.train.learning_rate, cfg.data.max_length, cfg.model.name
(3e-05, 64, 'builtin:minilm')
"""

from __future__ import annotations

import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..actuate.config import PolicySection
from ..errors import TunescopeError
from ..probes.config import ProbesConfig, RetainList

SECTIONS = ("model", "data", "train", "monitor")
LAYER_SPEC = re.compile(r"^layers:(\d+)(?:-(\d+))?$")
CLASSIFICATION_METRICS = ("loss", "accuracy", "precision", "recall", "f1")
CAUSAL_LM_METRICS = ("loss", "perplexity")


class ConfigError(TunescopeError, ValueError):
    """A config that cannot be used: the message names the field, the value and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="after")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        # Paths are stored with the run; absolute ones still work when resumed from elsewhere.
        return value.expanduser().absolute() if isinstance(value, Path) else value


class LoraConfig(_Section):
    """`model.lora`: train low-rank adapters (via peft) instead of all weights."""

    r: int = Field(8, gt=0, description="Rank of the adapter matrices.")
    alpha: int = Field(16, gt=0, description="Scale of the adapter update is alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt; null: peft's default for the architecture "
        "(BERT: query, value; GPT-2: c_attn).",
    )


class ModelConfig(_Section):
    """`model`: which pretrained model to fine-tune and how."""

    name: str = Field(
        "builtin:minilm",
        description="builtin:minilm, a local Hugging Face model directory, or a hub id already "
        "in the local cache (HF_HUB_OFFLINE is respected).",
    )
    task: Literal["classification", "causal-lm"] = Field(
        "classification", description="Sequence classification or causal language modelling."
    )
    lora: LoraConfig | None = Field(None, description="LoRA adapters; null: full fine-tuning.")
    freeze: list[str] = Field(
        default_factory=list,
        description="Parameters to keep fixed: `embeddings`, `layers:0-3` (inclusive), "
        "`layers:5`, or any substring of parameter names.",
    )
    dropout: float | None = Field(
        None, ge=0, lt=1, description="Override the model's dropout probabilities; null: keep."
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        for spec in self.freeze:
            m = LAYER_SPEC.match(spec)
            if spec.startswith("layers") and m is None:
                raise ValueError(
                    f"freeze entry {spec!r} is not a layer range; write layers:N or layers:A-B"
                )
            if m and m.group(2) is not None and int(m.group(2)) < int(m.group(1)):
                raise ValueError(f"freeze entry {spec!r}: the range must go up, e.g. layers:0-3")
        if self.lora is not None and self.freeze:
            raise ValueError(
                "model.freeze has no effect with model.lora (LoRA already freezes every "
                "pretrained weight); remove one of them"
            )
        return self


class DataConfig(_Section):
    """`data`: where the examples come from and how they are split and tokenized."""

    name: str | None = Field(
        "builtin:bbc-news",
        description="A built-in dataset (builtin:bbc-news); null when train_file is given.",
    )
    train_file: Path | None = Field(
        None,
        description="CSV, JSONL/JSON, Parquet, plain text (causal-lm) or a saved `datasets` "
        "directory; replaces data.name.",
    )
    validation_file: Path | None = Field(
        None, description="Validation examples; null: split from the training data."
    )
    test_file: Path | None = Field(None, description="Test examples; null: split from training.")
    text_column: str = Field("text", description="Column holding the input text.")
    label_column: str = Field("label", description="Column holding the class (classification).")
    classes: list[str | int] | None = Field(
        None, description="Train on these classes only (names or label ids); null: all."
    )
    validation_split: float = Field(
        0.1, ge=0, lt=1, description="Share of training data held out for validation."
    )
    test_split: float = Field(0.1, ge=0, lt=1, description="Share held out for the test set.")
    max_length: int = Field(
        128, gt=0, description="Tokens per example (longer texts are cut); block size for LM."
    )
    max_train_samples: int | None = Field(None, gt=0, description="Use at most N training rows.")
    max_eval_samples: int | None = Field(None, gt=0, description="At most N validation rows.")
    max_test_samples: int | None = Field(None, gt=0, description="At most N test rows.")

    @model_validator(mode="before")
    @classmethod
    def _train_file_replaces_name(cls, data: Any) -> Any:
        # A config that gives train_file and says nothing about name means "my data".
        if isinstance(data, dict) and data.get("train_file") is not None and "name" not in data:
            data = {**data, "name": None}
        return data

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.name is not None and self.train_file is not None:
            raise ValueError(
                f"data.name ({self.name}) and data.train_file ({self.train_file}) both given; "
                "set data.name=null to use your file"
            )
        if self.name is None and self.train_file is None:
            raise ValueError("no data: set data.train_file, or data.name=builtin:bbc-news")
        if self.train_file is None and (self.validation_file or self.test_file):
            raise ValueError("data.validation_file / data.test_file need data.train_file")
        if self.validation_split + self.test_split >= 1:
            raise ValueError(
                f"data.validation_split + data.test_split = "
                f"{self.validation_split + self.test_split:g} leaves no training data; keep it < 1"
            )
        return self


Scheduler = Literal["linear", "cosine", "exponential", "constant"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class TrainConfig(_Section):
    """`train`: optimisation hyperparameters and where checkpoints go."""

    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW).")
    batch_size: int = Field(16, gt=0, description="Examples per device per step.")
    eval_batch_size: int | None = Field(
        None, gt=0, description="Examples per evaluation batch; null: 2 x batch_size."
    )
    epochs: float = Field(3.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, gt=0, description="Optimizer steps to run; overrides epochs when set."
    )
    gradient_accumulation_steps: int = Field(1, gt=0, description="Batches per optimizer step.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps with linear warmup.")
    scheduler: Scheduler = Field(
        "linear",
        description="Learning-rate decay after warmup: linear, cosine, exponential, constant.",
    )
    final_lr_ratio: float = Field(
        0.01, gt=0, le=1, description="exponential: lr at the last step / learning_rate."
    )
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm; 0 disables.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing factor.")
    seed: int = Field(42, description="Seed for model head init, data order and splits.")
    eval_every: int | None = Field(
        None, gt=0, description="Evaluate (and checkpoint) every N steps; null: every epoch."
    )
    log_every: int = Field(10, gt=0, description="Log training loss and lr every N steps.")
    best_metric: str | None = Field(
        None,
        description="Validation metric that picks the best checkpoint: loss, accuracy, "
        "precision, recall, f1 (classification) or loss, perplexity; null: accuracy or loss.",
    )
    precision: Precision = Field(
        "auto", description="auto: bf16 (or fp16) on a GPU that supports it, else fp32."
    )
    output_dir: Path | None = Field(
        None, description="Checkpoint directory; null: the run's folder in the store."
    )


class MonitorConfig(_Section):
    """`monitor`: where the run is recorded and what the monitor may do."""

    mode: Literal["observe", "advise", "act"] = Field(
        "advise",
        description="observe: record findings; advise: also tell you; act: also apply fixes.",
    )
    store: Path | None = Field(
        None, description="Store directory; null: $TUNESCOPE_STORE, else ./.tunescope."
    )
    project: str | None = Field(
        None,
        min_length=1,
        description="Project the run belongs to; null: named after the data (bbc-news, or the "
        "training file's name).",
    )
    name: str | None = Field(None, description="Run name; null: <project>-<n>.")
    policy: PolicySection = Field(
        default_factory=lambda: PolicySection.model_validate({}),
        description="What mode act may do: LR factor, limits, per-kind responses, snapshots "
        "(docs/interventions.md).",
    )
    probes: ProbesConfig = Field(
        default_factory=lambda: ProbesConfig.model_validate({}),
        description="Drift probes against the starting model and per-layer dynamics "
        "(docs/probes.md).",
    )
    retain: RetainList = Field(
        default_factory=list,
        description="Retain sets: data the model must keep knowing, scored at every evaluation "
        "(docs/probes.md).",
    )


class Config(_Section):
    """A whole `tunescope train` config."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig.model_validate({}))
    data: DataConfig = Field(default_factory=lambda: DataConfig.model_validate({}))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig.model_validate({}))
    monitor: MonitorConfig = Field(default_factory=lambda: MonitorConfig.model_validate({}))

    @model_validator(mode="after")
    def _check(self) -> Config:
        lm = self.model.task == "causal-lm"
        if lm and self.data.classes is not None:
            raise ValueError("data.classes applies to classification; remove it for causal-lm")
        if self.train.best_metric is not None:
            valid = CAUSAL_LM_METRICS if lm else CLASSIFICATION_METRICS
            if metric_leaf(self.train.best_metric) not in valid:
                raise ValueError(
                    f"train.best_metric {self.train.best_metric!r} is not measured for "
                    f"{self.model.task}; choose one of {', '.join(valid)}"
                )
        return self

    @property
    def project(self) -> str:
        """The run's project: `monitor.project`, else named after the data."""
        if self.monitor.project:
            return self.monitor.project
        if self.data.train_file is not None:
            return self.data.train_file.stem or "tunescope"
        return (self.data.name or "tunescope").removeprefix("builtin:")

    @property
    def best_metric(self) -> str:
        """The validation metric (leaf name, e.g. `accuracy`) that picks the best checkpoint."""
        if self.train.best_metric is not None:
            return metric_leaf(self.train.best_metric)
        return "loss" if self.model.task == "causal-lm" else "accuracy"


def metric_leaf(name: str) -> str:
    """`eval/accuracy`, `eval_accuracy` and `accuracy` all name `accuracy`."""
    for prefix in ("eval/", "eval_"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


# -- loading ----------------------------------------------------------------------------------


def default_config_text() -> str:
    """The built-in demo config (MiniLM on BBC News), as shipped YAML."""
    return resources.files("tunescope.finetune").joinpath("configs/default.yaml").read_text()


def read_yaml(path: Path | None) -> dict[str, Any]:
    """Read a config file (None: the built-in default) into a plain dict."""
    if path is None:
        text, where = default_config_text(), "the built-in default config"
    else:
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        if path.is_dir():
            raise ConfigError(f"config {path} is a directory; give a YAML file")
        text, where = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where} must be a mapping with sections {', '.join(SECTIONS)}; "
            f"got {type(data).__name__}"
        )
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` overrides (dotted keys, YAML values) to a config dict (copied)."""
    out = _deep_copy(data)
    given = {o.partition("=")[0].strip() for o in overrides}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"override {item!r} is not key=value; write e.g. train.learning_rate=3e-5"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        *parents, leaf = key.split(".")
        node = out
        for i, part in enumerate(parents):
            child = node.get(part)
            if not isinstance(child, dict):
                if child is not None:
                    where = ".".join(parents[: i + 1])
                    raise ConfigError(f"override {item!r}: {where} is not a section")
                child = node[part] = {}
            node = child
        node[leaf] = value
        # Giving your own training file replaces the built-in dataset unless name is also set.
        if key == "data.train_file" and value is not None and "data.name" not in given:
            node["name"] = None
    return out


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def validate(data: dict[str, Any], *, where: str = "config") -> Config:
    """Build a `Config` from a dict, or raise `ConfigError` listing every problem."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ConfigError(f"invalid {where}:\n  " + "\n  ".join(lines)) from None


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read YAML (None: the built-in default), apply `key=value` overrides, validate.

    >>> load_config(None, ["model.task=causal-lm"]).best_metric
    'loss'
    """
    data = apply_overrides(read_yaml(path), list(overrides or []))
    return validate(data, where=f"config {path}" if path else "config")


def _describe(err: Any) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc) or "config"
    if err["type"] == "extra_forbidden":
        return f"unknown key {key}{_suggest(loc)}"
    if err["type"] == "model_type" or err["type"] == "dict_type":
        return f"{key} must be a section (a mapping of keys), got {err['input']!r}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not loc:
        return msg
    return f"{key}: {msg} (got {err['input']!r})" if "input" in err else f"{key}: {msg}"


def _suggest(loc: tuple[str, ...]) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        inner = _section_type(field.annotation) if field else None
        if inner is None:
            return ""
        model = inner
    valid = list(model.model_fields)
    close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.6)
    prefix = ".".join(loc[:-1])
    hint = f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""
    return f"{hint} (valid keys{' in ' + prefix if prefix else ''}: {', '.join(valid)})"


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


# -- the config stored with a run ---------------------------------------------------------------

DERIVED = "derived"  # key of the list of dotted keys the recipe filled in (stripped on resume)


def stored_config(config: Config, derived: dict[str, Any]) -> dict[str, Any]:
    """The run config written to the store: the validated config plus derived facts.

    `derived` maps dotted keys (`data.num_classes`, `train.max_steps`) to values the recipe
    worked out; their names are kept under `derived` so `--resume` can strip them again.
    """
    out = config.model_dump(mode="json")
    for dotted, value in derived.items():
        section, _, key = dotted.partition(".")
        out.setdefault(section, {})[key] = value
    out[DERIVED] = sorted(derived)
    return out


def user_config(stored: dict[str, Any]) -> dict[str, Any]:
    """Undo `stored_config`: the config as the user gave it (for `--resume`)."""
    out = _deep_copy({k: v for k, v in stored.items() if k != DERIVED})
    for dotted in stored.get(DERIVED, []):
        section, _, key = dotted.partition(".")
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out
