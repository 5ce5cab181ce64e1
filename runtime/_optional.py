"""Optional packages: import one, or fail with the exact ``pip install`` that adds it.

The lean runtime imports heavy or hardware-specific packages (ONNX Runtime, TensorRT,
cuda-python, Dask's distributed) only inside the functions that need them, and the training
code imports segmentation-models-pytorch the same way. :func:`optional_import` is the one
place that does so: when the package is missing, the error names the package, what needed it
and the extra of coalmine that installs it. :data:`OPTIONAL` is the one table of which extra
that is (a test holds it equal to ``pyproject.toml``).

Example:
    >>> ort = optional_import("onnxruntime", purpose="running the model")   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

#: Importable module -> (distribution on PyPI, coalmine extra that installs it).
OPTIONAL: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnxruntime", "cpu"),
    "tensorrt": ("tensorrt-cu13", "tensorrt"),
    "cuda.bindings.runtime": ("cuda-python", "tensorrt"),
    "cuda.cudart": ("cuda-python", "tensorrt"),
    "distributed": ("distributed", "cluster"),
    "segmentation_models_pytorch": ("segmentation-models-pytorch", "train"),
    "pystac_client": ("pystac-client", "fetch"),
    "planetary_computer": ("planetary-computer", "fetch"),
    "urllib3": ("urllib3", "fetch"),  # the retry policy of the catalogue requests
    "requests": ("requests", "fetch"),  # whole small assets (GRD XML)
    "boto3": ("boto3", "fetch"),  # s3:// assets in requester-pays buckets (Earth Search GRD)
    "botocore": ("boto3", "fetch"),  # boto3's own base, imported after boto3
}

#: Other ways to the same package, named after the extra's own hint.
_ALSO = {"cpu": ' (or "coalmine[gpu]" on a machine with an NVIDIA GPU)',
         "gpu": ' (or "coalmine[gpu-cu12]" with a CUDA 12 driver, see README: GPU install)',
         "tensorrt": ' (or "coalmine[tensorrt-cu12]" with a CUDA 12 driver, see README: GPU install)'}


def pip_hint(extra: str) -> str:
    """The install command of an extra, quoted for POSIX shells and cmd.exe alike."""
    return f'pip install "coalmine[{extra}]"'


def missing_dependency(package: str, extra: str, purpose: str, detail: str = "") -> MissingDependencyError:
    """The error for an optional package that is not installed (or cannot be imported).

    Example:
        >>> str(missing_dependency("distributed", "cluster", "running on a Dask cluster"))
        'running on a Dask cluster needs the Python package \\'distributed\\', which is not installed; install it with: pip install "coalmine[cluster]"'
    """
    state = f"which cannot be imported ({detail})" if detail else "which is not installed"
    return MissingDependencyError(
        f"{purpose} needs the Python package '{package}', {state}; install it with: "
        f"{pip_hint(extra)}{_ALSO.get(extra, '')}"
    )


def optional_import(*modules: str, purpose: str) -> ModuleType:
    """Import the first of ``modules`` that is installed (alternatives: older layouts).

    Args:
        modules: dotted module names, each a key of :data:`OPTIONAL`.
        purpose: what needs it, for the message ("the TensorRT backend").

    Raises:
        MissingDependencyError: none of them imports; names the pip command. A package that
            is installed but fails to import (e.g. a missing shared library) says so.
    """
    broken: ImportError | None = None
    for name in modules:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                broken = broken or exc  # the package is there; something it needs is not
        except ImportError as exc:
            broken = broken or exc
    package, extra = OPTIONAL[modules[0]]
    detail = str(broken).splitlines()[0] if broken is not None else ""
    raise missing_dependency(package, extra, purpose, detail) from broken
