"""`TrainerCallback`: record a `transformers.Trainer` run in tunescope, and obey its decisions.

One line in your own Trainer:

>>> import tunescope
>>> trainer = Trainer(model, args, ..., callbacks=[tunescope.TrainerCallback()])  # doctest: +SKIP

Trainer's log keys are mapped to canonical names (`loss` -> `train/loss`, `eval_f1` ->
`eval/f1`, ...) by `map_logs`, and logged at `state.global_step`. The callback adds what Trainer
does not log: the learning rate of every param group, training throughput (samples/s, with
evaluation and checkpointing time left out) and, for causal LMs, perplexity. At each log step it
flushes the run (so the online monitor has seen every point) and reads `run.control`: a stop
request ends training after the current step.

It is cheap and changes nothing: no RNG, no device reads on steps that Trainer does not log
(there: a clock read and a copy of the learning rates, plus the `Watcher`'s small per-step
bookkeeping when `watch=True`; see probes/dynamics.py).
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import transformers

from ..actuate.config import ActSettings
from ..finetune.metrics import perplexity
from ..names import canonical
from ..policy import Mode, PolicyConfig
from ..run import Run

if TYPE_CHECKING:
    from ..probes.manager import Probes

# Trainer's speed figures (eval_runtime, eval_samples_per_second, ...) describe the machine,
# not the model: they go to `sys/`, so `eval/*` holds only quality metrics.
SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second", "_tokens_per_second")
# Trainer logs these once, when training ends: a summary of the whole run, not a point in time
# (its `train_loss` is the mean over all steps and would break the loss curve).
FINAL_KEYS = {
    "train_runtime": "train/runtime",
    "train_samples_per_second": "train/samples_per_second",
    "train_steps_per_second": "train/steps_per_second",
    "total_flos": "train/total_flos",
    "train_loss": "train/mean_loss",
}


def map_logs(
    logs: Mapping[str, Any], *, causal_lm: bool = False
) -> tuple[dict[str, float], dict[str, float]]:
    """Map one Trainer `logs` dict to (metrics to log at this step, values for the summary).

    >>> map_logs({"loss": 0.5, "learning_rate": 1e-4, "epoch": 0.5})[0]
    {'train/loss': 0.5, 'train/lr': 0.0001, 'train/epoch': 0.5}
    >>> map_logs({"eval_loss": 0.3, "eval_accuracy": 0.9, "eval_runtime": 2.0, "epoch": 1.0})[0]
    {'eval/loss': 0.3, 'eval/accuracy': 0.9, 'sys/eval_runtime': 2.0}
    """
    values = {
        k: float(v)
        for k, v in logs.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)  # numpy scalars too
    }
    if "train_runtime" in values:
        return {}, {FINAL_KEYS.get(k, canonical(k)): v for k, v in values.items() if k != "epoch"}
    metrics: dict[str, float] = {}
    training = "loss" in values
    for key, value in values.items():
        if key == "epoch" and not training:
            continue  # eval logs repeat the epoch; one point per step is enough
        if key.endswith(SPEED_SUFFIXES):
            metrics[f"sys/{key}"] = value
            continue
        metrics[canonical(key)] = value
    if causal_lm:
        for key in [k for k in metrics if k.endswith("/loss") and k != "train/loss"]:
            ppl = key.removesuffix("loss") + "perplexity"
            metrics.setdefault(ppl, perplexity(metrics[key]))
    return metrics, {}


def is_causal_lm(model: Any) -> bool:
    """Whether a (possibly peft-wrapped) model is a causal language model."""
    # A peft wrapper keeps the transformers model at .base_model.model.
    inner = getattr(getattr(model, "base_model", None), "model", model)
    names = [type(m).__name__ for m in (model, inner)]
    return any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names)


def _jsonable_args(args: Any) -> dict[str, Any]:
    keep = (
        "learning_rate",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "max_steps",
        "weight_decay",
        "warmup_steps",
        "lr_scheduler_type",
        "max_grad_norm",
        "label_smoothing_factor",
        "seed",
        "logging_steps",
        "eval_strategy",
        "eval_steps",
        "output_dir",
        "bf16",
        "fp16",
    )
    return {k: getattr(args, k, None) for k in keep}


def trainer_config(args: Any, state: Any, model: Any) -> dict[str, Any]:
    """The run config recorded for a user's own Trainer: its arguments and the model's essentials."""
    cfg = getattr(model, "config", None)
    num_labels = getattr(cfg, "num_labels", None)
    return {
        "train": {
            **_jsonable_args(args),
            "max_steps": state.max_steps,
            "warmup_steps": args.get_warmup_steps(state.max_steps),
            "batch_size": args.per_device_train_batch_size,
        },
        "model": {
            "name": getattr(cfg, "_name_or_path", None) or type(model).__name__,
            "type": getattr(cfg, "model_type", None),
            "class": type(model).__name__,
            "task": "causal-lm" if is_causal_lm(model) else "classification",
            "num_labels": num_labels,
        },
        "data": {"num_classes": num_labels} if not is_causal_lm(model) else {},
        "source": "transformers.Trainer",
    }


class TrainerCallback(transformers.TrainerCallback):
    """Record a `transformers.Trainer` run in tunescope; stop when the monitor asks.

    Alone, it starts a run when training begins (config: the TrainingArguments and the model's
    essentials) and finishes it when training ends. Given `run=`, it logs into that run and
    leaves finishing to its owner (that is how `tunescope train` uses it).

    >>> trainer = Trainer(model, args, train_dataset=ds,                      # doctest: +SKIP
    ...                   callbacks=[tunescope.TrainerCallback(project="bbc")])
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        store: str | Path | None = None,
        run: Run | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        resume: str | None = None,
        watch: bool = True,
        mode: str | None = "advise",
        policy: PolicyConfig | None = None,
        act: ActSettings | None = None,
        console: Any = "stderr",
        dynamics: bool = True,
        probes: Probes | None = None,
    ) -> None:
        self.project = project
        self.name = name
        self.store = store
        self.run = run
        self.config = dict(config) if config is not None else None
        self.resume = resume
        self.watch = watch
        # Mode and policy of a run the callback starts; `act` (snapshots) applies in mode act,
        # whose interventions print on `console` ("stderr", None: not at all).
        self.mode, self.policy, self.act, self.console = mode, policy, act, console
        self._act: Any = None  # the act-mode state of the current train() (actuate/trainer.py)
        self.dynamics = dynamics  # per-layer-group gradient norms, update ratios, clipping
        self.probes = probes  # drift/forgetting probes (tunescope.probes.manager.Probes)
        self._training = False  # retain sets are scored at evaluations during training only
        self._owns = run is None
        self._causal_lm = False
        self._lrs: list[Any] = []
        self._samples_per_step = 0
        self._clock = 0.0  # when the training clock last started running
        self._train_time = 0.0  # seconds spent training since the last throughput point
        self._steps = 0  # optimizer steps since the last throughput point
        self._warned_closed = False
        self._watcher: Any = None

    # -- the run ---------------------------------------------------------------------------------
    def _start_run(self, args: Any, state: Any, model: Any) -> Run:
        import tunescope

        config = self.config if self.config is not None else trainer_config(args, state, model)
        return tunescope.init(
            self.project or getattr(args, "project", None) or "huggingface",
            name=self.name or getattr(args, "run_name", None),
            config=config,
            store=self.store,
            resume=self.resume,
            mode=self.mode,
            policy=self.policy,
        )

    def _live(self) -> Run | None:
        run = self.run
        if run is None or not run._closed:
            return run
        if not self._warned_closed:
            self._warned_closed = True
            import warnings

            warnings.warn(
                f"tunescope: run {run.name} ended with training, so metrics logged after "
                "train() (e.g. trainer.evaluate()) are not recorded; pass run=tunescope.init(...) "
                "to TrainerCallback to keep the run open until you finish it",
                RuntimeWarning,
                stacklevel=3,
            )
        return None

    # -- events ------------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs.get("model")
        if self.run is None or (self._owns and self.run._closed):
            self.run = self._start_run(args, state, model)
        self._causal_lm = is_causal_lm(model)
        self._samples_per_step = (
            args.train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
        )
        optimizer = kwargs.get("optimizer")
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        if self.watch and model is not None and hasattr(inner, "register_step_pre_hook"):
            from ..probes.dynamics import Watcher

            every = max(int(state.logging_steps), 1)
            scaler = getattr(optimizer, "scaler", None)  # fp16: accelerate's GradScaler
            self._watcher = Watcher(
                self.run, model, inner, every=every, groups=self.dynamics, scaler=scaler
            )
            self._watcher.steps = state.global_step  # measure on the steps Trainer logs
        if self.probes is not None and model is not None and self.run.writes:
            reference = self.run.dir / "probes" / "reference.pt"
            self.probes.start(model, self.run, state.global_step, reference)
        self._training = True
        self._act = None
        if self.run.mode is Mode.ACT:
            self._act = self._actuation(args, state, model, optimizer, kwargs.get("lr_scheduler"))
        self._train_time, self._steps = 0.0, 0
        self._clock = time.perf_counter()

    def _actuation(self, args: Any, state: Any, model: Any, optimizer: Any, scheduler: Any) -> Any:
        from ..actuate.trainer import trainer_actuation

        console = self.console
        if console == "stderr":
            from rich.console import Console

            console = Console(stderr=True)
        assert self.run is not None
        return trainer_actuation(
            self.run, args, state, model, optimizer, scheduler, self.act, console=console
        )

    def step(self, state: Any) -> int:
        """The step to log at: Trainer's `global_step`, less the steps rollbacks abandoned."""
        return int(state.global_step) - (self._act.offset if self._act is not None else 0)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer = kwargs.get("optimizer")
        if optimizer is not None:
            # The rates this step used (the scheduler moves them right after).
            self._lrs = [g["lr"] for g in optimizer.param_groups]

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = time.perf_counter()
        self._train_time += now - self._clock
        self._clock = now
        self._steps += 1
        if self._act is not None:
            self._act.on_step_end(state.global_step)  # snapshots on schedule
        target = self._probe_target(kwargs)
        if target is not None:
            probes, model, run = target
            last = state.global_step >= state.max_steps
            if probes.step_end(model, run, self.step(state), last=last):
                self._pause()  # probing is not training time

    def _probe_target(self, kwargs: Mapping[str, Any]) -> tuple[Probes, Any, Run] | None:
        """(probes, model, run) when probes are on and this process records the run."""
        model, run = kwargs.get("model"), self._live()
        if self.probes is None or model is None or run is None or not run.writes:
            return None
        return self.probes, model, run

    def _pause(self) -> None:
        # Evaluation and checkpointing are not training: restart the clock after them.
        self._clock = time.perf_counter()

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        target = self._probe_target(kwargs)
        if target is not None and self._training:
            probes, model, run = target
            probes.evaluate(model, run, self.step(state))
        self._pause()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._pause()

    def on_predict(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> None:
        self._pause()

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
        run = self._live()
        if run is None or not logs:
            return control
        metrics, summary = map_logs(logs, causal_lm=self._causal_lm)
        if "train/loss" in metrics:
            metrics.update(self._training_extras())
        else:
            self._pause()
        if metrics:
            run.log(metrics, step=self.step(state))
        if summary:
            run.summarize(summary)
        return self._obey(run, args, control, state, metrics)

    def _training_extras(self) -> dict[str, float]:
        now = time.perf_counter()
        # The loss read that triggered this log waited for the device: that time is training.
        self._train_time += now - self._clock
        self._clock = now
        extras: dict[str, float] = {}
        if self._steps and self._train_time > 0:
            extras["train/throughput"] = self._steps * self._samples_per_step / self._train_time
        self._train_time, self._steps = 0.0, 0
        for i, lr in enumerate(self._lrs[1:], start=1):
            extras[f"train/lr/group_{i}"] = float(lr)
        return extras

    def _obey(
        self, run: Run, args: Any, control: Any, state: Any, metrics: dict[str, float]
    ) -> Any:
        """Make the monitor's decisions (so far) reach the Trainer."""
        if self._act is not None:  # mode act: flush, synchronize, apply the interventions
            self._act.on_log(state.global_step, metrics)
        else:
            run.flush()
            run.control.synchronize()
        if run.control.should_stop and not control.should_training_stop:
            control.should_training_stop = True
            # Keep the state training stopped in, when this Trainer keeps checkpoints at all.
            strategy = getattr(args, "save_strategy", "no")
            control.should_save = getattr(strategy, "value", strategy) != "no"
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._act is not None:
            self._act.on_train_end()  # a restore-best waits for this moment
        self._training = False
        if self._watcher is not None:
            self._watcher.remove()
            self._watcher = None
        if self._owns and self.run is not None:
            self.run.finish()
