"""`tunescope events RUN`: a run's findings and interventions in step order."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ..text import clean, literal
from .app import JsonOption, StoreOption, app, console

_SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


def collect(events: list[Any]) -> list[dict[str, Any]]:
    """Findings (collapsed by id, with their state) and interventions, in step order.

    Each item has `type` ("finding" | "intervention"), `kind` (findings) or `action`
    (interventions), `step`, `severity`, `message`, plus `id`, `last_step`, `state`, `evidence`
    and `recommendation` for findings and `data`/`ref` for interventions.
    """
    from ..diagnose import findings_from_events
    from ..store import jsonable

    items: list[tuple[int, int, dict[str, Any]]] = []
    order = {}
    for n, ev in enumerate(events):
        if ev.type == "finding" and ev.ref and ev.ref not in order:
            order[ev.ref] = n
    for f in findings_from_events(events):
        item = {"type": "finding", **f.to_json()}
        items.append((f.step, order.get(f.id, 0), item))
    for n, ev in enumerate(events):
        if ev.type != "intervention":
            continue
        item = {
            "type": "intervention",
            "action": ev.kind,
            "step": ev.step,
            "severity": ev.severity,
            "message": ev.message,
            "ref": ev.ref,
            "data": jsonable(ev.data),
        }
        items.append((ev.step, n, item))
    items.sort(key=lambda t: (t[0], t[1]))
    return [item for _, _, item in items]


@app.command("events")
def events_command(
    run: Annotated[str, typer.Argument(help="Run name or id.")],
    json_: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """List a run's findings (collapsed, with their state) and interventions in step order."""
    from ..store import Store

    reader = Store(store, create_if_missing=False).reader()
    info = reader.run(run)
    events = reader.events(info.id)
    items = collect(events)
    if json_:
        print(json.dumps(items, indent=2, allow_nan=False))
        return
    if not items:
        console.print(f"no findings or interventions in run {literal(info.name)}", highlight=False)
    for item in items:
        style = _SEVERITY_STYLE.get(item["severity"], "")
        severity = f"[{style}]{literal(item['severity'])}[/]"
        if item["type"] == "finding":
            span = f"step {item['step']}"
            if item["last_step"] > item["step"]:
                span += f"–{item['last_step']}"
            head = (
                f"{severity} finding [bold]{literal(item['kind'])}[/] {span} "
                f"({literal(item['state'])})"
            )
        else:
            head = f"{severity} intervention [bold]{literal(item['action'])}[/] step {item['step']}"
        console.print(head, highlight=False)
        console.print(f"  {clean(item['message'])}", highlight=False, markup=False)
        rec = item.get("recommendation") or {}
        if rec.get("text"):
            console.print(f"  → {clean(rec['text'])}", highlight=False, markup=False)
    notes = [e for e in events if e.type not in ("finding", "intervention")]
    for ev in notes:
        console.print(
            f"[dim]note {literal(ev.kind)} step {ev.step}: {literal(ev.message)}[/]",
            highlight=False,
        )
