"""Run a serialized TensorRT engine with tensorrt + cuda-python (no torch).

``deserialize_cuda_engine``, ``create_execution_context``, ``set_tensor_address``,
``set_input_shape`` and ``execute_async_v3`` on a stream from ``cuda.bindings.runtime``, as in
NVIDIA's ``samples/python/common_runtime.py``. Every TensorRT call that reports failure by
returning None or False is checked and turned into a :class:`BackendError` naming the engine
file and what to do, so ``--backend auto`` can fall back instead of failing later with an
``AttributeError``. Device memory and the stream are released by :meth:`close`, also when the
constructor fails half-way.

The engine's own optimisation profile says which tile and batch sizes it takes; device buffers
are sized for its largest batch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BackendError
from .. import Backend
from .identity import cuda_check, cudart_module, trt_module

log = logging.getLogger("coalmine.runtime.backends")


class TensorRTBackend(Backend):
    """A TensorRT engine ready to infer; its profile fixes the tile and the largest batch.

    Args:
        engine_path: the plan file.
        origin: how it was found or built (for the run summary).

    Raises:
        BackendError: the engine cannot be loaded or its context cannot be created (the message
            names the engine file and the fix).
    """

    name = "tensorrt"
    on_gpu = True

    def __init__(self, engine_path: str | os.PathLike[str], *, origin: str = "") -> None:
        self.engine_path = Path(engine_path)
        self.origin = origin or f"engine {self.engine_path.name}"
        self.stream: Any = None
        self.d_in: Any = None
        self.d_out: Any = None
        self.context: Any = None
        self.engine: Any = None
        trt = trt_module()
        self.cudart = cudart_module()
        try:
            self._load(trt)
            self._allocate()
        except BaseException:
            self.close()
            raise

    # -- construction steps -------------------------------------------------------------------
    def _load(self, trt: Any) -> None:
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        try:
            plan = self.engine_path.read_bytes()
        except OSError as exc:
            raise BackendError(f"cannot read TensorRT engine {self.engine_path} ({exc.strerror})") from exc
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendError(
                f"TensorRT {trt.__version__} cannot load engine {self.engine_path} (damaged, or built for "
                "another GPU or TensorRT version); delete it and its .json record to rebuild, or use --backend cuda"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise BackendError(
                f"TensorRT engine {self.engine_path.name} has inputs {ins} and outputs {outs}, expected "
                "one of each; delete it and its .json record to rebuild"
            )
        self._inp, self._out = ins[0], outs[0]
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._inp)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._out)))
        lo, _opt, hi = (tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(self._inp, 0))
        if lo[2:] != hi[2:] or hi[2] != hi[3]:
            raise BackendError(
                f"TensorRT engine {self.engine_path.name} takes tiles from {lo[2:]} to {hi[2:]}; coalmine "
                "builds engines for one square tile: delete it and its .json record to rebuild"
            )
        self._channels = hi[1]
        self.fixed_tile = hi[2]
        self.max_batch = hi[0]
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(
                f"TensorRT could not create an execution context for engine {self.engine_path.name} "
                "(usually too little free GPU memory for its largest batch); close other GPU programs, "
                "export an engine with a smaller --max-batch, or use --backend cuda"
            )

    def _allocate(self) -> None:
        tile, n = self.fixed_tile, self.max_batch
        assert tile is not None and n is not None
        cudart = self.cudart
        self.stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.d_in = cuda_check(cudart.cudaMalloc(n * self._channels * tile * tile * self._in_dtype.itemsize), "cudaMalloc")
        self.d_out = cuda_check(cudart.cudaMalloc(n * tile * tile * self._out_dtype.itemsize), "cudaMalloc")
        for name, ptr in ((self._inp, self.d_in), (self._out, self.d_out)):
            if self.context.set_tensor_address(name, int(ptr)) is False:
                raise BackendError(f"TensorRT refused the device buffer for tensor {name!r} of engine "
                                   f"{self.engine_path.name}; delete it and its .json record to rebuild")

    # -- Backend --------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.engine_path.name

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run on a float32 (N, C, tile, tile) batch with N <= max_batch; return (N, 1, tile, tile)."""
        n, c, h, w = x.shape
        if h != self.fixed_tile or w != self.fixed_tile or n > (self.max_batch or 0) or c != self._channels:
            raise BackendError(
                f"TensorRT engine {self.engine_path.name} takes up to {self.max_batch} tiles of "
                f"{self._channels}x{self.fixed_tile}x{self.fixed_tile}, got {n} of {c}x{h}x{w}"
            )
        if self.context is None:
            raise BackendError(f"TensorRT engine {self.engine_path.name} was closed")
        cudart = self.cudart
        host_in = np.ascontiguousarray(x, dtype=self._in_dtype)
        host_out = np.empty((n, 1, h, w), dtype=self._out_dtype)
        if not self.context.set_input_shape(self._inp, (n, c, h, w)):
            raise BackendError(
                f"TensorRT engine {self.engine_path.name} refused input shape {(n, c, h, w)} (outside its "
                "profile); delete it and its .json record to rebuild"
            )
        cuda_check(cudart.cudaMemcpyAsync(self.d_in, host_in.ctypes.data, host_in.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream), "cudaMemcpyAsync")
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendError(f"TensorRT execution failed for engine {self.engine_path.name}; use --backend cuda")
        cuda_check(cudart.cudaMemcpyAsync(host_out.ctypes.data, self.d_out, host_out.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream), "cudaMemcpyAsync")
        cuda_check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return host_out.astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "engine": self.engine_path.name, "tile": self.fixed_tile,
                "max_batch": self.max_batch, "origin": self.origin}

    def close(self) -> None:
        """Free the device buffers and the stream, then the context and the engine (idempotent)."""
        if self.stream is not None:
            self.cudart.cudaStreamSynchronize(self.stream)
        for attr in ("d_in", "d_out"):
            ptr = getattr(self, attr)
            if ptr is not None:
                err = self.cudart.cudaFree(ptr)
                setattr(self, attr, None)
                if int(err[0] if isinstance(err, tuple) else err) != int(self.cudart.cudaError_t.cudaSuccess):
                    log.warning("cudaFree failed for engine %s: %s", self.engine_path.name, err)
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        # TensorRT objects free their device memory when the last Python reference goes:
        # the context before the engine, the engine before its runtime.
        self.context = None
        self.engine = None
        self._runtime = None
