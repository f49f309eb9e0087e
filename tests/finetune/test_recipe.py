"""The whole pipeline through the real `transformers.Trainer`, on tiny random models."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

from tunescope.finetune import data, recipe
from tunescope.finetune.config import Config, ConfigError, load_config
from tunescope.finetune.models import load_tokenizer
from tunescope.finetune.progress import print_outcome
from tunescope.store import Store

pytestmark = pytest.mark.slow


def _config(*overrides: str) -> Config:
    return load_config(None, list(overrides))


def _classify(tiny_bert: Path, csv: Path, store: Path, *more: str) -> Config:
    return _config(
        f"model.name={tiny_bert}",
        f"data.train_file={csv}",
        "data.max_length=32",
        "data.validation_split=0.15",
        "data.test_split=0.15",
        "train.max_steps=40",
        "train.eval_every=10",
        "train.log_every=5",
        "train.learning_rate=3e-3",
        "train.warmup_ratio=0",
        "train.batch_size=8",
        f"monitor.store={store}",
        *more,
    )


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def _effective(series: Any) -> list[int]:
    """Steps of a curve as a reader draws it: a new segment replaces what it rolled back."""
    steps: list[int] = []
    for step, seg in zip(series.steps.tolist(), series.segs.tolist(), strict=True):
        while steps and steps[-1][0] >= step and steps[-1][1] < seg:  # type: ignore[index]
            steps.pop()
        steps.append((step, seg))  # type: ignore[arg-type]
    return [s for s, _ in steps]  # type: ignore[misc]


def test_classification_end_to_end(tiny_bert: Path, topic_csv: Path, store_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    cfg = _classify(tiny_bert, topic_csv, store_dir)
    outcome = recipe.train(cfg, console=_quiet())
    reader = Store(store_dir, create_if_missing=False).reader()
    info = reader.run(outcome.run_id)
    assert info.status == "finished" and info.project == "topics"
    assert info.config["data"]["num_classes"] == info.config["model"]["num_labels"] == 3
    assert info.config["train"]["max_steps"] == 40 and info.config["monitor"]["mode"] == "act"
    assert info.config["train"]["warmup_steps"] == 0

    keys = {k["key"] for k in reader.keys(info.id)}
    assert {"train/loss", "train/lr", "train/grad_norm", "train/throughput"} <= keys
    assert {f"eval/{m}" for m in ("loss", "accuracy", "precision", "recall", "f1")} <= keys
    assert {f"test/{m}" for m in ("loss", "accuracy", "precision", "recall", "f1")} <= keys
    assert reader.series(info.id, "train/loss").steps.tolist() == [1, 5, 10, 15, 20, 25, 30, 35, 40]
    assert reader.series(info.id, "eval/accuracy").steps.tolist() == [10, 20, 30, 40]
    assert all(v > 0 for v in reader.series(info.id, "train/throughput").values)
    loss = reader.series(info.id, "eval/loss").values
    assert loss[-1] < loss[0]  # it learns

    # The best checkpoint (by eval/accuracy) is the one evaluated on test.
    accuracy = reader.series(info.id, "eval/accuracy")
    best = info.summary["best"]
    assert best["value"] == pytest.approx(accuracy.values.max())
    assert best["step"] == int(accuracy.steps[int(np.argmax(accuracy.values))])
    test_acc = info.summary["test/accuracy"]
    assert test_acc == outcome.test["test/accuracy"] >= 0.6  # chance is 1/3
    cm = np.array(info.summary["test/confusion_matrix"])
    assert cm.shape == (3, 3) and cm.trace() / cm.sum() == pytest.approx(test_acc)
    assert list(info.summary["test/per_class"]) == ["film", "money", "sport"]

    # best/ and last/ are loadable safetensors; best/ reproduces the recorded test accuracy.
    out = store_dir / "runs" / info.id / "checkpoints"
    assert (out / "best" / "model.safetensors").is_file()
    assert (out / "last" / "model.safetensors").is_file()
    # For --resume: all of the last Trainer checkpoint, only the weights of the best one.
    kept = sorted(p.name for p in (out / "trainer").iterdir())
    assert kept == sorted({"checkpoint-40", f"checkpoint-{best['step']}"})
    assert (out / "trainer" / "checkpoint-40" / "optimizer.pt").is_file()
    if best["step"] != 40:
        assert not (out / "trainer" / f"checkpoint-{best['step']}" / "optimizer.pt").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out / "best").eval()
    tok = load_tokenizer(str(out / "best"))
    raw = data.load_splits(cfg.data, task="classification", seed=cfg.train.seed)
    test = data.tokenize(raw, tok, cfg.data, "classification").test
    assert test is not None
    batch = DataCollatorWithPadding(tok)(
        [{k: test[i][k] for k in test.column_names} for i in range(len(test))]
    )
    labels = batch.pop("labels")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1)
    assert (predicted == labels).float().mean().item() == pytest.approx(test_acc)


def test_causal_lm_end_to_end(tiny_gpt2: Path, lm_text: Path, store_dir: Path) -> None:
    cfg = _config(
        f"model.name={tiny_gpt2}",
        "model.task=causal-lm",
        f"data.train_file={lm_text}",
        "data.max_length=16",
        "data.validation_split=0.2",
        "data.test_split=0.2",
        "train.max_steps=12",
        "train.eval_every=4",
        "train.log_every=4",
        "train.learning_rate=3e-3",
        "train.batch_size=4",
        "train.scheduler=cosine",
        f"monitor.store={store_dir}",
    )
    outcome = recipe.train(cfg, console=_quiet())
    reader = Store(store_dir, create_if_missing=False).reader()
    info = reader.run(outcome.run_id)
    keys = {k["key"] for k in reader.keys(info.id)}
    assert {"eval/loss", "eval/perplexity", "test/loss", "test/perplexity"} <= keys
    assert not any(k.endswith("accuracy") for k in keys)
    ev = reader.series(info.id, "eval/loss")
    ppl = reader.series(info.id, "eval/perplexity")
    assert ppl.values.tolist() == pytest.approx([math.exp(v) for v in ev.values])
    assert ev.values[-1] < ev.values[0]
    assert info.summary["best"]["metric"] == "eval/loss"
    assert outcome.test["test/perplexity"] == pytest.approx(math.exp(outcome.test["test/loss"]))
    assert len(reader.series(info.id, "test/loss")) == 1  # logged once


def test_lora_exponential_schedule(tiny_bert: Path, topic_csv: Path, store_dir: Path) -> None:
    cfg = _classify(
        tiny_bert,
        topic_csv,
        store_dir,
        "model.lora.r=2",
        "train.max_steps=10",
        "train.scheduler=exponential",
        "train.final_lr_ratio=0.1",
        "train.log_every=1",
    )
    outcome = recipe.train(cfg, console=_quiet())
    reader = Store(store_dir, create_if_missing=False).reader()
    info = reader.run(outcome.run_id)
    assert info.config["model"]["trainable_params"] < info.config["model"]["params"] / 5
    assert (Path(outcome.checkpoints["best"]) / "adapter_model.safetensors").is_file()
    lr = reader.series(info.id, "train/lr").values
    # exponential: the same ratio between consecutive steps, 3e-3 down to 3e-4 at the end
    assert lr[0] == pytest.approx(3e-3)
    ratios = lr[1:] / lr[:-1]
    assert np.allclose(ratios, 0.1 ** (1 / 10))


def test_without_validation_the_last_weights_are_the_best(
    tiny_bert: Path, topic_csv: Path, store_dir: Path
) -> None:
    cfg = _classify(tiny_bert, topic_csv, store_dir, "data.validation_split=0", "train.max_steps=8")
    console = _quiet()
    outcome = recipe.train(cfg, console=console)
    info = Store(store_dir).reader().run(outcome.run_id)
    assert info.summary["best"] == {"step": 8, "metric": None, "value": None}
    assert "test/accuracy" in info.summary
    assert not any(k["key"].startswith("eval/") for k in Store(store_dir).reader().keys(info.id))
    print_outcome(console, outcome)  # the summary table copes with "no best"
    assert "no validation: the last weights" in console.file.getvalue()  # type: ignore[attr-defined]


class _Crash(RuntimeError):
    pass


def test_crash_marks_the_run_failed_and_resume_continues_it(
    tiny_bert: Path, topic_csv: Path, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _classify(
        tiny_bert,
        topic_csv,
        store_dir,
        "train.max_steps=20",
        "train.eval_every=5",
        "train.log_every=1",
    )

    class CrashAt13(recipe.ProgressDisplay):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 13:
                raise _Crash("power cut")

    monkeypatch.setattr(recipe, "ProgressDisplay", CrashAt13)
    with pytest.raises(_Crash):
        recipe.train(cfg, console=_quiet())
    reader = Store(store_dir, create_if_missing=False).reader()
    (crashed,) = reader.runs()
    assert crashed.status == "failed" and crashed.last_step == 12  # step 13 never logged

    monkeypatch.undo()
    outcome = recipe.train(cfg, resume=crashed.name, console=_quiet())
    assert outcome.run_id == crashed.id
    info = reader.run(crashed.id)
    assert info.status == "finished" and len(reader.runs()) == 1
    loss = reader.series(info.id, "train/loss")
    # Resumed from checkpoint-10: steps 11-12 were logged twice, in two segments...
    assert loss.steps.tolist().count(11) == 2
    # ...but the curve a reader draws has each step once.
    assert _effective(loss) == list(range(1, 21))
    assert info.summary["test/accuracy"] == outcome.test["test/accuracy"]
    (note,) = reader.events(info.id, types=("note",))
    assert (note.kind, note.step, note.message) == ("resume", 10, "resumed from checkpoint-10")


def test_bad_input_leaves_no_run(
    tiny_bert: Path, topic_csv: Path, store_dir: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "out.txt"
    a_file.write_text("x")
    for extra, message in [
        ("data.max_length=100", "above the limit"),
        (f"train.output_dir={a_file}", "is a file"),
        ("data.label_column=topic", "no column 'topic'"),
        ("train.precision=fp16", "needs a CUDA GPU"),
    ]:
        if extra == "train.precision=fp16" and torch.cuda.is_available():
            continue
        with pytest.raises(ConfigError, match=message):
            recipe.train(_classify(tiny_bert, topic_csv, store_dir, extra), console=_quiet())
    assert Store(store_dir).reader().runs() == []


def test_resume_needs_a_checkpoint(tiny_bert: Path, topic_csv: Path, store_dir: Path) -> None:
    import tunescope

    with tunescope.init("topics", name="empty", store=store_dir) as run:
        run.log({"loss": 1.0}, step=1)
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        recipe.train(_classify(tiny_bert, topic_csv, store_dir), resume="empty", console=_quiet())
    assert Store(store_dir).reader().run("empty").status == "finished"
