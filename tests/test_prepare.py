"""coal-prepare / coalmine.runtime.preprocess on synthetic scenes: stack content, exactness under
blocking, input forms (folder, multi-band GeoTIFF, SAFE), offset rule, S1 units/CRS/GCPs, SCL."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.runtime.bands import BAND_NAMES, S2_BANDS
from coalmine.runtime.bundle import GlcmParams, Preprocessing, S1Params
from coalmine.runtime.cli.prepare import main
from coalmine.runtime.errors import InputError
from coalmine.runtime.preprocess import (
    PREPROCESSING_TAG,
    RawSource,
    StackSource,
    open_scene,
    prepare_scene,
)
from coalmine.runtime.preprocess.indices import compute_indices, normalized_difference
from coalmine.runtime.preprocess.speckle import box_sum, lee_filter
from coalmine.runtime.preprocess.stack import check_preprocessing
from coalmine.train.synth import make_scene
from rasterio.control import GroundControlPoint
from rasterio.windows import Window

SIZE = 192


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("prep"), 2022, seed=4, size=SIZE, cloud_cover=0.08)


@pytest.fixture(scope="module")
def stack(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("stack") / "scene.tif"
    prepare_scene(synth.s2_dir, synth.s1_path, out, block=4096, progress=False)
    return out


def test_stack_layout(synth, stack):
    with rasterio.open(stack) as ds:
        assert ds.count == 23 and ds.dtypes == ("float32",) * 23
        assert ds.descriptions == BAND_NAMES
        assert ds.crs == synth.crs and ds.transform == synth.transform
        assert (ds.width, ds.height) == (SIZE, SIZE)
        assert np.isnan(ds.nodata)
        assert ds.profile["tiled"] and ds.profile["blockxsize"] == 512
        assert ds.compression is not None
        prep = Preprocessing.from_dict(json.loads(ds.tags()[PREPROCESSING_TAG]))
        assert prep.glcm == Preprocessing().glcm
        assert prep.s1.units == "linear"  # detected and recorded
        inputs = json.loads(ds.tags()["COALMINE_INPUTS"])
        assert inputs["s2_offset"] == -1000 and "MTD_MSIL2A" in inputs["s2_offset_source"]
        a = ds.read()
    valid = np.isfinite(a).all(axis=0)
    # invalid pixels are NaN in every band
    assert np.isnan(a[:, ~valid]).all()
    lab = rasterio.open(synth.label_path).read(1)
    assert not valid[lab == 255].any()  # S2 nodata corner
    assert valid.mean() > 0.85
    # reflectance after the -1000 offset: vegetation NIR in a plausible range
    assert 0.15 < np.median(a[6][valid]) < 0.45
    assert (a[:9][:, valid] >= 0).all()
    # indices agree with the bands they come from
    np.testing.assert_allclose(a[9][valid], ((a[6] - a[2]) / (a[6] + a[2]))[valid], atol=1e-6)
    # VV dB of land and water; GLCM features in their ranges
    assert -30 < np.median(a[12][valid]) < 0
    assert (a[13][valid] >= 0).all()  # contrast
    assert ((a[15][valid] > 0) & (a[15][valid] <= 1)).all()  # homogeneity


def test_blocks_equal_whole_scene(synth, stack, tmp_path):
    small = prepare_scene(synth.s2_dir, synth.s1_path, tmp_path / "b64.tif", block=64,
                          progress=False)
    a = rasterio.open(stack).read()
    b = rasterio.open(small).read()
    np.testing.assert_array_equal(a, b)  # NaN in the same places, values bit for bit


def test_open_scene_reads_any_window_exactly(synth, stack):
    whole = rasterio.open(stack).read()
    with open_scene(synth.s2_dir, synth.s1_path) as raw:
        assert isinstance(raw, RawSource)
        assert raw.bands == BAND_NAMES and raw.crs == synth.crs and raw.res == (10.0, 10.0)
        for w in (Window(0, 0, 17, 33), Window(101, 57, 91, 40), Window(150, 170, 42, 22)):
            part = raw.read(w)
            assert part.shape == (23, w.height, w.width) and part.dtype == np.float32
            np.testing.assert_array_equal(
                part, whole[:, w.row_off: w.row_off + w.height, w.col_off: w.col_off + w.width])
    with open_scene(stack) as st:
        assert isinstance(st, StackSource)
        assert st.preprocessing == raw.preprocessing
        assert st.bounds == raw.bounds
        w = Window(5, 9, 60, 30)
        np.testing.assert_array_equal(st.read(w), whole[:, 9:39, 5:65])
        assert check_preprocessing(st, SimpleNamespace(preprocessing=raw.preprocessing, path="b")) == []
        other = Preprocessing(glcm=GlcmParams(db_range=(-30.0, 0.0)).with_default_edges())
        with pytest.raises(InputError, match="was prepared with GLCM bin edges"):
            check_preprocessing(st, SimpleNamespace(preprocessing=other, path="b"))


def test_other_glcm_edges_change_textures_only(synth, stack, tmp_path):
    prep = Preprocessing(glcm=GlcmParams(db_range=(-30.0, 10.0)).with_default_edges())
    out = prepare_scene(synth.s2_dir, synth.s1_path, tmp_path / "e.tif", prep, progress=False)
    a, b = rasterio.open(stack).read(), rasterio.open(out).read()
    np.testing.assert_array_equal(a[:13], b[:13])
    assert not np.array_equal(a[13:], b[13:], equal_nan=True)


def test_offset_metadata_explicit_and_guess(synth, tmp_path, caplog):
    # Old product (2021): offset 0 from the baseline; same landscape -> similar reflectance.
    old = make_scene(tmp_path, 2021, seed=4, size=SIZE, cloud_cover=0.08)
    with open_scene(old.s2_dir, old.s1_path) as o, open_scene(synth.s2_dir, synth.s1_path) as n:
        assert o.s2.offset.value == 0 and "baseline 03.01" in o.s2.offset.source
        assert n.s2.offset.value == -1000
        w = Window(100, 100, 64, 64)
        ro, rn = o.read(w)[6], n.read(w)[6]
        ok = np.isfinite(ro) & np.isfinite(rn)
        assert abs(np.median(ro[ok]) - np.median(rn[ok])) < 0.03
    # Explicit offset wins, with a warning when it contradicts the metadata.
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        with open_scene(synth.s2_dir, synth.s1_path, s2_offset=0) as e:
            assert e.s2.offset.value == 0 and e.s2.offset.source.startswith("explicit")
    assert "overrides" in caplog.text
    # No metadata at all: guessed from the date in the file names, with a warning.
    bare = tmp_path / "bare"
    bare.mkdir()
    for b, p in synth.band_paths.items():
        with rasterio.open(p) as src:
            prof, data = src.profile, src.read()
        with rasterio.open(bare / f"S2B_{b}_20230102T022551.tif", "w", **prof) as dst:
            dst.write(data)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        with open_scene(bare, synth.s1_path) as g:
            assert g.s2.offset.value == -1000 and g.s2.offset.source.startswith("guess")
    assert "guessed offset -1000" in caplog.text and "--s2-offset" in caplog.text


def test_multiband_geotiff_and_safe_forms(synth, stack, tmp_path):
    whole = rasterio.open(stack).read()
    # multi-band GeoTIFF at 10 m with descriptions (bands resampled already, e.g. a GEE export)
    with rasterio.open(synth.band_paths["B02"]) as ref:
        prof = ref.profile
    bands = []
    for b in S2_BANDS:
        with rasterio.open(synth.band_paths[b]) as src:
            bands.append(src.read(1, out_shape=(SIZE, SIZE), resampling=rasterio.enums.Resampling.nearest))
    prof.update(count=9)
    mb = tmp_path / "s2_stack_20220715.tif"
    with rasterio.open(mb, "w", **prof) as dst:
        dst.write(np.stack(bands))
        for i, b in enumerate(S2_BANDS, 1):
            dst.set_band_description(i, b.replace("B0", "B"))  # "B2" style names work too
        dst.update_tags(BOA_ADD_OFFSET="-1000")
    with open_scene(mb, synth.s1_path) as src:
        assert src.s2.kind == "multiband" and src.s2.offset.value == -1000
        x = src.read(Window(0, 0, SIZE, SIZE))
    # validity differs only along the nodata corner (20 m bands: nearest here, bilinear there)
    both = np.isfinite(x).all(0) & np.isfinite(whole).all(0)
    assert (np.isfinite(x).all(0) != np.isfinite(whole).all(0)).sum() < 2 * SIZE
    for i in (0, 1, 2, 6, *range(12, 23)):  # 10 m bands and the radar part: identical
        np.testing.assert_array_equal(x[i][both], whole[i][both])

    # SAFE layout: finest resolution chosen, QI_DATA masks ignored, MTD at the root
    safe = tmp_path / "S2B_MSIL2A_20220715T022551_N0400_R046_T50MLA_20220715T050000.SAFE"
    img = safe / "GRANULE" / "L2A_T50MLA_A027000_20220715T023000" / "IMG_DATA"
    qi = safe / "GRANULE" / "L2A_T50MLA_A027000_20220715T023000" / "QI_DATA"
    for d in (img / "R10m", img / "R20m", qi):
        d.mkdir(parents=True)
    for p in synth.band_paths.values():
        res = "R10m" if "_10m" in p.name else "R20m"
        shutil.copy(p, img / res / p.name)
        if res == "R10m":  # SAFE also has 20 m versions of the 10 m bands
            with rasterio.open(p) as src:
                prof, data = src.profile, src.read(out_shape=(1, SIZE // 2, SIZE // 2))
            prof.update(width=SIZE // 2, height=SIZE // 2,
                        transform=src.transform * src.transform.scale(2, 2))
            with rasterio.open(img / "R20m" / p.name.replace("_10m", "_20m"), "w", **prof) as d:
                d.write(data)
    shutil.copy(synth.band_paths["B02"], qi / "MSK_DETFOO_B02.tif")
    shutil.copy(synth.s2_dir / "MTD_MSIL2A.xml", safe / "MTD_MSIL2A.xml")
    with open_scene(safe, synth.s1_path) as src:
        assert src.s2.kind == "safe"
        assert src.s2.band_refs["B02"].path.parent.name == "R10m"
        np.testing.assert_array_equal(src.read(Window(0, 0, SIZE, SIZE)), whole)


def _rewrite_s1(synth, path, fn, **prof_update):
    with rasterio.open(synth.s1_path) as src:
        prof, a = src.profile, src.read(1)
    prof.update(prof_update)
    a = fn(a)
    prof["dtype"] = a.dtype.name
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(a, 1)
    return path


def test_s1_db_input_equals_linear(synth, stack, tmp_path):
    db = _rewrite_s1(synth, tmp_path / "vv_db.tif",
                     lambda a: (10 * np.log10(a)).astype(np.float32), nodata=-99.0)
    with open_scene(synth.s2_dir, db) as src:
        assert src.s1.units == "db"
        x = src.read(Window(0, 0, SIZE, SIZE))
    whole = rasterio.open(stack).read()
    ok = np.isfinite(x[12]) & np.isfinite(whole[12])
    np.testing.assert_allclose(x[12][ok], whole[12][ok], atol=1e-3)


def test_s1_gcps_and_other_crs(synth, stack, tmp_path):
    # The same S1 raster geocoded by GCPs instead of a geotransform: nearly the same VV.
    with rasterio.open(synth.s1_path) as src:
        prof, a, t = src.profile, src.read(1), src.transform
    gcps = []
    for r in np.linspace(0, a.shape[0], 5):
        for c in np.linspace(0, a.shape[1], 5):
            x, y = t * (c, r)
            gcps.append(GroundControlPoint(row=r, col=c, x=x, y=y))
    prof.pop("transform")
    prof["crs"] = None
    g = tmp_path / "vv_gcps.tif"
    with rasterio.open(g, "w", **prof) as dst:
        dst.write(a, 1)
        dst.gcps = (gcps, synth.s1_crs)
    whole = rasterio.open(stack).read()
    with open_scene(synth.s2_dir, g) as src:
        x = src.read(Window(20, 20, 120, 120))
        # exact under windowing with GCPs too
        np.testing.assert_array_equal(src.read(Window(0, 0, SIZE, SIZE))[:, 20:140, 20:140], x)
    ok = np.isfinite(x[12]) & np.isfinite(whole[12, 20:140, 20:140])
    assert ok.mean() > 0.8
    assert np.abs(x[12][ok] - whole[12, 20:140, 20:140][ok]).max() < 0.05
    # S1 in geographic coordinates (as Earth Engine exports): warped, plausible VV everywhere
    geo = make_scene(tmp_path / "geo", 2022, seed=4, size=SIZE, s1_crs="EPSG:4326")
    with open_scene(geo.s2_dir, geo.s1_path) as src:
        v = src.read(Window(0, 0, SIZE, SIZE))[12]
    both = np.isfinite(v) & np.isfinite(whole[12])
    assert both.mean() > 0.85
    # same landscape, other speckle draw and grid: scene medians agree within 1 dB
    assert abs(np.median(v[both]) - np.median(whole[12][both])) < 1.0


def test_scl_mask(synth, stack, tmp_path):
    out = prepare_scene(synth.s2_dir, synth.s1_path, tmp_path / "scl.tif", scl="auto",
                        progress=False)
    a, b = rasterio.open(stack).read(), rasterio.open(out).read()
    va, vb = np.isfinite(a).all(0), np.isfinite(b).all(0)
    with rasterio.open(synth.scl_path) as s:
        scl10 = np.repeat(np.repeat(s.read(1), 2, 0), 2, 1)
    masked = np.isin(scl10, (0, 1, 3, 8, 9, 10))
    assert masked.any() and not vb[masked].any()
    np.testing.assert_array_equal(vb, va & ~masked)
    np.testing.assert_array_equal(a[:, vb], b[:, vb])
    # explicit path works the same
    out2 = prepare_scene(synth.s2_dir, synth.s1_path, tmp_path / "scl2.tif", scl=synth.scl_path,
                         progress=False)
    np.testing.assert_array_equal(b, rasterio.open(out2).read())


def test_speckle_options(synth, stack, tmp_path):
    prep = Preprocessing(s1=S1Params(speckle_filter="none"))
    with open_scene(synth.s2_dir, synth.s1_path, prep) as src:
        raw = src.read(Window(0, 0, SIZE, SIZE))[12]
    filt = rasterio.open(stack).read(13)
    ok = np.isfinite(raw) & np.isfinite(filt)
    # the Lee filter lowers the pixel-to-pixel spread of VV (speckle) a lot
    assert np.std(np.diff(filt[ok].reshape(-1)[:5000])) < 0.7 * np.std(np.diff(raw[ok].reshape(-1)[:5000]))


def test_lee_filter_properties():
    rng = np.random.default_rng(0)
    flat = rng.gamma(4.4, 0.1 / 4.4, size=(80, 80)).astype(np.float32)
    f = lee_filter(flat, 7)
    assert f.std() < 0.5 * flat.std()
    assert abs(f.mean() - flat.mean()) < 0.01 * flat.mean()
    # a bright point target on a dark background is kept (k -> 1 where variance is high)
    img = np.full((21, 21), 0.01, np.float32)
    img[10, 10] = 10.0
    assert lee_filter(img, 5)[10, 10] > 5.0
    # NaN stays NaN and is left out of neighbours' statistics
    img2 = img.copy()
    img2[0, 0] = np.nan
    out = lee_filter(img2, 3)
    assert np.isnan(out[0, 0]) and np.isfinite(out[1:, 1:]).all()
    # box sums: hand-checked small case, window clipped at the edges
    np.testing.assert_array_equal(box_sum(np.ones((3, 4)), 3), [[4, 6, 6, 4], [6, 9, 9, 6], [4, 6, 6, 4]])
    with pytest.raises(ValueError, match="odd"):
        lee_filter(flat, 4)


def test_indices_zero_denominator():
    a = np.array([0.3, 0.0, 0.2, np.nan], np.float32)
    b = np.array([0.1, 0.0, 0.2, 0.1], np.float32)
    r = normalized_difference(a, b)
    np.testing.assert_allclose(r[[0, 2]], [0.5, 0.0], rtol=1e-6)
    assert np.isnan(r[1]) and np.isnan(r[3]) and not np.isinf(r).any()
    refl = np.zeros((9, 1, 1), np.float32)
    assert np.isnan(compute_indices(refl)).all()


def test_cli_cogs_and_options(synth, stack, tmp_path):
    edges = tmp_path / "edges.json"
    edges.write_text(json.dumps(list(Preprocessing().glcm.edges)))
    out = tmp_path / "cli.tif"
    tj = tmp_path / "t.json"
    r = CliRunner().invoke(main, ["--s2", str(synth.s2_dir), "--s1", str(synth.s1_path), "-o",
                                  str(out), "--glcm-edges", str(edges), "--cog", "-q",
                                  "--block", "96", "--timings", str(tj)])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(str(out))[0]
    np.testing.assert_array_equal(rasterio.open(out).read(), rasterio.open(stack).read())
    with rasterio.open(out) as ds:
        assert ds.descriptions == BAND_NAMES and PREPROCESSING_TAG in ds.tags()
    t = json.loads(tj.read_text())
    assert t["blocks"] == 4 and {"glcm", "read_s2", "warp_s1", "write", "total"} <= set(t)
    r = CliRunner().invoke(main, ["--s2", str(synth.s2_dir), "--s1", str(synth.s1_path), "-o",
                                  str(tmp_path / "d.tif"), "--db-range", "-30", "10", "-q"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "d.tif") as ds:
        g = Preprocessing.from_dict(json.loads(ds.tags()[PREPROCESSING_TAG])).glcm
    assert g.db_range == (-30.0, 10.0) and g.edges[0] == pytest.approx(-30 + 40 / 32)
    r = CliRunner().invoke(main, ["--s2", str(synth.s2_dir), "--s1", str(synth.s1_path), "-o",
                                  str(tmp_path / "x.tif"), "--db-range", "-30", "10",
                                  "--glcm-edges", str(edges)])
    assert r.exit_code == 2 and "either --glcm-edges or --db-range" in r.stderr


def test_cli_bundle_preprocessing(synth, tmp_path):
    from coalmine.runtime.bundle import Bundle, Normalization

    prep = Preprocessing(s1=S1Params(speckle_window=7),
                         glcm=GlcmParams(db_range=(-28.0, 2.0), levels=16).with_default_edges())
    Bundle(path=tmp_path / "bundle", bundle_id="t", bands=BAND_NAMES, preprocessing=prep,
           normalization=Normalization.identity()).save()
    out = tmp_path / "b.tif"
    r = CliRunner().invoke(main, ["--s2", str(synth.s2_dir), "--s1", str(synth.s1_path), "-o",
                                  str(out), "--glcm-edges", str(tmp_path / "bundle"), "-q"])
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as ds:
        got = Preprocessing.from_dict(json.loads(ds.tags()[PREPROCESSING_TAG]))
    assert got.glcm == prep.glcm and got.s1.speckle_window == 7  # the bundle's, whole
    r = CliRunner().invoke(main, ["--s2", str(synth.s2_dir), "--s1", str(synth.s1_path), "-o",
                                  str(out), "--glcm-edges", str(tmp_path / "bundle"),
                                  "--speckle-window", "3", "-q"])
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as ds:
        got = Preprocessing.from_dict(json.loads(ds.tags()[PREPROCESSING_TAG]))
    assert got.glcm == prep.glcm and got.s1.speckle_window == 3  # the command line wins


def test_subprocess_run(synth, tmp_path):
    out = tmp_path / "sub.tif"
    exe = Path(sys.executable).parent / "coal-prepare"
    cmd = [str(exe) if exe.exists() else sys.executable, "--s2", str(synth.s2_dir), "--s1",
           str(synth.s1_path), "-o", str(out)]
    if not exe.exists():
        cmd[1:1] = ["-m", "coalmine.runtime.cli.prepare"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(out) and out.is_file()
    assert "units linear" in p.stderr  # logs on stderr, data (the path) on stdout
    bad = subprocess.run(cmd[:-1] + [str(tmp_path / "y.tif"), "--s2-offset", "1000"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("coal-prepare: error: --s2-offset 1000")
    assert "Traceback" not in bad.stderr
