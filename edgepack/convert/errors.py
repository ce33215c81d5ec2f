"""Errors of conversion routes."""

from __future__ import annotations

from edgepack.errors import EdgepackError


class ConversionError(EdgepackError):
    """A route could not convert this model; names the route and the converter's own reason."""

    def __init__(self, route: str, reason: str, hint: str = "") -> None:
        super().__init__(f"conversion {route} failed: {reason}", hint)
        self.route = route
        self.reason = reason


def last_error_line(text: str) -> str:
    """The most telling line of a converter's output: its last error-looking line, else the last."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if any(word in line for word in ("Error", "error:", "ERROR", "Exception", "not supported")):
            return line[:300]
    return lines[-1][:300] if lines else "no output"
