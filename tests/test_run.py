"""The tracking API as a user sees it, against a real SQLite store."""

from __future__ import annotations

import json
import math
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import tunescope
from tunescope.names import MetricNameError
from tunescope.run import RunFinishedError
from tunescope.store import Store
from tunescope.values import MetricValueError


def reader(store_dir: Path):  # type: ignore[no-untyped-def]
    return Store(store_dir, create_if_missing=False).reader()


def test_log_finish_roundtrip(store_dir: Path) -> None:
    with tunescope.init("bbc", name="lr-3e-5", config={"lr": 3e-5, "layers": [1, 2]}) as run:
        for step in range(10):
            run.log({"loss": 1.0 / (step + 1), "eval_accuracy": step / 10}, step=step)
    r = reader(store_dir)
    info = r.run("lr-3e-5")
    assert info.status == "finished"
    assert info.project == "bbc"
    assert info.config == {"lr": 3e-5, "layers": [1, 2]}
    assert info.last_step == 9
    assert info.last == {"eval/accuracy": 0.9, "train/loss": 0.1}
    s = r.series(info.id, "train/loss")
    assert s.steps.tolist() == list(range(10))
    assert s.values.tolist() == [1.0 / (i + 1) for i in range(10)]
    assert (np.diff(s.walls) >= 0).all()
    assert info.ended is not None and info.ended >= info.created


def test_env_records_versions_host_and_git(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "f.txt").write_text("x")
    subprocess.run(["git", "add", "f.txt"], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x"],
        cwd=repo,
        check=True,
    )
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.chdir(repo)
    with tunescope.init("p", store=store_dir) as run:
        run.log({"x": 1})
    env = reader(store_dir).run(run.id).env
    assert env["git"]["commit"] == commit
    assert env["git"]["dirty"] is False
    assert env["versions"]["torch"] == torch.__version__
    assert env["versions"]["python"].count(".") == 2
    assert env["host"]


def test_auto_step_and_default_name(store_dir: Path) -> None:
    run = tunescope.init("proj")
    run.log({"a": 1.0})
    run.log({"a": 2.0})
    run.log({"a": 3.0}, step=10)
    run.log({"a": 4.0})
    run.finish()
    assert run.name == "proj-1"
    s = reader(store_dir).series(run.id, "a")
    assert s.steps.tolist() == [0, 1, 10, 11]
    assert tunescope.init("proj").name == "proj-2"


def test_accepts_numpy_and_torch_scalars(store_dir: Path) -> None:
    loss = torch.tensor(0.25, requires_grad=True) * 2  # has a grad_fn
    with tunescope.init("p") as run:
        run.log(
            {
                "a": np.float32(0.5),
                "b": np.int64(3),
                "c": loss,
                "d": torch.tensor([7.0]),
                "e": True,
                "f": np.array(2.5),
            },
            step=0,
        )
    last = reader(store_dir).run(run.id).last
    assert last == {"a": 0.5, "b": 3.0, "c": 0.5, "d": 7.0, "e": 1.0, "f": 2.5}


def test_tensor_changed_in_place_after_log_keeps_logged_value(store_dir: Path) -> None:
    total = torch.zeros(())
    with tunescope.init("p") as run:
        total += 1.0
        run.log({"total": total}, step=0)
        total += 41.0  # the writer thread reads later; what was logged must not change
    assert reader(store_dir).run(run.id).last["total"] == 1.0


def test_nan_and_inf_round_trip_exactly(store_dir: Path) -> None:
    values = [1.5, math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-300, 1.7976931348623157e308]
    with tunescope.init("p") as run:
        for step, v in enumerate(values):
            run.log({"v": v}, step=step)
    s = reader(store_dir).series(run.id, "v")
    got = s.values.tolist()
    assert math.isnan(got[1])
    assert got[:1] + got[2:] == values[:1] + values[2:]
    assert math.copysign(1.0, got[5]) == -1.0
    assert math.isnan(reader(store_dir).run(run.id).last["v"]) is False


def test_last_value_nan_is_reported_as_nan(store_dir: Path) -> None:
    with tunescope.init("p") as run:
        run.log({"v": 1.0}, step=0)
        run.log({"v": math.nan}, step=1)
    assert math.isnan(reader(store_dir).run(run.id).last["v"])


