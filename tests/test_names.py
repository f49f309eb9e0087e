from __future__ import annotations

import pytest

from tunescope.names import MetricNameError, canonical, higher_is_better, namespace, validate_key


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # HF Trainer's log() keys
        ("loss", "train/loss"),
        ("learning_rate", "train/lr"),
        ("grad_norm", "train/grad_norm"),
        ("epoch", "train/epoch"),
        ("eval_loss", "eval/loss"),
        ("eval_accuracy", "eval/accuracy"),
        ("eval_f1", "eval/f1"),
        ("test_accuracy", "test/accuracy"),
        ("train_samples_per_second", "train/throughput"),
        # TensorBoard tags written by HF Trainer
        ("train/learning_rate", "train/lr"),
        ("train/loss", "train/loss"),
        ("eval/loss", "eval/loss"),
        # Lightning's usual names
        ("train_loss", "train/loss"),
        ("val_loss", "eval/loss"),
        ("val_acc", "eval/accuracy"),
        ("val/acc", "eval/accuracy"),
        # already canonical, nested and user names are kept
        ("retain/bbc/accuracy", "retain/bbc/accuracy"),
        ("train/grad_norm/bottom", "train/grad_norm/bottom"),
        ("probe/cka/layer_0", "probe/cka/layer_0"),
        ("my_metric", "my_metric"),
    ],
)
def test_canonical_names(raw: str, expected: str) -> None:
    assert canonical(raw) == expected


@pytest.mark.parametrize(
    ("key", "better_high"),
    [
        ("eval/accuracy", True),
        ("eval/f1", True),
        ("retain/accuracy", True),
        ("probe/cka", True),
        ("eval/loss", False),
        ("eval/perplexity", False),
        ("probe/param_drift", False),
        ("train/loss", False),
    ],
)
def test_direction(key: str, better_high: bool) -> None:
    assert higher_is_better(key) is better_high


def test_namespace() -> None:
    assert namespace("eval/loss") == "eval"
    assert namespace("retain/bbc/accuracy") == "retain"
    assert namespace("custom") == "other"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 201, "201 characters"),
        (3, "must be strings"),
        ("a\nb", "control characters"),
    ],
)
def test_bad_keys_are_named(key: object, message: str) -> None:
    with pytest.raises(MetricNameError, match=message):
        validate_key(key)
