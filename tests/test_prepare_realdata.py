"""coal-prepare on real Sentinel files from ../shared/realdata (skipped with a reason if absent)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
from coalmine.runtime.bands import BAND_NAMES, S2_BANDS
from coalmine.runtime.bundle import Preprocessing, S1Params
from coalmine.runtime.errors import InputError
from coalmine.runtime.preprocess import open_scene, prepare_scene
from coalmine.runtime.preprocess.s2 import S2Reader
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import Window

pytestmark = pytest.mark.realdata

PATCHES = ["87_48", "4_55", "56_35", "69_24"]


def _bigearthnet(realdata, suffix):
    ben = realdata / "bigearthnet"
    s2 = next(p for p in ben.glob(f"S2*_{suffix}") if p.is_dir())
    s1 = next(next(p for p in ben.glob(f"S1*_{suffix}") if p.is_dir()).glob("*_VV.tif"))
    return s2, s1


@pytest.mark.parametrize("suffix", PATCHES)
def test_bigearthnet_full_stack(realdata, suffix, tmp_path, caplog):
    s2, s1 = _bigearthnet(realdata, suffix)
    out = tmp_path / "ben.tif"
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        prepare_scene(s2, s1, out, progress=False)
    # 2017 products carry no offset; with no metadata the date decides and a warning says so
    assert "pass --s2-offset" in caplog.text
    b02 = next(s2.glob("*_B02.tif"))
    with rasterio.open(out) as ds, rasterio.open(b02) as ref, rasterio.open(s1) as vv:
        assert ds.descriptions == BAND_NAMES
        assert ds.crs == ref.crs and ds.transform == ref.transform and ds.shape == ref.shape
        a = ds.read()
        dn = ref.read(1)
        vv_in = vv.read(1)
    inputs_valid = (dn > 0) & np.isfinite(vv_in)
    assert inputs_valid.mean() > 0.99
    finite = np.isfinite(a).all(axis=0)
    # finite wherever the inputs are valid, except a GLCM window without pairs (never here)
    np.testing.assert_array_equal(finite, inputs_valid)
    # B02 reflectance is DN / 10000 (offset 0 for 2017), on the same grid: exact
    np.testing.assert_allclose(a[0][finite], dn[finite] / 10000.0, rtol=1e-6)
    # S1 is already on this grid in dB: VV is the Lee-filtered input, close to it on average
    assert abs(np.nanmean(a[12]) - np.nanmean(vv_in)) < 1.0
    assert np.nanstd(a[12]) < np.nanstd(vv_in)  # speckle filter smooths
    assert (a[13:][:, finite] >= -1).all()  # textures finite and in range (correlation >= -1)


def test_bigearthnet_speckle_none_keeps_db(realdata, tmp_path):
    s2, s1 = _bigearthnet(realdata, "87_48")
    prep = Preprocessing(s1=S1Params(speckle_filter="none"))
    with open_scene(s2, s1, prep) as src:
        x = src.read(Window(0, 0, src.width, src.height))
        assert src.s1.units == "db"
    vv_in = rasterio.open(s1).read(1)
    np.testing.assert_allclose(x[12], vv_in, atol=1e-4)  # same grid: dB -> power -> dB round trip


def test_l1c_jp2_reading_and_refusal(realdata):
    l1c = realdata / "s2_l1c_T33UUU"
    s1 = next((realdata / "s1_vv_db_camargue").glob("*.tif"))
    with pytest.raises(InputError, match="Level-1C product .*not Level-2A.*Sen2Cor"):
        open_scene(l1c, s1)
    # The JP2 reading itself (10 m and 20 m JP2 on one grid) works for L1C too.
    with S2Reader(l1c, allow_l1c=True) as r:
        assert r.metadata.level == "L1C"
        assert r.grid.res == (10.0, 10.0) and (r.grid.width, r.grid.height) == (1536, 768)
        assert r.band_refs["B11"].path.suffix == ".jp2"
        w = Window(200, 100, 96, 64)
        x = r.read(w)
        assert x.shape == (9, 64, 96) and np.isfinite(x).all()
        with rasterio.open(r.band_refs["B11"].path) as b11:
            assert b11.res == (20.0, 20.0)
            src = b11.read(1, window=Window(100, 50, 48, 32)).astype(np.float64) / 10000.0
        with rasterio.open(r.band_refs["B04"].path) as b04:
            b4 = b04.read(1, window=w).astype(np.float64) / 10000.0
    np.testing.assert_allclose(x[2], b4, rtol=1e-6)  # 10 m band: read as is
    # 20 m band resampled bilinearly: block means agree with the 20 m source
    up = x[S2_BANDS.index("B11")].astype(np.float64).reshape(32, 2, 48, 2).mean(axis=(1, 3))
    assert abs(up[2:-2, 2:-2].mean() - src[2:-2, 2:-2].mean()) < 0.005
    assert np.corrcoef(up[2:-2, 2:-2].ravel(), src[2:-2, 2:-2].ravel())[0, 1] > 0.9


def test_camargue_s1_warped_onto_another_grid(realdata, tmp_path):
    s1 = next((realdata / "s1_vv_db_camargue").glob("*.tif"))
    with rasterio.open(s1) as ds:
        assert ds.crs.to_epsg() == 32631 and ds.nodata == -99
        b = transform_bounds(ds.crs, "EPSG:2154", *ds.bounds)
        src_db, src_t, src_crs = ds.read(1), ds.transform, ds.crs
    # An S2-like 10 m grid in Lambert-93 (EPSG:2154) inside the S1 footprint.
    x0 = np.floor((b[0] + 0.25 * (b[2] - b[0])) / 10) * 10
    y0 = np.floor((b[3] - 0.25 * (b[3] - b[1])) / 10) * 10
    t10 = from_origin(x0, y0, 10.0, 10.0)
    size = 160
    s2 = tmp_path / "S2B_MSIL2A_20150310T103019_T31TFJ"
    s2.mkdir()
    rng = np.random.default_rng(0)
    for band in S2_BANDS:
        ten = band in ("B02", "B03", "B04", "B08")
        n = size if ten else size // 2
        prof = dict(driver="GTiff", width=n, height=n, count=1, dtype="uint16", crs="EPSG:2154",
                    transform=t10 if ten else from_origin(x0, y0, 20.0, 20.0), nodata=0)
        with rasterio.open(s2 / f"T31TFJ_20150310T103019_{band}.tif", "w", **prof) as dst:
            dst.write(rng.integers(200, 4000, (1, n, n)).astype(np.uint16))
    prep = Preprocessing(s1=S1Params(speckle_filter="none"))
    out = prepare_scene(s2, s1, tmp_path / "cam.tif", prep, block=64, progress=False)
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 2154 and ds.transform == t10
        vv = ds.read(13)
    # Independent path: warp the whole S1 raster at once (linear power, bilinear) with rasterio.
    lin = np.where(src_db == -99, np.nan, 10 ** (src_db / 10)).astype(np.float32)
    ref = np.full((size, size), np.nan, np.float32)
    reproject(lin, ref, src_transform=src_t, src_crs=src_crs, src_nodata=np.nan,
              dst_transform=t10, dst_crs="EPSG:2154", dst_nodata=np.nan,
              resampling=Resampling.bilinear)
    ref_db = 10 * np.log10(ref)
    ok = np.isfinite(ref_db)
    assert ok.mean() > 0.95
    np.testing.assert_array_equal(np.isfinite(vv), ok)
    # GDAL approximates the CRS transformation (error threshold 0.125 px), we transform exactly
    np.testing.assert_allclose(vv[ok], ref_db[ok], atol=5e-3)
    assert -20 < np.median(vv[ok]) < -5 and vv[ok].min() > -40  # -99 nodata never leaks in
    # blocks across a CRS change equal the whole scene bit for bit (default Lee filter on)
    a = prepare_scene(s2, s1, tmp_path / "a.tif", block=48, progress=False)
    b = prepare_scene(s2, s1, tmp_path / "b.tif", block=4096, progress=False)
    np.testing.assert_array_equal(rasterio.open(a).read(), rasterio.open(b).read())