@pytest.mark.parametrize(
    ("data", "error", "names"),
    [
        ({"train/loss": "0.5"}, MetricValueError, ["train/loss", "str"]),
        ({"acc": [1, 2]}, MetricValueError, ["acc", "list"]),
        ({"w": torch.ones(3)}, MetricValueError, ["w", "shape (3,)"]),
        ({"w": np.ones(2)}, MetricValueError, ["w", "shape (2,)"]),
        ({"big": 10**400}, MetricValueError, ["big", "too large"]),
        ({"": 1.0}, MetricNameError, ["empty"]),
        ({"k" * 300: 1.0}, MetricNameError, ["300 characters"]),
        ({3: 1.0}, MetricNameError, ["strings", "int"]),
    ],
)
def test_bad_values_name_the_key_and_type_and_lose_nothing(
    store_dir: Path,
    data: dict,
    error: type[Exception],
    names: list[str],  # type: ignore[type-arg]
) -> None:
    run = tunescope.init("p")
    run.log({"good": 1.0}, step=0)
    with pytest.raises(error) as info:
        run.log(data, step=1)
    for name in names:
        assert name in str(info.value)
    run.log({"good": 2.0}, step=1)
    run.finish()
    s = reader(store_dir).series(run.id, "good")
    assert s.values.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("step", [-1, 1.5, "3", None.__class__])
def test_bad_steps(store_dir: Path, step: object) -> None:
    with tunescope.init("p") as run, pytest.raises((TypeError, ValueError), match="step"):
        run.log({"a": 1.0}, step=step)  # type: ignore[arg-type]


def test_log_after_finish_is_an_error(store_dir: Path) -> None:
    run = tunescope.init("p")
    run.finish()
    run.finish()  # idempotent
    with pytest.raises(RunFinishedError, match="finished"):
        run.log({"a": 1.0})


def test_exception_in_with_block_marks_failed(store_dir: Path) -> None:
    with pytest.raises(ZeroDivisionError), tunescope.init("p") as run:
        run.log({"a": 1.0}, step=0)
        _ = 1 / 0
    info = reader(store_dir).run(run.id)
    assert info.status == "failed"
    assert info.last == {"a": 1.0}


def test_lower_step_starts_a_segment_and_keeps_the_abandoned_one(store_dir: Path) -> None:
    with tunescope.init("p") as run:
        for step in range(0, 101):
            run.log({"train/loss": 1.0 + step}, step=step)
        for step in range(60, 121):  # rolled back to step 60
            run.log({"train/loss": -float(step)}, step=step)
    r = reader(store_dir)
    s = r.series(run.id, "train/loss")
    assert len(s) == 101 + 61  # nothing overwritten
    assert s.segs.tolist() == [0] * 101 + [1] * 61
    assert r.segment_starts(run.id) == {0: 0, 1: 60}
    curves = r.downsample(run.id, "train/loss", points=1000)
    assert [c["segment"] for c in curves] == [0, 1]
    assert curves[0]["abandoned_from"] == 60
    assert curves[1]["abandoned_from"] is None
    # the abandoned stretch of segment 0 is still there, point for point
    seg0 = [b for b in curves[0]["buckets"] if b["step"] >= 60]
    assert [b["value"] for b in seg0] == [1.0 + s for s in range(60, 101)]
    assert r.run(run.id).segments == 2


def test_resume_continues_the_same_run(store_dir: Path) -> None:
    with tunescope.init("p", name="long") as run:
        for step in range(5):
            run.log({"a": float(step)}, step=step)
    with tunescope.init("p", resume="long") as again:
        assert again.id == run.id
        assert again.step == 4
        again.log({"a": 5.0})
    r = reader(store_dir)
    assert len(r.runs()) == 1
    assert r.series(run.id, "a").steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert r.run("long").status == "finished"


def test_events_and_summary(store_dir: Path) -> None:
    with tunescope.init("p") as run:
        run.log({"a": 1.0}, step=3)
        run.event(
            "finding",
            "overfitting",
            "eval/loss rose",
            severity="warning",
            data={"evidence": {"eval/loss": [0.3, 0.4]}},
            ref="f1",
        )
        run.event("intervention", "stop", "stopped", step=5)
        run.summarize({"test/accuracy": 0.97})
        run.summarize({"best_step": 3})
        with pytest.raises(ValueError, match="severity"):
            run.event("finding", "x", "m", severity="bad")
    r = reader(store_dir)
    events = r.events(run.id)
    assert [(e.type, e.kind, e.step, e.severity) for e in events] == [
        ("finding", "overfitting", 3, "warning"),
        ("intervention", "stop", 5, "info"),
    ]
    assert events[0].data == {"evidence": {"eval/loss": [0.3, 0.4]}}
    assert events[0].ref == "f1"
    assert r.run(run.id).summary == {"test/accuracy": 0.97, "best_step": 3}


