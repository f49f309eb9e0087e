"""Findings printed live in the terminal (mode `advise`): a listener for the store writer.

>>> from rich.console import Console
>>> listen = terminal_listener(Console())      # Run(..., observer=monitor, listener=listen)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..records import EventRecord

# The one helper for stored text on a terminal (markup escaped, control characters visible).
from ..text import clean, literal
from .findings import RAISED, UPDATED, Severity

_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


def terminal_listener(console: Any) -> Callable[[list[EventRecord]], None]:
    """A listener that prints each raised finding (and each one whose severity rose).

    `console` is a `rich.console.Console`. Runs on the store's writer thread after the
    events are committed; printing never blocks training for long.
    """
    shown: dict[str, str] = {}  # finding id -> severity printed

    def listen(events: list[EventRecord]) -> None:
        for ev in events:
            if ev.type != "finding":
                continue
            state = ev.data.get("state")
            ref = ev.ref or ""
            before = shown.get(ref)
            if state == RAISED or (
                state == UPDATED and before is not None and _rank(ev.severity) > _rank(before)
            ):
                shown[ref] = ev.severity
                _print(console, ev, escalated=state == UPDATED)

    return listen


def _rank(severity: str) -> int:
    try:
        return Severity(severity).rank
    except ValueError:
        return 0


def _print(console: Any, ev: EventRecord, *, escalated: bool) -> None:
    # Kinds, messages and recommendations quote metric keys and values: escaped, no emoji codes.
    style = _STYLE.get(ev.severity, "")
    first = ev.data.get("first_step", ev.step)
    what = literal("now " + ev.severity if escalated else ev.severity)
    console.print(
        f"[{style}]tunescope {what}[/] [bold]{literal(ev.kind)}[/] at step {literal(first)}: ",
        end="",
        highlight=False,
        emoji=False,
    )
    console.print(clean(ev.message), markup=False, highlight=False, emoji=False)
    rec = (ev.data.get("recommendation") or {}).get("text")
    if rec:
        console.print(f"  → {clean(rec)}", markup=False, highlight=False, emoji=False)
