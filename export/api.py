"""``export_bundle``: bundle → ONNX fp32 (+ fp16, int8, TensorRT engine), each behind a parity gate.

Order of work, all inside the bundle folder:

1. ONNX fp32 from ``model.pt`` (eval mode, dynamic batch/height/width), compared with PyTorch
   on the validation tiles and on a batch at another shape (e.g. 160 × 96);
2. ``--fp16``: FP16 ONNX compared with ONNX fp32 on the validation tiles;
3. ``--int8``: QDQ INT8 ONNX compared with ONNX fp32;
4. every new file is written under a temporary name; only when *all* gates pass are they
   renamed into place and ``bundle.json``'s ``files`` updated (atomically), so a failed gate
   leaves the previous good artefacts untouched and nothing half-written behind;
   ``bundle.json`` also records the engine profile (tile, max batch) coal-run uses by default
   and builds with when it meets a new GPU;
5. ``engine`` (auto: when the TensorRT builder and a GPU are present): an engine built and gated
   by the runtime's :func:`~coalmine.runtime.backends.tensorrt.build_gated` from the FP16 ONNX
   (else fp32) against ONNX fp32 — the same gate coal-run applies to an engine it builds; an
   engine that fails is deleted;
6. recorded engines that no longer fit (ONNX re-exported, another GPU or TensorRT version) are
   reported;
7. the parity reports go to ``parity_report.json`` and are returned.

Each gate runs the runtime's own :class:`~coalmine.runtime.backends.Backend` classes, so it
tests what coal-run will run.

Example:
    >>> result = export_bundle("models/tapin", fp16=True)   # doctest: +SKIP
    >>> print(result["table"])                              # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coalmine.runtime._io import atomic_write_json, sha256_file, temp_path
from coalmine.runtime.backends.onnx import OnnxBackend
from coalmine.runtime.backends.tensorrt import DEFAULT_MAX_BATCH
from coalmine.runtime.bundle import Bundle, load_bundle
from coalmine.runtime.errors import BackendError, BundleError, UsageError
from coalmine.runtime.options import RunOptions
from coalmine.runtime.tiling import check_tile

from . import engine as _engine
from .fp16 import convert_fp16
from .int8 import quantize_int8
from .onnx_export import SOURCE_KEY, export_onnx, other_shape_batch, read_metadata
from .parity import (
    FP16_TOLERANCES,
    FP32_TOLERANCES,
    INT8_TOLERANCES,
    MAX_GATE_TILES,
    GateTiles,
    ParityReport,
    Tolerances,
    TorchRunner,
    compare,
    format_table,
    gate_tiles,
)

log = logging.getLogger("coalmine.export")

#: File (inside the bundle) holding the parity reports of the last export.
REPORT_FILE = "parity_report.json"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)


def parse_size(text: str | int, option: str = "--workspace") -> int:
    """Parse a byte size like ``1GiB``, ``512MiB``, ``1.5G`` or ``1073741824``.

    Binary units (KiB, MiB, GiB, TiB and the short K, M, G, T) are powers of 1024; decimal
    ``KB``/``MB``/``GB`` are powers of 1000.

    Raises:
        UsageError: not a size, or not between 16 MiB and 64 GiB.

    Example:
        >>> parse_size("1GiB"), parse_size("512M"), parse_size("2GB")
        (1073741824, 536870912, 2000000000)
    """
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE_RE.match(str(text))
        if not m:
            raise UsageError(
                f"{option} {text!r} is not a size; give a number with an optional unit, e.g. 1GiB or 512MiB"
            )
        num, unit, suffix = m.groups()
        power = " KMGT".index(unit.upper()) if unit else 0
        decimal = suffix.upper() == "B" and unit != ""
        value = int(float(num) * ((1000 if decimal else 1024) ** power))
    if not (16 << 20) <= value <= (64 << 30):
        raise UsageError(
            f"{option} {text!r} is {value} bytes; it must lie between 16MiB and 64GiB "
            "(about 1GiB suits a 6 GB card)"
        )
    return value




_CONSEQUENCE = {
    "onnx": "nothing was written and the bundle keeps its previous files",
    "onnx_fp16": "nothing from this export was written and the bundle keeps its previous files "
    "(without --fp16 the other files can be exported)",
    "onnx_int8": "nothing from this export was written and the bundle keeps its previous files "
    "(without --int8 the other files can be exported)",
    "engine": "the engine was deleted (the ONNX files passed and were written); "
    "coal-run can use ONNX Runtime instead",
}


def _gate(reports: dict[str, ParityReport], key: str, rep: ParityReport) -> None:
    """Record a report; on failure show its table on stderr and raise ParityError."""
    reports[key] = rep
    if not rep.passed:
        log.warning("%s", format_table([rep]))
        rep.raise_if_failed(_CONSEQUENCE[key])


def _staging(bundle: Bundle, key: str, stack: ExitStack) -> Path:
    """A temporary file beside the bundle's file for ``key``, removed unless renamed."""
    target = bundle.path / bundle.files[key]
    path = temp_path(target, "--bundle")
    stack.callback(lambda: path.unlink(missing_ok=True))
    return path


