"""Tests for the synthetic scene generator coalmine.train.synth."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rasterio
from coalmine.train.synth import ENL, make_scene, make_series

BANDS10 = ("B02", "B03", "B04", "B08")
BANDS20 = ("B05", "B06", "B07", "B11", "B12")


def _digest(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        with rasterio.open(p) as ds:
            h.update(ds.read().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("synth"), 2019, seed=11, size=256)


def test_grids_bands_and_types(scene):
    for b in BANDS10 + BANDS20:
        p = scene.band_paths[b]
        assert b in p.name and p.parent == scene.s2_dir
        with rasterio.open(p) as ds:
            assert ds.dtypes[0] == "uint16" and ds.nodata == 0
            assert ds.crs == scene.crs and ds.crs.to_epsg() == 32750
            want = 10.0 if b in BANDS10 else 20.0
            assert ds.res == (want, want)
            assert ds.bounds == rasterio.open(scene.band_paths["B02"]).bounds
    with rasterio.open(scene.s1_path) as s1:
        assert s1.crs.to_epsg() == 32750 and s1.dtypes[0] == "float32"
        assert s1.transform != scene.transform  # another grid: origin shifted
        # S1 covers the S2 extent
        s2b = rasterio.open(scene.band_paths["B02"]).bounds
        assert s1.bounds.left < s2b.left and s1.bounds.right > s2b.right
        assert s1.bounds.bottom < s2b.bottom and s1.bounds.top > s2b.top
        a = s1.read(1)
        assert np.isfinite(a).all() and (a > 0).all()
        assert 1e-4 < np.median(a) < 1.0  # sigma0 linear power, not dB and not DN
    with rasterio.open(scene.label_path) as lab:
        assert lab.transform == scene.transform and lab.nodata == 255
        assert set(np.unique(lab.read(1))) <= {0, 1, 255}
        assert (lab.read(1) == 1).sum() == scene.mine_pixels > 0


def test_label_nodata_matches_s2_nodata(tmp_path):
    s = make_scene(tmp_path, 2016, seed=3, size=128, nodata_corner=True)
    b02 = rasterio.open(s.band_paths["B02"]).read(1)
    lab = rasterio.open(s.label_path).read(1)
    assert (b02 == 0).any()
    np.testing.assert_array_equal(b02 == 0, lab == 255)


def test_deterministic_for_a_seed(tmp_path):
    a = make_scene(tmp_path / "a", 2018, seed=5, size=128)
    b = make_scene(tmp_path / "b", 2018, seed=5, size=128)
    c = make_scene(tmp_path / "c", 2018, seed=6, size=128)

    def files(s):
        return [*s.band_paths.values(), s.s1_path, s.label_path, s.scl_path]

    assert _digest(files(a)) == _digest(files(b))
    assert _digest(files(a)) != _digest(files(c))


def test_baseline_offset_follows_year(tmp_path):
    old = make_scene(tmp_path, 2021, seed=4, size=128, cloud_cover=0.0)
    new = make_scene(tmp_path, 2022, seed=4, size=128, cloud_cover=0.0)
    assert (old.boa_add_offset, new.boa_add_offset) == (0, -1000)
    assert old.processing_baseline < "04.00" <= new.processing_baseline
    mtd = (new.s2_dir / "MTD_MSIL2A.xml").read_text()
    assert "<PROCESSING_BASELINE>04.00</PROCESSING_BASELINE>" in mtd and "-1000" in mtd
    d_old = rasterio.open(old.band_paths["B08"]).read(1).astype(float)
    d_new = rasterio.open(new.band_paths["B08"]).read(1).astype(float)
    valid = (d_old > 0) & (d_new > 0)
    # same landscape: the new product's DN are about 1000 higher (noise and mines differ a little)
    assert 900 < np.median(d_new[valid] - d_old[valid]) < 1100
    # reflectance range plausible: vegetation NIR 0.2-0.5
    refl = (d_new[valid] - 1000) / 10000
    assert 0.15 < np.median(refl) < 0.5


def test_series_mines_grow_and_shrink(tmp_path):
    years = range(2016, 2022)
    series = make_series(tmp_path, years, seed=21, size=384, cloud_cover=0.0)
    assert [s.year for s in series] == list(years)
    px = [s.mine_pixels for s in series]
    assert len(set(px)) == len(px)  # the mined area changes every year
    labs = [rasterio.open(s.label_path).read(1) == 1 for s in series]
    newly = [int((b & ~a).sum()) for a, b in zip(labs, labs[1:], strict=False)]
    lost = [int((a & ~b).sum()) for a, b in zip(labs, labs[1:], strict=False)]
    assert all(n > 0 for n in newly)
    assert sum(lost) > 0  # some land leaves the mine class (reclamation)


def test_not_trivially_separable(scene):
    """No single S2 band or VV threshold classifies mine vs not better than 97 %."""
    lab = rasterio.open(scene.label_path).read(1)
    valid = lab != 255
    y = lab[valid] == 1
    for b in ("B02", "B04", "B08", "B11"):
        with rasterio.open(scene.band_paths[b]) as ds:
            x = ds.read(1, out_shape=(scene.height, scene.width)).astype(float)[valid]
        best = max(
            max(((x > t) == y).mean(), ((x <= t) == y).mean())
            for t in np.quantile(x, np.linspace(0.01, 0.99, 99))
        )
        # beat-the-majority is easy (mines are a minority); perfect separation must not be
        assert best < 0.97, b


def test_speckle_and_other_crs(tmp_path):
    s = make_scene(tmp_path, 2020, seed=8, size=128, s1_crs="EPSG:4326")
    with rasterio.open(s.s1_path) as ds:
        assert ds.crs.is_geographic
        a = ds.read(1)
    # gamma speckle with ENL looks: adjacent-pixel ratios are broad (coefficient of variation of a
    # single-look-ratio of two independent gamma(ENL) variables is well above 0.5)
    ratio = a[:, 1:] / a[:, :-1]
    assert np.std(np.log(ratio)) > 0.5
    assert ENL == pytest.approx(4.4)


def test_rejects_bad_size(tmp_path):
    with pytest.raises(ValueError, match="even number"):
        make_scene(tmp_path, 2019, seed=1, size=101)
