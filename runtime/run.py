"""``run_scene``: a scene in, mine probability/mask COGs, polygons and hectares out.

The scene is streamed in blocks (``block`` px, default 1024) read with a halo of
``overlap`` pixels; inside a block, overlapping tiles are normalised once (with
:meth:`Normalization.apply`, the one place), batched through the backend and their
logits blended with a raised-cosine weight window (:mod:`coalmine.runtime.tiling`). Then
``sigmoid -> uint8 probability -> mask``; a pixel whose input has any NaN band is nodata.

Three stages overlap: a reader thread prefetches the next block while the main thread
runs the model, and a writer thread writes the previous block. At most one block is
being read, one computed and one written, so memory is bounded by the block size
(about ``3 x 23 x (block + 2 halo)^2 x 4`` bytes plus the backend), never by the scene.

All outputs are written under temporary names and renamed together at the end; a failure
(or Ctrl-C) removes them, leaving nothing half-written.

Example:
    >>> s = run_scene("scene.tif", "models/tapin", "out", aoi="tapin.geojson")  # doctest: +SKIP
    >>> s["areas_ha"]["total"], s["backend"]["name"]                             # doctest: +SKIP
    (812.4, 'onnxruntime-cpu')
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from .aoi import Aoi, read_aois
from .areas import mask_areas_ha, pixel_areas_ha
from .backends import Backend, make_backend
from .bands import band_positions
from .bundle import Bundle, Preprocessing, load_bundle
from .errors import BandError, InputError, UsageError
from .outputs import OutputSet, mask_from_prob, mask_level, quantize_prob
from .tiling import Block, block_grid, check_tile, predict_block, tiles_in, weight_window

log = logging.getLogger("coalmine.runtime.run")

#: Default block core size (pixels). 23 float32 bands of a 1088^2 read window = 109 MB.
DEFAULT_BLOCK = 1024
#: Smallest default inference tile: 256 px keeps the overlap overhead at (256/224)^2 = 1.3x
#: instead of (128/96)^2 = 1.8x for a 128 px training tile; the network is fully convolutional.
MIN_DEFAULT_TILE = 256
#: Estimated GPU memory per tile pixel for U-Net-ResNet34 inference in fp32: the encoder
#: skips (64 ch at 1/2, 64 at 1/4, 128 at 1/8, 256 at 1/16, 512 at 1/32 = 23.5 floats/px),
#: the largest decoder working tensors (~2 x 48 floats/px), the 23-band input, with ~1.25x
#: allocator slack: ~600 bytes per pixel.
GPU_BYTES_PER_PIXEL = 600
#: GPU memory kept aside for weights, CUDA context, cuDNN/TensorRT workspace.
GPU_RESERVED_BYTES = 1 << 30
#: CPU batch: ONNX Runtime CPU throughput is flat beyond a few tiles; small batches keep RSS low.
CPU_BATCH = 4
MAX_BATCH = 64
#: GDAL block cache for a run, in MB (GDAL's default is 5 % of RAM).
GDAL_CACHE_MB = 256


def aligned_block(block: int, tile: int, overlap: int) -> int:
    """The block core size nearest to ``block`` whose read window is tiled without waste.

    A read window of ``core + 2 * overlap`` pixels is covered exactly by tiles when it equals
    ``tile + k * (tile - overlap)``; otherwise the last tile is pulled back and overlaps its
    neighbour by more than needed. E.g. block 1024, tile 256, overlap 32 -> core 1088 (read 1152,
    5 tiles) instead of core 1024 (read 1088, also 5 tiles).

    Example:
        >>> aligned_block(1024, 256, 32), aligned_block(2048, 512, 32)
        (1088, 1888)
    """
    stride = tile - overlap
    k = max(0, (block + 2 * overlap - tile) // stride)
    lo = tile + k * stride - 2 * overlap
    hi = lo + stride
    core = hi if (hi - block) < (block - lo) else lo  # the nearer one (memory moves by < 1 stride)
    return max(core, 32)


def auto_batch_size(tile: int, *, on_gpu: bool, gpu_mem_gb: float, tiles_per_block: int) -> tuple[int, str]:
    """Batch size for ``--batch-size auto`` and the reason, as a sentence.

    On a GPU the batch fills the memory budget ``gpu_mem_gb`` minus 1 GiB reserved, at an
    estimated 600 bytes per tile pixel (U-Net-ResNet34, fp32); on the CPU it is 4.
    Both are capped by the number of tiles in a block.

    Example:
        >>> auto_batch_size(256, on_gpu=True, gpu_mem_gb=6.0, tiles_per_block=25)
        (25, 'GPU budget 6.0 GiB - 1 GiB reserved at ~39 MB per 256 px tile fits 136 tiles (capped at 64), limited to the 25 tiles of a block')
    """
    if on_gpu:
        per_tile = tile * tile * GPU_BYTES_PER_PIXEL
        fit = int((gpu_mem_gb * (1 << 30) - GPU_RESERVED_BYTES) // per_tile)
        n = max(1, min(MAX_BATCH, fit))
        why = (f"GPU budget {gpu_mem_gb:.1f} GiB - 1 GiB reserved at ~{per_tile / 1e6:.0f} MB per "
               f"{tile} px tile fits {fit} tiles (capped at {MAX_BATCH})")
    else:
        # 4 tiles of 256 px (0.26 Mpx) per call; fewer for larger tiles to keep RSS low.
        n = max(1, int(CPU_BATCH * (256 / tile) ** 2))
        why = f"CPU backend: {n} tile(s) of {tile} px per call (~0.26 Mpx)"
    if tiles_per_block < n:
        n = max(1, tiles_per_block)
        why += f", limited to the {tiles_per_block} tiles of a block"
    return n, why


@dataclass
class _Timer:
    """Thread-safe accumulated seconds per stage."""

    seconds: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, stage: str, dt: float) -> None:
        with self.lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + dt

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.add(stage, time.perf_counter() - t)

        return timed


def _open_scene(scene: Any, s1: Any, prep: Preprocessing) -> Any:
    """Open ``scene`` with the shared preprocessing (engineer B's ``open_scene``)."""
    from .preprocess import open_scene

    return open_scene(scene, s1, prep)


def _check_preprocessing(source: Any, bundle: Bundle) -> list[str]:
    """Refuse a stack prepared with other GLCM/speckle parameters than the bundle's."""
    used = getattr(source, "preprocessing", None)
    where = getattr(source, "path", "the scene")
    if used is None:
        msg = (f"{where} records no preprocessing parameters (no COALMINE_PREPROCESSING tag); "
               "cannot check its GLCM edges against the bundle")
        log.warning(msg)
        return [msg]
    want, got = bundle.preprocessing, used
    diffs = []
    for key in ("window", "distance", "levels"):
        if getattr(want.glcm, key) != getattr(got.glcm, key):
            diffs.append(f"GLCM {key} {getattr(got.glcm, key)} (bundle: {getattr(want.glcm, key)})")
    if len(want.glcm.edges) != len(got.glcm.edges) or not np.allclose(
        want.glcm.edges, got.glcm.edges, rtol=0, atol=1e-5
    ):
        diffs.append(f"GLCM bin edges {_short(got.glcm.edges)} (bundle: {_short(want.glcm.edges)})")
    if (want.s1.speckle_filter, want.s1.speckle_window) != (got.s1.speckle_filter, got.s1.speckle_window):
        diffs.append(f"speckle filter {got.s1.speckle_filter}/{got.s1.speckle_window} "
                     f"(bundle: {want.s1.speckle_filter}/{want.s1.speckle_window})")
    if diffs:
        raise InputError(
            f"{where} was prepared with {'; '.join(diffs)}, which differ from bundle {bundle.path}; "
            f"re-run coal-prepare with --bundle {bundle.path} so the stack matches the model"
        )
    return []


def _short(edges: Any) -> str:
    e = list(edges)
    if len(e) <= 4:
        return "[" + ", ".join(f"{x:g}" for x in e) + "]"
    return f"[{e[0]:g}, {e[1]:g}, ..., {e[-1]:g}] ({len(e)} edges)"


def _band_index(source: Any, bundle: Bundle) -> list[int] | None:
    """Indices of the bundle's bands in the source, or None when they are the same list."""
    have = tuple(source.bands)
    try:
        return band_positions(have, bundle.bands)
    except KeyError as exc:
        raise BandError(
            f"{getattr(source, 'path', 'the scene')} lacks band(s) {', '.join(exc.args[0])} that bundle "
            f"{bundle.path} needs (scene bands: {', '.join(have)}); prepare the stack with coal-prepare"
        ) from None


def _validate_options(tile: int, overlap: int, threshold: float, batch_size: int | str, gpu_mem_gb: float,
                      min_area_ha: float, block: int, multiple: int) -> None:
    check_tile(tile, overlap, multiple)
    if not 0.0 < threshold < 1.0:
        raise UsageError(f"--threshold {threshold} must lie strictly between 0 and 1 (e.g. 0.5)")
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise UsageError(f"--batch-size {batch_size!r} must be a positive integer or 'auto'")
    if not gpu_mem_gb > 0:
        raise UsageError(f"--gpu-mem {gpu_mem_gb} must be a positive number of GiB (e.g. 6)")
    if min_area_ha < 0:
        raise UsageError(f"--min-area {min_area_ha} must be >= 0 hectares")
    if block < 64:
        raise UsageError(f"--block {block} is too small; use at least 64 (default {DEFAULT_BLOCK})")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.clip(x, -60.0, 60.0)
    np.negative(out, out=out)
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)
    return out


