"""ConversionError: a route could not convert the model, naming the route and the converter's reason.

Raised by the conversion routes (``edgepack.convert``) and by ``edgepack.engines`` when a runtime cannot
load what a route wrote; it sits below both so that neither imports the other for it.
"""

from __future__ import annotations

from edgepack.errors import EdgepackError


class ConversionError(EdgepackError):
    """A route could not convert this model; names the route and the converter's own reason."""

    def __init__(self, route: str, reason: str, hint: str = "") -> None:
        super().__init__(f"conversion {route} failed: {reason}", hint)
        self.route = route
        self.reason = reason
