"""The Sentinel-1 raster reader (coalmine.runtime.preprocess.s1) on rasters built so that each rule
gives a number worked out by hand: which pixels the unit sample reads, the decimated read it falls
back to on sparse data, which band is VV, where "no overlap" begins, and which options reach the
reader. Unit detection itself is in test_s1_units.py."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.bundle import S1Params
from coalmine.runtime.errors import CRSError, InputError, RasterError, UnitsError
from coalmine.runtime.preprocess.s1 import S1Reader, _sample, open_s1
from coalmine.runtime.raster import Grid, to_cog
from factories import DEFAULT_TRANSFORM, UTM50S
from rasterio.windows import Window

#: the Sentinel-2 grid of these tests: 20 x 20 pixels of 10 m, x 300000..300200, y 9699800..9700000
GRID = Grid(UTM50S, DEFAULT_TRANSFORM, 20, 20)


def write(path, bands, *, transform=DEFAULT_TRANSFORM, crs=UTM50S, nodata=None, descriptions=None, **kw):
    """Write (count, h, w) or (h, w) ``bands`` as a GeoTIFF and return its path."""
    a = np.asarray(bands)
    if a.ndim == 2:
        a = a[None]
    with rasterio.open(path, "w", driver="GTiff", dtype=a.dtype.name, count=a.shape[0], height=a.shape[1],
                       width=a.shape[2], crs=crs, transform=transform, nodata=nodata, **kw) as ds:
        ds.write(a)
        for i, d in enumerate(descriptions or (), start=1):
            ds.set_band_description(i, d)
    return path


def pixel_ids(h: int, w: int) -> np.ndarray:
    """Each pixel's value is its own number, row * w + col + 1 (exact in float32 below 2**24)."""
    return (np.arange(h * w, dtype=np.float64).reshape(h, w) + 1).astype(np.float32)


@pytest.mark.parametrize(("h", "w", "rows", "cols", "size"), [
    # 1000 px: windows of 256 centred on 20/50/80 % -> starts 200-128, 500-128, 800-128
    (1000, 1000, (72, 372, 672), (72, 372, 672), (256, 256)),
    # 300 x 400: the first window would start above/left of the raster (0.2*300-128 < 0) and the
    # last one past its end (0.8*300-128 = 112 > 300-256 = 44): both are held inside it
    (300, 400, (0, 22, 44), (0, 72, 144), (256, 256)),
    # smaller than a window: the whole raster, nine times
    (100, 60, (0, 0, 0), (0, 0, 0), (100, 60)),
])
def test_the_unit_sample_reads_nine_windows_spread_over_the_raster(tmp_path, h, w, rows, cols, size):
    ids = pixel_ids(h, w)
    path = write(tmp_path / "vv.tif", ids)
    wh, ww = size
    expected = np.concatenate([ids[r:r + wh, c:c + ww].ravel() for r in rows for c in cols])
    with rasterio.open(path) as ds:
        got = _sample(ds, 1, "--s1")
    np.testing.assert_array_equal(got, expected)


def sparse(nodata):
    """1000 x 1000 with data (0.05) only in a top strip and a left strip 72 px wide, which none of
    the nine sample windows (rows and columns 72..927) reaches; ``nodata`` (or NaN) elsewhere."""
    a = np.full((1000, 1000), np.nan if nodata is None else nodata, np.float32)
    a[:72, :] = 0.05
    a[:, :72] = 0.05
    return a


@pytest.mark.parametrize(("nodata", "band"), [(None, 1), (-9999.0, 1), (-9999.0, 2)])
def test_sparse_data_falls_back_to_a_decimated_read_of_the_whole_raster(tmp_path, nodata, band):
    a = sparse(nodata)
    if band == 2:  # VV second, after a full band of other values that the fallback must not read
        a = np.stack([np.full_like(a, 0.5), a])
    path = write(tmp_path / "vv.tif", a, nodata=nodata)
    with rasterio.open(path) as ds:
        got = _sample(ds, band, "--s1")
    # the fallback reads the raster as 512 x 512 (nearest): output row i shows source row
    # floor((i + 0.5) * 1000 / 512), which is < 72 for i <= 36, so 37 rows and 37 columns hold
    # data: 512 * 512 - (512 - 37) ** 2 = 36519 values, all 0.05 and none the nodata
    assert got.size == 512 * 512 - (512 - 37) ** 2 == 36519
    np.testing.assert_array_equal(got, np.float32(0.05))


