"""The dashboard: a Starlette app serving three pages, their static files and the HTTP API.

>>> from tunescope.ui import create_app
>>> app = create_app("/tmp/example-store")       # doctest: +SKIP
>>> # uvicorn.run(app, host="127.0.0.1", port=8765)

Pages are fixed HTML files that fetch everything from the API and build the DOM with
`textContent`, so no stored string (run name, config value, metric name, finding message) is
ever parsed as HTML. Static files are served from a fixed list known at start-up, so no request
path can reach any other file.
"""

from __future__ import annotations

import importlib.util
import logging
import mimetypes
import sqlite3
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import TunescopeError
from ..store import Reader, RunNotFound, StoreError
from . import api
from .db import Readers
from .params import BadRequest, text
from .security import Guard
from .stream import events

log = logging.getLogger("tunescope.ui")

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
PAGES = {"runs": "runs.html", "run": "run.html", "compare": "compare.html"}


class DashboardError(TunescopeError):
    """The dashboard cannot start (missing plotly, bad store)."""


def plotly_js() -> Path:
    """The plotly.js bundle shipped inside the `plotly` Python package (no CDN, works offline)."""
    spec = importlib.util.find_spec("plotly")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise DashboardError(
        "the dashboard draws its charts with the plotly.js bundled in the `plotly` package, "
        "which is not installed: pip install 'tunescope[ui]'"
    )


def static_files() -> dict[str, Path]:
    """Every file the static route may serve, by URL name (a fixed list: no path traversal)."""
    files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and not p.name.startswith(".")}
    files["plotly.min.js"] = plotly_js()
    return files


def _error(message: str, status: int) -> Response:
    return api.json_response({"error": message}, status)


def static(request: Request) -> Response:
    """`GET /static/{name}`: one of the files listed at start-up, else 404."""
    name = request.path_params["name"]
    path = request.app.state.static.get(name)
    if path is None:
        return _error(f"no static file {name[:100]!r}", 404)
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media.startswith("text/") or media.endswith("javascript"):
        media += "; charset=utf-8"
    return FileResponse(path, media_type=media, headers={"cache-control": "no-cache"})


def page(name: str) -> Any:
    """An endpoint serving the fixed HTML file of one page."""

    def endpoint(request: Request) -> Response:
        body = request.app.state.pages[name]
        return Response(body, media_type="text/html; charset=utf-8")

    return endpoint


async def stream(request: Request) -> Response:
    """`GET /api/stream[?run=R]`: server-sent events when runs (or run R) change."""
    readers: Readers = request.app.state.readers

    async def read(fn: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: fn(readers.get()))

    ref = text(request.query_params, "run", required=False)
    run_id = None
    if ref is not None:
        info = await read(lambda r: Reader.run(r, ref))
        run_id = info.id
    return StreamingResponse(
        events(request, read, run_id, request.app.state.poll, request.app.state.shutdown),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def on_bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return _error(exc.message, exc.status)


async def on_not_found(request: Request, exc: Exception) -> Response:
    return _error(str(exc), 404)


async def on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 405:
        detail = "the dashboard is read-only: only GET and HEAD requests are served"
    elif exc.status_code == 404:
        detail = f"no such page or API route: {request.url.path[:200]}"
    return _error(str(detail), exc.status_code)


async def on_store(request: Request, exc: Exception) -> Response:
    return _error(f"the store cannot be read right now: {exc}", 503)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("dashboard: %s failed", request.url.path)
    return _error(f"internal error while answering {request.url.path[:200]}: {exc!r}", 500)


async def on_sqlite(request: Request, exc: Exception) -> Response:
    log.warning("dashboard: store query failed: %s", exc)
    return _error(f"the store cannot be read right now: {exc}", 503)


def create_app(
    store: str | Path | None = None, *, token: str | None = None, poll: float = 0.5
) -> Starlette:
    """The dashboard app for a store.

    `token`: when set, every request must carry it (see security.py); `poll`: seconds between
    the checks behind the live-update stream.
    """
    readers = Readers(Path(store) if store is not None else None)
    statics = static_files()
    pages = {k: (TEMPLATES_DIR / v).read_bytes() for k, v in PAGES.items()}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        readers.close()

    get = ["GET", "HEAD"]
    routes = [
        Route("/", page("runs"), methods=get),
        Route("/runs/{run}", page("run"), methods=get),
        Route("/compare", page("compare"), methods=get),
        Route("/static/{name}", static, methods=get),
        Route("/api/runs", api.runs, methods=get),
        Route("/api/runs/{run}", api.run, methods=get),
        Route("/api/runs/{run}/keys", api.keys, methods=get),
        Route("/api/runs/{run}/series", api.series, methods=get),
        Route("/api/runs/{run}/events", api.events, methods=get),
        Route("/api/compare", api.compare, methods=get),
        Route("/api/stream", stream, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            BadRequest: on_bad_request,
            RunNotFound: on_not_found,
            HTTPException: on_http,
            StoreError: on_store,
            sqlite3.OperationalError: on_sqlite,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.readers = readers
    app.state.static = statics
    app.state.pages = pages
    app.state.poll = poll
    app.state.curves = anyio.Semaphore(api.CURVES_AT_ONCE)
    app.state.shutdown = threading.Event()  # set by `tunescope ui` on Ctrl-C: ends open streams
    app.add_middleware(Guard, token=token)
    return app
