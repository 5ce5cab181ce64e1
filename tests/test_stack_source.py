"""The scene sources of coalmine.runtime.preprocess.stack, checked by hand: a prepared stack's
nodata and refusals, what is not a scene at all, the SCL and GLCM settings a raw scene really
uses, the stage names it times, and the preprocessing check's messages."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from coalmine.runtime import texture
from coalmine.runtime.bands import BAND_NAMES, GLCM_SLICE, N_BANDS, VV_INDEX
from coalmine.runtime.bundle import GlcmParams, Preprocessing
from coalmine.runtime.errors import BandError, InputError, InputNotFoundError, RasterError
from coalmine.runtime.preprocess.speckle import power_to_db
from coalmine.runtime.preprocess.stack import (
    INPUTS_TAG,
    PREPROCESSING_TAG,
    RawSource,
    StackSource,
    _neither_stack_nor_s2,
    check_preprocessing,
)
from factories import DEFAULT_TRANSFORM, UTM50S, make_stack, write_stack
from rasterio.windows import Window

H = W = 40


def _write_named(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    """The bands of ``data`` named as a stack's, in the array's own data type, with no preprocessing tag."""
    n, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", dtype=data.dtype.name, count=n, height=h, width=w,
                       crs=UTM50S, transform=DEFAULT_TRANSFORM, nodata=nodata) as ds:
        ds.write(data)
        for i, name in enumerate(BAND_NAMES[:n], start=1):
            ds.set_band_description(i, name)
    return path


def _stack_with_nodata(path: Path, nodata: float) -> tuple[Path, np.ndarray]:
    data = make_stack(H, W, seed=2).astype(np.float32)
    data[:, 3, 4] = nodata  # a pixel marked nodata in every band
    data[7, 10, 11] = nodata  # ... and in one band only
    return _write_named(path, data, nodata), data


def test_a_stack_s_own_nodata_value_blanks_the_whole_pixel(tmp_path):
    path, data = _stack_with_nodata(tmp_path / "s.tif", -9999.0)
    with StackSource(path) as src:
        a = src.read(Window(0, 0, W, H))
    assert np.isnan(a[:, 3, 4]).all() and np.isnan(a[:, 10, 11]).all()  # one band is enough
    keep = np.ones((H, W), bool)
    keep[3, 4] = keep[10, 11] = False
    np.testing.assert_array_equal(a[:, keep], data[:, keep])  # nothing else touched
    assert src.inputs is None and src.preprocessing is None  # no tags: nothing recorded


def test_a_stack_s_recorded_inputs_are_read_back(tmp_path):
    path = write_stack(tmp_path / "s.tif", make_stack(8, 8, seed=1))
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(**{INPUTS_TAG: json.dumps({"s2": "a.SAFE", "s1_units": "linear"})})
    with StackSource(path) as src:
        assert src.inputs == {"s2": "a.SAFE", "s1_units": "linear"}
        assert src.preprocessing == Preprocessing()


def test_a_stack_with_integer_bands_is_refused_naming_the_band(tmp_path):
    path = _write_named(tmp_path / "int.tif", np.zeros((N_BANDS, 8, 8), np.int16))
    with pytest.raises(BandError, match=(
            rf"^scene {path} band 1 \(B02\) is int16; a coalmine stack holds float32 values \(reflectance "
            r"0-1, indices, VV in dB, GLCM textures\) with NaN as nodata, not scaled integers: prepare the "
            r"stack from the raw inputs with coal-prepare$")):
        StackSource(path)


def test_stack_source_refusals_name_the_scene(tmp_path):
    with pytest.raises(InputNotFoundError, match=rf"^scene {tmp_path / 'nope.tif'} does not exist"):
        StackSource(tmp_path / "nope.tif")
    (tmp_path / "t.tif").write_text("no raster")
    with pytest.raises(RasterError, match=r"^scene .*t\.tif is not a raster GDAL can read"):
        StackSource(tmp_path / "t.tif")
    nocrs = tmp_path / "n.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", dtype="float32", count=1, height=4, width=4) as ds:
        ds.write(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(RasterError, match=r"^scene .*n\.tif has no coordinate reference system"):
        StackSource(nocrs)
    twice = write_stack(tmp_path / "twice.tif", make_stack(8, 8), band_names=("B02",) * N_BANDS)
    with pytest.raises(BandError, match=(
            rf"^scene {twice} is not a coalmine stack \(its band descriptions are not distinct band names "
            r"of coalmine\.runtime\.bands\); prepare it with coal-prepare$")):
        StackSource(twice)
    damaged = write_stack(tmp_path / "d.tif", make_stack(8, 8))
    with rasterio.open(damaged, "r+") as ds:
        ds.update_tags(**{PREPROCESSING_TAG: "{not json"})
    with pytest.raises(InputError, match=(
            rf"^scene {damaged} has a damaged {PREPROCESSING_TAG} tag \(.*\); prepare it again with "
            r"coal-prepare$")):
        StackSource(damaged)


def _ds(count, dtypes, descriptions):
    return SimpleNamespace(count=count, dtypes=dtypes, descriptions=descriptions)


def test_neither_a_stack_nor_sentinel_2_says_what_the_file_has():
    tail = (rf"; expected the {N_BANDS}-band stack coal-prepare writes \(float32 bands named B02, B03, B04, "
            r"\.\.\. each once\) or raw Sentinel-2 bands named B02, B03, \.\.\. with --s1$")
    with pytest.raises(BandError, match=(r"^scene rgb\.tif is neither a coalmine stack nor Sentinel-2 input: it "
                                         r"has 3 bands \(uint8\) without band descriptions" + tail)):
        _neither_stack_nor_s2(_ds(3, ("uint8",) * 3, (None,) * 3), Path("rgb.tif"))
    six = tuple(f"x{i}" for i in range(6))
    with pytest.raises(BandError, match=r"has 6 bands \(float32, uint16\) named x0, x1, x2, x3, x4, x5" + tail):
        _neither_stack_nor_s2(_ds(6, ("uint16",) + ("float32",) * 5, six), Path("six.tif"))
    seven = six + ("x6",)
    with pytest.raises(BandError, match=r"has 7 bands \(float32\) named x0, x1, x2, x3, x4, x5, \.\.\." + tail):
        _neither_stack_nor_s2(_ds(7, ("float32",) * 7, seven), Path("seven.tif"))
    # a stack whose names repeat (its bands include derived ones) is not raw Sentinel-2
    with pytest.raises(BandError, match=r"has 3 bands \(float32\) named B02, NDVI, NDVI"):
        _neither_stack_nor_s2(_ds(3, ("float32",) * 3, ("B02", "NDVI", "NDVI")), Path("s.tif"))
    # raw Sentinel-2 bands pass (the caller then asks for --s1)
    assert _neither_stack_nor_s2(_ds(2, ("uint16",) * 2, ("B02", "B03")), Path("s2.tif")) is None


# -- a raw scene: what it really reads ----------------------------------------------------------

def _raw(folder: Path, *, scl_auto: np.ndarray, scl_given: np.ndarray) -> tuple[Path, Path, Path]:
    s2 = folder / "s2"
    s2.mkdir()
    prof = {"driver": "GTiff", "count": 1, "height": H, "width": W, "crs": UTM50S, "transform": DEFAULT_TRANSFORM}
    rng = np.random.default_rng(5)
    for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"):
        with rasterio.open(s2 / f"T50MLA_20210601T022551_{b}_10m.tif", "w", dtype="uint16", **prof) as ds:
            ds.write(rng.integers(500, 3000, (H, W)).astype(np.uint16), 1)
    with rasterio.open(s2 / "T50MLA_20210601T022551_SCL_20m.tif", "w", dtype="uint8", **prof) as ds:
        ds.write(scl_auto, 1)
    given = folder / "my_scl.tif"
    with rasterio.open(given, "w", dtype="uint8", **prof) as ds:
        ds.write(scl_given, 1)
    s1 = folder / "vv.tif"
    power = rng.gamma(4.4, 0.05 / 4.4, (H, W)).astype(np.float32)
    power[20:24, 30] = np.nan  # a gap in the radar image: nodata for the textures around it
    with rasterio.open(s1, "w", dtype="float32", **prof) as ds:
        ds.write(power, 1)
    return s2, s1, given


def test_raw_scene_masks_by_the_scl_it_is_given_and_textures_with_its_own_glcm(tmp_path):
    auto = np.full((H, W), 4, np.uint8)
    auto[:, :10] = 9  # cloud on the left in the product's own SCL
    given = np.full((H, W), 4, np.uint8)
    given[:10, :] = 8  # cloud on top in the SCL the user gives
    s2, s1, scl = _raw(tmp_path, scl_auto=auto, scl_given=given)
    glcm = GlcmParams(window=7, distance=2, levels=16)
    prep = replace(Preprocessing(), glcm=glcm)
    with RawSource(s2, s1, prep, s2_offset=0, scl=scl, glcm_threads=1) as src:
        a = src.read(Window(0, 0, W, H))
        stages = set(src.timers.as_dict())
        edges = src.edges
        power = src.s1.read_power(src.grid.full)
    assert np.isnan(a[:, :10, :]).all()  # the given SCL's cloud
    assert np.isfinite(a[:, 12:18, 12:26]).all()  # not the product's own SCL (away from the radar gap)
    # the textures use the preprocessing's window, distance and levels (not the study's 9 / 4 / 32)
    from coalmine.runtime.preprocess.speckle import lee_filter
    vv = power_to_db(lee_filter(power, prep.s1.speckle_window, 4.4))
    want = texture.glcm_features(texture.quantize(vv, edges), 16, window=7, distance=2, nodata=texture.NODATA)
    ok = np.isfinite(a[VV_INDEX])  # the pixels the stack keeps (a NaN band blanks the pixel)
    ok[:10] = False
    assert ok.sum() > 0.8 * (H - 10) * W and not ok[21, 30]  # the radar gap is nodata
    np.testing.assert_allclose(a[VV_INDEX][ok], vv[ok], rtol=1e-6)
    np.testing.assert_array_equal(a[GLCM_SLICE][:, ok], want[:, ok])
    # the stage names coal-prepare --timings reports, with and without an SCL
    assert stages == {"read_s2", "indices", "warp_s1", "speckle", "glcm", "mask"}  # the SCL counts as read_s2
    with RawSource(s2, s1, prep, s2_offset=0, glcm_threads=1) as src:
        src.read(Window(0, 0, 8, 8))
        assert set(src.timers.as_dict()) == {"read_s2", "indices", "warp_s1", "speckle", "glcm", "mask"}


# -- the preprocessing check's messages ----------------------------------------------------------

def test_preprocessing_check_messages(caplog):
    bundle = SimpleNamespace(preprocessing=Preprocessing(), path=Path("models/b"))
    unknown = SimpleNamespace(preprocessing=None, path=None)
    assert check_preprocessing(unknown, bundle) == [
        f"the scene records no preprocessing parameters (no {PREPROCESSING_TAG} tag); cannot check its GLCM "
        "edges against the bundle"]
    other = SimpleNamespace(path=Path("s.tif"), preprocessing=replace(
        bundle.preprocessing, glcm=replace(bundle.preprocessing.glcm, window=7),
        s1=replace(bundle.preprocessing.s1, speckle_window=7)))
    with pytest.raises(InputError, match=(
            r"^s\.tif was prepared with GLCM window 7 \(bundle: 9\); speckle filter lee/7 \(bundle: lee/5\), "
            r"which differ from bundle models/b; prepare it again with coal-prepare --glcm-edges models/b \(the "
            r"bundle's whole preprocessing\), or give the raw Sentinel-2 input with --s1 instead of the stack$")):
        check_preprocessing(other, bundle)
    # how VV was made differs: a warning naming the scene and the bundle, not a refusal
    made = SimpleNamespace(path=Path("g.tif"), preprocessing=replace(
        bundle.preprocessing, s1=replace(bundle.preprocessing.s1, radiometry="gamma0")))
    assert check_preprocessing(made, bundle) == [
        "g.tif: its Sentinel-1 VV is gamma0 but the model was trained on sigma0 (bundle models/b); its VV "
        "values may differ from what the model learned"]


# -- open_scene: what it opens, what it passes on, what it refuses ---------------------------------

def test_a_raw_scene_records_its_inputs(tmp_path):
    auto = np.full((H, W), 4, np.uint8)
    s2, s1, scl = _raw(tmp_path, scl_auto=auto, scl_given=auto)
    with RawSource(s2, s1, s2_offset=-1000, scl=scl) as given, RawSource(s2, s1, scl="auto") as found, \
            RawSource(s2, s1) as none:
        rec = given.inputs
        assert {k: rec[k] for k in ("s2", "s2_form", "s2_offset", "s2_offset_source", "s2_scale", "s2_baseline",
                                    "s1", "s1_units", "scl")} == {
            "s2": str(s2), "s2_form": "folder", "s2_offset": -1000.0, "s2_offset_source": "explicit --s2-offset",
            "s2_scale": 10000.0, "s2_baseline": None, "s1": str(s1), "s1_units": "linear", "scl": str(scl)}
        assert rec["s2_level"].startswith("L2A (") and rec["s2_level"].endswith(")")
        assert found.inputs["scl"] == "auto" and none.inputs["scl"] is None
        assert given.path == s2 and given.glcm_threads is None


def test_open_scene_passes_its_options_on(tmp_path):
    from coalmine.runtime.errors import UnitsError, UsageError
    from coalmine.runtime.preprocess.stack import open_scene

    auto = np.full((H, W), 4, np.uint8)
    given = auto.copy()
    given[:10, :] = 9
    s2, s1, scl = _raw(tmp_path, scl_auto=auto, scl_given=given)
    prep = replace(Preprocessing(), glcm=GlcmParams(window=7, distance=2, levels=16))
    with open_scene(s2, s1, prep, s2_offset=-1000, scl=scl, glcm_threads=1) as src:
        assert isinstance(src, RawSource) and src.glcm_threads == 1
        assert src.preprocessing.glcm.window == 7 and src.s2.offset.value == -1000.0
        assert np.isnan(src.read(Window(0, 0, W, 10))).all()  # the SCL given, not the product's own
    with pytest.raises(UnitsError, match=r"was declared dB but 100% of its values are >= 0"):  # checked, not guessed
        open_scene(s2, s1, s1_units="db")
    with pytest.raises(InputNotFoundError, match=rf"^scene {tmp_path / 'nope'} does not exist"):
        open_scene(tmp_path / "nope", s1)
    stack = write_stack(tmp_path / "stack.tif", make_stack(8, 8))
    with pytest.raises(UsageError, match=(rf"^scene {stack} is already a 23-band stack made by coal-prepare; do not "
                                          r"pass --s1 with it \(it is only for raw Sentinel-2 input\)$")):
        open_scene(stack, s1)
    rgb = tmp_path / "rgb.tif"
    with rasterio.open(rgb, "w", driver="GTiff", dtype="uint8", count=3, height=4, width=4, crs=UTM50S,
                       transform=DEFAULT_TRANSFORM) as ds:
        ds.write(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(BandError, match=rf"^scene {rgb} is neither a coalmine stack nor Sentinel-2 input"):
        open_scene(rgb)


def test_open_scene_on_a_folder_of_acquisitions_passes_its_options_to_the_composite(tmp_path):
    from coalmine.runtime.errors import UsageError
    from coalmine.runtime.preprocess.composite import CompositeSource
    from coalmine.runtime.preprocess.stack import open_scene
    from composite_factory import dn_for, write_s1, write_s2

    refl = np.full((9, 16, 16), 0.1)
    for day in ("20210704", "20210709"):
        write_s2(tmp_path / "year" / f"S2_{day}T022551", dn_for(refl, 0), np.full((16, 16), 4, np.uint8))
    s1 = write_s1(tmp_path / "vv.tif", np.full((16, 16), 0.05))
    prep = replace(Preprocessing(), glcm=GlcmParams(window=7, distance=2, levels=16))
    with open_scene(tmp_path / "year", s1, prep, s2_offset=-1000, s1_units="linear", glcm_threads=1) as src:
        assert isinstance(src, CompositeSource) and len(src.s2) == 2 and src.glcm_threads == 1
        assert [a.reader.offset.value for a in src.s2] == [-1000.0, -1000.0]
        assert src.preprocessing.glcm.window == 7 and src.preprocessing.s1.units == "linear"
    with pytest.raises(UsageError, match=(rf"^--scl my\.tif: scene {tmp_path / 'year'} holds several acquisitions, "
                                          r"each masked by its own SCL in the composite; drop --scl$")):
        open_scene(tmp_path / "year", s1, scl="my.tif")


def test_raw_scene_checks_its_speckle_settings_and_uses_its_s2_scale(tmp_path):
    from coalmine.runtime.bundle import S2Params
    from coalmine.runtime.errors import UsageError

    auto = np.full((H, W), 4, np.uint8)
    s2, s1, _ = _raw(tmp_path, scl_auto=auto, scl_given=auto)
    base = Preprocessing()
    with pytest.raises(UsageError, match=r"^--speckle-window 4 must be an odd number >= 1"):
        RawSource(s2, s1, replace(base, s1=replace(base.s1, speckle_window=4)))
    with pytest.raises(UsageError, match=r"^--speckle 'box'|^--speckle box"):
        RawSource(s2, s1, replace(base, s1=replace(base.s1, speckle_filter="box")))
    # no metadata gives the scale here: the preprocessing's S2 scale divides the DN
    with rasterio.open(next(s2.glob("*_B02_10m.tif"))) as ds:
        dn = ds.read(1).astype(np.float64)
    with RawSource(s2, s1, replace(base, s2=S2Params(scale=20000.0)), s2_offset=0) as src:
        b02 = src.read(Window(0, 0, W, H))[0]
    ok = np.isfinite(b02)  # all but the pixels around the radar gap
    assert ok.sum() > 0.9 * H * W
    np.testing.assert_allclose(b02[ok], dn[ok] / 20000.0, rtol=1e-6)
    next(s2.glob("*_SCL_*")).unlink()
    with pytest.raises(UsageError, match=rf"^--scl auto: no SCL file found in {s2}; pass --scl PATH$"):
        RawSource(s2, s1, scl="auto")


def test_a_damaged_stack_names_itself_and_a_damaged_inputs_tag_is_ignored(tmp_path):
    from coalmine.runtime.raster import to_cog

    src = write_stack(tmp_path / "s.tif", make_stack(256, 256, seed=3), block=64)
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(**{INPUTS_TAG: "{broken"})
    with StackSource(src) as s:
        assert s.inputs is None  # what the inputs were is unknown, the stack still reads
    cog = tmp_path / "cog.tif"
    to_cog(src, cog, nodata=float("nan"), forward_band_tags=True)
    data = cog.read_bytes()
    cog.write_bytes(data[: len(data) // 3])  # the header and directory come first in a COG
    with StackSource(cog) as s, pytest.raises(RasterError, match=(
            rf"^scene {cog} cannot be read \(.+\); the file looks truncated or damaged: copy or download it again$")):
        s.read(Window(0, 0, 256, 256))


def test_more_edges_of_the_checks(tmp_path):
    from coalmine.runtime.errors import UnitsError
    from coalmine.runtime.preprocess.stack import open_scene
    from composite_factory import dn_for, write_s1, write_s2

    # a stack without a nodata value reads (NaN is its nodata)
    plain = _write_named(tmp_path / "plain.tif", np.ones((N_BANDS, 4, 4), np.float32))
    with StackSource(plain) as s:
        assert (s.read(Window(0, 0, 4, 4)) == 1).all()
    # two data types, no descriptions: both named
    with pytest.raises(BandError, match=r"it has 2 bands \(float32, uint8\) without band descriptions"):
        _neither_stack_nor_s2(_ds(2, ("uint8", "float32"), (None, None)), Path("x.tif"))
    # a text file given as the scene
    (tmp_path / "t.tif").write_text("text")
    with pytest.raises(RasterError, match=r"^scene .*t\.tif is not a raster GDAL can read"):
        open_scene(tmp_path / "t.tif")
    # edges that differ by 2e-5 dB are other edges (the check is absolute, 1e-6 dB)
    bundle = SimpleNamespace(preprocessing=Preprocessing(), path=Path("b"))
    edges = list(bundle.preprocessing.glcm.edges)
    assert abs(edges[0]) > 5  # far from 0 dB, where a relative tolerance would hide the move
    edges[0] += 2e-5
    moved = SimpleNamespace(path=Path("s.tif"), preprocessing=replace(
        bundle.preprocessing, glcm=replace(bundle.preprocessing.glcm, edges=tuple(edges))))
    with pytest.raises(InputError, match=r"^s\.tif was prepared with GLCM bin edges"):
        check_preprocessing(moved, bundle)
    # a model trained on gamma0, a scene of sigma0: the warning goes both ways
    g0 = SimpleNamespace(preprocessing=replace(bundle.preprocessing, s1=replace(bundle.preprocessing.s1,
                                                                                radiometry="gamma0")), path=Path("b"))
    assert check_preprocessing(SimpleNamespace(path=Path("s.tif"), preprocessing=Preprocessing()), g0) == [
        "s.tif: its Sentinel-1 VV is sigma0 but the model was trained on gamma0 (bundle b); its VV values may "
        "differ from what the model learned"]
    # a folder of acquisitions: --scl auto is what it does anyway, declared units are checked
    refl = np.full((9, 16, 16), 0.1)
    for day in ("20210704", "20210709"):
        write_s2(tmp_path / "year" / f"S2_{day}T022551", dn_for(refl, 0), np.full((16, 16), 4, np.uint8))
    s1 = write_s1(tmp_path / "vv.tif", np.full((16, 16), 0.05))
    with open_scene(tmp_path / "year", s1, scl="auto") as src:
        assert len(src.s2) == 2
    with pytest.raises(UnitsError, match=r"was declared dB"):
        open_scene(tmp_path / "year", s1, s1_units="db")


class _Stop(Exception):
    """Raised by a recording stand-in once it has seen its arguments."""


def test_raw_scene_hands_its_options_to_the_readers_it_opens(tmp_path, monkeypatch):
    # What RawSource / open_scene give the Sentinel-2 and Sentinel-1 readers, recorded by
    # stand-ins: the S1 parameters of the preprocessing (not the defaults), the units, and the
    # DEM and orbit a GRD product needs; whether an SCL was given (it names the level of a product
    # that says nothing else).
    import coalmine.runtime.preprocess.stack as stack_mod
    from coalmine.runtime.bundle import S1Params
    from coalmine.runtime.preprocess.stack import open_scene

    auto = np.full((H, W), 4, np.uint8)
    s2, s1, scl = _raw(tmp_path, scl_auto=auto, scl_given=auto)
    prep = replace(Preprocessing(), s1=S1Params(resampling="nearest", speckle_window=7))
    seen = []

    def fake_open_s1(*args, **kwargs):
        seen.append((args, kwargs))
        raise _Stop

    monkeypatch.setattr(stack_mod, "open_s1", fake_open_s1)
    dem, orbit = tmp_path / "dem.tif", tmp_path / "orbits"
    for opener in (RawSource, open_scene):
        seen.clear()
        with pytest.raises(_Stop):
            opener(s2, s1, prep, s1_units="linear", dem=dem, orbit=orbit)
        (args, kwargs), = seen
        assert args[0] == s1 and args[2] == prep.s1
        assert kwargs == {"units": "linear", "dem": dem, "orbit": orbit}

    levels = []
    real_s2 = stack_mod.S2Reader

    def fake_s2(*args, **kwargs):
        levels.append(kwargs["scl_given"])
        return real_s2(*args, **kwargs)

    monkeypatch.setattr(stack_mod, "S2Reader", fake_s2)
    for given in (scl, "auto", None):
        with pytest.raises(_Stop):
            RawSource(s2, s1, prep, scl=given)
    assert levels == [True, False, False]


def test_open_scene_hands_dem_and_orbit_to_a_composite(tmp_path, monkeypatch):
    import coalmine.runtime.preprocess.composite as composite_mod
    from coalmine.runtime.preprocess.stack import open_scene
    from composite_factory import dn_for, write_s1, write_s2

    refl = np.full((9, 16, 16), 0.1)
    write_s2(tmp_path / "year" / "S2_20210704T022551", dn_for(refl, 0), np.full((16, 16), 4, np.uint8))
    s1 = write_s1(tmp_path / "vv.tif", np.full((16, 16), 0.05))
    seen = []

    def fake_composite(*args, **kwargs):
        seen.append(kwargs)
        raise _Stop

    monkeypatch.setattr(composite_mod, "CompositeSource", fake_composite)
    with pytest.raises(_Stop):
        open_scene(tmp_path / "year", s1, dem=tmp_path / "dem.tif", orbit=tmp_path / "orbits")
    assert seen[0]["dem"] == tmp_path / "dem.tif" and seen[0]["orbit"] == tmp_path / "orbits"
