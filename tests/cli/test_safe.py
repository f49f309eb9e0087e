"""`cli.safe`: any stored string prints exactly as typed, minus control characters."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.markup import render

from tunescope.text import clean, literal

# Pieces that mean something to Rich or to a terminal, mixed with plain text.
PIECES = st.sampled_from(
    [
        "[",
        "]",
        "\\",
        "/",
        "[/]",
        "[/s]",
        "[bold]",
        "[link=https://e.x]",
        "[@click]",
        "[#f00]",
        ":thumbs_up:",
        "a",
        " ",
        "=",
        "\x1b",
        "\x1b[2J",
        "\x07",
        "\n",
        "\r",
        "\x9b",
        "\u202e",
        "é",
    ]
)
TEXT = st.lists(PIECES, max_size=12).map("".join) | st.text(max_size=20)


def _shown(markup: str) -> str:
    out = io.StringIO()
    Console(file=out, width=10_000, emoji=False, color_system="truecolor").print(
        markup, highlight=False, end=""
    )
    return out.getvalue()


@settings(max_examples=1500, deadline=None)
@given(TEXT, TEXT)
def test_literal_prints_as_clean_in_any_markup_context(a: str, b: str) -> None:
    assert render(literal(a), emoji=False).plain == clean(a)
    assert render(f"[bold]{literal(a)}[/] {literal(b)}", emoji=False).plain == (
        f"{clean(a)} {clean(b)}"
    )
    assert render(f"x{literal(a)}[red]{literal(b)}[/red]", emoji=False).plain == (
        f"x{clean(a)}{clean(b)}"
    )


@settings(max_examples=500, deadline=None)
@given(TEXT)
def test_nothing_but_colour_reaches_the_terminal(text: str) -> None:
    shown = _shown(f"[bold]{literal(text)}[/]")
    assert "\x1b]" not in shown  # no OSC (hyperlink, title)
    body = shown.replace("\x1b[1m", "").replace("\x1b[0m", "")
    assert body == clean(text)


def test_clean_makes_control_characters_visible() -> None:
    assert clean("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert clean("two\nlines\r") == "two\\nlines\\r"
    assert clean("c1\x9b\x85") == "c1\\x9b\\x85"
    assert clean("bidi\u202eevil\u2066") == "bidi\\u202eevil\\u2066"
    assert clean("lone\ud800") == "lone\\ud800"
    assert clean("two\nlines\x1b", newlines=True) == "two\nlines\\x1b"
    assert clean("emoji 👍 and é stay") == "emoji 👍 and é stay"
    assert clean(3) == "3"
