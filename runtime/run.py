"""``run_scene``: a scene in, mine probability/mask COGs, polygons and hectares out.

The scene is streamed in blocks of about ``block`` px (default 1024, rounded to whole tile
strides). Inference tiles lie on one grid fixed to the scene (:func:`~.tiling.scene_tiling`):
a block computes the tiles whose origin lies in its core, reading the core plus ``overlap``
pixels below and to the right; the block's 23 bands are normalised once (with
:meth:`Normalization.apply`, the one place), its tiles batched through the backend, and every
tile covering the core — its own and those kept from earlier blocks — blended with a
raised-cosine weight window (:class:`~.tiling.TileBlender`). Then ``sigmoid -> uint8
probability -> mask``; a pixel whose input has any NaN band is nodata. Every tile is computed
once and every pixel is blended from the same tiles in the same order for any ``block``, so
the block size changes memory and speed, never the map.

Three stages overlap: a reader thread prefetches the next block while the main thread
runs the model, and a writer thread writes the previous block. At most one block is
being read, one computed and one written, so memory is bounded by the block size
(about ``3 x 23 x (block + overlap)^2 x 4`` bytes plus the backend) and the kept tile
logits (one row of tiles across the scene), never by the scene's area.

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
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from .aoi import Aoi, read_aois
from .areas import mask_areas_ha, pixel_areas_ha
from .backends import Backend, finite_logits, make_backend
from .bands import S1_BAND, band_positions
from .bundle import Bundle, load_bundle
from .errors import BandError, InputError, NoValidDataError, UsageError
from .options import RunOptions
from .outputs import OutputSet, mask_from_prob, mask_level, quantize_prob
from .preprocess.stack import check_preprocessing, open_scene
from .tiling import TileBlender, TiledBlock, block_core, scene_tiling, tiles_of, weight_window
from .timing import StageTimer

log = logging.getLogger("coalmine.runtime.run")

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


def _band_index(source: Any, bundle: Bundle) -> list[int] | None:
    """Indices of the bundle's bands in the source, or None when they are the same list."""
    have = tuple(source.bands)
    try:
        return band_positions(have, bundle.bands)
    except KeyError as exc:
        if have == (S1_BAND,):  # a calibrated Sentinel-1 raster given where the scene goes
            raise BandError(
                f"{getattr(source, 'path', 'the scene')} is a Sentinel-1 raster (one band {S1_BAND}), not a "
                "scene; give the Sentinel-2 scene as SCENE and this file with --s1") from None
        raise BandError(
            f"{getattr(source, 'path', 'the scene')} lacks band(s) {', '.join(exc.args[0])} that bundle "
            f"{bundle.path} needs (scene bands: {', '.join(have)}); prepare the stack with coal-prepare"
        ) from None


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
    options: RunOptions | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Map mines in one scene and measure them.

    Args:
        scene: a stack from coal-prepare, raw Sentinel-2 input (with ``s1``), or an already
            opened ``SceneSource`` (anything with ``crs, transform, width, height, bands,
            read(window)``).
        bundle: bundle folder or loaded :class:`Bundle`.
        out_dir: output folder (created).
        s1: Sentinel-1 VV sigma0 file when ``scene`` is raw Sentinel-2.
        aoi: GeoJSON/GeoPackage of areas of interest (or a list of :class:`Aoi`).
        options: the run's settings (:class:`~coalmine.runtime.options.RunOptions`; default:
            its defaults).
        **settings: settings that override ``options``, by field name: ``backend``,
            ``precision``, ``tile``, ``overlap``, ``batch_size``, ``gpu_mem_gb``,
            ``threshold``, ``min_area_ha``, ``block``, ``threads``, ``prefix``,
            ``aoi_name_field``, ``progress``, and the input settings ``s2_offset``,
            ``s1_units``, ``scl``. Defaults and rules are RunOptions'.

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
    opts = RunOptions.build(options, **settings)
    # GDAL's block cache defaults to 5 % of RAM; cap it so the scene reader, the staging
    # rasters and the COG step stay within the block-bounded memory budget.
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        return _run_scene(scene, bundle, out_dir, s1, aoi, opts)


