"""Text that comes from the data (class names, folder names) made safe where it is written: a Markdown table cell
(the card, the study's report), a terminal line (predict's table)."""
from __future__ import annotations

import html
import re

_MARKDOWN = re.compile(r"([\\`*_\[\]|#~])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def markdown_cell(text: str) -> str:
    """One Markdown table cell that renders as the text: HTML escaped, Markdown's marks and `|` backslashed, line
    breaks and other control characters as spaces."""
    return _MARKDOWN.sub(r"\\\1", html.escape(_CONTROL.sub(" ", str(text)), quote=False))


def terminal_cell(text: str) -> str:
    """The text on one terminal line: control characters (line breaks, escapes) shown as \\n, \\x1b, ..."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))
