"""`tunescope import`: bring a CSV file or a TensorBoard log directory into the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from ..io import csv as csv_io
from ..store import Store
from ..text import literal
from .app import StoreOption, app, err_console


@app.command("import")
def import_command(
    path: Annotated[
        Path, typer.Argument(help="A metrics CSV (long or wide) or a TensorBoard log directory.")
    ],
    project: Annotated[str, typer.Option(help="Project of the new run.")] = "imported",
    name: Annotated[
        str | None, typer.Option(help="Name of the new run (default: file name).")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Import metrics into the store as a new, finished run."""
    import tunescope

    # Every row is checked before the run exists, so a bad file creates no run.
    if path.is_dir():
        from ..io import tensorboard as tb_io

        # TensorBoard's loader holds every event in memory anyway; read() sorts them by time.
        tb_rows = list(tb_io.read(path))

        def rows() -> Iterator[csv_io.Row]:
            return iter(tb_rows)
    else:
        # Two streaming passes over a CSV, not one list of its rows (10M rows: 1.7 GB):
        # validate every row, then read the file again while writing.
        for _ in csv_io.read(path):
            pass

        def rows() -> Iterator[csv_io.Row]:
            return csv_io.read(path)

    Store(store)  # create the store if needed, with a clear error if it cannot be
    run = tunescope.init(
        project, name=name or path.stem, store=store, config={"imported_from": str(path.absolute())}
    )
    try:
        n = csv_io.log_rows(run, rows())
    except BaseException:
        run.finish("failed")
        raise
    run.finish()
    where = run.store.path if run.store else ""
    err_console.print(
        f"imported {n} values into run {literal(run.name)} ({literal(run.id)}) in {literal(where)}",
        highlight=False,
    )
