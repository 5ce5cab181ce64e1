"""Inference backends behind one small interface, and the ``auto`` choice between them.

A :class:`Backend` turns a normalised float32 batch ``(N, C, H, W)`` into float32 logits
``(N, 1, H, W)``. Three implementations exist:

- ``tensorrt``: a TensorRT engine (``tensorrt`` + ``cuda-python``, no torch), chosen by the
  engine manifest for this GPU and TensorRT version, built from the ONNX file when missing;
- ``cuda``: ONNX Runtime with the CUDA execution provider (``gpu_mem_limit`` from ``--gpu-mem``);
- ``cpu``: ONNX Runtime on the CPU, one intra-op thread per core.

``auto`` tries them in that order (fastest first) and returns, with the backend, a sentence
saying which one was chosen and why each faster one was skipped. Nothing falls back
silently: an explicitly requested backend that cannot run raises :class:`BackendError`, and
a CUDA session whose provider did not load is refused rather than run on the CPU.

Example:
    >>> backend, why = make_backend(bundle, "auto", tile=256, max_batch=8, gpu_mem_gb=6)  # doctest: +SKIP
    >>> with backend:                                                                     # doctest: +SKIP
    ...     logits = backend.infer(batch)
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..errors import BackendError, CoalmineError, UsageError
from ..options import BACKENDS, PRECISIONS

log = logging.getLogger("coalmine.runtime.backends")

#: Backend names: the one list is RunOptions' (``coalmine.runtime.options``).
KINDS: tuple[str, ...] = BACKENDS


class Backend(ABC):
    """One loaded model ready to infer; a context manager that frees its resources."""

    #: Short identifier: "tensorrt", "onnxruntime-cuda" or "onnxruntime-cpu".
    name: str = "backend"
    #: True when the backend runs on a GPU (used to size ``--batch-size auto``).
    on_gpu: bool = False
    #: Set when the backend only accepts one tile size (TensorRT profile); else None.
    fixed_tile: int | None = None
    #: Largest batch the backend accepts, or None for any.
    max_batch: int | None = None

    @abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a float32 batch (N, C, H, W); return float32 logits (N, 1, H, W)."""

    def close(self) -> None:
        """Release sessions, engines and device memory (nothing to do by default)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Details for the run summary (providers, engine file, threads...)."""
        return {"name": self.name}

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def onnx_session(path: Any, providers: list[Any], threads: int | None = None) -> Any:
    """Create an ONNX Runtime session; see :func:`coalmine.runtime.backends.onnx.onnx_session`."""
    from .onnx import onnx_session as _impl

    return _impl(path, providers, threads=threads)


_MODEL_KEYS = {"fp32": "onnx", "fp16": "onnx_fp16", "int8": "onnx_int8"}


