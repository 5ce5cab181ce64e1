"""``export_bundle``: bundle → ONNX fp32 (+ fp16, int8, TensorRT engine), each behind a parity gate.

Order of work, all inside the bundle folder:

1. ONNX fp32 from ``model.pt`` (eval mode, dynamic batch/height/width), compared with PyTorch
   on the validation tiles and on a batch at another shape (e.g. 160 × 96);
2. ``--fp16``: FP16 ONNX compared with ONNX fp32 on the validation tiles;
3. ``--int8``: QDQ INT8 ONNX compared with ONNX fp32;
4. every new file is written under a temporary name; only when *all* gates pass are they
   renamed into place and ``bundle.json``'s ``files`` updated (atomically), so a failed gate
   leaves the previous good artefacts untouched and nothing half-written behind;
5. ``engine`` (auto: when the TensorRT builder and a GPU are present): an engine built by
   the runtime's ``build_engine`` from the FP16 ONNX (else fp32), compared with ONNX fp32;
   an engine that fails its gate is deleted;
6. engines in ``engines/manifest.json`` that no longer fit (ONNX re-exported, another GPU or
   TensorRT version) are reported;
7. the parity reports go to ``parity_report.json`` and are returned.

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
from pathlib import Path
from typing import Any

import numpy as np
from coalmine.runtime._io import atomic_write_json, sha256_file, temp_path
from coalmine.runtime.bundle import Bundle, load_bundle
from coalmine.runtime.errors import BackendError, BundleError, UsageError
from coalmine.runtime.tiling import check_tile

from . import engine as _engine
from .fp16 import convert_fp16
from .int8 import quantize_int8
from .onnx_export import SOURCE_KEY, export_onnx, other_shape_batch, read_metadata
from .parity import (
    FP16_TOLERANCES,
    FP32_TOLERANCES,
    INT8_TOLERANCES,
    OnnxRunner,
    ParityReport,
    Tolerances,
    TorchRunner,
    compare,
    format_table,
)

log = logging.getLogger("coalmine.export")

#: File (inside the bundle) holding the parity reports of the last export.
REPORT_FILE = "parity_report.json"
#: Validation tiles used by the gates at most (bounds export time on big validation sets).
MAX_GATE_TILES = 64
#: An FP32 engine may use TF32 tactics; NVIDIA's own ONNX→TensorRT check uses 1e-2.
ENGINE_FP32_TOLERANCES = Tolerances(max_abs_logit=1e-2, rtol=1e-2, min_mask_agreement=0.999)

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


def load_val_tiles(bundle: Bundle, max_tiles: int = MAX_GATE_TILES) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's raw validation tiles and labels, cropped to a multiple of the size divisor.

    Returns:
        ``x`` float32 (N, C, H, W) raw (NaN nodata), ``y`` uint8 (N, H, W).

    Raises:
        BundleError: the file is missing, unreadable, or its arrays have the wrong shape.
    """
    p = bundle.file("val_tiles", must_exist=False)
    if not p.is_file():
        raise BundleError(
            f"bundle {bundle.path} lacks {p.name} (validation tiles for the parity gates and INT8 "
            "calibration); re-create the bundle with coal-train, which writes it"
        )
    try:
        with np.load(p) as z:
            x = np.asarray(z["x"][:max_tiles], dtype=np.float32)
            y = np.asarray(z["y"][:max_tiles])
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(
            f"{p} cannot be read as validation tiles with arrays 'x' and 'y' ({exc}); "
            "re-create the bundle with coal-train"
        ) from exc
    nb = len(bundle.bands)
    if x.ndim != 4 or x.shape[1] != nb or len(x) == 0:
        raise BundleError(f"{p}: 'x' has shape {x.shape}, expected (N, {nb}, H, W) with N ≥ 1")
    if y.shape != (x.shape[0],) + x.shape[2:]:
        raise BundleError(f"{p}: 'y' has shape {y.shape}, expected {(x.shape[0],) + x.shape[2:]}")
    if not np.isfinite(x).all(axis=1).any():
        raise BundleError(
            f"{p}: the validation tiles contain no valid pixel (every pixel has a NaN band), so "
            "no parity check is possible; re-create the bundle with coal-train"
        )
    m = bundle.model.size_multiple
    h, w = (x.shape[2] // m) * m, (x.shape[3] // m) * m
    if h == 0 or w == 0:
        raise BundleError(f"{p}: tiles of {x.shape[2]}x{x.shape[3]} are smaller than {m} pixels")
    return np.ascontiguousarray(x[:, :, :h, :w]), np.ascontiguousarray(y[:, :h, :w].astype(np.uint8))


def fit_tiles(x: np.ndarray, size: int, *rest: np.ndarray) -> list[np.ndarray]:
    """Crop or mirror-pad (N, …, H, W) arrays to ``size`` × ``size`` (for a fixed-shape engine)."""
    out = []
    for a in (x, *rest):
        a = a[..., :size, :size]
        ph, pw = size - a.shape[-2], size - a.shape[-1]
        if ph or pw:
            pad = [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)]
            a = np.pad(a, pad, mode="symmetric")
        out.append(np.ascontiguousarray(a))
    return out


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


