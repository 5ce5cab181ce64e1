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
from . import Backend

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


def onnx_session(path: str | os.PathLike[str], providers: list[Any], threads: int | None = None) -> Any:
    """An ``InferenceSession`` with full graph optimisation and ``threads`` intra-op threads.

    Args:
        path: the ONNX file.
        providers: ONNX Runtime provider list, e.g. ``["CPUExecutionProvider"]`` or
            ``[("CUDAExecutionProvider", {"gpu_mem_limit": 6 << 30}), "CPUExecutionProvider"]``.
        threads: intra-op threads (default: all cores of this process).

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
            f"for a GPU install: pip uninstall onnxruntime && {pip_hint('gpu')}"
        )
    return True, "CUDAExecutionProvider available"


class OnnxBackend(Backend):
    """ONNX Runtime on the CPU (``device="cpu"``) or on a CUDA GPU (``device="cuda"``).

    Args:
        bundle: the bundle whose ``model.onnx`` is run.
        device: "cpu" or "cuda".
        gpu_mem_gb: CUDA arena limit (``gpu_mem_limit``) in GiB.
        threads: CPU intra-op threads (default: all cores).
        model_key: which ONNX file of the bundle ("onnx", "onnx_fp16", "onnx_int8").

    Raises:
        BackendError: CUDA requested but the provider is absent or did not load.
        BundleError: the ONNX file is missing or its input/output names do not match the bundle.
    """

    def __init__(
        self,
        bundle: Bundle,
        device: str = "cpu",
        *,
        gpu_mem_gb: float = 6.0,
        threads: int | None = None,
        model_key: str = "onnx",
    ) -> None:
        path = bundle.file(model_key)
        self.path = path
        self.threads = threads or cpu_cores()
        if device == "cuda":
            ok, why = cuda_availability()
            if not ok:
                raise BackendError(f"--backend cuda cannot run: {why}")
            opts = {"device_id": 0, "gpu_mem_limit": int(gpu_mem_gb * (1 << 30)),
                    "arena_extend_strategy": "kSameAsRequested"}
            providers: list[Any] = [(CUDA_EP, opts), CPU_EP]
            self.name, self.on_gpu = "onnxruntime-cuda", True
        elif device == "cpu":
            providers = [CPU_EP]
            self.name, self.on_gpu = "onnxruntime-cpu", False
        else:
            raise BackendError(f"unknown ONNX Runtime device {device!r}; use 'cpu' or 'cuda'")
        self.session = onnx_session(path, providers, threads=self.threads)
        loaded = self.session.get_providers()
        if device == "cuda" and (not loaded or loaded[0] != CUDA_EP):
            raise BackendError(
                f"ONNX Runtime did not load the CUDA provider for {path} (session providers: {loaded}); "
                "check the CUDA 12 / cuDNN 9 libraries match onnxruntime-gpu, or use --backend cpu"
            )
        self.providers = loaded
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        names_in = [i.name for i in inputs]
        names_out = [o.name for o in outputs]
        if bundle.model.input_name not in names_in:
            raise BundleError(
                f"{path} has inputs {names_in} but bundle.json names the input "
                f"'{bundle.model.input_name}'; re-export the bundle with coal-export"
            )
        if bundle.model.output_name not in names_out:
            raise BundleError(
                f"{path} has outputs {names_out} but bundle.json names the output "
                f"'{bundle.model.output_name}'; re-export the bundle with coal-export"
            )
        shape = next(i.shape for i in inputs if i.name == bundle.model.input_name)
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != len(bundle.bands)):
            raise BundleError(
                f"{path} takes input shape {shape} but the bundle has {len(bundle.bands)} bands; "
                "expected (batch, bands, height, width)"
            )
        self._in = bundle.model.input_name
        self._out = bundle.model.output_name

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
