"""Serving the dashboard under uvicorn so that hostile or heavy clients cannot take it down.

uvicorn's HTTP/1.1 protocol (h11) has no deadline for reading a request: its keep-alive timer
runs only *after* a response, so a client that connects and sends half a header (or nothing)
holds a socket for ever, and enough of them exhaust the file descriptors. At that limit asyncio's
accept loop logs one traceback per attempt, up to `backlog` attempts per tick (CPython 3.11),
which wrote 127 MB of "Too many open files" in ten seconds. `DashboardProtocol` adds what is
missing, and `config` sets the rest:

- a request deadline (`request_timeout`): from its first byte (or from the connect) a client
  has that long to send a whole request, else the connection is closed (nginx's
  `client_header_timeout`, Go's `ReadHeaderTimeout`);
- a write deadline: a client that stops reading a response is dropped after `WRITE_TIMEOUT`,
  so it cannot pin the response's buffer for ever;
- a cap on open connections, below the file-descriptor limit, so accept never fails: one
  connection over the cap is answered 503 and closed at once;
- TCP_NODELAY on every connection: h11 writes headers and body separately, and without it
  Nagle's algorithm holds the body until the client's delayed ACK (~40 ms per request);
- `RateLimit`, a logging filter, so that no kind of message can flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("tunescope.ui")

REQUEST_TIMEOUT = 10.0  # s to send one whole request; a browser needs milliseconds
KEEP_ALIVE = 5  # s an idle keep-alive connection stays open (uvicorn's default, made explicit)
WRITE_TIMEOUT = 30.0  # s a client may leave a response unread (< 48 KB read in that time)
MAX_CONNECTIONS = 2_000  # above the 1,000 open pages (event streams) measured to work
FD_RESERVE = 256  # descriptors kept for the store (3 per worker thread), static files, logs
MAX_HEADER_BYTES = 16 * 1024  # h11's default bound on a request head, made explicit
BACKLOG = 2_048  # uvicorn's default listen queue: at 128, 3 of 500 clients connecting at once
# timed out. It also bounds asyncio's accept loop per tick, which the log rate limit covers.
LOGGERS = ("asyncio", "uvicorn.error", "tunescope.ui")  # the loggers a client can make write

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 46\r\nretry-after: 5\r\nconnection: close\r\n\r\n"
    b"too many open connections; try again shortly\r\n"
)


@dataclass
class Limits:
    """What one connection may take: deadlines in seconds, and the open-connection cap."""

    request_timeout: float = REQUEST_TIMEOUT
    write_timeout: float = WRITE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS


class DashboardProtocol(H11Protocol):
    """uvicorn's h11 protocol plus a request deadline, a write deadline, a connection cap and
    TCP_NODELAY (see the module docstring for why each)."""

    limits = Limits()  # set per server by `config` (uvicorn builds one protocol per connection)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # already closed by the peer: nothing to speed up
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self.connections) > self.limits.max_connections:
            log.warning(
                "refused a connection: %d open, the limit is %d",
                len(self.connections) - 1,
                self.limits.max_connections,
            )
            self.transport.write(_REFUSAL)
            self.transport.close()
            return
        self._arm_request_timer()

    def data_received(self, data: bytes) -> None:
        if self._request_timer is None and self._awaiting_request():
            self._arm_request_timer()  # the first byte of the next request on this connection
        super().data_received(data)
        if not self._awaiting_request():
            self._cancel_request_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._awaiting_request():  # a pipelined request was complete already
            self._cancel_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        self._cancel_write_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(
                self.limits.write_timeout, self._write_timed_out
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write_timer()

    def _awaiting_request(self) -> bool:
        # IDLE: the request line or headers are not all here; SEND_BODY: the body is not.
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def _arm_request_timer(self) -> None:
        self._cancel_request_timer()
        self._request_timer = self.loop.call_later(
            self.limits.request_timeout, self._request_timed_out
        )

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if not self.transport.is_closing() and self._awaiting_request():
            log.warning(
                "closed a connection that sent no complete request within %g s",
                self.limits.request_timeout,
            )
            self.transport.close()

    def _write_timed_out(self) -> None:
        self._write_timer = None
        log.warning(
            "dropped a connection that read none of its response for %g s",
            self.limits.write_timeout,
        )
        self.transport.abort()  # close() would wait for the unread buffer to drain


class RateLimit(logging.Filter):
    """Lets through at most `burst` records of one kind per `window` seconds.

    A kind is the logger plus the first line of the message template, so a record repeated
    with different arguments (or asyncio's pre-formatted messages) counts as one kind. The
    first record after a quiet window says how many were held back.

    >>> f = RateLimit(window=60, burst=1)
    >>> [f.filter(logging.makeLogRecord({"msg": "x %d", "args": (i,)})) for i in range(3)]
    [True, False, False]
    """

    MAX_KINDS = 1_000  # forget every kind past this many (bounded memory, at worst a re-burst)

    def __init__(self, window: float = 60.0, burst: int = 3) -> None:
        super().__init__()
        self.window, self.burst = window, burst
        self._kinds: dict[tuple[str, str], list[float]] = {}  # kind -> [start, count, held]

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg).split("\n", 1)[0][:200])
        now = time.monotonic()
        state = self._kinds.get(kind)
        if state is None or now - state[0] >= self.window:
            if len(self._kinds) >= self.MAX_KINDS:
                self._kinds.clear()
            held = int(state[2]) if state is not None else 0
            self._kinds[kind] = [now, 1, 0]
            if held:
                note = f" [{held} more like this in the previous {self.window:g} s not logged]"
                record.msg = str(record.msg) + note.replace("%", "%%")
            return True
        state[1] += 1
        if state[1] <= self.burst:
            return True
        state[2] += 1
        return False


def install_rate_limit(window: float = 60.0, burst: int = 3) -> RateLimit:
    """Attach one `RateLimit` to every logger a client's behaviour can make write (once)."""
    limit = RateLimit(window, burst)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RateLimit)]:
            logger.removeFilter(old)
        logger.addFilter(limit)
    return limit