def test_a_raster_with_no_valid_pixel_is_refused_naming_its_nodata(tmp_path):
    nan = write(tmp_path / "nan.tif", np.full((30, 30), np.nan, np.float32))
    with pytest.raises(InputError) as e:
        S1Reader(nan, GRID)
    assert str(e.value) == f"--s1 {nan} has no valid pixel (all nodata); use a Sentinel-1 raster with data"
    flagged = write(tmp_path / "flagged.tif", np.full((30, 30), -9999, np.float32), nodata=-9999)
    with pytest.raises(InputError) as e:
        S1Reader(flagged, GRID)
    assert str(e.value) == (f"--s1 {flagged} has no valid pixel (all nodata = -9999); use a Sentinel-1 "
                            "raster with data")


def test_vv_is_the_band_whose_description_says_so_in_any_case(tmp_path):
    # band 1 undescribed raw numbers, band 2 VH in dB, band 3 VV in linear power: only band 3 is
    # sigma0 VV; reading any other (or all) would give dB or refuse digital numbers
    bands = np.stack([np.full((20, 20), 7.0, np.float32), np.full((20, 20), -20.0, np.float32),
                      np.full((20, 20), 0.05, np.float32)])
    path = write(tmp_path / "vhvv.tif", bands, descriptions=(None, "vh_db", "Sigma0_vv"))
    r = S1Reader(path, GRID)
    try:
        assert (r.band, r.units) == (3, "linear")
        np.testing.assert_allclose(r.read_power(Window(0, 0, 20, 20)), 0.05, rtol=1e-6)
    finally:
        r.close()


def test_a_multiband_raster_without_a_vv_band_is_refused(tmp_path):
    path = write(tmp_path / "vh.tif", np.full((2, 20, 20), 0.05, np.float32), descriptions=("VH", None))
    with pytest.raises(InputError) as e:
        S1Reader(path, GRID)
    assert str(e.value) == (f"--s1 {path} has 2 bands and none is described as VV; pass a single-band VV "
                            "raster (e.g. gdal_translate -b N) or set the band description to VV")


def test_integer_digital_numbers_are_refused_through_the_reader(tmp_path):
    # uint16 of 1 and 2 (median 1.5): below the float limit of 2, but integers above 1 are counts
    a = np.ones((20, 20), np.uint16)
    a[10:] = 2
    path = write(tmp_path / "dn.tif", a)
    with pytest.raises(UnitsError, match=rf"^--s1 {path} does not hold sigma0: its values are uint16 with "
                                         r"median 1\.5 \(linear sigma0"):
        S1Reader(path, GRID)


def test_the_units_given_win_over_the_params_and_both_reach_detection(tmp_path):
    path = write(tmp_path / "lin.tif", np.full((20, 20), 0.05, np.float32))
    declared_db = r"^--s1 .*lin\.tif was declared dB but 100% of its values are >= 0"
    with pytest.raises(UnitsError, match=declared_db):
        S1Reader(path, GRID, S1Params(units="db"))
    with pytest.raises(UnitsError, match=declared_db):
        open_s1(path, GRID, S1Params(), units="db")
    with pytest.raises(UnitsError, match=declared_db):
        open_s1(path, GRID, S1Params(units="db"))
    r = open_s1(path, GRID, S1Params(units="db"), units="auto")
    try:
        assert r.units == "linear"
    finally:
        r.close()


def test_the_resampling_in_the_params_is_used(tmp_path):
    # columns alternate 0.01 / 0.09 on a grid shifted half a pixel east of the S2 grid: bilinear
    # gives their mean 0.05 inside; nearest gives one of the two
    a = np.tile(np.array([0.01, 0.09], np.float32), (24, 12))
    path = write(tmp_path / "vv.tif", a, transform=DEFAULT_TRANSFORM * Affine.translation(-0.5, -2))
    inner = Window(2, 2, 16, 16)
    for resampling, check in (("bilinear", lambda p: np.allclose(p, 0.05, rtol=1e-5)),
                              ("nearest", lambda p: np.isin(p, np.float32([0.01, 0.09])).all())):
        r = S1Reader(path, GRID, S1Params(resampling=resampling))
        try:
            assert check(r.read_power(inner)), resampling
        finally:
            r.close()


def test_a_raster_without_a_crs_is_refused_as_s1(tmp_path):
    path = write(tmp_path / "nocrs.tif", np.full((20, 20), 0.05, np.float32), crs=None)
    with pytest.raises(CRSError, match=rf"^--s1 {path} has no coordinate reference system"):
        S1Reader(path, GRID)


