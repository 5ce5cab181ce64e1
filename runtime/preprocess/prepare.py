"""``prepare_scene``: raw Sentinel-2 + Sentinel-1 -> the 23-band stack GeoTIFF, streamed by blocks.

The scene is processed block by block (each block read with the halo its speckle filter and GLCM
need), so peak memory depends on the block size, not on the scene. While one block is written
the next is computed in a worker thread (the GLCM kernel and GDAL release the GIL). Output is a
tiled (512 x 512) float32 GeoTIFF, ZSTD/DEFLATE-compressed with the floating-point predictor,
NaN nodata, band descriptions = the 23 band names, and the preprocessing as JSON in the
``COALMINE_PREPROCESSING`` tag; optionally a Cloud-Optimised GeoTIFF (rio-cogeo). It is written
under a temporary name and renamed when complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from .._io import WorkFolder, atomic_output, ensure_output_dir, write_failure
from ..bands import BAND_NAMES, N_BANDS
from ..bundle import Preprocessing
from ..errors import CoalmineError, InputError, UsageError
from ..raster import gdal_writes_checked, to_cog
from ..tiling import block_grid
from .stack import INPUTS_TAG, PREPROCESSING_TAG, RawSource

log = logging.getLogger("coalmine.preprocess")

#: GDAL block cache while preparing: bounded so RSS does not grow with the scene (the default
#: is 5 % of RAM).
GDAL_CACHE_BYTES = 128 * 1024 * 1024
TILE = 512


@functools.lru_cache(maxsize=1)
def _compression() -> str:
    """ZSTD where this GDAL build has it (faster than DEFLATE at a similar ratio), else DEFLATE."""
    try:
        with warnings.catch_warnings(), rasterio.MemoryFile() as mem:
            warnings.simplefilter("ignore")
            with mem.open(driver="GTiff", width=16, height=16, count=1, dtype="float32",
                          compress="zstd") as ds:
                ds.write(np.zeros((1, 16, 16), np.float32))
        return "zstd"
    except Exception:  # noqa: BLE001 - any failure means: no ZSTD codec
        return "deflate"


def stack_profile(src: Any, compress: str | None = None) -> dict[str, Any]:
    """GeoTIFF creation profile of a stack on ``src``'s grid."""
    return {
        "driver": "GTiff",
        "width": src.width,
        "height": src.height,
        "count": N_BANDS,
        "dtype": "float32",
        "crs": src.crs,
        "transform": src.transform,
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": compress or _compression(),
        # level 1: several times faster than the default 9 for a few % larger files
        "zstd_level": 1,
        "zlevel": 1,
        "predictor": 3,
        "interleave": "band",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }


def prepare_scene(
    s2: str | os.PathLike[str],
    s1: str | os.PathLike[str],
    out: str | os.PathLike[str],
    prep: Preprocessing | None = None,
    *,
    s2_offset: float | None = None,
    s1_units: str | None = None,
    scl: str | os.PathLike[str] | None = None,
    dem: str | os.PathLike[str] | None = None,
    orbit: str | os.PathLike[str] | None = None,
    block: int = 1024,
    cog: bool = False,
    progress: bool = True,
    timings: dict[str, Any] | None = None,
) -> Path:
    """Build the 23-band stack of a scene and write it to ``out``.

    Args:
        s2: Sentinel-2 L2A input (multi-band GeoTIFF with band descriptions, folder of band
            files, or SAFE folder).
        s1: Sentinel-1 VV: a GRD product as downloaded (SAFE folder, zip, COG-SAFE) or a
            sigma0 raster (linear or dB; geotransform or GCPs).
        out: output GeoTIFF path.
        prep: preprocessing parameters (default ``Preprocessing()``; GLCM edges come from it).
        s2_offset: explicit S2 DN offset (e.g. -1000), overriding the product metadata.
        s1_units: "auto", "linear" or "db".
        scl: SCL raster path, or "auto" (the SCL in the S2 folder), to mask clouds/shadows.
        dem: DEM for terrain correction of a GRD product (None: geolocation-grid heights).
        orbit: orbit file, or folder of them, for a GRD product.
        block: block size in pixels (memory grows with its square, not with the scene).
        cog: write a Cloud-Optimised GeoTIFF (with overviews).
        progress: show a progress bar on stderr.
        timings: if a dict is given, it is filled with seconds per stage and counts.

    Returns:
        The output path.

    Raises:
        UsageError: a bad option (block size, units, speckle window ...).
        InputNotFoundError, RasterError, CRSError, BandError, UnitsError: unusable inputs.
        InputError: the scene has no valid pixel.
        OutputError: the output folder cannot be written.

    Example:
        >>> prepare_scene("S2_folder", "vv.tif", "scene.tif", block=1024)   # doctest: +SKIP
        PosixPath('scene.tif')
    """
    t_start = time.perf_counter()
    if not isinstance(block, int) or block < 32:
        raise UsageError(f"--block {block} is too small; use at least 32 (default 1024)")
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"-o {out} is a folder; give the output file name, e.g. {out}/scene.tif")
    ensure_output_dir(out.parent, "-o")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        src = RawSource(s2, s1, prep, s2_offset=s2_offset, s1_units=s1_units, scl=scl, dem=dem,
                        orbit=orbit)
        try:
            windows = [b.core for b in block_grid(src.height, src.width, block=block, halo=0)]
            log.info(
                "preparing %dx%d px scene in %d blocks of %d px; S2 offset %g (%s); S1 units %s",
                src.width, src.height, len(windows), block, src.s2.offset.value,
                src.s2.offset.source, src.s1.units,
            )
            # every temporary file in the run's hidden work folder beside the output, which the
            # next run removes if this one is killed
            with WorkFolder(out.parent, "-o", what="prepare") as work, \
                    atomic_output(out, "-o", work=work) as tmp:
                target = work.path / f"tiles{out.suffix or '.tif'}" if cog else tmp
                with gdal_writes_checked(out.parent, str(out), "-o"):
                    valid = _write_blocks(src, target, windows, progress)
                if valid == 0:
                    raise InputError(_no_valid_message(src))
                if cog:
                    t = time.perf_counter()
                    to_cog(target, tmp, nodata=float("nan"), predictor=3, blocksize=TILE,
                           bigtiff="IF_SAFER", forward_band_tags=True, name=out,
                           config={"GDAL_NUM_THREADS": "ALL_CPUS", "GDAL_CACHEMAX": GDAL_CACHE_BYTES})
                    src.timers.lap("cog", t)
        except CoalmineError:  # already one line naming the file
            raise
        except OSError as exc:
            raise write_failure(out.parent, exc, str(out), "-o") from exc
        finally:
            src.close()
    total = time.perf_counter() - t_start
    n_px = src.width * src.height
    log.info("wrote %s: %d x %d px, %.1f %% valid, %.1f s", out, src.width, src.height,
             100.0 * valid / n_px, total)
    if timings is not None:
        timings.update(src.timers.as_dict())
        timings.update(total=round(total, 4), blocks=len(windows), block=block,
                       width=src.width, height=src.height, valid_pixels=int(valid))
    return out


def _write_blocks(src: RawSource, path: Path, windows: list[Window], progress: bool) -> int:
    from tqdm.auto import tqdm

    profile = stack_profile(src)
    valid = 0
    with rasterio.open(path, "w", **profile) as dst:
        for i, name in enumerate(BAND_NAMES, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(**{
            PREPROCESSING_TAG: json.dumps(src.preprocessing.to_dict()),
            INPUTS_TAG: json.dumps(src.inputs),
        })
        bar = tqdm(total=len(windows), disable=not progress, file=sys.stderr, unit="block",
                   desc="coal-prepare", leave=False)
        # Compute block i+1 while block i is compressed and written.
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(src.read, windows[0]) if windows else None
            for k, w in enumerate(windows):
                assert fut is not None
                data = fut.result()
                fut = pool.submit(src.read, windows[k + 1]) if k + 1 < len(windows) else None
                t = time.perf_counter()
                dst.write(data, window=w)
                src.timers.lap("write", t)
                valid += int(np.isfinite(data[0]).sum())
                bar.update(1)
        bar.close()
    return valid


def _no_valid_message(src: RawSource) -> str:
    return (
        f"no valid pixel in the scene: every pixel is nodata in at least one input (Sentinel-2 "
        f"{src.s2.path} DN 0{' or masked by SCL' if src.use_scl else ''}, or Sentinel-1 "
        f"{src.s1.ds.name} without data over the Sentinel-2 extent); check that the inputs "
        "show the same area and hold data"
    )
