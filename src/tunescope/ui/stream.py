"""Server-sent events: poll the store cheaply and push what changed.

Training processes write the store; the dashboard never talks to them. Every `interval` seconds
the stream reads a few aggregates (run count, steps, statuses, last event id) and, for the run a
page shows, each metric's point count; it sends an event only when something changed. Pages
then fetch the new buckets of what they show.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.requests import Request

from ..store import Reader
from ..store.status import effective_status

KEEPALIVE = 15.0  # seconds between comments that keep proxies from closing an idle stream


def runs_state(reader: Reader) -> dict[str, Any]:
    """A cheap fingerprint of the runs table: changes whenever the runs list would."""
    con = reader.con
    now = time.time()
    count, created, steps, segments = con.execute(
        "SELECT count(*), max(created), total(last_step), total(segment) FROM runs"
    ).fetchone()
    # Only runs marked running can change status (finish, or crash without writing anything).
    live = con.execute(
        "SELECT id, status, proc, heartbeat FROM runs WHERE status='running' ORDER BY id"
    ).fetchall()
    statuses = {rid: effective_status(st, proc, hb, now) for rid, st, proc, hb in live}
    (event_id,) = con.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
    return {
        "count": count,
        "created": created,
        "steps": steps + segments,
        "running": sorted(r for r, s in statuses.items() if s == "running"),
        "events": event_id,
    }


def run_state(reader: Reader, run_id: str) -> dict[str, Any] | None:
    """What a run page needs to know changed: status, steps, points per metric, last event."""
    con = reader.con
    row = con.execute(
        "SELECT status, proc, heartbeat, last_step, segment FROM runs WHERE id=?", (run_id,)
    ).fetchone()
    if row is None:
        return None
    status, proc, heartbeat, last_step, segment = row
    keys = {
        key: [n, step]
        for key, n, step in con.execute(
            "SELECT key, n, last_step FROM series WHERE run=? AND n > 0", (run_id,)
        )
    }
    (event_id,) = con.execute(
        "SELECT coalesce(max(id), 0) FROM events WHERE run=?", (run_id,)
    ).fetchone()
    return {
        "id": run_id,
        "status": effective_status(status, proc, heartbeat),
        "last_step": last_step,
        "segments": segment + 1,
        "keys": keys,
        "events": event_id,
    }


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n"


def _changed_keys(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    before = old["keys"] if old else {}
    return sorted(k for k, v in new["keys"].items() if before.get(k) != v)


async def events(
    request: Request,
    read: Callable[[Callable[[Reader], Any]], Any],
    run_id: str | None,
    interval: float,
    stop: threading.Event,
) -> AsyncIterator[str]:
    """The event stream: `hello` first, then `runs` and `run` events when something changed.

    `read(fn)` runs `fn(reader)` on a worker thread with that thread's reader; `stop` ends the
    stream (server shutdown), so Ctrl-C does not wait for open pages to go away.
    """
    yield "retry: 2000\n\n"
    last_runs: dict[str, Any] | None = None
    last_run: dict[str, Any] | None = None
    quiet_since = time.monotonic()
    first = True
    while not stop.is_set() and not await request.is_disconnected():
        state = await read(runs_state)
        one = await read(lambda r: run_state(r, run_id)) if run_id else None
        out = []
        if first:
            out.append(_sse("hello", {"runs": state, "run": one}))
        else:
            if state != last_runs:
                out.append(_sse("runs", state))
            if one is not None and one != last_run:
                out.append(_sse("run", {**one, "changed": _changed_keys(last_run, one)}))
        first = False
        last_runs, last_run = state, one
        if out:
            quiet_since = time.monotonic()
            yield "".join(out)
        elif time.monotonic() - quiet_since > KEEPALIVE:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await anyio.sleep(interval)
