"""Reading rasters onto the Sentinel-2 grid (runtime/preprocess/warp.py), against hand-worked numbers.

Every expectation is worked out here independently of the module: index arithmetic for crops,
the closed form of a linear function for bilinear interpolation (bilinear interpolation of a
linear function is exact, so the value at a target pixel centre is the function at that centre),
``floor`` of the exact source position for nearest, and pyproj's exact transformation for the
positions across a CRS change. The only module-against-module comparison is the stated property
that a window gives the same values as the whole-grid read, bit for bit.

Geometry used throughout: the target is a 10 m UTM 50S grid with its origin at (300000, 9700000)
(``DEFAULT_TRANSFORM``); source positions are written as offsets from that origin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.preprocess.warp import (
    _aligned,
    _bilinear,
    _bilinear_separable,
    _nearest,
    read_onto_grid,
    source_bounds_in,
    source_georef,
)
from coalmine.runtime.raster import Grid
from factories import DEFAULT_TRANSFORM, UTM50S
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

X0, Y0 = DEFAULT_TRANSFORM.c, DEFAULT_TRANSFORM.f  # 300000, 9700000
WGS84 = CRS.from_epsg(4326)
N = 40  # target grid side (pixels) for the warping tests
GRID = Grid(UTM50S, DEFAULT_TRANSFORM, N, N)
FULL = Window(0, 0, N, N)
#: windows that start off the 16-pixel lattice and off each other, for the invariance checks
#: (the second ends on lattice column 32 and row 16)
WINDOWS = [Window(5, 7, 13, 11), Window(3, 5, 30, 12), Window(17, 3, 23, 30), Window(0, 33, 40, 7),
           Window(31, 0, 9, 40)]


def write(path: Path, a: np.ndarray, *, crs: CRS | None = UTM50S, transform: Affine | None = None,
          gcps: list[GroundControlPoint] | None = None, nodata: float | None = None) -> Path:
    """Write the single band ``a`` georeferenced by ``transform`` or by ``gcps`` (in ``crs``)."""
    prof = {"driver": "GTiff", "dtype": a.dtype.name, "count": 1, "height": a.shape[0],
            "width": a.shape[1], "nodata": nodata}
    if gcps is None:
        prof.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(a, 1)
        if gcps is not None:
            ds.gcps = (gcps, crs)
    return path


def read(path: Path, window: Window = FULL, resampling: Resampling = Resampling.bilinear,
         grid: Grid = GRID, **kw: object) -> np.ndarray:
    with rasterio.open(path) as ds:
        return read_onto_grid(ds, 1, grid, window, resampling, option="--test", **kw)


def centres(window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Target pixel centres (x, y) of ``window`` as (h, w) arrays, from the grid by hand."""
    cols = window.col_off + np.arange(window.width) + 0.5
    rows = window.row_off + np.arange(window.height) + 0.5
    xc, yc = np.meshgrid(X0 + 10.0 * cols, Y0 - 10.0 * rows)
    return xc, yc


def affine_gcps(x0: float, y0: float, res: float, h: int, w: int) -> list[GroundControlPoint]:
    """Nine GCPs of the north-up mapping x = x0 + res col, y = y0 - res row."""
    return [GroundControlPoint(row=r, col=c, x=x0 + res * c, y=y0 - res * r)
            for r in (0, h / 2, h) for c in (0, w / 2, w)]


def bilinear_expected(qr: np.ndarray, qc: np.ndarray, h: int, w: int, f) -> np.ndarray:
    """What bilinear resampling with renormalised edges gives for a source whose pixel (r, c)
    holds ``f(r, c)``, ``f`` linear, at continuous pixel-centre coordinates (``qr``, ``qc``):
    inside the hull of the source centres ``f`` itself; within half a pixel outside it only the
    outermost row/column has weight, so ``f`` at the clamped position; beyond that NaN."""
    inside = (qr >= -0.5) & (qr <= h - 0.5) & (qc >= -0.5) & (qc <= w - 0.5)
    v = f(np.clip(qr, 0, h - 1), np.clip(qc, 0, w - 1))
    return np.where(inside, v, np.nan)


def near_edge(q: np.ndarray, n: int, tol: float) -> np.ndarray:
    """Positions within ``tol`` pixels of the source's outer edge (-0.5 or n - 0.5)."""
    return (np.abs(q + 0.5) < tol) | (np.abs(q - (n - 0.5)) < tol)


# -- source_georef / source_bounds_in ----------------------------------------------------------

