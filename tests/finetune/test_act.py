"""`tunescope train` in mode act (tiny random BERT): a run whose learning rate blows it up is
rolled back, its LR cut, and — once the limits are used up — stopped; every step of that is in
the store and on the terminal."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from tunescope.finetune import recipe
from tunescope.finetune.config import load_config
from tunescope.store import Store

pytestmark = pytest.mark.slow


def test_a_blown_up_run_is_rolled_back_then_stopped(
    tiny_bert: Path, topic_csv: Path, store_dir: Path
) -> None:
    cfg = load_config(
        None,
        [
            f"model.name={tiny_bert}",
            f"data.train_file={topic_csv}",
            "data.max_length=32",
            "train.max_steps=60",
            "train.eval_every=10",
            "train.log_every=2",
            "train.learning_rate=1e4",  # every step throws the weights to infinity
            "train.warmup_ratio=0",
            "train.batch_size=8",
            "monitor.mode=act",
            "monitor.policy.max_rollbacks=1",
            f"monitor.store={store_dir}",
        ],
    )
    out = io.StringIO()
    outcome = recipe.train(cfg, console=Console(file=out, width=200))
    reader = Store(store_dir, create_if_missing=False).reader()
    info = reader.run(outcome.run_id)
    assert info.status == "finished" and info.config["monitor"]["policy"]["max_rollbacks"] == 1
    acts = reader.events(info.id, types=["intervention"])
    kinds = [e.kind for e in acts]
    assert kinds[:2] == ["rollback", "scale_lr"] and kinds[-1] in ("stop", "restore_best")
    assert kinds.count("rollback") == 1  # the limit
    assert "stop" in kinds and outcome.steps < 60
    rollback = acts[0]
    assert rollback.data["after"]["step"] < rollback.step
    loss = reader.series(info.id, "train/loss")
    assert set(loss.segs.tolist()) == {0, 1}  # the abandoned points stay
    # Shown above the progress bar as they happen.
    printed = out.getvalue()
    assert "action at step" in printed and "rollback" in printed
    # The weights training ends with are finite (restored, not the blown-up ones).
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(outcome.checkpoints["best"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert np.isfinite(outcome.test["test/accuracy"])
