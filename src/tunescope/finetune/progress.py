"""What `tunescope train` shows in the terminal: a live progress bar, evaluation lines,
findings, and the final summary.

`ProgressDisplay` is a Trainer callback that only draws; it never changes training. Findings
and interventions reach it through `show_events` (the run's listener calls it as events are
committed), so the bar shows them the moment the monitor decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import transformers
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..integrations.transformers import is_causal_lm, map_logs
from ..text import clean, literal

SHORT = {"accuracy": "acc", "perplexity": "ppl", "precision": "prec", "recall": "rec"}
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.4f}"


def _short(key: str) -> str:
    leaf = key.rsplit("/", 1)[-1]
    return literal(SHORT.get(leaf, leaf))  # the bar's text is markup


class ProgressDisplay(transformers.TrainerCallback):
    """A rich progress bar with live loss, lr and the latest value of the watched eval metric.

    Every evaluation is also printed as a line above the bar, with all its metrics.
    """

    def __init__(self, console: Console, focus: str = "eval/loss") -> None:
        self.console = console
        self.focus = focus  # the eval metric shown on the bar (the one that picks the best)
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.train: dict[str, float] = {}
        self.eval: dict[str, float] = {}
        self.causal_lm = False

    def _status(self) -> str:
        parts = [f"{_short(k)} {_fmt(v)}" for k, v in self.train.items()]
        if self.focus in self.eval:
            parts.append(f"eval {_short(self.focus)} {_fmt(self.eval[self.focus])}")
        return "  ".join(parts)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.causal_lm = is_causal_lm(kwargs.get("model"))
        self.progress = Progress(
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            refresh_per_second=2,  # the bar shares the CPU with training; 2 Hz is plenty
        )
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, status=""
        )
        self.progress.start()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        metrics, _ = map_logs(logs or {}, causal_lm=self.causal_lm)
        if "train/loss" in metrics:
            self.train = {k: metrics[k] for k in ("train/loss", "train/lr") if k in metrics}
        evals = {k: v for k, v in metrics.items() if k.startswith("eval/")}
        if evals:
            self.eval = evals
            self.print(
                f"step {state.global_step:>6}  "
                + "  ".join(f"{literal(k)} {_fmt(v)}" for k, v in evals.items())
            )
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, status=self._status())

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def print(self, message: str) -> None:
        """A line above the bar (or plain output when the bar is not running)."""
        console = self.progress.console if self.progress is not None else self.console
        console.print(message, highlight=False, emoji=False)

    def show_events(self, events: Iterable[Any]) -> None:
        """Print findings and interventions (objects with type, kind, severity, message, step)."""
        for e in events:
            if getattr(e, "type", None) not in ("finding", "intervention"):
                continue
            style = SEVERITY_STYLE.get(getattr(e, "severity", "info"), "")
            label = "finding" if e.type == "finding" else "action"
            self.print(
                f"[{style}]{label} at step {e.step}: {literal(e.kind)}[/] — {literal(e.message)}"
            )

    def close(self) -> None:
        """Stop drawing (idempotent)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@dataclass
class Outcome:
    """What a finished `tunescope train` reports."""

    run_name: str
    run_id: str
    store: str
    steps: int
    seconds: float
    test: dict[str, float] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    stopped: str = ""


def summary_table(outcome: Outcome) -> Table:
    """The final table: test metrics, the best checkpoint, time and where things are."""
    # Titles and cells are markup: names, metric keys and paths go in through `literal`.
    table = Table(
        title=f"run {literal(outcome.run_name)} ({literal(outcome.run_id)})", show_header=False
    )
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in outcome.test.items():
        table.add_row(literal(key), _fmt(value))
    best = outcome.best
    if best.get("value") is not None:
        detail = f"{literal(best['metric'])} {_fmt(float(best['value']))}"
        table.add_row("best checkpoint", f"step {literal(best['step'])}  {detail}")
    elif best:
        table.add_row(
            "best checkpoint", f"step {literal(best['step'])} (no validation: the last weights)"
        )
    minutes, seconds = divmod(int(outcome.seconds), 60)
    table.add_row("trained", f"{outcome.steps} steps in {minutes}m{seconds:02d}s")
    if outcome.stopped:
        table.add_row("stopped early", literal(outcome.stopped))
    for name, path in outcome.checkpoints.items():
        table.add_row(f"{literal(name)} weights", literal(path))
    return table


def per_class_table(per_class: dict[str, dict[str, float]]) -> Table:
    """Per-class precision, recall, F1 and support on the test split."""
    table = Table(title="test, per class")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, row in per_class.items():
        table.add_row(
            literal(name),
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1-score']:.3f}",
            str(int(row["support"])),
        )
    return table


def print_outcome(console: Console, outcome: Outcome) -> None:
    """The summary tables and how to look at the run."""
    if outcome.per_class:
        console.print(per_class_table(outcome.per_class))
    console.print(summary_table(outcome))
    store = f" --store {outcome.store}" if outcome.store else ""
    console.print(
        clean(
            f"view with: tunescope ui{store}  |  tunescope runs{store}  |  "
            f"tunescope diagnose {outcome.run_name}{store}"
        ),
        highlight=False,
        markup=False,
        emoji=False,
    )