def test_source_georef_of_a_transform_and_of_gcps(tmp_path):
    t = Affine(20.0, 0.0, X0 + 40, 0.0, -20.0, Y0 - 60)
    p = write(tmp_path / "t.tif", np.zeros((3, 4), np.float32), transform=t)
    with rasterio.open(p) as ds:
        crs, st, gcps = source_georef(ds)
    assert crs == UTM50S and st == t and gcps == []

    g = affine_gcps(X0 + 7, Y0 - 9, 15.0, 3, 4)
    p = write(tmp_path / "g.tif", np.zeros((3, 4), np.float32), crs=WGS84, gcps=g)
    with rasterio.open(p) as ds:
        crs, st, gcps = source_georef(ds)
    assert crs == WGS84 and st is None
    assert [(q.row, q.col, q.x, q.y) for q in gcps] == [(q.row, q.col, q.x, q.y) for q in g]


def test_source_georef_prefers_a_geotransform_to_gcps(tmp_path):
    # a VRT may carry both; GDAL's warper then uses the geotransform, and so does the module
    write(tmp_path / "b.tif", np.zeros((3, 4), np.float32), transform=DEFAULT_TRANSFORM)
    vrt = tmp_path / "both.vrt"
    vrt.write_text(f"""<VRTDataset rasterXSize="4" rasterYSize="3">
  <SRS>EPSG:32750</SRS>
  <GeoTransform>{X0}, 10, 0, {Y0}, 0, -10</GeoTransform>
  <GCPList Projection="EPSG:4326">
    <GCP Id="1" Pixel="0" Line="0" X="115.0" Y="-2.0"/>
    <GCP Id="2" Pixel="4" Line="0" X="115.1" Y="-2.0"/>
    <GCP Id="3" Pixel="0" Line="3" X="115.0" Y="-2.1"/>
  </GCPList>
  <VRTRasterBand dataType="Float32" band="1"><SimpleSource>
    <SourceFilename relativeToVRT="1">b.tif</SourceFilename><SourceBand>1</SourceBand>
  </SimpleSource></VRTRasterBand>
</VRTDataset>
""")
    with rasterio.open(vrt) as ds:
        assert len(ds.gcps[0]) == 3  # the GCPs are there
        assert source_georef(ds) == (UTM50S, DEFAULT_TRANSFORM, [])


def test_source_bounds_in_the_same_crs_are_the_rasters_bounds(tmp_path):
    # 4 x 3 pixels of 20 m from (40, -60): x 40..120, y -60..-120 (offsets from the origin)
    t = Affine(20.0, 0.0, X0 + 40, 0.0, -20.0, Y0 - 60)
    p = write(tmp_path / "t.tif", np.zeros((3, 4), np.float32), transform=t)
    with rasterio.open(p) as ds:
        b = source_bounds_in(ds, UTM50S)
    assert tuple(b) == (X0 + 40, Y0 - 120, X0 + 120, Y0 - 60)


def test_source_bounds_of_a_gcp_raster_are_the_gcps_extent(tmp_path):
    g = [GroundControlPoint(row=0, col=0, x=X0 + 50, y=Y0 - 20),
         GroundControlPoint(row=0, col=9, x=X0 + 140, y=Y0 - 25),
         GroundControlPoint(row=7, col=0, x=X0 + 45, y=Y0 - 90),
         GroundControlPoint(row=7, col=9, x=X0 + 135, y=Y0 - 95)]
    p = write(tmp_path / "g.tif", np.zeros((7, 9), np.float32), gcps=g)
    with rasterio.open(p) as ds:
        b = source_bounds_in(ds, UTM50S)
    assert tuple(b) == (X0 + 45, Y0 - 95, X0 + 140, Y0 - 20)


@pytest.mark.parametrize("lon0,lat1,d,n,curve", [
    (115.20, -2.71, 0.0005, 20, 0.0),  # 0.01 deg near the grid: edges straight to < 1 mm
    (116.0, -2.0, 0.05, 40, 30.0),  # 2 deg across the central meridian 117 E: the northern edge
])                                  # bulges ~34 m beyond the corners in UTM
def test_source_bounds_across_a_crs_change_match_pyproj(tmp_path, lon0, lat1, d, n, curve):
    # the extent in UTM 50S of an EPSG:4326 square, from pyproj on 10001 points per edge
    p = write(tmp_path / "geo.tif", np.zeros((n, n), np.float32), crs=WGS84,
              transform=Affine(d, 0.0, lon0, 0.0, -d, lat1))
    lon1, lat0 = lon0 + n * d, lat1 - n * d
    s = np.linspace(0.0, 1.0, 10001)
    lon = np.concatenate([lon0 + (lon1 - lon0) * s, np.full_like(s, lon1),
                          lon1 - (lon1 - lon0) * s, np.full_like(s, lon0)])
    lat = np.concatenate([np.full_like(s, lat1), lat1 - (lat1 - lat0) * s,
                          np.full_like(s, lat0), lat0 + (lat1 - lat0) * s])
    x, y = Transformer.from_crs(WGS84, UTM50S, always_xy=True).transform(lon, lat)
    with rasterio.open(p) as ds:
        b = source_bounds_in(ds, UTM50S)
    # 21 points per edge follow the bulge to well under a metre
    np.testing.assert_allclose(tuple(b), (x.min(), y.min(), x.max(), y.max()), rtol=0, atol=0.5)
    # the corners alone miss the bulge (so the check above can tell)
    corners = y[[0, 10000, 20001, 30002]]
    assert y.max() - corners.max() >= curve


