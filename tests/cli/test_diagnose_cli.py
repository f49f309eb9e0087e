"""`tunescope diagnose` and `tunescope events` as a user runs them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tunescope.cli import main
from tunescope.diagnose import Context, Monitor
from tunescope.run import Run


def _write_csv(path: Path) -> None:
    """Long CSV: a run that overfits from step 100 and whose loss turns NaN at step 190."""
    rows = ["step,metric,value,wall_time"]
    for s in range(1, 200):
        loss = "nan" if s >= 190 else repr(2.3 * math.exp(-s / 30) + 0.01)
        rows.append(f"{s},loss,{loss},{1000.0 + s}")
        if s % 10 == 0:
            ev = 2.3 - s * 0.018 if s <= 100 else 0.5 * (1 + 0.04 * (s - 100) / 10)
            rows.append(f"{s},eval_loss,{ev!r},{1000.5 + s}")
    path.write_text("\n".join(rows) + "\n")


def test_diagnose_csv_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.csv"
    _write_csv(path)
    assert main(["diagnose", str(path), "--json", "--num-classes", "10", "--max-steps", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"source", "findings", "unchecked"}
    assert out["source"]["type"] == "csv" and out["source"]["path"] == str(path)
    kinds = [(f["kind"], f["step"]) for f in out["findings"]]
    assert ("divergence", 190) in kinds
    assert any(k == "overfitting" and 110 <= s <= 130 for k, s in kinds)
    for f in out["findings"]:
        assert set(f) >= {"kind", "step", "severity", "message", "evidence", "recommendation"}
        assert set(f["recommendation"]) == {"text", "intervention"}
    # never a silent skip: what could not be checked is listed with the reason
    assert "retain" in out["unchecked"]["forgetting"]
    assert "grad_norm" in out["unchecked"]["exploding_gradients"]


def test_diagnose_csv_readable_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.csv"
    _write_csv(path)
    assert main(["diagnose", str(path), "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "divergence" in out and "at step 190" in out and "Roll back" in out
    assert "not checked" in out and "forgetting:" in out


def test_diagnose_a_stored_run_and_list_its_events(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {"model": {"num_labels": 10}, "train": {"max_steps": 100}}
    monitor = Monitor(Context.from_config(config))
    run = Run("cli", name="nan-run", config=config, store=store_dir, observer=monitor)
    for s in range(1, 80):
        run.log({"train/loss": math.nan if s >= 60 else 2.0 * math.exp(-s / 20)}, step=s)
    run.flush()
    run.event(
        "intervention",
        "stop",
        "stopped after divergence",
        severity="critical",
        step=61,
        ref=monitor.findings()[0].id,
    )
    run.finish()

    assert main(["diagnose", "nan-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"]["type"] == "run" and report["source"]["run"] == "nan-run"
    assert [(f["kind"], f["step"]) for f in report["findings"]] == [("divergence", 60)]

    assert main(["events", "nan-run", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [(i["type"], i.get("kind") or i.get("action"), i["step"]) for i in items] == [
        ("finding", "divergence", 60),
        ("intervention", "stop", 61),
    ]
    for item in items:
        assert set(item) >= {"type", "step", "severity", "message"}
    assert items[0]["state"] in ("raised", "updated")

    assert main(["events", "nan-run"]) == 0
    text = capsys.readouterr().out
    assert "finding divergence step 60" in text and "intervention stop step 61" in text


def test_diagnose_unknown_source_is_a_clear_error(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diagnose", "no-such-thing"]) == 2
    err = capsys.readouterr().err
    assert "no-such-thing" in err and "not a file or a directory" in err
    assert "Traceback" not in err
    Run("cli", name="other", store=store_dir).finish()
    assert main(["diagnose", "no-such-thing"]) == 2
    assert "tunescope runs" in capsys.readouterr().err


def test_diagnose_bad_csv_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n")
    assert main(["diagnose", str(path)]) == 2
    assert "neither long CSV" in capsys.readouterr().err


@pytest.mark.slow
def test_diagnose_what_hf_trainer_writes_to_tensorboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real `transformers.Trainer` run with report_to="tensorboard": a parameter is set to
    inf at step 20 (an fp16 overflow would do the same). Trainer's default NaN filter hides the
    NaN loss, but not the NaN gradient norm — diagnose must still call it divergence."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
    )
    model = BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (96, 12), generator=g)
    labels = ids[:, 0] % 3

    class Data(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self, lo: int, hi: int) -> None:
            self.lo, self.hi = lo, hi

        def __len__(self) -> int:
            return self.hi - self.lo

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": ids[self.lo + i], "labels": labels[self.lo + i]}

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if state.global_step == 20:
                with torch.no_grad():
                    model.classifier.weight[0, 0] = math.inf

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=30,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=10,
        report_to=["tensorboard"],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Data(0, 64),
        eval_dataset=Data(64, 96),
        callbacks=[Poison()],
    )
    trainer.train()
    capsys.readouterr()  # Trainer prints its logs

    assert main(["diagnose", str(tmp_path / "out"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"]["type"] == "tensorboard"
    # read from the TrainingArguments and model config HF writes as text summaries
    assert (
        out["source"]["context"]["num_classes"] == 3 and out["source"]["context"]["max_steps"] == 30
    )
    div = [f for f in out["findings"] if f["kind"] == "divergence"]
    assert div and 20 <= div[0]["step"] <= 22, out["findings"]
    assert div[0]["evidence"]["metric"] in ("train/grad_norm", "train/loss", "eval/loss")
    # HF's eval_loss was read as eval/loss: overfitting was checkable (too few evals is fine)
    assert "no eval/*" not in out["unchecked"].get("overfitting", "")
