"""Tiny hand-made acquisitions for the composite tests: every value known, every band at 10 m.

- :func:`write_s2`: one Sentinel-2 L2A acquisition as a folder of single-band uint16 GeoTIFFs
  (the nine bands and SCL, all on one 10 m grid so a reflectance is exactly ``(DN + offset) /
  10000``), with its processing baseline and ``BOA_ADD_OFFSET`` in the tags.
- :func:`write_s1`: a Sentinel-1 sigma0 VV raster (linear power or dB).
- :func:`dn_for`: the DN that encode a reflectance under an offset.

Example:
    >>> d = write_s2(tmp_path / "S2_20210704T022551", refl, scl)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from coalmine.runtime.bands import S2_BANDS
from rasterio.crs import CRS

UTM50S = CRS.from_epsg(32750)
TRANSFORM = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 9700000.0)


def dn_for(refl: np.ndarray, offset: int) -> np.ndarray:
    """uint16 DN of reflectance ``refl`` under ``offset`` (DN = refl x 10000 - offset), >= 1."""
    return np.rint(np.asarray(refl, np.float64) * 10000.0 - offset).clip(1, 65535).astype(np.uint16)


def reflectance(dn: np.ndarray, offset: int) -> np.ndarray:
    """What the reader makes of DN: ``max((DN + offset) / 10000, 0)`` in float32, NaN for DN 0."""
    r = (dn.astype(np.float32) + np.float32(offset)) / np.float32(10000.0)
    r = np.maximum(r, np.float32(0.0))
    r[dn == 0] = np.nan
    return r


def write_s2(folder: Path, dn: np.ndarray, scl: np.ndarray, *, offset: int = 0, baseline: str = "03.01",
             crs: CRS = UTM50S, transform: Affine = TRANSFORM, level: str = "L2A", with_scl: bool = True) -> Path:
    """Write one acquisition: ``dn`` (9, h, w) uint16 in band order, ``scl`` (h, w) uint8.

    ``folder``'s name should carry the date (``…_20210704T022551``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    tags = {"PROCESSING_BASELINE": baseline, "BOA_ADD_OFFSET": str(offset), "BOA_QUANTIFICATION_VALUE": "10000",
            "PRODUCT_TYPE": "S2MSI2A" if level == "L2A" else "S2MSI1C"}
    h, w = scl.shape
    prof = {"driver": "GTiff", "width": w, "height": h, "count": 1, "crs": crs, "transform": transform,
            "nodata": 0}
    for i, b in enumerate(S2_BANDS):
        with rasterio.open(folder / f"T50MLA_{folder.name}_{b}_10m.tif", "w", dtype="uint16", **prof) as ds:
            ds.write(dn[i], 1)
            ds.update_tags(**tags)
    if with_scl:
        with rasterio.open(folder / f"T50MLA_{folder.name}_SCL_10m.tif", "w", dtype="uint8", **prof) as ds:
            ds.write(scl.astype(np.uint8), 1)
    return folder


def write_s1(path: Path, values: np.ndarray, *, crs: CRS = UTM50S, transform: Affine = TRANSFORM) -> Path:
    """A float32 VV raster (linear power or dB, as given), NaN nodata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = values.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32", crs=crs,
                       transform=transform, nodata=float("nan")) as ds:
        ds.write(values.astype(np.float32), 1)
        ds.set_band_description(1, "VV")
    return path
