"""vitserve: serve Vision Transformer image classifiers over HTTP."""

__version__ = "0.1.0"
