"""Root cause before symptom: an LR blow-up, then a loss stuck at chance, is `lr_too_high`.

The chain of the diagnosis issue: a too-high LR throws the loss (or the gradient norm) up in the
first steps, the loss then sits at chance and the lower layers' gradients die. The root is
named (critical, roll back before the blow-up and cut the LR); the symptoms link to it with
`caused_by` and never advise a higher LR. A detector that raises is disabled, not fatal.
"""

from __future__ import annotations

import math
import random

from tunescope.diagnose import Context, Kind, Monitor, Severity
from tunescope.diagnose.engine import replay
from tunescope.io.csv import Row

LN5 = math.log(5)


def _blown_then_stuck(steps: int = 90, seed: int = 0, layers: bool = True) -> list[Row]:
    """MiniLM at LR 3e-3 in the shape the issue describes: a blow-up at step 4, then chance."""
    rng = random.Random(seed)
    rows = []
    for s in range(steps):
        loss = LN5 * (2.2 if s in (3, 4) else 1.0) * math.exp(rng.gauss(0, 0.03))
        rows.append(Row(s, "train/loss", loss, None))
        rows.append(
            Row(s, "train/grad_norm", (40.0 if s in (3, 4) else 1.0) * rng.uniform(0.8, 1.2), None)
        )
        rows.append(Row(s, "train/lr", 3e-3, None))
        if layers:
            rows.append(Row(s, "train/grad_norm/bottom", 1e-7 if s > 8 else 0.5, None))
            rows.append(Row(s, "train/grad_norm/top", 0.8, None))
        if s % 20 == 19:
            rows.append(Row(s, "eval/loss", LN5 * 1.01, None))
            rows.append(Row(s, "eval/accuracy", 0.239, None))
    return rows


def _advice_raises_lr(text: str) -> bool:
    t = text.lower()
    return "higher learning rate" in t or "raise the learning rate" in t


def test_blow_up_then_stuck_is_lr_too_high_with_a_rollback_before_it() -> None:
    for ctx in (Context(num_classes=5, max_steps=150), Context()):  # with and without context
        report = replay(_blown_then_stuck(), ctx)
        roots = [f for f in report.findings if f.kind is Kind.LR_TOO_HIGH]
        assert roots, [(f.kind, f.step, f.message) for f in report.findings]
        root = roots[0]
        assert root.severity is Severity.CRITICAL
        # the blow-up begins at step 3, before the model had learnt anything: back to the start
        assert root.recommendation.intervention == {
            "action": "rollback",
            "step": 0,
            "lr_factor": 0.1,
        }
        assert "at step 3" in root.message
        for f in report.findings:
            assert not _advice_raises_lr(f.recommendation.text), f.message
            if f.kind in (Kind.UNDERFITTING, Kind.VANISHING_GRADIENTS, Kind.LR_TOO_LOW):
                assert f.caused_by == root.id and f.severity is Severity.INFO
                assert f.recommendation.intervention is None


def test_a_symptom_seen_before_its_root_is_linked_when_the_root_is_raised() -> None:
    monitor = Monitor(Context(num_classes=5))
    events = []
    for r in _blown_then_stuck():
        events += monitor.observe(r.step, 0.0, [(r.metric, r.value)])
    by_kind = {f.kind: f for f in monitor.findings()}
    vanishing = by_kind[Kind.VANISHING_GRADIENTS]  # dead lower layers, seen first
    assert vanishing.step < by_kind[Kind.LR_TOO_HIGH].step
    assert vanishing.caused_by == by_kind[Kind.LR_TOO_HIGH].id
    # the link is stored: an `updated` event names the root
    linked = [e for e in events if e.ref == vanishing.id and e.data.get("caused_by")]
    assert linked
    assert by_kind[Kind.LR_TOO_HIGH].to_json()["caused_by"] is None


def test_stuck_at_chance_without_a_blow_up_is_still_underfitting() -> None:
    rng = random.Random(1)
    rows = []
    for s in range(300):
        rows.append(Row(s, "train/loss", LN5 * 0.99 * math.exp(rng.gauss(0, 0.02)), None))
        if s % 20 == 19:
            rows.append(Row(s, "eval/loss", LN5 * 1.01, None))
            rows.append(Row(s, "eval/accuracy", 0.2, None))
    kinds = {f.kind for f in replay(rows, Context(num_classes=5, max_steps=300)).findings}
    assert Kind.UNDERFITTING in kinds and Kind.LR_TOO_HIGH not in kinds


class _Broken:
    """A detector with a bug: raises on its first check."""

    kinds = (Kind.PLATEAU,)
    channels = 1

    def check(self, step: int, st: object, touched: int) -> list[object]:
        raise ZeroDivisionError("float division by zero")

    def rewind(self, step: int, st: object) -> None:
        pass

    def unchecked(self, st: object) -> dict[Kind, str]:
        return {}


def test_a_detector_that_raises_is_reported_once_and_disabled() -> None:
    from tunescope.diagnose.monitor import default_detectors

    monitor = Monitor(detectors=[_Broken(), *default_detectors()])
    notes = []
    for s in range(50):
        value = math.nan if s == 40 else 2.0
        for e in monitor.observe(s, 0.0, [("train/loss", value)]):
            notes.append(e)
    errors = [e for e in notes if e.type == "note"]
    assert len(errors) == 1 and "ZeroDivisionError" in errors[0].message
    assert errors[0].step == 0
    # the other detectors went on: the NaN at step 40 is still divergence
    assert any(e.type == "finding" and e.kind == "divergence" and e.step == 40 for e in notes)
