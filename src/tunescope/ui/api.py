"""The dashboard's read-only HTTP API (see docs/dashboard.md for every route and field).

Endpoints are plain functions: Starlette runs them on its thread pool, and each thread reads the
store through its own connection (`Readers`). Every answer is strict JSON: NaN and ±inf travel
as null values with explicit markers, never as bare `NaN` tokens.

Curves are the one costly answer: a 10,000-point curve of a 1M-point series decodes up to
2.5M points (~100 MB for a moment). Fifty at once took the server to 3.5 GB, and glibc kept
most of it. So at most `CURVES_AT_ONCE` requests compute curves at a time; the others wait
on the event loop (not on a worker thread, so the rest of the API stays quick), and a compare
answer is serialised one run at a time instead of holding every run's buckets as objects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
from collections.abc import Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from ..names import namespace
from ..store import Reader, RunInfo, jsonable
from . import overview
from .compare import config_diff
from .params import MAX_POINTS, BadRequest, integer, run_list, step_range, text
from .series import curve

DEFAULT_POINTS = 1_000
CURVES_AT_ONCE = 4  # curve requests computed at once: peak memory ~ this x ~100 MB
MAX_COMPARE_BUCKETS = 200_000  # points x runs per compare (the page asks <= 4,000 x 50)


def dumps(obj: Any) -> bytes:
    """Strict compact JSON (non-finite floats become "nan"/"inf"/"-inf" strings)."""
    try:  # buckets already carry non-finite values as markers: skip the copy when it is clean
        body = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    except ValueError:
        body = json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":"))
    return body.encode()


def json_response(obj: Any, status: int = 200) -> Response:
    """A strict JSON answer (see `dumps`)."""
    return Response(dumps(obj), status_code=status, media_type="application/json")


def _trim_heap() -> None:
    """Hand freed memory back to the OS (glibc's `malloc_trim`; nothing elsewhere).

    glibc keeps what a thread freed in that thread's arena, so after a burst of curves the
    server stayed at its peak (318 MB after 50 requests, 86 MB with this); it costs < 1 ms.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc() if sys.platform.startswith("linux") else None


async def _curves(request: Request, endpoint: Callable[[Request], Response]) -> Response:
    """Run a curve endpoint on a worker thread, at most `CURVES_AT_ONCE` at a time."""

    def work() -> Response:
        try:
            return endpoint(request)
        finally:
            _trim_heap()

    async with request.app.state.curves:
        return await anyio.to_thread.run_sync(work)


def _reader(request: Request) -> Reader:
    reader: Reader = request.app.state.readers.get()
    return reader


MAX_REF = 300  # run names and ids are far shorter; longer is a mistake, not a lookup


def _run(request: Request) -> tuple[Reader, RunInfo]:
    reader = _reader(request)
    ref = request.path_params["run"]
    if len(ref) > MAX_REF:
        raise BadRequest(f"run reference is {len(ref)} characters long (limit {MAX_REF})")
    return reader, reader.run(ref)  # RunNotFound -> 404


def _keys(reader: Reader, run_id: str) -> list[dict[str, Any]]:
    return [{**k, "group": namespace(k["key"])} for k in reader.keys(run_id)]


def runs(request: Request) -> Response:
    """`GET /api/runs`: every run with status, steps, best eval, test metrics, findings."""
    return json_response({"runs": overview.runs(_reader(request).con)})


def run(request: Request) -> Response:
    """`GET /api/runs/{run}`: one run: the list row plus config, env, summary, metrics."""
    reader, info = _run(request)
    row = overview.runs(reader.con, info.id)[0]
    row.update(
        config=info.config,
        env=info.env,
        summary=info.summary,
        keys=_keys(reader, info.id),
        confusion=overview.confusion(info.summary),
        segment_starts=reader.segment_starts(info.id),
    )
    return json_response(row)


def keys(request: Request) -> Response:
    """`GET /api/runs/{run}/keys`: metric keys with point count, last step and value, group."""
    reader, info = _run(request)
    return json_response({"run": info.id, "keys": _keys(reader, info.id)})


def _points(request: Request) -> int:
    points = integer(request.query_params, "points", DEFAULT_POINTS, 1, MAX_POINTS)
    return DEFAULT_POINTS if points is None else points


def _check_key(reader: Reader, info: RunInfo, key: str) -> None:
    known = [k["key"] for k in reader.keys(info.id)]
    if key not in known:
        listed = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        raise BadRequest(
            f"run {info.name!r} has no metric {key!r}; its metrics: {listed or 'none yet'}", 404
        )


async def series(request: Request) -> Response:
    """`GET /api/runs/{run}/series?key=K&points=N[&start=S&end=E]`: downsampled buckets."""
    return await _curves(request, _series)


def _series(request: Request) -> Response:
    reader, info = _run(request)
    key = text(request.query_params, "key") or ""
    points = _points(request)
    start, end = step_range(request.query_params)
    _check_key(reader, info, key)
    return json_response({"run": info.id, **curve(reader, info.id, key, points, start, end)})


def _finding_view(group: list[dict[str, Any]]) -> dict[str, Any]:
    """One finding from its events (raised, updated, ...): the latest, with its history."""
    latest = dict(group[-1])
    data = latest.get("data") or {}
    first = data.get("first_step", group[0]["step"])
    latest["first_step"] = first if isinstance(first, int) else group[0]["step"]
    last = data.get("last_step", latest["step"])
    latest["last_step"] = last if isinstance(last, int) else latest["step"]
    latest["raised_step"] = group[0]["step"]
    latest["updates"] = len(group)
    return latest


def events(request: Request) -> Response:
    """`GET /api/runs/{run}/events`: raw events, findings grouped by `ref`, interventions."""
    reader, info = _run(request)
    raw = [e.to_json() for e in reader.events(info.id)]
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in raw:
        if e["type"] == "finding":
            groups.setdefault(e["ref"] or f"#{e['id']}", []).append(e)
    findings = sorted((_finding_view(g) for g in groups.values()), key=lambda f: f["first_step"])
    interventions = [e for e in raw if e["type"] == "intervention"]
    return json_response(
        {"run": info.id, "events": raw, "findings": findings, "interventions": interventions}
    )


async def compare(request: Request) -> Response:
    """`GET /api/compare?runs=a,b[&key=K&points=N&start=S&end=E]`: runs side by side."""
    return await _curves(request, _compare)


def _compare(request: Request) -> Response:
    reader = _reader(request)
    refs = run_list(request.query_params)
    key = text(request.query_params, "key", required=False)
    points = _points(request)
    start, end = step_range(request.query_params)
    if key is not None and points * len(refs) > MAX_COMPARE_BUCKETS:
        raise BadRequest(
            f"points x runs is {points * len(refs):,} (limit {MAX_COMPARE_BUCKETS:,}): ask for "
            f"at most {MAX_COMPARE_BUCKETS // len(refs):,} points for {len(refs)} runs"
        )
    infos = [reader.run(r) for r in refs]
    all_keys = sorted({k["key"] for i in infos for k in reader.keys(i.id)})
    if key is not None and key not in all_keys:
        raise BadRequest(f"none of these runs has a metric {key!r}", 404)
    out: dict[str, Any] = {
        "runs": [
            {"id": i.id, "name": i.name, "project": i.project, "status": i.status} for i in infos
        ],
        "keys": all_keys,
        "config_diff": config_diff([i.config for i in infos], all_keys=True),
        "key": key,
        "series": [],  # last: filled below, one run's JSON at a time
    }
    head = dumps(out)
    assert head.endswith(b"[]}")
    parts = (
        [dumps({"run": i.id, **curve(reader, i.id, key, points, start, end)}) for i in infos]
        if key is not None
        else []
    )
    body = head[:-2] + b",".join(parts) + b"]}"
    return Response(body, media_type="application/json")