@dataclass(frozen=True)
class _Plan:
    """How a scene is cut: blocks on the scene's tile grid and the tiles each one computes."""

    block: int
    blocks: list[TiledBlock]
    tiles_per_block: list[int]

    @property
    def n_tiles(self) -> int:
        return sum(self.tiles_per_block)


def _plan(height: int, width: int, opts: RunOptions) -> _Plan:
    tile, overlap = int(opts.tile or 0), int(opts.overlap or 0)
    blocks = scene_tiling(height, width, tile=tile, overlap=overlap, block=opts.block)
    assert tiles_of(blocks) == sum(len(b.tiles) for b in blocks)
    return _Plan(block_core(opts.block, tile, overlap), blocks, [len(b.tiles) for b in blocks])


def _run_scene(scene: Any, bundle: Any, out_dir: Any, s1: Any, aoi: Any, opts: RunOptions) -> dict[str, Any]:
    t_start = time.perf_counter()
    timer = StageTimer()
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    asked = opts
    opts = opts.resolve(bundle.tile_size, bundle.overlap, bundle.threshold, bundle.model.size_multiple,
                        engine_tile=bundle.engine_profile.get("tile"))
    if bundle.model.classes != 1:
        raise InputError(f"bundle {bundle.path} has {bundle.model.classes} output classes; coal-run needs 1 (mine logit)")
    aois = _read_aois(aoi, opts)
    owns_source = isinstance(scene, (str, os.PathLike))
    with timer.stage("open"):
        source = (open_scene(scene, s1, bundle.preprocessing, **opts.inputs.reader_args()) if owns_source
                  else scene)
    try:
        band_idx = _band_index(source, bundle)  # first: a file that is no scene is told so, alone
        warnings = check_preprocessing(source, bundle)
        _check_aois(aois, source, aoi)
        # the path given names the outputs (a folder of acquisitions: the folder, not its first one)
        scene_path = scene if owns_source else getattr(source, "path", None)
        prefix = opts.prefix or (Path(str(scene_path)).stem if scene_path else "scene")
        plan = _plan(int(source.height), int(source.width), opts)
        with timer.stage("backend_load"):
            be, reason = _load_backend(bundle, opts, plan)
        with be:
            log.info("backend: %s — %s", be.name, reason)
            batch, batch_why = _batch_size(be, opts, plan)
            tags = {"COALMINE_BUNDLE": bundle.bundle_id, "COALMINE_THRESHOLD": f"{opts.threshold:g}",
                    "COALMINE_PROB_SCALE": "250"}
            with OutputSet(out_dir, prefix, source.crs, source.transform, source.width, source.height,
                           tags=tags) as outs:
                band_stats = BandStats(len(bundle.bands))
                waits = _stream(source, plan, be, bundle, outs, timer, opts=opts, batch=batch, band_idx=band_idx,
                                band_stats=band_stats)
                if band_stats.valid == 0:
                    raise NoValidDataError(
                        f"{scene_path or 'the scene'} has no valid pixel: every pixel has a NaN band (an "
                        "all-NaN stack, Sentinel-2 DN all 0 = nodata, or everything masked as cloud); "
                        "nothing to map, so no hectares and no output were written — check the input "
                        "files and their nodata"
                    )
                warnings += implausible_bands(band_stats, bundle)
                with timer.stage("cog"):
                    outs.finish_rasters()
                with timer.stage("areas"):
                    areas = mask_areas_ha(outs.tmp["mask"], aois, scene=scene_path or "the scene")
                with timer.stage("polygons"):
                    mines = outs.write_mines(min_area_ha=opts.min_area_ha)
                summary = _summary(
                    source, scene_path, s1, bundle, outs, areas, mines, opts, plan,
                    tile_default=asked.tile is None,
                    backend={"name": be.name, "reason": reason, "details": be.describe(),
                             "batch_size": batch, "batch_size_reason": batch_why},
                    warnings=warnings + areas["warnings"])
                support = _observation_support(scene_path, outs.tmp["mask"])
                if support is not None:  # a composite: how many clear views the mapped area rests on
                    summary["observations"] = support
                summary["timings"] = {k: round(v, 3) for k, v in {**timer.seconds, **waits}.items()}
                summary["timings"]["wall"] = round(time.perf_counter() - t_start, 3)
                outs.write_summary(summary)
                outs.commit()
    finally:
        if owns_source and hasattr(source, "close"):
            source.close()
    log.info("mined area: %.2f ha (%d pixels); outputs in %s", summary["areas_ha"]["total"],
             summary["pixels"]["mine"], out_dir)
    return json.loads(json.dumps(summary))


