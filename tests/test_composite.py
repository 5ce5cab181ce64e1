"""Annual composites: the median of clear observations, cloud dilation, Sentinel-1 multi-looking,
per-acquisition DN offsets, block exactness, mosaicking across UTM zones, the quality COG, and
the refusals."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.bands import INDICES, S2_BANDS
from coalmine.runtime.errors import CRSError, InputError, UsageError
from coalmine.runtime.preprocess.acquisitions import Period, date_from_name
from coalmine.runtime.preprocess.composite import CompositeSource, block_for_memory
from coalmine.runtime.preprocess.median import PowerMean, clear_median, dilate
from coalmine.runtime.preprocess.prepare_composite import (
    COMPOSITE_TAG,
    parse_memory,
    prepare_composite,
    quality_path,
)
from coalmine.runtime.preprocess.stack import INPUTS_TAG
from coalmine.runtime.raster import Grid
from composite_factory import TRANSFORM, UTM50S, dn_for, reflectance, write_s1, write_s2
from rasterio.crs import CRS
from rasterio.windows import Window

H, W = 40, 48
CLOUD_SCL = (3, 8, 9, 10)


# -- the kernels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_clear_median_equals_numpy_nanmedian_exactly(n: int) -> None:
    rng = np.random.default_rng(n)
    v = rng.random((n, 30, 31), dtype=np.float32) * 0.4
    clear = rng.random((n, 30, 31)) < 0.6
    v[rng.random(v.shape) < 0.05] = np.nan  # a band's own gaps count as not clear too
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="All-NaN"):
        expect = np.nanmedian(np.where(clear, v, np.nan), axis=0)
    got, count = clear_median(v.copy(), clear)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expect)  # NaN where nothing is clear, bit-equal elsewhere
    assert np.array_equal(count, (clear & np.isfinite(v)).sum(axis=0))
    assert (count == 0).any()
    if n > 1:
        assert ((count % 2 == 0) & (count > 0)).any()  # numpy's even-count convention is exercised


def test_clear_median_even_count_is_mean_of_middle_pair() -> None:
    v = np.array([[[0.1]], [[0.4]], [[0.2]], [[0.3]]], np.float32)
    got, n = clear_median(v.copy())
    assert int(n[0, 0]) == 4
    assert got[0, 0] == (np.float32(0.2) + np.float32(0.3)) / np.float32(2)


def test_dilate_matches_brute_force_and_is_block_exact() -> None:
    rng = np.random.default_rng(3)
    m = rng.random((37, 41)) < 0.03
    r = 3
    ref = np.zeros_like(m)
    for i, j in zip(*np.nonzero(m), strict=True):
        ref[max(0, i - r): i + r + 1, max(0, j - r): j + r + 1] = True
    assert np.array_equal(dilate(m, r), ref)
    # a block read with a halo of r pixels equals the same window of the whole
    block = dilate(m[10 - r: 25 + r, 5 - r: 30 + r], r)[r:-r, r:-r]
    assert np.array_equal(block, ref[10:25, 5:30])
    assert np.array_equal(dilate(m, 0), m)


def test_power_mean_counts_only_acquisitions_with_data() -> None:
    pm = PowerMean((1, 3))
    pm.add(np.array([[0.01, np.nan, 0.2]], np.float32))
    pm.add(np.array([[0.1, np.nan, 0.0]], np.float32))  # 0 is not power (nodata)
    np.testing.assert_allclose(pm.mean()[0, [0, 2]], [0.055, 0.2], rtol=1e-7)
    assert np.isnan(pm.mean()[0, 1]) and pm.count.tolist() == [[2, 0, 1]]


def test_block_for_memory_fits_the_budget_and_refuses_too_little() -> None:
    b12, b70 = block_for_memory(4 << 30, 12, 6), block_for_memory(4 << 30, 70, 30)
    assert b12 % 512 == 0 and b70 % 512 == 0 and 512 <= b70 <= b12 <= 2048
    assert block_for_memory(16 << 30, 70, 30) >= b70
    with pytest.raises(UsageError, match="--memory .* at least"):
        block_for_memory(700 << 20, 70, 30)
    assert parse_memory("4G") == 4 << 30 and parse_memory("1500M") == 1500 << 20
    with pytest.raises(UsageError, match="--memory lots"):
        parse_memory("lots")


def test_dates_from_names() -> None:
    assert str(date_from_name("S1A_IW_GRDH_1SDV_20210704T221516_20210704T221541_038652")) == "2021-07-04"
    assert str(date_from_name("vv_2023-03-01.tif")) == "2023-03-01"
    assert date_from_name("vv_linear.tif") is None
    with pytest.raises(UsageError, match="--end 2021-01-01 is before --start"):
        Period.of("2021-06-01", "2021-01-01")


# -- acquisitions on disk -------------------------------------------------------------------------
def _series(tmp: Path, n: int = 5, *, seed: int = 0, offsets: list[int] | None = None,
            dates: list[str] | None = None) -> dict:
    """n acquisitions with random reflectance, clouds moving; S1 constant per acquisition."""
    rng = np.random.default_rng(seed)
    offsets = offsets or [0] * n
    dates = dates or [f"2021{m:02d}15" for m in range(1, n + 1)]
    s2, dns, scls = [], [], []
    for k in range(n):
        refl = (0.02 + 0.4 * rng.random((9, H, W))).astype(np.float32)
        dn = dn_for(refl, offsets[k])
        scl = np.full((H, W), 4, np.uint8)
        yy, xx = np.mgrid[0:H, 0:W]
        cy, cx = rng.integers(0, H), rng.integers(0, W)
        scl[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(30, 150)] = rng.choice(CLOUD_SCL)
        scl[rng.random((H, W)) < 0.01] = 1  # saturated pixels
        scl[H - 4:, 20:26] = 9  # a cloud that never moves: no clear observation there
        dn[:, :, :2] = 0 if k == 0 else dn[:, :, :2]  # a no-data edge in the first acquisition
        scl[:, :2] = 0 if k == 0 else scl[:, :2]
        base = "04.00" if offsets[k] else "03.01"
        s2.append(write_s2(tmp / f"S2_{dates[k]}T022551", dn, scl, offset=offsets[k], baseline=base))
        dns.append(dn)
        scls.append(scl)
    s1 = [write_s1(tmp / f"S1_{dates[k]}T221516_VV.tif", np.full((H, W), 0.01 * (k + 1), np.float32))
          for k in range(n)]
    return {"s2": s2, "s1": s1, "dn": dns, "scl": scls, "offsets": offsets}


def _expected_s2(ser: dict, dilation: int) -> tuple[np.ndarray, np.ndarray]:
    refl = np.stack([reflectance(dn, off) for dn, off in zip(ser["dn"], ser["offsets"], strict=True)])
    clear = []
    for k, scl in enumerate(ser["scl"]):
        cloud = np.isin(scl, CLOUD_SCL)
        grown = cloud.copy()
        for i, j in zip(*np.nonzero(cloud), strict=True):  # brute-force square growth
            grown[max(0, i - dilation): i + dilation + 1, max(0, j - dilation): j + dilation + 1] = True
        clear.append(~grown & ~np.isin(scl, (0, 1)) & np.isfinite(refl[k]).all(axis=0))
    clear = np.stack(clear)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: never clear
        med = np.nanmedian(np.where(clear[:, None], refl, np.nan), axis=0)
    return med, clear.sum(axis=0)


@pytest.mark.parametrize("dilation", [0, 2])
def test_composite_bands_are_the_median_of_clear_observations(tmp_path: Path, dilation: int) -> None:
    ser = _series(tmp_path, 6)
    expect, count = _expected_s2(ser, dilation)
    with CompositeSource(ser["s2"], ser["s1"], dilation=dilation) as src:
        x, counts = src.read_with_counts(Window(0, 0, W, H))
    got = x[:9]
    has = count > 0
    assert has.mean() > 0.9 and (~has).any()  # some pixels were never clear
    np.testing.assert_array_equal(got[:, has], expect[:, has])
    assert np.isnan(got[:, ~has]).all()
    # the indices come from the composite's bands, not from any one acquisition's
    pos = {b: i for i, b in enumerate(S2_BANDS)}
    for k, (a, b) in enumerate(INDICES.values()):
        ea, eb = expect[pos[a]].astype(np.float64), expect[pos[b]].astype(np.float64)
        np.testing.assert_allclose(x[len(S2_BANDS) + k][has], ((ea - eb) / (ea + eb))[has], rtol=1e-5, atol=1e-6)
    assert np.array_equal(counts[0], count)
    assert (counts[1] == 6).all()


def test_offsets_are_applied_per_acquisition_across_baseline_0400(tmp_path: Path) -> None:
    # the same surface before and after baseline 04.00: the DN differ by 1000, the composite not
    dates = ["20211201", "20211220", "20220210", "20220301"]
    ser = _series(tmp_path, 4, offsets=[0, 0, -1000, -1000], dates=dates)
    refl = (0.02 + 0.4 * np.random.default_rng(9).random((9, H, W))).astype(np.float32)
    for k, folder in enumerate(ser["s2"]):  # rewrite every acquisition with that one surface, clear
        off = ser["offsets"][k]
        write_s2(folder, dn_for(refl, off), np.full((H, W), 4, np.uint8), offset=off,
                 baseline="04.00" if off else "03.01")
    with CompositeSource(ser["s2"], ser["s1"], dilation=0) as src:
        got = src.read(Window(0, 0, W, H))[:9]
        assert [a.reader.offset.value for a in src.s2] == [0, 0, -1000, -1000]
    np.testing.assert_array_equal(got, reflectance(dn_for(refl, 0), 0))


def test_sentinel1_is_averaged_in_linear_power_not_db(tmp_path: Path) -> None:
    ser = _series(tmp_path, 2)
    # one acquisition in dB (-20 dB = 0.01), one in linear power (0.1)
    write_s1(ser["s1"][0], np.full((H, W), -20.0, np.float32))
    write_s1(ser["s1"][1], np.full((H, W), 0.1, np.float32))
    from coalmine.runtime.bundle import Preprocessing, S1Params

    prep = Preprocessing(s1=S1Params(speckle_filter="none"))
    with CompositeSource(ser["s2"], ser["s1"], prep, dilation=0) as src:
        x, counts = src.read_with_counts(Window(0, 0, W, H))
        assert src.preprocessing.s1.units == "mixed"
        assert src.inputs["s1_enl_per_acquisition"] is None  # no filter: no looks to record
        assert src.inputs["s1_rule"].endswith("no speckle filter")
    vv = x[12][np.isfinite(x[12])]
    np.testing.assert_allclose(vv, 10 * np.log10(0.055), atol=1e-5)  # not (-20 + -10) / 2 = -15
    assert (counts[1] == 2).all()


def test_lee_filter_gets_the_looks_of_the_average(tmp_path: Path) -> None:
    from coalmine.runtime.preprocess.speckle import lee_filter

    ser = _series(tmp_path, 3)
    rng = np.random.default_rng(4)
    for p in ser["s1"]:
        write_s1(p, (0.05 * rng.gamma(4.4, 1 / 4.4, (H, W))).astype(np.float32))
    with CompositeSource(ser["s2"], ser["s1"], dilation=0) as src:
        vv = src.read(Window(0, 0, W, H))[12]
    from coalmine.runtime.preprocess.speckle import power_to_db

    mean = np.mean([rasterio.open(p).read(1) for p in ser["s1"]], axis=0).astype(np.float32)
    ok = np.isfinite(vv)
    expect = power_to_db(lee_filter(mean, 5, np.full((H, W), 3 * 4.4)))
    np.testing.assert_allclose(vv[ok], expect[ok], atol=2e-5)
    single_enl = power_to_db(lee_filter(mean, 5, 4.4))
    assert np.abs(vv[ok] - single_enl[ok]).max() > 0.1  # the number of looks matters


def test_blocked_composite_equals_whole(tmp_path: Path) -> None:
    ser = _series(tmp_path, 5)
    with CompositeSource(ser["s2"], ser["s1"], dilation=3) as src:
        whole, wc = src.read_with_counts(Window(0, 0, W, H))
    out = prepare_composite(ser["s2"], ser["s1"], tmp_path / "out" / "c.tif", dilation=3, block=32,
                            progress=False)
    with rasterio.open(out) as ds:
        assert np.array_equal(ds.read(), whole, equal_nan=True)
    with rasterio.open(quality_path(out)) as q:
        assert np.array_equal(q.read(), wc.astype(np.uint8))


def test_one_acquisition_composite_equals_a_single_scene(tmp_path: Path) -> None:
    from coalmine.runtime.preprocess import prepare_scene

    ser = _series(tmp_path, 1)
    single = prepare_scene(ser["s2"][0], ser["s1"][0], tmp_path / "single.tif", scl="auto", progress=False)
    comp = prepare_composite(ser["s2"], ser["s1"], tmp_path / "comp.tif", dilation=0, progress=False)
    with rasterio.open(single) as a, rasterio.open(comp) as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True)


def test_outputs_tags_and_quality_cog(tmp_path: Path) -> None:
    ser = _series(tmp_path, 4)
    out = prepare_composite(ser["s2"], ser["s1"], tmp_path / "c.tif", dilation=1, progress=False,
                            period=Period.of("2021-01-01", "2021-12-31"))
    with rasterio.open(out) as ds:
        inputs = json.loads(ds.tags()[INPUTS_TAG])
        comp = json.loads(ds.tags()[COMPOSITE_TAG])
    from coalmine.runtime._io import sha256_file

    assert [i["date"] for i in inputs["s2"]] == ["2021-01-15", "2021-02-15", "2021-03-15", "2021-04-15"]
    assert all(len(i["sha256"]) == 64 for i in inputs["s2"] + inputs["s1"])
    assert inputs["s1"][0]["sha256"] != sha256_file(ser["s1"][0])  # name and bytes are hashed
    assert inputs["period"] == ["2021-01-01", "2021-12-31"] and inputs["dilation_px"] == 1
    assert inputs["s1_enl_per_acquisition"] == 4.4 and "Lee filter (5 px)" in inputs["s1_rule"]
    assert comp["quality"] == "c_quality.tif" and comp["s2_acquisitions"] == 4
    assert not [q.name for q in tmp_path.iterdir() if q.name.startswith(".")]  # no work folder left
    with rasterio.open(tmp_path / "c_quality.tif") as q:
        assert q.dtypes == ("uint8", "uint8") and q.descriptions == ("s2_clear_observations", "s1_acquisitions")
        assert q.overviews(1) is not None and q.crs == UTM50S
        counts = q.read(1)
    share = comp["clear_observations"]["share_below"]
    with rasterio.open(out) as ds:
        valid = np.isfinite(ds.read(1))
    assert share == pytest.approx(float((counts[valid] < 3).mean()), abs=1e-6)


def test_mosaic_across_utm_zones_on_an_aoi_grid(tmp_path: Path) -> None:
    """Two tiles, one in zone 50 S and one in zone 51 S, each covering half of an AOI grid."""
    from coalmine.runtime.preprocess.prepare_composite import aoi_grid
    from factories import box, write_vector
    from rasterio.warp import transform

    # an AOI straddling 120 E (the zone 50/51 border) near 3 S
    aoi = write_vector(tmp_path / "aoi.geojson", [({"name": "a"}, box(119.995, -3.004, 120.005, -2.996))])
    grid = aoi_grid(aoi, "EPSG:32750", 10)
    assert grid.crs == UTM50S and grid.width > 100
    zone51 = CRS.from_epsg(32751)
    tiles = []
    for k, (crs, lon0, lon1) in enumerate(((UTM50S, 119.99, 120.001), (zone51, 119.999, 120.01))):
        xs, ys = transform("EPSG:4326", crs, [lon0, lon1], [-2.99, -3.01])
        t = Affine(10.0, 0.0, np.floor(min(xs) / 10) * 10, 0.0, -10.0, np.ceil(max(ys) / 10) * 10)
        w, h = int((max(xs) - min(xs)) / 10) + 2, int((max(ys) - min(ys)) / 10) + 2
        refl = np.full((9, h, w), 0.1 + 0.1 * k, np.float32)
        tiles.append(write_s2(tmp_path / f"S2_2021061{k}T022551", dn_for(refl, 0), np.full((h, w), 4, np.uint8),
                              crs=crs, transform=t))
    s1 = write_s1(tmp_path / "S1_20210612T221516_VV.tif", np.full((grid.height + 40, grid.width + 40), 0.05),
                  transform=grid.transform * Affine.translation(-20, -20))
    with CompositeSource(tiles, [s1], grid=grid, dilation=2) as src:
        x, counts = src.read_with_counts(grid.full)
        half = grid.width // 2 + 3  # windows across the other zone's warp equal the whole
        a = src.read(Window(0, 0, half, grid.height))
        b = src.read(Window(half, 0, grid.width - half, grid.height))
    assert np.array_equal(np.concatenate([a, b], axis=2), x, equal_nan=True)
    b02 = x[0]
    assert np.isfinite(b02).all()  # every pixel of the AOI grid got a clear observation
    assert set(np.unique(counts[0])) == {1, 2}  # one tile, or both where they overlap
    left, right = b02[:, :10], b02[:, -10:]
    assert np.allclose(left, 0.1) and np.allclose(right, 0.2)
    both = counts[0] == 2
    assert np.allclose(b02[both], 0.15)  # the median of two is their mean


# -- refusals: one line naming the file and the fix, nothing written -------------------------------
def _nothing_written(folder: Path) -> None:
    assert not folder.exists() or not any(folder.iterdir())


def test_refuses_an_acquisition_outside_the_period(tmp_path: Path) -> None:
    ser = _series(tmp_path / "in", 3)
    with pytest.raises(InputError, match=r"S2_20210315T022551 was acquired on 2021-03-15, outside the "
                                         r"period 2021-01-01\.\.2021-02-28; remove it or widen"):
        prepare_composite(ser["s2"], ser["s1"], tmp_path / "out" / "c.tif", progress=False,
                          period=Period.of("2021-01-01", "2021-02-28"))
    _nothing_written(tmp_path / "out")


def test_a_folder_keeps_only_the_period_and_refuses_an_empty_one(tmp_path: Path) -> None:
    ser = _series(tmp_path / "in", 4)
    s2_folder = tmp_path / "in"
    with CompositeSource([str(s2_folder / "S2_*")], [str(s2_folder / "S1_*")], dilation=0,
                         period=Period.of("2021-02-01", "2021-03-31")) as src:
        assert [a.date.isoformat() for a in src.s2] == ["2021-02-15", "2021-03-15"]
        assert len(src.s1) == 2 and len(src.skipped) == 4
    with pytest.raises(InputError, match=r"no Sentinel-2 acquisition to composite in the period "
                                         r"2022-01-01\.\.2022-12-31 .*widen --start/--end"):
        prepare_composite([str(s2_folder / "S2_*")], ser["s1"], tmp_path / "out" / "c.tif", progress=False,
                          period=Period.of("2022-01-01", "2022-12-31"))
    _nothing_written(tmp_path / "out")


def test_refuses_level_1c_among_level_2a(tmp_path: Path) -> None:
    ser = _series(tmp_path / "in", 2)
    dn = dn_for(np.full((9, H, W), 0.1), 0)
    l1c = write_s2(tmp_path / "in" / "S2_20210320T022551_MSIL1C", dn, np.full((H, W), 4), level="L1C")
    with pytest.raises(InputError, match=r"--s2 .*S2_20210320T022551_MSIL1C is a Sentinel-2 Level-1C product"
                                         r".*use the L2A product of the same date"):
        prepare_composite([*ser["s2"], l1c], ser["s1"], tmp_path / "out" / "c.tif", progress=False)
    _nothing_written(tmp_path / "out")


def test_refuses_an_acquisition_off_the_grid(tmp_path: Path) -> None:
    ser = _series(tmp_path / "in", 2)
    far = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 9600000.0)
    dn = dn_for(np.full((9, H, W), 0.1), 0)
    other = write_s2(tmp_path / "in" / "S2_20210322T022551", dn, np.full((H, W), 4), transform=far)
    with pytest.raises(CRSError, match=r"--s2 .*S2_20210322T022551 does not overlap the output grid.*"
                                       r"--grid-from AOI or --like"):
        prepare_composite([*ser["s2"], other], ser["s1"], tmp_path / "out" / "c.tif", progress=False)
    _nothing_written(tmp_path / "out")
    with CompositeSource([*ser["s2"], other], ser["s1"], skip_disjoint=True) as src:  # the monitor's way
        assert len(src.s2) == 2 and "off the grid" in src.skipped[0]


def test_refuses_an_acquisition_without_scl(tmp_path: Path) -> None:
    ser = _series(tmp_path / "in", 1)
    dn = dn_for(np.full((9, H, W), 0.1), 0)
    bare = write_s2(tmp_path / "in" / "S2_20210401T022551", dn, np.full((H, W), 4), with_scl=False)
    with pytest.raises(InputError, match=r"--s2 .*S2_20210401T022551 has no SCL .*add the SCL file"):
        CompositeSource([*ser["s2"], bare], ser["s1"])


def test_refuses_a_stack_or_a_sentinel1_raster_given_as_sentinel2(tmp_path: Path) -> None:
    ser = _series(tmp_path / "in", 2)
    stack = prepare_composite(ser["s2"], ser["s1"], tmp_path / "in" / "S2_20210501T022551_stack.tif",
                              dilation=0, progress=False)
    with pytest.raises(InputError, match=r"--s2 .*S2_20210501T022551_stack\.tif is a 23-band stack made by "
                                         r"coal-prepare, not a Sentinel-2 acquisition;.*pass those instead"):
        prepare_composite([*ser["s2"], stack], ser["s1"], tmp_path / "out" / "c.tif", progress=False)
    with pytest.raises(InputError, match=r"--s2 .*S1_20210115T221516_VV\.tif is a Sentinel-1 raster \(band VV\), "
                                         r"not a Sentinel-2 acquisition; give it with --s1"):
        prepare_composite([*ser["s2"], ser["s1"][0]], ser["s1"], tmp_path / "out" / "c.tif", progress=False)
    _nothing_written(tmp_path / "out")


def test_refuses_when_no_pixel_is_ever_clear(tmp_path: Path) -> None:
    ser = _series(tmp_path / "in", 2)
    for k, folder in enumerate(ser["s2"]):
        write_s2(folder, ser["dn"][k], np.full((H, W), 9, np.uint8))
    with pytest.raises(InputError, match="no pixel of the composite has a clear Sentinel-2 observation.*"
                                         "add acquisitions, widen the period, or lower --dilation"):
        prepare_composite(ser["s2"], ser["s1"], tmp_path / "out" / "c.tif", progress=False)
    _nothing_written(tmp_path / "out")


def test_refuses_bad_dilation_and_a_grid_without_data(tmp_path: Path) -> None:
    ser = _series(tmp_path / "in", 1)
    with pytest.raises(UsageError, match="--dilation -1 must be a whole number"):
        CompositeSource(ser["s2"], ser["s1"], dilation=-1)
    far = Grid(UTM50S, Affine(10.0, 0.0, 700000.0, 0.0, -10.0, 9000000.0), 10, 10)
    with pytest.raises(CRSError, match="does not overlap the output grid"):
        CompositeSource(ser["s2"], ser["s1"], grid=far)


def test_like_grid_and_transform_are_kept(tmp_path: Path) -> None:
    ser = _series(tmp_path / "in", 2)
    grid = Grid(UTM50S, TRANSFORM * Affine.translation(4, 6), 20, 16)
    out = prepare_composite(ser["s2"], ser["s1"], tmp_path / "c.tif", grid=grid, progress=False, dilation=0)
    with rasterio.open(out) as ds, CompositeSource(ser["s2"], ser["s1"], dilation=0) as src:
        assert (ds.width, ds.height) == (20, 16) and ds.transform == grid.transform
        np.testing.assert_array_equal(ds.read(1), src.read(Window(4, 6, 20, 16))[0])


def test_a_folder_of_acquisitions_opens_as_its_composite_and_trains(tmp_path: Path) -> None:
    """coal-train and coal-run open a folder of a year's acquisitions as their composite (the same code)."""
    from coalmine.runtime.preprocess import open_scene
    from coalmine.train.api import _prepare_patches, data_fingerprint
    from coalmine.train.config import load_config
    from coalmine.train.synth import make_acquisitions

    acq = make_acquisitions(tmp_path / "acq", 2021, 3, seed=2, size=128, cloud_cover=(0.02, 0.05))
    s2, s1 = tmp_path / "s2_2021", tmp_path / "s1_2021"
    s2.mkdir()
    s1.mkdir()
    for a in acq:
        a.s2_dir.rename(s2 / a.s2_dir.name)
        a.s1_path.rename(s1 / a.s1_path.name)
    (tmp_path / "train.toml").write_text(
        f'tile = 32\nblock_tiles = 1\nbuffer = 0\noverlap = 8\nglcm_edges = "equal_width"\nmax_patches = 6\n[[scenes]]\npath = "{s2}"\n'
        f's1 = "{s1}"\nlabels = "{acq[0].label_path}"\n')
    cfg = load_config(tmp_path / "train.toml")
    ps, _ = _prepare_patches(cfg, tmp_path / "work", data_fingerprint(cfg.scenes), False)
    assert len(ps.patches) > 0
    p = ps.patches[0]
    with open_scene(s2, s1) as src, CompositeSource([s2], [s1]) as comp:
        assert isinstance(src, CompositeSource) and len(src.s2) == 3
        np.testing.assert_array_equal(ps.x[0], comp.read(Window(p.col, p.row, 32, 32)))
    from coalmine.runtime.run import run_scene
    from factories import make_tiny_bundle

    make_tiny_bundle(tmp_path / "bundle")
    summary = run_scene(s2, tmp_path / "bundle", tmp_path / "maps", s1=s1, progress=False)
    # the maps are named after the folder given, not after its first acquisition
    assert sorted(q.name for q in (tmp_path / "maps").iterdir()) == [
        f"s2_2021_{k}" for k in ("mask.tif", "mines.geojson", "prob.tif", "summary.json")]
    assert summary["inputs"]["composite"] is True and len(summary["inputs"]["s2"]) == 3
    assert "observations" not in summary  # no quality file: coal-prepare's stack has one