# -- read_onto_grid: same grid (a crop) -------------------------------------------------------

@pytest.mark.parametrize("window", [Window(0, 0, 14, 12), Window(6, 4, 10, 15), Window(9, 8, 11, 9)])
def test_same_grid_is_a_plain_crop(tmp_path, window):
    # source on the same 10 m lattice, its pixel (0, 0) at target (row 2, col 3), 11 x 15 pixels
    src = (1000 + np.arange(11 * 15)).reshape(11, 15).astype(np.float32)
    p = write(tmp_path / "s.tif", src, transform=Affine(10.0, 0.0, X0 + 30, 0.0, -10.0, Y0 - 20))
    out = read(p, window, grid=Grid(UTM50S, DEFAULT_TRANSFORM, 30, 30))
    exp = np.full((window.height, window.width), np.nan, np.float32)
    for i in range(window.height):
        for j in range(window.width):
            r, c = window.row_off + i - 2, window.col_off + j - 3
            if 0 <= r < 11 and 0 <= c < 15:
                exp[i, j] = src[r, c]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, exp)


def test_nodata_becomes_nan_and_src_nodata_overrides_it(tmp_path):
    a = np.array([[0, 5, 7], [9, 0, 5]], np.uint16)
    p = write(tmp_path / "n.tif", a, transform=DEFAULT_TRANSFORM, nodata=0)
    w = Window(0, 0, 3, 2)
    np.testing.assert_array_equal(read(p, w), [[np.nan, 5, 7], [9, np.nan, 5]])
    np.testing.assert_array_equal(read(p, w, src_nodata=5), [[0, np.nan, 7], [9, 0, np.nan]])


def test_a_grid_off_by_rounding_is_cropped_not_interpolated(tmp_path):
    # 1e-7 px off the target lattice is rounding: the pixels are taken as they are. Interpolating
    # would put 1e-7 of a neighbour's weight into each pixel, and fill the nodata pixel (1, 1)
    # with its neighbour's value after renormalisation.
    a = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0], [7.0, 8.0, 9.0]], np.float32) * 1e6
    p = write(tmp_path / "r.tif", a, transform=Affine(10.0, 0.0, X0 - 1e-6, 0.0, -10.0, Y0 + 1e-6))
    np.testing.assert_array_equal(read(p, Window(0, 0, 3, 3)), a)


def test_a_nan_nodata_is_left_alone(tmp_path):
    a = np.array([[np.nan, 0.0, 7.5], [-1.0, np.nan, 2.0]], np.float32)
    p = write(tmp_path / "n.tif", a, transform=DEFAULT_TRANSFORM, nodata=float("nan"))
    np.testing.assert_array_equal(read(p, Window(0, 0, 3, 2)), a)


def test_convert_is_applied_before_interpolation(tmp_path):
    # 20 m dB pixels 0 and 10 with centres at x = 5 and 25: the 10 m centres x = 5, 15, 25, 35, 45
    # sit at source column 0, half way, 1, half a pixel past the last centre, beyond the edge.
    db = np.array([[0.0, 10.0]] * 3, np.float32)
    p = write(tmp_path / "db.tif", db, transform=Affine(20.0, 0.0, X0 - 5, 0.0, -20.0, Y0))
    w = Window(0, 0, 5, 2)
    power = read(p, w, convert=lambda a: 10 ** (a / 10))
    # mean of the powers 1 and 10, not 10 ** 0.5 (the mean of the dB values converted)
    np.testing.assert_allclose(power, [[1.0, 5.5, 10.0, 10.0, np.nan]] * 2, rtol=1e-6)
    np.testing.assert_allclose(read(p, w), [[0.0, 5.0, 10.0, 10.0, np.nan]] * 2, rtol=1e-6)


# -- read_onto_grid: same CRS, other grid --------------------------------------------------------

# 20 m source, 14 rows x 15 columns, its top-left corner at (33, -33) from the target origin: centres
# at x = 43 + 20 c (43..323), y = -43 - 20 r (-43..-303), edges 2 m or more away from any 10 m
# centre; target pixels lie beyond each of its edges.
SX0, SY0, SRES, SH, SW = X0 + 33, Y0 - 33, 20.0, 14, 15
SHIFTED = Affine(SRES, 0.0, SX0, 0.0, -SRES, SY0)


