"""The monitor's finding lifecycle, its events, hooks, restarts and the terminal listener."""

from __future__ import annotations

import io
import math
import random

from rich.console import Console

from tunescope.diagnose import Context, Finding, Kind, Monitor
from tunescope.diagnose.terminal import terminal_listener
from tunescope.store import EventRecord

from .curves import Spec, build, u_shape


def feed(m: Monitor, calls: list) -> list[EventRecord]:
    out: list[EventRecord] = []
    for step, wall, values in calls:
        out += m.observe(step, wall, values)
    return out


def overfit_calls() -> list:
    return build(Spec(steps=600, eval_loss=u_shape(0.5, 200, 0.3), eval_acc=None))


def test_a_finding_is_raised_once_updated_rarely_and_keeps_its_first_step() -> None:
    m = Monitor(Context(num_classes=10, max_steps=600))
    events = feed(m, overfit_calls())
    mine = [e for e in events if e.kind == "overfitting"]
    assert mine[0].data["state"] == "raised"
    assert sum(e.data["state"] == "raised" for e in mine) == 1
    evals_after = (600 - mine[0].step) // 20
    assert len(mine) < evals_after / 2  # not one event per evaluation
    assert len({e.ref for e in mine}) == 1
    assert all(e.data["first_step"] == mine[0].step for e in mine)
    raised = mine[0]
    assert raised.type == "finding" and raised.severity in ("info", "warning", "critical")
    assert set(raised.data) >= {"evidence", "recommendation", "first_step", "last_step", "state"}
    assert raised.data["recommendation"]["intervention"]["action"] == "restore_best"


def test_on_finding_hook_sees_every_stored_change() -> None:
    seen: list[tuple[str, str, int]] = []

    def hook(f: Finding, state: str) -> None:
        seen.append((f.kind.value, state, f.step))

    m = Monitor(Context(num_classes=10), on_finding=hook)
    events = feed(
        m, [(s, float(s), [("train/loss", math.nan if s == 30 else 1.0)]) for s in range(1, 60)]
    )
    assert seen == [(e.kind, e.data["state"], e.data["first_step"]) for e in events]
    assert seen[0] == ("divergence", "raised", 30)


def test_values_order_inside_a_call_does_not_matter() -> None:
    calls = overfit_calls()
    shuffled = []
    rng = random.Random(0)
    for step, wall, values in calls:
        values = list(values)
        rng.shuffle(values)
        shuffled.append((step, wall, values))
    a, b = Monitor(Context(num_classes=10)), Monitor(Context(num_classes=10))
    feed(a, calls)
    feed(b, shuffled)
    assert [f.to_json() for f in a.findings()] == [f.to_json() for f in b.findings()]


def test_divergence_resolves_when_the_loss_recovers_and_finish_stores_last_step() -> None:
    m = Monitor(Context(num_classes=10))
    calls = [(s, float(s), [("train/loss", 2.0 * math.exp(-s / 50))]) for s in range(1, 40)]
    calls += [(40, 40.0, [("train/loss", math.inf)])]
    calls += [(s, float(s), [("train/loss", 2.0 * math.exp(-s / 50))]) for s in range(41, 80)]
    events = feed(m, calls)
    states = [(e.kind, e.data["state"], e.step) for e in events]
    assert states[0] == ("divergence", "raised", 40)
    assert ("divergence", "resolved", 41) in states
    assert m.finish() == []  # nothing active: nothing to store


def test_finish_stores_the_last_step_of_active_findings() -> None:
    m = Monitor(Context(num_classes=10))
    feed(m, [(s, float(s), [("train/loss", math.nan)]) for s in range(10, 20)])
    (ev,) = m.finish()
    assert (
        ev.data["state"] == "updated" and ev.data["last_step"] == 19 and ev.data["first_step"] == 10
    )
    assert m.findings()[0].last_step == 19


