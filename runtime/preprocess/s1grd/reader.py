"""``GrdReader``: a Sentinel-1 GRD product read as sigma0 VV (linear) on windows of the S2 grid.

Per window of the target grid:

1. **where**: each target pixel's image line/pixel by Range-Doppler geocoding
   (:mod:`.geocoding`): exact solutions on a lattice fixed to the whole grid at three heights,
   interpolated to the pixel and to its height -- the geolocation grid's height without a DEM,
   the DEM's (ellipsoidal) height with one;
2. **what**: the DN of the image window those positions need, turned into noise-removed sigma0
   by :mod:`.radiometry` (border noise masked for IPF < 2.90);
3. bilinear interpolation of sigma0 (linear power) at the positions, NaN and out-of-image
   neighbours getting no weight (the same sampler as every other S1 input).

Every step depends only on global pixel coordinates, so a window equals the same part of a
whole-scene read, bit for bit. The Lee filter, dB conversion and GLCM follow in the shared
stack code.

Why not sarsen (xarray-sentinel + xarray + dask + rioxarray + pandas + scipy): it geocodes onto
the DEM's grid through dask graphs, has no thermal noise removal (xarray-sentinel keeps one
azimuth noise vector of a GRD), and would add about 100 MB of dependencies to a runtime whose
base is NumPy + rasterio + pyproj. The geocoding here is a few dozen lines of NumPy on a lattice;
benchmarks/bench_grd.py measures its cost, and the tests check it against the annotation's own
geolocation grid.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from ...bundle import S1Params
from ...errors import CRSError, InputError, RasterError
from ...raster import Grid, read_checked
from ..warp import _bilinear
from .annotation import parse_annotation, parse_calibration, parse_noise
from .dem import DemHeights
from .geocoding import HEIGHTS, LATTICE, GridHeights, RangeDoppler, lagrange3, quadratic_in_height
from .orbit import annotation_orbit, read_eof
from .product import SIZE_TAG, WINDOW_TAG, GrdProduct, open_product
from .radiometry import IPF_AZIMUTH_NOISE, SIGMA0_FLOOR, Radiometry, border_bounds

log = logging.getLogger("coalmine.preprocess")

#: Image lines read at once when scanning line edges for border noise.
_BORDER_CHUNK = 64


@functools.lru_cache(maxsize=8)
def _to_lonlat(crs_wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(crs_wkt), "EPSG:4326", always_xy=True)


class GrdReader:
    """Sentinel-1 IW GRD product -> noise-removed sigma0 VV on windows of the Sentinel-2 grid.

    Args:
        path: SAFE folder, its zip, its manifest.safe, or the COG-SAFE variant.
        grid: the Sentinel-2 grid.
        params: S1 parameters (only ``resampling`` bilinear is supported for GRD).
        dem: optional DEM raster for terrain correction.
        orbit: optional precise/restituted orbit file (.EOF).
        dem_vertical: "egm2008" (default) or "ellipsoid": what the DEM heights are relative to.

    Attributes:
        units: always "linear" (what ``read_power`` returns), for the stack code.
        ds: the open measurement dataset.
        record: what was applied, for the stack's COALMINE_INPUTS tag and run summaries.

    Raises:
        InputNotFoundError, InputError, RasterError, CRSError: unusable product/DEM/orbit, or a
            product that does not overlap the Sentinel-2 grid.
    """

    units = "linear"

    def __init__(self, path: str | Path, grid: Grid, params: S1Params | None = None, *,
                 dem: str | Path | None = None, orbit: str | Path | None = None,
                 dem_vertical: str = "egm2008") -> None:
        self.params = params or S1Params()
        self.grid = grid
        self.product: GrdProduct = open_product(path)
        p = self.product
        self.ann = parse_annotation(p.annotation, p.annotation_name)
        a = self.ann
        if a.product_type != "GRD" or a.mode != "IW" or a.polarisation != "VV":
            raise InputError(f"--s1 {p.path}: {p.annotation_name} describes a {a.mode} "
                             f"{a.product_type} {a.polarisation} image; coalmine reads IW GRD VV")
        cal = parse_calibration(p.calibration, p.calibration_name)
        noise = parse_noise(p.noise, p.noise_name)
        self.radiometry = Radiometry(cal, noise, p.ipf)
        self.orbit = read_eof(orbit, a) if orbit is not None else annotation_orbit(a)
        self.rd = RangeDoppler(a, self.orbit)
        self.grid_heights = GridHeights(a)
        self._lonlat = _to_lonlat(grid.crs.to_wkt())
        self._check_overlap()
        self.dem = DemHeights(dem, grid, dem_vertical) if dem is not None else None
        try:
            import rasterio

            self.ds = rasterio.open(p.measurement)
        except RasterioIOError as exc:
            if self.dem is not None:
                self.dem.close()
            raise RasterError(f"--s1 {p.path}: the measurement {p.measurement} cannot be opened "
                              f"({exc}); the product is truncated or damaged: download it again") from exc
        #: (row, col) of the measurement file's first pixel in the product image: (0, 0) for a
        #: whole measurement, the window's offset for one fetched around the AOIs.
        self.offset = (0, 0)
        try:
            window = measurement_window(self.ds.tags(), self.ds.width, self.ds.height, a)
        except InputError as exc:
            self.close()
            raise InputError(f"--s1 {p.path}: {exc}") from None
        if window is not None:
            self.offset = (window[1], window[0])
        elif (self.ds.height, self.ds.width) != (a.lines, a.samples):
            self.close()
            raise InputError(f"--s1 {p.path}: the measurement is {self.ds.width} x {self.ds.height} "
                             f"px but the annotation describes {a.samples} x {a.lines}; the "
                             "product is inconsistent: download it again")
        self.border_method = ("none needed: no-value borders already 0 (IPF >= 2.90)"
                              if p.ipf >= IPF_AZIMUTH_NOISE else
                              "range-edge trim after noise subtraction (ESA MPC-0243 / SNAP "
                              "Remove-GRD-Border-Noise approach, 500 samples)")
        self._border = None
        if p.ipf < IPF_AZIMUTH_NOISE:
            self._border = np.full((a.lines, 2), -2, dtype=np.int64)
        self.record: dict[str, Any] = {
            "s1_product": p.name,
            "s1_form": p.form,
            "s1_ipf": f"{p.ipf:.2f}",
            "s1_mission": p.mission,
            "s1_noise_removal": ("range x azimuth noise LUTs (IPF >= 2.90)"
                                 if self.radiometry.azimuth_noise else "range noise LUT"),
            "s1_noise_floor": SIGMA0_FLOOR,
            "s1_border_noise": self.border_method,
            "s1_calibration": "sigmaNought LUT -> sigma0",
            "s1_radiometry": "sigma0",
            "s1_geocoding": ("Range-Doppler terrain correction with DEM" if self.dem is not None
                             else "Range-Doppler on the geolocation grid's ellipsoid heights (no DEM)"),
            "s1_orbit": self.orbit.source,
            "s1_terrain": "dem" if self.dem is not None else "none",
        }
        if window is not None:
            self.record["s1_measurement"] = (
                f"window of the image: {window[2]} x {window[3]} px at pixel {window[0]}, line "
                f"{window[1]} (fetched); the rest is no data")
        if self.dem is not None:
            self.record.update(self.dem.record())
        #: How this VV was made (recorded in the stack's preprocessing, compared with bundles').
        self.made = {"source": "grd", "radiometry": "sigma0",
                     "terrain": "dem" if self.dem is not None else "none"}
        log.info("Sentinel-1 %s (%s, IPF %.2f): %s; %s; orbit from %s", p.name, p.form, p.ipf,
                 self.record["s1_noise_removal"], self.record["s1_geocoding"], self.orbit.source)

    # -- geometry ---------------------------------------------------------------------------
    def _check_overlap(self) -> None:
        a = self.ann
        inv = Transformer.from_crs("EPSG:4326", CRS.from_wkt(self.grid.crs.to_wkt()),
                                   always_xy=True)
        x, y = inv.transform(a.grid_lon, a.grid_lat)
        g = self.grid.bounds
        if x.min() >= g.right or x.max() <= g.left or y.min() >= g.top or y.max() <= g.bottom:
            raise CRSError(
                f"--s1 {self.product.path} does not overlap the Sentinel-2 scene: S1 footprint "
                f"({x.min():.0f}, {y.min():.0f}, {x.max():.0f}, {y.max():.0f}) vs S2 extent "
                f"({g.left:.0f}, {g.bottom:.0f}, {g.right:.0f}, {g.top:.0f}) (left, bottom, "
                f"right, top in {self.grid.crs.to_string()}); pass the Sentinel-1 product of the "
                "same area"
            )

    def positions(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Image line and pixel (float32, pixel-centre coordinates) of every pixel of ``window``.

        float32 resolves 0.002 px at the far end of a 26000-sample line: well inside the
        geolocation accuracy, and half the memory traffic of float64 per pixel.
        """
        L = LATTICE
        h, w = int(window.height), int(window.width)
        r0, c0 = int(window.row_off), int(window.col_off)
        lr0, lc0 = (r0 // L) * L, (c0 // L) * L
        nr = (r0 + h - 1 - lr0) // L + 2
        nc = (c0 + w - 1 - lc0) // L + 2
        rows = lr0 + L * np.arange(nr, dtype=np.float64) + 0.5
        cols = lc0 + L * np.arange(nc, dtype=np.float64) + 0.5
        T = self.grid.transform
        cc, rr = np.meshgrid(cols, rows)
        lon, lat = self._lonlat.transform(T.c + T.a * cc + T.b * rr, T.f + T.d * cc + T.e * rr)
        lon, lat = np.asarray(lon), np.asarray(lat)
        nodes = [self.rd.line_pixel_geodetic(lon, lat, np.full(lon.shape, hk)) for hk in HEIGHTS]
        lk = [n[0] for n in nodes]
        pk = [n[1] for n in nodes]

        # bilinear from the lattice, separably: along columns on the node rows, then along rows
        pr = np.arange(r0, r0 + h)
        pc = np.arange(c0, c0 + w)
        ir, fr = (pr - lr0) // L, (((pr - lr0) % L) / L).astype(np.float32)[:, None]
        ic, fc = (pc - lc0) // L, (((pc - lc0) % L) / L)[None, :]
        one = np.float32(1.0)

        def lerp(v: np.ndarray) -> np.ndarray:
            cols_ = (v[:, ic] * (1 - fc) + v[:, ic + 1] * fc).astype(np.float32)  # (nr, w)
            return cols_[ir] * (one - fr) + cols_[ir + 1] * fr

        if self.dem is None:
            # nodes at the geolocation grid's height where they fall (refined twice), solved
            # exactly there; pixels interpolate the nodes
            hn = np.zeros(lon.shape)
            for _ in range(2):
                hn = self.grid_heights(lagrange3(hn, HEIGHTS, *lk), lagrange3(hn, HEIGHTS, *pk))
            ln, pn = self.rd.line_pixel_geodetic(lon, lat, hn)
            return lerp(ln), lerp(pn)
        und = self.dem.undulation(lon, lat)
        hp = self.dem.heights(window, None if und is None else lerp(und))
        u = ((hp - HEIGHTS[1]) / 1000.0).astype(np.float32)
        out = []
        for vk in (lk, pk):
            a, b, c = (lerp(q) for q in quadratic_in_height(HEIGHTS, *vk))
            out.append(a + u * (b + u * c))
        return out[0], out[1]

    # -- radiometry -------------------------------------------------------------------------
    def _border_rows(self, r0: int, r1: int) -> np.ndarray:
        b = self._border
        assert b is not None
        todo = np.flatnonzero(b[r0:r1, 0] == -2) + r0
        while todo.size:
            s = int(todo[0])
            e = min(s + _BORDER_CHUNK, self.ann.lines)
            dn = self._read_dn(s, e, 0, self.ann.samples)
            noise = self.radiometry.noise_window(np.arange(s, e, dtype=np.float64),
                                                 np.arange(self.ann.samples, dtype=np.float64))
            for k in range(e - s):
                b[s + k] = border_bounds(dn[k], noise[k])
            todo = todo[todo >= e]
        return b[r0:r1]

    def _read_dn(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """DN of image lines r0:r1, pixels c0:c1; 0 (no data) where a fetched window has none."""
        dr, dc = self.offset
        h, w = self.ds.height, self.ds.width
        if (dr, dc) == (0, 0) and r1 <= h and c1 <= w:
            return read_checked(self.ds, "--s1", 1, window=Window(c0, r0, c1 - c0, r1 - r0))
        out = np.zeros((r1 - r0, c1 - c0), dtype=self.ds.dtypes[0])
        fr0, fr1 = max(r0 - dr, 0), min(r1 - dr, h)
        fc0, fc1 = max(c0 - dc, 0), min(c1 - dc, w)
        if fr1 > fr0 and fc1 > fc0:
            out[fr0 + dr - r0:fr1 + dr - r0, fc0 + dc - c0:fc1 + dc - c0] = read_checked(
                self.ds, "--s1", 1, window=Window(fc0, fr0, fc1 - fc0, fr1 - fr0))
        return out

    def sigma0_window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Noise-removed sigma0 (float32, NaN nodata) of image lines r0:r1, pixels c0:c1."""
        dn = self._read_dn(r0, r1, c0, c1)
        border = self._border_rows(r0, r1) if self._border is not None else None
        return self.radiometry.calibrate(dn, r0, c0, border)

    def read_power(self, window: Window) -> np.ndarray:
        """sigma0 VV in linear power on ``window`` of the S2 grid: float32 (h, w), NaN nodata."""
        h, w = int(window.height), int(window.width)
        line, pixel = self.positions(window)
        ok = np.isfinite(line) & np.isfinite(pixel)
        ok &= (line > -1) & (line < self.ann.lines) & (pixel > -1) & (pixel < self.ann.samples)
        if not ok.any():
            return np.full((h, w), np.nan, dtype=np.float32)
        r0 = max(0, int(np.floor(line[ok].min())))
        r1 = min(self.ann.lines, int(np.floor(line[ok].max())) + 2)
        c0 = max(0, int(np.floor(pixel[ok].min())))
        c1 = min(self.ann.samples, int(np.floor(pixel[ok].max())) + 2)
        s0 = self.sigma0_window(r0, r1, c0, c1)
        return sample_bilinear(s0, np.where(ok, line - r0, np.nan), np.where(ok, pixel - c0, np.nan))

    def close(self) -> None:
        if getattr(self, "ds", None) is not None:
            self.ds.close()
        if self.dem is not None:
            self.dem.close()


def measurement_window(tags: dict[str, str], width: int, height: int,
                       ann: Any) -> tuple[int, int, int, int] | None:
    """Where a fetched measurement lies in the product image, from its tags; None for a whole one.

    Returns:
        ``(col_off, row_off, width, height)`` in the full image.

    Raises:
        InputError: the tags are malformed or disagree with the file or the annotation.
    """
    if SIZE_TAG not in tags:
        return None
    try:
        full = tuple(int(v) for v in tags[SIZE_TAG].split(","))
        win = tuple(int(v) for v in tags.get(WINDOW_TAG, "").split(","))
    except ValueError:
        full, win = (), ()
    if len(full) != 2 or len(win) != 4:
        raise InputError(f"the measurement's {SIZE_TAG} / {WINDOW_TAG} tags are malformed "
                         f"({tags.get(SIZE_TAG)!r}, {tags.get(WINDOW_TAG)!r}); fetch the product again")
    c, r, w, h = win
    if full != (ann.samples, ann.lines) or (w, h) != (width, height) or c < 0 or r < 0 \
            or c + w > ann.samples or r + h > ann.lines:
        raise InputError(f"the measurement is a {width} x {height} px window at pixel {c}, line {r} "
                         f"of a {full[0]} x {full[1]} image ({WINDOW_TAG}={tags.get(WINDOW_TAG)}), "
                         f"but the annotation describes {ann.samples} x {ann.lines}; the fetched "
                         "product is inconsistent: fetch it again")
    return c, r, w, h


def sample_bilinear(src: np.ndarray, qr: np.ndarray, qc: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``src`` at pixel-centre coordinates (``qr``, ``qc``); NaN positions -> NaN.

    The same rule as every other Sentinel-1 input (:func:`..warp._bilinear`: NaN or outside
    neighbours get no weight, the others are renormalised, a point more than half a pixel
    outside is NaN), computed in two passes: a plain four-neighbour interpolation in float32
    for all points, then :func:`..warp._bilinear` again only where that met a NaN neighbour --
    the border of the swath, a few pixels per block. Per point the arithmetic depends only on
    its neighbours and position, so windows stay exact.
    """
    sh, sw = src.shape
    finite = np.isfinite(qr) & np.isfinite(qc)
    inside = finite & (qr >= -0.5) & (qr <= sh - 0.5) & (qc >= -0.5) & (qc <= sw - 0.5)
    out = np.full(qr.shape, np.nan, dtype=np.float32)
    if not inside.any():
        return out
    pad = np.full((sh + 1, sw + 1), np.nan, dtype=np.float32)
    pad[:sh, :sw] = src
    pad[sh, :sw] = src[sh - 1]  # points within half a pixel of the last row/column
    pad[:sh, sw] = src[:, sw - 1]
    pad[sh, sw] = src[sh - 1, sw - 1]
    flat = pad.ravel()
    r = np.where(inside, qr, 0.0)
    c = np.where(inside, qc, 0.0)
    i0 = np.clip(np.floor(r), 0, sh - 1).astype(np.int64)
    j0 = np.clip(np.floor(c), 0, sw - 1).astype(np.int64)
    ty = np.clip(r - i0, 0.0, 1.0).astype(np.float32)
    tx = np.clip(c - j0, 0.0, 1.0).astype(np.float32)
    k = i0 * (sw + 1) + j0
    one = np.float32(1.0)
    top = flat.take(k) * (one - tx) + flat.take(k + 1) * tx
    bot = flat.take(k + sw + 1) * (one - tx) + flat.take(k + sw + 2) * tx
    v = top * (one - ty) + bot * ty
    np.copyto(out, v, where=inside)
    redo = inside & np.isnan(out)
    if redo.any():
        out[redo] = _bilinear(src, qr[redo][None, :], qc[redo][None, :])[0]
    return out