def plane(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A linear function of the map position (x, y offsets from the target origin)."""
    return 0.5 * (x - X0) - 0.25 * (y - Y0) + 7.0


@pytest.mark.parametrize("window", [FULL, Window(2, 3, 17, 19), Window(20, 21, 20, 19)])
def test_same_crs_bilinear_of_a_plane_is_the_plane(tmp_path, window):
    c, r = np.meshgrid(np.arange(SW), np.arange(SH))
    src = plane(SX0 + SRES * (c + 0.5), SY0 - SRES * (r + 0.5)).astype(np.float32)
    p = write(tmp_path / "p.tif", src, transform=SHIFTED)
    out = read(p, window)
    xc, yc = centres(window)
    qc = (xc - SX0) / SRES - 0.5
    qr = (SY0 - yc) / SRES - 0.5
    exp = bilinear_expected(qr, qc, SH, SW,
                            lambda r, c: plane(SX0 + SRES * (c + 0.5), SY0 - SRES * (r + 0.5)))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), np.isnan(exp))
    np.testing.assert_allclose(out, exp, rtol=0, atol=1e-4)  # float32 values up to ~250


@pytest.mark.parametrize("b,d", [(5.0, 0.0), (0.0, 5.0)])
def test_same_crs_sheared_source_bilinear_is_the_plane_inside(tmp_path, b, d):
    # x = x0 + 20 col + b row, y = y0 + d col - 20 row: not axis-aligned, so GDAL's warper
    # resamples (the separable shortcut would ignore the shear)
    t = Affine(SRES, b, SX0, d, -SRES, SY0)
    c, r = np.meshgrid(np.arange(SW) + 0.5, np.arange(SH) + 0.5)
    src = plane(SX0 + SRES * c + b * r, SY0 + d * c - SRES * r).astype(np.float32)
    p = write(tmp_path / "s.tif", src, transform=t)
    out = read(p)
    xc, yc = centres(FULL)
    dx, dy = xc - SX0, yc - SY0
    det = -SRES * SRES - b * d
    col = (-SRES * dx - b * dy) / det
    row = (SRES * dy - d * dx) / det
    # one pixel or more inside the hull of the centres (GDAL's own rule at the edges)
    inner = (row >= 1.5) & (row <= SH - 1.5) & (col >= 1.5) & (col <= SW - 1.5)
    assert inner.sum() > 300
    np.testing.assert_allclose(out[inner], plane(xc, yc)[inner], rtol=0, atol=1e-3)
    assert np.isnan(out[(row < -0.5) | (col < -0.5) | (row > SH + 0.5) | (col > SW + 0.5)]).all()


@pytest.mark.parametrize("window", [FULL, Window(20, 21, 20, 19)])  # the second: 5 px into the source
def test_same_crs_nearest_on_a_shifted_grid_takes_the_pixel_holding_the_centre(tmp_path, window):
    ids = np.arange(SH * SW, dtype=np.float32).reshape(SH, SW)
    p = write(tmp_path / "ids.tif", ids, transform=SHIFTED)
    out = read(p, window, Resampling.nearest)
    xc, yc = centres(window)
    j = np.floor((xc - SX0) / SRES).astype(int)
    i = np.floor((SY0 - yc) / SRES).astype(int)
    inside = (i >= 0) & (i < SH) & (j >= 0) & (j < SW)
    exp = np.where(inside, i * SW + j, np.nan)
    np.testing.assert_array_equal(out, exp)


@pytest.mark.parametrize("where", ["east", "north-west"])
@pytest.mark.parametrize("kind", ["transform", "geographic", "gcps"])
def test_a_window_the_source_does_not_reach_is_all_nan(tmp_path, where, kind):
    # the source lies 5 km away from the 40 x 40 target window
    dx, dy = (5000.0, 0.0) if where == "east" else (-5000.0, 5000.0)
    a = np.ones((10, 10), np.float32)
    if kind == "transform":
        p = write(tmp_path / "s.tif", a, transform=Affine(10.0, 0.0, X0 + dx, 0.0, -10.0, Y0 + dy))
    elif kind == "gcps":
        p = write(tmp_path / "s.tif", a, gcps=affine_gcps(X0 + dx, Y0 + dy, 10.0, 10, 10))
    else:
        lon, lat = Transformer.from_crs(UTM50S, WGS84, always_xy=True).transform(X0 + dx, Y0 + dy)
        p = write(tmp_path / "s.tif", a, crs=WGS84, transform=Affine(1e-4, 0.0, lon, 0.0, -1e-4, lat))
    out = read(p)
    assert out.shape == (N, N) and out.dtype == np.float32
    assert np.isnan(out).all()


# -- read_onto_grid: another CRS, GCPs -----------------------------------------------------------

# A 14 x 14 EPSG:4326 source of 0.0002 deg (~22 m) pixels whose top-left corner is at target
# (80, -80) m: it covers the middle of the 400 m target, with target pixels beyond each edge.
GEO_D, GEO_N = 0.0002, 14
TO_GEO = Transformer.from_crs(UTM50S, WGS84, always_xy=True)
GEO_LON0, GEO_LAT1 = TO_GEO.transform(X0 + 80, Y0 - 80)


def geo_source(tmp_path: Path, values: np.ndarray) -> Path:
    return write(tmp_path / "geo.tif", values, crs=WGS84,
                 transform=Affine(GEO_D, 0.0, GEO_LON0, 0.0, -GEO_D, GEO_LAT1))


def geo_positions(window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Exact source pixel-corner coordinates (row, col) of the target centres, by pyproj."""
    xc, yc = centres(window)
    lon, lat = TO_GEO.transform(xc, yc)
    return (GEO_LAT1 - lat) / GEO_D, (lon - GEO_LON0) / GEO_D


def ramp(r, c):
    """Source value at pixel-centre coordinates (r, c): linear in lon/lat."""
    return 3.0 * c + 2.0 * r + 1.0


#: Tolerance of the other-CRS checks, in source pixels. The module evaluates the exact
#: UTM -> geographic transformation every 16 target pixels (160 m) and interpolates linearly in
#: between; the projection's curvature over 160 m moves a position by well under a millimetre
#: (< 5e-5 of a 22 m pixel), and float32 values near 60 carry ~4e-6. 1e-3 px (~2 cm) bounds both
#: with room and is still 500 times finer than half a pixel.
GEO_TOL = 1e-3


def test_other_crs_bilinear_of_a_lon_lat_plane_is_the_plane_at_pyprojs_position(tmp_path):
    c, r = np.meshgrid(np.arange(GEO_N), np.arange(GEO_N))
    p = geo_source(tmp_path, ramp(r, c).astype(np.float32))
    out = read(p)
    row, col = geo_positions(FULL)
    qr, qc = row - 0.5, col - 0.5
    exp = bilinear_expected(qr, qc, GEO_N, GEO_N, ramp)
    check = ~(near_edge(qr, GEO_N, GEO_TOL) | near_edge(qc, GEO_N, GEO_TOL))
    assert check.mean() > 0.95 and np.isfinite(exp[check]).sum() > 300
    assert (np.isnan(exp) & check).sum() > 300  # the NaN surround is checked too
    np.testing.assert_array_equal(np.isnan(out[check]), np.isnan(exp[check]))
    np.testing.assert_allclose(out[check], exp[check], rtol=0, atol=5 * GEO_TOL)  # slope <= 3 + 2


def test_other_crs_rotated_source_bilinear(tmp_path):
    # the geographic source rotated by 20 degrees: position from the inverse of its geotransform
    th = np.radians(20.0)
    a, b = GEO_D * np.cos(th), GEO_D * np.sin(th)
    d, e = GEO_D * np.sin(th), -GEO_D * np.cos(th)
    c, r = np.meshgrid(np.arange(GEO_N), np.arange(GEO_N))
    p = write(tmp_path / "rot.tif", ramp(r, c).astype(np.float32), crs=WGS84,
              transform=Affine(a, b, GEO_LON0, d, e, GEO_LAT1))
    out = read(p)
    xc, yc = centres(FULL)
    lon, lat = TO_GEO.transform(xc, yc)
    dx, dy = lon - GEO_LON0, lat - GEO_LAT1
    det = a * e - b * d
    qc = (e * dx - b * dy) / det - 0.5
    qr = (a * dy - d * dx) / det - 0.5
    exp = bilinear_expected(qr, qc, GEO_N, GEO_N, ramp)
    check = ~(near_edge(qr, GEO_N, GEO_TOL) | near_edge(qc, GEO_N, GEO_TOL))
    assert np.isfinite(exp[check]).sum() > 300 and np.isnan(exp[check]).sum() > 300
    np.testing.assert_array_equal(np.isnan(out[check]), np.isnan(exp[check]))
    np.testing.assert_allclose(out[check], exp[check], rtol=0, atol=5 * GEO_TOL)


def test_other_crs_nearest_takes_the_pixel_holding_pyprojs_position(tmp_path):
    ids = np.arange(GEO_N * GEO_N, dtype=np.float32).reshape(GEO_N, GEO_N)
    p = geo_source(tmp_path, ids)
    out = read(p, resampling=Resampling.nearest)
    row, col = geo_positions(FULL)
    i, j = np.floor(row).astype(int), np.floor(col).astype(int)
    inside = (i >= 0) & (i < GEO_N) & (j >= 0) & (j < GEO_N)
    exp = np.where(inside, i * GEO_N + j, np.nan)
    # positions within GEO_TOL of a pixel edge could fall either side
    clear = (np.abs(row - np.round(row)) > GEO_TOL) & (np.abs(col - np.round(col)) > GEO_TOL)
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(out[clear], exp[clear])


# 15 m GCP source in UTM 50S, 18 rows x 20 columns, top-left corner at (47, -39): nine GCPs on
# the exact affine mapping, so the GCP polynomial reproduces it up to rounding.
GX0, GY0, GRES, GH, GW = X0 + 47, Y0 - 39, 15.0, 18, 20


def gcp_source(tmp_path: Path, values: np.ndarray) -> Path:
    return write(tmp_path / "gcp.tif", values, gcps=affine_gcps(GX0, GY0, GRES, GH, GW))


@pytest.mark.parametrize("window", [FULL, Window(9, 14, 20, 21)])
def test_gcp_bilinear_of_a_plane_is_the_plane(tmp_path, window):
    c, r = np.meshgrid(np.arange(GW), np.arange(GH))
    p = gcp_source(tmp_path, ramp(r, c).astype(np.float32))
    out = read(p, window)
    xc, yc = centres(window)
    qc = (xc - GX0) / GRES - 0.5
    qr = (GY0 - yc) / GRES - 0.5
    exp = bilinear_expected(qr, qc, GH, GW, ramp)
    assert np.isfinite(exp).sum() > 100 and np.isnan(exp).sum() > 20
    np.testing.assert_array_equal(np.isnan(out), np.isnan(exp))
    np.testing.assert_allclose(out, exp, rtol=0, atol=1e-4)  # the GCP fit is exact to rounding


def test_gcp_cubic_goes_through_gdal_with_the_gcps_of_the_source_window(tmp_path):
    # cubic convolution reproduces a plane too. A 40 x 40 GCP source on an 80 x 80 grid, read in
    # a window that starts 4-5 source pixels into it: the GCPs handed to GDAL must be shifted by
    # exactly the source window's offset.
    h = 40
    c, r = np.meshgrid(np.arange(h), np.arange(h))
    p = write(tmp_path / "big.tif", ramp(r, c).astype(np.float32), gcps=affine_gcps(GX0, GY0, GRES, h, h))
    w = Window(30, 30, 20, 20)
    out = read(p, w, Resampling.cubic, grid=Grid(UTM50S, DEFAULT_TRANSFORM, 80, 80))
    xc, yc = centres(w)
    qc = (xc - GX0) / GRES - 0.5
    qr = (GY0 - yc) / GRES - 0.5
    inner = (qr >= 2) & (qr <= h - 3) & (qc >= 2) & (qc <= h - 3)
    assert inner.all()
    np.testing.assert_allclose(out[inner], ramp(qr, qc)[inner], rtol=0, atol=1e-3)


def curved_gcps() -> list[GroundControlPoint]:
    """Sixteen GCPs of a mapping bent by 2 (row - 9)^2 m in x (up to 162 m): GDAL fits a
    second-order polynomial, and the affine approximation is off by up to ~6 source pixels."""
    return [GroundControlPoint(row=r, col=c, x=GX0 + GRES * c + 2.0 * (r - 9) ** 2, y=GY0 - GRES * r)
            for r in (0, 6, 12, 18) for c in (0, 7, 14, 20)]


@pytest.mark.parametrize("kind", ["geographic", "gcps", "curved gcps"])
@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.nearest])
def test_any_window_gives_the_whole_grid_values_bit_for_bit(tmp_path, kind, resampling):
    if kind == "geographic":
        v = np.random.default_rng(1).random((GEO_N, GEO_N)).astype(np.float32)
        p = geo_source(tmp_path, v)
    elif kind == "gcps":
        v = np.random.default_rng(2).random((GH, GW)).astype(np.float32)
        p = gcp_source(tmp_path, v)
    else:
        v = np.random.default_rng(3).random((GH, GW)).astype(np.float32)
        p = write(tmp_path / "curved.tif", v, gcps=curved_gcps())
    whole = read(p, resampling=resampling)
    assert np.isfinite(whole).sum() > 300
    for w in WINDOWS:
        part = read(p, w, resampling)
        np.testing.assert_array_equal(
            part, whole[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width], err_msg=str(w))


