"""Stored text on a terminal: every run name, project, metric key, event kind and message, config
value and file name the CLI prints goes through one of these two functions.

A store holds whatever its writers put there. Printed raw, such text is an attack on the
reader's terminal: Rich markup (`[/s]` crashes the whole listing, `[link=...]` makes a hyperlink,
`[bs=32]` disappears), control sequences (ESC clears the screen or sets the title, CR overwrites
a line, BEL rings), and bidi overrides that make text read differently from what it is. So:

- `clean(text)` for text printed with `markup=False`: control characters become visible escapes
  (`\\x1b`, `\\n`, `\\u202e`), so two names that differ only by one still look different;
- `literal(text)` for text placed inside a markup string: `clean`, then Rich markup escaped.

Consoles that print stored text are also made with `emoji=False` (else `:thumbs_up:` in a name
prints as an emoji).

>>> literal("ablation[bs=32]\\x1b[2J")
'ablation\\\\[bs=32]\\\\x1b[2J'
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 controls (ESC, CR, LF, BEL, TAB, ...), DEL and C1 controls (CSI 0x9b, NEL 0x85, ...); the
# bidi marks, embeddings, overrides and isolates (Trojan Source); line and paragraph separators
# (a newline to some terminals); lone surrogates (unencodable, a crash in a UTF-8 terminal).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# `rich.markup.escape` escapes only what looks like a tag; Rich also reads a backslash before any
# other `[` as an escape and drops it (`back\\[slash` prints `back[slash`), so add one there.
_BACKSLASH_BRACKET = re.compile(r"(\\+)(?=\[(?![a-z#/@][^[]*?]))")


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def clean(text: object, *, newlines: bool = False) -> str:
    """`text` (made a string) with every control character replaced by a visible escape;
    `newlines=True` keeps line breaks (error messages of several lines).

    >>> clean("a\\x1b[2Jb\\nc")
    'a\\\\x1b[2Jb\\\\nc'
    """
    s = text if isinstance(text, str) else str(text)
    if not _CONTROL.search(s):
        return s
    if newlines:
        return "\n".join(_CONTROL.sub(_visible, line) for line in s.split("\n"))
    return _CONTROL.sub(_visible, s)


def literal(text: object) -> str:
    """`clean(text)` escaped for Rich markup: it prints exactly as `clean` returns it.

    >>> literal("[link=https://evil.example]x[/link]")
    '\\\\[link=https://evil.example]x\\\\[/link]'
    """
    s = clean(text)
    body = s.rstrip("\\")
    out = _BACKSLASH_BRACKET.sub(r"\1\\", escape(body))
    if len(body) < len(s):
        # Trailing backslashes print as typed only when a tag follows (each pair then prints one),
        # whether or not the caller's markup goes on: so end with an empty tag of our own.
        out += "\\" * (2 * (len(s) - len(body))) + "[dim][/dim]"
    return out
