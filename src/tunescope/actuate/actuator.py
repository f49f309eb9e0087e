"""`Actuator`: carries out the policy's interventions on a torch model, optimizer and scheduler.

The policy (on rank 0, in the store's writer thread) only decides: it sets `run.control` and
queues each intervention in `control.pending`. The actuator is the one place that acts on them,
for every adapter (the Trainer callback, the plain-loop `Guard`):

- `scale_lr`: multiply the learning rate so the scale survives the scheduler (`lrscale`);
- `rollback`: restore the last snapshot before the finding's step — weights, optimizer,
  scheduler, RNG — then re-apply the cumulative LR scale (a snapshot holds the scale of its
  time); training goes on from that step, so the next point logged starts a new segment;
- `restore_best`: load the best evaluated weights (or, for forgetting, the best task/retain
  trade-off), at once or — in Trainer, whose own best-model loading runs after the loop — at
  the end of training;
- `stop`: tell the loop to stop.

Each one, once applied, is recorded as an `intervention` event (kind = the action, the finding
that caused it, its parameters, and the values before and after) and printed in the terminal.
In distributed training every rank holds the same snapshots (taken at the same steps), rank 0
resolves each target (`resolve`) before `Control.synchronize()`, and every rank applies it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..diagnose.findings import Kind
from ..names import canonical
from ..policy import Response
from ..text import literal
from .best import BestWeights, retain_score
from .config import DEFAULT_MEMORY_LIMIT
from .lrscale import learning_rates, scale_lr
from .snapshots import SnapshotInfo, Snapshots, inner_scheduler, load_model_state

if TYPE_CHECKING:
    from ..run import Run
    from ..store.reader import Reader

_STYLE = {"stop": "bold red", "rollback": "bold magenta", "restore_best": "bold green"}


@dataclass
class Applied:
    """What the training loop must do after `Actuator.apply`."""

    stop: bool = False
    rollback_to: int | None = None  # training continues from this step
    restore_deferred: bool = False  # a restore-best waits for `finish()`


class Actuator:
    """Applies interventions for one run (see the module docstring).

    >>> act = Actuator(run, model, optimizer, scheduler, best_metric="eval/accuracy")  # doctest: +SKIP
    >>> act.snapshot(step)                 # on a schedule                         # doctest: +SKIP
    >>> act.evaluated(step, {"eval/accuracy": 0.91})                               # doctest: +SKIP
    >>> applied = act.obey(step)           # flush, synchronize, apply             # doctest: +SKIP
    """

    def __init__(
        self,
        run: Run,
        model: torch.nn.Module,
        optimizer: Any,
        scheduler: Any = None,
        *,
        best_metric: str = "eval/loss",
        keep: int = 3,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        directory: str | Path | None = None,
        defer_restore: bool = False,
        console: Any = None,
    ) -> None:
        self.run = run
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self._tmp: Path | None = None
        root = Path(directory) if directory is not None else self._default_dir()
        policy = run.policy.config if run.policy is not None else None
        self.snapshots = Snapshots(root / "snapshots", keep=keep, memory_limit=memory_limit)
        self._tradeoff_wanted = policy is None or (
            policy.response(Kind.FORGETTING) is Response.RESTORE_TRADEOFF
        )
        self.best = BestWeights(
            canonical(best_metric),
            directory=root / "best",
            memory_limit=memory_limit,
            tolerance=policy.forgetting_tolerance if policy is not None else 0.01,
            tradeoff=self._tradeoff_wanted and _config_has_retain(run.config),
        )
        self.scale = 1.0  # cumulative LR scale decided so far
        self.applied = 1.0  # the scale baked into the optimizer/scheduler right now
        self.defer_restore = defer_restore
        self.deferred: dict[str, Any] | None = None  # a restore-best waiting for finish()
        self.records: list[dict[str, Any]] = []  # every intervention applied (event data)
        self.last_rollback: int | None = None  # the step the last rollback returned to
        self.console = console
        self._reader: Reader | None = None

    def _default_dir(self) -> Path:
        if self.run.writes:
            return self.run.dir / "act"
        # Other ranks have no run folder; their snapshots go to a private temporary one.
        self._tmp = Path(tempfile.mkdtemp(prefix=f"tunescope-rank{self.run.rank}-"))
        return self._tmp

    # -- collecting states ---------------------------------------------------------------------
    def snapshot(self, step: int) -> bool:
        """Snapshot the training state after `step` (False when it is not finite)."""
        info = self.snapshots.take(
            step, self.model, self.optimizer, self.scheduler, lr_scale=self.applied
        )
        return info is not None

    def evaluated(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Offer the weights just evaluated at `step` as a restore candidate."""
        values = {canonical(k): float(v) for k, v in metrics.items()}
        if self._tradeoff_wanted and any(k.startswith("retain/") for k in values):
            self.best.tradeoff = True
        return self.best.offer(step, values, self.model)

    # -- deciding targets (rank 0) and applying (every rank) ---------------------------------
    def obey(self, step: int) -> Applied:
        """Make the decisions taken so far reach this process, and apply them at `step`."""
        control = self.run.control
        self.run.flush()
        if self.run.writes:
            self.resolve(control.pending)
        control.synchronize()
        pending = control.take_pending()
        control.consume_rollback()
        control.consume_restore_best()
        return self.apply(pending, step)

    def resolve(self, pending: list[dict[str, Any]]) -> None:
        """Fix each intervention's target (snapshot, candidate), so every rank picks the same."""
        for item in pending:
            params = item.setdefault("params", {})
            if item["action"] == "rollback" and "to_step" not in params:
                info = self._rollback_target(int(params.get("before_step", step_max())))
                params["to_step"] = info.step if info is not None else None
            elif item["action"] == "restore_best" and "candidate" not in params:
                cand, why = self.best.choose(params, self._retain_lookup)
                params["candidate"] = cand.key if cand is not None else None
                params["why"] = why

    def _rollback_target(self, before: int) -> SnapshotInfo | None:
        """The last snapshot before `before` — or the one before it, when that is the very state
        the last rollback returned to and it led straight back into trouble (it may hold the
        cause, e.g. a learning rate already too high)."""
        info = self.snapshots.before(before)
        last = self.last_rollback
        if info is not None and info.step == last:
            info = self.snapshots.before(last) or info
        return info

    def apply(self, pending: list[dict[str, Any]], step: int) -> Applied:
        """Carry out interventions (dicts from `Control.pending`) at `step`, in order."""
        out = Applied()
        for item in pending:
            action = item["action"]
            if action == "rollback":
                self._rollback(item, step, out)
            elif action == "scale_lr":
                self._scale(item, step)
            elif action == "restore_best":
                if self.defer_restore:
                    self.deferred = {**item, "stop_step": step}
                    out.restore_deferred = True
                else:
                    self._restore_best(item, step)
            elif action == "stop":
                out.stop = True
                self._record(item, step, {}, {"stopped_at": step}, f"stopping at step {step}")
            else:  # save_checkpoint: the adapter's own checkpointing handles it
                self._record(item, step, {}, {}, f"{action} requested")
        return out

    def finish(self) -> None:
        """Apply a deferred restore-best; then drop snapshot files (they served this run only)."""
        if self.deferred is not None:
            item, self.deferred = self.deferred, None
            self._restore_best(item, int(item["stop_step"]))
        self.close()

    def close(self) -> None:
        """Delete every snapshot and kept weights (idempotent)."""
        self.snapshots.clear()
        self.best.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- the interventions -----------------------------------------------------------------------
    def _set_scale(self, target: float) -> None:
        if target != self.applied:
            scale_lr(self.optimizer, self.scheduler, target / self.applied)
            self.applied = target

    def _scale(self, item: dict[str, Any], step: int) -> None:
        factor = float(item["params"]["factor"])
        before: dict[str, Any] = {"lr": learning_rates(self.optimizer), "lr_scale": self.scale}
        peak = self._base_lrs()
        if peak is not None:
            before["base_lr"] = peak
        self.scale *= factor
        self._set_scale(self.scale)
        after: dict[str, Any] = {"lr": learning_rates(self.optimizer), "lr_scale": self.scale}
        # The schedule's base rate says more than the current one (0 at a warmup's start).
        shown = "lr"
        if (peak := self._base_lrs()) is not None:
            after["base_lr"], shown = peak, "base_lr"
        what = "scheduled learning rate" if shown == "base_lr" else "learning rate"
        self._record(
            item,
            step,
            before,
            after,
            f"{what} x{factor:g}: {_lrs(before[shown])} -> {_lrs(after[shown])} "
            f"(x{self.scale:g} in all)",
        )

    def _base_lrs(self) -> list[float] | None:
        base = (
            getattr(inner_scheduler(self.scheduler), "base_lrs", None) if self.scheduler else None
        )
        return [float(b) for b in base] if isinstance(base, list | tuple) else None

    def _rollback(self, item: dict[str, Any], step: int, out: Applied) -> None:
        params = item["params"]
        target = params.get("to_step")
        info = self.snapshots.at(int(target)) if target is not None else None
        if info is None:
            limit = params.get("before_step", step)
            why = f"no snapshot before step {limit} to roll back to; training goes on from here"
            self._record(item, step, {"step": step}, {"step": step}, why, applied=False)
            return
        self.snapshots.restore(info, self.model, self.optimizer, self.scheduler)
        self.best.discard_after(info.step)
        self.applied = info.lr_scale
        self._set_scale(self.scale)  # the reductions decided since the snapshot still hold
        out.rollback_to = self.last_rollback = info.step
        self._record(
            item,
            step,
            {"step": step},
            {"step": info.step, "snapshot": info.where, "lr": learning_rates(self.optimizer)},
            f"rolled back from step {step} to the snapshot at step {info.step}",
        )

    def _restore_best(self, item: dict[str, Any], step: int) -> None:
        params = item["params"]
        key = params.get("candidate")
        cand = next((c for c in self.best.candidates if c.key == key), None)
        if cand is None:
            self._restore_snapshot_weights(item, step, params.get("why") or "no evaluation kept")
            return
        self.best.restore(cand, self.model)
        self.run.summarize(
            {"restored": {"step": cand.step, "metric": self.best.metric, "value": cand.value}}
        )
        self._record(
            item,
            step,
            {"step": step},
            {"step": cand.step, "metric": self.best.metric, "value": cand.value},
            f"restored the weights of step {cand.step}: {params.get('why', '')}",
        )

    def _restore_snapshot_weights(self, item: dict[str, Any], step: int, why: str) -> None:
        """No evaluated weights to restore: end on the last snapshot's (finite) weights rather
        than on whatever training left (e.g. weights a divergence made non-finite)."""
        infos = self.snapshots.infos
        if not infos:
            self._record(item, step, {}, {}, f"nothing restored: {why}", applied=False)
            return
        info = infos[-1]
        load_model_state(self.model, self.snapshots.load(info)["model"])
        self._record(
            item,
            step,
            {"step": step},
            {"step": info.step, "snapshot": info.where},
            f"{why}: restored the weights of the last snapshot, at step {info.step}",
        )

    # -- recording -------------------------------------------------------------------------------
    def _record(
        self,
        item: dict[str, Any],
        step: int,
        before: dict[str, Any],
        after: dict[str, Any],
        what: str,
        *,
        applied: bool = True,
    ) -> None:
        action = item["action"]
        data = {
            "finding": item.get("finding"),
            "finding_kind": item.get("kind"),
            "params": item.get("params", {}),
            "before": before,
            "after": after,
            "applied": applied,
            "reason": item.get("reason", ""),
        }
        self.records.append({"action": action, "step": step, **data})
        message = f"{what} — {item.get('reason', '')}"
        self.run.event(
            "intervention",
            action,
            message,
            severity="warning",
            step=step,
            data=data,
            ref=item.get("finding"),
        )
        if self.console is not None and self.run.writes:
            # One call with escaped text: any object with print(markup) works (a rich Console,
            # the progress display of `tunescope train`).
            style = _STYLE.get(action, "bold yellow")
            self.console.print(
                f"[{style}]tunescope act[/] [bold]{literal(action)}[/] at step {step}: "
                f"{literal(message)}"
            )

    # -- retain metrics (rank 0 reads them back from the store) --------------------------------
    def _retain_lookup(self, steps: list[int]) -> dict[int, float]:
        if not self.run.writes or self.run.store is None:
            return {}
        if self._reader is None:
            self._reader = self.run.store.reader()
        reader = self._reader
        keys = [k["key"] for k in reader.keys(self.run.id) if k["key"].startswith("retain/")]
        baseline: dict[str, float] = {}
        at: dict[int, dict[str, float]] = {s: {} for s in steps}
        for key in keys:
            series = reader.series(self.run.id, key)
            if not len(series):
                continue
            baseline[key] = float(series.values[0])
            line = timeline(series.steps.tolist(), series.values.tolist())
            for s in steps:
                value = value_at(line, s)
                if value is not None:
                    at[s][key] = value
        out = {}
        for s, values in at.items():
            score = retain_score(values, baseline)
            if score is not None:
                out[s] = score
        return out


def timeline(steps: list[int], values: list[float]) -> list[tuple[int, float]]:
    """The points of the current timeline: a step that goes back abandons those at or after it.

    >>> timeline([0, 10, 20, 10, 15], [1.0, 2.0, 3.0, 4.0, 5.0])
    [(0, 1.0), (10, 4.0), (15, 5.0)]
    """
    line: list[tuple[int, float]] = []
    for s, v in zip(steps, values, strict=True):
        while line and line[-1][0] >= s:
            line.pop()
        line.append((int(s), float(v)))
    return line


def value_at(line: list[tuple[int, float]], step: int) -> float | None:
    """The last value at or before `step`."""
    found = [v for s, v in line if s <= step]
    return found[-1] if found else None


def step_max() -> int:
    """A step after every other (a rollback with no limit)."""
    return 2**62


def _config_has_retain(config: Mapping[str, Any]) -> bool:
    monitor = config.get("monitor") if isinstance(config, Mapping) else None
    return bool(isinstance(monitor, Mapping) and monitor.get("retain"))


def _lrs(lrs: list[float]) -> str:
    return ", ".join(f"{v:.3g}" for v in lrs[:3]) + (" ..." if len(lrs) > 3 else "")
