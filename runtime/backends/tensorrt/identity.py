"""Who is running (GPU, TensorRT) and which engine files fit: the identity and the engine records.

An engine loads only on the GPU model, compute capability and exact TensorRT version and
build it was made with (TensorRT #2176, #564), for the ONNX file and the tile/batch profile
it was built from. Each engine ``engines/<key>.engine`` therefore carries all of these in its
file name and has a record ``engines/<key>.json`` beside it (the ONNX SHA-256, the machine,
the profile and the parity gate it passed). A record is written once, after its engine passed
the gate, and never rewritten, so two machines sharing a bundle folder add files side by side
and never overwrite each other's engine or lose each other's record.

Example:
    >>> m = Machine("NVIDIA GeForce RTX 3060", "8.6", "10.13.3.9", "cu12")
    >>> engine_key("model.fp16.onnx", "3f2a9c1b0d4e5f60", m, tile=256, max_batch=8)
    'model.fp16_nvidia-geforce-rtx-3060_sm86_trt10.13.3.9-cu12_onnx3f2a9c1b0d4e_t256_b8'
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..._optional import optional_import
from ...bundle import plain_name_problem
from ...errors import BackendError

log = logging.getLogger("coalmine.runtime.backends")

ENGINE_SUFFIX = ".engine"
RECORD_SUFFIX = ".json"


# -- optional imports ----------------------------------------------------------------------
def trt_module() -> Any:
    """The ``tensorrt`` module.

    Raises:
        MissingDependencyError: not installed (the message names the extra).
    """
    return optional_import("tensorrt", purpose="the TensorRT backend")


def cudart_module() -> Any:
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6).

    Raises:
        MissingDependencyError: cuda-python is not installed.
    """
    return optional_import("cuda.bindings.runtime", "cuda.cudart", purpose="the TensorRT backend")


def cuda_check(result: Any, what: str) -> Any:
    """Unpack a cuda-python result ``(err, *values)``; raise BackendError unless ``cudaSuccess``."""
    cudart = cudart_module()
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        name = getattr(err, "name", str(err))
        fix = ("too little free GPU memory: close other GPU programs or use --backend cpu"
               if "MemoryAllocation" in name else "check the GPU driver (nvidia-smi)")
        raise BackendError(f"CUDA call {what} failed with {name}; {fix}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


# -- this machine ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Machine:
    """What an engine is bound to: GPU model, compute capability, TensorRT version and build."""

    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    #: The CUDA major version the TensorRT wheel was built for ("cu12", "cu13"), or "cu?".
    tensorrt_build: str = "cu?"

    def slug(self) -> str:
        """A file-name-safe key, e.g. ``nvidia-geforce-rtx-3060_sm86_trt10.13.3.9-cu12``."""
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-") or "gpu"
        return f"{gpu}_sm{self.compute_capability.replace('.', '')}_trt{self.tensorrt_version}-{self.tensorrt_build}"

    def describe(self) -> str:
        return (f"{self.gpu_name} (compute {self.compute_capability}) with TensorRT "
                f"{self.tensorrt_version} ({self.tensorrt_build})")


def device_info(device: int = 0) -> dict[str, str]:
    """GPU name and compute capability ("8.6") of CUDA device ``device``.

    Raises:
        MissingDependencyError: cuda-python is not installed.
        BackendError: no CUDA device or driver.
    """
    cudart = cudart_module()
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != int(cudart.cudaError_t.cudaSuccess) or not count:
        raise BackendError(f"no CUDA GPU is visible (cudaGetDeviceCount: {getattr(err, 'name', err)}, {count} devices)")
    prop = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {"gpu_name": name.strip("\x00 "), "compute_capability": f"{prop.major}.{prop.minor}"}


def tensorrt_build() -> str:
    """The CUDA major version the installed TensorRT wheel targets: "cu12", "cu13" or "cu?".

    pip installs TensorRT as ``tensorrt-cu12`` or ``tensorrt-cu13`` (the ``tensorrt`` meta
    package pulls one of them); a TensorRT from a tarball or a system package reports "cu?".
    """
    for build in ("cu13", "cu12", "cu11"):
        for dist in (f"tensorrt-{build}-bindings", f"tensorrt-{build}", f"tensorrt_{build}_bindings"):
            try:
                metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
            return build
    return "cu?"


def this_machine(trt: Any | None = None) -> Machine:
    """The GPU and TensorRT of this process.

    Raises:
        MissingDependencyError: tensorrt or cuda-python is missing.
        BackendError: no CUDA GPU.
    """
    trt = trt or trt_module()
    dev = device_info()
    return Machine(dev["gpu_name"], dev["compute_capability"], str(trt.__version__), tensorrt_build())


# -- engine files and their records ---------------------------------------------------------------
def engine_key(onnx_name: str, onnx_sha256: str, machine: Machine, *, tile: int, max_batch: int) -> str:
    """The file stem that makes an engine unique: source, machine and profile."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(onnx_name).stem)
    return f"{stem}_{machine.slug()}_onnx{onnx_sha256[:12]}_t{int(tile)}_b{int(max_batch)}"


def record_of(engine_path: Path) -> Path:
    """The record file beside an engine file."""
    return engine_path.with_suffix(RECORD_SUFFIX)


def new_record(*, engine_file: str, onnx_name: str, onnx_sha256: str, machine: Machine, tile: int,
               max_batch: int, workspace_bytes: int, created: str) -> dict[str, Any]:
    """The record of a freshly built engine (its ``gate`` is added once the gate passed)."""
    return {
        "file": engine_file,
        "onnx": onnx_name,
        "onnx_sha256": onnx_sha256,
        "gpu_name": machine.gpu_name,
        "compute_capability": machine.compute_capability,
        "tensorrt_version": machine.tensorrt_version,
        "tensorrt_build": machine.tensorrt_build,
        "tile": int(tile),
        "max_batch": int(max_batch),
        "workspace_bytes": int(workspace_bytes),
        "created": created,
    }


def read_records(engines_dir: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every engine record in ``engines_dir``, and a reason for each record that cannot be read.

    A record another machine is writing, or a damaged one, is skipped with its reason rather
    than stopping the run: another engine (or a new build) can still serve.
    """
    d = Path(engines_dir)
    records: list[dict[str, Any]] = []
    unreadable: list[str] = []
    if not d.is_dir():
        return records, unreadable
    for p in sorted(d.glob(f"*{RECORD_SUFFIX}")):
        if p.name.startswith("."):  # a record being written
            continue
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            unreadable.append(f"{p.name}: not a readable engine record ({exc}); delete it")
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("file"), str):
            unreadable.append(f"{p.name}: not an engine record (no 'file'); delete it")
            continue
        if plain_name_problem(rec["file"]):  # an engine is a file of this folder, never a path elsewhere
            unreadable.append(f"{p.name}: its 'file' {rec['file']!r} is not a plain file name in {d}; delete it")
            continue
        records.append(rec)
    return records, unreadable


