"""The Typer app, shared options, and turning user errors into clear messages and exit codes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..errors import TunescopeError
from ..text import clean

app = typer.Typer(
    name="tunescope",
    help="Fine-tune pretrained models and watch the fine-tuning as it happens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# emoji=False: `:name:` in a stored string would otherwise print as an emoji (see safe.py).
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Store directory (default: $TUNESCOPE_STORE, else ./.tunescope).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

EXIT_USER_ERROR = 2


def fail(message: str) -> typer.Exit:
    """Print an error and return the exception to raise: `raise fail("...")`."""
    err_console.print("[bold red]error:[/] ", end="", markup=True)
    err_console.print(clean(message, newlines=True), markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USER_ERROR)


def run_app(application: typer.Typer, argv: list[str]) -> int:
    """Run the app, printing `TunescopeError`s as one clear line instead of a traceback."""
    try:
        rv = application(args=argv, prog_name="tunescope", standalone_mode=False)
        if isinstance(rv, int):  # click returns the code of a typer.Exit in this mode
            return rv
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except TunescopeError as exc:
        err_console.print("[bold red]error:[/] ", end="", markup=True)
        # messages quote file names, run names and values: stored or typed, never trusted
        err_console.print(clean(exc, newlines=True), markup=False, highlight=False, soft_wrap=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        if os.environ.get("TUNESCOPE_DEBUG"):
            raise
        raise
    return 0
