"""`tunescope diagnose SOURCE`: findings of a stored run, a TensorBoard directory or a CSV file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import TunescopeError
from ..text import clean, literal
from .app import JsonOption, StoreOption, app, console

if TYPE_CHECKING:
    from ..diagnose import Context, Finding, Report

_SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


class DiagnoseSourceError(TunescopeError, LookupError):
    """SOURCE is neither a directory, a file, nor a run in an existing store."""


@app.command("diagnose")
def diagnose_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A run name or id in the store, a TensorBoard directory, or a CSV file."
        ),
    ],
    json_: JsonOption = False,
    store: StoreOption = None,
    num_classes: Annotated[
        int | None,
        typer.Option(
            "--num-classes", min=2, help="Number of classes (sets the chance-level loss ln C)."
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps", min=1, help="Training budget in steps (when the run's config lacks it)."
        ),
    ] = None,
) -> None:
    """Diagnose a run: overfitting, underfitting, forgetting, divergence, LR trouble, ...

    The history is replayed step by step exactly as the online monitor sees it, so each
    finding's step is where its evidence first sufficed. Kinds that could not be checked are
    listed with the reason.
    """
    report = _report(source, store, num_classes, max_steps)
    if json_:
        print(json.dumps(report.to_json(), indent=2, allow_nan=False))
        return
    _print(report)


def _report(
    source: str, store: Path | None, num_classes: int | None, max_steps: int | None
) -> Report:
    from ..diagnose import Context
    from ..diagnose.engine import replay, replay_run
    from ..store import Store

    path = Path(source).expanduser()
    if path.is_dir():
        from ..io import tensorboard

        rows = list(tensorboard.read(path))
        ctx = _override(Context.from_config(_tensorboard_config(path)), num_classes, max_steps)
        return replay(rows, ctx, by_wall=False, source={"type": "tensorboard", "path": str(path)})
    if path.is_file() or (path.exists() and not path.is_dir()):
        # a FIFO, socket or device too: the CSV reader refuses it by name, without opening it
        from ..io import csv as csv_io

        ctx = _override(Context(), num_classes, max_steps)
        return replay(csv_io.read(path), ctx, source={"type": "csv", "path": str(path)})
    from ..store import RunNotFound, StoreError

    hint = "Pass a TensorBoard log directory, a CSV file, or a run name/id (see `tunescope runs`)."
    try:
        reader = Store(store, create_if_missing=False).reader()
        info = reader.run(source)
    except StoreError as exc:
        raise DiagnoseSourceError(
            f"{source!r} is not a file or a directory, and it cannot be looked up as a run: {exc}"
        ) from None
    except RunNotFound as exc:
        raise DiagnoseSourceError(
            f"{source!r} is not a file or a directory; {exc} {hint}"
        ) from None
    ctx = _override(Context.from_config(info.config), num_classes, max_steps)
    return replay_run(reader, info.id, ctx)


def _tensorboard_config(root: Path) -> dict[str, Any]:
    """What HF Trainer writes next to the scalars: its TrainingArguments (`args`) and the model
    config (`model_config`) as JSON text summaries — the budget, warmup and classes."""
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    from ..io.tensorboard import event_dirs

    found: dict[str, Any] = {}
    for d in event_dirs(root):
        acc = EventAccumulator(str(d), size_guidance={TENSORS: 0})
        acc.Reload()
        for tag, name in (("args/text_summary", "train"), ("model_config/text_summary", "model")):
            if name in found or tag not in acc.Tags().get("tensors", []):
                continue
            try:
                text = acc.Tensors(tag)[0].tensor_proto.string_val[0].decode()
                value = json.loads(text)
            except (IndexError, ValueError, UnicodeDecodeError):
                continue  # not HF's JSON: nothing to learn from it
            if isinstance(value, dict):
                found[name] = value
    return found


def _override(ctx: Context, num_classes: int | None, max_steps: int | None) -> Context:
    import dataclasses

    return dataclasses.replace(
        ctx,
        num_classes=num_classes if num_classes is not None else ctx.num_classes,
        max_steps=max_steps if max_steps is not None else ctx.max_steps,
    )


def _print(report: Report) -> None:
    src = report.source
    name = src.get("run") or src.get("path") or "?"
    console.print(
        f"[bold]{literal(src.get('type', 'source'))} {literal(name)}[/]: "
        f"{src.get('points', 0)} points, steps {src.get('first_step')}–{src.get('last_step')}"
        + (f", {src['segments']} segments" if src.get("segments", 1) > 1 else ""),
        highlight=False,
    )
    if not report.findings:
        console.print("[green]no findings[/]")
    for f in report.findings:
        print_finding(f)
    if report.unchecked:
        console.print("\n[bold]not checked[/]")
        for kind, why in sorted(report.unchecked.items()):
            console.print(f"  {clean(kind)}: {clean(why)}", highlight=False, markup=False)
    for note in src.get("notes", []):
        console.print(f"[dim]note: {literal(note)}[/]", highlight=False)


def print_finding(f: Finding) -> None:
    """One finding for people: kind, step, severity, message, recommendation."""
    style = _SEVERITY_STYLE.get(str(f.severity), "")
    span = f"step {f.step}" + (f"–{f.last_step}" if f.last_step > f.step else "")
    state = " (resolved)" if not f.active else ""
    console.print(
        f"\n[{style}]{literal(f.severity)}[/] [bold]{literal(f.kind)}[/] at {span}{state}",
        highlight=False,
    )
    console.print(f"  {clean(f.message)}", highlight=False, markup=False)
    if f.recommendation.text:
        console.print(f"  → {clean(f.recommendation.text)}", highlight=False, markup=False)