def raise_fd_limit(wanted: int = MAX_CONNECTIONS + FD_RESERVE) -> int:
    """Raise the soft open-file limit towards `wanted` (never past the hard limit, as Go's
    runtime does at start); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # some sandboxes refuse: keep the limit we have
            pass
    return MAX_CONNECTIONS + FD_RESERVE if soft == resource.RLIM_INFINITY else soft


def connection_cap(fd_limit: int, wanted: int = MAX_CONNECTIONS) -> int:
    """Open connections allowed under `fd_limit` descriptors, keeping a reserve for the rest.

    >>> connection_cap(20_000), connection_cap(1_024), connection_cap(128)
    (2000, 768, 64)
    """
    reserve = min(FD_RESERVE, fd_limit // 2)
    return max(1, min(wanted, fd_limit - reserve))


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one), created as IPPROTO_TCP.

    asyncio sets TCP_NODELAY only on sockets whose `proto` is IPPROTO_TCP, and accepted
    sockets inherit it from this one; a socket made with the default proto 0 never gets it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)  # connections queue from now on: the printed URL already answers
    except OSError:
        sock.close()
        raise
    return sock


def config(
    app: Any,
    *,
    limits: Limits | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> uvicorn.Config:
    """The uvicorn configuration `tunescope ui` serves `app` with.

    >>> cfg = config(create_app("/tmp/example-store"))   # doctest: +SKIP
    >>> uvicorn.Server(cfg).run(sockets=[listen("127.0.0.1", 0)])  # doctest: +SKIP
    """
    limits = limits or Limits()
    protocol = type("DashboardProtocol", (DashboardProtocol,), {"limits": limits})
    cfg = uvicorn.Config(
        app,
        http=protocol,
        ws="none",  # the dashboard has no websocket route
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=1,
        # uvicorn answers 503 to requests past this many open connections or running requests;
        # the protocol already refuses connections past it, before they cost a request.
        limit_concurrency=limits.max_connections + 1,
        backlog=BACKLOG,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        server_header=False,
    )
    install_rate_limit()  # after Config: its logging set-up must not replace the filter
    return cfg
