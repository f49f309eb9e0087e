"""Finding, its JSON shape, and collapsing stored events back into findings."""

from __future__ import annotations

import json
import math

import pytest

from tunescope.diagnose import (
    Context,
    Finding,
    Kind,
    Recommendation,
    Severity,
    findings_from_events,
)
from tunescope.store import EventRecord


def _finding(**changes: object) -> Finding:
    f = Finding(
        Kind.OVERFITTING,
        200,
        Severity.WARNING,
        "eval/loss rose 18% over 4 evaluations since step 120 while train/loss fell 40%: overfitting.",
        {"metric": "eval/loss", "best": 0.31, "value": math.nan, "limit": math.inf},
        Recommendation(
            "Stop and restore the checkpoint at step 120.",
            {"action": "restore_best", "metric": "eval/loss", "step": 120},
        ),
        metric="eval/loss",
    )
    return f.replace(**changes) if changes else f


def test_to_json_has_the_design_shape_and_is_strict_json() -> None:
    data = _finding().to_json()
    assert set(data) >= {"kind", "step", "severity", "message", "evidence", "recommendation"}
    assert data["kind"] == "overfitting" and data["severity"] == "warning" and data["step"] == 200
    assert data["recommendation"]["intervention"]["action"] == "restore_best"
    assert data["id"] == "overfitting:eval/loss@200" and data["last_step"] == 200
    text = json.dumps(data, allow_nan=False)  # NaN/inf in evidence must not break strict JSON
    assert '"nan"' in text and '"inf"' in text


def test_json_round_trip() -> None:
    f = _finding(last_step=260, state="updated")
    back = Finding.from_json(json.loads(json.dumps(f.to_json())))
    assert back.kind is f.kind and back.step == f.step and back.last_step == 260
    assert back.recommendation == f.recommendation and back.id == f.id


def test_severity_order_and_kinds() -> None:
    assert Severity.INFO.rank < Severity.WARNING.rank < Severity.CRITICAL.rank
    assert {k.value for k in Kind} == {
        "overfitting",
        "underfitting",
        "forgetting",
        "divergence",
        "loss_spike",
        "lr_too_high",
        "lr_too_low",
        "plateau",
        "exploding_gradients",
        "vanishing_gradients",
    }


def _event(f: Finding, state: str, step: int) -> EventRecord:
    return EventRecord(
        "finding", f.kind.value, f.severity.value, f.message, f.event_data(state), step, f.id
    )


def test_events_collapse_by_ref_to_the_latest_state() -> None:
    f = _finding()
    later = f.replace(severity=Severity.CRITICAL, message="worse.", last_step=320)
    events = [
        _event(f, "raised", 200),
        EventRecord("intervention", "restore_best", "warning", "restored", {}, 210, f.id),
        _event(later, "updated", 320),
        _event(later.replace(last_step=330), "resolved", 400),
        EventRecord("finding", "my_own_kind", "info", "user note", {}, 5, "x"),
    ]
    (got,) = findings_from_events(events)
    assert got.id == f.id and got.step == 200  # first step survives updates
    assert got.severity is Severity.CRITICAL and got.message == "worse."
    assert got.state == "resolved" and not got.active and got.last_step == 330


def test_findings_are_sorted_by_first_step() -> None:
    a = _finding()
    b = Finding(
        Kind.DIVERGENCE,
        50,
        Severity.CRITICAL,
        "nan.",
        {},
        Recommendation("roll back"),
        metric="train/loss",
    )
    got = findings_from_events([_event(a, "raised", 200), _event(b, "raised", 50)])
    assert [f.kind for f in got] == [Kind.DIVERGENCE, Kind.OVERFITTING]


@pytest.mark.parametrize(
    ("config", "classes", "steps"),
    [
        ({"model": {"num_labels": 5}, "train": {"max_steps": 900}}, 5, 900),
        ({"data": {"classes": [3, 4]}, "max_steps": "120"}, 2, 120),
        ({"model": {"config": {"id2label": {"0": "a", "1": "b", "2": "c"}}}}, 3, None),
        ({"num_labels": True, "max_steps": -3}, None, None),
        ({}, None, None),
        (None, None, None),
    ],
)
def test_context_from_config_is_lenient(
    config: dict | None, classes: int | None, steps: int | None
) -> None:
    ctx = Context.from_config(config)
    assert (ctx.num_classes, ctx.max_steps) == (classes, steps)


def test_context_from_hf_configs() -> None:
    lm = Context.from_config(
        {
            "model": {"architectures": ["GPT2LMHeadModel"], "id2label": {"0": "a", "1": "b"}},
            "train": {"max_steps": -1, "num_train_epochs": 2.0, "warmup_steps": 50},
        }
    )
    # every HF config has a default 2-label id2label: it is not the classes of a language model
    assert (lm.task, lm.num_classes, lm.max_steps, lm.epochs, lm.warmup_steps) == (
        "causal_lm",
        None,
        None,
        2.0,
        50,
    )
    clf = Context.from_config({"architectures": ["BertForSequenceClassification"], "num_labels": 5})
    assert (clf.task, clf.num_classes) == ("classification", 5)


def test_chance_level_is_inferred_only_when_clear() -> None:
    ctx = Context()
    assert ctx.chance_loss(math.log(5) - 0.01) == (pytest.approx(math.log(5)), "inferred")
    assert ctx.chance_loss(1.5) == (None, "")  # between ln 4 and ln 5: not clearly either
    assert ctx.chance_loss(3.0) == (None, "")  # ~ln 20: too many neighbours to be sure
    assert Context(task="causal_lm").chance_loss(math.log(5)) == (None, "")
    assert Context(num_classes=4).chance_loss(None) == (pytest.approx(math.log(4)), "config")
