"""`tunescope.TrainerCallback` in a user's own `transformers.Trainer` (tiny random models)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tunescope
from tinymodels import bert_config
from tunescope.integrations.transformers import map_logs
from tunescope.store import Store


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    # Tiny models gain nothing from intra-op threads; on a busy machine they only spin.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the mapping (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logs", "metrics", "summary"),
    [
        (
            {"loss": 0.5, "grad_norm": 1.5, "learning_rate": 2e-5, "epoch": 0.25},
            {"train/loss": 0.5, "train/grad_norm": 1.5, "train/lr": 2e-5, "train/epoch": 0.25},
            {},
        ),
        (
            {
                "eval_loss": 0.4,
                "eval_f1": 0.8,
                "eval_runtime": 1.5,
                "eval_samples_per_second": 90.0,
                "epoch": 1.0,
            },
            {
                "eval/loss": 0.4,
                "eval/f1": 0.8,
                "sys/eval_runtime": 1.5,
                "sys/eval_samples_per_second": 90.0,
            },
            {},
        ),
        (
            {"test_loss": 0.3, "test_accuracy": 0.9, "test_steps_per_second": 3.0},
            {"test/loss": 0.3, "test/accuracy": 0.9, "sys/test_steps_per_second": 3.0},
            {},
        ),
        (  # the end-of-training summary is not a point on the curves
            {
                "train_runtime": 10.0,
                "train_samples_per_second": 32.0,
                "train_steps_per_second": 2.0,
                "total_flos": 1e9,
                "train_loss": 0.7,
                "epoch": 3.0,
            },
            {},
            {
                "train/runtime": 10.0,
                "train/samples_per_second": 32.0,
                "train/steps_per_second": 2.0,
                "train/total_flos": 1e9,
                "train/mean_loss": 0.7,
            },
        ),
        ({"eval_loss": 0.5, "eval_note": "text", "eval_flag": True}, {"eval/loss": 0.5}, {}),
        ({"eval_f1": np.float32(0.5), "eval_n": np.int64(3)}, {"eval/f1": 0.5, "eval/n": 3.0}, {}),
    ],
)
def test_map_logs(
    logs: dict[str, Any], metrics: dict[str, float], summary: dict[str, float]
) -> None:
    assert map_logs(logs) == (metrics, summary)


def test_map_logs_adds_perplexity_for_causal_lms() -> None:
    metrics, _ = map_logs({"eval_loss": 2.0, "loss": 2.5}, causal_lm=True)
    assert metrics["eval/perplexity"] == pytest.approx(math.exp(2.0))
    assert "train/perplexity" not in metrics
    assert map_logs({"eval_loss": 1e6}, causal_lm=True)[0]["eval/perplexity"] == math.inf


# -- a user's own Trainer -----------------------------------------------------------------------


def _dataset(n: int = 48, seed: int = 0) -> Any:
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 64, (n, 12), generator=g)
    labels = (ids[:, 0] % 2).tolist()  # the first token's parity: learnable
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels})


def _bert() -> Any:
    from transformers import BertForSequenceClassification, set_seed

    set_seed(0)
    return BertForSequenceClassification(bert_config(max_position_embeddings=32, num_labels=2))


def _trainer(tmp_path: Path, callbacks: list[Any], model: Any = None, **args: Any) -> Any:
    from transformers import Trainer, TrainingArguments

    defaults: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 8,
        "max_steps": 12,
        "learning_rate": 1e-3,
        "logging_steps": 2,
        "eval_strategy": "steps",
        "eval_steps": 6,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
    }
    return Trainer(
        model=model if model is not None else _bert(),
        args=TrainingArguments(**{**defaults, **args}),
        train_dataset=_dataset(),
        eval_dataset=_dataset(16, seed=1),
        callbacks=callbacks,
    )


@pytest.mark.slow
def test_one_line_in_your_own_trainer(tmp_path: Path, store_dir: Path) -> None:
    trainer = _trainer(tmp_path, [tunescope.TrainerCallback(project="mine")])
    trainer.train()
    reader = Store(store_dir, create_if_missing=False).reader()
    (info,) = reader.runs()
    assert (info.project, info.status) == ("mine", "finished")
    assert info.config["train"]["max_steps"] == 12
    assert info.config["train"]["warmup_steps"] == 0
    assert info.config["model"]["num_labels"] == info.config["data"]["num_classes"] == 2
    assert info.config["model"]["task"] == "classification"
    assert reader.series(info.id, "train/loss").steps.tolist() == [2, 4, 6, 8, 10, 12]
    assert reader.series(info.id, "eval/loss").steps.tolist() == [6, 12]
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert reader.series(info.id, "train/loss").values.tolist() == pytest.approx(logged)
    keys = {k["key"] for k in reader.keys(info.id)}
    # Added by tunescope: lr of every param group (Trainer makes two: decay / no decay),
    # throughput, and the update/weight ratio the monitor uses to judge the learning rate.
    assert {"train/lr", "train/lr/group_1", "train/throughput", "train/update_ratio"} <= keys
    assert "train/mean_loss" not in keys and "train/runtime" not in keys
    assert info.summary["train/mean_loss"] == pytest.approx(
        trainer.state.log_history[-1]["train_loss"]
    )
    throughput = reader.series(info.id, "train/throughput").values
    assert (throughput > 0).all()


@pytest.mark.slow
def test_monitor_can_stop_training(tmp_path: Path, store_dir: Path) -> None:
    run = tunescope.init("mine", name="stopper")
    run.control.request_stop("overfitting since step 1")
    trainer = _trainer(
        tmp_path, [tunescope.TrainerCallback(run=run)], save_strategy="steps", save_steps=100
    )
    trainer.train()
    assert trainer.state.global_step == 2  # the first log step
    assert (tmp_path / "out" / "checkpoint-2").is_dir()  # the state it stopped in is kept
    # The run belongs to its owner: the callback left it open.
    run.log({"test/accuracy": 0.5}, step=2)
    run.finish()
    assert Store(store_dir).reader().run("stopper").status == "finished"


@pytest.mark.slow
def test_monitoring_does_not_change_training(tmp_path: Path, store_dir: Path) -> None:
    plain = _trainer(tmp_path / "a", [])
    plain.train()
    watched = _trainer(tmp_path / "b", [tunescope.TrainerCallback(project="mine")])
    watched.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (plain, watched)]
    assert losses[0] == losses[1]  # bit for bit
    for p, q in zip(plain.model.parameters(), watched.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.slow
def test_evaluate_after_train_warns_instead_of_failing(tmp_path: Path, store_dir: Path) -> None:
    trainer = _trainer(tmp_path, [tunescope.TrainerCallback(project="mine")])
    trainer.train()
    with pytest.warns(RuntimeWarning, match="ended with training"):
        trainer.evaluate()


@pytest.mark.slow
def test_causal_lm_gets_perplexity(tmp_path: Path, store_dir: Path) -> None:
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel, set_seed

    set_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=16)
    )
    ids = torch.randint(0, 64, (32, 16), generator=torch.Generator().manual_seed(0)).tolist()
    blocks = Dataset.from_dict({"input_ids": ids, "labels": ids})
    from transformers import Trainer, TrainingArguments

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path / "out"),
            max_steps=4,
            logging_steps=2,
            eval_strategy="steps",
            eval_steps=2,
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            save_strategy="no",
            per_device_train_batch_size=8,
        ),
        train_dataset=blocks,
        eval_dataset=blocks,
        callbacks=[tunescope.TrainerCallback(project="lm")],
    )
    trainer.train()
    reader = Store(store_dir, create_if_missing=False).reader()
    (info,) = reader.runs()
    loss = reader.series(info.id, "eval/loss").values
    ppl = reader.series(info.id, "eval/perplexity").values
    assert ppl.tolist() == pytest.approx([math.exp(v) for v in loss])
    assert info.config["model"]["task"] == "causal-lm"
