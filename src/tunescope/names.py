"""Canonical metric names and the aliases other tools use for them.

Every metric that enters tunescope — through `Run.log`, the Trainer callback, Lightning, a
TensorBoard import or a CSV — is mapped here to one canonical name (`train/loss`, `eval/accuracy`,
`retain/<set>/<metric>`, ...), so detectors, the dashboard and exports never guess.

>>> canonical("eval_accuracy")
'eval/accuracy'
"""

from __future__ import annotations

import re

from .errors import TunescopeError

MAX_KEY_LENGTH = 200

# Namespaces tunescope gives meaning to. Other prefixes are kept as the user wrote them.
NAMESPACES = ("train", "eval", "test", "retain", "probe", "sys")

# Exact aliases: HF Trainer's `log()` keys, TensorBoard tags HF writes, Lightning's usual names.
ALIASES: dict[str, str] = {
    "loss": "train/loss",
    "train_loss": "train/loss",
    "training_loss": "train/loss",
    "train/train_loss": "train/loss",
    "learning_rate": "train/lr",
    "lr": "train/lr",
    "train/learning_rate": "train/lr",
    "lr-adamw": "train/lr",
    "lr-adam": "train/lr",
    "lr-sgd": "train/lr",
    "grad_norm": "train/grad_norm",
    "train/grad_norm": "train/grad_norm",
    "epoch": "train/epoch",
    "train/epoch": "train/epoch",
    "val_loss": "eval/loss",
    "valid_loss": "eval/loss",
    "validation_loss": "eval/loss",
    "val/loss": "eval/loss",
    "validation/loss": "eval/loss",
    "train_runtime": "sys/train_runtime",
    "train_samples_per_second": "train/throughput",
    "train_steps_per_second": "sys/train_steps_per_second",
    "total_flos": "sys/total_flos",
    "num_input_tokens_seen": "train/tokens_seen",
}

# Metric-name aliases inside a namespace: `eval_acc` -> `eval/accuracy`.
METRIC_ALIASES: dict[str, str] = {
    "acc": "accuracy",
    "f1_macro": "f1",
    "macro_f1": "f1",
    "ppl": "perplexity",
}

_PREFIXES: tuple[tuple[str, str], ...] = (
    ("eval_", "eval"),
    ("val_", "eval"),
    ("valid_", "eval"),
    ("validation_", "eval"),
    ("test_", "test"),
    ("train_", "train"),
)
_SLASH_PREFIXES = {"val": "eval", "valid": "eval", "validation": "eval", "eval": "eval"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MetricNameError(TunescopeError, ValueError):
    """A metric key that cannot be stored (empty, too long, or not a string)."""


def validate_key(key: object) -> str:
    """Return `key` if it can name a metric, else raise `MetricNameError` saying why."""
    if not isinstance(key, str):
        raise MetricNameError(
            f"metric keys must be strings; got {type(key).__name__} {key!r}. "
            'Use a name such as "train/loss".'
        )
    if not key.strip():
        raise MetricNameError('metric key is empty; use a name such as "train/loss"')
    if len(key) > MAX_KEY_LENGTH:
        raise MetricNameError(
            f"metric key is {len(key)} characters long (limit {MAX_KEY_LENGTH}): {key[:60]!r}…; "
            "use a shorter name"
        )
    if _CONTROL.search(key):
        raise MetricNameError(f"metric key {key!r} contains control characters; remove them")
    return key


def _metric(name: str) -> str:
    return METRIC_ALIASES.get(name, name)


def canonical(key: str) -> str:
    """Map a metric name from any supported tool to tunescope's canonical name.

    Unknown names are returned unchanged, so user metrics keep the names they chose.

    >>> canonical("learning_rate"), canonical("val_loss"), canonical("train/loss")
    ('train/lr', 'eval/loss', 'train/loss')
    """
    key = validate_key(key).strip()
    if key in ALIASES:
        return ALIASES[key]
    if "/" in key:
        head, _, rest = key.partition("/")
        ns = _SLASH_PREFIXES.get(head)
        if ns is not None and rest:
            return f"{ns}/{_metric(rest)}"
        if head in NAMESPACES and rest:
            return f"{head}/{_metric(rest)}" if "/" not in rest else key
        return key
    for prefix, ns in _PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return f"{ns}/{_metric(key[len(prefix) :])}"
    return key


def namespace(key: str) -> str:
    """The group a canonical key belongs to (`train`, `eval`, ..., or `other`)."""
    head = key.split("/", 1)[0]
    return head if head in NAMESPACES else "other"


# Metrics where larger is better; everything else (loss, perplexity, error...) is minimised.
_MAXIMISE = (
    "accuracy",
    "acc",
    "f1",
    "precision",
    "recall",
    "auc",
    "auroc",
    "mcc",
    "bleu",
    "rouge",
    "exact_match",
    "matthews",
    "cka",
    "score",
    "r2",
    "explained_variance",
)
_MINIMISE = (
    "loss",
    "perplexity",
    "ppl",
    "error",
    "err",
    "wer",
    "cer",
    "kl",
    "drift",
    "mae",
    "mse",
)


def higher_is_better(key: str) -> bool:
    """Whether larger values of a metric are better (accuracy) or worse (loss).

    >>> higher_is_better("eval/f1"), higher_is_better("eval/loss")
    (True, False)
    """
    leaf = key.rsplit("/", 1)[-1].lower()
    if any(tok in leaf for tok in _MINIMISE):
        return False
    return any(tok in leaf for tok in _MAXIMISE)