def _observation_support(scene_path: Any, mask: Any) -> dict[str, Any] | None:
    """The composite's clear-observation support of the mapped area (None for other scenes)."""
    if not scene_path or not Path(str(scene_path)).is_file():
        return None
    from .preprocess.prepare_composite import observation_support

    support = observation_support(scene_path, mask)
    if support is not None and "warning" in support:
        log.warning(support["warning"])
    elif support is not None and support["share_below"] is not None:
        log.info("%.1f %% of the mapped area rests on fewer than %d clear observations",
                 100 * support["share_below"], support["few_observations"])
    return support


def _read_aois(aoi: Any, opts: RunOptions) -> list[Aoi]:
    if aoi is None:
        return []
    return list(aoi) if isinstance(aoi, list) else read_aois(aoi, name_field=opts.aoi_name_field)


def _check_aois(aois: list[Aoi], source: Any, aoi: Any) -> None:
    """Before any inference, put every AOI on the scene's grid.

    Raises:
        InputError: an AOI whose coordinates cannot be transformed to the scene's CRS, or one
            that misses the scene but would overlap it with x and y swapped (latitude written
            before longitude, northing before easting) — a mistake that would otherwise cost a
            whole run and end as "no data".
    """
    import shapely
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    where = f" of {aoi}" if isinstance(aoi, (str, os.PathLike)) else ""
    scene = shapely.box(*array_bounds(source.height, source.width, source.transform))

    def placed(geom: dict[str, Any], crs: Any) -> Any:
        try:
            g = shape(transform_geom(crs, source.crs, geom)) if crs != source.crs else shape(geom)
        except Exception:  # noqa: BLE001 - PROJ refuses through GDAL's CPLE_* errors, not RasterioError
            return None
        return g if np.isfinite(shapely.get_coordinates(g)).all() else None

    for a in aois:
        g = placed(a.geometry, a.crs)
        if g is None:
            raise InputError(
                f"AOI '{a.name}'{where} cannot be placed on the scene's grid ({source.crs.to_string()}): its "
                f"coordinates lie outside what {a.crs.to_string()} can map there; are x and y swapped? Write "
                "them as (longitude, latitude) or (easting, northing), or give the file its true CRS")
        if g.intersects(scene):
            continue
        swapped = placed(mapping(shapely.transform(shape(a.geometry), lambda xy: xy[:, ::-1])), a.crs)
        if swapped is not None and swapped.intersects(scene):
            raise InputError(
                f"AOI '{a.name}'{where} misses the scene, but would cover it with x and y swapped: its "
                "coordinates are written (y, x), latitude before longitude or northing before easting; "
                f"write them as (x, y) in {a.crs.to_string()}")


