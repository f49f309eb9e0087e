"""Act mode inside a real `transformers.Trainer` (tiny random BERT): rollback after a forced
divergence, stop + restore best on overfitting, and no change at all to a healthy run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tunescope
from tinymodels import bert_config
from tunescope.store import Store

pytestmark = pytest.mark.slow


def _dataset(n: int, seed: int, random_labels: bool = False) -> Any:
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 64, (n, 12), generator=g)
    if random_labels:  # nothing to learn: the model can only memorise (and so overfit)
        labels = torch.randint(0, 2, (n,), generator=g).tolist()
    else:
        labels = (ids[:, 0] % 2).tolist()
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels})


def _trainer(tmp_path: Path, callbacks: list[Any], **args: Any) -> Any:
    from transformers import (
        BertForSequenceClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(0)
    model = BertForSequenceClassification(bert_config(max_position_embeddings=32, num_labels=2))
    random_labels = args.pop("random_labels", False)
    defaults: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 8,
        "max_steps": 60,
        "learning_rate": 1e-3,
        "logging_steps": 2,
        "eval_strategy": "steps",
        "eval_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
    }
    return Trainer(
        model=model,
        args=TrainingArguments(**{**defaults, **args}),
        train_dataset=_dataset(48 if not random_labels else 24, 0, random_labels),
        eval_dataset=_dataset(32, 1, random_labels),
        callbacks=callbacks,
    )


class Sabotage:
    """A bad learning rate that appears at one step and stays (until a rollback undoes it)."""

    def __new__(cls, at: int, factor: float) -> Any:
        from transformers import TrainerCallback

        class _Sabotage(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if state.global_step == at:
                    sched = kw["lr_scheduler"]
                    sched.base_lrs = [b * factor for b in sched.base_lrs]

        return _Sabotage()


def test_forced_divergence_rolls_back_and_starts_a_new_segment(
    tmp_path: Path, store_dir: Path
) -> None:
    run = tunescope.init("act", name="diverge", mode="act")
    callback = tunescope.TrainerCallback(run=run)
    trainer = _trainer(tmp_path, [callback, Sabotage(at=30, factor=1e20)])
    trainer.train()
    run.finish()
    reader = Store().reader()
    acts = reader.events(run.id, types=["intervention"])
    assert [e.kind for e in acts][:2] == ["rollback", "scale_lr"]
    rollback = acts[0]
    assert rollback.data["after"]["step"] == 30  # the snapshot before the blow-up
    assert rollback.data["finding_kind"] == "divergence"
    loss = reader.series(run.id, "train/loss")
    assert set(loss.segs.tolist()) == {0, 1}
    # The abandoned points are kept; the resumed segment starts right after the snapshot.
    assert loss.steps[loss.segs == 0].max() == rollback.step
    assert loss.steps[loss.segs == 1].min() == 32
    # Trainer's own counter and budget are untouched: it ran its 60 optimizer steps.
    assert trainer.state.global_step == 60
    assert loss.steps[-1] == 60 - (rollback.step - 30)
    assert np.isfinite(loss.values[loss.segs == 1]).all()
    assert loss.values[-1] < loss.values[0]  # it trains again
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    # Trainer logged every point of the resumed segment (its loss average is not confused).
    history = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert loss.values.tolist() == pytest.approx(history)


def test_overfitting_stops_and_ends_on_the_best_weights(tmp_path: Path, store_dir: Path) -> None:
    run = tunescope.init("act", name="overfit", mode="act")
    callback = tunescope.TrainerCallback(run=run)
    trainer = _trainer(
        tmp_path,
        [callback],
        random_labels=True,
        max_steps=300,
        learning_rate=3e-3,
        eval_steps=6,
        metric_for_best_model="eval_loss",
    )
    trainer.train()
    evaluated = trainer.evaluate()["eval_loss"]  # the weights training ended with
    run.finish()
    reader = Store().reader()
    kinds = [e.kind for e in reader.events(run.id, types=["intervention"])]
    assert kinds[-2:] == ["restore_best", "stop"] or kinds[-2:] == ["stop", "restore_best"]
    assert trainer.state.global_step < 300
    evals = reader.series(run.id, "eval/loss")
    evals_in_training = evals.values[:-1]  # the last one is the evaluate() above
    best = float(evals_in_training.min())
    # Trainer does not load a best model here (load_best_model_at_end is off): the weights it
    # ends with are the ones tunescope restored.
    assert evaluated == pytest.approx(best, rel=1e-5)
    restored = next(
        e for e in reader.events(run.id, types=["intervention"]) if e.kind == "restore_best"
    )
    assert restored.data["after"]["step"] == int(evals.steps[evals_in_training.argmin()])


def test_act_mode_does_not_change_a_healthy_run(tmp_path: Path, store_dir: Path) -> None:
    plain = _trainer(tmp_path / "a", [], max_steps=12, eval_steps=6)
    plain.train()
    run = tunescope.init("act", name="healthy", mode="act")
    acted = _trainer(
        tmp_path / "b", [tunescope.TrainerCallback(run=run)], max_steps=12, eval_steps=6
    )
    acted.train()
    run.finish()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (plain, acted)]
    assert losses[0] == losses[1]  # snapshots read the RNG, never draw from it
    for p, q in zip(plain.model.parameters(), acted.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert Store().reader().events(run.id, types=["intervention"]) == []
