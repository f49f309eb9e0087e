"""Who may read the dashboard, and the headers every response carries.

- Bound to loopback without a token, requests must name a loopback host in `Host`, so a web page
  elsewhere cannot read the dashboard through DNS rebinding.
- With a token (required off loopback), every request carries it: `?token=`, an
  `Authorization: Bearer` / `X-Tunescope-Token` header, or the cookie set when a page was first
  opened with `?token=` (that page is then reloaded without the token in its address).
- Every response forbids inline scripts, framing and referrers (so a token never leaks).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}

# Plotly sets styles from script and adds <style> rules, hence 'unsafe-inline' for styles only.
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
        b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh URL-safe access token."""
    return secrets.token_urlsafe(24)


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware: checks the token (or a loopback Host) and adds security headers."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        # Cookies are shared by every port of a host: name this server's after its token.
        digest = hashlib.sha256(token.encode()).hexdigest()[:12] if token else ""
        self.cookie = f"tunescope_{digest}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *HEADERS]
            await send(message)

        if self.token is None:
            if not is_loopback(_host_name(headers.get("host", ""))):
                await _deny(scope, send_with_headers, 403, _HOST_MESSAGE)
                return
            await self.app(scope, receive, send_with_headers)
            return
        given, from_query = self._given(headers, query)
        if given is None or not secrets.compare_digest(given.encode(), self.token.encode()):
            await _deny(scope, send_with_headers, 401, _TOKEN_MESSAGE)
            return
        if from_query and not scope["path"].startswith(("/api/", "/static/")):
            await self._redirect_without_token(scope, query, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _given(self, headers: dict[str, str], query: dict[str, str]) -> tuple[str | None, bool]:
        if "token" in query:
            return query["token"], True
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        if "x-tunescope-token" in headers:
            return headers["x-tunescope-token"], False
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is simply no token
            return None, False
        morsel = cookies.get(self.cookie)
        return (morsel.value if morsel else None), False

    async def _redirect_without_token(
        self, scope: Scope, query: dict[str, str], send: Send
    ) -> None:
        """Trade `?token=` for a cookie, and take the token out of the address bar."""
        rest = urlencode({k: v for k, v in query.items() if k != "token"})
        location = scope["path"] + (f"?{rest}" if rest else "")
        cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1", "replace")),
                    (b"set-cookie", cookie.encode()),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


_TOKEN_MESSAGE = (
    "this dashboard needs its access token: open the URL that `tunescope ui` printed "
    "(it ends in ?token=...), or send the header 'Authorization: Bearer <token>'"
)
_HOST_MESSAGE = (
    "this dashboard only answers requests addressed to 127.0.0.1 or localhost; to serve other "
    "hosts, start it with --host and use the token URL it prints"
)


async def _deny(scope: Scope, send: Send, status: int, message: str) -> None:
    if scope["type"] != "http":  # no websockets here; refuse the handshake
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
