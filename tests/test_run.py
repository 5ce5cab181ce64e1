"""End-to-end ``run_scene``: outputs, georeferencing, mask rule, hectares, seams, nodata, refusals."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.aoi import Aoi
from coalmine.runtime.areas import pixel_areas_ha
from coalmine.runtime.backends import onnx as ort_backend
from coalmine.runtime.errors import (
    BandError,
    BundleError,
    InputError,
    OutputError,
    RasterError,
    UsageError,
)
from coalmine.runtime.outputs import mask_level
from coalmine.runtime.run import run_scene
from coalmine.runtime.tiling import block_core, scene_tiling, tile_origins
from factories import DEFAULT_TRANSFORM, StackSource, box, make_stack, make_tiny_bundle, write_stack
from rasterio.crs import CRS
from rasterio.warp import transform_geom
from rio_cogeo.cogeo import cog_validate


def expected_q(stack, bundle, bias):
    """Independent NumPy path for the "linear" tiny model: uint8 probability per pixel."""
    mean = np.asarray(bundle.normalization.mean, np.float64)[:, None, None]
    std = np.asarray(bundle.normalization.std, np.float64)[:, None, None]
    z = np.nan_to_num((stack.astype(np.float64) - mean) / std, nan=0.0)
    logit = z.sum(axis=0) / np.sqrt(stack.shape[0]) + bias
    q = np.rint(250.0 / (1.0 + np.exp(-logit))).astype(np.int32)
    q[~np.isfinite(stack).all(axis=0)] = 255
    return q


def read1(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile, ds


@pytest.fixture
def linear_bundle(tmp_path):
    return make_tiny_bundle(tmp_path / "lin", kind="linear", bias=0.1, tile=64, overlap=16)


def test_end_to_end_outputs_georeferencing_mask_rule_and_hectares(tmp_path, linear_bundle):
    stack = make_stack(150, 190, seed=2, nodata=(10, 30, 100, 140))
    scene = write_stack(tmp_path / "scene.tif", stack)
    out = tmp_path / "out"
    s = run_scene(scene, linear_bundle.path, out, tile=64, block=96, progress=False, min_area_ha=0.0)

    assert sorted(os.listdir(out)) == ["scene_mask.tif", "scene_mines.geojson", "scene_prob.tif",
                                       "scene_summary.json"]  # nothing temporary left behind
    assert json.loads((out / "scene_summary.json").read_text()) == s
    prob, pprof, _ = read1(out / "scene_prob.tif")
    mask, mprof, _ = read1(out / "scene_mask.tif")
    for prof in (pprof, mprof):
        assert prof["crs"] == CRS.from_epsg(32750) and prof["transform"] == DEFAULT_TRANSFORM
        assert (prof["width"], prof["height"]) == (190, 150) and prof["nodata"] == 255
        assert prof["dtype"] == "uint8"
    assert cog_validate(out / "scene_prob.tif")[0] and cog_validate(out / "scene_mask.tif")[0]

    # Probabilities equal an independent NumPy computation (±1 quantisation step at .5 ties).
    q = expected_q(stack, linear_bundle, 0.1)
    assert np.abs(prob.astype(int) - q).max() <= 1
    assert (prob == q).mean() > 0.999
    # mask = prob_u8 >= ceil(250 * threshold), exactly; 255 where the input is nodata.
    valid = prob != 255
    np.testing.assert_array_equal(mask[valid], (prob[valid] >= mask_level(0.5)).astype(np.uint8))
    np.testing.assert_array_equal(mask == 255, prob == 255)
    assert 0.2 < mask[valid].mean() < 0.8  # the test scene has both classes
    # Nodata: exactly the rectangle where one band was NaN.
    nod = np.zeros_like(valid)
    nod[10:30, 100:140] = True
    np.testing.assert_array_equal(~valid, nod)
    assert s["nodata_share"] == pytest.approx(nod.mean())
    # Hectares = mine pixels x pixel area (10 m: 0.01 ha).
    assert s["pixels"]["mine"] == int((mask == 1).sum())
    assert s["areas_ha"]["total"] == pytest.approx(s["pixels"]["mine"] * 0.01, rel=1e-12)
    assert s["bundle"] == {"id": "tiny-test", "version": 1, "created": "2026-01-01T00:00:00+00:00",
                           "path": str(linear_bundle.path), "code_version": "test"}
    assert s["backend"]["name"] == "onnxruntime-cpu" and "auto chose onnxruntime-cpu" in s["backend"]["reason"]
    assert {"read", "normalise", "infer", "blend", "write", "cog", "areas", "polygons", "wall"} <= set(s["timings"])
    # Polygons: EPSG:4326, area_ha each, and their sum matches the raster hectares.
    gj = json.loads((out / "scene_mines.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == s["polygons"]["polygons"] > 0
    lon, lat = gj["features"][0]["geometry"]["coordinates"][0][0]
    assert 110 < lon < 120 and -10 < lat < 0
    total_poly = sum(f["properties"]["area_ha"] for f in gj["features"])
    assert total_poly == pytest.approx(s["areas_ha"]["total"], rel=0.005)


def test_geographic_grid_hectares(tmp_path, linear_bundle):
    stack = make_stack(96, 128, seed=4)
    tr = Affine(1e-4, 0, 115.0, 0, -1e-4, -2.7)
    scene = write_stack(tmp_path / "geo.tif", stack, crs=CRS.from_epsg(4326), transform=tr)
    s = run_scene(scene, linear_bundle, tmp_path / "o", tile=64, progress=False)
    mask, _, _ = read1(tmp_path / "o" / "geo_mask.tif")
    rows = pixel_areas_ha("EPSG:4326", tr, 96, 128)[:, 0]
    # Independent reference: pyproj's geodesic area of the first row's cell (~11.06 m x 11.12 m).
    from pyproj import Geod

    ring = box(115.0, -2.7001, 115.0001, -2.7, n=50)["coordinates"][0]
    ref = abs(Geod(ellps="WGS84").polygon_area_perimeter([p[0] for p in ring], [p[1] for p in ring])[0]) / 1e4
    assert rows[0] == pytest.approx(ref, rel=1e-4)
    assert s["areas_ha"]["total"] == pytest.approx(float(((mask == 1).sum(axis=1) * rows).sum()), rel=1e-12)
    assert s["pixel_area_ha"]["grid"].startswith("geographic")


def test_aoi_hectares_and_aoi_outside(tmp_path, linear_bundle):
    stack = make_stack(100, 100, seed=5)
    scene = write_stack(tmp_path / "s.tif", stack)
    x0, y0 = DEFAULT_TRANSFORM @ (0, 0)
    # AOI = the top half of the scene (rows 0..49), given in EPSG:4326.
    half = box(x0, y0 - 500, x0 + 1000, y0, n=20)
    aois = [Aoi("top", transform_geom("EPSG:32750", "EPSG:4326", half), CRS.from_epsg(4326)),
            Aoi("elsewhere", box(10.0, 50.0, 10.1, 50.1), CRS.from_epsg(4326))]
    s = run_scene(scene, linear_bundle, tmp_path / "o", aoi=aois, tile=64, progress=False)
    mask, _, _ = read1(tmp_path / "o" / "s_mask.tif")
    assert s["aoi_pixels"]["top"] == pytest.approx(int((mask[:50] == 1).sum()), abs=3)
    assert s["areas_ha"]["aois"]["top"] == pytest.approx(s["aoi_pixels"]["top"] * 0.01)
    assert s["areas_ha"]["aois"]["elsewhere"] is None and s["aoi_valid_share"]["elsewhere"] == 0.0  # no data, not 0 ha
    assert any("'elsewhere' does not overlap" in w for w in s["warnings"])


def test_scene_smaller_than_one_tile(tmp_path, linear_bundle):
    stack = make_stack(40, 23, seed=6)
    scene = write_stack(tmp_path / "small.tif", stack)
    s = run_scene(scene, linear_bundle, tmp_path / "o", tile=64, progress=False)
    prob, prof, _ = read1(tmp_path / "o" / "small_prob.tif")
    assert prob.shape == (40, 23) and s["tiling"]["tiles"] == 1
    assert np.abs(prob.astype(int) - expected_q(stack, linear_bundle, 0.1)).max() <= 1


def _seam_run(tmp_path, bundle, stack, col0, name, overlap):
    sub = stack[:, :, col0 : col0 + 230]
    tr = DEFAULT_TRANSFORM @ Affine.translation(col0, 0)
    scene = write_stack(tmp_path / f"{name}.tif", sub, transform=tr)
    run_scene(scene, bundle, tmp_path / "o", tile=64, overlap=overlap, block=96, progress=False)
    with rasterio.open(tmp_path / "o" / f"{name}_prob.tif") as p, rasterio.open(tmp_path / "o" / f"{name}_mask.tif") as m:
        return p.read(1).astype(int), m.read(1)


def test_seams_shifted_scene_gives_the_same_mask(tmp_path):
    # An 11 px receptive-field model with zero padding at tile borders: without overlap and
    # blending, tile borders show. Shift the scene by 37 px (not a multiple of the 48 px
    # stride): tile and block borders fall elsewhere, the mask on the overlap must agree.
    # The 5 px along each scene's own edge (the receptive-field radius) are left out: there
    # one scene has real context and the other has none, which is a scene edge, not a seam.
    bundle = make_tiny_bundle(tmp_path / "conv", kind="conv", seed=3, tile=64, overlap=16)
    stack = make_stack(150, 267, seed=7, scale=6.0)
    rf = 5
    inner = (slice(rf, -rf), slice(rf, -rf))

    def overlap_of(a, b):
        return a[:, 37:230][inner], b[:, : 230 - 37][inner]

    pa, ma = _seam_run(tmp_path, bundle, stack, 0, "a", 16)
    pb, mb = _seam_run(tmp_path, bundle, stack, 37, "b", 16)
    ov_a, ov_b = overlap_of(ma, mb)
    assert 0.1 < (ov_a == 1).mean() < 0.9
    agree = (ov_a == ov_b).mean()
    assert agree >= 0.995, agree
    diff_blend = np.abs(np.subtract(*overlap_of(pa, pb)))
    # Control: the same comparison without overlap shows the tile borders.
    pa0, ma0 = _seam_run(tmp_path, bundle, stack, 0, "a0", 0)
    pb0, mb0 = _seam_run(tmp_path, bundle, stack, 37, "b0", 0)
    diff_hard = np.abs(np.subtract(*overlap_of(pa0, pb0)))
    assert (np.equal(*overlap_of(ma0, mb0))).mean() < agree
    assert diff_hard.max() > 2 * diff_blend.max()
    assert diff_hard.mean() > 5 * diff_blend.mean()


def test_nodata_propagates_from_any_band(tmp_path, linear_bundle):
    stack = make_stack(80, 90, seed=8)
    stack[0, 5, 7] = np.nan
    stack[22, 60:80, 0:10] = np.nan
    scene = write_stack(tmp_path / "nd.tif", stack)
    s = run_scene(scene, linear_bundle, tmp_path / "o", tile=64, progress=False)
    prob, _, _ = read1(tmp_path / "o" / "nd_prob.tif")
    mask, _, _ = read1(tmp_path / "o" / "nd_mask.tif")
    bad = ~np.isfinite(stack).all(axis=0)
    np.testing.assert_array_equal(prob == 255, bad)
    np.testing.assert_array_equal(mask == 255, bad)
    assert s["pixels"]["nodata"] == int(bad.sum()) == 201


def test_min_mapping_unit_drops_small_polygons(tmp_path, linear_bundle):
    scene = write_stack(tmp_path / "m.tif", make_stack(120, 120, seed=9, scale=4.0))
    s0 = run_scene(scene, linear_bundle, tmp_path / "o0", tile=64, progress=False)
    s1 = run_scene(scene, linear_bundle, tmp_path / "o1", tile=64, progress=False, min_area_ha=2.0)
    gj = json.loads((tmp_path / "o1" / "m_mines.geojson").read_text())
    assert all(f["properties"]["area_ha"] >= 2.0 for f in gj["features"])
    assert s1["polygons"]["polygons"] + s1["polygons"]["dropped_below_mmu"] == s0["polygons"]["polygons"]
    assert s1["polygons"]["dropped_below_mmu"] > 0
    assert s1["areas_ha"]["total"] == s0["areas_ha"]["total"]  # rasters are not filtered


def test_failure_mid_run_leaves_nothing(tmp_path, linear_bundle, monkeypatch):
    scene = write_stack(tmp_path / "f.tif", make_stack(200, 200, seed=1))
    calls = {"n": 0}
    real = ort_backend.OnnxBackend.infer

    def flaky(self, x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated GPU loss")
        return real(self, x)

    monkeypatch.setattr(ort_backend.OnnxBackend, "infer", flaky)
    out = tmp_path / "o"
    with pytest.raises(RuntimeError, match="simulated GPU loss"):
        run_scene(scene, linear_bundle, out, tile=64, block=96, batch_size=1, progress=False)
    assert os.listdir(out) == []


def test_outputs_replace_previous_run(tmp_path, linear_bundle):
    scene = write_stack(tmp_path / "r.tif", make_stack(70, 70, seed=1))
    run_scene(scene, linear_bundle, tmp_path / "o", tile=64, progress=False)
    s = run_scene(scene, linear_bundle, tmp_path / "o", tile=64, progress=False, threshold=0.7, prefix="r")
    mask, _, _ = read1(tmp_path / "o" / "r_mask.tif")
    prob, _, _ = read1(tmp_path / "o" / "r_prob.tif")
    np.testing.assert_array_equal(mask, (prob >= 175).astype(np.uint8))
    assert s["threshold"] == 0.7 and len(os.listdir(tmp_path / "o")) == 4


# -- refusals --------------------------------------------------------------------------------
@pytest.fixture
def good_scene(tmp_path):
    return write_stack(tmp_path / "g.tif", make_stack(64, 64, seed=0))


def _refused(tmp_path, exc, msg, **kw):
    out = kw.pop("out", tmp_path / "refused")
    args = {"progress": False, "tile": 64, **kw}
    scene = args.pop("scene")
    bundle = args.pop("bundle")
    with pytest.raises(exc) as e:
        run_scene(scene, bundle, out, **args)
    assert msg in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
    assert not out.exists() or os.listdir(out) == []
    return str(e.value)


def test_refuses_bad_bundle(tmp_path, good_scene):
    (tmp_path / "nob").mkdir()
    _refused(tmp_path, BundleError, "has no bundle.json; pass --bundle the folder coal-train wrote",
             scene=good_scene, bundle=tmp_path / "nob")


def test_refuses_wrong_bands(tmp_path, linear_bundle):
    # A file whose band descriptions are not the 23 names is not taken for a stack, nor for
    # Sentinel-2 input that only lacks --s1.
    names = tuple(f"band{i}" for i in range(23))
    scene = write_stack(tmp_path / "wrong.tif", make_stack(64, 64), band_names=names)
    msg = _refused(tmp_path, BandError, "is neither a coalmine stack nor Sentinel-2 input: it has 23 bands "
                   "(float32) named band0, band1, band2, band3, band4, band5, ...", scene=scene, bundle=linear_bundle)
    assert "--s1" in msg.split("expected", 1)[1]
    # A scene source that lacks a band the bundle needs.
    short = write_stack(tmp_path / "short.tif", make_stack(64, 64)[:22])
    with StackSource(short) as src:
        msg = _refused(tmp_path, BandError, "lacks band(s) GLCM_correlation that bundle", scene=src,
                       bundle=linear_bundle)
    assert "prepare the stack with coal-prepare" in msg


def test_refuses_unreadable_scene(tmp_path, linear_bundle):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage" * 10)
    _refused(tmp_path, RasterError, "broken.tif", scene=bad, bundle=linear_bundle)
    _refused(tmp_path, InputError, "does not exist", scene=tmp_path / "nope.tif", bundle=linear_bundle)


def test_refuses_bad_aoi(tmp_path, good_scene, linear_bundle):
    aoi = tmp_path / "a.geojson"
    aoi.write_text("{")
    _refused(tmp_path, InputError, "a.geojson is not a vector file GDAL can read", scene=good_scene,
             bundle=linear_bundle, aoi=aoi)


def test_refuses_unwritable_output(tmp_path, good_scene, linear_bundle):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _refused(tmp_path, OutputError, "cannot create output folder", scene=good_scene, bundle=linear_bundle,
             out=blocker / "sub")


def test_bundle_with_another_band_list_reads_a_stack_by_its_band_names(tmp_path):
    # A bundle that uses 13 of the bands (no textures) maps a stack whose 23 bands are stored in
    # another order: the stack is recognised by its descriptions and the bands picked by name.
    from coalmine.runtime.bands import BAND_NAMES
    from coalmine.runtime.bundle import Bundle, ModelSpec, Normalization
    from factories import tiny_onnx

    bands = BAND_NAMES[:13]
    path = tmp_path / "b13"
    tiny_onnx(path / "model.onnx", kind="linear", bias=0.1, n_bands=len(bands))
    b = Bundle(path=path, bundle_id="b13", bands=bands, preprocessing=linear_preprocessing(),
               normalization=Normalization(mean=(0.5,) * 13, std=(0.25,) * 13),
               model=ModelSpec(in_channels=13), tile_size=64, overlap=16)
    b.save()
    stack = make_stack(70, 90, seed=4, nodata=(0, 6, 0, 9), nan_band=3)
    order = np.random.default_rng(0).permutation(len(BAND_NAMES))
    scene = write_stack(tmp_path / "shuffled.tif", stack[order], band_names=tuple(BAND_NAMES[i] for i in order))
    run_scene(scene, path, tmp_path / "o", tile=64, progress=False)
    prob, _, _ = read1(tmp_path / "o" / "shuffled_prob.tif")
    assert np.abs(prob.astype(int) - expected_q(stack[:13], b, 0.1)).max() <= 1
    assert (prob[:6, :9] == 255).all()


def linear_preprocessing():
    from coalmine.runtime.bundle import Preprocessing

    return Preprocessing()


def test_refuses_stack_with_other_glcm_edges(tmp_path, linear_bundle):
    from coalmine.runtime.bundle import GlcmParams, Preprocessing

    other = Preprocessing(glcm=GlcmParams(db_range=(-30.0, 0.0)).with_default_edges())
    scene = write_stack(tmp_path / "e.tif", make_stack(64, 64), preprocessing=other)
    msg = _refused(tmp_path, InputError, "was prepared with GLCM bin edges", scene=scene, bundle=linear_bundle)
    assert f"prepare it again with coal-prepare --glcm-edges {linear_bundle.path}" in msg


@pytest.mark.parametrize("kw,msg", [
    ({"tile": 100}, "--tile 100 is not a positive multiple of 32"),
    ({"overlap": 40}, "--overlap 40 must be between 0 and half the tile"),
    ({"threshold": 1.5}, "--threshold 1.5 must lie strictly between 0 and 1"),
    ({"batch_size": 0}, "--batch-size 0 must be a positive integer or 'auto'"),
    ({"gpu_mem_gb": 0}, "--gpu-mem 0 must be a positive number"),
    ({"min_area_ha": -1}, "--min-area -1 must be >= 0"),
])
def test_refuses_bad_options(tmp_path, good_scene, linear_bundle, kw, msg):
    _refused(tmp_path, UsageError, msg, scene=good_scene, bundle=linear_bundle, **kw)


def test_real_unet_resnet34_end_to_end(tmp_path):
    # A randomly initialised smp U-Net-ResNet34 exported with torch: the real graph runs
    # through the runtime (onnx file in, COGs out) with a 64 px tile.
    from factories import unet_onnx

    onnx_file = unet_onnx(tmp_path / "unet.onnx", tile=64)
    bundle = make_tiny_bundle(tmp_path / "ub", onnx_file=onnx_file, tile=64, overlap=16)
    scene = write_stack(tmp_path / "u.tif", make_stack(80, 100, seed=3, nodata=(0, 5, 0, 5)))
    s = run_scene(scene, bundle, tmp_path / "o", tile=64, progress=False)
    prob, _, _ = read1(tmp_path / "o" / "u_prob.tif")
    assert prob.shape == (80, 100) and (prob[:5, :5] == 255).all() and (prob[5:] <= 250).all()
    assert s["tiling"]["tiles"] == 4


def test_raw_inputs_equal_the_prepared_stack(tmp_path):
    # Raw Sentinel-2 + Sentinel-1 preprocessed block by block inside coal-run give the same
    # maps as the stack coal-prepare writes from the same inputs.
    from coalmine.runtime.preprocess import prepare_scene
    from coalmine.train.synth import make_scene

    sc = make_scene(tmp_path / "synth", 2019, seed=11, size=128)
    bundle = make_tiny_bundle(tmp_path / "b", kind="conv", seed=2, tile=64, overlap=16)
    stack = prepare_scene(sc.s2_dir, sc.s1_path, tmp_path / "stack.tif", bundle.preprocessing, progress=False)
    a = run_scene(sc.s2_dir, bundle, tmp_path / "raw", s1=sc.s1_path, tile=64, block=64, progress=False,
                  prefix="x")
    b = run_scene(stack, bundle, tmp_path / "stk", tile=64, block=64, progress=False, prefix="x")
    pa, prof_a, _ = read1(tmp_path / "raw" / "x_prob.tif")
    pb, prof_b, _ = read1(tmp_path / "stk" / "x_prob.tif")
    assert prof_a["transform"] == prof_b["transform"] == sc.transform
    assert (pa != pb).mean() < 0.001 and np.abs(pa.astype(int) - pb).max() <= 1
    assert a["nodata_share"] == b["nodata_share"]
    assert a["s1"] == str(sc.s1_path)


@pytest.mark.parametrize("block,tile,overlap", [(1024, 256, 32), (2048, 512, 64), (96, 64, 16), (700, 128, 0)])
def test_block_cores_fall_on_the_scene_tile_grid(block, tile, overlap):
    core = block_core(block, tile, overlap)
    assert abs(core - block) <= (tile - overlap) / 2 + 1 and core % (tile - overlap) == 0
    blocks = scene_tiling(5000, 3000, tile=tile, overlap=overlap, block=block)
    grid = tile_origins(5000, tile, overlap)
    assert sorted({r for b in blocks for r, _ in b.tiles}) == grid  # the scene's own tile rows, each once
    for b in blocks:
        if b.read.row_off + b.read.height < 5000 and b.read.col_off + b.read.width < 3000:
            # away from the far edges (where the last tile is flush with the scene) a block reads
            # its core and the overlap of its last tiles, nothing more
            assert (b.read.height, b.read.width) == (b.core.height + overlap, b.core.width + overlap)
