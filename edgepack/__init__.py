"""edgepack: package trained neural networks for small devices.

The Python API (edgepack.api): ``build``, ``convert``, ``quantize``, ``prune``, ``profile`` and
``inspect``, each returning the typed result the CLI prints; errors are ``edgepack.errors`` exceptions.
"""

__version__ = "0.1.0"

from edgepack.api import NoFeasibleCandidate, build, convert, inspect, profile, prune, quantize

__all__ = ["NoFeasibleCandidate", "__version__", "build", "convert", "inspect", "profile", "prune", "quantize"]