# -- _aligned ---------------------------------------------------------------------------------

#: origin off the multiples of the pixel size, so sums of origins are not whole pixels
TX, TY = X0 + 3, Y0 - 4
T = Affine(10.0, 0.0, TX, 0.0, -10.0, TY)


@pytest.mark.parametrize("b,expected", [
    (Affine(10.0, 0.0, TX + 30, 0.0, -10.0, TY - 20), True),  # 3 px right, 2 px down
    (Affine(10.0, 0.0, TX - 70, 0.0, -10.0, TY + 40), True),  # and the other way
    (Affine(10.0, 0.0, TX + 5, 0.0, -10.0, TY), False),  # half a pixel in x
    (Affine(10.0, 0.0, TX, 0.0, -10.0, TY - 25), False),  # two and a half pixels in y
    (Affine(10.0, 0.0, TX + 0.1, 0.0, -10.0, TY), False),  # 0.01 px: a real shift
    (Affine(10.0, 0.0, TX + 1e-6, 0.0, -10.0, TY - 1e-6), True),  # 1e-7 px: rounding
    (Affine(20.0, 0.0, TX, 0.0, -20.0, TY), False),  # another pixel size
    (Affine(10.0, 0.0, TX, 0.0, -20.0, TY), False),  # another pixel height only
    (Affine(20.0, 0.0, TX, 0.0, -10.0, TY), False),  # another pixel width only
])
def test_aligned_by_hand(b, expected):
    assert _aligned(T, b) is expected
    assert _aligned(b, T) is expected


