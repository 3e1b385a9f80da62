"""Showing what came from a task — errors, outputs, log lines, params — on a terminal.

All of it is text, never markup or terminal control: ``error in [/src/main.c:12]`` must
print as written (rich would read ``[/src/main.c:12]`` as a closing tag and raise), and an
ESC sequence, ``\\r``, BEL or backspace in a task's output must not recolour, rewrite or
beep the user's terminal. So every table cell and every line ork prints goes through
`visible` (plain text) or `cell` / `line` (rich `Text`, which rich never parses as markup):
control characters are shown escaped (``\\x1b[31m`` as those eight characters). Tab and
newline are kept as they are. Secrets are masked here too (`ork_core.secrets`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ork_core.secrets import mask

if TYPE_CHECKING:
    from rich.text import Text

# C0 controls but tab and newline, DEL, C1 controls, and the Unicode line/paragraph
# separators and bidirectional overrides (which reorder what the terminal shows).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\r": "\\r", "\x0b": "\\v", "\x0c": "\\f", "\x08": "\\b", "\x07": "\\a", "\x00": "\\0"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: object) -> str:
    """`value` as text that is safe to print: secrets masked, control characters shown as escapes."""
    text = mask(value if isinstance(value, str) else str(value))
    return _CONTROL.sub(_escape, text)


def cell(value: object, style: str = "") -> Text:
    """A rich table cell (or printable) holding `value` as plain text."""
    from rich.text import Text

    return Text(visible(value), style=style)


def line(*parts: object | tuple[object, str]) -> Text:
    """One printable line from parts, each plain text or a ``(text, style)`` pair."""
    from rich.text import Text

    out = Text()
    for part in parts:
        if isinstance(part, tuple):
            out.append(visible(part[0]), style=part[1])
        else:
            out.append(visible(part))
    return out


def first_line(text: str | None) -> str:
    """The first line of an error, for one-line displays; a ``\\r`` in it is shown, not a line end."""
    return text.split("\n", 1)[0] if text else ""


__all__ = ["cell", "first_line", "line", "visible"]
