"""`tunescope ui`: serve the live dashboard of a store until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .app import StoreOption, app, console, fail

HostOption = Annotated[
    str,
    typer.Option(
        "--host",
        help="Address to bind. Anything but loopback requires a token (one is generated).",
    ),
]
PortOption = Annotated[int, typer.Option("--port", help="Port to listen on.", min=0, max=65535)]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Access token every request must carry (generated when binding a non-loopback "
        "address without one).",
        show_default=False,
    ),
]


RequestTimeoutOption = Annotated[
    float,
    typer.Option(
        "--request-timeout",
        help="Seconds a client has to send a whole request; slower connections are closed.",
        min=0.1,
    ),
]
CertOption = Annotated[
    Path | None,
    typer.Option(
        "--ssl-certfile",
        help="Serve HTTPS with this PEM certificate (with --ssl-keyfile).",
        show_default=False,
    ),
]
KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--ssl-keyfile",
        help="The PEM private key of --ssl-certfile.",
        show_default=False,
    ),
]


def _url(host: str, port: int, token: str | None, scheme: str = "http") -> str:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"  # the wildcard is no address to open; any of the machine's will do
    return f"{scheme}://{shown}:{port}/" + (f"?token={token}" if token else "")


def _tls(certfile: Path | None, keyfile: Path | None) -> tuple[str | None, str | None]:
    if (certfile is None) != (keyfile is None):
        raise fail("--ssl-certfile and --ssl-keyfile go together: give both, or neither")
    for opt, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if path is not None and not path.is_file():
            raise fail(f"{opt} {path}: no such file")
    return (str(certfile) if certfile else None), (str(keyfile) if keyfile else None)


def notices(host: str, *, tls: bool) -> list[str]:
    """What `tunescope ui` says about serving `host` beyond this machine (nothing on loopback)."""
    from ..ui.security import is_loopback

    if is_loopback(host):
        return []
    lines = [
        "serving beyond this machine: every request must carry the token above "
        "(API clients: send it as 'Authorization: Bearer <token>')"
    ]
    if not tls:
        lines.append(
            "warning: plain HTTP sends the token and every answer in clear over the network; "
            "put a TLS proxy in front, or pass --ssl-certfile/--ssl-keyfile"
        )
    return lines


@app.command("ui")
def ui_command(
    store: StoreOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8765,
    token: TokenOption = None,
    request_timeout: RequestTimeoutOption = 10.0,
    ssl_certfile: CertOption = None,
    ssl_keyfile: KeyOption = None,
) -> None:
    """Serve the live dashboard (runs, curves with findings, compare) until Ctrl-C."""
    import ssl

    import uvicorn

    from ..ui import create_app, server
    from ..ui.security import is_loopback, new_token

    if token is not None and len(token) < 16:
        raise fail("--token must be at least 16 characters; leave it out to get a generated one")
    certfile, keyfile = _tls(ssl_certfile, ssl_keyfile)
    if token is None and not is_loopback(host):
        token = new_token()
    application = create_app(store, token=token)
    limits = server.Limits(
        request_timeout=request_timeout,
        max_connections=server.connection_cap(server.raise_fd_limit()),
    )
    config = server.config(application, limits=limits, ssl_certfile=certfile, ssl_keyfile=keyfile)
    try:
        config.load()  # reads the certificate now, so a bad one is an error line, not a traceback
    except (ssl.SSLError, OSError) as exc:
        raise fail(f"cannot use the TLS certificate/key: {exc}") from None
    # Listen first, so the printed URL is one that already answers (and port 0 gets a real port).
    try:
        sock = server.listen(host, port)
    except OSError as exc:
        raise fail(
            f"cannot listen on {host}:{port}: {exc.strerror}. Choose another --port "
            "(or --port 0 for any free one)."
        ) from None
    port = sock.getsockname()[1]
    store_path = application.state.readers.path
    scheme = "https" if certfile else "http"
    console.print(f"tunescope dashboard for {store_path}", highlight=False)
    console.print(f"  {_url(host, port, token, scheme)}", highlight=False, soft_wrap=True)
    for line in notices(host, tls=certfile is not None):
        console.print(f"  {line}", highlight=False)
    console.print("  press Ctrl-C to stop", highlight=False)
    stop = application.state.shutdown

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            stop.set()  # live-update streams end at their next poll instead of being cancelled
            super().handle_exit(sig, frame)

    Server(config).run(sockets=[sock])
