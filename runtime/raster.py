"""Rasters: the grid value, opening and reading with clear errors, masks on a grid, COG writing.

One home for what the preprocessing, ``coal-run`` and the monitor all do with rasters:

* :class:`Grid` — CRS, transform and size of a raster grid (the Sentinel-2 10 m grid of a
  scene, the reference grid of a monitoring project);
* :func:`open_raster`, :func:`read_checked`, :func:`check_crs` — rasterio calls whose errors
  name the file and the option it came from, say what was expected and how to fix it;
* :func:`open_on_grid`, :func:`read_mask` — a 0/1 mask as seen on another grid (nearest);
* :func:`to_cog` — the one Cloud-Optimised GeoTIFF conversion (rio-cogeo), and
  :func:`write_uint8_cog`, which writes a single-band uint8 COG strip by strip through it;
* :func:`thumbnail` — a decimated preview of a single-band raster.

Resampling inputs onto a window of a grid (bilinear, bit-identical across windows) lives in
:mod:`coalmine.runtime.preprocess.warp`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.transform import array_bounds
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ._io import atomic_output
from .errors import CRSError, InputNotFoundError, OutputError, RasterError
from .tiling import block_grid

#: Nodata value of every uint8 output (probability, mask, composite, change map).
NODATA = 255
#: Rows per strip when a whole grid is walked (bounded memory whatever the scene size).
BLOCK_ROWS = 512


# -- the grid -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size.

    Example:
        >>> g = Grid(CRS.from_epsg(32750), Affine(10, 0, 300000, 0, -10, 9700000), 4, 3)
        >>> g.res, g.full
        ((10.0, 10.0), Window(col_off=0, row_off=0, width=4, height=3))
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def covering(cls, crs: CRS, bounds: tuple[float, float, float, float], res: float) -> Grid:
        """The north-up grid of ``res`` pixels that covers ``bounds`` (left, bottom, right, top in
        ``crs``), its edges on multiples of ``res`` so that grids of one CRS and pixel size align
        (Sentinel-2 tiles' 10 m pixels do).

        Example:
            >>> Grid.covering(CRS.from_epsg(32750), (300005, 9699985, 300031, 9700000), 10).width
            4
        """
        left, bottom, right, top = bounds
        x0, y1 = np.floor(left / res) * res, np.ceil(top / res) * res
        w = max(1, int(np.ceil(round((right - x0) / res, 6))))
        h = max(1, int(np.ceil(round((y1 - bottom) / res, 6))))
        return cls(crs, Affine(res, 0.0, float(x0), 0.0, -res, float(y1)), w, h)

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> Grid:
        """The grid of the raster file ``path``."""
        with rasterio.open(path) as ds:
            return cls(ds.crs, ds.transform, ds.width, ds.height)

    @property
    def bounds(self) -> BoundingBox:
        return BoundingBox(*array_bounds(self.height, self.width, self.transform))

    @property
    def res(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def full(self) -> Window:
        return Window(0, 0, self.width, self.height)

    def key(self) -> str:
        """A string that identifies the grid (for fingerprints)."""
        crs = self.crs.to_string() if self.crs else None
        return f"{crs}|{tuple(round(v, 9) for v in self.transform[:6])}|{self.width}x{self.height}"

    def clip(self, window: Window) -> Window:
        """``window`` intersected with the grid (may be empty: width/height 0)."""
        c0 = max(0, int(window.col_off))
        r0 = max(0, int(window.row_off))
        c1 = min(self.width, int(window.col_off + window.width))
        r1 = min(self.height, int(window.row_off + window.height))
        return Window(c0, r0, max(0, c1 - c0), max(0, r1 - r0))

    def expand(self, window: Window, halo: int) -> Window:
        """``window`` grown by ``halo`` pixels on each side, clipped to the grid."""
        return self.clip(
            Window(window.col_off - halo, window.row_off - halo, window.width + 2 * halo,
                   window.height + 2 * halo)
        )


def check_window(grid: Grid, window: Window) -> Window:
    """Validate that ``window`` has integer offsets/sizes and lies inside ``grid``."""
    vals = (window.col_off, window.row_off, window.width, window.height)
    if any(float(v) != int(v) for v in vals):
        raise ValueError(f"window {window} must have whole-pixel offsets and sizes")
    w = Window(*(int(v) for v in vals))
    if w.width <= 0 or w.height <= 0 or grid.clip(w) != w:
        raise ValueError(f"window {w} does not lie inside the {grid.width}x{grid.height} raster")
    return w


# -- opening and reading ------------------------------------------------------------------------------
def check_exists(path: str | os.PathLike[str], option: str) -> Path:
    """Return ``path`` as a Path; raise InputNotFoundError naming ``option`` if it does not exist."""
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{option} {p} does not exist; check the path")
    return p


def open_raster(path: str | os.PathLike[str], option: str) -> DatasetReader:
    """Open a raster for reading, turning GDAL's complaints into one clear RasterError.

    Raises:
        InputNotFoundError: the path does not exist.
        RasterError: the file is not a raster GDAL can read (or is damaged).
    """
    p = check_exists(path, option)
    if p.is_dir():
        raise RasterError(f"{option} {p} is a folder, expected a raster file (GeoTIFF or JP2)")
    try:
        return rasterio.open(p)
    except RasterioIOError as exc:
        raise RasterError(
            f"{option} {p} is not a raster GDAL can read, or is truncated or damaged "
            f"({_first_line(exc)}); expected a complete GeoTIFF or JP2 file: copy or download "
            "it again"
        ) from exc


def read_checked(ds: DatasetReader, option: str, indexes: int | list[int] = 1,
                 window: Window | None = None, **kwargs: object) -> np.ndarray:
    """``ds.read`` that reports damaged (e.g. truncated) files as a RasterError naming them."""
    try:
        return ds.read(indexes, window=window, **kwargs)
    except RasterioError as exc:
        raise RasterError(
            f"{option} {ds.name} cannot be read ({_first_line(exc)}); the file looks truncated "
            "or damaged: copy or download it again"
        ) from exc


def check_crs(ds: DatasetReader, option: str) -> None:
    """Require a CRS (or ground control points with one)."""
    if ds.crs is not None:
        return
    gcps, gcrs = ds.gcps
    if gcps and gcrs is not None:
        return
    raise CRSError(
        f"{option} {ds.name} has no coordinate reference system (no CRS and no ground control "
        "points); export it georeferenced (e.g. GeoTIFF with its UTM CRS) or assign one with "
        "gdal_edit.py -a_srs EPSG:xxxxx"
    )


def _first_line(exc: BaseException) -> str:
    if "previous exception" in str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__  # GDAL's own words are in the cause
    s = str(exc).strip().splitlines()
    return s[0] if s else type(exc).__name__


# -- masks on a grid ------------------------------------------------------------------------------
@contextlib.contextmanager
def open_on_grid(path: str | os.PathLike[str], grid: Grid) -> Iterator[Any]:
    """Open a mask raster as seen on ``grid``: as is when it already matches, else through a
    nearest-neighbour WarpedVRT (outside its footprint reads as nodata)."""
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
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


# -- Cloud-Optimised GeoTIFF ------------------------------------------------------------------------
def to_cog(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    nodata: float,
    overview_resampling: str = "nearest",
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    tags: dict[str, str] | None = None,
    predictor: int | None = None,
    blocksize: int | None = None,
    bigtiff: str | None = None,
    forward_band_tags: bool = False,
    config: dict[str, Any] | None = None,
    name: str | os.PathLike[str] | None = None,
) -> None:
    """Convert the GeoTIFF ``src`` into a DEFLATE Cloud-Optimised GeoTIFF at ``dst`` (rio-cogeo).

    DEFLATE because every COG reader (QGIS, GDAL/libtiff builds of any age) supports it.

    Internal overviews are built with ``overview_resampling``; band descriptions and dataset
    tags are kept (``tags`` adds more), and the colour table ``colormap`` is written when
    given. ``dst`` is usually a temporary name (see :func:`coalmine.runtime._io.atomic_output`);
    ``name`` is the final name used in messages.

    Args:
        src, dst: source GeoTIFF and the COG to write.
        nodata: the nodata value of the COG.
        overview_resampling: rio-cogeo's overview resampling ("nearest", "average", ...).
        colormap: {value: (r, g, b, a)} colour table of band 1.
        tags: extra dataset tags.
        predictor, blocksize, bigtiff: TIFF creation options beyond rio-cogeo's "deflate"
            profile (e.g. predictor 3 for float32, 512 px tiles, BIGTIFF=IF_SAFER).
        forward_band_tags: copy band-level tags too.
        config: GDAL configuration options for the conversion.
        name: the path to name in errors (default ``dst``).

    Raises:
        OutputError: the conversion failed (disk full, unwritable folder...).
    """
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    profile = cog_profiles.get("deflate")
    if predictor is not None:
        profile.update(predictor=predictor)
    if blocksize is not None:
        profile.update(blockxsize=blocksize, blockysize=blocksize)
    if bigtiff is not None:
        profile.update(BIGTIFF=bigtiff)
    try:
        cog_translate(
            str(src), str(dst), profile, nodata=nodata, overview_resampling=overview_resampling,
            colormap=colormap, additional_cog_metadata=tags or None, forward_band_tags=forward_band_tags,
            config=config, in_memory=False, quiet=True, use_cog_driver=False,
        )
    except Exception as exc:  # noqa: BLE001 - GDAL/rio-cogeo raise various types
        from ._io import write_failure

        raise write_failure(Path(name or dst).parent, exc, f"the COG {name or dst}") from exc
    with rasterio.open(src) as s, rasterio.open(dst) as d:
        missing = sorted(k for k in s.tags() if k not in d.tags())
    if missing:  # pragma: no cover - rio-cogeo keeps dataset tags
        raise OutputError(f"COG conversion of {name or dst} dropped the tags {missing}")


class _GdalErrors(logging.Handler):
    """Collects the errors GDAL signals through rasterio's error handler (logger ``rasterio._err``)."""

    #: What GDAL says when a write did not reach the disk (full disk, I/O error, lost file).
    WRITE = re.compile(r"write error|write failed|_tiffWriteProc|_tiffSeekProc|no space|"
                       r"TIFFRewriteDirectory|TIFFWriteDirectory|Error fetching directory count", re.IGNORECASE)

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if self.WRITE.search(msg):
            self.failures.append(msg.split("msg=", 1)[-1].strip("'\""))


@contextlib.contextmanager
def gdal_writes_checked(folder: str | os.PathLike[str], what: str, option: str = "--out") -> Iterator[None]:
    """Raise :class:`OutputError` when a GDAL write inside the block did not reach the disk.

    GDAL writes a GeoTIFF's last blocks and its directory when the dataset is closed, and a
    failure there (a full disk) is signalled but not raised: the file is left truncated while the
    close succeeds. Wrap the ``with rasterio.open(path, "w")`` block (close included) in this.

    Raises:
        OutputError: naming ``what``, the cause and the free space in ``folder``.
    """
    from ._io import write_failure

    handler = _GdalErrors()
    logger = logging.getLogger("rasterio._err")
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    if handler.failures:
        raise write_failure(folder, OSError(handler.failures[0]), what, option)


def write_uint8_cog(
    target: str | os.PathLike[str],
    grid: Grid,
    fill: Callable[[Window], np.ndarray],
    colormap: dict[int, tuple[int, int, int, int]],
    description: str = "",
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a uint8 single-band COG on ``grid`` strip by strip, atomically.

    ``fill(window)`` returns the uint8 values of one full-width strip of :data:`BLOCK_ROWS`
    rows (:func:`~coalmine.runtime.tiling.block_grid`). The
    strips go to a tiled temporary GeoTIFF, :func:`to_cog` turns it into the COG (nearest
    overviews, the colour table) under a temporary name, and only the finished file is
    renamed to ``target``.
    """
    target = Path(target)
    profile = {
        "driver": "GTiff", "dtype": "uint8", "count": 1, "width": grid.width, "height": grid.height,
        "crs": grid.crs, "transform": grid.transform, "nodata": NODATA, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }
    with atomic_output(target) as tmp_cog:
        raw = tmp_cog.with_name(tmp_cog.name + ".strips.tif")
        try:
            with gdal_writes_checked(target.parent, str(target), "output folder"), \
                    rasterio.open(raw, "w", **profile) as dst:
                for b in block_grid(grid.height, grid.width, block=(BLOCK_ROWS, grid.width), halo=0):
                    dst.write(fill(b.core), 1, window=b.core)
                dst.write_colormap(1, colormap)
                if description:
                    dst.set_band_description(1, description)
                if tags:
                    dst.update_tags(**tags)
            to_cog(raw, tmp_cog, nodata=NODATA, colormap=colormap, name=target)
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
