"""`tunescope import`: bring a CSV file or a TensorBoard log directory into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..io import csv as csv_io
from ..store import Store
from .app import StoreOption, app, err_console
from .safe import literal


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

    if path.is_dir():
        from ..io import tensorboard as tb_io

        rows = list(tb_io.read(path))
    else:
        rows = list(csv_io.read(path))  # parse everything first: a bad file creates no run
    Store(store)  # create the store if needed, with a clear error if it cannot be
    run = tunescope.init(
        project, name=name or path.stem, store=store, config={"imported_from": str(path.absolute())}
    )
    try:
        n = csv_io.log_rows(run, iter(rows))
    except BaseException:
        run.finish("failed")
        raise
    run.finish()
    where = run.store.path if run.store else ""
    err_console.print(
        f"imported {n} values into run {literal(run.name)} ({literal(run.id)}) in {literal(where)}",
        highlight=False,
    )