@pytest.mark.parametrize("rot", [Affine(10.0, 1.0, TX, 0.0, -10.0, TY),
                                 Affine(10.0, 0.0, TX, 1.0, -10.0, TY)])
def test_aligned_refuses_rotated_transforms(rot):
    # same pixel size and origin: only the rotation terms say no
    assert _aligned(rot, T) is False
    assert _aligned(T, rot) is False
    assert _aligned(rot, rot) is False


# -- _nearest -----------------------------------------------------------------------------------

SRC23 = np.array([[10, 11, 12], [20, 21, 22]], np.float32)


@pytest.mark.parametrize("qr,qc,expected", [
    (0.0, -0.5, 10),  # the left edge of pixel 0 belongs to it
    (0.0, -0.51, np.nan),
    (0.0, 0.49, 10),
    (0.0, 0.5, 11),  # the edge between 0 and 1 belongs to 1
    (0.0, 2.49, 12),
    (0.0, 2.5, np.nan),  # right edge of the last pixel: outside
    (-0.5, 1.0, 11),
    (-0.51, 1.0, np.nan),
    (1.49, 1.0, 21),
    (1.5, 1.0, np.nan),
    (0.5, 0.0, 20),
])
def test_nearest_boundaries_by_hand(qr, qc, expected):
    out = _nearest(SRC23, np.array([[qr]]), np.array([[qc]]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[expected]])


