"""Silence what converters print (Python and C++ alike) so that ``--json`` stdout stays clean."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator


class Captured:
    text: str = ""


@contextlib.contextmanager
def captured_output() -> Iterator[Captured]:
    """Redirect file descriptors 1 and 2 into a temporary file for the block; keep the text."""
    captured = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    # Python-level writes too: sys.stdout may not be fd 1 (an embedding host, pytest's capture)
    python_level = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink, contextlib.redirect_stdout(python_level), \
            contextlib.redirect_stderr(python_level):
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace") + python_level.getvalue()


def import_tensorflow() -> object:
    """``import tensorflow`` without its start-up log lines on the terminal."""
    with captured_output():
        import keras  # noqa: F401  (Keras 3 sets up its TensorFlow backend on import)
        import tensorflow as tf
    return tf
