"""A true-colour picture of each year, under the report's maps and in the QGIS project.

Mine outlines mean little on a blank background: an inspector needs to see the pits, roads and
villages the map speaks of. For every year with a composite the monitor writes
``yearly/truecolour_<year>.tif``: Sentinel-2 B04/B03/B02 (red, green, blue) of the year's
**clearest scene** (the one with the largest valid share in the ledger) or, with
``compositing = "input"``, of the year's composite, on the composite's grid
reduced to at most :data:`MAX_PX` pixels on its longer side, with a robust stretch — each band's
2nd–98th percentile of the valid pixels mapped to 1…255 — so haze, a bright dump or a dark
river does not wash the picture out. 0 is nodata (clouds masked in a stack, outside the scene).
It is a context image for the eye, not data: the numbers come from the masks.

The bands are read from the scene's own input, whatever form coal-monitor accepted it in: a
23-band stack from coal-prepare (band descriptions B04, B03, B02; NaN nodata) or raw
Sentinel-2 L2A (SAFE folder, folder of band files, multi-band GeoTIFF; DN 0 nodata), found by
the preprocessing's own band discovery (:class:`coalmine.runtime.preprocess.s2.S2Reader`) and
read decimated through GDAL (overviews and JPEG 2000 resolution levels make that cheap), warped
onto the preview grid in one step. A scene whose bands cannot be read gives no picture (the
maps are then drawn on plain grey) and never stops the monitor.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.vrt import WarpedVRT

from .._io import atomic_output
from ..raster import Grid

log = logging.getLogger("coalmine.monitor")

#: Longest side of the true-colour pictures, in pixels.
MAX_PX = 2048
#: The bands drawn as red, green and blue.
RGB_BANDS = ("B04", "B03", "B02")
#: Percentiles of the valid pixels mapped to the darkest and brightest value.
STRETCH = (2.0, 98.0)


def preview_grid(grid: Grid, max_px: int = MAX_PX) -> Grid:
    """``grid`` coarsened by a whole factor so its longer side is at most ``max_px`` pixels.

    Example:
        >>> from rasterio.crs import CRS
        >>> g = preview_grid(Grid(CRS.from_epsg(32750), Affine(10, 0, 0, 0, -10, 0), 10980, 10980))
        >>> g.width, g.transform.a
        (1830, 60.0)
    """
    factor = max(1, -(-max(grid.width, grid.height) // max_px))
    return Grid(grid.crs, grid.transform * Affine.scale(factor), -(-grid.width // factor),
                -(-grid.height // factor))


def _band_sources(scene: Path) -> list[tuple[Path, int]]:
    """(file, 1-based band) of B04, B03, B02 in a stack or a raw Sentinel-2 product."""
    from ..bands import is_stack_bands
    from ..preprocess import s2

    if scene.is_file():  # a stack: its band descriptions say where B04, B03, B02 are
        with rasterio.open(scene) as ds:
            names = tuple(ds.descriptions)
        if is_stack_bands(names) and all(b in names for b in RGB_BANDS):
            return [(scene, names.index(b) + 1) for b in RGB_BANDS]
    # Only the band files are wanted: the DN offset (which S2Reader may warn about) does not
    # matter to a stretched picture, so its warnings are kept out of the monitor's log.
    quiet = logging.getLogger(s2.log.name)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with s2.S2Reader(scene) as reader:
            return [(Path(reader.band_refs[b].path), int(reader.band_refs[b].index)) for b in RGB_BANDS]
    finally:
        quiet.setLevel(level)


def read_rgb(scene: str | os.PathLike[str], grid: Grid) -> np.ndarray:
    """B04, B03, B02 of ``scene`` on ``grid`` (average resampling) as float32 (3, h, w), NaN
    where the scene has no data.

    Raises:
        CoalmineError / rasterio errors: the bands cannot be found or read.
    """
    out = np.full((3, grid.height, grid.width), np.nan, dtype=np.float32)
    for i, (path, band) in enumerate(_band_sources(Path(scene))):
        with rasterio.open(path) as src:
            nodata = src.nodatavals[band - 1]
            if nodata is None and np.dtype(src.dtypes[band - 1]).kind in "ui":
                nodata = 0  # Sentinel-2 DN 0 = no data
            with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                           resampling=Resampling.average, src_nodata=nodata, nodata=np.nan,
                           dtype="float32") as vrt:
                a = vrt.read(band)
        a[(a == 0) | ~np.isfinite(a)] = np.nan
        out[i] = a
    return out


def stretch(rgb: np.ndarray, percentiles: tuple[float, float] = STRETCH) -> np.ndarray:
    """Robust per-band stretch of a float (3, h, w) array to uint8 1…255; 0 where any band is NaN.

    Example:
        >>> a = np.stack([np.linspace(0, 1, 101).reshape(1, 101)] * 3)
        >>> s = stretch(a)
        >>> int(s[0, 0, 0]), int(s[0, 0, 50]), int(s[0, 0, 100])
        (1, 128, 255)
    """
    valid = np.isfinite(rgb).all(axis=0)
    out = np.zeros(rgb.shape, dtype=np.uint8)
    if not valid.any():
        return out
    for b in range(rgb.shape[0]):
        lo, hi = np.percentile(rgb[b][valid], percentiles)
        scaled = (rgb[b] - lo) / max(float(hi - lo), 1e-12)
        v = np.clip(np.rint(1 + 254 * np.clip(scaled, 0.0, 1.0)), 1, 255)
        out[b][valid] = v[valid].astype(np.uint8)
    return out


def write_truecolour(scene: str | os.PathLike[str], grid: Grid, target: str | os.PathLike[str],
                     max_px: int = MAX_PX) -> Path | None:
    """Write the stretched true-colour picture of ``scene`` on ``grid`` (reduced) to ``target``.

    Returns:
        The path written, or None when the scene's bands cannot be read or hold no valid pixel
        (logged; the maps are drawn without a picture then).
    """
    small = preview_grid(grid, max_px)
    try:
        rgb = read_rgb(scene, small)
    except Exception as exc:  # noqa: BLE001 - a missing picture must never stop the monitor
        log.info("no true-colour picture from %s: %s", Path(scene).name, " ".join(str(exc).split()))
        return None
    img = stretch(rgb)
    if not img.any():
        return None
    target = Path(target)
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 3, "width": small.width, "height": small.height,
               "crs": small.crs, "transform": small.transform, "nodata": 0, "compress": "deflate",
               "predictor": 2, "photometric": "RGB", "tiled": True, "blockxsize": 256, "blockysize": 256}
    with atomic_output(target) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(img)
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            for i, name in enumerate(RGB_BANDS, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(COALMINE_SOURCE=Path(scene).name, COALMINE_STRETCH=f"{STRETCH[0]:g}-{STRETCH[1]:g} %")
            dst.build_overviews([2, 4, 8], Resampling.average)
    return target


def read_truecolour(path: str | os.PathLike[str] | None) -> tuple[np.ndarray, Any] | None:
    """A written picture as an RGBA uint8 (h, w, 4) array (alpha 0 at nodata) and its bounds."""
    if path is None or not Path(path).is_file():
        return None
    with rasterio.open(path) as ds:
        rgb = ds.read()
        bounds = ds.bounds
    alpha = np.where(rgb.any(axis=0), 255, 0).astype(np.uint8)
    return np.dstack([rgb[0], rgb[1], rgb[2], alpha]), bounds
