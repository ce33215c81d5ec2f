"""edgepack: package trained neural networks for small devices."""

__version__ = "0.1.0"
