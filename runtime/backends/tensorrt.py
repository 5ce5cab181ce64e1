"""TensorRT engines: build, find by manifest, and run — with tensorrt + cuda-python, no torch.

Engines are not portable: one loads only on the compute capability and the exact TensorRT
version it was built with (TensorRT #2176, #564). So a bundle ships its ONNX files and the
engine is built on the workstation, once, and recorded in ``engines/manifest.json`` with
the GPU name, compute capability, TensorRT version, the ONNX file's SHA-256, the tile size
and the largest batch. :func:`find_engine` returns only an engine whose record matches this
machine; an engine for another GPU or TensorRT version is rebuilt when the builder is
installed, else refused with a message saying why and what to do.

Written against the documented TensorRT 10 / 11 Python API: strongly typed networks (the
flag exists from 10.12 and is implied on 11: precision comes from the ONNX file, so FP16
means building ``model.fp16.onnx``), ``set_memory_pool_limit(WORKSPACE)``, one optimisation
profile with batch 1..max at a fixed tile size, a timing cache, ``build_serialized_network``;
at run time ``deserialize_cuda_engine``, ``set_input_shape``, ``set_tensor_address`` and
``execute_async_v3`` on a CUDA stream from ``cuda.bindings.runtime``.

Example:
    >>> be = TensorRTBackend.for_bundle(bundle, tile=256, max_batch=8, gpu_mem_gb=6)  # doctest: +SKIP
    >>> logits = be.infer(batch)                                                     # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_bytes, atomic_write_json, sha256_file
from .._optional import optional_import
from ..bundle import Bundle
from ..errors import BackendError, BundleError, OutputError
from . import Backend

log = logging.getLogger("coalmine.runtime.backends")

MANIFEST = "manifest.json"
TIMING_CACHE = "timing.cache"


# -- optional imports ----------------------------------------------------------------------
def _trt() -> Any:
    return optional_import("tensorrt", purpose="the TensorRT backend")


def _cudart() -> Any:
    # cuda.cudart: the cuda-python < 12.6 layout
    return optional_import("cuda.bindings.runtime", "cuda.cudart", purpose="the TensorRT backend")


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda-python call result ``(err, *values)``; raise BackendError on failure."""
    cudart = _cudart()
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        raise BackendError(f"CUDA call {what} failed with {err}; check the GPU driver (nvidia-smi)")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


# -- identity of this machine and of an ONNX file ------------------------------------------
def device_info(device: int = 0) -> dict[str, str]:
    """GPU name and compute capability ("8.6") of CUDA device ``device``.

    Raises:
        BackendError: no CUDA device or driver.
    """
    cudart = _cudart()
    count = _check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if not count:
        raise BackendError("no CUDA GPU is visible (cudaGetDeviceCount = 0)")
    prop = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {"gpu_name": name.strip("\x00 "), "compute_capability": f"{prop.major}.{prop.minor}"}


