"""`tunescope ui`: serve the live dashboard of a store until Ctrl-C."""

from __future__ import annotations

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


def _url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"  # the wildcard is no address to open; any of the machine's will do
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


@app.command("ui")
def ui_command(
    store: StoreOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8765,
    token: TokenOption = None,
) -> None:
    """Serve the live dashboard (runs, curves with findings, compare) until Ctrl-C."""
    import socket

    import uvicorn

    from ..ui import create_app
    from ..ui.security import is_loopback, new_token

    if token is not None and len(token) < 16:
        raise fail("--token must be at least 16 characters; leave it out to get a generated one")
    if token is None and not is_loopback(host):
        token = new_token()
    application = create_app(store, token=token)
    # Bind first, so the printed URL is one that already answers (and port 0 gets a real port).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise fail(
            f"cannot listen on {host}:{port}: {exc.strerror}. Choose another --port "
            "(or --port 0 for any free one)."
        ) from None
    port = sock.getsockname()[1]
    store_path = application.state.readers.path
    console.print(f"tunescope dashboard for {store_path}", highlight=False)
    console.print(f"  {_url(host, port, token)}", highlight=False, soft_wrap=True)
    if not is_loopback(host):
        console.print(
            "  serving beyond this machine: every request must carry the token above",
            highlight=False,
        )
    console.print("  press Ctrl-C to stop", highlight=False)
    config = uvicorn.Config(
        application, log_level="warning", timeout_graceful_shutdown=1, access_log=False
    )
    stop = application.state.shutdown

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            stop.set()  # live-update streams end at their next poll instead of being cancelled
            super().handle_exit(sig, frame)

    Server(config).run(sockets=[sock])
