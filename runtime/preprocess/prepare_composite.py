"""``prepare_composite``: all acquisitions of a period -> one composite stack + its quality COG.

The composite (:class:`~.composite.CompositeSource`) is written block by block like a single
scene (same GeoTIFF profile, tags and optional COG conversion), with the block size chosen for a
memory budget (:func:`~.composite.block_for_memory`). Beside the stack ``NAME.tif`` goes
``NAME_quality.tif``, a small uint8 COG with the number of clear Sentinel-2 observations (band 1)
and of Sentinel-1 acquisitions (band 2) per pixel (capped at 255). Both files are written under
temporary names and renamed only when complete; a refused input writes nothing.

Tags of the stack: ``COALMINE_PREPROCESSING`` (as for one scene), ``COALMINE_INPUTS`` (every
acquisition with its date, SHA-256, DN offset or units; the rules and the dilation) and
``COALMINE_COMPOSITE`` (the quality file's name, the numbers of acquisitions, and the spread of
clear observations over the valid pixels). ``coal-run`` finds the quality file through that tag
and reports the share of the mapped area with fewer than 3 clear observations.

The output grid is the earliest Sentinel-2 acquisition's B02 grid, a reference raster's
(``--like``), or the AOIs' extent (:func:`aoi_grid`, ``--grid-from``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError as RioCRSError
from rasterio.errors import RasterioIOError
from rasterio.warp import transform_geom
from rasterio.windows import Window

from .._io import WorkFolder, atomic_output, ensure_output_dir, write_failure
from ..bands import BAND_NAMES
from ..bundle import Preprocessing
from ..errors import CoalmineError, NoValidDataError, UsageError
from ..raster import BLOCK_ROWS, Grid, gdal_writes_checked, to_cog
from ..tiling import block_grid
from .acquisitions import Period
from .composite import (
    COUNT_BANDS,
    DEFAULT_DILATION,
    FEW_OBSERVATIONS,
    CompositeSource,
    block_for_memory,
)
from .prepare import GDAL_CACHE_BYTES, TILE, stack_profile
from .stack import INPUTS_TAG, PREPROCESSING_TAG

log = logging.getLogger("coalmine.preprocess")

#: Tag of a composite stack: its quality file and the spread of clear observations.
COMPOSITE_TAG = "COALMINE_COMPOSITE"
#: Default memory budget: a quarter of a 16 GB workstation, leaving room for the desktop, a GIS
#: and a coal-run beside it.
DEFAULT_MEMORY = 4 * 1024**3
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$")


def parse_memory(text: str | int) -> int:
    """Bytes from ``--memory`` text: ``4G``, ``1500M``, ``2.5GB``, or a number of bytes.

    Raises:
        UsageError: anything else.

    Example:
        >>> parse_memory("4G"), parse_memory("512M")
        (4294967296, 536870912)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _MEMORY_RE.match(str(text))
    if not m:
        raise UsageError(f"--memory {text} is not a size; write e.g. 4G, 1500M or 8GB")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def quality_path(out: str | os.PathLike[str]) -> Path:
    """The quality COG beside a composite stack: ``NAME_quality.tif``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_quality.tif")


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 / UTM zone CRS of a point (north or south), e.g. EPSG:32750 near Tapin."""
    zone = min(60, max(1, int((lon + 180.0) // 6) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def aoi_grid(aoi: str | os.PathLike[str], crs: str | CRS | None = None, res: float = 10.0) -> Grid:
    """The grid over the AOIs' extent (``--grid-from AOI --crs EPSG:… --res 10``).

    Args:
        aoi: any vector file of polygons (read as AOIs).
        crs: the output CRS; default the UTM zone of the AOIs' centre.
        res: pixel size in ``crs`` units (metres for UTM).

    Raises:
        UsageError: a CRS that is not one, a non-positive resolution, metres on a geographic CRS.
        InputError (and subclasses): an unreadable AOI file.

    Example:
        >>> aoi_grid("tapin.geojson", "EPSG:32750", 10).res   # doctest: +SKIP
        (10.0, 10.0)
    """
    from ..aoi import read_aois

    if not (isinstance(res, (int, float)) and np.isfinite(res) and res > 0):
        raise UsageError(f"--res {res} must be a positive pixel size (e.g. 10 for 10 m)")
    aois = read_aois(aoi)
    lonlat = [transform_geom(a.crs, "EPSG:4326", a.geometry) for a in aois]
    xs, ys = _coords(lonlat)
    if crs is None:
        dst = utm_crs((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2)
    else:
        try:
            dst = CRS.from_user_input(crs)
        except RioCRSError as exc:
            raise UsageError(f"--crs {crs} is not a coordinate reference system; write e.g. "
                             "EPSG:32750") from exc
    if dst.is_geographic and res >= 0.1:
        raise UsageError(f"--res {res:g} is in degrees for the geographic --crs {dst.to_string()}; "
                         "give a projected CRS (e.g. the UTM zone, EPSG:327xx) or a pixel size "
                         "in degrees")
    xs, ys = _coords([transform_geom(a.crs, dst, a.geometry) for a in aois])
    return Grid.covering(dst, (min(xs), min(ys), max(xs), max(ys)), float(res))


def _coords(geoms: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []

    def walk(c: Any) -> None:
        if isinstance(c[0], (int, float)):
            xs.append(float(c[0]))
            ys.append(float(c[1]))
        else:
            for x in c:
                walk(x)

    for g in geoms:
        walk(g["coordinates"])
    return xs, ys


def prepare_composite(
    s2: list[str | os.PathLike[str]],
    s1: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    prep: Preprocessing | None = None,
    *,
    grid: Grid | None = None,
    period: Period | None = None,
    s2_offset: float | None = None,
    s1_units: str | None = None,
    dilation: int = DEFAULT_DILATION,
    memory: int = DEFAULT_MEMORY,
    block: int | None = None,
    cog: bool = False,
    progress: bool = True,
    timings: dict[str, Any] | None = None,
    skip_disjoint: bool = False,
    dem: str | os.PathLike[str] | None = None,
    orbit: str | os.PathLike[str] | None = None,
) -> Path:
    """Composite the acquisitions and write the stack and its quality COG.

    Args:
        s2, s1: acquisitions, folders of them, or glob patterns (see :class:`CompositeSource`).
        out: the stack GeoTIFF; the quality COG goes beside it (:func:`quality_path`).
        prep: preprocessing (GLCM edges, speckle filter).
        grid: output grid (default: the earliest Sentinel-2 acquisition's B02 grid).
        period: keep acquisitions of this period.
        s2_offset, s1_units, dilation, skip_disjoint, dem, orbit: see :class:`CompositeSource`.
        memory: budget in bytes; sets the block size unless ``block`` is given.
        block: block size in pixels (overrides ``memory``).
        cog: write the stack as a Cloud-Optimised GeoTIFF.
        progress: a progress bar on stderr.
        timings: filled with seconds per stage, the block size and the counts.

    Returns:
        The stack's path.

    Raises:
        UsageError: bad options. InputError (and subclasses): unusable acquisitions, or no
        pixel with a clear observation. OutputError: the output cannot be written.

    Example:
        >>> prepare_composite(["s2/"], ["s1/"], "tapin_2023.tif",
        ...                   period=Period.of("2023-01-01", "2023-12-31"))   # doctest: +SKIP
    """
    t_start = time.perf_counter()
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"-o {out} is a folder; give the output file name, e.g. {out}/composite.tif")
    if block is not None and (not isinstance(block, int) or block < 32):
        raise UsageError(f"--block {block} is too small; use at least 32")
    qpath = quality_path(out)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        src = CompositeSource(s2, s1, prep, grid=grid, period=period, s2_offset=s2_offset,
                              s1_units=s1_units, dilation=dilation, skip_disjoint=skip_disjoint, dem=dem,
                              orbit=orbit)
        try:
            if block is None:
                block = block_for_memory(memory, len(src.s2), len(src.s1), tile=TILE)
            windows = [b.core for b in block_grid(src.height, src.width, block=block, halo=0)]
            log.info("compositing %d x %d px in %d blocks of %d px (memory budget %.1f GB)",
                     src.width, src.height, len(windows), block, memory / 2**30)
            folder = ensure_output_dir(out.parent, "-o")
            src.start_hashing()
            # every temporary file in the run's hidden work folder beside the outputs, which the
            # next run removes if this one is killed
            with WorkFolder(folder, "-o", what="prepare") as work, atomic_output(out, "-o", work=work) as tmp, \
                    atomic_output(qpath, "-o", work=work) as qtmp:
                target = work.path / f"tiles{out.suffix or '.tif'}" if cog else tmp
                qraw = work.path / f"quality_tiles{qpath.suffix or '.tif'}"
                with gdal_writes_checked(folder, str(out), "-o"):
                    stats = _write(src, target, qraw, windows, progress, qpath.name)
                if stats["valid"] == 0:
                    raise NoValidDataError(_no_valid_message(src))
                t = time.perf_counter()
                if cog:
                    to_cog(target, tmp, nodata=float("nan"), predictor=3, blocksize=TILE,
                           bigtiff="IF_SAFER", forward_band_tags=True, name=out,
                           config={"GDAL_NUM_THREADS": "ALL_CPUS", "GDAL_CACHEMAX": GDAL_CACHE_BYTES})
                to_cog(qraw, qtmp, nodata=None, name=qpath)  # type: ignore[arg-type]
                src.timers.lap("cog", t)
        except CoalmineError:  # already one line naming the file
            raise
        except OSError as exc:
            raise write_failure(out.parent, exc, str(out), "-o") from exc
        finally:
            src.close()
    total = time.perf_counter() - t_start
    log.info("wrote %s and %s: %d x %d px, %.1f %% valid, clear observations median %s, "
             "%.1f %% of valid pixels below %d; %.1f s", out, qpath.name, src.width, src.height,
             100.0 * stats["valid"] / (src.width * src.height), stats["clear"]["median"],
             100.0 * stats["clear"]["share_below"], FEW_OBSERVATIONS, total)
    if timings is not None:
        timings.update(src.timers.as_dict())
        timings.update(total=round(total, 4), blocks=len(windows), block=block, width=src.width,
                       height=src.height, valid_pixels=int(stats["valid"]), s2_acquisitions=len(src.s2),
                       s1_acquisitions=len(src.s1))
    return out


def _write(src: CompositeSource, path: Path, qpath: Path, windows: list[Window], progress: bool,
           quality_name: str) -> dict[str, Any]:
    """Write the stack and the raw quality raster block by block; return pixel statistics."""
    from tqdm.auto import tqdm

    hist = np.zeros(256, np.int64)  # clear observations of valid pixels, capped at 255
    valid = 0
    qprofile = {
        "driver": "GTiff", "width": src.width, "height": src.height, "count": len(COUNT_BANDS),
        "dtype": "uint8", "crs": src.crs, "transform": src.transform, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate", "interleave": "band",
    }
    with rasterio.open(path, "w", **stack_profile(src)) as dst, rasterio.open(qpath, "w", **qprofile) as q:
        for i, name in enumerate(BAND_NAMES, start=1):
            dst.set_band_description(i, name)
        for i, name in enumerate(COUNT_BANDS, start=1):
            q.set_band_description(i, name)
        bar = tqdm(total=len(windows), disable=not progress, file=sys.stderr, unit="block",
                   desc="coal-prepare composite", leave=False)
        with ThreadPoolExecutor(max_workers=1) as pool:  # compute block k+1 while k is written
            fut = pool.submit(src.read_with_counts, windows[0])
            for k, w in enumerate(windows):
                data, counts = fut.result()
                if k + 1 < len(windows):
                    fut = pool.submit(src.read_with_counts, windows[k + 1])
                t = time.perf_counter()
                dst.write(data, window=w)
                q.write(np.minimum(counts, 255).astype(np.uint8), window=w)
                src.timers.lap("write", t)
                ok = np.isfinite(data[0])
                valid += int(ok.sum())
                hist += np.bincount(np.minimum(counts[0][ok], 255), minlength=256)
                bar.update(1)
        bar.close()
        stats = {"valid": valid, "clear": _spread(hist)}
        dst.update_tags(**{
            PREPROCESSING_TAG: json.dumps(src.preprocessing.to_dict()),
            INPUTS_TAG: json.dumps(src.inputs),
            COMPOSITE_TAG: json.dumps({
                "quality": quality_name,
                "quality_bands": list(COUNT_BANDS),
                "s2_acquisitions": len(src.s2),
                "s1_acquisitions": len(src.s1),
                "dilation_px": src.dilation,
                "few_observations": FEW_OBSERVATIONS,
                "clear_observations": stats["clear"],
            }),
        })
        q.update_tags(COALMINE_QUALITY_OF=path.name)
    return stats


def _spread(hist: np.ndarray) -> dict[str, Any]:
    """Minimum, median, maximum and the share below :data:`FEW_OBSERVATIONS` of a histogram."""
    n = int(hist.sum())
    if n == 0:
        return {"min": None, "median": None, "max": None, "share_below": None}
    nz = np.flatnonzero(hist)
    cum = np.cumsum(hist)
    return {"min": int(nz[0]), "median": int(np.searchsorted(cum, (n + 1) // 2)), "max": int(nz[-1]),
            "share_below": round(float(hist[:FEW_OBSERVATIONS].sum()) / n, 6)}


def _no_valid_message(src: CompositeSource) -> str:
    return (f"no pixel of the composite has a clear Sentinel-2 observation together with Sentinel-1 "
            f"data: the {len(src.s2)} Sentinel-2 acquisitions (from {src.s2[0].path.name}) are "
            f"clouded or without data wherever the {len(src.s1)} Sentinel-1 acquisitions have data; "
            "add acquisitions, widen the period, or lower --dilation")


def observation_support(stack: str | os.PathLike[str], mask: str | os.PathLike[str]) -> dict[str, Any] | None:
    """How many clear observations the mapped area of a composite rests on (coal-run's summary).

    Reads the composite's quality COG (named in its ``COALMINE_COMPOSITE`` tag, beside it) and
    the mine mask (uint8, 1 = mine, 255 nodata) on the same grid, strip by strip.

    Returns:
        None for a stack that is not a composite; else ``{"quality", "few_observations",
        "mapped_ha", "mapped_ha_below", "share_below"}`` with ``share_below`` the share of the
        mapped hectares backed by fewer than :data:`FEW_OBSERVATIONS` clear Sentinel-2
        observations (None when nothing is mapped), or ``{"warning": ...}`` when the quality
        file is missing or does not match.
    """
    from ..areas import pixel_areas_ha

    try:
        with rasterio.open(stack) as ds:
            raw = ds.tags().get(COMPOSITE_TAG)
    except RasterioIOError:
        return None
    if not raw:
        return None
    name = json.loads(raw).get("quality", "")
    qpath = Path(stack).with_name(Path(name).name)
    if not name or not qpath.is_file():
        return {"warning": f"{stack} is a composite but its quality file {qpath} is missing; the share of "
                           "the mapped area with few clear observations is unknown (keep the quality "
                           "file beside the stack)"}
    mapped = below = 0.0
    with rasterio.open(qpath) as q, rasterio.open(mask) as m:
        if (q.width, q.height, q.transform, q.crs) != (m.width, m.height, m.transform, m.crs):
            return {"warning": f"quality file {qpath} is not on the grid of {stack}; the share of the mapped "
                               "area with few clear observations is unknown"}
        for b in block_grid(m.height, m.width, block=(BLOCK_ROWS, m.width), halo=0):
            w = b.core
            mine = m.read(1, window=w) == 1
            few = q.read(1, window=w) < FEW_OBSERVATIONS
            px = pixel_areas_ha(m.crs, m.transform, m.height, m.width, window=w)[:, 0]
            mapped += float((mine.sum(axis=1) * px).sum())
            below += float(((mine & few).sum(axis=1) * px).sum())
    return {"quality": str(qpath), "few_observations": FEW_OBSERVATIONS, "mapped_ha": round(mapped, 4),
            "mapped_ha_below": round(below, 4), "share_below": round(below / mapped, 6) if mapped > 0 else None}
