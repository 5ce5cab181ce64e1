"""ONNX Runtime backends: CPU (threads = cores) and CUDA (arena limited by ``--gpu-mem``).

The CUDA session is checked after creation: ONNX Runtime quietly drops a provider whose
libraries fail to load and runs on the CPU instead (onnxruntime #23372, #23612). We read
``session.get_providers()`` and refuse such a session, naming what to install.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import optional_import, pip_hint
from ..bundle import Bundle
from ..errors import BackendError, BundleError
from . import GPU_RESERVED_BYTES, Backend

log = logging.getLogger("coalmine.runtime.backends")

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


def _ort() -> Any:
    return optional_import("onnxruntime", purpose="running the model with ONNX Runtime")


def cpu_cores() -> int:
    """Cores this process may use (respects CPU affinity / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def onnx_session(path: str | os.PathLike[str], providers: list[Any], threads: int | None = None,
                 spinning: bool = True) -> Any:
    """An ``InferenceSession`` with full graph optimisation and ``threads`` intra-op threads.

    Args:
        path: the ONNX file.
        providers: ONNX Runtime provider list, e.g. ``["CPUExecutionProvider"]`` or
            ``[("CUDAExecutionProvider", {"gpu_mem_limit": 6 << 30}), "CPUExecutionProvider"]``.
        threads: intra-op threads (default: all cores of this process).
        spinning: let idle intra-op threads spin (ONNX Runtime's default).

    Raises:
        MissingDependencyError: onnxruntime is not installed.
        BundleError: the file is missing or is not a loadable ONNX model.

    Example:
        >>> s = onnx_session("model.onnx", ["CPUExecutionProvider"])  # doctest: +SKIP
    """
    ort = _ort()
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"ONNX model {p} does not exist; run: coal-export {p.parent}")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or cpu_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only: the provider check below reports what matters
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(p), sess_options=so, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(
            f"ONNX Runtime cannot load {p} ({first}); re-export the bundle with coal-export"
        ) from exc


def cuda_availability() -> tuple[bool, str]:
    """Whether this onnxruntime build offers the CUDA provider, and why not."""
    try:
        ort = _ort()
    except ImportError as exc:
        return False, str(exc)
    if CUDA_EP not in ort.get_available_providers():
        return False, (
            "this onnxruntime has no CUDAExecutionProvider (CPU-only build or no CUDA GPU); "
            f"for a GPU install: pip uninstall onnxruntime && {pip_hint('gpu')} (or the gpu-cu12 extra, README: GPU install)"
        )
    return True, "CUDAExecutionProvider available"


def gpu_mem_limit(gpu_mem_gb: float) -> int:
    """ONNX Runtime's CUDA arena limit for a ``--gpu-mem`` budget, in bytes.

    The arena holds only tensors: the CUDA context, cuDNN/cuBLAS handles and their workspaces
    live outside it, so :data:`~coalmine.runtime.backends.GPU_RESERVED_BYTES` of the budget is
    left for them (at least 256 MiB goes to the arena).

    Example:
        >>> gpu_mem_limit(6.0) == 5 * 2**30
        True
    """
    return max(256 << 20, int(gpu_mem_gb * (1 << 30)) - GPU_RESERVED_BYTES)