def onnx_model_key(bundle: Bundle, device: str, precision: str = "auto") -> tuple[str, str]:
    """Choose the bundle's ONNX file for ONNX Runtime on ``device`` ("cpu" or "cuda").

    ``auto`` takes the fastest file the bundle holds for that device: the INT8 model on the
    CPU, the FP16 model on CUDA (coal-export writes each only after its parity gate passed),
    else the FP32 model. FP16 on the CPU and INT8 on CUDA are refused: ONNX Runtime runs them
    there slower than FP32.

    Returns:
        ``(model_key, why)`` for :class:`~coalmine.runtime.backends.onnx.OnnxBackend`.

    Raises:
        UsageError: unknown precision, or one that does not suit the device.
        BundleError: the requested file is missing (the message says how to export it).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    fast = "int8" if device == "cpu" else "fp16"
    if precision == "auto":
        if bundle.has(_MODEL_KEYS[fast]):
            return _MODEL_KEYS[fast], f"{fast} model {bundle.files[_MODEL_KEYS[fast]]} (passed its parity gate at export)"
        return "onnx", f"fp32 model (the bundle has no {bundle.files[_MODEL_KEYS[fast]]})"
    if precision != "fp32" and precision != fast:
        raise UsageError(
            f"--precision {precision} does not suit ONNX Runtime on {device.upper()}: use "
            f"{fast} or fp32 there"
        )
    key = _MODEL_KEYS[precision]
    bundle.file(key)  # refuses a missing file, naming the coal-export option that writes it
    return key, f"{precision} model {bundle.files[key]} (--precision {precision})"


def make_backend(
    bundle: Bundle,
    kind: str = "auto",
    *,
    tile: int,
    max_batch: int,
    gpu_mem_gb: float = 6.0,
    threads: int | None = None,
    precision: str = "auto",
) -> tuple[Backend, str]:
    """Load the bundle's model on the requested (or the fastest available) backend.

    Args:
        bundle: the loaded bundle (its ``model.onnx`` is needed; TensorRT may also use
            ``model.fp16.onnx`` and ``engines/``).
        kind: "auto", "tensorrt", "cuda" or "cpu".
        tile: inference tile size (TensorRT engines are built for one fixed size).
        max_batch: largest batch that will be passed to ``infer``.
        gpu_mem_gb: GPU memory budget (ONNX Runtime CUDA arena limit, TensorRT workspace).
        threads: CPU intra-op threads (default: all cores).
        precision: ONNX Runtime model file: "auto" (INT8 on CPU / FP16 on CUDA when the
            bundle has it, else FP32), "fp32", "fp16" (CUDA) or "int8" (CPU). TensorRT runs
            the engine its manifest names.

    Returns:
        ``(backend, reason)``; ``reason`` says which backend runs and why the faster ones
        were skipped.

    Raises:
        UsageError: unknown ``kind``.
        BackendError / MissingDependencyError / BundleError: the requested backend cannot run.
    """
    if kind not in KINDS:
        raise UsageError(f"--backend {kind!r} is not one of {', '.join(KINDS)}")
    from . import onnx as ort_backend

    def ort(device: str) -> tuple[Backend, str]:
        key, why = onnx_model_key(bundle, device, precision)
        be = ort_backend.OnnxBackend(bundle, device, gpu_mem_gb=gpu_mem_gb, threads=threads, model_key=key)
        return be, why

    if kind == "cpu":
        be, why = ort("cpu")
        return be, f"cpu requested with --backend cpu; {why}"
    if kind == "cuda":
        be, why = ort("cuda")
        return be, f"cuda requested with --backend cuda; {why}"
    if kind == "tensorrt":
        from . import tensorrt as trt_backend

        be = trt_backend.TensorRTBackend.for_bundle(
            bundle, tile=tile, max_batch=max_batch, gpu_mem_gb=gpu_mem_gb
        )
        return be, f"tensorrt requested with --backend tensorrt ({be.origin})"

    skipped: list[str] = []
    try:
        from . import tensorrt as trt_backend

        ok, why = trt_backend.availability(bundle, tile=tile)
        if ok:
            be = trt_backend.TensorRTBackend.for_bundle(
                bundle, tile=tile, max_batch=max_batch, gpu_mem_gb=gpu_mem_gb
            )
            return be, f"auto chose tensorrt: {why} ({be.origin})"
        skipped.append(f"tensorrt skipped: {why}")
    except CoalmineError as exc:
        skipped.append(f"tensorrt skipped: {exc}")
    ok, why = ort_backend.cuda_availability()
    if ok:
        try:
            be, model_why = ort("cuda")
            return be, "; ".join([*skipped, f"auto chose onnxruntime-cuda: the CUDA provider loaded; {model_why}"])
        except BackendError as exc:
            skipped.append(f"onnxruntime-cuda skipped: {exc}")
    else:
        skipped.append(f"onnxruntime-cuda skipped: {why}")
    be, model_why = ort("cpu")
    return be, "; ".join([*skipped, f"auto chose onnxruntime-cpu (always available); {model_why}"])
