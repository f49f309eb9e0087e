"""`LightningCallback`: record a Lightning run in tunescope, and stop when the monitor asks.

>>> trainer = lightning.Trainer(callbacks=[tunescope.LightningCallback(project="bbc")])  # doctest: +SKIP

What a `LightningModule` logs with `self.log(...)` arrives through `trainer.callback_metrics`;
names are made canonical (`train_loss` -> `train/loss`, `val_loss` -> `eval/loss`, `val_acc` ->
`eval/accuracy`). Training values are logged every `log_every` optimizer steps (default: the
Trainer's `log_every_n_steps`), validation values after each validation run (not the sanity
check), all at `trainer.global_step`. Values stay tensors here: the store's writer thread reads
them, so the training loop never waits for the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ..names import canonical
from ..run import Run


def _carry_out(trainer: pl.Trainer, run: Run, item: dict[str, Any]) -> None:
    """Apply one decided intervention to a Lightning Trainer and record it as an event.

    The learning rate is scaled in every param group and in the schedulers' base rates (so a
    scheduler step does not undo it). Rolling back is not supported by this adapter: it stops
    the run instead, and says so in the event.
    """
    action, step = item["action"], trainer.global_step
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    message = item["reason"]
    if action == "scale_lr":
        factor = float(item["params"]["factor"])
        groups = [g for opt in trainer.optimizers for g in opt.param_groups]
        before["lr"] = [float(g["lr"]) for g in groups]
        for g in groups:
            g["lr"] *= factor
        for cfg in trainer.lr_scheduler_configs:
            base = getattr(cfg.scheduler, "base_lrs", None)
            if base is not None:
                cfg.scheduler.base_lrs = [b * factor for b in base]
        after["lr"] = [float(g["lr"]) for g in groups]
    elif action in ("rollback", "restore_best"):
        run.control.request_stop(item["reason"])
        action = "stop"
        message = (
            f"{item['reason']} — the Lightning adapter cannot {item['action']}, so it "
            "stops training instead"
        )
    run.event(
        "intervention",
        action,
        message,
        severity="warning",
        step=step,
        ref=item["finding"],
        data={
            "finding": item["finding"],
            "finding_kind": item["kind"],
            "params": item["params"],
            "before": before,
            "after": after,
        },
    )


def split_metrics(metrics: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The metrics of one namespace (`train` or `eval`), with canonical names.

    Lightning suffixes a metric logged both per step and per epoch with `_step`/`_epoch`; the
    per-step value is the point in time, so `_step` is stripped and `_epoch` dropped.

    >>> split_metrics({"train_loss_step": 1.0, "train_loss_epoch": 2.0, "val_acc": 0.5}, "train")
    {'train/loss': 1.0}
    """
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key.endswith("_epoch"):
            continue
        name = canonical(key.removesuffix("_step"))
        if name.startswith(namespace + "/"):
            out[name] = value
    return out


class LightningCallback(pl.Callback):
    """Record a `lightning.Trainer` run in tunescope; stop when the monitor asks.

    Alone it starts a run when fitting starts (config: the module's hyperparameters and the
    Trainer's budget) and finishes it when fitting ends; given `run=`, it logs into that run
    and leaves finishing to its owner.
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        store: str | Path | None = None,
        run: Run | None = None,
        *,
        mode: str | None = "advise",
        log_every: int | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.project, self.name, self.store, self.run = project, name, store, run
        self.mode, self.log_every, self.config = mode, log_every, config
        self._owns = run is None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.run is None:
            import tunescope

            config = (
                dict(self.config)
                if self.config is not None
                else {
                    "model": {"class": type(pl_module).__name__, **dict(pl_module.hparams)},
                    "train": {
                        "max_steps": trainer.max_steps if trainer.max_steps > 0 else None,
                        "max_epochs": trainer.max_epochs,
                    },
                    "source": "lightning.Trainer",
                }
            )
            self.run = tunescope.init(
                self.project or "lightning",
                name=self.name,
                config=config,
                store=self.store,
                mode=self.mode,
            )
        if self.log_every is None:
            self.log_every = max(int(getattr(trainer, "log_every_n_steps", 50)), 1)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        run, step = self.run, trainer.global_step
        if run is None or step % (self.log_every or 1):
            return
        metrics = split_metrics(trainer.callback_metrics, "train")
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if "train/loss" not in metrics and loss is not None:
            metrics["train/loss"] = loss.detach()
        for i, opt in enumerate(trainer.optimizers):
            for j, group in enumerate(opt.param_groups):
                suffix = "" if i == j == 0 else f"/group_{i}_{j}" if i else f"/group_{j}"
                metrics["train/lr" + suffix] = float(group["lr"])
        run.log(metrics, step=step)
        self._obey(trainer, run)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self.run
        if run is None or trainer.sanity_checking:
            return
        metrics = split_metrics(trainer.callback_metrics, "eval")
        if metrics:
            run.log(metrics, step=trainer.global_step)
        self._obey(trainer, run)

    @staticmethod
    def _obey(trainer: pl.Trainer, run: Run) -> None:
        # Every rank reaches this at the same step, so the broadcast lines up.
        run.flush()
        run.control.synchronize()
        for item in run.control.take_pending():
            _carry_out(trainer, run, item)
        if run.control.should_stop:
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._owns and self.run is not None:
            self.run.finish()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self._owns and self.run is not None:
            self.run.finish("failed")
