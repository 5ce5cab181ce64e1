"""Raster helpers of the monitor: one reference grid, windowed reads onto it, COG writing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from .._io import atomic_output
from ..errors import RasterError

NODATA = 255
BLOCK_ROWS = 512


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, transform and shape. Every composite and change map uses one."""

    crs: Any
    transform: Any
    width: int
    height: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> Grid:
        with rasterio.open(path) as ds:
            return cls(ds.crs, ds.transform, ds.width, ds.height)

    def key(self) -> str:
        """A string that identifies the grid (for fingerprints)."""
        return f"{self.crs.to_string() if self.crs else None}|{tuple(round(v, 9) for v in self.transform[:6])}|{self.width}x{self.height}"

    def windows(self, rows: int = BLOCK_ROWS) -> Iterator[Window]:
        """Full-width row strips covering the grid (bounded memory whatever the scene size)."""
        for r in range(0, self.height, rows):
            yield Window(0, r, self.width, min(rows, self.height - r))


@contextlib.contextmanager
def open_on_grid(path: str | os.PathLike[str], grid: Grid) -> Iterator[Any]:
    """Open a mask raster as seen on ``grid``: as is when it already matches, else through a
    nearest-neighbour WarpedVRT (outside its footprint reads as nodata)."""
    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"cannot read mask raster {path} ({exc}); re-run the scene") from exc
    try:
        if ds.crs == grid.crs and ds.transform.almost_equals(grid.transform) and ds.shape == (grid.height, grid.width):
            yield ds
        else:
            with WarpedVRT(
                ds, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                resampling=Resampling.nearest, nodata=NODATA, src_nodata=ds.nodata if ds.nodata is not None else NODATA,
            ) as vrt:
                yield vrt
    finally:
        ds.close()


def read_mask(ds: Any, window: Window) -> np.ndarray:
    """A uint8 mask window: 0/1 data, 255 nodata (any other value is treated as nodata)."""
    a = ds.read(1, window=window)
    a = a.astype(np.uint8, copy=False)
    bad = (a != 0) & (a != 1)
    if bad.any():
        a = a.copy()
        a[bad] = NODATA
    return a


def write_cog(
    target: str | os.PathLike[str],
    grid: Grid,
    fill: Callable[[Window], np.ndarray],
    colormap: dict[int, tuple[int, int, int, int]],
    descriptions: str = "",
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a uint8 single-band Cloud-Optimised GeoTIFF window by window, atomically.

    ``fill(window)`` returns the uint8 values of one row strip. The strips go to a tiled
    temporary GeoTIFF, rio-cogeo turns it into a COG (with overviews and the colour table)
    under a temporary name, and only the finished file is renamed to ``target``.
    """
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    target = Path(target)
    profile = {
        "driver": "GTiff", "dtype": "uint8", "count": 1, "width": grid.width, "height": grid.height,
        "crs": grid.crs, "transform": grid.transform, "nodata": NODATA, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }
    with atomic_output(target) as tmp_cog:
        raw = tmp_cog.with_name(tmp_cog.name + ".strips.tif")
        try:
            with rasterio.open(raw, "w", **profile) as dst:
                for w in grid.windows():
                    dst.write(fill(w), 1, window=w)
                dst.write_colormap(1, colormap)
                if descriptions:
                    dst.set_band_description(1, descriptions)
                if tags:
                    dst.update_tags(**tags)
            cog_translate(
                str(raw), str(tmp_cog), cog_profiles.get("deflate"), nodata=NODATA,
                overview_resampling="nearest", colormap=colormap, quiet=True, in_memory=False,
                use_cog_driver=False,
            )
        finally:
            raw.unlink(missing_ok=True)
    return target


def thumbnail(path: str | os.PathLike[str], max_px: int = 360) -> np.ndarray:
    """A decimated uint8 view of a single-band raster (nearest), for report previews."""
    with rasterio.open(path) as ds:
        scale = max(ds.width, ds.height) / max_px
        if scale <= 1:
            return ds.read(1)
        shape = (max(1, int(ds.height / scale)), max(1, int(ds.width / scale)))
        return ds.read(1, out_shape=shape, resampling=Resampling.nearest)