def export_bundle(
    bundle_dir: str | os.PathLike[str],
    *,
    fp16: bool = False,
    int8: bool = False,
    engine: bool | None = None,
    max_batch: int = 8,
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
        tile: the engine's tile size (multiple of 32; default the bundle's tile size).
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
    p = Path(bundle_dir)
    if not p.is_dir():
        raise BundleError(f"bundle folder {p} does not exist; give coal-export the folder coal-train wrote")
    bundle = load_bundle(p)
    tile = check_tile(int(tile if tile is not None else bundle.tile_size), multiple=bundle.model.size_multiple)
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
    say = log.info if progress else log.debug

    from coalmine.train.model import load_model

    raw, labels = load_val_tiles(bundle, max_tiles)
    x = bundle.normalization.apply(raw)
    valid = np.isfinite(raw).all(axis=1)
    del raw
    x_other = other_shape_batch(x, bundle.model.size_multiple)
    v_other = other_shape_batch(valid[:, None], bundle.model.size_multiple)[:, 0]
    model = load_model(bundle)
    thr = bundle.threshold
    reports: dict[str, ParityReport] = {}
    extras: dict[str, Any] = {}
    names = {"onnx": bundle.files["onnx"]}
    if fp16:
        names["onnx_fp16"] = bundle.files["onnx_fp16"]
    if int8:
        names["onnx_int8"] = bundle.files["onnx_int8"]
    # An FP16/INT8 file made from older weights would outlive this export and be picked up by
    # coal-run (and by the engine build): refresh it in the same transaction.
    model_sha = sha256_file(bundle.file("pytorch"))
    for key in ("onnx_fp16", "onnx_int8"):
        if key not in names and bundle.has(key):
            try:
                source = read_metadata(bundle.file(key)).get(SOURCE_KEY)
            except Exception:  # noqa: BLE001 - an unreadable file is as stale as an old one
                source = None
            if source != model_sha:
                log.warning(
                    "%s was made from other weights than %s; re-creating it too",
                    bundle.files[key], bundle.files["pytorch"],
                )
                names[key] = bundle.files[key]
    fp16, int8 = "onnx_fp16" in names, "onnx_int8" in names

    with ExitStack() as stack:
        staged = {key: _staging(bundle, key, stack) for key in names}
        say("exporting %s (ONNX fp32) from %s", names["onnx"], bundle.files["pytorch"])
        export_onnx(model, bundle, staged["onnx"])
        say(
            "parity %s vs PyTorch on %d validation tiles + %s",
            names["onnx"], len(x), "x".join(map(str, x_other.shape)),
        )
        with TorchRunner(model) as ref, OnnxRunner(staged["onnx"], name=names["onnx"]) as cand:
            rep = compare(
                ref, cand, [x, x_other], labels=[labels, None], valid=[valid, v_other],
                threshold=thr, tol=FP32_TOLERANCES, artefact=names["onnx"],
            )
        _gate(reports, "onnx", rep)
        del model
        with OnnxRunner(staged["onnx"], name=names["onnx"]) as ref32:
            if fp16:
                say("converting to FP16 (%s)", names["onnx_fp16"])
                kept = convert_fp16(staged["onnx"], staged["onnx_fp16"], calib=x[:8])
                extras["onnx_fp16"] = {"fp32_nodes": kept}
                with OnnxRunner(staged["onnx_fp16"], name=names["onnx_fp16"]) as cand:
                    rep = compare(
                        ref32, cand, x, labels=labels, valid=valid, threshold=thr,
                        tol=FP16_TOLERANCES, artefact=names["onnx_fp16"],
                    )
                _gate(reports, "onnx_fp16", rep)
            if int8:
                say("quantising to INT8 QDQ (%s), calibrating on %d tiles", names["onnx_int8"], len(x))
                extras["onnx_int8"] = quantize_int8(staged["onnx"], staged["onnx_int8"], calib=x)
                with OnnxRunner(staged["onnx_int8"], name=names["onnx_int8"]) as cand:
                    rep = compare(
                        ref32, cand, x, labels=labels, valid=valid, threshold=thr,
                        tol=INT8_TOLERANCES, artefact=names["onnx_int8"],
                    )
                _gate(reports, "onnx_int8", rep)
        # Every gate passed: move all new files into place, then record them in bundle.json.
        for key, tmp in staged.items():
            os.replace(tmp, bundle.path / names[key])
    fresh = load_bundle(bundle.path)
    fresh.files.update(names)
    fresh.files["parity_report"] = REPORT_FILE
    fresh.save()
    bundle = fresh

    engine_info: dict[str, Any] = {"built": False, "reason": why}
    if build:
        engine_info = _build_engine_step(
            bundle, x, labels, valid, tile=tile, max_batch=max_batch,
            workspace_bytes=workspace_bytes, reports=reports, say=say,
        )
        engine_info["reason"] = why
    stale = _engine.stale_engines(bundle)
    for s in stale:
        log.warning(
            "engine %s in %s is stale: %s; coal-run will not use it (run coal-export --engine on the "
            "GPU workstation to rebuild)", s["file"], bundle.engines_dir, "; ".join(s["reasons"]),
        )
    result = {
        "bundle_id": bundle.bundle_id,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": dict(names),
        "reports": {k: r.to_dict() for k, r in reports.items()},
        "settings": {**{k: v for k, v in extras.items()}, "tile": tile, "max_batch": max_batch,
                     "workspace_bytes": workspace_bytes, "gate_tiles": int(len(x))},
        "engine": engine_info,
        "stale_engines": stale,
    }
    report_path = bundle.path / REPORT_FILE
    atomic_write_json(report_path, result)
    result["report_path"] = str(report_path)
    result["table"] = format_table(list(reports.values()))
    return result


