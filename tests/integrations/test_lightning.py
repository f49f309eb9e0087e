"""The Lightning adapter, with a real `lightning.Trainer` on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
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


class Sabotage(pl.Callback):
    """A learning rate x1e20 that appears after one optimizer step and stays (the optimizer's
    state holds it, so only a rollback, which reloads that state, undoes it)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.at:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] *= 1e20


def test_divergence_rolls_back_and_training_resumes_in_act_mode(store_dir: Path) -> None:
    train, val = loaders()
    cb = LightningCallback(project="lit", name="boom", mode="act", console=None)
    t = trainer(cb, 48)
    t.callbacks.append(Sabotage(at=14))
    model = TinyClassifier()
    t.fit(model, train, val)
    reader = Store(store_dir).reader()
    info = reader.run("boom")
    events = reader.events(info.id)
    assert ("finding", "divergence") in [(e.type, e.kind) for e in events]
    acts = [e for e in events if e.type == "intervention"]
    assert [e.kind for e in acts][:2] == ["rollback", "scale_lr"]
    rollback = acts[0]
    assert rollback.data["after"]["step"] == 12  # the snapshot (a validation) before step 14
    assert acts[1].data["after"]["lr"] == [0.025]  # the snapshot's lr, halved
    loss = reader.series(info.id, "train/loss")
    assert set(loss.segs.tolist()) == {0, 1}
    assert loss.steps[loss.segs == 0].max() == rollback.step  # abandoned points are kept
    assert loss.steps[loss.segs == 1].min() == 14  # logged again right after the snapshot
    assert np.isfinite(loss.values[loss.segs == 1]).all()
    # Lightning's own counter and budget are untouched: it ran its 48 optimizer steps.
    assert t.global_step == 48
    assert loss.steps[-1] == 48 - (rollback.step - 12)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_run_that_keeps_diverging_is_stopped_after_the_rollbacks_allowed(
    store_dir: Path,
) -> None:
    train, val = loaders()
    cb = LightningCallback(project="lit", name="nan", mode="act", console=None)
    t = trainer(cb, 60)
    model = TinyClassifier(explode_at=10)  # NaN loss from step 10 on, whatever is done
    t.fit(model, train, val)
    assert t.global_step < 60  # stopped by tunescope, not by the budget
    reader = Store(store_dir).reader()
    acts = [e.kind for e in reader.events(reader.run("nan").id, types=["intervention"])]
    assert acts.count("rollback") == 2  # the policy's default max_rollbacks
    assert "stop" in acts and acts.index("stop") > max(
        i for i, a in enumerate(acts) if a == "rollback"
    )
    assert all(torch.isfinite(p).all() for p in model.parameters())  # not the NaN weights


def _val_loss(model: TinyClassifier, val: DataLoader) -> float:  # type: ignore[type-arg]
    x, y = next(iter(val))
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model.net(x), y))


def test_overfitting_stops_and_ends_on_the_best_weights_in_act_mode(store_dir: Path) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 8, generator=g)
    train = DataLoader(TensorDataset(x, torch.randint(0, 3, (24,), generator=g)), batch_size=4)
    xv = torch.randn(32, 8, generator=g)
    val = DataLoader(TensorDataset(xv, torch.randint(0, 3, (32,), generator=g)), batch_size=32)
    cb = LightningCallback(project="lit", name="overfit", mode="act", console=None)
    t = trainer(cb, 600)
    model = TinyClassifier(lr=0.5)  # random labels: it can only memorise them
    t.fit(model, train, val)
    assert t.global_step < 600
    reader = Store(store_dir).reader()
    info = reader.run("overfit")
    acts = reader.events(info.id, types=["intervention"])
    assert {"restore_best", "stop"} <= {e.kind for e in acts}
    evals = reader.series(info.id, "eval/loss")
    restored = next(e for e in acts if e.kind == "restore_best")
    assert restored.data["after"]["step"] == int(evals.steps[evals.values.argmin()])
    # the weights training ended with are the best evaluated ones, not the last
    assert _val_loss(model, val) == pytest.approx(float(evals.values.min()), rel=1e-5)
    assert _val_loss(model, val) < float(evals.values[-1])


def test_act_mode_does_not_change_a_healthy_run(store_dir: Path) -> None:
    train, val = loaders()
    torch.manual_seed(0)
    plain = TinyClassifier()
    trainer(LightningCallback(project="lit", name="plain", mode="observe"), 24).fit(
        plain, train, val
    )
    torch.manual_seed(0)
    acted = TinyClassifier()
    trainer(LightningCallback(project="lit", name="acted", mode="act"), 24).fit(acted, train, val)
    reader = Store(store_dir).reader()
    losses = [reader.series(reader.run(n).id, "train/loss").values for n in ("plain", "acted")]
    assert losses[0].tolist() == losses[1].tolist()
    for p, q in zip(plain.parameters(), acted.parameters(), strict=True):
        assert torch.equal(p, q)
    assert reader.events(reader.run("acted").id, types=["intervention"]) == []


class TwoOptimizers(pl.LightningModule):
    """Manual optimization with one optimizer per layer (as a GAN has); NaN loss from step 10."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 3)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.b(torch.relu(self.a(x))), y)
        if self.global_step >= 10:
            loss = loss * math.nan
        opt_a, opt_b = self.optimizers()  # type: ignore[misc]
        opt_a.zero_grad()
        opt_b.zero_grad()
        self.manual_backward(loss)
        opt_a.step()
        self.log("train_loss", loss)
        return loss.detach()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.b(torch.relu(self.a(x))), y))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.SGD(self.a.parameters(), lr=0.05),
            torch.optim.SGD(self.b.parameters(), lr=0.1),
        ]


def test_several_optimizers_get_the_lr_cut_and_a_stop_instead_of_a_rollback(
    store_dir: Path,
) -> None:
    train, val = loaders()
    cb = LightningCallback(project="lit", name="two", mode="act", console=None)
    t = trainer(cb, 60)
    t.fit(TwoOptimizers(), train, val)
    assert t.global_step < 60  # stopped by tunescope, not by the budget
    reader = Store(store_dir).reader()
    acted = {e.kind: e for e in reader.events(reader.run("two").id, types=["intervention"])}
    assert set(acted) == {"stop", "scale_lr"}
    assert "with 2 optimizers the Lightning adapter cannot rollback" in acted["stop"].message
    assert acted["scale_lr"].data["before"]["lr"] == [0.05, 0.1]
    assert acted["scale_lr"].data["after"]["lr"] == [0.025, 0.05]


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