@dataclass
class _Plan:
    """What one export will do, decided before any work starts."""

    bundle: Bundle
    tile: int
    max_batch: int
    workspace_bytes: int
    build_engine: bool
    engine_why: str
    names: dict[str, str] = field(default_factory=dict)


def export_bundle(
    bundle_dir: str | os.PathLike[str],
    *,
    fp16: bool = False,
    int8: bool = False,
    engine: bool | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    tile: int | None = None,
    workspace: str | int = "1GiB",
    progress: bool = True,
    max_tiles: int = MAX_GATE_TILES,
) -> dict[str, Any]:
    """Export a trained bundle to ONNX (fp32, optionally fp16 and int8) and a TensorRT engine.

    Args:
        bundle_dir: the bundle folder written by coal-train (``bundle.json``, ``model.pt``,
            ``val_tiles.npz``).
        fp16: also write ``model.fp16.onnx`` (gate: mask agreement ≥ 99.5 % and mine-class IoU
            drop ≤ 1 point against ONNX fp32).
        int8: also write ``model.int8.onnx`` for CPUs (gate: mask agreement ≥ 99 %).
        engine: True = build a TensorRT engine (error if impossible), False = never,
            None = when the TensorRT builder and a GPU are present (says on stderr if not).
        max_batch: largest batch of the engine's optimisation profile.
        tile: the engine's tile size (multiple of 32; default coal-run's default tile for
            this bundle, so coal-run finds the engine).
        workspace: TensorRT builder workspace limit (e.g. "1GiB" for a 6 GB card).
        progress: log each step on stderr.
        max_tiles: validation tiles used by the gates at most.

    Returns:
        ``{"reports": {key: report dict}, "files": {key: file name}, "engine": {...},
        "stale_engines": [...], "report_path": str, "table": str}``.

    Raises:
        BundleError: missing/invalid bundle, model.pt or validation tiles.
        ParityError: a converted model does not match its reference (nothing is replaced).
        UsageError: bad tile, batch or workspace.
        BackendError: ``engine=True`` but no TensorRT builder or GPU; engine build failure.
    """
    plan = _plan(bundle_dir, fp16=fp16, int8=int8, engine=engine, max_batch=max_batch, tile=tile,
                 workspace=workspace)
    say = log.info if progress else log.debug
    from coalmine.train.model import load_model

    tiles = gate_tiles(plan.bundle, max_tiles)
    reports: dict[str, ParityReport] = {}
    extras = _export_onnx_files(plan, load_model(plan.bundle), tiles, reports, say)
    bundle = _record_files(plan)
    engine_info: dict[str, Any] = {"built": False, "reason": plan.engine_why}
    if plan.build_engine:
        engine_info, rep = _engine.build_engine_step(
            bundle, tiles, tile=plan.tile, max_batch=plan.max_batch, workspace_bytes=plan.workspace_bytes, say=say)
        engine_info["reason"] = plan.engine_why
        _gate(reports, "engine", rep)
    stale = _report_stale(bundle)
    result = {
        "bundle_id": bundle.bundle_id,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": dict(plan.names),
        "reports": {k: r.to_dict() for k, r in reports.items()},
        "settings": {**extras, "tile": plan.tile, "max_batch": plan.max_batch,
                     "workspace_bytes": plan.workspace_bytes, "gate_tiles": int(len(tiles.x))},
        "engine": engine_info,
        "stale_engines": stale,
    }
    report_path = bundle.path / REPORT_FILE
    atomic_write_json(report_path, result)
    result["report_path"] = str(report_path)
    result["table"] = format_table(list(reports.values()))
    return result


