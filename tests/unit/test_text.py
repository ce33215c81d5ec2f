"""printable(): text from a board as one safe line for the terminal."""

from __future__ import annotations

import pytest

from edgepack.text import printable


@pytest.mark.parametrize(("said", "shown"), [
    ("\x1b[31mred\x1b[0m text", "red text"),  # colours
    ("\x1b[2J\x1b[1;1Hcleared", "cleared"),  # clear screen, move the cursor
    ("\x1b]0;new title\x07after", "after"),  # OSC title, ended by BEL
    ("\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\ here", "click here"),  # OSC 8 hyperlink, ended by ST
    ("\x1bPq#0;2;0;0;0\x1b\\sixel gone", "sixel gone"),  # DCS string
    ("\x9b31mC1 CSI", "C1 CSI"),  # the 8-bit CSI
    ("\x9d0;title\x9cC1 OSC", "C1 OSC"),
    ("\x1bcreset", "reset"),  # a two-character escape
    ("one\ntwo\r\nthree\rfour", "one two three four"),  # one line: nothing can fake a line of edgepack's
    ("tab\there\x00nul\x7fdel\x85nel", "tab here nul del nel"),  # C0, DEL, C1
    ("bidi \u202egnp.exe\u202c ok", "bidi gnp.exe ok"),  # a right-to-left override
    ("line\u2028separator", "line separator"),
    ("  many    spaces  ", "many spaces"),
    ("naïve 温度 ✓", "naïve 温度 ✓"),  # printable non-ASCII stays
    ("unterminated \x1b]0;title to the end", "unterminated"),
    (b"bytes are shown as text", "b'bytes are shown as text'"),
])
def test_escapes_and_controls_are_removed(said: object, shown: str):
    assert printable(said) == shown


def test_long_text_is_cut_to_the_limit_and_says_so():
    assert printable("x" * 1000) == "x" * 297 + "..."
    assert len(printable("y" * 50, 10)) == 10 and printable("y" * 50, 10).endswith("...")
    assert printable("short", 10) == "short"
    assert len(printable("\x1b[31m" * 100 + "z" * 400, 300)) == 300  # the limit counts what is shown


def test_the_result_has_no_control_characters_for_any_input():
    every = "".join(chr(c) for c in range(0, 0x300)) + "\u200e\u200f\u202a\u202b\u202d\u202e\u2066\u2069\ufeff"
    shown = printable(every, 10_000)
    assert all(c.isprintable() for c in shown) and "\x1b" not in shown