# -- _bilinear_separable and _bilinear -----------------------------------------------------------

def separable(src: np.ndarray, qr: float, qc: float) -> np.ndarray:
    return _bilinear_separable(src, np.array([qr]), np.array([qc]))


def pointwise(src: np.ndarray, qr: float, qc: float) -> np.ndarray:
    return _bilinear(src, np.array([[qr]]), np.array([[qc]]))


SQ = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
NAN = float("nan")


@pytest.mark.parametrize("fn", [separable, pointwise], ids=["separable", "pointwise"])
@pytest.mark.parametrize("src,qr,qc,expected", [
    (SQ, 0.5, 0.5, 2.5),
    (SQ, 0.0, 0.25, 1.25),
    (SQ, 0.25, 0.0, 1.5),
    (SQ, 1.0, 1.0, 4.0),
    (SQ, 0.75, 0.5, 3.0),  # 2.5 + 0.25 * 2
    (SQ, -0.5, 0.0, 1.0),  # exactly half a pixel above the first centre: the edge value
    (SQ, 0.0, -0.5, 1.0),
    (SQ, -0.5, 0.5, 1.5),  # above the top row: the top row's interpolation
    (SQ, -0.25, 0.75, 1.75),
    (SQ, 0.5, -0.25, 2.0),  # left of the first column: the first column's interpolation
    (SQ, -0.51, 0.0, NAN),
    (SQ, 0.0, -0.51, NAN),
    (SQ, 1.5, 0.0, 3.0),  # sh - 0.5: still inside
    (SQ, 1.5, 0.5, 3.5),
    (SQ, 0.0, 1.5, 2.0),  # sw - 0.5
    (SQ, 1.25, 1.25, 4.0),
    (SQ, 1.51, 0.0, NAN),
    (SQ, 0.0, 1.51, NAN),
    (np.array([[1.0, NAN], [3.0, 4.0]], np.float32), 0.5, 0.5, (1 + 3 + 4) / 3),
    (np.array([[1.0, NAN], [3.0, 4.0]], np.float32), 0.0, 0.5, 1.0),
    (np.array([[NAN, NAN], [NAN, 4.0]], np.float32), 0.25, 0.25, 4.0),
    (np.full((2, 2), NAN, np.float32), 0.5, 0.5, NAN),
])
def test_bilinear_by_hand(fn, src, qr, qc, expected):
    out = fn(src, qr, qc)
    assert out.dtype == np.float32 and out.shape == (1, 1)
    np.testing.assert_allclose(out, [[expected]], rtol=1e-6)