@pytest.mark.realdata
def test_grd_products_and_rasters_average_together_with_a_dem(realdata: Path, tmp_path: Path) -> None:
    """A GRD product (terrain-corrected with --dem, which a calibrated raster refuses) and a
    calibrated raster of the same area are averaged into one composite."""
    from coalmine.runtime.preprocess.s1grd import GrdReader
    from grd_factory import make_product, s2_grid_over

    safe = make_product(realdata, tmp_path / "safe", Window(12800, 7800, 500, 500))
    grid = s2_grid_over(safe.geo, 8050.0, 13050.0, 64)
    rng = np.random.default_rng(5)
    s2 = [write_s2(tmp_path / f"S2_2021070{k}T022551", dn_for(0.05 + 0.3 * rng.random((9, 64, 64)), 0),
                   np.full((64, 64), 4, np.uint8), crs=grid.crs, transform=grid.transform) for k in (1, 2)]
    dem = tmp_path / "dem.tif"
    with rasterio.open(dem, "w", driver="GTiff", width=40, height=40, count=1, dtype="float32", crs=grid.crs,
                       transform=Affine(30, 0, grid.transform.c - 300, 0, -30, grid.transform.f + 300)) as ds:
        ds.write(np.full((1, 40, 40), float(safe.geo.terrain(8050.0, 13050.0)), np.float32))
    r = GrdReader(safe.path, grid, dem=dem)
    try:
        grd_power = r.read_power(grid.full)
    finally:
        r.close()
    raster = write_s1(tmp_path / "S1_20210703T221516_VV.tif", np.full((64, 64), 0.02, np.float32),
                      crs=grid.crs, transform=grid.transform)
    from coalmine.runtime.bundle import Preprocessing, S1Params

    prep = Preprocessing(s1=S1Params(speckle_filter="none"))
    with CompositeSource(s2, [safe.path, raster], prep, dilation=0, dem=dem) as src:
        x, counts = src.read_with_counts(grid.full)
        assert {a.reader.units for a in src.s1} == {"linear"}
        assert any("s1_product" in i for i in src.inputs["s1"])
    both = counts[1] == 2
    assert both.mean() > 0.9
    expect = 10 * np.log10((grd_power[both].astype(np.float64) + 0.02) / 2)
    np.testing.assert_allclose(x[12][both], expect, atol=1e-4)
