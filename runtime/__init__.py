"""coalmine.runtime — the lean runtime: preprocessing, inference and monitoring.

This package never imports torch, segmentation-models-pytorch, ``coalmine.train``
or ``coalmine.export`` (a test proves it). Heavy optional modules (onnxruntime,
tensorrt) are imported inside the functions that need them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("coalmine")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
