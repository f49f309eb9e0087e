"""`tunescope check [CONFIG.yaml] [key=value ...]`: validate a config and size the job before
training — data per split, class balance, truncation, model size, memory and time per epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..text import literal
from .app import app, console
from .train import ArgsArgument, quiet_libraries, resolve_config

if TYPE_CHECKING:
    from ..finetune.data import SplitStats
    from ..finetune.estimate import Estimate
    from ..finetune.recipe import Prepared

GIB = 1024**3


def _size(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 1024**2:.0f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def data_table(stats: dict[str, SplitStats], max_length: int) -> Table:
    """Examples per split, class balance and the share of texts cut at max_length."""
    table = Table(title="data")
    table.add_column("split")
    table.add_column("examples", justify="right")
    lm = any(s.tokens is not None for s in stats.values())
    if lm:
        table.add_column("tokens", justify="right")
        table.add_column(f"blocks of {max_length}", justify="right")
    else:
        table.add_column("classes (count)")
        table.add_column(f"cut at {max_length} tokens", justify="right")
    for split, s in stats.items():
        if lm:
            table.add_row(literal(split), str(s.examples), str(s.tokens), str(s.blocks))
        else:
            balance = "  ".join(f"{literal(k)} {v}" for k, v in s.class_counts.items())
            table.add_row(
                literal(split), str(s.examples), balance, f"{100 * (s.truncated or 0):.0f}%"
            )
    return table


def model_table(p: Prepared, est: Estimate | None) -> Table:
    """Model size, trainable share, and what this machine needs for it."""
    cfg = p.config
    table = Table(title="model and cost", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    pc = p.params
    method = f"LoRA r={cfg.model.lora.r}" if cfg.model.lora else "full fine-tuning"
    if cfg.model.freeze:
        method += f", frozen: {literal(', '.join(cfg.model.freeze))}"
    table.add_row("model", f"{literal(cfg.model.name)} ({literal(p.source)})")
    table.add_row("parameters", f"{pc.total:,}")
    table.add_row(
        "trainable", f"{pc.trainable:,} ({100 * pc.trainable / max(pc.total, 1):.2f}%), {method}"
    )
    table.add_row("steps", f"{p.steps_per_epoch} per epoch, {p.max_steps} in all")
    if est is not None:
        table.add_row("device", literal(est.device))
        table.add_row(
            "memory",
            f"peak {_size(est.peak_bytes)} measured (weights {_size(est.weights_bytes)}, "
            f"gradients {_size(est.grads_bytes)}, AdamW state {_size(est.optimizer_bytes)})",
        )
        table.add_row("time per step", f"{est.step_seconds:.2f} s")
        evals = -(-p.max_steps // (cfg.train.eval_every or p.steps_per_epoch))
        table.add_row(
            "time per epoch",
            f"{_duration(est.epoch_seconds)} training + {_duration(est.eval_seconds)} per "
            f"evaluation; whole run ≈ "
            f"{_duration(est.step_seconds * p.max_steps + est.eval_seconds * evals)}",
        )
    return table


@app.command("check")
def check_command(
    args: ArgsArgument = None,
    time_steps: Annotated[
        int,
        typer.Option("--time-steps", min=0, help="Training steps to time (0: skip timing)."),
    ] = 3,
) -> None:
    """Validate a config and show data stats, model size, memory and time per epoch."""
    cfg = resolve_config(list(args or []), None, None)
    quiet_libraries()
    from ..finetune import data
    from ..finetune.estimate import measure
    from ..finetune.recipe import prepare

    out_dir = cfg.train.output_dir
    p = prepare(cfg, out_dir=out_dir)
    console.print(
        f"config OK: {literal(cfg.model.name)} ({literal(cfg.model.task)}), "
        f"{literal(cfg.data.name or cfg.data.train_file)}",
        highlight=False,
    )
    stats = data.stats(p.raw, p.tokenizer, cfg.data, cfg.model.task)
    console.print(data_table(stats, cfg.data.max_length))
    est = measure(p, steps=time_steps) if time_steps > 0 else None
    console.print(model_table(p, est))
