"""The `tunescope` command line: one module per subcommand, registered on one Typer app."""

from __future__ import annotations

import sys

# Importing a subcommand module registers it on `app`. Modules import heavy libraries (torch,
# transformers, uvicorn) inside their command functions, so `tunescope --help` stays fast.
from . import check, diagnose, events, export, import_, runs, train, ui  # noqa: F401
from .app import app, run_app


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tunescope` script."""
    return run_app(app, sys.argv[1:] if argv is None else argv)


__all__ = ["app", "main"]
