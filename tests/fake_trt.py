"""A fake of the ``tensorrt`` and ``cuda.bindings.runtime`` surface coalmine uses, for machines without a GPU.

It behaves as the documented TensorRT 10/11 Python API and cuda-python do, failure returns
included: ``deserialize_cuda_engine`` and ``create_execution_context`` return None,
``set_input_shape``, ``set_tensor_address``, ``set_timing_cache`` and ``execute_async_v3``
return False, ``get_timing_cache`` and ``build_serialized_network`` return None, and every CUDA
runtime call returns a tuple whose first item is a ``cudaError_t``. Each failure is switched on
through :class:`Faults`.

The "GPU" is host memory: ``cudaMalloc`` hands out ctypes buffers and ``cudaMemcpyAsync`` is a
``memmove`` between them and numpy arrays, so the backend's pointer arithmetic really runs. A plan
carries its ONNX graph, the machine it was built for (GPU name, compute capability, TensorRT
version) and its one optimisation profile; an engine refuses to deserialize on another machine
and "executes" its graph with ONNX Runtime on the CPU. Live allocations and streams are counted,
so a test can tell whether a half-built backend leaked them.

Example:
    >>> gpu = FakeGPU()
    >>> gpu.install(monkeypatch)   # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import struct
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

PLAN_MAGIC = b"FAKEPLAN"
CACHE_MAGIC = b"FAKECACHE"


@dataclass
class Faults:
    """Failures to inject, each as the real API reports it."""

    parse: bool = False             # parse_from_file -> False
    build: bool = False             # build_serialized_network -> None
    deserialize: bool = False       # deserialize_cuda_engine -> None
    context: bool = False           # create_execution_context -> None
    input_shape: bool = False       # set_input_shape -> False
    set_timing_cache: bool = False  # set_timing_cache -> False
    get_timing_cache: bool = False  # get_timing_cache -> None
    execute: bool = False           # execute_async_v3 -> False
    malloc_at: int | None = None    # the n-th cudaMalloc (1-based) fails with cudaErrorMemoryAllocation
    nan_logits: bool = False        # engines write NaN into one pixel of every tile (FP16 overflow)
    logit_offset: float = 0.0       # engines add this to every logit (a wrong engine)


class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class _Stream:
    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __int__(self) -> int:
        return self.handle


class FakeGPU:
    """One fake GPU with its TensorRT and CUDA runtime modules.

    Args:
        name: the GPU's name as ``cudaGetDeviceProperties`` reports it.
        cc: compute capability (major, minor).
        version: TensorRT version (``tensorrt.__version__``).
        build: the TensorRT wheel's CUDA build ("cu12", "cu13").
        devices: number of visible devices (0: ``cudaErrorNoDevice``).
    """

    def __init__(self, name: str = "NVIDIA GeForce RTX 3060", cc: tuple[int, int] = (8, 6),
                 version: str = "10.13.3.9", build: str = "cu12", devices: int = 1) -> None:
        self.name, self.cc, self.version, self.build, self.devices = name, cc, version, build, devices
        self.faults = Faults()
        self.allocs: dict[int, Any] = {}
        self.streams: set[int] = set()
        self.mallocs = 0
        self.builds: list[dict[str, Any]] = []
        self.timing_cache_loaded: list[bool] = []
        self.deserialized = 0
        self.executed_batches: list[int] = []
        self.trt = _make_trt(self)
        self.cudart = _make_cudart(self)

    @property
    def machine_key(self) -> str:
        return f"{self.name}|{self.cc[0]}.{self.cc[1]}|{self.version}"

    def install(self, monkeypatch: Any) -> FakeGPU:
        """Make ``import tensorrt`` and ``from cuda.bindings import runtime`` return this GPU's fakes."""
        from coalmine.runtime.backends.tensorrt import identity

        cuda = _module("cuda")
        bindings = _module("cuda.bindings")
        cuda.bindings = bindings
        bindings.runtime = self.cudart
        for name, mod in (("tensorrt", self.trt), ("cuda", cuda), ("cuda.bindings", bindings),
                          ("cuda.bindings.runtime", self.cudart)):
            monkeypatch.setitem(sys.modules, name, mod)
        monkeypatch.setattr(identity, "tensorrt_build", lambda: self.build)
        return self

    def live(self) -> tuple[int, int]:
        """(device allocations, streams) not yet freed."""
        return len(self.allocs), len(self.streams)

    def region(self, ptr: int, nbytes: int) -> bool:
        """Whether [ptr, ptr + nbytes) lies inside one live allocation."""
        return any(base <= ptr and ptr + nbytes <= base + ctypes.sizeof(buf) for base, buf in self.allocs.items())


