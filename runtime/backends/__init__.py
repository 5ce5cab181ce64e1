"""Inference backends behind one small interface, and the ``auto`` choice between them.

A :class:`Backend` turns a normalised float32 batch ``(N, C, H, W)`` into float32 logits
``(N, 1, H, W)``. The :data:`REGISTRY` names each implementation once — its ``--backend``
value, whether it runs on a GPU, a cheap availability check and a factory; the cluster's GPU
requests (:data:`GPU_KINDS`) derive from it, and the ``--backend`` names RunOptions checks
(:data:`KINDS`, kept in ``coalmine.runtime.options`` so that checking options loads no backend)
are held equal to it by a test:

- ``tensorrt``: a TensorRT engine (``tensorrt`` + ``cuda-python``, no torch) built for this GPU
  and TensorRT version and gated against the ONNX model (:mod:`.tensorrt`);
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..errors import BackendError, CoalmineError, UsageError
from ..options import BACKENDS, PRECISIONS

log = logging.getLogger("coalmine.runtime.backends")

#: GPU memory a run leaves outside its tensors: the CUDA context, cuDNN/cuBLAS handles and
#: workspaces (ONNX Runtime) or the engine's weights and context memory (TensorRT).
GPU_RESERVED_BYTES = 1 << 30


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
    #: Arithmetic of the model that runs: "fp32", "fp16" or "int8".
    precision: str = "fp32"

    @property
    def label(self) -> str:
        """What reports call this model (a file name where there is one)."""
        return self.name

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


class NonFiniteLogitsError(BackendError):
    """A backend returned NaN or infinite logits (exit code 1)."""


def finite_logits(backend: Backend) -> Callable[[np.ndarray], np.ndarray]:
    """``backend.infer``, refusing any batch that holds a NaN or infinite logit.

    The rule for every backend: a NaN logit would become probability NaN, quantised to 0 —
    "no mine" where the model in fact failed (typically an FP16 overflow) — and the scene's
    hectares would shrink without a trace. So a batch with a non-finite logit stops the run
    with one line naming the backend, its model and what to run instead, and (outputs being
    written under temporary names) nothing is written.

    Example:
        >>> infer = finite_logits(backend)   # doctest: +SKIP
        >>> logits = infer(batch)           # raises NonFiniteLogitsError on NaN/inf
    """

    def infer(x: np.ndarray) -> np.ndarray:
        y = backend.infer(x)
        finite = np.isfinite(y)
        if not finite.all():
            n = int(finite.size - np.count_nonzero(finite))
            raise NonFiniteLogitsError(
                f"the {backend.name} backend ({backend.label}, {backend.precision}) returned {n} NaN or "
                f"infinite logits for a batch of {len(x)} tiles; they are never mapped as 'no mine', so the "
                f"run stops and writes nothing: {_finite_fix(backend)}"
            )
        return y

    return infer


def _finite_fix(backend: Backend) -> str:
    if backend.name == "tensorrt":
        return "run with --backend cuda --precision fp32 or --backend cpu"
    if backend.precision != "fp32":
        return "run with --precision fp32"
    return "the FP32 model itself gives NaN on this scene; check the scene's values (coal-prepare) and the bundle"


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


@dataclass(frozen=True)
class Request:
    """What a run asks of a backend: the tile, the largest batch, the memory and thread budgets.

    Attributes:
        tile: inference tile size (TensorRT engines are built for one fixed size).
        max_batch: largest batch the run will pass to ``infer``.
        gpu_mem_gb: GPU memory budget in GiB.
        threads: CPU intra-op threads (None: all cores).
        precision: ONNX Runtime model file, see :func:`onnx_model_key`.
    """

    tile: int
    max_batch: int
    gpu_mem_gb: float = 6.0
    threads: int | None = None
    precision: str = "auto"


@dataclass(frozen=True)
class BackendKind:
    """One ``--backend`` choice in the registry.

    Attributes:
        name: the ``--backend`` value ("tensorrt", "cuda", "cpu").
        label: what reasons call it ("tensorrt", "onnxruntime-cuda", "onnxruntime-cpu").
        on_gpu: whether it runs on a GPU (a cluster task asks for one; ``--batch-size auto``
            sizes the batch to the GPU budget).
        availability: ``(bundle, request) -> (ok, why)``, cheap, loads no model.
        factory: ``(bundle, request) -> (backend, why)``: loads the model.
    """

    name: str
    label: str
    on_gpu: bool
    availability: Callable[[Bundle, Request], tuple[bool, str]]
    factory: Callable[[Bundle, Request], tuple[Backend, str]]


def _ort_kind(device: str) -> BackendKind:
    def availability(bundle: Bundle, req: Request) -> tuple[bool, str]:
        if device == "cpu":
            return True, "always available"
        from .onnx import cuda_availability

        ok, why = cuda_availability()
        return ok, ("the CUDA provider is available" if ok else why)

    def factory(bundle: Bundle, req: Request) -> tuple[Backend, str]:
        from .onnx import OnnxBackend

        key, why = onnx_model_key(bundle, device, req.precision)
        be = OnnxBackend.for_bundle(bundle, device, model_key=key, gpu_mem_gb=req.gpu_mem_gb,
                                    threads=req.threads)
        return be, why

    return BackendKind(device, f"onnxruntime-{device}", device == "cuda", availability, factory)


def _tensorrt_kind() -> BackendKind:
    def availability(bundle: Bundle, req: Request) -> tuple[bool, str]:
        from . import tensorrt

        return tensorrt.availability(bundle, tile=req.tile, max_batch=req.max_batch)

    def factory(bundle: Bundle, req: Request) -> tuple[Backend, str]:
        from . import tensorrt

        be = tensorrt.load(bundle, tile=req.tile, max_batch=req.max_batch, gpu_mem_gb=req.gpu_mem_gb)
        return be, be.origin

    return BackendKind("tensorrt", "tensorrt", True, availability, factory)


#: The backends, fastest first: the order ``auto`` tries them in.
REGISTRY: dict[str, BackendKind] = {k.name: k for k in (_tensorrt_kind(), _ort_kind("cuda"), _ort_kind("cpu"))}
#: ``--backend`` choices: RunOptions' list (``coalmine.runtime.options``, which checks option
#: values without importing the backends); a test holds it equal to ``("auto", *REGISTRY)``.
KINDS: tuple[str, ...] = BACKENDS
#: Backends that need a GPU.
GPU_KINDS: tuple[str, ...] = tuple(k.name for k in REGISTRY.values() if k.on_gpu)


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
        kind: "auto" or a name in :data:`REGISTRY` ("tensorrt", "cuda", "cpu").
        tile: inference tile size (TensorRT engines are built for one fixed size).
        max_batch: largest batch that will be passed to ``infer``.
        gpu_mem_gb: GPU memory budget (ONNX Runtime CUDA arena limit, TensorRT workspace).
        threads: CPU intra-op threads (default: all cores).
        precision: ONNX Runtime model file: "auto" (INT8 on CPU / FP16 on CUDA when the
            bundle has it, else FP32), "fp32", "fp16" (CUDA) or "int8" (CPU). TensorRT runs
            the engine built from the bundle's FP16 model (else FP32).

    Returns:
        ``(backend, reason)``; ``reason`` says which backend runs and why each faster one
        was skipped.

    Raises:
        UsageError: unknown ``kind``.
        BackendError / MissingDependencyError / BundleError: the requested backend cannot
            run (with ``auto``: not even the CPU one).
    """
    if kind not in KINDS:
        raise UsageError(f"--backend {kind!r} is not one of {', '.join(KINDS)}")
    req = Request(tile=tile, max_batch=max_batch, gpu_mem_gb=gpu_mem_gb, threads=threads, precision=precision)
    if kind != "auto":
        be, why = REGISTRY[kind].factory(bundle, req)
        return be, f"{kind} requested with --backend {kind}; {why}"
    skipped: list[str] = []
    kinds = list(REGISTRY.values())
    for i, k in enumerate(kinds):
        last = i == len(kinds) - 1
        try:
            ok, why = k.availability(bundle, req)
            if ok:
                be, detail = k.factory(bundle, req)
                return be, "; ".join([*skipped, f"auto chose {k.label}: {why}; {detail}"])
        except CoalmineError as exc:
            if last:
                raise
            why = str(exc)
        skipped.append(f"{k.label} skipped: {why}")
    raise BackendError("no inference backend can run here: " + "; ".join(skipped))