def _plan(bundle_dir: str | os.PathLike[str], *, fp16: bool, int8: bool, engine: bool | None, max_batch: int,
          tile: int | None, workspace: str | int) -> _Plan:
    """Check the bundle and the options, decide whether an engine is built and which files are written."""
    p = Path(bundle_dir)
    if not p.is_dir():
        raise BundleError(f"bundle folder {p} does not exist; give coal-export the folder coal-train wrote")
    bundle = load_bundle(p)
    if tile is None:  # coal-run's default tile for this bundle, so the run finds the engine
        tile = RunOptions().resolve(bundle.tile_size, bundle.overlap, bundle.threshold, bundle.model.size_multiple,
                                    engine_tile=bundle.engine_profile.get("tile")).tile
    tile = check_tile(int(tile), multiple=bundle.model.size_multiple)
    if max_batch < 1 or max_batch > 1024:
        raise UsageError(f"--max-batch {max_batch} must be between 1 and 1024")
    workspace_bytes = parse_size(workspace)
    bundle.file("pytorch")  # raises a BundleError naming model.pt when it is missing
    if engine is None:
        build, why = _engine.tensorrt_status()
        if not build:
            log.warning("TensorRT engine skipped: %s", why)
    elif engine:
        build, why = _engine.tensorrt_status()
        if not build:
            raise BackendError(f"--engine was requested but cannot be built here: {why}; use --no-engine")
    else:
        build, why = False, "--no-engine given"
    plan = _Plan(bundle, tile, max_batch, workspace_bytes, build, why)
    plan.names = _files_to_write(bundle, fp16=fp16, int8=int8)
    return plan


def _files_to_write(bundle: Bundle, *, fp16: bool, int8: bool) -> dict[str, str]:
    """The files this export writes: ONNX fp32, the requested ones, and any made from older weights.

    An FP16/INT8 file made from older weights would outlive this export and be picked up by
    coal-run (and by the engine build): it is refreshed in the same transaction.
    """
    names = {"onnx": bundle.files["onnx"]}
    if fp16:
        names["onnx_fp16"] = bundle.files["onnx_fp16"]
    if int8:
        names["onnx_int8"] = bundle.files["onnx_int8"]
    model_sha = sha256_file(bundle.file("pytorch"))
    for key in ("onnx_fp16", "onnx_int8"):
        if key not in names and bundle.has(key):
            try:
                source = read_metadata(bundle.file(key)).get(SOURCE_KEY)
            except Exception:  # noqa: BLE001 - an unreadable file is as stale as an old one
                source = None
            if source != model_sha:
                log.warning("%s was made from other weights than %s; re-creating it too",
                            bundle.files[key], bundle.files["pytorch"])
                names[key] = bundle.files[key]
    return names


def _onnx_backend(bundle: Bundle, path: Path, label: str) -> OnnxBackend:
    """The runtime's CPU backend on a staged file (no spinning threads: the machine may be shared)."""
    return OnnxBackend(path, input_name=bundle.model.input_name, output_name=bundle.model.output_name,
                       bands=len(bundle.bands), device="cpu", label=label, spinning=False)


