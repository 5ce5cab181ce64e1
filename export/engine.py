"""TensorRT engine step of the export: availability, build + parity, stale-engine detection.

Building and loading engines is the runtime's job (:mod:`coalmine.runtime.backends.tensorrt`:
``build_engine``, ``TensorRTBackend``, the manifest); this module only decides whether to
build, calls it, checks the engine against ONNX fp32, and tells which engines recorded in
``engines/manifest.json`` no longer fit (ONNX re-exported, another GPU or TensorRT version).

Example:
    >>> ok, why = tensorrt_status()                      # doctest: +SKIP
    >>> stale_engines(load_bundle("models/tapin"))       # doctest: +SKIP
    [{'file': 'model.fp16_sm86_trt10.13_t256_b8.engine', 'reasons': ['built from a different ...']}]
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from coalmine.runtime._optional import pip_hint
from coalmine.runtime.bundle import Bundle
from coalmine.runtime.errors import BackendError, BundleError

log = logging.getLogger(__name__)


def tensorrt_status() -> tuple[bool, str]:
    """Whether an engine can be built here: the tensorrt builder and a CUDA GPU.

    Returns:
        ``(True, description)`` or ``(False, reason it cannot)``.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return False, f"the tensorrt package is not installed ({pip_hint('tensorrt')})"
    try:
        from coalmine.runtime.backends.tensorrt import device_info

        dev = device_info()
    except ImportError as exc:
        return False, f"cuda-python is missing ({exc})"
    except BackendError as exc:
        return False, f"no usable CUDA GPU ({exc})"
    import tensorrt as trt

    if not hasattr(trt, "Builder"):
        return False, f"TensorRT {trt.__version__} here is a lean runtime without the builder"
    return True, f"{dev['gpu_name']} (compute {dev['compute_capability']}), TensorRT {trt.__version__}"


def stale_engines(
    bundle: Bundle,
    *,
    device: dict[str, str] | None = None,
    trt_version: str | None = None,
) -> list[dict[str, Any]]:
    """Engines in the bundle's manifest that no longer fit, with the reasons.

    Without TensorRT or a GPU only the ONNX check is possible: an engine whose recorded
    ``onnx_sha256`` differs from its ONNX file's current SHA-256 (re-export) or whose ONNX
    file is gone is stale everywhere. Given ``device`` (``gpu_name``, ``compute_capability``)
    and ``trt_version`` — detected here when TensorRT and a GPU are present — engines built for
    another GPU or TensorRT version are reported too.

    Returns:
        ``[{"file": name, "reasons": [...]}, ...]`` (empty: nothing stale or no manifest).

    Raises:
        BundleError: the manifest is not valid JSON.
    """
    from coalmine.runtime._io import sha256_file
    from coalmine.runtime.backends.tensorrt import entry_mismatches, read_manifest

    if device is None and trt_version is None and tensorrt_status()[0]:
        import tensorrt as trt
        from coalmine.runtime.backends.tensorrt import device_info

        device, trt_version = device_info(), trt.__version__
    out = []
    hashes: dict[str, str | None] = {}
    for entry in read_manifest(bundle.engines_dir)["engines"]:
        onnx_name = str(entry.get("onnx") or bundle.files.get("onnx", "model.onnx"))
        if onnx_name not in hashes:
            p = bundle.path / onnx_name
            hashes[onnx_name] = sha256_file(p) if p.is_file() else None
        current = hashes[onnx_name]
        reasons: list[str] = []
        if current is None:
            reasons.append(f"its ONNX file {onnx_name} is no longer in the bundle")
        elif device is None or trt_version is None:
            if entry.get("onnx_sha256") != current:
                reasons.append(f"built from a different {onnx_name} (sha256 differs: re-exported since)")
        else:
            reasons = entry_mismatches(
                entry,
                onnx_sha256=current,
                device=device,
                trt_version=trt_version,
                tile=int(entry.get("tile", bundle.tile_size)),
            )
        if not (bundle.engines_dir / str(entry.get("file", ""))).is_file():
            reasons.append("the engine file listed in the manifest is missing")
        if reasons:
            out.append({"file": str(entry.get("file")), "reasons": reasons})
    return out


def build_checked_engine(
    bundle: Bundle,
    onnx_path: Path,
    *,
    tile: int,
    max_batch: int,
    workspace_bytes: int,
) -> tuple[Path, Any]:
    """Build an engine from ``onnx_path`` into ``bundle/engines`` and open it.

    The timing cache is kept in the bundle (``engines/timing.cache``) so a rebuild after a
    re-export takes seconds. The caller runs the parity gate on the returned backend and
    deletes the engine if it fails.

    Returns:
        ``(engine_path, TensorRTBackend)``.

    Raises:
        BackendError: TensorRT cannot parse or build the network.
    """
    from coalmine.runtime.backends.tensorrt import TIMING_CACHE, TensorRTBackend, build_engine

    path = build_engine(
        onnx_path,
        bundle.engines_dir,
        tile=tile,
        max_batch=max_batch,
        workspace_bytes=workspace_bytes,
        timing_cache=bundle.engines_dir / TIMING_CACHE,
    )
    try:
        backend = TensorRTBackend(path, tile=tile, max_batch=max_batch, origin="built by coal-export")
    except BackendError:
        path.unlink(missing_ok=True)
        raise
    return path, backend


def discard_engine(bundle: Bundle, path: Path) -> None:
    """Remove an engine that failed its gate, and its manifest entry."""
    from coalmine.runtime._io import atomic_write_json
    from coalmine.runtime.backends.tensorrt import MANIFEST, read_manifest

    path.unlink(missing_ok=True)
    try:
        manifest = read_manifest(bundle.engines_dir)
    except BundleError:
        return
    entries = [e for e in manifest["engines"] if e.get("file") != path.name]
    atomic_write_json(bundle.engines_dir / MANIFEST, {**manifest, "engines": entries})