def test_config_objects_are_stored_as_json(store_dir: Path) -> None:
    import argparse
    import dataclasses

    @dataclasses.dataclass
    class Cfg:
        lr: float = 0.1
        path: Path = Path("/x")

    with tunescope.init("p", config=Cfg()) as run:
        pass
    assert reader(store_dir).run(run.id).config == {"lr": 0.1, "path": "/x"}
    with tunescope.init("p", config=argparse.Namespace(a=1)) as run2:
        pass
    assert reader(store_dir).run(run2.id).config == {"a": 1}
    with pytest.raises(TypeError, match="config must be a mapping"):
        tunescope.init("p", config=[1, 2])


def test_queue_full_waits_never_drops(store_dir: Path) -> None:
    from tunescope.run import Run

    run = Run("p", max_queue=50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(5000):
            run.log({"a": float(step)}, step=step)
    run.finish()
    full = [w for w in caught if "waiting to be written" in str(w.message)]
    assert len(full) <= 1  # warned once at most
    s = reader(store_dir).series(run.id, "a")
    assert s.steps.tolist() == list(range(5000))


def test_store_path_from_argument_overrides_env(store_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    with tunescope.init("p", store=other) as run:
        run.log({"a": 1.0})
    assert (other / "store.db").exists()
    assert (other / "runs" / run.id).is_dir()
    assert not (store_dir / "store.db").exists()


def test_default_store_is_dot_tunescope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNESCOPE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    with tunescope.init("p") as run:
        run.log({"a": 1.0})
    assert (tmp_path / ".tunescope" / "store.db").exists()
    assert run.dir == tmp_path / ".tunescope" / "runs" / run.id


def test_run_json_is_strict(store_dir: Path) -> None:
    with tunescope.init("p") as run:
        run.log({"a": math.inf, "b": math.nan}, step=0)
    data = reader(store_dir).run(run.id).to_json()
    text = json.dumps(data, allow_nan=False)
    assert '"a": "inf"' in text and '"b": "nan"' in text


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"name": "run\ud800"}, ["name", "'run\\ud800'", "UTF-8"]),
        ({"project": "p\udfff"}, ["project", "UTF-8"]),
        ({"name": 3}, ["name", "int"]),
    ],
)
def test_init_names_the_bad_parameter_and_creates_no_run(
    store_dir: Path, kwargs: dict[str, object], names: list[str]
) -> None:
    from tunescope.errors import TunescopeError

    args: dict[str, object] = {"project": "p", **kwargs}
    with pytest.raises(TunescopeError) as info:
        tunescope.init(**args)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError | TypeError)
    for name in names:
        assert name in str(info.value)
    if (store_dir / "store.db").exists():
        assert reader(store_dir).runs() == []


@pytest.mark.parametrize("step", [2**63, 2**64, 1e19, 1e30, np.uint64(2**64 - 1)])
def test_steps_sqlite_cannot_hold_are_refused(store_dir: Path, step: object) -> None:
    from tunescope.values import MAX_STEP

    with tunescope.init("p", mode=None) as run:
        run.log({"a": 1.0}, step=0)
        with pytest.raises((TypeError, ValueError), match="step") as info:
            run.log({"a": 1.0}, step=step)  # type: ignore[arg-type]
        assert "2**63" in str(info.value)
        run.log({"a": 2.0}, step=MAX_STEP)  # the largest step is fine
        assert run.step == MAX_STEP
    s = reader(store_dir).series(run.id, "a")
    assert s.steps.tolist() == [0, MAX_STEP]


def test_cpu_tensors_are_read_at_once_and_gpu_like_ones_later(store_dir: Path) -> None:
    from tunescope.values import coerce

    # a CPU tensor costs nothing to read now, and leaves the writer nothing to fail on
    assert type(coerce("t", torch.tensor(3.0))) is float
    if torch.cuda.is_available():  # reading a GPU tensor would wait for the device
        assert isinstance(coerce("t", torch.tensor(3.0, device="cuda")), torch.Tensor)
    with tunescope.init("p", mode=None) as run:
        run.log({"t": torch.tensor(3.0), "i": torch.tensor(7), "b": torch.tensor(True)}, step=0)
    assert reader(store_dir).run(run.id).last == {"t": 3.0, "i": 7.0, "b": 1.0}
