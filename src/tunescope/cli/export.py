"""`tunescope export`: a run's metrics as CSV (or TensorBoard event files)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TextIO

import typer

from ..io import csv as csv_io
from ..store import Store
from ..text import clean, literal
from .app import StoreOption, app, err_console, fail


class ExportFormat(StrEnum):
    """Formats `export` writes."""

    csv = "csv"
    tensorboard = "tensorboard"


@app.command("export")
def export_command(
    run: Annotated[str, typer.Argument(help="Run name or id.")],
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="Output format.")] = (
        ExportFormat.csv
    ),
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Output file (csv, default stdout) or directory "
            "(tensorboard, default ./tb/<run>).",
        ),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Export a run's metrics (long CSV: step,metric,value,wall_time, in log order)."""
    reader = Store(store, create_if_missing=False).reader()
    info = reader.run(run)
    if format is ExportFormat.csv:
        if output is None:
            # On a terminal the CSV is for eyes: stored text must not drive it (see safe.py).
            # Piped or written with -o, every byte is kept, so that import reproduces the run.
            out = _OnTerminal(sys.stdout) if sys.stdout.isatty() else sys.stdout
            csv_io.write_long(reader, info.id, out)
            return
        if output.is_dir():
            raise fail(f"{output} is a directory; give a file name such as {output / 'run.csv'}")
        tmp = output.with_name(output.name + ".part")
        with tmp.open("w", newline="") as fh:
            n = csv_io.write_long(reader, info.id, fh)
        tmp.replace(output)  # never leave a half-written file under the requested name
        err_console.print(
            f"wrote {n} rows of run {literal(info.name)} to {literal(output)}", highlight=False
        )
        return
    from ..io import tensorboard as tb_io

    target = output or Path("tb") / _dir_name(info.name, info.id)
    n = tb_io.write(reader, info.id, target)
    err_console.print(
        f"wrote {n} scalars of run {literal(info.name)} to {literal(target)} "
        f"(view with: tensorboard --logdir {literal(target)})",
        highlight=False,
    )


class _OnTerminal:
    """A text stream to a terminal: control characters made visible, line breaks kept."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        return self._out.write(clean(text, newlines=True))


def _dir_name(name: str, run_id: str) -> str:
    """The run's name as one directory name under ./tb: a name is not a path (`../x`, `a/b`),
    and control characters make names nobody can type."""
    safe = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in name).strip()
    return run_id if safe in ("", ".", "..") else safe
