"""Heights for terrain correction: a DEM read onto the Sentinel-2 grid, as ellipsoid heights.

Any raster GDAL reads (GeoTIFF, a VRT mosaic of Copernicus DEM GLO-30 tiles made with
``gdalbuildvrt``, ...) in any CRS. It is read onto each window of the target grid with the same
exact, window-independent bilinear resampling as every other input (:func:`..warp.read_onto_grid`),
so blocks stay exact with a DEM too.

Range-Doppler geometry needs heights above the WGS84 ellipsoid, while DEMs give heights above a
geoid (Copernicus DEM: EGM2008; SRTM: EGM96, within 1-2 m of it). Unless the DEM's CRS declares
ellipsoidal heights, the EGM2008 undulation is added with pyproj (``EPSG:4326+3855`` ->
``EPSG:4979``), evaluated on the target grid's lattice like the map transformation. That needs
PROJ's ``us_nga_egm08_25.tif`` grid; where it is not installed, PROJ can only do a "ballpark"
(zero) transformation: then a warning says so, heights are used as they are (an error of the
undulation, at most about 100 m, i.e. about N / tan(incidence) in ground range: under 1 px for
most of the tropics and Europe, where N is 20..60 m), and the record says so.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
from pyproj import CRS as PCRS
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..._io import sha256_file
from ...errors import CRSError, InputError
from ...raster import Grid, check_crs, open_raster
from ..warp import read_onto_grid, source_bounds_in

log = logging.getLogger("coalmine.preprocess")

VERTICAL = ("egm2008", "ellipsoid")


@functools.lru_cache(maxsize=1)
def _geoid_transformer() -> Transformer | None:
    t = Transformer.from_crs("EPSG:4326+3855", "EPSG:4979", always_xy=True)
    if "ballpark" in t.description.lower():
        return None
    return t


class DemHeights:
    """Ellipsoid heights of a DEM on windows of the target grid.

    Args:
        path: DEM raster.
        grid: the target (Sentinel-2) grid.
        vertical: "egm2008" (heights above the geoid, the default: Copernicus DEM, SRTM) or
            "ellipsoid" (already ellipsoidal).

    Raises:
        InputNotFoundError, RasterError, CRSError: unreadable DEM, no CRS, or a DEM that does not
            cover the Sentinel-2 scene (both extents printed).
    """

    def __init__(self, path: str | Path, grid: Grid, vertical: str = "egm2008") -> None:
        if vertical not in VERTICAL:
            raise InputError(f"DEM vertical reference {vertical!r} is not one of {', '.join(VERTICAL)}")
        self.path = Path(path)
        self.grid = grid
        self.ds = open_raster(self.path, "--dem")
        try:
            check_crs(self.ds, "--dem")
            crs3d = PCRS.from_user_input(self.ds.crs.to_wkt())
            if vertical == "egm2008" and crs3d.is_compound:
                sub = crs3d.sub_crs_list[-1]
                if sub.is_vertical and "ellipsoid" in sub.name.lower():
                    vertical = "ellipsoid"
            self._check_cover()
            self.sha256 = sha256_file(self.path)
        except BaseException:
            self.ds.close()
            raise
        self.geoid = None
        self.vertical = vertical
        if vertical == "egm2008":
            self.geoid = _geoid_transformer()
            if self.geoid is None:
                log.warning("--dem %s: PROJ's EGM2008 geoid grid (us_nga_egm08_25.tif) is not "
                            "installed, so the DEM's geoid heights are used as ellipsoid heights "
                            "(a shift of about N/tan(incidence), under 1 px where the undulation N "
                            "is below 60 m); install it with `projsync --file us_nga_egm08_25.tif` "
                            "for exact heights", self.path.name)
        self.geoid_note = ("heights already ellipsoidal" if vertical == "ellipsoid" else
                           "EGM2008 undulation added (pyproj)" if self.geoid is not None else
                           "EGM2008 grid not installed: geoid heights used as ellipsoidal")

    def _check_cover(self) -> None:
        g = self.grid.bounds
        s = source_bounds_in(self.ds, self.grid.crs)
        tol = 2 * max(self.grid.res)
        if (s.left > g.left + tol or s.right < g.right - tol or s.bottom > g.bottom + tol
                or s.top < g.top - tol):
            def fmt(b) -> str:  # noqa: ANN001
                return f"({b.left:.0f}, {b.bottom:.0f}, {b.right:.0f}, {b.top:.0f})"

            raise CRSError(
                f"--dem {self.path} does not cover the Sentinel-2 scene: DEM extent {fmt(s)} vs "
                f"S2 extent {fmt(g)} (left, bottom, right, top in {self.grid.crs.to_string()}); "
                "give a DEM over the whole scene (e.g. a gdalbuildvrt mosaic of Copernicus DEM tiles)"
            )

    def heights(self, window: Window, undulation: np.ndarray | None) -> np.ndarray:
        """Ellipsoid heights (float64, NaN where the DEM has no data) on ``window``.

        ``undulation`` is the geoid undulation on the window's pixels (from the caller's lattice),
        or None to skip it.
        """
        h = read_onto_grid(self.ds, 1, self.grid, window, Resampling.bilinear,
                           option="--dem").astype(np.float64)
        if undulation is not None:
            h += undulation
        return h

    def undulation(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray | None:
        """EGM2008 undulation (m) at points, or None when not applied."""
        if self.vertical == "ellipsoid" or self.geoid is None:
            return None
        _, _, n = self.geoid.transform(lon, lat, np.zeros_like(lon))
        return np.asarray(n, dtype=np.float64)

    def record(self) -> dict[str, str]:
        return {"dem": str(self.path), "dem_sha256": self.sha256, "dem_vertical": self.geoid_note}

    def close(self) -> None:
        self.ds.close()
