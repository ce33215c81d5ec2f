"""Progress on stderr: one updating line per stage on a terminal, plain lines when piped.

A line's stage is its first word ("convert", "checking", ...; a build's search loop - build, measure,
confirm - is one stage). On a terminal a line of the same
stage as the one before replaces it (carriage return, clear to the end of the line); a new stage keeps
the last line of the old one. Piped, every line is printed as it is. ``--quiet``: nothing. ``-v``: also
the detail lines (each distillation epoch), which worker processes print when ``EDGEPACK_VERBOSE`` is set.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TextIO

VERBOSE_ENV = "EDGEPACK_VERBOSE"
#: First words that belong to one stage of a build: its search loop updates one line.
SEARCH = {"searching", "building", "build", "measure", "prune", "cache", "rank", "confirming", "confirm", "chosen"}


def verbose() -> bool:
    """Detail lines wanted (``-v``): read by worker processes too, from the environment."""
    return os.environ.get(VERBOSE_ENV) == "1"


class Progress:
    """A ``say`` callback: ``Progress(level)(line)``. Levels: 0 quiet, 1 normal, 2 verbose."""

    def __init__(self, level: int = 1, stream: TextIO | None = None) -> None:
        self.level = level
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._stage: str | None = None
        self._open = False  # an updating line is on the screen, without its newline yet

    def export(self) -> None:
        """Tell worker processes (through the environment) whether detail lines are wanted."""
        if self.level >= 2:
            os.environ[VERBOSE_ENV] = "1"
        else:
            os.environ.pop(VERBOSE_ENV, None)

    def __call__(self, line: str) -> None:
        if self.level <= 0:
            return
        text = f"edgepack: {line}"
        stage = line.split(" ", 1)[0]
        stage = "search" if stage in SEARCH else stage
        if not self.tty or self.level >= 2:
            print(text, file=self.stream, flush=True)
            return
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        if self._open and stage == self._stage:
            self.stream.write("\r\033[K" + text[:width])
        else:
            self.stream.write(("\n" if self._open else "") + text[:width])
        self._stage, self._open = stage, True
        self.stream.flush()

    def done(self) -> None:
        """End the updating line (before the table, a warning or an error is printed)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
