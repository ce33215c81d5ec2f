"""edgepack: package trained neural networks for small devices.

The Python API (edgepack.api): ``build``, ``convert``, ``quantize``, ``prune``, ``profile`` and
``inspect``, each returning the typed result the CLI prints; errors are ``edgepack.errors`` exceptions.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["NoFeasibleCandidate", "__version__", "build", "convert", "inspect", "profile", "prune", "quantize"]


def __getattr__(name: str) -> Any:
    """The API is imported on first use: the ``edgepack`` command installs its signal handlers before
    numpy and the rest are imported (edgepack/__main__.py)."""
    if name in __all__:
        from edgepack import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgepack' has no attribute {name!r}")
