"""Reading Sentinel-1 sigma0 VV: units, refusing raw GRD DN, warping onto the Sentinel-2 grid.

Accepted input: a VV raster of calibrated sigma0 in linear power or dB (SNAP, pyroSAR, ASF RTC,
Earth Engine ``COPERNICUS/S1_GRD`` exports), geocoded by a geotransform or by ground control
points, in any CRS. A multi-band file is accepted when one band's description says ``VV``.

Units (``S1Params.units`` / ``--s1-units``): ``auto`` looks at a sample of valid values: any
share of negative values means dB (linear power is never negative); otherwise values of order
0.001-1 mean linear power. Declared units that the values contradict are refused either way
(``linear`` with negative values, ``db`` with values of linear power), naming the fix. Values much larger than 1 (median above :data:`MAX_LINEAR_MEDIAN`, or
integer data with such values) are raw GRD digital numbers or amplitudes, not sigma0: they are
refused with instructions for calibrating.

The raster is converted to linear power *before* warping (averaging belongs in power), warped
onto the S2 grid (bilinear by default), then the Lee filter and the dB conversion follow in
:mod:`coalmine.runtime.preprocess.stack`. Linear values <= 0 are nodata.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.windows import Window

from ..bundle import S1Params
from ..errors import CRSError, InputError, UnitsError, UsageError
from ..options import S1_UNITS, InputOptions
from ..raster import Grid, check_crs, open_raster, read_checked
from .speckle import db_to_power
from .warp import read_onto_grid, source_bounds_in

log = logging.getLogger("coalmine.preprocess")

UNITS = S1_UNITS
#: sigma0 in linear power rarely has a median above 1 (0 dB); raw DN and amplitudes have
#: medians in the tens to thousands.
MAX_LINEAR_MEDIAN = 2.0

CALIBRATE_HINT = (
    "give the GRD product itself instead (the S1?_IW_GRDH_….SAFE folder or its .zip: coalmine "
    "removes the noise, calibrates and geocodes it), or calibrate it to sigma0 first: in ESA SNAP "
    "run Radar > Radiometric > Calibrate (output sigma0_VV) and Radar > Geometric > Terrain "
    "Correction, or use pyroSAR, ASF HyP3 RTC (power or dB) or a Google Earth Engine "
    "COPERNICUS/S1_GRD export (dB)"
)


def _sample(ds: DatasetReader, band: int, option: str) -> np.ndarray:
    """Valid values from up to 9 windows spread over the raster (cheap on huge files)."""
    vals = []
    size = 256
    for fr in (0.2, 0.5, 0.8):
        for fc in (0.2, 0.5, 0.8):
            h, w = min(size, ds.height), min(size, ds.width)
            r0 = int(max(0, min(ds.height - h, fr * ds.height - h / 2)))
            c0 = int(max(0, min(ds.width - w, fc * ds.width - w / 2)))
            a = read_checked(ds, option, band, window=Window(c0, r0, w, h))
            vals.append(a.ravel())
    v = np.concatenate(vals)
    v = v[np.isfinite(v.astype(np.float64))]
    if ds.nodata is not None and not np.isnan(ds.nodata):
        v = v[v != ds.nodata]
    if v.size == 0:  # sparse data: fall back to a decimated full read
        a = read_checked(ds, option, band, out_shape=(min(512, ds.height), min(512, ds.width)))
        v = a.ravel()
        v = v[np.isfinite(v.astype(np.float64))]
        if ds.nodata is not None and not np.isnan(ds.nodata):
            v = v[v != ds.nodata]
    return v


def detect_units(values: np.ndarray, dtype: str, given: str, name: str) -> str:
    """Decide 'linear' or 'db' for a sample of valid values; refuse GRD DN.

    Args:
        values: valid (finite, not nodata) sample values.
        dtype: the raster's data type name.
        given: "auto", "linear" or "db".
        name: the file, for messages.

    Returns:
        "linear" or "db".

    Raises:
        UnitsError: values are raw DN, or contradict ``given``.
        UsageError: ``given`` is not one of :data:`UNITS`.
    """
    InputOptions(s1_units=given)  # refuses an unknown unit (the one rule, in options.py)
    v = values.astype(np.float64)
    med = float(np.median(v))
    neg = float((v < 0).mean())
    integer = np.dtype(dtype).kind in "iu"
    looks_dn = (neg < 0.01 and med > MAX_LINEAR_MEDIAN) or (integer and neg < 0.01 and med > 1)
    if given == "db":
        if integer and med > 100:
            raise UnitsError(f"--s1 {name} holds integer values around {med:.0f}: raw GRD digital "
                             f"numbers, not sigma0 in dB; {CALIBRATE_HINT}")
        if neg < 0.01 and med < MAX_LINEAR_MEDIAN:
            # sigma0 in dB is mostly negative (-25..+5 dB): values of 0.001-1 with almost none
            # below 0 are linear power, and reading them as dB would give every pixel ~0 dB.
            raise UnitsError(f"--s1 {name} was declared dB but {1 - neg:.0%} of its values are >= 0 "
                             f"(median {med:.3g}), which is linear power, not dB (sigma0 in dB is mostly "
                             "-25..+5); pass --s1-units linear (or auto)")
        return "db"
    if looks_dn:
        raise UnitsError(
            f"--s1 {name} does not hold sigma0: its values are {dtype} with median {med:.4g} "
            f"(linear sigma0 is mostly below 1, dB mostly -25..+5); these look like raw GRD "
            f"digital numbers or amplitudes; {CALIBRATE_HINT}"
        )
    if given == "linear":
        if neg >= 0.01:
            raise UnitsError(f"--s1 {name} was declared linear but {neg:.0%} of its values are "
                             "negative, which linear power cannot be; it looks like dB: pass "
                             "--s1-units db (or auto)")
        return "linear"
    return "db" if neg >= 0.01 else "linear"


class S1Reader:
    """Sentinel-1 VV sigma0, read as linear power on windows of the Sentinel-2 grid.

    Args:
        path: VV raster (linear or dB; geotransform or GCPs).
        grid: the Sentinel-2 grid to warp onto.
        params: S1 parameters (units, resampling).
        units: explicit units overriding ``params.units`` ("auto", "linear", "db").

    Raises:
        InputNotFoundError, RasterError, CRSError (no CRS; no overlap with the S2 extent),
        UnitsError (GRD DN, contradictory units), InputError (all nodata).
    """

    def __init__(self, path: str | Path, grid: Grid, params: S1Params | None = None,
                 units: str | None = None) -> None:
        self.params = params or S1Params()
        self.grid = grid
        self.ds = open_raster(path, "--s1")
        try:
            check_crs(self.ds, "--s1")
            self.band = self._vv_band()
            self._check_overlap()
            sample = _sample(self.ds, self.band, "--s1")
            if sample.size == 0:
                raise InputError(f"--s1 {self.ds.name} has no valid pixel (all nodata"
                                 f"{'' if self.ds.nodata is None else f' = {self.ds.nodata:g}'}); "
                                 "use a Sentinel-1 raster with data")
            given = units or self.params.units
            self.units = detect_units(sample, self.ds.dtypes[self.band - 1], given,
                                      str(self.ds.name))
            log.info("Sentinel-1 %s: units %s%s", Path(self.ds.name).name, self.units,
                     " (detected)" if given == "auto" else "")
        except BaseException:
            self.ds.close()
            raise

    def _vv_band(self) -> int:
        if self.ds.count == 1:
            return 1
        for i, d in enumerate(self.ds.descriptions, start=1):
            if d and "VV" in d.upper():
                return i
        raise InputError(
            f"--s1 {self.ds.name} has {self.ds.count} bands and none is described as VV; pass a "
            "single-band VV raster (e.g. gdal_translate -b N) or set the band description to VV"
        )

    def _check_overlap(self) -> None:
        g = self.grid.bounds
        s = source_bounds_in(self.ds, self.grid.crs)
        if s.left >= g.right or s.right <= g.left or s.bottom >= g.top or s.top <= g.bottom:
            def fmt(b) -> str:  # noqa: ANN001
                return f"({b.left:.0f}, {b.bottom:.0f}, {b.right:.0f}, {b.top:.0f})"

            raise CRSError(
                f"--s1 {self.ds.name} does not overlap the Sentinel-2 scene: S1 extent "
                f"{fmt(s)} vs S2 extent {fmt(g)} (left, bottom, right, top in "
                f"{self.grid.crs.to_string()}); pass the Sentinel-1 image of the same area"
            )

    def _to_power(self, a: np.ndarray) -> np.ndarray:
        if self.units == "db":
            return db_to_power(a)
        a = a.astype(np.float32, copy=False)
        return np.where(a > 0, a, np.float32(np.nan))

    def read_power(self, window: Window) -> np.ndarray:
        """sigma0 VV in linear power on ``window`` of the S2 grid: float32 (h, w), NaN nodata."""
        return read_onto_grid(self.ds, self.band, self.grid, window,
                              Resampling[self.params.resampling], option="--s1",
                              convert=self._to_power)

    #: How this VV was made, as far as coalmine can tell (recorded in the stack's preprocessing).
    made = {"source": "raster", "terrain": "unknown"}
    #: What was applied (GRD products say more; see ``s1grd``).
    record: dict[str, object] = {}

    def close(self) -> None:
        self.ds.close()


def open_s1(path: str | Path, grid: Grid, params: S1Params | None = None, *,
            units: str | None = None, dem: str | Path | None = None,
            orbit: str | Path | None = None):  # noqa: ANN201 - S1Reader | GrdReader
    """The reader for a Sentinel-1 input: a GRD product (SAFE folder, zip, COG-SAFE) or a raster.

    Args:
        path: ``--s1``: a GRD product as downloaded, or a calibrated sigma0 raster.
        grid: the Sentinel-2 grid.
        params: S1 parameters.
        units: units of a raster ("auto", "linear", "db"); ignored for a GRD product.
        dem, orbit: DEM and orbit file (or folder) for a GRD product.

    Raises:
        UsageError: ``dem``/``orbit`` given with a raster (already geocoded elsewhere).
        and what :class:`S1Reader` / :class:`~.s1grd.GrdReader` raise.
    """
    from .s1grd.product import looks_like_s1_product

    if looks_like_s1_product(path):
        from .s1grd import GrdReader

        return GrdReader(path, grid, params, dem=dem, orbit=orbit)
    given = [o for o, v in (("--dem", dem), ("--orbit", orbit)) if v is not None]
    if given:
        raise UsageError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to a Sentinel-1 GRD product (SAFE folder or "
                         f"zip), but --s1 {path} is a raster that was geocoded where it was made; "
                         f"drop {' and '.join(given)} or give the GRD product")
    return S1Reader(path, grid, params, units=units)