def record_mismatches(rec: dict[str, Any], *, onnx_sha256: str, machine: Machine, tile: int) -> list[str]:
    """Why the engine of record ``rec`` cannot run here (empty list: it can).

    Example:
        >>> rec = {"onnx_sha256": "ab", "gpu_name": "Tesla T4", "compute_capability": "7.5",
        ...        "tensorrt_version": "10.13.3.9", "tensorrt_build": "cu12", "tile": 256,
        ...        "gate": {"passed": True}}
        >>> record_mismatches(rec, onnx_sha256="ab", tile=256,
        ...                   machine=Machine("NVIDIA GeForce RTX 3060", "8.6", "10.13.3.9", "cu12"))
        ['built for Tesla T4 (compute 7.5), this GPU is NVIDIA GeForce RTX 3060 (compute 8.6)']
    """
    why = []
    if rec.get("onnx_sha256") != onnx_sha256:
        why.append(f"built from a different {rec.get('onnx', 'ONNX file')} (sha256 differs)")
    if (rec.get("gpu_name"), rec.get("compute_capability")) != (machine.gpu_name, machine.compute_capability):
        why.append(
            f"built for {rec.get('gpu_name')} (compute {rec.get('compute_capability')}), "
            f"this GPU is {machine.gpu_name} (compute {machine.compute_capability})"
        )
    if (rec.get("tensorrt_version"), rec.get("tensorrt_build")) != (machine.tensorrt_version, machine.tensorrt_build):
        why.append(
            f"built with TensorRT {rec.get('tensorrt_version')} ({rec.get('tensorrt_build')}), this is "
            f"TensorRT {machine.tensorrt_version} ({machine.tensorrt_build})"
        )
    if _int(rec.get("tile")) != int(tile):
        why.append(f"built for tile {rec.get('tile')}, the run uses tile {tile}")
    gate = rec.get("gate")
    if not (isinstance(gate, dict) and gate.get("passed") is True):
        why.append("has no passed parity gate on record")
    return why


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return -1


def select_engine(
    engines_dir: Path, *, onnx_sha256: str, machine: Machine, tile: int, max_batch: int
) -> tuple[dict[str, Any] | None, list[str]]:
    """The engine to run, and why every other record was passed over.

    Among the gated engines that fit this machine, ONNX file and tile, the smallest whose
    profile takes ``max_batch`` wins (device memory is sized for the largest profile shape);
    when none takes it, the one with the largest batch does and the run clamps its batch to it.
    """
    records, rejected = read_records(engines_dir)
    usable = []
    for rec in records:
        why = record_mismatches(rec, onnx_sha256=onnx_sha256, machine=machine, tile=tile)
        if not why and not (engines_dir / rec["file"]).is_file():
            why = [f"its engine file {rec['file']} is missing"]
        if why:
            rejected.append(f"{rec['file']}: {'; '.join(why)}")
        else:
            usable.append(rec)
    if not usable:
        return None, rejected
    fits = [r for r in usable if _int(r.get("max_batch")) >= max_batch]
    best = min(fits, key=lambda r: _int(r.get("max_batch"))) if fits else max(usable, key=lambda r: _int(r.get("max_batch")))
    return best, rejected


def timing_cache_path(engines_dir: Path, machine: Machine) -> Path:
    """The builder's timing cache for this GPU model, compute capability and TensorRT version."""
    return engines_dir / f"timing_{machine.slug()}.cache"
