"""Retain sets: what the model must keep knowing, evaluated with the current model.

Each set is evaluated when training begins (the baseline the forgetting detector compares
with) and at every evaluation, and logged as `retain/<name>/<metric>` (`retain/<metric>` when
there is a single set).

How a set is scored:

- **causal LM**: the model's own next-token loss on the set's text; `perplexity` or `loss`.
- **classification, `head="model"`**: the set's classes are among the model's own labels
  (e.g. earlier data of the same task); the model's predictions are scored.
- **classification, `head="readout"`**: the set has its own label set (an earlier task whose
  head is gone). When training begins, a linear readout (scikit-learn's standardised logistic
  regression) is fitted on the *starting* model's features (masked-mean last hidden state) of
  the set's `fit` rows; at every evaluation that fixed readout scores the *current* model's
  features of the held-out rows. Its accuracy at the start is what the model knew; a fall
  means the features the old task relied on have moved — the multi-head measure of forgetting
  in continual learning, with the old head replaced by a readout fitted once.

>>> RetainSet("old", rows=[{"input_ids": [1, 2], "labels": 0}], metric="accuracy").key(single=True)
'retain/accuracy'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from .representations import ProbeBatch, model_device, pool, starting_model

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "loss")
CAUSAL_LM_METRICS = ("loss", "perplexity")
Head = Literal["model", "readout"]


@dataclass
class RetainSet:
    """One retain set, tokenized: `rows` are scored, `fit_rows` train a readout (if any)."""

    name: str
    rows: Sequence[Mapping[str, Any]]  # input_ids, attention_mask, labels
    metric: str = "accuracy"
    task: Literal["classification", "causal-lm"] = "classification"
    head: Head = "model"
    fit_rows: Sequence[Mapping[str, Any]] = field(default_factory=list)
    class_names: list[str] | None = None  # the set's label names (labels index them)

    def __post_init__(self) -> None:
        valid = CAUSAL_LM_METRICS if self.task == "causal-lm" else CLASSIFICATION_METRICS
        if self.metric not in valid:
            raise ValueError(
                f"retain set {self.name!r}: metric {self.metric!r} is not measured for "
                f"{self.task}; choose one of {', '.join(valid)}"
            )
        if self.head == "readout" and self.task == "classification" and not self.fit_rows:
            raise ValueError(f"retain set {self.name!r}: a readout head needs fit_rows")

    def key(self, *, single: bool) -> str:
        """The metric name this set is logged under."""
        return f"retain/{self.metric}" if single else f"retain/{self.name}/{self.metric}"


def _labels(rows: Sequence[Mapping[str, Any]], order: list[int]) -> np.ndarray:
    return np.asarray([rows[i]["labels"] for i in order])


def _batches(
    rows: Sequence[Mapping[str, Any]], pad_id: int, size: int, max_length: int
) -> tuple[ProbeBatch, list[int]]:
    """Rows padded into chunks sorted by length, and the row order that sorting gave."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    batch = ProbeBatch.from_rows(
        [rows[i] for i in order], pad_id=pad_id, chunk_size=size, max_length=max_length
    )
    # from_rows sorts again by (already sorted) length: a stable sort keeps this order.
    return batch, order


def _scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support

    predicted = probs.argmax(-1)
    p, r, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(p),
        "recall": float(r),
        "f1": float(f1),
        "loss": float(log_loss(labels, probs, labels=list(range(probs.shape[1])))),
    }