def test_rollback_resolves_findings_from_the_abandoned_points() -> None:
    m = Monitor(Context(num_classes=10))
    good = [(s, float(s), [("train/loss", 2.0 * math.exp(-s / 50))]) for s in range(1, 100)]
    bad = [(s, float(s), [("train/loss", math.nan)]) for s in range(100, 110)]
    events = feed(m, good + bad)
    assert [e.kind for e in events] == ["divergence"]
    # the policy rolls back to step 90 and training continues healthily from there
    resumed = [(s, 200.0 + s, [("train/loss", 2.0 * math.exp(-s / 50))]) for s in range(90, 150)]
    events = feed(m, resumed)
    assert [(e.kind, e.data["state"], e.step) for e in events] == [("divergence", "resolved", 90)]
    assert m.state.segment == 1 and m.state.segment_start == 90
    assert not m.active()


def test_unchecked_says_why() -> None:
    m = Monitor()
    feed(m, [(s, float(s), [("train/loss", 1.0 / s)]) for s in range(1, 50)])
    why = m.unchecked()
    assert "eval" in why[Kind.OVERFITTING]
    assert "retain" in why[Kind.FORGETTING]
    assert "grad_norm" in why[Kind.EXPLODING_GRADIENTS]
    assert Kind.DIVERGENCE not in why and Kind.LOSS_SPIKE not in why


def test_terminal_listener_prints_raised_findings_once() -> None:
    buf = io.StringIO()
    listen = terminal_listener(Console(file=buf, width=200, color_system=None))
    m = Monitor(Context(num_classes=10))
    events = feed(
        m, [(s, float(s), [("train/loss", math.nan if s >= 30 else 1.0)]) for s in range(1, 40)]
    )
    events += m.finish()
    listen(events)
    text = buf.getvalue()
    assert text.count("divergence") == 1
    assert "step 30" in text and "train/loss became nan" in text and "Roll back" in text


def test_monitor_cost_stays_flat_over_a_long_run() -> None:
    """O(1) per point: the last 10,000 of 30,000 steps cost about what the first 10,000 did."""
    import time

    rng = random.Random(0)
    calls = [
        (
            s,
            float(s),
            [
                ("train/loss", 2.3 * math.exp(-s / 5000) + 0.05 * rng.random()),
                ("train/grad_norm", 1 + rng.random()),
            ],
        )
        for s in range(1, 30_001)
    ]
    m = Monitor(Context(num_classes=10, max_steps=30_000))
    t0 = time.perf_counter()
    feed(m, calls[:10_000])
    t1 = time.perf_counter()
    feed(m, calls[10_000:20_000])
    feed(m, calls[20_000:])
    t2 = time.perf_counter()
    assert (t2 - t1) / 2 < 3 * (t1 - t0)
    assert (t2 - t0) / 30_000 < 200e-6  # generous bound for a loaded CI machine


def test_state_round_trips_through_json_and_continues_identically() -> None:
    """A resumed run's monitor (state saved with the checkpoint) picks up exactly where the
    first one stopped: same findings, same events, same ids."""
    import json

    from .test_engine import _faulty_calls

    calls = _faulty_calls()
    cut = len(calls) // 2
    a = Monitor(Context(num_classes=10, max_steps=600))
    feed(a, calls[:cut])
    saved = json.loads(json.dumps(a.state_dict(), allow_nan=False))
    b = Monitor()
    b.load_state_dict(saved)
    rest_a, rest_b = feed(a, calls[cut:]), feed(b, calls[cut:])
    assert [(e.kind, e.step, e.ref, e.data) for e in rest_a] == [
        (e.kind, e.step, e.ref, e.data) for e in rest_b
    ]
    assert [f.to_json() for f in a.findings()] == [f.to_json() for f in b.findings()]
    assert {f.kind for f in b.findings()} >= {Kind.OVERFITTING, Kind.LOSS_SPIKE, Kind.DIVERGENCE}