def preload_cuda_libraries(ort: Any) -> None:
    """Load the CUDA and cuDNN libraries of pip's ``nvidia-*`` wheels before a CUDA session.

    Those wheels are not on the dynamic loader's path; ``onnxruntime.preload_dlls()`` (1.21+)
    loads them so the CUDA provider finds them. Older versions lack it; a failure is logged and
    left to the provider check, which names what is missing.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # noqa: BLE001 - diagnosis happens in the provider check
        log.debug("onnxruntime.preload_dlls() failed: %s", exc)


class OnnxBackend(Backend):
    """ONNX Runtime on the CPU (``device="cpu"``) or on a CUDA GPU (``device="cuda"``).

    Args:
        path: the ONNX file.
        input_name, output_name: the graph's input and output names (from ``bundle.json``).
        bands: number of input bands the graph must take.
        device: "cpu" or "cuda".
        gpu_mem_gb: GPU memory budget in GiB (the CUDA arena gets it minus the CUDA context's share).
        threads: CPU intra-op threads (default: all cores).
        label: the name reports use for this model (default: the file name).
        spinning: let idle intra-op threads spin (faster on a dedicated machine; off for a
            parity gate on a shared one).

    Raises:
        BackendError: CUDA requested but the provider is absent or did not load.
        BundleError: the ONNX file is missing or its input/output names do not match the bundle.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        input_name: str,
        output_name: str,
        bands: int,
        device: str = "cpu",
        gpu_mem_gb: float = 6.0,
        threads: int | None = None,
        label: str | None = None,
        spinning: bool = True,
    ) -> None:
        self.path = Path(path)
        self._label = label or self.path.name
        self.threads = threads or cpu_cores()
        providers = self._providers(device, gpu_mem_gb)
        self.session = onnx_session(self.path, providers, threads=self.threads, spinning=spinning)
        loaded = self.session.get_providers()
        if device == "cuda" and (not loaded or loaded[0] != CUDA_EP):
            raise BackendError(
                f"ONNX Runtime did not load the CUDA provider for {self.path} (session providers: {loaded}); "
                "check the CUDA / cuDNN libraries match onnxruntime-gpu, or use --backend cpu"
            )
        self.providers = loaded
        self._in, self._out = self._check_io(input_name, output_name, bands)

    @classmethod
    def for_bundle(cls, bundle: Bundle, device: str = "cpu", *, model_key: str = "onnx", **kw: Any) -> OnnxBackend:
        """The bundle's ONNX file ``model_key`` ("onnx", "onnx_fp16", "onnx_int8") on ``device``."""
        be = cls(bundle.file(model_key), input_name=bundle.model.input_name,
                 output_name=bundle.model.output_name, bands=len(bundle.bands), device=device, **kw)
        be.precision = {"onnx_fp16": "fp16", "onnx_int8": "int8"}.get(model_key, "fp32")
        return be

    def _providers(self, device: str, gpu_mem_gb: float) -> list[Any]:
        if device == "cuda":
            ok, why = cuda_availability()
            if not ok:
                raise BackendError(f"--backend cuda cannot run: {why}")
            preload_cuda_libraries(_ort())
            opts = {"device_id": 0, "gpu_mem_limit": gpu_mem_limit(gpu_mem_gb),
                    "arena_extend_strategy": "kSameAsRequested"}
            self.name, self.on_gpu = "onnxruntime-cuda", True
            return [(CUDA_EP, opts), CPU_EP]
        if device == "cpu":
            self.name, self.on_gpu = "onnxruntime-cpu", False
            return [CPU_EP]
        raise BackendError(f"unknown ONNX Runtime device {device!r}; use 'cpu' or 'cuda'")

    def _check_io(self, input_name: str, output_name: str, bands: int) -> tuple[str, str]:
        inputs = self.session.get_inputs()
        names_in = [i.name for i in inputs]
        names_out = [o.name for o in self.session.get_outputs()]
        if input_name not in names_in:
            raise BundleError(
                f"{self.path} has inputs {names_in} but bundle.json names the input "
                f"'{input_name}'; re-export the bundle with coal-export"
            )
        if output_name not in names_out:
            raise BundleError(
                f"{self.path} has outputs {names_out} but bundle.json names the output "
                f"'{output_name}'; re-export the bundle with coal-export"
            )
        shape = next(i.shape for i in inputs if i.name == input_name)
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != bands):
            raise BundleError(
                f"{self.path} takes input shape {shape} but the bundle has {bands} bands; "
                "expected (batch, bands, height, width)"
            )
        return input_name, output_name

    @property
    def label(self) -> str:
        return self._label

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run on a float32 (N, C, H, W) batch; return float32 logits (N, 1, H, W)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = self.session.run([self._out], {self._in: x})[0]
        if y.ndim == 3:
            y = y[:, None]
        return np.asarray(y, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.path.name, "providers": list(self.providers),
                "intra_op_threads": self.threads if not self.on_gpu else None}

    def close(self) -> None:
        self.session = None