def run_scene(
    scene: str | os.PathLike[str] | Any,
    bundle: str | os.PathLike[str] | Bundle,
    out_dir: str | os.PathLike[str],
    *,
    s1: str | os.PathLike[str] | None = None,
    aoi: str | os.PathLike[str] | list[Aoi] | None = None,
    aoi_name_field: str | None = None,
    backend: str = "auto",
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | str = "auto",
    gpu_mem_gb: float = 6.0,
    threshold: float | None = None,
    min_area_ha: float = 0.0,
    prefix: str | None = None,
    progress: bool = True,
    block: int = DEFAULT_BLOCK,
    threads: int | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Map mines in one scene and measure them.

    Args:
        scene: a 23-band stack from coal-prepare, raw Sentinel-2 input (with ``s1``), or an
            already opened ``SceneSource`` (anything with ``crs, transform, width, height,
            bands, read(window)``).
        bundle: bundle folder or loaded :class:`Bundle`.
        out_dir: output folder (created).
        s1: Sentinel-1 VV sigma0 file when ``scene`` is raw Sentinel-2.
        aoi: GeoJSON/GeoPackage of areas of interest (or a list of :class:`Aoi`).
        aoi_name_field: AOI property holding the name.
        backend: "auto", "tensorrt", "cuda" or "cpu".
        tile: inference tile (multiple of 32; default max(bundle tile, 256)).
        overlap: tile overlap in pixels (default: the bundle's).
        batch_size: tiles per backend call, or "auto".
        gpu_mem_gb: GPU memory budget in GiB.
        threshold: decision threshold (default: the bundle's).
        min_area_ha: minimum mapping unit for the polygons (hectares).
        prefix: output file prefix (default: the scene's file stem).
        progress: show a progress bar on stderr.
        block: block core size in pixels.
        threads: CPU threads for ONNX Runtime (default: all cores).
        precision: which ONNX model ONNX Runtime runs: "auto" (the bundle's INT8 model on
            the CPU / FP16 model on CUDA when present, else FP32), "fp32", "fp16" or "int8".

    Returns:
        The summary dict (also written as ``<prefix>_summary.json``): ``outputs``,
        ``areas_ha`` {total, aois}, ``pixels``, ``nodata_share``, ``backend`` {name, reason,
        ...}, ``timings`` (seconds per stage), ``bundle`` {id, version}, ``tiling``, ...

    Raises:
        UsageError: bad option values (exit 2).
        InputError and subclasses: unreadable scene, wrong bands, mismatched preprocessing,
            bad AOI file, bad bundle (exit 1).
        OutputError: the output folder cannot be written.
        BackendError: the requested backend cannot run.
    """
    # GDAL's block cache defaults to 5 % of RAM; cap it so the scene reader, the staging
    # rasters and the COG step stay within the block-bounded memory budget.
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        return _run_scene(scene, bundle, out_dir, s1=s1, aoi=aoi, aoi_name_field=aoi_name_field,
                          backend=backend, tile=tile, overlap=overlap, batch_size=batch_size,
                          gpu_mem_gb=gpu_mem_gb, threshold=threshold, min_area_ha=min_area_ha,
                          prefix=prefix, progress=progress, block=block, threads=threads,
                          precision=precision)


def _run_scene(scene: Any, bundle: Any, out_dir: Any, *, s1: Any, aoi: Any, aoi_name_field: str | None,
               backend: str, tile: int | None, overlap: int | None, batch_size: int | str, gpu_mem_gb: float,
               threshold: float | None, min_area_ha: float, prefix: str | None, progress: bool, block: int,
               threads: int | None, precision: str) -> dict[str, Any]:
    t_start = time.perf_counter()
    timer = _Timer()
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    tile_was_default = tile is None
    tile = int(tile) if tile is not None else max(bundle.tile_size, MIN_DEFAULT_TILE)
    overlap = int(overlap) if overlap is not None else bundle.overlap
    threshold = float(threshold) if threshold is not None else bundle.threshold
    _validate_options(tile, overlap, threshold, batch_size, gpu_mem_gb, min_area_ha, block,
                      bundle.model.size_multiple)
    if bundle.model.classes != 1:
        raise InputError(f"bundle {bundle.path} has {bundle.model.classes} output classes; coal-run needs 1 (mine logit)")
    warnings: list[str] = []

    aois: list[Aoi] = []
    if aoi is not None:
        aois = list(aoi) if isinstance(aoi, list) else read_aois(aoi, name_field=aoi_name_field)

    t = time.perf_counter()
    owns_source = isinstance(scene, (str, os.PathLike))
    source = _open_scene(scene, s1, bundle.preprocessing) if owns_source else scene
    timer.add("open", time.perf_counter() - t)
    try:
        warnings += _check_preprocessing(source, bundle)
        band_idx = _band_index(source, bundle)
        scene_path = getattr(source, "path", None) or (scene if owns_source else None)
        if prefix is None:
            prefix = Path(str(scene_path)).stem if scene_path else "scene"
        H, W = int(source.height), int(source.width)
        block = aligned_block(block, tile, overlap)
        blocks = list(block_grid(H, W, block=block, halo=overlap, tile=tile))
        tiles_per = [len(tiles_in(max(int(b.read.height), tile), max(int(b.read.width), tile), tile, overlap))
                     for b in blocks]
        n_tiles = sum(tiles_per)

        gpu_batch, _ = auto_batch_size(tile, on_gpu=True, gpu_mem_gb=gpu_mem_gb, tiles_per_block=max(tiles_per))
        max_batch = gpu_batch if batch_size == "auto" else int(batch_size)
        t = time.perf_counter()
        be, reason = make_backend(bundle, backend, tile=tile, max_batch=max_batch, gpu_mem_gb=gpu_mem_gb,
                                  threads=threads, precision=precision)
        timer.add("backend_load", time.perf_counter() - t)
        with be:
            log.info("backend: %s — %s", be.name, reason)
            if be.fixed_tile is not None and be.fixed_tile != tile:
                raise UsageError(f"the {be.name} engine runs tile {be.fixed_tile}, not --tile {tile}")
            if batch_size == "auto":
                batch, batch_why = auto_batch_size(tile, on_gpu=be.on_gpu, gpu_mem_gb=gpu_mem_gb,
                                                   tiles_per_block=max(tiles_per))
            else:
                batch, batch_why = int(batch_size), "set with --batch-size"
            if be.max_batch is not None:
                batch = min(batch, be.max_batch)
            tags = {"COALMINE_BUNDLE": bundle.bundle_id, "COALMINE_THRESHOLD": f"{threshold:g}",
                    "COALMINE_PROB_SCALE": "250"}
            with OutputSet(out_dir, prefix, source.crs, source.transform, W, H, tags=tags) as outs:
                stats = _stream(source, blocks, n_tiles, be, bundle, outs, timer, tile=tile, overlap=overlap,
                                batch=batch, threshold=threshold, band_idx=band_idx, progress=progress)
                t = time.perf_counter()
                outs.finish_rasters()
                timer.add("cog", time.perf_counter() - t)
                t = time.perf_counter()
                areas = mask_areas_ha(outs.tmp["mask"], aois)
                timer.add("areas", time.perf_counter() - t)
                warnings += areas["warnings"]
                t = time.perf_counter()
                mines = outs.write_mines(min_area_ha=min_area_ha)
                timer.add("polygons", time.perf_counter() - t)
                px_area = pixel_areas_ha(source.crs, source.transform, H, W)
                total_px = H * W
                summary: dict[str, Any] = {
                    "scene": str(scene_path) if scene_path else None,
                    "s1": str(s1) if s1 else None,
                    "bundle": {"id": bundle.bundle_id, "version": bundle.format_version,
                               "created": bundle.created, "path": str(bundle.path),
                               "code_version": bundle.training.get("code_version")},
                    "outputs": {k: str(v) for k, v in outs.final.items()},
                    "areas_ha": {"total": areas["total"], "aois": areas["aois"]},
                    "aoi_pixels": areas["aoi_pixels"],
                    "pixels": {"total": total_px, **areas["pixels"]},
                    "nodata_share": areas["pixels"]["nodata"] / total_px if total_px else 0.0,
                    "pixel_area_ha": {"min": float(px_area.min()), "max": float(px_area.max()),
                                      "grid": "geographic (geodesic per row)" if source.crs.is_geographic
                                      else "projected (constant)"},
                    "polygons": {**mines, "min_area_ha": min_area_ha},
                    "threshold": threshold,
                    "mask_rule": f"mask = prob_u8 >= {mask_level(threshold)} (prob_u8 = round(p * 250))",
                    "backend": {"name": be.name, "reason": reason, "details": be.describe(),
                                "batch_size": batch, "batch_size_reason": batch_why},
                    "tiling": {"tile": tile, "tile_default": tile_was_default, "overlap": overlap,
                               "block": block, "blocks": len(blocks), "tiles": n_tiles},
                    "grid": {"crs": source.crs.to_string(), "transform": list(source.transform)[:6],
                             "width": W, "height": H},
                    "timings": {},
                    "warnings": warnings,
                }
                summary["timings"] = {k: round(v, 3) for k, v in timer.seconds.items()}
                summary["timings"].update({k: round(v, 3) for k, v in stats.items()})
                summary["timings"]["wall"] = round(time.perf_counter() - t_start, 3)
                outs.write_summary(summary)
                outs.commit()
    finally:
        if owns_source and hasattr(source, "close"):
            source.close()
    log.info("mined area: %.2f ha (%d pixels); outputs in %s", summary["areas_ha"]["total"],
             summary["pixels"]["mine"], out_dir)
    return json.loads(json.dumps(summary))


def _stream(source: Any, blocks: list[Block], n_tiles: int, be: Backend, bundle: Bundle, outs: OutputSet,
            timer: _Timer, *, tile: int, overlap: int, batch: int, threshold: float,
            band_idx: list[int] | None, progress: bool) -> dict[str, float]:
    """Read, infer and write every block with a reader and a writer thread beside the model."""
    from tqdm import tqdm

    window = weight_window(tile, overlap)
    infer = timer.wrap("infer", be.infer)

    def read(b: Block) -> np.ndarray:
        t = time.perf_counter()
        x = source.read(b.read)
        if band_idx is not None:
            x = x[band_idx]
        timer.add("read", time.perf_counter() - t)
        return x

    def write(b: Block, q: np.ndarray, m: np.ndarray) -> None:
        t = time.perf_counter()
        outs.write(b.core, q, m)
        timer.add("write", time.perf_counter() - t)

    waits = {"wait_read": 0.0, "wait_write": 0.0}
    bar = tqdm(total=n_tiles, unit="tile", desc="coal-run", disable=not progress, leave=False,
               dynamic_ncols=True)
    reader = ThreadPoolExecutor(1, thread_name_prefix="coal-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="coal-write")
    pending_write: Future[None] | None = None
    try:
        next_read: Future[np.ndarray] | None = reader.submit(read, blocks[0]) if blocks else None
        for i, b in enumerate(blocks):
            t = time.perf_counter()
            assert next_read is not None
            x = next_read.result()
            waits["wait_read"] += time.perf_counter() - t
            next_read = reader.submit(read, blocks[i + 1]) if i + 1 < len(blocks) else None

            t = time.perf_counter()
            if x.shape[0] != len(bundle.bands) or x.dtype != np.float32:
                raise BandError(f"the scene reader returned {x.shape[0]} bands of {x.dtype}; "
                                f"expected {len(bundle.bands)} float32 bands")
            rs, cs = b.core_in_read
            valid = np.isfinite(x[:, rs, cs]).all(axis=0)
            xn = bundle.normalization.apply(x, out=x)  # in place: the raw block is not needed again
            timer.add("normalise", time.perf_counter() - t)

            t = time.perf_counter()
            t_inf = timer.seconds.get("infer", 0.0)
            logits = predict_block(xn, infer, tile=tile, overlap=overlap, batch_size=batch, window=window,
                                   on_batch=bar.update)
            core = logits[rs, cs]
            prob = _sigmoid(core)
            q = quantize_prob(prob, valid)
            m = mask_from_prob(q, threshold)
            timer.add("blend", (time.perf_counter() - t) - (timer.seconds.get("infer", 0.0) - t_inf))
            del x, xn, logits, core, prob

            t = time.perf_counter()
            if pending_write is not None:
                pending_write.result()  # at most one block waits to be written
            waits["wait_write"] += time.perf_counter() - t
            pending_write = writer.submit(write, b, q, m)
        if pending_write is not None:
            t = time.perf_counter()
            pending_write.result()
            waits["wait_write"] += time.perf_counter() - t
    finally:
        bar.close()
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
    return waits


def tiles_total(height: int, width: int, *, tile: int, overlap: int, block: int = DEFAULT_BLOCK) -> int:
    """Number of tiles a run over a ``height x width`` scene computes (for estimates)."""
    return sum(len(tiles_in(max(int(b.read.height), tile), max(int(b.read.width), tile), tile, overlap))
               for b in block_grid(height, width, block=block, halo=overlap, tile=tile))


__all__ = ["run_scene", "auto_batch_size", "tiles_total", "DEFAULT_BLOCK"]
