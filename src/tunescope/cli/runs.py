"""`tunescope runs`: list the runs in a store."""

from __future__ import annotations

import json
import time

from rich.table import Table

from ..store import Store
from ..text import literal
from ..values import fmt
from .app import JsonOption, StoreOption, app, console

_STATUS_STYLE = {"running": "cyan", "finished": "green", "failed": "red", "crashed": "bold red"}


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@app.command("runs")
def runs_command(store: StoreOption = None, json_: JsonOption = False) -> None:
    """List runs: name, id, project, status, steps, last value of each metric, start, duration."""
    reader = Store(store, create_if_missing=False).reader()
    runs = reader.runs()
    if json_:
        print(json.dumps([r.to_json() for r in runs], indent=2))
        return
    if not runs:
        console.print(f"no runs yet in {literal(Store(store, create_if_missing=False).path)}")
        return
    table = Table(title=None, show_lines=False)
    for col in ("name", "id", "project", "status", "steps", "last values", "started", "duration"):
        table.add_column(col, overflow="fold")
    for r in runs:
        # Table cells are markup: every stored string goes in through `literal`.
        last = "  ".join(f"{literal(k)}={fmt(v)}" for k, v in r.last.items())
        steps = "" if r.last_step is None else str(r.last_step)
        table.add_row(
            literal(r.name),
            literal(r.id),
            literal(r.project),
            f"[{_STATUS_STYLE.get(r.status, '')}]{literal(r.status)}[/]",
            steps,
            last,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
            _duration(r.duration),
        )
    console.print(table)