def _build_engine_step(
    bundle: Bundle,
    x: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray,
    *,
    tile: int,
    max_batch: int,
    workspace_bytes: int,
    reports: dict[str, ParityReport],
    say: Any,
) -> dict[str, Any]:
    """Build the engine from the FP16 ONNX (else fp32) and gate it against ONNX fp32."""
    fp16 = bundle.has("onnx_fp16")
    src = bundle.file("onnx_fp16") if fp16 else bundle.file("onnx")
    say("building a TensorRT engine from %s (tile %d, batch 1..%d)", src.name, tile, max_batch)
    path, backend = _engine.build_checked_engine(
        bundle, src, tile=tile, max_batch=max_batch, workspace_bytes=workspace_bytes
    )
    xt, lt, vt = fit_tiles(x, tile, labels, valid)
    from .parity import BackendRunner

    try:
        with BackendRunner(backend, name=path.name) as cand, OnnxRunner(bundle.file("onnx")) as ref:
            rep = compare(
                ref, cand, xt, labels=lt, valid=vt, threshold=bundle.threshold,
                tol=FP16_TOLERANCES if fp16 else ENGINE_FP32_TOLERANCES,
                artefact=f"engines/{path.name}", batch=max_batch,
            )
    except BaseException:
        _engine.discard_engine(bundle, path)
        raise
    if not rep.passed:
        _engine.discard_engine(bundle, path)
    _gate(reports, "engine", rep)
    return {"built": True, "file": path.name, "source": src.name}