def read_manifest(engines_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The engines manifest (``{"engines": [...]}``), empty if absent.

    Raises:
        BundleError: the manifest exists but is not valid JSON.
    """
    p = Path(engines_dir) / MANIFEST
    if not p.is_file():
        return {"engines": []}
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"engine manifest {p} is not valid JSON ({exc}); delete it to rebuild engines") from exc
    if not isinstance(d, dict) or not isinstance(d.get("engines"), list):
        raise BundleError(f"engine manifest {p} has no 'engines' list; delete it to rebuild engines")
    return d


def entry_mismatches(entry: dict[str, Any], *, onnx_sha256: str, device: dict[str, str],
                     trt_version: str, tile: int, max_batch: int = 1) -> list[str]:
    """Why a manifest entry cannot be used here (empty list: it can).

    Example:
        >>> e = {"onnx_sha256": "ab", "compute_capability": "7.5", "tensorrt_version": "10.3.0",
        ...      "gpu_name": "T4", "tile": 256, "max_batch": 8}
        >>> entry_mismatches(e, onnx_sha256="ab", device={"gpu_name": "RTX 3060",
        ...     "compute_capability": "8.6"}, trt_version="10.3.0", tile=256)
        ['built for compute capability 7.5 (T4), this GPU is 8.6 (RTX 3060)']
    """
    why = []
    if entry.get("onnx_sha256") != onnx_sha256:
        why.append("built from a different ONNX file (sha256 differs)")
    if entry.get("compute_capability") != device["compute_capability"]:
        why.append(
            f"built for compute capability {entry.get('compute_capability')} ({entry.get('gpu_name')}), "
            f"this GPU is {device['compute_capability']} ({device['gpu_name']})"
        )
    if entry.get("tensorrt_version") != trt_version:
        why.append(f"built with TensorRT {entry.get('tensorrt_version')}, this is TensorRT {trt_version}")
    if int(entry.get("tile", -1)) != int(tile):
        why.append(f"built for tile {entry.get('tile')}, the run uses tile {tile}")
    if int(entry.get("max_batch", 0)) < int(max_batch):
        why.append(f"built for batches up to {entry.get('max_batch')}, the run needs {max_batch}")
    return why


def select_engine(engines_dir: Path, *, onnx_sha256: str, device: dict[str, str], trt_version: str,
                  tile: int, max_batch: int = 1) -> tuple[Path | None, list[str]]:
    """The first manifest entry usable here, and the reasons the others were rejected."""
    rejected = []
    for entry in read_manifest(engines_dir)["engines"]:
        why = entry_mismatches(entry, onnx_sha256=onnx_sha256, device=device,
                               trt_version=trt_version, tile=tile, max_batch=max_batch)
        path = engines_dir / str(entry.get("file", ""))
        if not why and not path.is_file():
            why = [f"engine file {path.name} listed in the manifest is missing"]
        if not why:
            return path, rejected
        rejected.append(f"{entry.get('file')}: {'; '.join(why)}")
    return None, rejected


def engine_source(bundle: Bundle) -> Path:
    """The ONNX file TensorRT builds from: ``model.fp16.onnx`` when exported, else ``model.onnx``.

    TensorRT 11 networks are strongly typed, so the precision is that of the ONNX file.
    """
    return bundle.file("onnx_fp16") if bundle.has("onnx_fp16") else bundle.file("onnx")


def find_engine(bundle: Bundle, *, tile: int | None = None, max_batch: int = 1) -> Path | None:
    """An engine in ``bundle/engines`` built for this GPU, TensorRT version, ONNX file and tile.

    Raises:
        MissingDependencyError: tensorrt or cuda-python is not installed.
        BackendError: no GPU.
    """
    trt = _trt()
    path, _ = select_engine(
        bundle.engines_dir, onnx_sha256=sha256_file(engine_source(bundle)), device=device_info(),
        trt_version=trt.__version__, tile=tile or bundle.tile_size, max_batch=max_batch,
    )
    return path


def availability(bundle: Bundle, *, tile: int) -> tuple[bool, str]:
    """Whether TensorRT can run this bundle here, and why (used by ``--backend auto``)."""
    try:
        trt = _trt()
        _cudart()
    except ImportError as exc:
        return False, str(exc).split(";")[0]
    try:
        dev = device_info()
    except BackendError as exc:
        return False, str(exc)
    if not (bundle.has("onnx") or bundle.has("onnx_fp16")):
        return False, f"bundle {bundle.path} has no ONNX model; run coal-export"
    if find_engine(bundle, tile=tile) is not None:
        return True, f"an engine for {dev['gpu_name']} / TensorRT {trt.__version__} is in the manifest"
    if hasattr(trt, "Builder"):
        return True, f"no engine for {dev['gpu_name']} yet, the TensorRT builder is installed (one-off build)"
    return False, "no matching engine and this TensorRT install has no builder (lean/dispatch runtime)"


# -- build -----------------------------------------------------------------------------------
def _engine_name(onnx_path: Path, cc: str, version: str, tile: int, max_batch: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", onnx_path.stem)
    return f"{stem}_sm{cc.replace('.', '')}_trt{version}_t{tile}_b{max_batch}.engine"


def build_engine(
    onnx_path: str | os.PathLike[str],
    engines_dir: str | os.PathLike[str],
    *,
    tile: int,
    max_batch: int,
    workspace_bytes: int = 1 << 30,
    timing_cache: str | os.PathLike[str] | None = None,
) -> Path:
    """Build a TensorRT engine for ``onnx_path`` and record it in ``engines/manifest.json``.

    One optimisation profile: batch 1..``max_batch`` (opt = max) at a fixed ``tile x tile``
    (fixed spatial size keeps memory and tactic choice tight; TensorRT #3501, #1166). The
    network is strongly typed where the flag exists (10.12+; implied on 11). The timing
    cache (default ``engines/timing.cache``) makes rebuilds fast.

    Args:
        onnx_path: ONNX model (input ``(N, C, H, W)``, dynamic batch).
        engines_dir: folder for the plan file and manifest (created).
        tile: tile size (multiple of 32).
        max_batch: largest batch.
        workspace_bytes: builder workspace limit (1 GiB suits a 6 GB card).
        timing_cache: timing cache file.

    Returns:
        Path of the written engine.

    Raises:
        MissingDependencyError, BackendError (parse or build failure), OutputError.

    Example:
        >>> build_engine("b/model.fp16.onnx", "b/engines", tile=256, max_batch=8)  # doctest: +SKIP
    """
    trt = _trt()
    onnx_path = Path(onnx_path)
    engines_dir = Path(engines_dir)
    try:
        engines_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create engine folder {engines_dir} ({exc.strerror})") from exc
    dev = device_info()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # required before 10, no-op after
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errs}; re-export with coal-export")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if not strongly_typed and ".fp16." in onnx_path.name and hasattr(trt.BuilderFlag, "FP16"):
        # Weakly typed TensorRT (before strong typing existed) takes precision from a flag.
        config.set_flag(trt.BuilderFlag.FP16)
    cache_path = Path(timing_cache) if timing_cache else engines_dir / TIMING_CACHE
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    c = inp.shape[1]
    profile.set_shape(inp.name, (1, c, tile, tile), (max_batch, c, tile, tile), (max_batch, c, tile, tile))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(
            f"TensorRT could not build an engine from {onnx_path} (tile {tile}, batch {max_batch}); "
            "try a smaller --tile or --batch-size, or --backend cuda"
        )
    version = trt.__version__
    target = engines_dir / _engine_name(onnx_path, dev["compute_capability"], version, tile, max_batch)
    atomic_write_bytes(target, memoryview(plan))
    try:
        cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    except OSError:  # the cache is an optimisation only
        log.warning("could not write the TensorRT timing cache %s", cache_path)
    manifest = read_manifest(engines_dir)
    entries = [e for e in manifest["engines"] if e.get("file") != target.name]
    entries.append({
        "file": target.name,
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "gpu_name": dev["gpu_name"],
        "compute_capability": dev["compute_capability"],
        "tensorrt_version": version,
        "tile": int(tile),
        "max_batch": int(max_batch),
        "workspace_bytes": int(workspace_bytes),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    atomic_write_json(engines_dir / MANIFEST, {"engines": entries})
    return target


# -- run -------------------------------------------------------------------------------------
class TensorRTBackend(Backend):
    """Run a serialized TensorRT engine with device buffers sized for ``max_batch`` tiles.

    Args:
        engine_path: the plan file.
        tile: the engine's fixed tile size.
        max_batch: largest batch the engine's profile accepts.

    Raises:
        BackendError: the engine cannot be deserialized (another GPU / TensorRT version).
    """

    name = "tensorrt"
    on_gpu = True

    def __init__(self, engine_path: str | os.PathLike[str], *, tile: int, max_batch: int,
                 origin: str = "") -> None:
        trt = _trt()
        self.cudart = _cudart()
        self.engine_path = Path(engine_path)
        self.fixed_tile = int(tile)
        self.max_batch = int(max_batch)
        self.origin = origin or f"engine {self.engine_path.name}"
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"TensorRT {trt.__version__} cannot load engine {self.engine_path} (built for another GPU "
                "or TensorRT version); delete it and run again to rebuild, or use --backend cuda"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inp = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._out = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._inp)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._out)))
        self._channels = int(self.engine.get_tensor_shape(self._inp)[1])
        n_in = self.max_batch * self._channels * tile * tile * self._in_dtype.itemsize
        n_out = self.max_batch * tile * tile * self._out_dtype.itemsize
        self.stream = _check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.d_in = _check(self.cudart.cudaMalloc(n_in), "cudaMalloc")
        self.d_out = _check(self.cudart.cudaMalloc(n_out), "cudaMalloc")
        self.context.set_tensor_address(self._inp, int(self.d_in))
        self.context.set_tensor_address(self._out, int(self.d_out))

    @classmethod
    def for_bundle(cls, bundle: Bundle, *, tile: int, max_batch: int, gpu_mem_gb: float = 6.0) -> TensorRTBackend:
        """Load the bundle's engine for this machine, building it if needed and possible.

        Raises:
            BackendError: no usable engine and no builder (the message lists each rejected engine).
        """
        trt = _trt()
        src = engine_source(bundle)
        dev = device_info()
        path, rejected = select_engine(
            bundle.engines_dir, onnx_sha256=sha256_file(src), device=dev, trt_version=trt.__version__,
            tile=tile, max_batch=max_batch,
        )
        if path is not None:
            return cls(path, tile=tile, max_batch=max_batch, origin=f"engine {path.name} from the manifest")
        if not hasattr(trt, "Builder"):
            detail = "; ".join(rejected) if rejected else "no engines in the manifest"
            raise BackendError(
                f"no TensorRT engine in {bundle.engines_dir} fits {dev['gpu_name']} "
                f"(compute {dev['compute_capability']}) with TensorRT {trt.__version__} ({detail}), and "
                "this TensorRT has no builder to rebuild it; install the full 'tensorrt' package or run "
                "coal-export --engine on this machine"
            )
        if rejected:
            log.warning("rebuilding the TensorRT engine: %s", "; ".join(rejected))
        workspace = int(min(1.0, max(0.25, gpu_mem_gb / 6.0)) * (1 << 30))
        log.info("building a TensorRT engine for %s from %s (one-off, cached in %s)",
                 dev["gpu_name"], src.name, bundle.engines_dir)
        path = build_engine(src, bundle.engines_dir, tile=tile, max_batch=max_batch, workspace_bytes=workspace)
        return cls(path, tile=tile, max_batch=max_batch, origin=f"engine {path.name} built now from {src.name}")

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run on a float32 (N, C, tile, tile) batch with N <= max_batch; return (N, 1, tile, tile)."""
        n, c, h, w = x.shape
        if h != self.fixed_tile or w != self.fixed_tile or n > self.max_batch:
            raise BackendError(
                f"TensorRT engine {self.engine_path.name} takes up to {self.max_batch} tiles of "
                f"{self.fixed_tile}x{self.fixed_tile}, got {n} of {h}x{w}"
            )
        cudart = self.cudart
        host_in = np.ascontiguousarray(x, dtype=self._in_dtype)
        host_out = np.empty((n, 1, h, w), dtype=self._out_dtype)
        self.context.set_input_shape(self._inp, (n, c, h, w))
        _check(cudart.cudaMemcpyAsync(self.d_in, host_in.ctypes.data, host_in.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream), "cudaMemcpyAsync")
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendError(f"TensorRT execution failed for engine {self.engine_path.name}")
        _check(cudart.cudaMemcpyAsync(host_out.ctypes.data, self.d_out, host_out.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream), "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return host_out.astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "engine": self.engine_path.name, "tile": self.fixed_tile,
                "max_batch": self.max_batch, "origin": self.origin}

    def close(self) -> None:
        for ptr in ("d_in", "d_out"):
            if getattr(self, ptr, None) is not None:
                self.cudart.cudaFree(getattr(self, ptr))
                setattr(self, ptr, None)
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None
