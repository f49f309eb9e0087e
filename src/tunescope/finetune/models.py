"""The pretrained model: where it comes from, its limits, and how it is set up for training.

`resolve` turns `model.name` into something `from_pretrained` can open without surprises
(a built-in, a local directory, or a hub id already in the local cache), and every check that
can fail (missing path, max_length above the model's limit, a freeze spec that matches nothing,
LoRA target modules that do not exist) raises `ConfigError` before any training starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .builtin import is_builtin, model_dir
from .config import LAYER_SPEC, ConfigError, LoraConfig, ModelConfig

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# Config attributes that hold a dropout probability, across common architectures.
DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "summary_first_dropout",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "hidden_dropout",
)
LAYER_NAME = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


@dataclass
class ParamCount:
    """Parameters of a model: all of them and the ones being trained."""

    total: int
    trainable: int


def resolve(name: str) -> str:
    """The directory or cached hub id `from_pretrained` should load for `model.name`."""
    if is_builtin(name):
        return str(model_dir(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model.name {name!r} is not a Hugging Face model directory (no config.json); "
                "give a directory written by save_pretrained, or builtin:minilm"
            )
        return str(path)
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path or not HUB_ID.match(name):
        raise ConfigError(
            f"model path {name!r} does not exist; give an existing model directory, a hub id "
            "in the local cache, or builtin:minilm"
        )
    _check_cached(name)
    return name


def _check_cached(repo_id: str) -> None:
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str) or not constants.HF_HUB_OFFLINE:
        return  # cached, or online: transformers downloads it as usual
    raise ConfigError(
        f"model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
        "download it first (unset HF_HUB_OFFLINE once), or give a local model directory"
    )


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a padding token (GPT-2 style models reuse EOS)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a tokenizer from {source}: {exc}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer of {source} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(source: str) -> PretrainedConfig:
    """The model's `config.json` (cheap: no weights)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the model config of {source}: {exc}") from None


def length_limit(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The longest input the model accepts (position embeddings, tokenizer limit)."""
    limits = [
        getattr(config, k) for k in POSITION_KEYS if isinstance(getattr(config, k, None), int)
    ]
    # Tokenizers without a limit report a huge sentinel (1e30).
    if isinstance(tokenizer.model_max_length, int) and tokenizer.model_max_length < 1_000_000:
        limits.append(tokenizer.model_max_length)
    return min(limits) if limits else None


def check_max_length(max_length: int, limit: int | None, name: str) -> None:
    """`data.max_length` must fit the model."""
    if limit is not None and max_length > limit:
        raise ConfigError(
            f"data.max_length={max_length} is above the limit of {name} ({limit} tokens); "
            f"set data.max_length to {limit} or less"
        )


def build(
    cfg: ModelConfig,
    source: str,
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    class_names: list[str] | None,
    seed: int,
) -> torch.nn.Module:
    """Load the pretrained weights with a fresh head, apply dropout, freezing and LoRA."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, set_seed

    if cfg.dropout is not None:
        set_dropout(config, cfg.dropout)
    config.pad_token_id = tokenizer.pad_token_id
    set_seed(seed)  # the new head's initial weights (and LoRA's) depend on it
    try:
        if cfg.task == "causal-lm":
            model = AutoModelForCausalLM.from_pretrained(source, config=config)
        else:
            names = class_names or []
            config.num_labels = len(names)
            config.id2label = dict(enumerate(names))
            config.label2id = {n: i for i, n in enumerate(names)}
            config.problem_type = "single_label_classification"
            model = AutoModelForSequenceClassification.from_pretrained(source, config=config)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model {cfg.name} for {cfg.task}: {exc}") from None
    if cfg.freeze:
        freeze(model, cfg.freeze, layer_count(config))
    if cfg.lora is not None:
        model = add_lora(model, cfg.lora, cfg.task)
    return model


def set_dropout(config: PretrainedConfig, p: float) -> None:
    """Set every dropout probability the architecture has to `p`."""
    keys = [k for k in DROPOUT_KEYS if hasattr(config, k)]
    if not keys:
        raise ConfigError(
            f"model.dropout: the {config.model_type} config has no dropout setting tunescope "
            f"knows ({', '.join(DROPOUT_KEYS)}); remove model.dropout"
        )
    for k in keys:
        setattr(config, k, p)


def layer_count(config: PretrainedConfig) -> int | None:
    """Number of transformer blocks, if the config says."""
    for key in LAYER_COUNT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _matches(spec: str, name: str) -> bool:
    m = LAYER_SPEC.match(spec)
    if m is not None:
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        found = LAYER_NAME.search(name)
        return found is not None and lo <= int(found.group(1)) <= hi
    if spec == "embeddings":
        return any("embed" in part or part in ("wte", "wpe") for part in name.split("."))
    return spec in name


def freeze(model: torch.nn.Module, specs: list[str], layers: int | None) -> None:
    """Stop gradients for the parameters `specs` name (see `ModelConfig.freeze`)."""
    named = list(model.named_parameters())
    for spec in specs:
        m = LAYER_SPEC.match(spec)
        if m is not None and layers is not None and int(m.group(2) or m.group(1)) >= layers:
            raise ConfigError(
                f"model.freeze {spec!r}: the model has {layers} layers, numbered 0-{layers - 1}"
            )
        hits = [p for n, p in named if _matches(spec, n)]
        if not hits:
            tops = sorted({n.split(".")[0] for n, _ in named})
            raise ConfigError(
                f"model.freeze {spec!r} matches no parameter; use embeddings, layers:A-B, or a "
                f"part of a parameter name (top-level modules: {', '.join(tops)})"
            )
        for p in hits:
            p.requires_grad_(False)


def add_lora(model: torch.nn.Module, lora: LoraConfig, task: str) -> Any:
    """Wrap the model with LoRA adapters (the classification head stays fully trainable)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    peft_config = PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM if task == "causal-lm" else TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:
        raise ConfigError(
            f"model.lora: {exc}. Set model.lora.target_modules to module names of this model "
            "(e.g. [query, value] for BERT, [c_attn] for GPT-2)"
        ) from None


def count_params(model: torch.nn.Module) -> ParamCount:
    """Total and trainable parameters."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParamCount(total, trainable)