def _export_onnx_files(plan: _Plan, model: Any, tiles: GateTiles, reports: dict[str, ParityReport],
                       say: Any) -> dict[str, Any]:
    """Write, gate and move into place every ONNX file of the plan, all or nothing.

    Every new file is written under a temporary name; only when *all* gates pass are they renamed
    into place, so a failed gate leaves the previous good files untouched.
    """
    bundle, names = plan.bundle, plan.names
    m = bundle.model.size_multiple
    x_other = other_shape_batch(tiles.x, m)
    v_other = other_shape_batch(tiles.valid[:, None], m)[:, 0]
    thr = bundle.threshold
    extras: dict[str, Any] = {}
    with ExitStack() as stack:
        staged = {key: _staging(bundle, key, stack) for key in names}
        say("exporting %s (ONNX fp32) from %s", names["onnx"], bundle.files["pytorch"])
        export_onnx(model, bundle, staged["onnx"])
        say("parity %s vs PyTorch on %d validation tiles + %s", names["onnx"], len(tiles.x),
            "x".join(map(str, x_other.shape)))
        with TorchRunner(model) as ref, _onnx_backend(bundle, staged["onnx"], names["onnx"]) as cand:
            rep = compare(ref, cand, [tiles.x, x_other], labels=[tiles.labels, None], valid=[tiles.valid, v_other],
                          threshold=thr, tol=FP32_TOLERANCES, artefact=names["onnx"])
        _gate(reports, "onnx", rep)
        with _onnx_backend(bundle, staged["onnx"], names["onnx"]) as ref32:
            if "onnx_fp16" in names:
                say("converting to FP16 (%s)", names["onnx_fp16"])
                extras["onnx_fp16"] = {"fp32_nodes": convert_fp16(staged["onnx"], staged["onnx_fp16"], calib=tiles.x[:8])}
                _gate_file(reports, "onnx_fp16", bundle, ref32, staged, tiles, FP16_TOLERANCES)
            if "onnx_int8" in names:
                say("quantising to INT8 QDQ (%s), calibrating on %d tiles", names["onnx_int8"], len(tiles.x))
                extras["onnx_int8"] = quantize_int8(staged["onnx"], staged["onnx_int8"], calib=tiles.x)
                _gate_file(reports, "onnx_int8", bundle, ref32, staged, tiles, INT8_TOLERANCES)
        for key, tmp in staged.items():  # every gate passed
            os.replace(tmp, bundle.path / names[key])
    return extras


def _gate_file(reports: dict[str, ParityReport], key: str, bundle: Bundle, ref32: OnnxBackend,
               staged: dict[str, Path], tiles: GateTiles, tol: Tolerances) -> None:
    name = bundle.files[key]
    with _onnx_backend(bundle, staged[key], name) as cand:
        rep = compare(ref32, cand, tiles.x, labels=tiles.labels, valid=tiles.valid, threshold=bundle.threshold,
                      tol=tol, artefact=name)
    _gate(reports, key, rep)


def _record_files(plan: _Plan) -> Bundle:
    """Record the new files and the engine profile in ``bundle.json`` (atomically)."""
    fresh = load_bundle(plan.bundle.path)
    fresh.files.update(plan.names)
    fresh.files["parity_report"] = REPORT_FILE
    fresh.engine_profile = {"tile": plan.tile, "max_batch": plan.max_batch}
    fresh.save()
    return fresh


def _report_stale(bundle: Bundle) -> list[dict[str, Any]]:
    stale = _engine.stale_engines(bundle)
    for s in stale:
        log.warning(
            "engine %s in %s is stale: %s; coal-run will not use it (run coal-export --engine on the "
            "GPU workstation to rebuild)", s["file"], bundle.engines_dir, "; ".join(s["reasons"]),
        )
    return stale