@dataclass
class Readout:
    """A fitted standardised logistic regression, kept as arrays (saved with the reference)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (classes, d), or (1, d) for two classes
    intercept: np.ndarray
    classes: np.ndarray  # the label id of each column
    width: int  # number of classes of the set

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, width) class probabilities, as scikit-learn's predict_proba gives them."""
        z = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        if z.shape[1] == 1:  # binary: sklearn keeps one row, for the second class
            z = np.concatenate([np.zeros_like(z), z], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        out = np.zeros((x.shape[0], self.width))
        out[:, self.classes] = p
        return out

    def state_dict(self) -> dict[str, Any]:
        """The readout's arrays as tensors."""
        arrays = (self.mean, self.scale, self.coef, self.intercept, self.classes)
        names = ("mean", "scale", "coef", "intercept", "classes")
        return {"width": self.width} | {
            n: torch.from_numpy(np.asarray(a)) for n, a in zip(names, arrays, strict=True)
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Readout:
        """Rebuild a readout saved with `state_dict()`."""
        arrays = {n: state[n].numpy() for n in ("mean", "scale", "coef", "intercept", "classes")}
        return cls(**arrays, width=int(state["width"]))


class Evaluator:
    """Scores retain sets with a model; `begin` fits readouts and returns the baseline."""

    def __init__(
        self,
        sets: Sequence[RetainSet],
        *,
        pad_id: int,
        batch_size: int = 32,
        max_length: int = 512,
        model_labels: Mapping[str, int] | None = None,
    ) -> None:
        names = [s.name for s in sets]
        if len(set(names)) != len(names):
            raise ValueError(f"retain set names must be unique; got {names}")
        self.sets = list(sets)
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.max_length = max_length
        self.model_labels = dict(model_labels or {})
        self.readouts: dict[str, Readout] = {}
        self._prepared = {s.name: _batches(s.rows, pad_id, batch_size, max_length) for s in sets}
        for s in self.sets:
            if s.task == "classification" and s.head == "model":
                self._model_ids(s)  # fail now, not at the first evaluation

    def _model_ids(self, s: RetainSet) -> np.ndarray | None:
        """Map the set's label ids to the model's, by name (None: they already agree)."""
        if s.class_names is None or not self.model_labels:
            return None
        missing = [n for n in s.class_names if n not in self.model_labels]
        if missing:
            raise ValueError(
                f"retain set {s.name!r} has classes the model does not predict "
                f"({', '.join(missing)}; the model's: {', '.join(self.model_labels)}); "
                "score it with head=readout"
            )
        return np.asarray([self.model_labels[n] for n in s.class_names])

    @torch.no_grad()
    def begin(self, model: torch.nn.Module) -> dict[str, float]:
        """Fit the readouts on the starting model, then score every set (the baseline)."""
        with starting_model(model) as start:
            for s in self.sets:
                if s.task == "classification" and s.head == "readout":
                    self.readouts[s.name] = self._fit(start, s)
            return self.evaluate(start)

    def _fit(self, model: torch.nn.Module, s: RetainSet) -> Readout:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        batch, order = _batches(s.fit_rows, self.pad_id, self.batch_size, self.max_length)
        x = self._last_hidden(model, batch)
        labels = _labels(s.fit_rows, order)
        fitted = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, labels)
        scaler, lr = fitted[0], fitted[1]
        width = len(s.class_names) if s.class_names else int(labels.max()) + 1
        return Readout(scaler.mean_, scaler.scale_, lr.coef_, lr.intercept_, lr.classes_, width)

    def state_dict(self) -> dict[str, Any]:
        """The fitted readouts (for resuming with the same reference)."""
        return {name: r.state_dict() for name, r in self.readouts.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Use readouts saved by `state_dict()` instead of fitting them again."""
        self.readouts = {name: Readout.from_state_dict(r) for name, r in state.items()}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Each set's metric, keyed as it is logged. Call inside `isolation.untouched`."""
        single = len(self.sets) == 1
        out: dict[str, float] = {}
        for s in self.sets:
            batch, order = self._prepared[s.name]
            if s.task == "causal-lm":
                value = self._lm(model, batch, s.metric)
            elif s.head == "readout":
                probs = self.readouts[s.name].probabilities(self._last_hidden(model, batch))
                value = _scores(_labels(s.rows, order), probs)[s.metric]
            else:
                value = self._classify(model, batch, s, _labels(s.rows, order))
            out[s.key(single=single)] = value
        return out

    @staticmethod
    def _last_hidden(model: torch.nn.Module, batch: ProbeBatch) -> np.ndarray:
        device = model_device(model)
        parts = []
        for chunk in batch.chunks:
            inputs = {k: v.to(device) for k, v in chunk.items()}
            out = model(**inputs, output_hidden_states=True)
            parts.append(pool(out.hidden_states[-1], inputs["attention_mask"]).cpu())
        return torch.cat(parts).numpy()

    def _classify(
        self, model: torch.nn.Module, batch: ProbeBatch, s: RetainSet, labels: np.ndarray
    ) -> float:
        device = model_device(model)
        probs = []
        for chunk in batch.chunks:
            inputs = {k: v.to(device) for k, v in chunk.items()}
            probs.append(torch.softmax(model(**inputs).logits.float(), dim=-1).cpu())
        mapping = self._model_ids(s)
        targets = mapping[labels] if mapping is not None else labels
        return _scores(targets, torch.cat(probs).numpy())[s.metric]

    @staticmethod
    def _lm(model: torch.nn.Module, batch: ProbeBatch, metric: str) -> float:
        device = model_device(model)
        total = torch.zeros((), dtype=torch.float64, device=device)
        tokens = 0
        for chunk in batch.chunks:
            inputs = {k: v.to(device) for k, v in chunk.items()}
            logits = model(**inputs).logits[:, :-1].float()
            target = inputs["input_ids"][:, 1:]
            keep = inputs["attention_mask"][:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
            total += nll.double()
            tokens += int(keep.sum())
        loss = float(total) / max(tokens, 1)
        if metric == "loss":
            return loss
        return math.exp(loss) if loss < 700 else math.inf
