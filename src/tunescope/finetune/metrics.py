"""Evaluation metrics, computed by scikit-learn (never by hand).

`classification_metrics` is a ready `compute_metrics` for `transformers.Trainer`; users of their
own Trainer can pass it too:

>>> from tunescope.finetune.metrics import classification_metrics
>>> trainer = Trainer(..., compute_metrics=classification_metrics)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _logits(predictions: Any) -> np.ndarray:
    # Some models return (logits, hidden_states, ...): the logits come first.
    if isinstance(predictions, tuple | list):
        predictions = predictions[0]
    return np.asarray(predictions)


def classification_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 from a Trainer `EvalPrediction`.

    >>> from transformers import EvalPrediction
    >>> m = classification_metrics(EvalPrediction(np.array([[2., 0.], [0., 1.]]), np.array([0, 0])))
    >>> m["accuracy"], m["recall"]
    (0.5, 0.25)
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    predicted = _logits(eval_pred.predictions).argmax(-1)
    labels = np.asarray(eval_pred.label_ids)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def classification_report(logits: Any, labels: Any, class_names: list[str]) -> dict[str, Any]:
    """Per-class precision/recall/F1/support and the confusion matrix (rows: true class)."""
    from sklearn.metrics import classification_report as report
    from sklearn.metrics import confusion_matrix

    predicted = _logits(logits).argmax(-1)
    ids = list(range(len(class_names)))
    per_class = report(
        labels, predicted, labels=ids, target_names=class_names, output_dict=True, zero_division=0
    )
    return {
        "classes": class_names,
        "per_class": {
            name: {k: float(v) for k, v in per_class[name].items()} for name in class_names
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=ids).tolist(),
    }


def perplexity(loss: float) -> float:
    """exp(mean token cross-entropy); inf when the loss is too large to exponentiate."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf
