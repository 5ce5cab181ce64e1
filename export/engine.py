"""TensorRT engine step of the export: can one be built here, build + gate it, which engines are stale.

Building, gating and recording engines is the runtime's job
(:func:`coalmine.runtime.backends.tensorrt.build_gated`, the same function coal-run calls when
it has to build an engine itself), so an engine exported here and one built at run time pass
the same gate on the same validation tiles. This module decides whether to build, reports the
gate, and tells which recorded engines no longer fit (ONNX re-exported, another GPU or
TensorRT version).

Example:
    >>> ok, why = tensorrt_status()                      # doctest: +SKIP
    >>> stale_engines(load_bundle("models/tapin"))       # doctest: +SKIP
    [{'file': 'model.fp16_..._t256_b8.engine', 'reasons': ['built from a different model.fp16.onnx ...']}]
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from coalmine.runtime._optional import pip_hint
from coalmine.runtime.backends.gate import GateTiles, ParityReport
from coalmine.runtime.bundle import Bundle
from coalmine.runtime.errors import BackendError

log = logging.getLogger(__name__)


def tensorrt_status() -> tuple[bool, str]:
    """Whether an engine can be built here: the tensorrt package, cuda-python and a CUDA GPU.

    Returns:
        ``(True, description)`` or ``(False, reason it cannot)``.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return False, f"the tensorrt package is not installed ({pip_hint('tensorrt')})"
    from coalmine.runtime.backends.tensorrt.identity import this_machine

    try:
        machine = this_machine()
    except ImportError as exc:
        return False, str(exc).split(";")[0]
    except BackendError as exc:
        return False, f"no usable CUDA GPU ({exc})"
    return True, machine.describe()


def stale_engines(bundle: Bundle, *, machine: Any = None) -> list[dict[str, Any]]:
    """Engines recorded in the bundle that no longer fit, with the reasons.

    Without TensorRT or a GPU only the ONNX check is possible: an engine whose recorded
    ``onnx_sha256`` differs from its ONNX file's current SHA-256 (re-export) or whose ONNX
    file is gone is stale everywhere. Given ``machine`` (a
    :class:`~coalmine.runtime.backends.tensorrt.identity.Machine`) — detected here when
    TensorRT and a GPU are present — engines built for another GPU or TensorRT version are
    reported too.

    Returns:
        ``[{"file": name, "reasons": [...]}, ...]`` (empty: nothing stale or no engines).
    """
    from coalmine.runtime._io import sha256_file
    from coalmine.runtime.backends.tensorrt.identity import (
        read_records,
        record_mismatches,
        this_machine,
    )

    if machine is None and tensorrt_status()[0]:
        machine = this_machine()
    records, unreadable = read_records(bundle.engines_dir)
    out = [{"file": u.split(":")[0], "reasons": [u.split(": ", 1)[1]]} for u in unreadable]
    hashes: dict[str, str | None] = {}
    for rec in records:
        onnx_name = str(rec.get("onnx") or bundle.files.get("onnx", "model.onnx"))
        if onnx_name not in hashes:
            p = bundle.path / onnx_name
            hashes[onnx_name] = sha256_file(p) if p.is_file() else None
        current = hashes[onnx_name]
        reasons: list[str] = []
        if current is None:
            reasons.append(f"its ONNX file {onnx_name} is no longer in the bundle")
        elif machine is None:
            if rec.get("onnx_sha256") != current:
                reasons.append(f"built from a different {onnx_name} (sha256 differs: re-exported since)")
        else:
            reasons = record_mismatches(rec, onnx_sha256=current, machine=machine, tile=int(rec.get("tile", 0)))
        if not (bundle.engines_dir / rec["file"]).is_file():
            reasons.append("its engine file is missing")
        if reasons:
            out.append({"file": rec["file"], "reasons": reasons})
    return out


def build_engine_step(
    bundle: Bundle,
    tiles: GateTiles,
    *,
    tile: int,
    max_batch: int,
    workspace_bytes: int,
    say: Any,
) -> tuple[dict[str, Any], ParityReport]:
    """Build the engine from the FP16 ONNX (else fp32), gate it against ONNX fp32, keep it if it passes.

    Returns:
        ``(engine_info, report)``; ``engine_info["built"]`` is False when the gate failed (the
        engine was deleted; the caller raises with the report).

    Raises:
        BackendError: TensorRT cannot parse or build the network.
    """
    from coalmine.runtime.backends.tensorrt import build_gated, engine_source

    src = engine_source(bundle)
    say("building a TensorRT engine from %s (tile %d, batch 1..%d)", src.name, tile, max_batch)
    backend, report = build_gated(bundle, tile=tile, max_batch=max_batch, workspace_bytes=workspace_bytes,
                                  src=src, tiles=tiles, when="at export", progress=lambda msg: say("%s", msg))
    if backend is None:
        return {"built": False, "source": src.name}, report
    name = backend.engine_path.name
    backend.close()
    return {"built": True, "file": name, "source": src.name}, report
