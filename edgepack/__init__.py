"""edgepack: package trained neural networks for small devices.

The Python API (edgepack.api): ``build``, ``convert``, ``quantize``, ``prune``, ``profile`` and
``inspect``, each returning the typed result the CLI prints; ``BuildOptions`` and ``Constraints`` say
what a build is asked for; errors are ``edgepack.errors`` exceptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for checkers; at run time each name is imported on first use (__getattr__)
    from edgepack.api import NoFeasibleCandidate, build, convert, inspect, profile, prune, quantize
    from edgepack.search.options import BuildOptions
    from edgepack.search.space import Constraints

__version__ = "0.1.0"

__all__ = ["BuildOptions", "Constraints", "NoFeasibleCandidate", "__version__", "build", "convert", "inspect",
           "profile", "prune", "quantize"]

_HOMES = {"BuildOptions": "edgepack.search.options", "Constraints": "edgepack.search.space"}


def __getattr__(name: str) -> Any:
    """The API is imported on first use: the ``edgepack`` command installs its signal handlers before
    numpy and the rest are imported (edgepack/__main__.py)."""
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(_HOMES.get(name, "edgepack.api")), name)
    raise AttributeError(f"module 'edgepack' has no attribute {name!r}")
