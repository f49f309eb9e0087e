"""Offline replay: rows regrouped into log calls, CSV / TensorBoard / stored runs, and the
guarantee that online monitoring and offline replay give identical findings."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

from tunescope.diagnose import Context, Kind, Monitor, findings_from_events, history_rows, replay
from tunescope.diagnose.engine import group_calls, replay_run
from tunescope.io import csv as csv_io
from tunescope.io.csv import Row
from tunescope.store import Store

from .curves import Spec, build, u_shape

CONFIG = {"model": {"num_labels": 10}, "train": {"max_steps": 600}}


def test_group_calls_rebuilds_log_calls() -> None:
    rows = [
        Row(1, "train/loss", 1.0, 10.0),
        Row(1, "train/lr", 0.1, 10.0),
        Row(1, "eval/loss", 2.0, 11.0),  # same step, later call
        Row(2, "train/loss", 0.9, 12.0),
        Row(2, "train/loss", 0.8, 12.0),  # a repeated metric starts a new call
    ]
    calls = list(group_calls(rows))
    assert [(s, [k for k, _ in v]) for s, _, v in calls] == [
        (1, ["train/loss", "train/lr"]),
        (1, ["eval/loss"]),
        (2, ["train/loss"]),
        (2, ["train/loss"]),
    ]
    by_step = list(group_calls(rows, by_wall=False))
    assert [len(v) for _, _, v in by_step] == [3, 1, 1]


def _faulty_calls() -> list:
    """Overfits from step 200, spikes at 150, goes NaN at 560; rolled back to 540 at the end."""
    spec = Spec(
        steps=580,
        eval_loss=u_shape(0.5, 200, 0.3),
        extra={150: {"train/loss": 8.0}, **{s: {"train/loss": math.nan} for s in range(560, 581)}},
    )
    calls = build(spec)
    resumed = [(s, float(s), [("train/loss", 0.1)]) for s in range(540, 600)]
    return calls + resumed


def test_online_and_offline_give_identical_findings(store_dir: Path) -> None:
    """A real `tunescope.init` run (mode observe: the Monitor records findings as events in
    the real SQLite store), then the same points replayed offline three ways."""
    import tunescope

    run = tunescope.init("diag", name="online", config=CONFIG, store=store_dir, mode="observe")
    assert isinstance(run.monitor, Monitor)
    for step, _, values in _faulty_calls():
        run.log(dict(values), step=step)
    run.finish()  # the writer calls monitor.finish() in the run's last transaction

    reader = Store(store_dir, create_if_missing=False).reader()
    online = [f.to_json() for f in findings_from_events(reader.events(run.id))]
    kinds = {f["kind"] for f in online}
    assert {"overfitting", "loss_spike", "divergence"} <= kinds, online

    from_store = replay_run(reader, run.id)
    assert [f.to_json() for f in from_store.findings] == online
    assert from_store.source["segments"] == 2

    buf = io.StringIO()
    csv_io.write_long(reader, run.id, buf)
    path = store_dir.parent / "run.csv"
    path.write_text(buf.getvalue())
    from_csv = replay(csv_io.read(path), Context.from_config(CONFIG))
    assert [f.to_json() for f in from_csv.findings] == online
    assert [
        f.to_json()
        for f in replay(history_rows(reader, run.id), Context.from_config(CONFIG)).findings
    ] == online


def test_replay_of_a_wide_csv_without_wall_times(tmp_path: Path) -> None:
    lines = ["step,loss,eval_loss,eval_accuracy"]
    for s in range(1, 200):
        ev = f"{0.5 + (s - 100) * 0.002 if s > 100 else 2.0 - s * 0.015:.4f}" if s % 10 == 0 else ""
        acc = "0.8" if s % 10 == 0 else ""
        loss = "nan" if s == 180 else f"{2.3 * math.exp(-s / 40):.4f}"
        lines.append(f"{s},{loss},{ev},{acc}")
    path = tmp_path / "wide.csv"
    path.write_text("\n".join(lines) + "\n")
    report = replay(csv_io.read(path), Context(num_classes=10, max_steps=200))
    div = [f for f in report.findings if f.kind is Kind.DIVERGENCE]
    assert div and div[0].step == 180
    assert report.source["points"] > 200 and report.source["first_step"] == 1


def test_replay_of_tensorboard_event_files(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from tunescope.io import tensorboard

    writer = SummaryWriter(log_dir=str(tmp_path / "runs" / "x"))
    for s in range(1, 120):
        writer.add_scalar("train/loss", 2.3 * math.exp(-s / 30), s, walltime=1000.0 + s)
        writer.add_scalar("train/learning_rate", 1e-3, s, walltime=1000.2 + s)
        writer.add_scalar("train/grad_norm", math.inf if s == 77 else 1.0, s, walltime=1000.3 + s)
    writer.close()
    report = replay(tensorboard.read(tmp_path), Context(num_classes=10), by_wall=False)
    assert [(f.kind, f.step) for f in report.findings if f.kind is Kind.DIVERGENCE] == [
        (Kind.DIVERGENCE, 77)
    ]
    assert Kind.OVERFITTING in report.unchecked  # no eval/* logged, and it says so


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_histories_do_not_crash(n: int) -> None:
    report = replay([Row(s, "train/loss", 1.0, None) for s in range(n)])
    assert report.findings == []
    assert set(report.unchecked) >= {Kind.OVERFITTING, Kind.FORGETTING}
    assert report.to_json()["unchecked"]["overfitting"]