def reference_bilinear(src: np.ndarray, qr: float, qc: float) -> float:
    """Textbook bilinear interpolation, for points inside the hull of the centres."""
    i, j = min(int(np.floor(qr)), src.shape[0] - 2), min(int(np.floor(qc)), src.shape[1] - 2)
    ty, tx = qr - i, qc - j
    return float((1 - ty) * ((1 - tx) * src[i, j] + tx * src[i, j + 1])
                 + ty * ((1 - tx) * src[i + 1, j] + tx * src[i + 1, j + 1]))


def test_bilinear_on_a_non_square_array_matches_the_textbook_formula():
    # 3 x 5, so rows and columns cannot be swapped unnoticed
    rng = np.random.default_rng(3)
    src = rng.random((3, 5)).astype(np.float32)
    qr = np.array([0.0, 0.3, 1.0, 1.7, 2.0])
    qc = np.array([0.0, 0.4, 1.5, 2.9, 3.2, 4.0])
    exp = np.array([[reference_bilinear(src, r, c) for c in qc] for r in qr])
    np.testing.assert_allclose(_bilinear_separable(src, qr, qc), exp, rtol=1e-6)
    rr, cc = np.meshgrid(qr, qc, indexing="ij")
    np.testing.assert_allclose(_bilinear(src, rr, cc), exp, rtol=1e-6)


def test_a_large_window_of_a_gcp_source_reads_every_source_pixel_it_needs(tmp_path):
    # The source window of a GCP raster is padded by a margin that grows with the window (a tenth
    # of it, plus 11 px): on a 300 px window every target pixel, up to the edges, still finds its
    # four source neighbours, so the plane comes back whole.
    h = w = 300
    c, r = np.meshgrid(np.arange(w), np.arange(h))
    p = write(tmp_path / "big.tif", ramp(r, c).astype(np.float32), gcps=affine_gcps(X0 + 5, Y0 - 5, 10.0, h, w))
    window = Window(0, 0, w, h)
    out = read(p, window, grid=Grid(UTM50S, DEFAULT_TRANSFORM, w, h))
    xc, yc = centres(window)
    qc = (xc - (X0 + 5)) / 10.0 - 0.5
    qr = ((Y0 - 5) - yc) / 10.0 - 0.5
    exp = bilinear_expected(qr, qc, h, w, ramp)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(exp))
    np.testing.assert_allclose(out, exp, rtol=0, atol=2e-3)


def test_pixels_without_a_valid_neighbour_are_nan_without_runtime_warnings():
    # nodata around a pixel: 0 / 0 must not reach numpy (its "invalid value" warning would be
    # printed for every block of a scene with a nodata border)
    import warnings

    src = np.full((3, 4), np.nan, np.float32)
    src[0, 0] = 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = _bilinear(src, np.array([[2.0, 0.0]]), np.array([[3.0, 0.0]]))
        b = _bilinear_separable(src, np.array([2.0, 0.0]), np.array([3.0, 0.0]))
    assert np.isnan(a[0, 0]) and a[0, 1] == 2.0
    assert np.isnan(b[0, 1]) and np.isnan(b[1, 0]) and b[1, 1] == 2.0


def test_gdals_warper_leaves_nan_source_pixels_out_of_bilinear(tmp_path):
    # A sheared source goes through GDAL's warper, told that NaN is nodata: a constant 5 with one
    # NaN pixel stays 5 everywhere except at the target centres that fall inside that pixel
    # (GDAL's rule), not a NaN smear over every target pixel whose neighbours include it.
    b = 5.0
    t = Affine(SRES, b, SX0, 0.0, -SRES, SY0)
    src = np.full((SH, SW), 5.0, np.float32)
    src[7, 7] = np.nan
    with_hole = read(write(tmp_path / "hole.tif", src, transform=t))
    whole = read(write(tmp_path / "whole.tif", np.full((SH, SW), 5.0, np.float32), transform=t))
    covered = np.isfinite(whole)
    assert covered.sum() > 400
    xc, yc = centres(FULL)  # source (row, col) of each target centre, by inverting x = x0 + 20 c + b r
    row = (SY0 - yc) / SRES
    col = (xc - SX0 - b * row) / SRES
    in_hole = (np.floor(row) == 7) & (np.floor(col) == 7)
    assert 2 <= in_hole.sum() <= 6
    np.testing.assert_array_equal(np.isnan(with_hole), ~covered | in_hole)
    np.testing.assert_allclose(with_hole[covered & ~in_hole], 5.0, rtol=1e-6)
