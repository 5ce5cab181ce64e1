"""The TensorRT backend: find the gated engine for this machine, or build one and gate it first.

Three jobs, three modules: :mod:`.identity` (this GPU and TensorRT, engine keys and records),
:mod:`.build` (ONNX → serialized engine) and :mod:`.runner` (:class:`TensorRTBackend`). This
module holds the policy that joins them:

- an engine is used only if its record says it passed the parity gate and it was built for this
  GPU model, compute capability, TensorRT version and build, the bundle's current ONNX file and
  the run's tile; among those, the smallest that takes the run's batch, else the largest (the run
  then clamps its batch to the engine's ``max_batch``);
- with none, an engine is built for the run's tile and the bundle's recorded batch profile, and
  passes the same parity gate as at export (:mod:`..gate`, FP16 tolerances for an FP16 ONNX) on
  the bundle's validation tiles before it is used or recorded. One that fails is deleted and
  refused in one line, so ``--backend auto`` falls back to the next backend, saying why.

The ONNX file is ``model.fp16.onnx`` when coal-export wrote it (networks are strongly typed:
the engine's precision is the file's), else ``model.onnx``.

Example:
    >>> be = load(bundle, tile=256, max_batch=8)   # doctest: +SKIP
    >>> logits = be.infer(batch)                    # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..._io import sha256_file
from ...bundle import Bundle
from ...errors import BackendError, CoalmineError
from ..gate import (
    ENGINE_FP32_TOLERANCES,
    FP16_TOLERANCES,
    GateTiles,
    ParityReport,
    compare,
    gate_tiles,
)
from .build import build_engine, discard, publish
from .identity import Machine, cudart_module, select_engine, this_machine, trt_module
from .runner import TensorRTBackend

log = logging.getLogger("coalmine.runtime.backends")

#: Largest batch of an engine's profile unless the bundle records another.
DEFAULT_MAX_BATCH = 8

__all__ = ["TensorRTBackend", "availability", "load", "build_gated", "engine_source", "DEFAULT_MAX_BATCH"]


def engine_source(bundle: Bundle) -> Path:
    """The ONNX file engines are built from: ``model.fp16.onnx`` when exported, else ``model.onnx``."""
    return bundle.file("onnx_fp16") if bundle.has("onnx_fp16") else bundle.file("onnx")


def _clamp_note(rec: dict[str, Any], max_batch: int) -> str:
    n = int(rec["max_batch"])
    return f"max batch {n}" + (f": the run's batch {max_batch} is clamped to {n}" if n < max_batch else "")


def availability(bundle: Bundle, *, tile: int, max_batch: int) -> tuple[bool, str]:
    """Whether TensorRT can run this bundle here at ``tile`` and ``max_batch``, and why.

    Cheap: looks at the engine records, loads nothing onto the GPU.
    """
    try:
        trt_module()
        cudart_module()
    except ImportError as exc:
        return False, str(exc).split(";")[0]
    try:
        machine = this_machine()
        src = engine_source(bundle)
    except CoalmineError as exc:
        return False, str(exc)
    rec, _ = select_engine(bundle.engines_dir, onnx_sha256=sha256_file(src), machine=machine, tile=tile,
                           max_batch=max_batch)
    if rec is not None:
        return True, f"a gated engine fits {machine.describe()}"
    if not bundle.has("val_tiles"):
        return False, (f"no gated engine for {machine.describe()} at tile {tile}, and bundle {bundle.path} "
                       f"lacks {bundle.files['val_tiles']} to gate a new one; run coal-export on this machine")
    return True, (f"no gated engine for {machine.describe()} at tile {tile} yet, so one is built from "
                  f"{src.name} and gated first (once, a few minutes)")


def load(bundle: Bundle, *, tile: int, max_batch: int, gpu_mem_gb: float = 6.0) -> TensorRTBackend:
    """The gated engine for this machine, bundle and tile, built and gated now if there is none.

    Args:
        bundle: the bundle.
        tile: the run's tile size.
        max_batch: the run's largest batch (an engine with a smaller profile is used and the
            run clamps its batch; a new engine gets the bundle's recorded profile).
        gpu_mem_gb: GPU memory budget; sets the builder's workspace limit.

    Raises:
        BackendError: no usable engine and the new one failed to build or failed its gate.
        BundleError: the bundle lacks its ONNX file or validation tiles.
        MissingDependencyError: tensorrt or cuda-python is missing.
    """
    trt = trt_module()
    machine = this_machine(trt)
    src = engine_source(bundle)
    sha = sha256_file(src)
    rec, rejected = select_engine(bundle.engines_dir, onnx_sha256=sha, machine=machine, tile=tile,
                                  max_batch=max_batch)
    if rec is not None:
        gate = rec.get("gate", {})
        be = TensorRTBackend(bundle.engines_dir / rec["file"], origin=(
            f"engine {rec['file']}, gated {gate.get('when', 'when built')}, {_clamp_note(rec, max_batch)}"))
        be.precision = _precision(bundle, src)
        return be
    if rejected:
        log.info("no usable TensorRT engine in %s: %s", bundle.engines_dir, "; ".join(rejected))
    profile_batch = engine_batch(bundle)
    workspace = int(min(1.0, max(0.25, gpu_mem_gb / 6.0)) * (1 << 30))
    log.info("building a TensorRT engine for %s from %s (tile %d, batch 1..%d; once, cached in %s)",
             machine.describe(), src.name, tile, profile_batch, bundle.engines_dir)
    backend, report = build_gated(bundle, src=src, onnx_sha256=sha, machine=machine, tile=tile,
                                  max_batch=profile_batch, workspace_bytes=workspace, when="at run time")
    if backend is None:
        raise BackendError(
            f"the TensorRT engine built now from {src.name} for {machine.describe()} failed its parity "
            f"gate against {report.reference} on {report.tiles} validation tiles ({report.summary()}) and "
            "was deleted; use --backend cuda or --backend cpu"
        )
    backend.precision = _precision(bundle, src)
    backend.origin = (f"engine {backend.engine_path.name} built now and gated against {report.reference} "
                      f"(mask agreement {100 * report.mask_agreement:.2f} % on {report.tiles} validation tiles), "
                      f"{_clamp_note({'max_batch': backend.max_batch}, max_batch)}")
    return backend


def _precision(bundle: Bundle, src: Path) -> str:
    return "fp16" if src.name == bundle.files.get("onnx_fp16") else "fp32"


def engine_batch(bundle: Bundle) -> int:
    """The largest batch of the engine profile the bundle records (coal-export's ``--max-batch``)."""
    prof = getattr(bundle, "engine_profile", None) or {}
    return int(prof.get("max_batch", DEFAULT_MAX_BATCH))


def build_gated(
    bundle: Bundle,
    *,
    tile: int,
    max_batch: int,
    workspace_bytes: int,
    src: Path | None = None,
    onnx_sha256: str | None = None,
    machine: Machine | None = None,
    tiles: GateTiles | None = None,
    when: str = "at export",
    progress: Callable[[str], None] | None = None,
) -> tuple[TensorRTBackend | None, ParityReport]:
    """Build an engine, gate it against ONNX fp32 and publish it only if it passes.

    Args:
        bundle: the bundle (its ``model.onnx`` is the reference).
        tile, max_batch: the engine's profile.
        workspace_bytes: builder workspace limit.
        src, onnx_sha256, machine: the ONNX file to build from, its hash and this machine
            (found when None).
        tiles: normalised validation tiles (loaded from the bundle when None).
        when: recorded with the gate ("at export", "at run time").
        progress: called with a sentence before each long step.

    Returns:
        ``(backend, report)``: the open backend of the published engine, or None when the gate
        failed (the engine was deleted), and the gate's report.

    Raises:
        BackendError: the build failed; BundleError: no ONNX file or validation tiles.
    """
    from ..onnx import OnnxBackend

    src = src or engine_source(bundle)
    onnx_sha256 = onnx_sha256 or sha256_file(src)
    machine = machine or this_machine()
    tiles = (tiles or gate_tiles(bundle)).at_size(tile)
    say = progress or log.info
    built = build_engine(src, bundle.engines_dir, tile=tile, max_batch=max_batch, onnx_sha256=onnx_sha256,
                         workspace_bytes=workspace_bytes, machine=machine)
    backend: TensorRTBackend | None = None
    try:
        backend = TensorRTBackend(built.partial, origin="")
        say(f"gating the new engine against {bundle.files['onnx']} on {len(tiles.x)} validation tiles")
        tol = FP16_TOLERANCES if src.name == bundle.files.get("onnx_fp16") else ENGINE_FP32_TOLERANCES
        with OnnxBackend.for_bundle(bundle, "cpu", spinning=False) as ref:
            report = compare(ref, backend, tiles.x, labels=tiles.labels, valid=tiles.valid,
                             threshold=bundle.threshold, tol=tol, artefact=f"engines/{built.target.name}",
                             batch=max_batch)
    except BaseException:
        if backend is not None:
            backend.close()
        discard(built)
        raise
    if not report.passed:
        backend.close()
        discard(built)
        return None, report
    backend.engine_path = publish(built, _gate_record(report, when))
    return backend, report


def _gate_record(report: ParityReport, when: str) -> dict[str, Any]:
    return {"passed": True, "when": when, "reference": report.reference, "tiles": report.tiles,
            "mask_agreement": report.mask_agreement, "iou_drop_points": report.iou_drop_points,
            "max_abs_logit": report.max_abs_logit, "tolerances": report.tolerances}

