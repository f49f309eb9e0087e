"""The Lightning adapter, with a real `lightning.Trainer` on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import tunescope
from tunescope.integrations.lightning import LightningCallback, split_metrics
from tunescope.store import Store


class TinyClassifier(pl.LightningModule):
    def __init__(self, lr: float = 0.05, explode_at: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        if (
            self.hparams["explode_at"] is not None
            and self.global_step >= self.hparams["explode_at"]
        ):
            loss = loss * math.nan
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


def loaders() -> tuple[DataLoader, DataLoader]:  # type: ignore[type-arg]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=8), DataLoader(ds, batch_size=32)


def trainer(callback: LightningCallback, steps: int) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        callbacks=[callback],
        log_every_n_steps=2,
        val_check_interval=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=1,
    )


def test_records_train_and_eval_metrics(store_dir: Path) -> None:
    train, val = loaders()
    cb = LightningCallback(project="lit", name="tiny")
    trainer(cb, 24).fit(TinyClassifier(), train, val)
    reader = Store(store_dir).reader()
    info = reader.run("tiny")
    assert info.status == "finished"
    assert info.config["model"]["lr"] == 0.05
    assert info.config["train"]["max_steps"] == 24
    loss = reader.series(info.id, "train/loss")
    assert loss.steps.tolist() == list(range(2, 25, 2))  # every log_every_n_steps, not step 0
    assert all(math.isfinite(v) for v in loss.values.tolist())
    assert reader.series(info.id, "train/lr").values.tolist() == [0.05] * len(loss)
    acc = reader.series(info.id, "eval/accuracy")
    assert acc.steps.tolist() == [6, 12, 18, 24]  # no sanity-check point
    assert reader.series(info.id, "eval/loss").steps.tolist() == [6, 12, 18, 24]


def test_divergence_stops_training_in_act_mode(store_dir: Path) -> None:
    train, val = loaders()
    cb = LightningCallback(project="lit", name="boom", mode="act")
    t = trainer(cb, 60)
    t.fit(TinyClassifier(explode_at=10), train, val)
    assert t.global_step < 60  # stopped by tunescope, not by the budget
    reader = Store(store_dir).reader()
    info = reader.run("boom")
    events = reader.events(info.id)
    kinds = [(e.type, e.kind) for e in events]
    assert ("finding", "divergence") in kinds
    acted = {e.kind: e for e in events if e.type == "intervention"}
    assert set(acted) == {"stop", "scale_lr"}
    assert "cannot rollback" in acted["stop"].message
    assert acted["scale_lr"].data["before"]["lr"] == [0.05]
    assert acted["scale_lr"].data["after"]["lr"] == [0.025]


def test_run_given_is_left_open(store_dir: Path) -> None:
    train, val = loaders()
    run = tunescope.init("lit", name="mine")
    trainer(LightningCallback(run=run), 6).fit(TinyClassifier(), train, val)
    run.log({"test/accuracy": 0.5})
    run.finish()
    assert Store(store_dir).reader().run("mine").last["test/accuracy"] == 0.5


def test_split_metrics() -> None:
    got = split_metrics(
        {
            "train_loss_step": 1.0,
            "train_loss_epoch": 2.0,
            "val_loss": 3.0,
            "val_acc": 0.5,
            "lr-SGD": 0.1,
        },
        "eval",
    )
    assert got == {"eval/loss": 3.0, "eval/accuracy": 0.5}
