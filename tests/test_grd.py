"""Sentinel-1 GRD products read directly: geometry, radiometry, layouts, terrain, refusals.

Built on the real annotation/calibration/noise XML of an S1B IW GRDH product (../shared/realdata)
with generated measurements (tests/grd_factory.py); skipped with a reason where it is absent.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.errors import CRSError, InputError, InputNotFoundError
from coalmine.runtime.preprocess.s1grd import GrdReader, looks_like_s1_product
from coalmine.runtime.preprocess.s1grd.annotation import parse_annotation
from coalmine.runtime.preprocess.s1grd.geocoding import HEIGHTS, RangeDoppler, lagrange3
from coalmine.runtime.preprocess.s1grd.orbit import annotation_orbit
from coalmine.runtime.preprocess.s1grd.radiometry import SIGMA0_FLOOR
from grd_factory import SAFE_NAME, UTM, make_product, real_safe, s2_grid_over, smooth_sigma0
from rasterio.windows import Window

pytestmark = pytest.mark.realdata

#: The image window that holds data in the generated products, and the S2 grid's centre in it.
WIN = Window(12700, 7700, 700, 700)
CENTRE = (8050.0, 13050.0)
#: Recovery tolerance (dB), per pixel: DN rounding to integers changes sigma0 by at most
#: (DN + 1/4) / A^2 relative, 0.07 dB at the field's darkest (-18 dB, A ~ 600, N ~ 2000);
#: Range-Doppler positions differ from the generator's bilinear geolocation-grid positions by up
#: to 0.6 px (see test_range_doppler_reproduces_geolocation_grid), 0.08 dB on the field's
#: steepest slope (0.0126 dB/m); bilinear resampling of the smooth field adds < 0.01 dB.
TOL_DB = 0.25
#: Median tolerance: most pixels are far from the darkest/steepest places.
TOL_MEDIAN_DB = 0.05


def _truth(grid) -> np.ndarray:  # noqa: ANN001
    T = grid.transform
    xs = T.c + T.a * (np.arange(grid.width) + 0.5)
    ys = T.f + T.e * (np.arange(grid.height) + 0.5)
    X, Y = np.meshgrid(xs, ys)
    return smooth_sigma0(X, Y)


def _db_err(power: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return 10 * np.log10(power) - 10 * np.log10(truth)


@pytest.fixture(scope="module")
def ann(realdata: Path):
    f = next((real_safe(realdata) / "annotation").glob("s1b-*.xml"))
    return parse_annotation(f.read_bytes(), f.name)


@pytest.fixture(scope="module")
def product(realdata: Path, tmp_path_factory: pytest.TempPathFactory):
    return make_product(realdata, tmp_path_factory.mktemp("safe"), WIN)


@pytest.fixture(scope="module")
def grid(product):  # noqa: ANN001
    return s2_grid_over(product.geo, *CENTRE, 400)


# -- geometry --------------------------------------------------------------------------------
def test_range_doppler_reproduces_geolocation_grid(ann) -> None:  # noqa: ANN001
    """The annotation's 210 grid points (computed by ESA's processor) come back at their line/pixel."""
    rd = RangeDoppler(ann, annotation_orbit(ann))
    line, pixel = rd.line_pixel_geodetic(ann.grid_lon, ann.grid_lat, ann.grid_height)
    assert np.abs(line - ann.grid_line).max() < 0.002
    # linear interpolation of the slant-to-ground-range polynomials (SNAP, xarray-sentinel):
    # within 0.6 px of the grid, which the nearest polynomial matches to 0.01 px
    assert np.abs(pixel - ann.grid_pixel).max() < 0.6
    assert np.abs(pixel - ann.grid_pixel).mean() < 0.2
    t, r = rd.zero_doppler(__import__("coalmine.runtime.preprocess.s1grd.geocoding",
                                      fromlist=["geodetic_to_ecef"]).geodetic_to_ecef(
        ann.grid_lon, ann.grid_lat, ann.grid_height))
    assert np.abs(2 * r / rd.C - ann.grid_srt).max() * rd.C / 2 < 0.01  # metres of slant range


def test_height_interpolation_matches_exact_solution(ann) -> None:  # noqa: ANN001
    """Quadratic interpolation between the three lattice heights stays within 0.01 px."""
    rd = RangeDoppler(ann, annotation_orbit(ann))
    lon, lat = np.meshgrid(np.linspace(12.2, 14.9, 12), np.linspace(41.1, 42.6, 12))
    nodes = [rd.line_pixel_geodetic(lon, lat, np.full(lon.shape, hk)) for hk in HEIGHTS]
    for h in (-400.0, 0.0, 150.0, 1200.0, 4000.0):
        le, pe = rd.line_pixel_geodetic(lon, lat, np.full(lon.shape, h))
        li = lagrange3(np.float64(h), HEIGHTS, *(n[0] for n in nodes))
        pi = lagrange3(np.float64(h), HEIGHTS, *(n[1] for n in nodes))
        inside = (pe > 0) & (pe < ann.samples)
        assert np.abs(li - le)[inside].max() < 0.01
        assert np.abs(pi - pe)[inside].max() < 0.01


# -- radiometry ------------------------------------------------------------------------------
def test_sigma0_recovered_from_safe_folder(product, grid) -> None:  # noqa: ANN001
    with _open(product.path, grid) as r:
        p = r.read_power(grid.full)
        rec = r.record
    truth = _truth(grid)
    err = np.abs(_db_err(p, truth))
    assert np.isfinite(p).all()
    assert np.median(err) < TOL_MEDIAN_DB
    assert err.max() < TOL_DB
    assert rec["s1_noise_removal"].startswith("range x azimuth")
    assert rec["s1_ipf"] == "3.40" and rec["s1_form"] == "SAFE folder"
    assert rec["s1_terrain"] == "none" and "no DEM" in rec["s1_geocoding"]


def test_noise_removal_is_what_makes_it_right(product, grid) -> None:  # noqa: ANN001
    """Without noise subtraction the dark parts would be off by far more than the tolerance."""
    r = _open(product.path, grid)
    try:
        p = r.read_power(grid.full)
        r.radiometry.noise = None
        raw = r.read_power(grid.full)
    finally:
        r.close()
    truth = _truth(grid)
    dark = truth < 10 ** (-1.6)
    assert np.median(np.abs(_db_err(raw, truth))[dark]) > 4 * TOL_MEDIAN_DB
    assert np.abs(_db_err(p, truth))[dark].max() < TOL_DB


class _open:  # a GrdReader as a context manager
    def __init__(self, path, grid, **kw) -> None:  # noqa: ANN001
        self.r = GrdReader(path, grid, **kw)

    def __enter__(self) -> GrdReader:
        return self.r

    def __exit__(self, *a: object) -> None:
        self.r.close()

    def __getattr__(self, k: str):  # noqa: ANN204
        return getattr(self.r, k)

    def close(self) -> None:
        self.r.close()


@pytest.mark.parametrize("layout,zip_it,form", [("safe", True, "SAFE zip"),
                                                ("cog", False, "COG-SAFE folder"),
                                                ("cog", True, "COG-SAFE zip")])
def test_zip_and_cog_layouts_give_the_same_sigma0(realdata, tmp_path, product, grid, layout,
                                                  zip_it, form) -> None:  # noqa: ANN001
    made = make_product(realdata, tmp_path, WIN, layout=layout, zip_it=zip_it)
    if zip_it:
        assert made.path.suffix == ".zip" and not any(tmp_path.glob("*.SAFE"))
    with _open(product.path, grid) as a, _open(made.path, grid) as b:
        pa, pb = a.read_power(grid.full), b.read_power(grid.full)
        assert b.record["s1_form"] == form
    np.testing.assert_array_equal(pa, pb)
    # nothing was extracted beside the zip
    assert sorted(p.name for p in tmp_path.iterdir()) == [made.path.name]


def test_blocks_equal_whole_scene(product, grid) -> None:  # noqa: ANN001
    with _open(product.path, grid) as r:
        whole = r.read_power(grid.full)
        for w in (Window(0, 0, 150, 130), Window(137, 251, 163, 149), Window(390, 3, 10, 397)):
            part = r.read_power(w)
            np.testing.assert_array_equal(
                part, whole[w.row_off: w.row_off + w.height, w.col_off: w.col_off + w.width])


def test_old_ipf_layout_range_noise_and_border_mask(realdata, tmp_path) -> None:
    """IPF < 2.90: range-only noise vectors; low border-noise samples at the swath edge masked."""
    win = Window(0, 7700, 700, 700)
    zero, noisy = 20, 100
    made = make_product(realdata, tmp_path, win, old_ipf=True, border=(zero, noisy))
    grid = s2_grid_over(made.geo, 8050.0, 300.0, 400)
    with _open(made.path, grid) as r:
        p = r.read_power(grid.full)
        line, pixel = r.positions(grid.full)
        rec = r.record
        assert r._border is not None
        b = r._border[win.row_off: win.row_off + win.height]
        b = b[b[:, 0] != -2]  # lines the grid needed
        assert b.shape[0] > 100 and (b[:, 0] == zero + noisy).all()
    assert rec["s1_noise_removal"] == "range noise LUT" and rec["s1_ipf"] == "2.80"
    assert "MPC-0243" in rec["s1_border_noise"]
    noise_side = pixel < zero + noisy - 1
    data_side = pixel > zero + noisy + 1
    assert noise_side.any() and data_side.any()
    assert np.isnan(p[noise_side]).all()
    err = np.abs(_db_err(p, _truth(grid)))[data_side]
    assert np.median(err) < TOL_MEDIAN_DB and err.max() < TOL_DB


def test_negative_after_noise_subtraction_is_clipped_not_nan(realdata, tmp_path) -> None:
    """A field below the noise floor gives the documented floor, never NaN."""
    made = make_product(realdata, tmp_path, WIN, field=lambda x, *_: np.full(x.shape, 1e-7))
    grid = s2_grid_over(made.geo, *CENTRE, 64)
    with _open(made.path, grid) as r:
        p = r.read_power(grid.full)
    assert np.isfinite(p).all()
    assert np.isclose(p.min(), SIGMA0_FLOOR, rtol=1e-5)
    assert (p < 2 * SIGMA0_FLOOR).mean() > 0.2  # many DN^2 fall at or below N


# -- terrain ---------------------------------------------------------------------------------
PIT_DEPTH = 150.0


def _pit_case(realdata: Path, tmp_path: Path):
    """A bright square on the floor of a 150 m deep pit, and the image the radar would see.

    The annotation's geolocation grid gives positions on the processor's terrain surface
    (about 1240 m here, the Apennines); the DEM is that surface with the pit cut 150 m into it.
    """
    # the pit: 1500 m wide, centred on the S2 grid; the square 300 m wide at its centre
    probe = make_product(realdata, tmp_path / "probe", Window(12900, 7900, 4, 4))
    geo = probe.geo
    grid = s2_grid_over(geo, *CENTRE, 300)
    T = grid.transform
    cx, cy = T.c + 150 * T.a, T.f + 150 * T.e
    # ground-range direction (away from the sensor) and incidence angle at the pit
    x0, y0 = geo.utm(np.array([CENTRE[0]]), np.array([CENTRE[1]]))
    x1, y1 = geo.utm(np.array([CENTRE[0]]), np.array([CENTRE[1] + 100.0]))
    u = np.array([x1[0] - x0[0], y1[0] - y0[0]])
    u /= np.linalg.norm(u)
    base = float(geo.terrain(*CENTRE))
    floor = base - PIT_DEPTH

    def field(x: np.ndarray, y: np.ndarray, line: np.ndarray, pixel: np.ndarray) -> np.ndarray:
        # (x, y): where the image pixel looks on the processor's terrain surface (height hs);
        # a point of the pit floor with the same slant range lies (hs - floor) / tan(incidence)
        # metres back towards the sensor
        hs = geo.terrain(line, pixel)
        back = (hs - floor) / np.tan(np.radians(geo.incidence_at(line, pixel)))
        tx, ty = x - back * u[0], y - back * u[1]
        bright = (np.abs(tx - cx) < 150) & (np.abs(ty - cy) < 150)
        return np.where(bright, 0.5, 0.02)

    # where the floor's centre appears without a DEM: iterate the displacement once
    inc = np.radians(geo.incidence(*CENTRE))
    px = CENTRE[1] + (base - floor) / np.tan(inc) / 10.0
    shift = (float(geo.terrain(CENTRE[0], px)) - floor) / np.tan(inc)

    made = make_product(realdata, tmp_path / "pit", WIN, field=field)
    dem = tmp_path / "dem.tif"
    res = 30.0
    n = 200
    dx0, dy0 = cx - n * res / 2, cy + n * res / 2
    xs = dx0 + res * (np.arange(n) + 0.5)
    ys = dy0 - res * (np.arange(n) + 0.5)
    X, Y = np.meshgrid(xs, ys)
    pit = (np.abs(X - cx) < 750) & (np.abs(Y - cy) < 750)
    h = np.where(pit, base - PIT_DEPTH, base).astype("float32")
    with rasterio.open(dem, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32",
                       crs=UTM, transform=Affine(res, 0, dx0, 0, -res, dy0)) as ds:
        ds.write(h, 1)
    return made, grid, dem, (cx, cy), u * shift


def _centroid(p: np.ndarray, grid) -> np.ndarray:  # noqa: ANN001
    m = p > 0.1
    r, c = np.nonzero(m)
    T = grid.transform
    return np.array([T.c + T.a * (c.mean() + 0.5), T.f + T.e * (r.mean() + 0.5)])


def test_dem_terrain_correction_moves_the_pit_floor_back(realdata, tmp_path) -> None:
    made, grid, dem, truth_xy, shift = _pit_case(realdata, tmp_path)
    with _open(made.path, grid) as flat:
        p_flat = flat.read_power(grid.full)
    with _open(made.path, grid, dem=dem, dem_vertical="ellipsoid") as tc:
        p_dem = tc.read_power(grid.full)
        rec = tc.record
        # block-exact with a DEM too
        w = Window(101, 77, 90, 120)
        np.testing.assert_array_equal(tc.read_power(w), p_dem[77:197, 101:191])
    c_flat, c_dem = _centroid(p_flat, grid), _centroid(p_dem, grid)
    print("DEM - truth", c_dem - np.asarray(truth_xy), "flat - DEM - shift", c_flat - c_dem - shift)
    # the DEM result has the square where it is on the ground (within 0.3 px) ...
    assert np.linalg.norm(c_dem - np.asarray(truth_xy)) < 3.0
    # ... and without a DEM it appears displaced by the predicted depth / tan(incidence), within
    # half a pixel: the prediction takes the processor's terrain height at one place, while it
    # changes by metres across the square
    assert np.linalg.norm(shift) / 10.0 > 15  # the shift is worth testing: ~18 px
    assert np.linalg.norm((c_flat - c_dem) - shift) < 5.0
    assert rec["s1_terrain"] == "dem" and rec["dem_sha256"] and "ellipsoidal" in rec["dem_vertical"]


# -- orbit files -----------------------------------------------------------------------------
def _write_eof(path: Path, ann, mission: str = "Sentinel-1B", shift_s: float = 0.0) -> Path:  # noqa: ANN001
    osv = []
    for t, p, v in zip(ann.orbit_times, ann.orbit_pos, ann.orbit_vel, strict=True):
        utc = (ann.epoch + np.timedelta64(int(round((t + shift_s) * 1e9)), "ns")).astype(str)
        osv.append(f"<OSV><UTC>UTC={utc}</UTC><X unit=\"m\">{float(p[0])!r}</X><Y unit=\"m\">{float(p[1])!r}</Y>"
                   f"<Z unit=\"m\">{float(p[2])!r}</Z><VX>{float(v[0])!r}</VX><VY>{float(v[1])!r}</VY><VZ>{float(v[2])!r}</VZ>"
                   "<Quality>NOMINAL</Quality></OSV>")
    path.write_text(f"<Earth_Explorer_File><Earth_Explorer_Header><Fixed_Header><Mission>{mission}"
                    "</Mission></Fixed_Header></Earth_Explorer_Header><Data_Block><List_of_OSVs>"
                    f"{''.join(osv)}</List_of_OSVs></Data_Block></Earth_Explorer_File>")
    return path


def test_orbit_file_is_used(product, grid, ann, tmp_path) -> None:  # noqa: ANN001
    eof = _write_eof(tmp_path / "S1B_OPER_AUX_POEORB_OPOD_20220112T000000_V20211222T225942_20211224T005942.EOF", ann)
    with _open(product.path, grid) as a, _open(product.path, grid, orbit=eof) as b:
        np.testing.assert_allclose(b.read_power(grid.full), a.read_power(grid.full), rtol=1e-4)
        assert b.record["s1_orbit"].startswith("precise orbit file S1B_OPER_AUX_POEORB")


# -- refusals --------------------------------------------------------------------------------
def _named_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


@pytest.mark.parametrize("name,words", [
    ("S1A_IW_SLC__1SDV_20211223T051122_20211223T051147_030148_039993_5371.SAFE",
     ["Single Look Complex", "GRD"]),
    ("S1A_IW_RAW__0SDV_20211223T051122_20211223T051147_030148_039993_5371.SAFE", ["RAW", "GRD"]),
    ("S1A_WV_OCN__2SSV_20211223T051122_20211223T051147_030148_039993_5371.SAFE", ["OCN", "GRD"]),
    ("S1A_EW_GRDM_1SDH_20211223T051122_20211223T051147_030148_039993_5371.SAFE", ["EW mode", "IW"]),
    ("S1A_IW_GRDH_1SDH_20211223T051122_20211223T051147_030148_039993_5371.SAFE", ["HH/HV", "no VV"]),
])
def test_refuses_other_products_by_name(tmp_path, grid, name, words) -> None:  # noqa: ANN001
    d = _named_dir(tmp_path, name)
    with pytest.raises(InputError) as e:
        GrdReader(d, grid)
    msg = str(e.value)
    assert str(d) in msg and all(w in msg for w in words), msg


def test_refuses_product_without_vv(realdata, tmp_path, grid) -> None:  # noqa: ANN001
    made = make_product(realdata, tmp_path, Window(12900, 7900, 4, 4))
    for f in list(made.path.rglob("*-vv-*")):
        f.rename(f.with_name(f.name.replace("-vv-", "-vh-")))
    with pytest.raises(InputError, match=r"has no VV measurement \(polarisations: VH\)"):
        GrdReader(made.path, grid)


@pytest.mark.parametrize("what", ["calibration", "noise"])
def test_refuses_missing_calibration_or_noise(realdata, tmp_path, grid, what) -> None:  # noqa: ANN001
    stem = next((real_safe(realdata) / "annotation").glob("s1b-*.xml")).stem
    rel = f"annotation/calibration/{what}-{stem}.xml"
    made = make_product(realdata, tmp_path, Window(12900, 7900, 4, 4), drop=(rel,))
    with pytest.raises(InputError) as e:
        GrdReader(made.path, grid)
    assert f"lacks its {what} file {rel}" in str(e.value) and "download it again" in str(e.value)


def test_refuses_truncated_zip(realdata, tmp_path, grid) -> None:  # noqa: ANN001
    made = make_product(realdata, tmp_path, Window(12900, 7900, 4, 4), zip_it=True)
    data = made.path.read_bytes()
    made.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        GrdReader(made.path, grid)
    assert str(made.path) in str(e.value) and "truncated or damaged" in str(e.value)


def test_refuses_missing_path_and_no_overlap(product, tmp_path) -> None:  # noqa: ANN001
    from coalmine.runtime.raster import Grid
    from rasterio.crs import CRS

    with pytest.raises(InputNotFoundError, match="does not exist"):
        GrdReader(tmp_path / f"{SAFE_NAME}.SAFE", None)  # type: ignore[arg-type]
    far = Grid(CRS.from_string("EPSG:32750"), Affine(10, 0, 300000, 0, -10, 9700000), 100, 100)
    with pytest.raises(CRSError, match="does not overlap the Sentinel-2 scene"):
        GrdReader(product.path, far)


def test_refuses_dem_not_covering_scene(product, grid, tmp_path) -> None:  # noqa: ANN001
    dem = tmp_path / "small_dem.tif"
    T = grid.transform
    with rasterio.open(dem, "w", driver="GTiff", width=10, height=10, count=1, dtype="float32",
                       crs=UTM, transform=Affine(30, 0, T.c, 0, -30, T.f)) as ds:
        ds.write(np.zeros((1, 10, 10), np.float32))
    with pytest.raises(CRSError) as e:
        GrdReader(product.path, grid, dem=dem)
    assert f"--dem {dem} does not cover the Sentinel-2 scene" in str(e.value)


def test_refuses_orbit_file_of_other_satellite_or_day(product, grid, ann, tmp_path) -> None:  # noqa: ANN001
    other = _write_eof(tmp_path / "S1A_OPER_AUX_POEORB_x.EOF", ann, mission="Sentinel-1A")
    with pytest.raises(InputError, match="is for Sentinel-1A but the product was acquired by S1B"):
        GrdReader(product.path, grid, orbit=other)
    late = _write_eof(tmp_path / "S1B_OPER_AUX_POEORB_y.EOF", ann, shift_s=86400.0)
    with pytest.raises(InputError, match="does not cover the acquisition"):
        GrdReader(product.path, grid, orbit=late)
    junk = tmp_path / "junk.EOF"
    junk.write_text("not xml")
    with pytest.raises(InputError, match="is not an orbit file"):
        GrdReader(product.path, grid, orbit=junk)


def test_product_detection(product, tmp_path) -> None:  # noqa: ANN001
    assert looks_like_s1_product(product.path)
    assert looks_like_s1_product(product.path / "manifest.safe")
    z = tmp_path / "download.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(f"{SAFE_NAME}.SAFE/measurement/s1b-iw-grd-vv-x.tiff", b"")
    assert looks_like_s1_product(z)
    tif = tmp_path / "vv_db.tif"
    tif.write_bytes(b"II*\x00")
    assert not looks_like_s1_product(tif)
    named = tmp_path / f"{SAFE_NAME}_VV.tif"  # an export named after its product
    named.write_bytes(b"II*\x00")
    assert not looks_like_s1_product(named)


def test_orbit_folder_picks_the_precise_file_covering_the_acquisition(product, grid, ann,
                                                                     tmp_path) -> None:  # noqa: ANN001
    d = tmp_path / "orbits"
    d.mkdir()
    _write_eof(d / "S1B_OPER_AUX_RESORB_OPOD_20211223T080000_V20211223T031000_20211223T062000.EOF", ann)
    _write_eof(d / "S1B_OPER_AUX_POEORB_OPOD_20220112T000000_V20211222T225942_20211224T005942.EOF", ann)
    _write_eof(d / "S1A_OPER_AUX_POEORB_OPOD_20220112T000000_V20211222T225942_20211224T005942.EOF",
               ann, mission="Sentinel-1A")
    _write_eof(d / "S1B_OPER_AUX_POEORB_OPOD_20220113T000000_V20211223T225942_20211225T005942.EOF", ann)
    with _open(product.path, grid, orbit=d) as r:
        assert r.record["s1_orbit"] == ("precise orbit file S1B_OPER_AUX_POEORB_OPOD_20220112T000000_"
                                        "V20211222T225942_20211224T005942.EOF")
    for f in d.glob("S1B_*_V20211222*"):
        f.unlink()
    with _open(product.path, grid, orbit=d) as r:
        assert r.record["s1_orbit"].startswith("restituted orbit file S1B_OPER_AUX_RESORB")
    for f in d.glob("S1B_*RESORB*"):
        f.unlink()
    with pytest.raises(InputError, match="holds no S1B orbit file .* whose validity covers the acquisition"):
        GrdReader(product.path, grid, orbit=d)


def test_dem_geoid_heights_converted_or_said_not_to_be(product, grid, tmp_path, caplog) -> None:  # noqa: ANN001
    """EGM2008 heights become ellipsoidal with PROJ's geoid grid; without it a warning says so."""
    from coalmine.runtime.preprocess.s1grd.dem import _geoid_transformer

    dem = tmp_path / "dem.tif"
    T = grid.transform
    with rasterio.open(dem, "w", driver="GTiff", width=200, height=200, count=1, dtype="float32",
                       crs=UTM, transform=Affine(30, 0, T.c - 300, 0, -30, T.f + 300)) as ds:
        ds.write(np.full((1, 200, 200), 1200.0, np.float32))
    with caplog.at_level("WARNING", logger="coalmine"), _open(product.path, grid, dem=dem) as r:
        lon, lat = r._lonlat.transform(T.c, T.f)
        und = r.dem.undulation(np.array([lon]), np.array([lat]))
        note = r.record["dem_vertical"]
    if _geoid_transformer() is None:
        assert und is None and "EGM2008 grid not installed" in note
        assert "us_nga_egm08_25.tif" in caplog.text and str(dem.name) in caplog.text
    else:  # central Italy: the EGM2008 undulation is about +45 m
        assert 30 < float(und[0]) < 60 and note == "EGM2008 undulation added (pyproj)"
