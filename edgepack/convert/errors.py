"""What a converter's output says went wrong: its telling error line, and the ONNX node it failed on."""

from __future__ import annotations

import re

_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Exit)\b.*:")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


_ONNX_NODE = re.compile(r"onnx_op_name:\s*(\S+)")


def failing_node(text: str) -> str:
    """The ONNX node a converter names as the one it failed on (onnx2tf prints ``onnx_op_name: X``)."""
    found = _ONNX_NODE.findall(_ANSI.sub("", text))
    return f" (at ONNX node '{found[-1]}')" if found else ""


def last_error_line(text: str) -> str:
    """The most telling line of a converter's output: the exception a traceback ends with, else the
    first error-looking line (onnx2tf follows its real error with generic advice), else the last line."""
    lines = [_ANSI.sub("", line).strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line[:300]
    for line in lines:
        if any(word in line for word in ("Error", "error:", "ERROR", "not supported", "not yet implemented")):
            return line.removeprefix("ERROR:").strip()[:300]
    return lines[-1][:300] if lines else "no output"
