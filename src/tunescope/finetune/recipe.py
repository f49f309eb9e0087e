"""The fine-tuning recipe: config -> checked data and model -> `transformers.Trainer` -> test.

Read top to bottom: `prepare` does everything that can fail because of user input (before a run
exists in the store); `train` opens the run, trains with `tunescope.TrainerCallback` plugged
into Trainer, evaluates the best checkpoint on the test split and records `test/*`. If anything
fails after the run is open, the run is marked `failed`, never left `running`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from rich.console import Console

from .. import names
from ..integrations.transformers import TrainerCallback, map_logs
from ..probes.build import build as build_probes
from ..probes.manager import Probes
from ..run import Run
from ..store import Store
from ..text import literal
from . import checkpoints, data, models
from .config import Config, ConfigError, stored_config
from .metrics import classification_metrics, classification_report
from .progress import Outcome, ProgressDisplay


@dataclass
class Prepared:
    """Everything training needs, checked."""

    config: Config
    source: str  # what from_pretrained opened
    tokenizer: Any
    raw: data.Splits  # text and labels
    splits: data.Splits  # tokenized
    model: torch.nn.Module
    params: models.ParamCount
    steps_per_epoch: int
    max_steps: int
    probes: Probes | None = None  # drift/forgetting probes and retain sets (monitor.probes/retain)


def steps_per_epoch(examples: int, cfg: Config) -> int:
    """Optimizer steps in one pass over `examples` (Trainer's own arithmetic, one device)."""
    batches = math.ceil(examples / cfg.train.batch_size)
    accum = cfg.train.gradient_accumulation_steps
    return max(batches // accum + int(batches % accum > 0), 1)


def prepare(cfg: Config, *, out_dir: Path | None = None) -> Prepared:
    """Load and check model and data; raise `ConfigError` on anything a user must fix."""
    if out_dir is not None:
        checkpoints.check_output_dir(out_dir)
    device_precision(cfg.train.precision)  # fp16 without a GPU fails here, not mid-run
    source = models.resolve(cfg.model.name)
    tokenizer = models.load_tokenizer(source)
    model_config = models.load_config(source)
    limit = models.length_limit(model_config, tokenizer)
    models.check_max_length(cfg.data.max_length, limit, cfg.model.name)
    raw = data.load_splits(cfg.data, task=cfg.model.task, seed=cfg.train.seed)
    splits = data.tokenize(raw, tokenizer, cfg.data, cfg.model.task)
    model = models.build(
        cfg.model, source, model_config, tokenizer, raw.class_names, cfg.train.seed
    )
    per_epoch = steps_per_epoch(len(splits.train), cfg)
    max_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * per_epoch)
    p = Prepared(
        cfg, source, tokenizer, raw, splits, model, models.count_params(model), per_epoch, max_steps
    )
    p.probes = build_probes(cfg, p)  # reads the retain sets: fails here on bad ones
    return p


def device_precision(precision: str) -> dict[str, bool]:
    """TrainingArguments flags for `train.precision` on this machine."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; use auto, fp32 or bf16")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda}


class _Trainer(transformers.Trainer):
    """Trainer with one more learning-rate schedule: exponential decay after warmup."""

    final_lr_ratio: float | None = None

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.final_lr_ratio is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        warmup = self.args.get_warmup_steps(num_training_steps)
        ratio = self.final_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return float(ratio ** ((step - warmup) / max(1, num_training_steps - warmup)))

        target = optimizer if optimizer is not None else self.optimizer
        assert target is not None  # Trainer creates the optimizer before the scheduler
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(target, factor)
        self._created_lr_scheduler = True
        return self.lr_scheduler


def training_arguments(p: Prepared, out_dir: Path) -> transformers.TrainingArguments:
    """TrainingArguments from the config: evaluation, checkpointing and logging cadence."""
    t, lm = p.config.train, p.config.model.task == "causal-lm"
    has_eval = p.splits.validation is not None
    every = t.eval_every or p.steps_per_epoch
    schedule = {"exponential": "constant", "constant": "constant_with_warmup"}.get(t.scheduler)
    metric = p.config.best_metric
    device = device_precision(t.precision)
    return transformers.TrainingArguments(
        output_dir=str(out_dir / checkpoints.TRAINER_DIR),
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or 2 * t.batch_size,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a share of all steps
        lr_scheduler_type=schedule or t.scheduler,
        max_grad_norm=t.max_grad_norm,
        label_smoothing_factor=t.label_smoothing,
        seed=t.seed,
        data_seed=t.seed,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=every,
        # Step-based saving also saves the final step, so `last/` is always the end state.
        save_strategy="steps",
        save_steps=every,
        save_total_limit=2,  # Trainer keeps the best one too
        load_best_model_at_end=has_eval,
        metric_for_best_model=f"eval_{metric}" if has_eval else None,
        greater_is_better=names.higher_is_better(metric) if has_eval else None,
        logging_strategy="steps",
        logging_steps=t.log_every,
        logging_first_step=True,
        prediction_loss_only=lm,  # LM logits over the vocabulary are large and unused
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=not device["use_cpu"],
        bf16=device["bf16"],
        fp16=device["fp16"],
        use_cpu=device["use_cpu"],
    )


def build_trainer(
    p: Prepared, out_dir: Path, callbacks: list[transformers.TrainerCallback]
) -> transformers.Trainer:
    """The Trainer, with tunescope's callbacks and none of Trainer's printing."""
    lm = p.config.model.task == "causal-lm"
    collator = (
        transformers.default_data_collator
        if lm
        else transformers.DataCollatorWithPadding(p.tokenizer)
    )
    trainer = _Trainer(
        model=p.model,
        args=training_arguments(p, out_dir),
        data_collator=collator,
        train_dataset=p.splits.train,
        eval_dataset=p.splits.validation,
        processing_class=p.tokenizer,
        compute_metrics=None if lm else classification_metrics,
        callbacks=callbacks,
    )
    if p.config.train.scheduler == "exponential":
        trainer.final_lr_ratio = p.config.train.final_lr_ratio
    trainer.remove_callback(transformers.PrinterCallback)  # the progress display replaces it
    return trainer


def derived(p: Prepared) -> dict[str, Any]:
    """Facts worked out from data and model, stored with the run config (`derived` keys)."""
    out: dict[str, Any] = {
        "data.train_examples": len(p.raw.train),
        "data.validation_examples": len(p.raw.validation) if p.raw.validation else 0,
        "data.test_examples": len(p.raw.test) if p.raw.test else 0,
        "train.steps_per_epoch": p.steps_per_epoch,
        "model.params": p.params.total,
        "model.trainable_params": p.params.trainable,
    }
    if p.config.train.max_steps is None:
        out["train.max_steps"] = p.max_steps
    # Trainer's own rounding of a warmup share into steps (the monitor reads warmup_steps).
    out["train.warmup_steps"] = math.ceil(p.max_steps * p.config.train.warmup_ratio)
    if p.raw.class_names is not None:
        out["data.num_classes"] = out["model.num_labels"] = len(p.raw.class_names)
        out["data.class_names"] = p.raw.class_names
    return out


def train(
    cfg: Config,
    *,
    resume: str | None = None,
    console: Console | None = None,
) -> Outcome:
    """Fine-tune as configured; `resume=` a run name or id continues that run.

    >>> outcome = train(load_config(None, ["train.max_steps=20"]))   # doctest: +SKIP
    >>> outcome.test["test/accuracy"]                                  # doctest: +SKIP
    """
    console = console or Console()
    store = Store(cfg.monitor.store)
    resume_from, out_dir = None, cfg.train.output_dir
    if resume is not None:
        info = store.reader().run(resume)
        if info.status == "running":
            raise ConfigError(f"run {info.name} is still running; wait for it to end")
        out_dir = out_dir or store.run_dir(info.id) / "checkpoints"
        resume_from = checkpoints.latest(out_dir)
        if resume_from is None:
            raise ConfigError(
                f"run {info.name} has no checkpoint to resume from in {out_dir / 'trainer'}"
            )
    p = prepare(cfg, out_dir=out_dir)
    display = ProgressDisplay(console, focus=f"eval/{cfg.best_metric}")
    run = _open_run(cfg, p, resume, display)
    if resume_from is not None:
        step = int(resume_from.name.rsplit("-", 1)[-1])
        run.event("note", "resume", f"resumed from {resume_from.name}", step=step)
    try:
        out_dir = out_dir or run.dir / "checkpoints"
        started = time.time()
        callback = TrainerCallback(
            run=run,
            act=cfg.monitor.policy.act(),
            console=None,
            probes=p.probes,
            dynamics=cfg.monitor.probes.enabled and cfg.monitor.probes.dynamics,
        )
        trainer = build_trainer(p, out_dir, [callback, display])
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        outcome = _finish(p, run, trainer, out_dir, time.time() - started, store)
    except BaseException as exc:
        display.close()
        run.finish("failed")
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed ({exc!r})"
        console.print(
            f"run {literal(run.name)} {literal(what)}; continue it with: "
            f"tunescope train --resume {literal(run.name)}",
            highlight=False,
        )
        raise
    run.finish()
    return outcome


def _open_run(cfg: Config, p: Prepared, resume: str | None, display: ProgressDisplay) -> Run:
    # The online monitor runs in every mode; findings (and, in act mode, interventions) print
    # above the progress bar instead of through the default terminal listener.
    listener = None if cfg.monitor.mode == "observe" else display.show_events
    return Run(
        cfg.project,
        name=cfg.monitor.name,
        config=stored_config(cfg, derived(p)),
        store=cfg.monitor.store,
        resume=resume,
        mode=cfg.monitor.mode,
        policy=cfg.monitor.policy.policy(cfg.monitor.mode),
        listener=listener,
    )


def _finish(
    p: Prepared,
    run: Run,
    trainer: transformers.Trainer,
    out_dir: Path,
    seconds: float,
    store: Store,
) -> Outcome:
    """Export best/last weights, evaluate the best on test, record and summarise."""
    state = trainer.state
    last = checkpoints.latest(out_dir)
    saved: dict[str, str] = {}
    if last is not None:
        saved["last"] = str(checkpoints.export_weights(last, out_dir / "last"))
    trainer.save_model(str(out_dir / "best"))  # the best weights are loaded at the end of train()
    saved["best"] = str(out_dir / "best")
    best_dir = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
    checkpoints.prune(out_dir, last, best_dir)
    metric = p.config.best_metric
    if state.best_metric is not None:
        best = {
            "step": state.best_global_step,
            "metric": f"eval/{metric}",
            "value": state.best_metric,
        }
    else:  # nothing was evaluated (no validation split): the best we know is the last
        best = {"step": state.global_step, "metric": None, "value": None}
    summary: dict[str, Any] = {"best": best, "checkpoints": saved}
    test: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}
    if p.splits.test is not None:
        test, extra = _test(p, trainer)
        if p.config.model.task != "causal-lm":  # trainer.evaluate() already logged LM tests
            run.log(test, step=state.global_step)
        summary.update(extra)
        per_class = extra.get("test/per_class", {})
        test = {k: v for k, v in test.items() if k.startswith("test/")}
        summary.update(test)
    run.summarize(summary)
    return Outcome(
        run_name=run.name,
        run_id=run.id,
        store=str(store.path) if p.config.monitor.store else "",
        steps=state.global_step,
        seconds=seconds,
        test=test,
        best=best,
        checkpoints=saved,
        per_class=per_class,
        stopped=run.control.reason if run.control.should_stop else "",
    )


def _test(p: Prepared, trainer: transformers.Trainer) -> tuple[dict[str, float], dict[str, Any]]:
    assert p.splits.test is not None
    if p.config.model.task == "causal-lm":
        raw = trainer.evaluate(p.splits.test, metric_key_prefix="test")
        metrics, _ = map_logs(raw, causal_lm=True)
        return metrics, {}
    out = trainer.predict(p.splits.test, metric_key_prefix="test")
    metrics, _ = map_logs(out.metrics or {})
    report = classification_report(out.predictions, out.label_ids, p.raw.class_names or [])
    return metrics, {f"test/{k}": v for k, v in report.items()}