def _load_backend(bundle: Bundle, opts: RunOptions, plan: _Plan) -> tuple[Backend, str]:
    """The backend and why it was chosen; a GPU engine is sized for the batch ``auto`` would take."""
    tile = int(opts.tile or 0)
    gpu_batch, _ = auto_batch_size(tile, on_gpu=True, gpu_mem_gb=opts.gpu_mem_gb,
                                   tiles_per_block=max(plan.tiles_per_block))
    max_batch = gpu_batch if opts.batch_size == "auto" else int(opts.batch_size)
    be, reason = make_backend(bundle, opts.backend, tile=tile, max_batch=max_batch, gpu_mem_gb=opts.gpu_mem_gb,
                              threads=opts.threads, precision=opts.precision)
    if be.fixed_tile is not None and be.fixed_tile != tile:
        be.close()
        raise UsageError(f"the {be.name} engine runs tile {be.fixed_tile}, not --tile {tile}")
    return be, reason


def _batch_size(be: Backend, opts: RunOptions, plan: _Plan) -> tuple[int, str]:
    """Tiles per backend call, and why."""
    if opts.batch_size == "auto":
        batch, why = auto_batch_size(int(opts.tile or 0), on_gpu=be.on_gpu, gpu_mem_gb=opts.gpu_mem_gb,
                                     tiles_per_block=max(plan.tiles_per_block))
    else:
        batch, why = int(opts.batch_size), "set with --batch-size"
    if be.max_batch is not None and batch > be.max_batch:
        batch, why = be.max_batch, f"{why}; clamped to the {be.name} engine's max batch {be.max_batch}"
    return batch, why


