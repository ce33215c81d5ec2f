"""Text from a board, made safe for a terminal: one line, no escape sequences, no control characters.

Anything a board sends (its stderr, a JSON field, a file name it lists) may hold terminal escape
sequences that would recolour, retitle or rewrite the user's terminal, or line breaks that would fake
a line of edgepack's own. ``printable`` is the one way such text reaches the terminal or a message.
"""

from __future__ import annotations

import re

# ESC [ ... final (CSI); ESC ] / P / X / ^ / _ ... up to BEL or ESC \ (OSC, DCS, SOS, PM, APC strings,
# unterminated ones to the end); any other ESC + intermediates + final; the 8-bit forms of CSI and of the
# string introducers.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?")
_SPACES = re.compile(r"\s+")


def printable(text: object, limit: int = 300) -> str:
    """``text`` as one printable line of at most ``limit`` characters.

    Escape sequences (ANSI colours and cursor moves, OSC titles and hyperlinks, DCS strings) are
    removed whole; every other non-printable character (C0 and C1 controls, line and paragraph
    separators, bidirectional overrides) becomes a space; runs of whitespace become one space. A text
    longer than ``limit`` is cut and ends with "...".
    """
    text = _ESCAPES.sub("", str(text))
    text = "".join(c if c.isprintable() else " " for c in text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > limit:
        text = text[:max(0, limit - 3)].rstrip() + "..."
    return text[:limit]
