"""`tunescope runs`, `export` and `import` as a user runs them."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import tunescope
from tunescope.cli import main
from tunescope.store import Store


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunescope", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def two_runs(store_dir: Path) -> dict[str, str]:
    with tunescope.init("bbc", name="good", config={"lr": 3e-5}) as a:
        for step in range(50):
            a.log({"loss": 1 / (step + 1)}, step=step)
            if step % 10 == 9:
                a.log({"eval_accuracy": 0.5 + step / 100}, step=step)
        a.log({"loss": math.nan}, step=50)
        for step in range(40, 45):  # a rollback: a second segment
            a.log({"loss": 2.0}, step=step)
    with tunescope.init("bbc", name="other") as b:
        b.log({"loss": 0.3}, step=0)
    return {"good": a.id, "other": b.id}


def test_runs_json(two_runs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    good = by_name["good"]
    assert good["id"] == two_runs["good"]
    assert good["project"] == "bbc"
    assert good["status"] == "finished"
    assert good["last_step"] == 44
    assert good["last"] == {"eval/accuracy": 0.99, "train/loss": 2.0}
    assert good["segments"] == 2
    assert good["duration"] >= 0
    assert good["created"] > 0


def test_runs_table(two_runs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    for text in ("good", "other", two_runs["good"], "finished", "44"):
        assert text in out


def test_export_import_round_trip(two_runs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "good.csv"
    assert main(["export", "good", "--format", "csv", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["step", "metric", "value", "wall_time"]
    assert any(r["value"] == "nan" for r in rows)
    assert main(["import", str(out), "--name", "copy"]) == 0
    again = tmp_path / "copy.csv"
    assert main(["export", "copy", "-o", str(again)]) == 0
    assert again.read_text() == out.read_text()  # exact, NaN, wall times and segments included
    reader = Store(create_if_missing=False).reader()
    copy = reader.run("copy")
    assert copy.segments == 2
    assert copy.status == "finished"


def test_export_to_stdout_by_id(
    two_runs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", two_runs["other"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "step,metric,value,wall_time"
    assert [line.split(",")[:3] for line in lines[1:]] == [["0", "train/loss", "0.3"]]


def test_import_wide_csv(store_dir: Path, tmp_path: Path) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text("step,loss,eval_accuracy\n0,1.0,\n1,0.5,0.7\n2,inf,0.8\n")
    assert main(["import", str(wide), "--project", "old"]) == 0
    reader = Store(create_if_missing=False).reader()
    info = reader.run("wide")
    assert info.project == "old"
    assert reader.series(info.id, "train/loss").values.tolist() == [1.0, 0.5, math.inf]
    assert reader.series(info.id, "eval/accuracy").steps.tolist() == [1, 2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("a,b,c\n1,2,3\n", "neither long CSV"),
        ("step,metric,value\n0,loss,abc\n", "bad.csv:2: value 'abc' is not a number"),
        ("step,metric,value\nx,loss,1\n", "step 'x' is not a number"),
        ("step,metric,value\n-1,loss,1\n", "non-negative integer"),
    ],
)
def test_import_bad_csv_is_a_clear_error_and_creates_no_run(
    store_dir: Path, tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    proc = _cli("import", str(bad))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    if (store_dir / "store.db").exists():
        assert Store(store_dir).reader().runs() == []


def test_unknown_run_suggests_names(two_runs: dict[str, str]) -> None:
    proc = _cli("export", "godo")
    assert proc.returncode == 2
    assert "no run named or with id 'godo'" in proc.stderr
    assert "'good'" in proc.stderr


def test_runs_on_missing_store(tmp_path: Path) -> None:
    proc = _cli("runs", "--store", str(tmp_path / "none"))
    assert proc.returncode == 2
    assert "no tunescope store at" in proc.stderr


def test_export_refuses_directory_output(two_runs: dict[str, str], tmp_path: Path) -> None:
    proc = _cli("export", "good", "-o", str(tmp_path))
    assert proc.returncode == 2
    assert "is a directory" in proc.stderr