def _summary(source: Any, scene_path: Any, s1: Any, bundle: Bundle, outs: OutputSet, areas: dict[str, Any],
             mines: dict[str, Any], opts: RunOptions, plan: _Plan, *, tile_default: bool,
             backend: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """The run summary (``<prefix>_summary.json``) without its timings."""
    H, W = int(source.height), int(source.width)
    px_area = pixel_areas_ha(source.crs, source.transform, H, W)
    total_px = H * W
    return {
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
        "valid_share": areas["valid_share"],
        "aoi_valid_share": areas["aoi_valid_share"],
        "pixel_area_ha": {"min": float(px_area.min()), "max": float(px_area.max()),
                          "grid": "geographic (geodesic per row)" if source.crs.is_geographic
                          else "projected (constant)"},
        "polygons": {**mines, "min_area_ha": opts.min_area_ha},
        "threshold": opts.threshold,
        "mask_rule": f"mask = prob_u8 >= {mask_level(float(opts.threshold or 0))} (prob_u8 = round(p * 250))",
        "backend": backend,
        "tiling": {"tile": opts.tile, "tile_default": tile_default, "overlap": opts.overlap,
                   "block": plan.block, "blocks": len(plan.blocks), "tiles": plan.n_tiles},
        "grid": {"crs": source.crs.to_string(), "transform": list(source.transform)[:6],
                 "width": W, "height": H},
        # what was done to the raw inputs (for a GRD product: noise removal, border method,
        # calibration, geocoding, DEM and its hash, orbit, IPF), from the stack's tag or the raw
        # source, and how its VV was made
        "inputs": getattr(source, "inputs", None),
        "s1_made": ({k: getattr(source.preprocessing.s1, k) for k in ("source", "radiometry", "terrain")}
                    if getattr(source, "preprocessing", None) is not None else None),
        "timings": {},
        "warnings": warnings,
    }


def _stream(source: Any, plan: _Plan, be: Backend, bundle: Bundle, outs: OutputSet, timer: StageTimer, *,
            opts: RunOptions, batch: int, band_idx: list[int] | None,
            band_stats: BandStats | None = None) -> dict[str, float]:
    """Read, infer and write every block with a reader and a writer thread beside the model;
    ``band_stats`` gathers the valid pixels' statistics on the way."""
    from tqdm import tqdm

    blocks, tile, overlap = plan.blocks, int(opts.tile or 0), int(opts.overlap or 0)
    threshold, n_tiles, progress = float(opts.threshold or 0), plan.n_tiles, opts.progress

    blender = TileBlender(tile, overlap, weight_window(tile, overlap))
    infer = timer.wrap("infer", finite_logits(be))  # a NaN logit stops the run, never maps as "no mine"

    def read(b: TiledBlock) -> np.ndarray:
        with timer.stage("read"):
            x = source.read(b.read)
            return x if band_idx is None else x[band_idx]

    def write(b: TiledBlock, q: np.ndarray, m: np.ndarray) -> None:
        with timer.stage("write"):
            outs.write(b.core, q, m)

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
            if band_stats is not None:
                band_stats.add(x[:, rs, cs], valid)
            xn = bundle.normalization.apply(x, out=x)  # in place: the raw block is not needed again
            timer.lap("normalise", t)

            t = time.perf_counter()
            t_inf = timer.get("infer")
            core = blender.block_logits(b, xn, infer, batch_size=batch, on_batch=bar.update)
            prob = _sigmoid(core)
            q = quantize_prob(prob, valid)
            m = mask_from_prob(q, threshold)
            timer.add("blend", (time.perf_counter() - t) - (timer.get("infer") - t_inf))
            del x, xn, core, prob

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


class BandStats:
    """Count, mean and spread of each input band over the valid pixels, for a plausibility check.

    Every valid pixel is counted; the moments are taken on every ``step``-th row and column
    of each block (a sample is plenty to tell a plausible band from a broken one, and keeps
    the cost far below the model's).
    """

    def __init__(self, n_bands: int, step: int = 4) -> None:
        self.valid = 0
        self.step = step
        self.n = 0
        self.sum = np.zeros(n_bands, dtype=np.float64)
        self.sumsq = np.zeros(n_bands, dtype=np.float64)

    def add(self, x: np.ndarray, valid: np.ndarray) -> None:
        self.valid += int(valid.sum())
        s = self.step
        sub = x[:, ::s, ::s][:, valid[::s, ::s]].astype(np.float64)
        self.n += sub.shape[1]
        self.sum += sub.sum(axis=1)
        self.sumsq += np.square(sub).sum(axis=1)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        n = max(self.n, 1)
        mean = self.sum / n
        return mean, np.sqrt(np.maximum(self.sumsq / n - mean * mean, 0.0))


#: A band whose scene mean lies this many training standard deviations from the training
#: mean, or whose spread is below ``MIN_STD_RATIO`` of the training spread, is implausible.
MAX_MEAN_Z = 6.0
MIN_STD_RATIO = 0.01


def implausible_bands(stats: BandStats, bundle: Bundle) -> list[str]:
    """Warnings naming the bands whose statistics cannot come from the data the model was
    trained on: constant over the scene (an all-zero stack, a band filled with one value) or
    with a mean far outside the training distribution (other units or scaling). The map is
    still written; the warnings go to stderr and the summary.
    """
    if stats.n == 0:
        return []
    mean, std = stats.mean_std()
    t_mean = np.asarray(bundle.normalization.mean, dtype=np.float64)
    t_std = np.asarray(bundle.normalization.std, dtype=np.float64)
    z = np.abs(mean - t_mean) / t_std
    flat = [b for b, s, ts in zip(bundle.bands, std, t_std, strict=True) if s < MIN_STD_RATIO * ts]
    far = [f"{b} (mean {m:.4g}, training {tm:.4g} ± {ts:.3g})"
           for b, m, tm, ts, zz in zip(bundle.bands, mean, t_mean, t_std, z, strict=True)
           if zz > MAX_MEAN_Z and b not in flat]
    out = []
    if flat:
        out.append(f"implausible input: band(s) {', '.join(flat)} are constant over the scene's valid pixels "
                   "(e.g. an all-zero stack); the map cannot be trusted — check the input files")
    if far:
        out.append(f"implausible input: band(s) {', '.join(far)} lie more than {MAX_MEAN_Z:g} training standard "
                   "deviations from the bundle's normalisation; check the units and scaling (reflectance "
                   "0-1, VV in dB) and the Sentinel-2 DN offset")
    for w in out:
        log.warning(w)
    return out


__all__ = ["run_scene", "auto_batch_size"]
