"""`tunescope train` and `tunescope check` as a user types them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunescope.cli import main
from tunescope.store import Store


def _tiny(tiny_bert: Path, csv: Path) -> list[str]:
    return [
        f"model.name={tiny_bert}",
        f"data.train_file={csv}",
        "data.max_length=32",
        "data.validation_split=0.15",
        "data.test_split=0.15",
        "train.max_steps=20",
        "train.eval_every=10",
        "train.learning_rate=3e-3",
        "train.batch_size=8",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train.learning_rat=1e-4"], "did you mean train.learning_rate?"),
        (["model.name=./no/such/dir"], "model path './no/such/dir' does not exist"),
        (["data.train_file=/no/such.csv"], "data file /no/such.csv does not exist"),
        (
            ["data.max_length=1024"],
            "data.max_length=1024 is above the limit of builtin:minilm (512",
        ),
        (["missing.yaml", "x=1", "stray"], "expected key=value"),
        (["missing.yaml"], "config file missing.yaml does not exist"),
    ],
)
def test_bad_input_exits_2_with_the_reason_and_no_run(
    args: list[str], message: str, store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *args]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert message in err
    assert "Traceback" not in err
    if (store_dir / "store.db").exists():
        assert Store(store_dir).reader().runs() == []


def test_output_dir_that_is_a_file(
    tiny_bert: Path,
    topic_csv: Path,
    store_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("")
    assert main(["train", *_tiny(tiny_bert, topic_csv), f"train.output_dir={a_file}"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert Store(store_dir).reader().runs() == []


@pytest.mark.slow
def test_check_prints_data_model_and_cost(
    tiny_bert: Path, topic_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", *_tiny(tiny_bert, topic_csv), "model.lora.r=2", "--time-steps", "1"]) == 0
    out = capsys.readouterr().out
    for text in (
        "config OK",
        "train",
        "validation",
        "test",
        "film",
        "cut at 32 tokens",
        "LoRA r=2",
    ):
        assert text in out
    for text in ("parameters", "trainable", "memory", "time per step", "time per epoch"):
        assert text in out


@pytest.mark.slow
def test_train_from_a_file_then_resume_for_more_steps(
    tiny_bert: Path,
    topic_csv: Path,
    store_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("monitor:\n  name: first\n  mode: observe\n")
    assert main(["train", str(config), *_tiny(tiny_bert, topic_csv)]) == 0
    out = capsys.readouterr().out
    assert "test/accuracy" in out and "view with: tunescope ui" in out
    assert "tunescope diagnose first" in out

    # Resume the finished run with a longer budget: its stored config, plus the override.
    assert main(["train", "--resume", "first", "train.max_steps=30"]) == 0
    reader = Store(store_dir).reader()
    (info,) = reader.runs()
    assert info.name == "first" and info.status == "finished"
    assert info.config["monitor"]["mode"] == "observe"
    assert reader.series(info.id, "eval/accuracy").steps.tolist() == [10, 20, 30]
    assert reader.series(info.id, "test/accuracy").steps.tolist() == [20, 30]
    # The best checkpoint is the best of the whole run, from before the resume or after it.
    accuracy = reader.series(info.id, "eval/accuracy").values
    assert info.summary["best"]["value"] == pytest.approx(accuracy.max())
