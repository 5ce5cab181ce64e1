"""Opening rasters with errors that name the file, say what was expected and how to fix it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from ..errors import InputNotFoundError, RasterError


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
    raise _crs_error(ds, option)


def _crs_error(ds: DatasetReader, option: str) -> RasterError:
    from ..errors import CRSError

    return CRSError(
        f"{option} {ds.name} has no coordinate reference system (no CRS and no ground control "
        "points); export it georeferenced (e.g. GeoTIFF with its UTM CRS) or assign one with "
        "gdal_edit.py -a_srs EPSG:xxxxx"
    )


def _first_line(exc: BaseException) -> str:
    if "previous exception" in str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__  # GDAL's own words are in the cause
    s = str(exc).strip().splitlines()
    return s[0] if s else type(exc).__name__