def test_a_damaged_raster_is_named_as_s1_when_sampled_and_when_warped(tmp_path):
    # 1024 x 1024 COG of 64 px tiles: the sample windows end at row 0.8 * 1024 + 128 = 947, so a
    # file that loses (part of) its last row of tiles (960..1023) opens and samples, and fails when
    # the warp reads that row
    rng = np.random.default_rng(1)
    a = rng.uniform(0.01, 0.2, (1024, 1024)).astype(np.float32)
    src = write(tmp_path / "s.tif", a)
    cog = tmp_path / "vv.tif"
    to_cog(src, cog, nodata=-9999, blocksize=64)
    data = cog.read_bytes()
    cog.write_bytes(data[: len(data) - len(data) // 32])
    grid = Grid(UTM50S, DEFAULT_TRANSFORM, 1024, 1024)
    r = S1Reader(cog, grid)
    try:
        with pytest.raises(RasterError, match=rf"^--s1 {cog} cannot be read \(.+\); the file looks truncated"):
            r.read_power(Window(0, 960, 1024, 64))
    finally:
        r.close()
    # cut to half, the sample's own windows cannot be read
    cog.write_bytes(data[: len(data) // 2])
    with pytest.raises(RasterError, match=rf"^--s1 {cog} cannot be read \(.+\); the file looks truncated"):
        S1Reader(cog, grid)


@pytest.mark.parametrize(("dx", "dy", "overlaps"), [
    (200, 0, False), (190, 0, True),    # east: touching the right edge is no overlap
    (-200, 0, False), (-190, 0, True),  # west
    (0, 200, False), (0, 190, True),    # north
    (0, -200, False), (0, -190, True),  # south
])
def test_overlap_begins_past_a_shared_edge(tmp_path, dx, dy, overlaps):
    t = Affine.translation(dx, dy) * DEFAULT_TRANSFORM
    path = write(tmp_path / "vv.tif", np.full((20, 20), 0.05, np.float32), transform=t)
    if overlaps:
        S1Reader(path, GRID).close()
        return
    s = (300000 + dx, 9699800 + dy, 300200 + dx, 9700000 + dy)
    with pytest.raises(CRSError) as e:
        S1Reader(path, GRID)
    assert str(e.value) == (
        f"--s1 {path} does not overlap the Sentinel-2 scene: S1 extent ({s[0]}, {s[1]}, {s[2]}, {s[3]}) vs S2 "
        "extent (300000, 9699800, 300200, 9700000) (left, bottom, right, top in EPSG:32750); pass the "
        "Sentinel-1 image of the same area")


def test_a_grd_product_goes_to_the_grd_reader_with_every_option(monkeypatch, tmp_path):
    import coalmine.runtime.preprocess.s1grd as s1grd

    seen = []

    class Recorder:
        def __init__(self, *args, **kwargs):
            seen.append((args, kwargs))

    monkeypatch.setattr(s1grd, "GrdReader", Recorder)
    # a product's name is enough (a missing product is the GRD reader's to report)
    product = tmp_path / "S1A_IW_GRDH_1SDV_20210704T214441_20210704T214506_038635_048F14_1C55.SAFE"
    params = S1Params(resampling="nearest")
    r = open_s1(product, GRID, params, units="db", dem=tmp_path / "dem.tif", orbit=tmp_path / "orbits")
    assert isinstance(r, Recorder)
    assert seen == [((product, GRID, params), {"dem": tmp_path / "dem.tif", "orbit": tmp_path / "orbits"})]


def test_the_units_rules_use_the_data_type_of_the_vv_band_itself(tmp_path):
    # A VRT may mix data types: float32 VH first, uint16 VV second. VV holds 1s and 2s (median
    # 1.5): as integers they are counts, refused; read with VH's float type they would pass as power.
    vh = write(tmp_path / "vh.tif", np.full((20, 20), 0.01, np.float32))
    dn = np.ones((20, 20), np.uint16)
    dn[10:] = 2
    write(tmp_path / "vv.tif", dn)
    bands = "".join(
        f'<VRTRasterBand dataType="{t}" band="{i}"><Description>{d}</Description><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{f}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
        "</VRTRasterBand>"
        for i, (t, d, f) in enumerate((("Float32", "VH", "vh.tif"), ("UInt16", "VV", "vv.tif")), start=1))
    with rasterio.open(vh) as ds:
        srs, gt = ds.crs.to_wkt(), ", ".join(str(v) for v in ds.transform.to_gdal())
    vrt = tmp_path / "s1.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="20" rasterYSize="20"><SRS>{srs}</SRS>'
                   f"<GeoTransform>{gt}</GeoTransform>{bands}</VRTDataset>")
    with rasterio.open(vrt) as ds:
        assert ds.dtypes == ("float32", "uint16")  # the file is what the test says
    with pytest.raises(UnitsError, match=r"its values are uint16 with median 1\.5"):
        S1Reader(vrt, GRID)