def _module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return mod


# -- cuda.bindings.runtime ------------------------------------------------------------------------
def _make_cudart(gpu: FakeGPU) -> types.ModuleType:
    rt = _module("cuda.bindings.runtime")
    ok = cudaError_t.cudaSuccess
    rt.cudaError_t = cudaError_t
    rt.cudaMemcpyKind = cudaMemcpyKind

    def cudaGetDeviceCount():  # noqa: N802
        return (cudaError_t.cudaErrorNoDevice, 0) if gpu.devices == 0 else (ok, gpu.devices)

    def cudaGetDeviceProperties(device):  # noqa: N802
        if not 0 <= int(device) < gpu.devices:
            return (cudaError_t.cudaErrorInvalidValue, None)
        return (ok, types.SimpleNamespace(name=gpu.name.encode() + b"\x00" * 8, major=gpu.cc[0], minor=gpu.cc[1],
                                          totalGlobalMem=12 << 30))

    def cudaStreamCreate():  # noqa: N802
        handle = 0x5000 + len(gpu.streams) + 1
        gpu.streams.add(handle)
        return (ok, _Stream(handle))

    def cudaStreamDestroy(stream):  # noqa: N802
        if int(stream) not in gpu.streams:
            return (cudaError_t.cudaErrorInvalidValue,)
        gpu.streams.discard(int(stream))
        return (ok,)

    def cudaStreamSynchronize(stream):  # noqa: N802
        return (ok,) if int(stream) in gpu.streams else (cudaError_t.cudaErrorInvalidValue,)

    def cudaMalloc(nbytes):  # noqa: N802
        gpu.mallocs += 1
        if gpu.faults.malloc_at == gpu.mallocs:
            return (cudaError_t.cudaErrorMemoryAllocation, 0)
        buf = (ctypes.c_char * int(nbytes))()
        gpu.allocs[ctypes.addressof(buf)] = buf
        return (ok, ctypes.addressof(buf))

    def cudaFree(ptr):  # noqa: N802
        if gpu.allocs.pop(int(ptr), None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (ok,)

    def cudaMemcpyAsync(dst, src, count, kind, stream):  # noqa: N802
        device_side = int(dst) if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else int(src)
        if int(stream) not in gpu.streams or not gpu.region(device_side, int(count)):
            return (cudaError_t.cudaErrorInvalidValue,)
        ctypes.memmove(int(dst), int(src), int(count))
        return (ok,)

    for fn in (cudaGetDeviceCount, cudaGetDeviceProperties, cudaStreamCreate, cudaStreamDestroy,
               cudaStreamSynchronize, cudaMalloc, cudaFree, cudaMemcpyAsync):
        setattr(rt, fn.__name__, fn)
    return rt


# -- tensorrt -----------------------------------------------------------------------------------
class _HostMemory(bytes):
    """``IHostMemory``: supports the buffer protocol, as the real one does."""


def _make_trt(gpu: FakeGPU) -> types.ModuleType:  # noqa: C901 - one namespace of small classes
    trt = _module("tensorrt")
    trt.__version__ = gpu.version

    class Logger:
        ERROR, WARNING, INFO = 1, 2, 3

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0  # deprecated and ignored from TensorRT 10.0
        STRONGLY_TYPED = 1

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class TensorIOMode(enum.IntEnum):
        NONE, INPUT, OUTPUT = 0, 1, 2

    class DataType(enum.IntEnum):
        FLOAT, HALF, INT8, INT32 = 0, 1, 2, 3

    def nptype(dt: DataType) -> type:
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                DataType.INT32: np.int32}[dt]

    class ITensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.onnx: bytes | None = None
            self.inputs: list[ITensor] = []
            self.outputs: list[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> ITensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            import onnxruntime as ort

            try:
                data = open(path, "rb").read()
                sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"ModelImporter: {str(exc).splitlines()[0]}")
                return False
            if gpu.faults.parse:
                self.errors.append("ModelImporter: unsupported operator (fault)")
                return False
            i = sess.get_inputs()[0]
            self.network.onnx = data
            self.network.inputs = [ITensor(i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape))]
            self.network.outputs = [o.name for o in sess.get_outputs()]
            return True

    class ITimingCache:
        def __init__(self, key: str) -> None:
            self.key = key

        def serialize(self) -> _HostMemory:
            return _HostMemory(CACHE_MAGIC + self.key.encode())

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class IBuilderConfig:
        def __init__(self) -> None:
            self.pools: dict[int, int] = {}
            self.profiles: list[IOptimizationProfile] = []
            self.cache: ITimingCache | None = None

        def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
            self.pools[int(pool)] = int(size)

        def create_timing_cache(self, data: bytes) -> ITimingCache | None:
            data = bytes(data)
            if not data:
                return ITimingCache(gpu.machine_key)
            if not data.startswith(CACHE_MAGIC):
                return None  # not a timing cache at all
            return ITimingCache(data[len(CACHE_MAGIC):].decode())

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if gpu.faults.set_timing_cache or (cache.key != gpu.machine_key and not ignore_mismatch):
                return False
            self.cache = ITimingCache(gpu.machine_key)  # a foreign cache's entries are dropped
            gpu.timing_cache_loaded.append(cache.key == gpu.machine_key)
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return None if gpu.faults.get_timing_cache else self.cache

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            for lo, opt, hi in profile.shapes.values():
                if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)) or min(lo) < 1:
                    return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> _HostMemory | None:
            if gpu.faults.build or network.onnx is None or len(config.profiles) != 1:
                return None
            name = network.inputs[0].name
            lo, _opt, hi = config.profiles[0].shapes[name]
            header = {"machine": gpu.machine_key, "input": name, "output": network.outputs[0],
                      "min": lo, "max": hi, "strongly_typed": bool(network.flags >> 1 & 1),
                      "workspace": config.pools.get(int(MemoryPoolType.WORKSPACE))}
            gpu.builds.append(header)
            h = json.dumps(header).encode()
            return _HostMemory(PLAN_MAGIC + struct.pack("<I", len(h)) + h + network.onnx)

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.shape: tuple[int, ...] | None = None
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            shape = tuple(int(s) for s in shape)
            lo, hi = self.engine.header["min"], self.engine.header["max"]
            if gpu.faults.input_shape or name != self.engine.header["input"] or not all(
                    a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
                return False
            self.shape = shape
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            if name not in (self.engine.header["input"], self.engine.header["output"]):
                return False
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            h = self.engine.header
            if gpu.faults.execute or self.shape is None or int(stream_handle) not in gpu.streams:
                return False
            n_in = int(np.prod(self.shape)) * 4
            n_out = self.shape[0] * self.shape[2] * self.shape[3] * 4
            src, dst = self.addresses.get(h["input"]), self.addresses.get(h["output"])
            if src is None or dst is None or not gpu.region(src, n_in) or not gpu.region(dst, n_out):
                return False
            x = np.frombuffer(ctypes.string_at(src, n_in), dtype=np.float32).reshape(self.shape)
            y = np.asarray(self.engine.session.run([h["output"]], {h["input"]: x})[0], dtype=np.float32)
            y = y.reshape(self.shape[0], 1, self.shape[2], self.shape[3]) + np.float32(gpu.faults.logit_offset)
            if gpu.faults.nan_logits:
                y[:, :, 0, 0] = np.nan
            y = np.ascontiguousarray(y)
            ctypes.memmove(dst, y.ctypes.data, n_out)
            gpu.executed_batches.append(self.shape[0])
            return True

    class ICudaEngine:
        def __init__(self, header: dict[str, Any], onnx: bytes) -> None:
            import onnxruntime as ort

            self.header = header
            self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])

        @property
        def num_io_tensors(self) -> int:
            return 2

        def get_tensor_name(self, i: int) -> str:
            return [self.header["input"], self.header["output"]][i]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return {self.header["input"]: TensorIOMode.INPUT, self.header["output"]: TensorIOMode.OUTPUT}.get(
                name, TensorIOMode.NONE)

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType.FLOAT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            c = self.header["max"][1]
            return (-1, c, -1, -1) if name == self.header["input"] else (-1, 1, -1, -1)

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            if profile_index != 0 or name != self.header["input"]:
                raise RuntimeError("invalid profile or tensor")
            lo, hi = tuple(self.header["min"]), tuple(self.header["max"])
            return [lo, hi, hi]

        def create_execution_context(self) -> IExecutionContext | None:
            return None if gpu.faults.context else IExecutionContext(self)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, plan: bytes) -> ICudaEngine | None:
            plan = bytes(plan)
            if gpu.faults.deserialize or not plan.startswith(PLAN_MAGIC):
                return None
            (n,) = struct.unpack("<I", plan[len(PLAN_MAGIC): len(PLAN_MAGIC) + 4])
            start = len(PLAN_MAGIC) + 4
            header = json.loads(plan[start: start + n])
            if header["machine"] != gpu.machine_key:  # another GPU or TensorRT version
                return None
            gpu.deserialized += 1
            return ICudaEngine(header, plan[start + n:])

    for obj in (Logger, NetworkDefinitionCreationFlag, MemoryPoolType, TensorIOMode, DataType, nptype,
                OnnxParser, Builder, Runtime):
        setattr(trt, obj.__name__, obj)
    return trt
