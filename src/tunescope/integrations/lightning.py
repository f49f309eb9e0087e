"""`LightningCallback`: record a Lightning run in tunescope, and act on what the monitor finds.

>>> trainer = lightning.Trainer(callbacks=[tunescope.LightningCallback(project="bbc")])  # doctest: +SKIP

What a `LightningModule` logs with `self.log(...)` arrives through `trainer.callback_metrics`;
names are made canonical (`train_loss` -> `train/loss`, `val_loss` -> `eval/loss`, `val_acc` ->
`eval/accuracy`). Training values are logged every `log_every` optimizer steps (default: the
Trainer's `log_every_n_steps`), validation values after each validation run (not the sanity
check), all at `trainer.global_step`. Values stay tensors here: the store's writer thread reads
them, so the training loop never waits for the device.

In mode `act` the callback carries out every intervention the policy decides — lower the
learning rate, roll back to a snapshot, restore the best evaluated weights, stop — through the
same `OffsetActuation` as `TrainerCallback` (actuate/offset.py): snapshots at the start and
every `snapshot_every` optimizer steps (default: the validation cadence), best weights at each
validation, a rollback loads weights, optimizer, scheduler and RNG in place and later points are
logged at `global_step` less the steps abandoned (Lightning's own counter, checkpoint names and
budget are left alone). With several optimizers only the LR scale and stop are carried out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ..actuate.config import ActSettings
from ..actuate.lrscale import learning_rates, scale_lr, scale_scheduler
from ..names import canonical
from ..policy import Mode
from ..run import Run


def _carry_out(trainer: pl.Trainer, run: Run, item: dict[str, Any]) -> None:
    """Apply one decided intervention to a Trainer with several optimizers; record the event.

    The learning rate is scaled in every param group and in the schedulers' base rates (so a
    scheduler step does not undo it). Snapshots of several optimizers are not kept, so rolling
    back or restoring weights stops the run instead, and says so in the event.
    """
    action, step = item["action"], trainer.global_step
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    message = item["reason"]
    if action == "scale_lr":
        factor = float(item["params"]["factor"])
        before["lr"] = [lr for opt in trainer.optimizers for lr in learning_rates(opt)]
        for opt in trainer.optimizers:
            scale_lr(opt, None, factor)
        for cfg in trainer.lr_scheduler_configs:  # so a scheduler step does not undo it
            scale_scheduler(cfg.scheduler, factor)
        after["lr"] = [lr for opt in trainer.optimizers for lr in learning_rates(opt)]
    elif action in ("rollback", "restore_best"):
        run.control.request_stop(item["reason"])
        action = "stop"
        message = (
            f"{item['reason']} — with {len(trainer.optimizers)} optimizers the Lightning "
            f"adapter cannot {item['action']}, so it stops training instead"
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
    """Record a `lightning.Trainer` run in tunescope; in mode `act`, act on the findings.

    Alone it starts a run when fitting starts (config: the module's hyperparameters and the
    Trainer's budget) and finishes it when fitting ends; given `run=`, it logs into that run
    and leaves finishing to its owner. `act`: snapshot settings of mode act; `best_metric`: the
    evaluation metric whose best weights a restore picks (default `eval/loss`); `console`:
    where interventions are printed ("stderr", a rich Console, or None).
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
        act: ActSettings | None = None,
        best_metric: str = "eval/loss",
        console: Any = "stderr",
    ) -> None:
        self.project, self.name, self.store, self.run = project, name, store, run
        self.mode, self.log_every, self.config = mode, log_every, config
        self.act, self.best_metric, self.console = act, canonical(best_metric), console
        self._owns = run is None
        self._act: Any = None  # OffsetActuation of the current fit, in mode act

    def step(self, trainer: pl.Trainer) -> int:
        """The step to log at: `global_step`, less the steps rollbacks abandoned."""
        act = self._act
        return trainer.global_step - act.offset if act is not None else trainer.global_step

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

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The optimizers exist from here on; snapshot 0 is the state before training.
        run = self.run
        self._act = None
        if run is None or run.mode is not Mode.ACT or len(trainer.optimizers) != 1:
            return
        from ..actuate.offset import OffsetActuation

        console = self.console
        if console == "stderr":
            from rich.console import Console

            console = Console(stderr=True)
        configs = trainer.lr_scheduler_configs
        self._act = OffsetActuation(
            run,
            pl_module,
            trainer.optimizers[0],
            configs[0].scheduler if len(configs) == 1 else None,
            start=trainer.global_step,
            every=_validation_every(trainer),
            best_metric=self.best_metric,
            settings=self.act,
            console=console,
        )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        run, counter = self.run, trainer.global_step
        if self._act is not None:
            self._act.on_step_end(counter)  # snapshots on schedule
        if run is None or counter % (self.log_every or 1):
            return
        metrics = split_metrics(trainer.callback_metrics, "train")
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if "train/loss" not in metrics and loss is not None:
            metrics["train/loss"] = loss.detach()
        for i, opt in enumerate(trainer.optimizers):
            for j, group in enumerate(opt.param_groups):
                suffix = "" if i == j == 0 else f"/group_{i}_{j}" if i else f"/group_{j}"
                metrics["train/lr" + suffix] = float(group["lr"])
        run.log(metrics, step=self.step(trainer))
        self._obey(trainer, run, metrics)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self.run
        if run is None or trainer.sanity_checking:
            return
        metrics = split_metrics(trainer.callback_metrics, "eval")
        metrics.update(split_metrics(trainer.callback_metrics, "retain"))
        if metrics:
            run.log(metrics, step=self.step(trainer))
        self._obey(trainer, run, metrics)

    def _obey(self, trainer: pl.Trainer, run: Run, metrics: Mapping[str, Any]) -> None:
        # Every rank reaches this at the same step, so the broadcast lines up.
        if self._act is not None:  # flush, synchronize, apply (rollback moves `step` back)
            self._act.on_log(trainer.global_step, metrics)
        else:
            run.flush()
            run.control.synchronize()
            for item in run.control.take_pending():
                _carry_out(trainer, run, item)
        if run.control.should_stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._act is not None:
            self._act.on_train_end()  # a deferred restore-best: training ends on those weights

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._owns and self.run is not None:
            self.run.finish()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self._act is not None:
            self._act.actuator.close()  # snapshot files served this run only
            self._act = None
        if self._owns and self.run is not None:
            self.run.finish("failed")


def _validation_every(trainer: pl.Trainer) -> int:
    """Optimizer steps between validations when that is a step count, else a tenth of the
    budget (a snapshot per validation is what a rollback needs)."""
    interval = trainer.val_check_interval
    if isinstance(interval, int) and interval > 0:
        return max(interval // max(int(trainer.accumulate_grad_batches), 1), 1)  # batches
    budget = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else 0
    return max(budget // 10, 1) if budget else 50
