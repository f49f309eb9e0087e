"""The policy: which findings become which interventions, within limits, by mode."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import tunescope
from tunescope.control import Control
from tunescope.diagnose.findings import Finding, Kind, Recommendation, Severity
from tunescope.policy import Intervention, Mode, Policy, PolicyConfig, PolicyState, apply
from tunescope.store import Store


def finding(kind: Kind, step: int = 100, severity: Severity = Severity.WARNING) -> Finding:
    return Finding(kind, step, severity, f"{kind} seen", {}, Recommendation("do x"))


def actions(p: Policy, f: Finding) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    return [(i.action, i.params) for i in p.decide(f)]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (Kind.DIVERGENCE, [("rollback", {"before_step": 100}), ("scale_lr", {"factor": 0.5})]),
        (Kind.LR_TOO_HIGH, [("scale_lr", {"factor": 0.5})]),
        (Kind.PLATEAU, [("scale_lr", {"factor": 0.5})]),
        (Kind.OVERFITTING, [("restore_best", {}), ("stop", {})]),
        (
            Kind.FORGETTING,
            [("restore_best", {"criterion": "tradeoff", "tolerance": 0.01}), ("stop", {})],
        ),
        (Kind.LR_TOO_LOW, []),
        (Kind.UNDERFITTING, []),
        (Kind.VANISHING_GRADIENTS, []),
        (Kind.LOSS_SPIKE, []),
        (Kind.EXPLODING_GRADIENTS, []),
    ],
)
def test_act_mode_responses(kind: Kind, expected: list[tuple[str, dict]]) -> None:  # type: ignore[type-arg]
    assert actions(Policy(PolicyConfig(mode="act")), finding(kind)) == expected


@pytest.mark.parametrize("mode", ["observe", "advise"])
def test_only_act_mode_intervenes(mode: str) -> None:
    p = Policy(PolicyConfig(mode=mode))
    for kind in Kind:
        assert p.decide(finding(kind, severity=Severity.CRITICAL)) == []


def test_a_finding_is_acted_on_once_and_info_is_ignored() -> None:
    p = Policy(PolicyConfig(mode="act"))
    f = finding(Kind.LR_TOO_HIGH)
    assert len(p.decide(f)) == 1
    assert p.decide(f) == []
    assert p.decide(finding(Kind.LR_TOO_HIGH, step=5, severity=Severity.INFO)) == []


def test_lr_reductions_are_limited_then_the_run_stops() -> None:
    p = Policy(PolicyConfig(mode="act", max_lr_reductions=3))
    got = [actions(p, finding(Kind.PLATEAU, step=s)) for s in (10, 20, 30, 40, 50)]
    assert got[:3] == [[("scale_lr", {"factor": 0.5})]] * 3
    assert got[3] == [("restore_best", {}), ("stop", {})]
    assert got[4] == []  # stopped: nothing more
    assert p.state.lr_reductions == 3 and p.state.stopped


def test_rollbacks_are_limited_then_the_run_stops() -> None:
    p = Policy(PolicyConfig(mode="act", max_rollbacks=2, max_lr_reductions=5))
    first = actions(p, finding(Kind.DIVERGENCE, step=10))
    second = actions(p, finding(Kind.DIVERGENCE, step=20))
    third = actions(p, finding(Kind.DIVERGENCE, step=30))
    assert [a for a, _ in first] == ["rollback", "scale_lr"]
    assert [a for a, _ in second] == ["rollback", "scale_lr"]
    assert [a for a, _ in third] == ["restore_best", "stop"]
    assert p.state.rollbacks == 2


def test_per_kind_responses_are_configurable() -> None:
    p = Policy(PolicyConfig(mode="act", responses={"plateau": "advise", "lr_too_low": "scale_lr"}))
    assert p.decide(finding(Kind.PLATEAU)) == []
    assert actions(p, finding(Kind.LR_TOO_LOW)) == [("scale_lr", {"factor": 0.5})]
    with pytest.raises(ValueError, match="unknown finding kind"):
        PolicyConfig(responses={"overfit": "stop"})
    with pytest.raises(ValueError):
        PolicyConfig(responses={"plateau": "explode"})
    with pytest.raises(ValueError, match="lr_factor"):
        PolicyConfig(lr_factor=2.0)


def test_state_round_trips() -> None:
    p = Policy(PolicyConfig(mode="act"))
    p.decide(finding(Kind.DIVERGENCE))
    q = Policy(PolicyConfig(mode="act"))
    q.state.load_state_dict(p.state.state_dict())
    assert q.state == p.state == PolicyState(1, 1, False, ["divergence@100"])
    assert q.decide(finding(Kind.DIVERGENCE)) == []  # already handled, remembered


def test_apply_sets_control_and_queues_pending() -> None:
    c = Control()
    p = Policy(PolicyConfig(mode="act"))
    apply(p.decide(finding(Kind.DIVERGENCE, step=7)), c)
    assert c.rollback_to == "before:7" and c.lr_scale == 0.5 and not c.should_stop
    pending = c.take_pending()
    assert [d["action"] for d in pending] == ["rollback", "scale_lr"]
    assert Intervention.from_dict(pending[0]).params == {"before_step": 7}
    assert c.take_pending() == []
    apply(p.decide(finding(Kind.OVERFITTING, step=9)), c)
    assert c.should_stop and c.restore_best
    restored = Control()
    restored.load_state_dict(c.state_dict())
    assert restored == c


def test_init_modes_wire_monitor_and_policy(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for mode in ("observe", "advise", "act"):
        run = tunescope.init("m", name=mode, mode=mode)
        for step in range(20):
            run.log({"train/loss": 1.0 / (step + 1)}, step=step)
        run.log({"train/loss": math.nan}, step=20)
        run.flush()
        acted = [d["action"] for d in run.control.pending]
        assert acted == (["rollback", "scale_lr"] if mode == "act" else [])
        run.finish()
        kinds = [(e.type, e.kind) for e in Store().reader().events(run.id)]
        assert ("finding", "divergence") in kinds
        printed = capsys.readouterr().err
        assert ("divergence at step 20" in printed) is (mode != "observe")
    with pytest.raises(ValueError, match="mode must be one of"):
        tunescope.init("m", mode="loud")
    quiet = tunescope.init("m", mode=None)
    assert quiet.monitor is None
    quiet.finish()


def test_intervention_event_shape() -> None:
    i = Policy(PolicyConfig(mode="act")).decide(finding(Kind.LR_TOO_HIGH))[0]
    ev = i.to_event(before={"lr": 1e-3}, after={"lr": 5e-4})
    assert (ev.type, ev.kind, ev.ref) == ("intervention", "scale_lr", "lr_too_high@100")
    assert ev.data["before"] == {"lr": 1e-3} and ev.data["finding_kind"] == "lr_too_high"
    assert Mode("act") is Mode.ACT


def test_a_collapse_is_rolled_back_before_the_lr_is_cut() -> None:
    # The detector recommends going back to the loss's best point with a 0.3 cut.
    collapse = Finding(
        Kind.LR_TOO_HIGH,
        60,
        Severity.CRITICAL,
        "train/loss fell then came back to chance",
        {"rule": "collapse", "level": 1.6, "reference": 1.61, "best_step": 12},
        Recommendation("Roll back", {"action": "rollback", "step": 12, "lr_factor": 0.3}),
    )
    assert actions(Policy(PolicyConfig(mode="act")), collapse) == [
        ("rollback", {"before_step": 13}),
        ("scale_lr", {"factor": 0.3}),
    ]


def test_a_run_stuck_at_chance_with_a_high_lr_goes_back_to_its_best_point() -> None:
    stuck = Finding(
        Kind.LR_TOO_HIGH,
        30,
        Severity.WARNING,
        "stuck at chance, erratic loss",
        {
            "rule": "stuck, erratic loss",
            "level": 1.62,
            "reference": 1.609,
            "best_step": 4,
            "best_level": 0.9,
        },
        Recommendation("Lower the LR 10x", {"action": "scale_lr", "factor": 0.1}),
    )
    p = Policy(PolicyConfig(mode="act", max_rollbacks=1))
    assert actions(p, stuck) == [("rollback", {"before_step": 5}), ("scale_lr", {"factor": 0.1})]
    # Out of rollbacks: the cut alone.
    again = stuck.replace(id="again", step=80)
    assert actions(p, again) == [("scale_lr", {"factor": 0.1})]


def test_a_run_that_never_learnt_goes_back_to_the_start() -> None:
    # MiniLM at lr 3e-3 (bench/interventions seed 1): collapsed within the warmup; its lowest
    # loss level (step 16) is noise at chance, and the snapshot there is already broken
    stuck = Finding(
        Kind.LR_TOO_HIGH,
        35,
        Severity.WARNING,
        "stuck at chance, bouncing loss",
        {
            "rule": "stuck, bouncing loss",
            "level": 1.5,
            "reference": 1.609,
            "best_step": 16,
            "best_level": 1.45,
        },
        Recommendation("Lower the LR 10x", {"action": "scale_lr", "factor": 0.1}),
    )
    assert actions(Policy(PolicyConfig(mode="act")), stuck) == [
        ("rollback", {"before_step": 1}),
        ("scale_lr", {"factor": 0.1}),
    ]


def test_an_oscillating_lr_is_only_cut_by_the_policy_factor() -> None:
    wobbly = Finding(
        Kind.LR_TOO_HIGH,
        30,
        Severity.WARNING,
        "oscillates",
        {"rule": "unstable", "level": 0.4, "reference": 1.609, "best_step": 20},
        Recommendation("Lower the LR", {"action": "scale_lr", "factor": 0.7}),
    )
    assert actions(Policy(PolicyConfig(mode="act")), wobbly) == [("scale_lr", {"factor": 0.5})]


def test_resumed_run_keeps_monitor_baselines_and_policy_budget(store_dir: Path) -> None:
    run = tunescope.init("m", name="long", mode="act")
    for step in range(20):
        run.log({"train/loss": 1.0 / (step + 1)}, step=step)
    run.log({"train/loss": math.nan}, step=20)
    run.flush()
    assert [d["action"] for d in run.control.take_pending()] == ["rollback", "scale_lr"]
    run.event("intervention", "rollback", "rolled back", step=20, ref="divergence:train/loss@20")
    run.event("intervention", "scale_lr", "lr x0.5", step=20, ref="divergence:train/loss@20")
    run.finish()
    again = tunescope.init("m", resume="long", mode="act")
    assert again.policy is not None and again.monitor is not None
    assert again.policy.state.lr_reductions == 1 and again.policy.state.rollbacks == 1
    assert [f.kind.value for f in again.monitor.findings()] == ["divergence"]
    again.log({"train/loss": 0.01}, step=21)
    again.flush()
    assert again.control.take_pending() == []  # the old divergence is not acted on twice
    again.finish()
    findings = [e for e in Store().reader().events(again.id) if e.type == "finding"]
    assert len([e for e in findings if e.data["state"] == "raised"]) == 1  # not stored twice


def test_overfitting_while_the_task_metric_improves_keeps_training_until_it_stops() -> None:
    p = Policy(PolicyConfig(mode="act"))
    keep = Finding(
        Kind.OVERFITTING,
        100,
        Severity.WARNING,
        "eval/loss rose 40% while eval/accuracy still improves",
        {},
        Recommendation("keep training", {"action": "keep_training", "metric": "eval/accuracy"}),
        id="overfitting:eval/loss@100",
    )
    assert p.decide(keep) == []  # stopping would cost accuracy
    done = keep.replace(
        recommendation=Recommendation("No gain since step 80", {"action": "restore_best"}),
        last_step=140,
    )
    assert [i.action for i in p.decide(done)] == ["restore_best", "stop"]


def test_a_plateau_whose_weights_barely_move_stops_instead_of_cutting_the_lr() -> None:
    p = Policy(PolicyConfig(mode="act"))
    f = Finding(
        Kind.PLATEAU,
        200,
        Severity.WARNING,
        "plateau, and the learning rate has decayed to 1e-7",
        {},
        Recommendation("A lower learning rate cannot help", {"action": "restore_best"}),
    )
    assert [i.action for i in p.decide(f)] == ["restore_best", "stop"]


def test_a_finding_escalated_from_info_to_warning_is_acted_on_at_the_update(
    store_dir: Path,
) -> None:
    run = tunescope.init("m", name="escalate", mode="act")
    assert run.policy is not None
    info = Finding(
        Kind.OVERFITTING,
        50,
        Severity.INFO,
        "eval/loss rose 6%",
        {},
        Recommendation("restore", {"action": "restore_best"}),
        id="overfitting:eval/loss@50",
    )
    run._decide(info, "raised")
    assert not run.control.should_stop  # info is below the policy's threshold
    run._decide(info.replace(severity=Severity.WARNING, last_step=70), "updated")
    assert run.control.should_stop and run.control.restore_best
    run.finish()
