"""Annual composites, piece by piece, with expectations worked by hand: which paths ``--s2``/``--s1``
name, dates and periods, input hashes, the memory budget, footprints on the output grid, the
per-pixel kernels' edge cases, every refusal's whole message, the options a composite passes on to
its readers, and the stage names a composite read records (``coal-prepare --timings``).

Every acquisition here is a few pixels of constant reflectance (composite_factory), so a value read
back is known without running anything else of the pipeline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.bands import BAND_NAMES, N_BANDS
from coalmine.runtime.bundle import GlcmParams, Preprocessing, S1Params, S2Params
from coalmine.runtime.errors import CRSError, InputError, InputNotFoundError, UsageError
from coalmine.runtime.preprocess import composite as composite_mod
from coalmine.runtime.preprocess.acquisitions import (
    Item,
    Period,
    date_from_name,
    expand,
    input_hash,
    is_s2_acquisition,
)
from coalmine.runtime.preprocess.composite import (
    CompositeSource,
    _date_tag,
    _grid_window,
    _intersects,
    block_for_memory,
)
from coalmine.runtime.preprocess.median import PowerMean, clear_median, dilate
from coalmine.runtime.raster import Grid
from composite_factory import TRANSFORM, UTM50S, dn_for, write_s1, write_s2
from rasterio.windows import Window

H, W = 12, 16
GRID = Grid(UTM50S, TRANSFORM, W, H)
D = dt.date


def _s2(folder: Path, refl: float = 0.1, *, h: int = H, w: int = W, transform: Affine = TRANSFORM,
        offset: int = 0, baseline: str = "03.01", level: str = "L2A", with_scl: bool = True) -> Path:
    """A clear acquisition (SCL 4 everywhere) of constant reflectance ``refl``."""
    dn = dn_for(np.full((9, h, w), refl, np.float32), offset)
    return write_s2(folder, dn, np.full((h, w), 4, np.uint8), offset=offset, baseline=baseline,
                    transform=transform, level=level, with_scl=with_scl)


def _s1(path: Path, value: float = 0.05, *, h: int = H, w: int = W, transform: Affine = TRANSFORM) -> Path:
    return write_s1(path, np.full((h, w), value, np.float32), transform=transform)


def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _items(items: list[Item]) -> list[tuple[str, bool]]:
    return [(i.path.name, i.explicit) for i in items]


# -- dates and periods --------------------------------------------------------------------------
def test_date_from_name_prefers_stamps_and_skips_impossible_dates() -> None:
    # a stamp (date + T + time) wins over a bare date, and an impossible stamp is passed over
    assert date_from_name("2022-01-01_S1A_20231345T000000_20230715T022551") == D(2023, 7, 15)
    # an impossible bare date is passed over too
    assert date_from_name("vv_20231345_20230716.tif") == D(2023, 7, 16)
    assert date_from_name("vv_20231345.tif") is None


def test_period_bounds_are_inclusive_and_either_end_may_be_open() -> None:
    p = Period.of("2021-01-01", "2021-12-31")
    assert p == Period(D(2021, 1, 1), D(2021, 12, 31)) and str(p) == "2021-01-01..2021-12-31"
    assert D(2021, 1, 1) in p and D(2021, 12, 31) in p
    assert D(2020, 12, 31) not in p and D(2022, 1, 1) not in p
    assert Period.of("2021-03-01", None) == Period(D(2021, 3, 1), D.max)
    assert Period.of(None, "2021-03-01") == Period(D.min, D(2021, 3, 1))
    assert Period.of(None, None) is None
    assert Period.of("2021-03-01", "2021-03-01") == Period(D(2021, 3, 1), D(2021, 3, 1))  # one day
    assert Period.of(dt.datetime(2021, 3, 1, 12), D(2021, 4, 1)) == Period(D(2021, 3, 1), D(2021, 4, 1))


def test_period_refuses_a_date_that_is_not_one_naming_the_option() -> None:
    with pytest.raises(UsageError, match=r"^--end 2021-13-01 is not a date; write it as 2023-01-31$"):
        Period.of("2021-01-01", "2021-13-01")
    with pytest.raises(UsageError, match=r"^--start 1st of May is not a date; write it as 2023-01-31$"):
        Period.of("1st of May", None)
    with pytest.raises(UsageError, match=r"^--end 2021-01-01 is before --start 2021-01-02; swap them$"):
        Period.of("2021-01-02", "2021-01-01")


# -- what --s2/--s1 name --------------------------------------------------------------------------
def test_is_s2_acquisition_by_name_metadata_or_band_files(tmp_path: Path) -> None:
    safe = tmp_path / "S2B_MSIL2A_20230715T022549_N0509_R046_T50MLA_20230715T045337.SAFE"
    safe.mkdir()
    assert is_s2_acquisition(safe)  # by its name alone
    lower = tmp_path / "product.safe"
    lower.mkdir()
    assert is_s2_acquisition(lower)
    for name in ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml"):
        _touch(tmp_path / f"with_{name}" / name)
        assert is_s2_acquisition(tmp_path / f"with_{name}")
    _touch(tmp_path / "bands" / "T50MLA_B02_10m.tif")
    assert is_s2_acquisition(tmp_path / "bands")
    _touch(tmp_path / "text" / "x_B02.txt")  # a band's name but not a raster
    _touch(tmp_path / "text" / "readme.txt")
    assert not is_s2_acquisition(tmp_path / "text")
    (tmp_path / "text" / "sub_B03.tif").mkdir()  # a folder named like a band file
    assert not is_s2_acquisition(tmp_path / "text")
    assert is_s2_acquisition(_touch(tmp_path / "any.tif"))  # a file is one acquisition


def test_expand_sentinel2_folder_keeps_acquisitions_only(tmp_path: Path) -> None:
    f = tmp_path / "s2"
    _touch(f / ".S2_20210301T000000.tif")  # hidden: never an acquisition
    (f / "S2_20210101T000000_empty").mkdir()  # dated, but a folder that is no acquisition
    _touch(f / "S2_20210201T000000.tif")  # a dated raster file
    _touch(f / "notes.tif")  # a raster file without a date
    _touch(f / "readme.txt")
    _touch(f / "tileA" / "T50MLA_B02_10m.tif")  # an undated folder that is an acquisition
    assert _items(expand([f], "s2")) == [("S2_20210201T000000.tif", False), ("tileA", False)]


def test_expand_sentinel1_folder_keeps_rasters_zips_and_products(tmp_path: Path) -> None:
    f = tmp_path / "s1"
    _touch(f / ".a_20210101_VV.tif")
    _touch(f / "b.zip")
    _touch(f / "c_VV.tif")  # undated: a Sentinel-1 raster needs no date in its name
    _touch(f / "d.txt")
    (f / "e_notes").mkdir()  # a folder that is no product
    (f / "S1A_IW_GRDH_1SDV_20210704T221516_20210704T221541_038652_048F3A_1234.SAFE").mkdir()
    assert _items(expand([f], "s1")) == [
        ("S1A_IW_GRDH_1SDV_20210704T221516_20210704T221541_038652_048F3A_1234.SAFE", False),
        ("b.zip", False), ("c_VV.tif", False)]
    one = _touch(tmp_path / "S1_20201231_VV.tif")
    assert _items(expand([one, f], "s1"))[:2] == [(one.name, True), (
        "S1A_IW_GRDH_1SDV_20210704T221516_20210704T221541_038652_048F3A_1234.SAFE", False)]
    # a folder named like a SAFE but holding rasters is a folder of Sentinel-1 acquisitions
    g = tmp_path / "exports.SAFE"
    _touch(g / "x_VV.tif")
    _touch(g / "y_VV.tif")
    assert _items(expand([g], "s1")) == [("x_VV.tif", False), ("y_VV.tif", False)]


def test_expand_keeps_argument_order_explicit_flags_and_drops_duplicates(tmp_path: Path) -> None:
    a = _touch(tmp_path / "S1_20210101T000000_VV.tif")
    b = _touch(tmp_path / "S1_20210201T000000_VV.tif")
    c = _touch(tmp_path / "other" / "S1_20210301T000000_VV.tif")
    empty = tmp_path / "nothing"
    empty.mkdir()
    got = expand([b, str(tmp_path / "S1_2021*"), empty, c, tmp_path / "." / a.name, b], "s1")
    # b named first stays explicit; the pattern adds a, found; a folder holding nothing is read as one
    assert _items(got) == [(b.name, True), (a.name, False), ("nothing", True), (c.name, True)]
    assert [i.path for i in got][:2] == [b, a]
    assert _items(expand([empty, c], "s2")) == [("nothing", True), (c.name, True)]


def test_expand_takes_an_existing_path_literally_even_with_pattern_characters(tmp_path: Path) -> None:
    odd = _touch(tmp_path / "S1_[x]_20210101T000000_VV.tif")
    _touch(tmp_path / "S1_x_20210101T000000_VV.tif")  # what the name would match as a pattern
    assert _items(expand([odd], "s1")) == [(odd.name, True)]


def test_expand_refusals_name_the_option_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "missing_20210101.tif"
    with pytest.raises(InputNotFoundError, match=rf"^--s2 {re.escape(str(missing))} does not exist; check the path$"):
        expand([missing], "s2")
    with pytest.raises(InputNotFoundError, match=rf"^--s1 {re.escape(str(missing))} does not exist; check the path$"):
        expand([missing], "s1")
    _touch(tmp_path / ".hidden_20210101_VV.tif")
    pattern = str(tmp_path / ".hid*")  # a pattern that matches only hidden files matches nothing
    with pytest.raises(InputNotFoundError,
                       match=rf"^--s1 {re.escape(pattern)} matches no file or folder; check the pattern$"):
        expand([pattern], "s1")


# -- input hashes ---------------------------------------------------------------------------------
def test_input_hash_covers_names_bytes_order_and_a_folders_relative_names(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a.bin", b"abc")
    b = _touch(tmp_path / "b.bin", b"xy")
    sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    assert input_hash([a]) == sha(b"a.bin\0abc")
    assert input_hash([a, b]) == sha(b"a.bin\0abc" + b"b.bin\0xy")
    assert input_hash([b, a]) == sha(b"b.bin\0xy" + b"a.bin\0abc")
    d = tmp_path / "P.SAFE"
    _touch(d / "x.txt", b"1")
    _touch(d / "sub" / "y.txt", b"22")
    # sorted paths: P.SAFE/sub/y.txt before P.SAFE/x.txt; names relative to the folder
    assert input_hash([d]) == sha(b"sub/y.txt\0" + b"22" + b"x.txt\0" + b"1")


# -- kernels --------------------------------------------------------------------------------------
def test_clear_median_of_no_acquisition_is_nodata_with_count_zero() -> None:
    for clear in (None, np.zeros((0, 2, 3), bool)):
        med, n = clear_median(np.empty((0, 2, 3), np.float32), clear)
        assert med.shape == (2, 3) and med.dtype == np.float32 and np.isnan(med).all()
        assert n.shape == (2, 3) and n.dtype == np.uint16 and not n.any()
    _, n = clear_median(np.array([[[1.0]], [[np.nan]]], np.float32))
    assert n.dtype == np.uint16 and n.tolist() == [[1]]
    with pytest.raises(ValueError, match=r"^clear_median expects \(n, h, w\), got shape \(2, 3\)$"):
        clear_median(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"^dilation radius must be >= 0, got -1$"):
        dilate(np.zeros((2, 2), bool), -1)


def test_power_mean_types_and_no_warning_where_nothing_was_added() -> None:
    pm = PowerMean((1, 2))
    assert pm.count.dtype == np.uint16 and pm.total.dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value in divide" printed for empty pixels
        empty = pm.mean()
        pm.add(np.array([[0.1, np.nan]], np.float32))
        m = pm.mean()
    assert empty.dtype == np.float32 and np.isnan(empty).all()
    assert m.dtype == np.float32 and m[0, 0] == np.float32(0.1) and np.isnan(m[0, 1])


# -- the memory budget ----------------------------------------------------------------------------
def _fixed(n_s2: int, n_s1: int) -> int:
    # 600 MiB base + 512 KiB per file: 10 per Sentinel-2 acquisition (9 bands + SCL), 1 per Sentinel-1
    return 600 * 2**20 + 512 * 2**10 * (10 * n_s2 + n_s1)


def _per_px(n_s2: int) -> int:
    # three 23-band float32 blocks + 120 B, and 4 + 4 + 1 + 4 B per Sentinel-2 acquisition
    return 3 * 23 * 4 + 120 + 13 * n_s2


def test_block_for_memory_by_hand() -> None:
    exact_1024 = _fixed(12, 6) + _per_px(12) * 1024 * 1024
    assert exact_1024 == 1_274_019_840
    assert block_for_memory(exact_1024, 12, 6) == 1024
    assert block_for_memory(exact_1024 - 1, 12, 6) == 512  # 1023 px fit: rounded down to a tile
    one_tile = _fixed(1, 1) + _per_px(1) * 512 * 512
    assert block_for_memory(one_tile, 1, 1) == 512
    with pytest.raises(UsageError):
        block_for_memory(one_tile - 1, 1, 1)
    assert block_for_memory(1 << 50, 1, 1) == 2048  # never beyond ``largest``
    assert block_for_memory(1 << 50, 1, 1, largest=1024) == 1024
    assert block_for_memory(_fixed(2, 1) + _per_px(2) * 256 * 256, 2, 1, tile=256) == 256


def test_block_for_memory_names_the_budget_that_would_do() -> None:
    # 70 + 30 acquisitions: fixed 600 MiB + 730 x 512 KiB = 1,011,875,840 B; per px 396 + 910 = 1306 B;
    # one 512 px block needs 1,011,875,840 + 1306 x 262,144 = 1,354,235,904 B = 1.261 GiB -> 1.3G
    assert _fixed(70, 30) + _per_px(70) * 512 * 512 == 1_354_235_904
    with pytest.raises(UsageError, match=r"^--memory 0\.7 GB cannot hold one 512 px block of 70 Sentinel-2 "
                                         r"acquisitions; give at least --memory 1\.3G$"):
        block_for_memory(700 << 20, 70, 30)
    assert block_for_memory(int(1.3 * 2**30), 70, 30) == 512  # and that budget does
    # 600 MiB + 11 x 512 KiB + 409 B x 512² = 742,129,664 B = 0.69 GiB, rounded up to a tenth
    assert _fixed(1, 1) + _per_px(1) * 512 * 512 == 742_129_664
    with pytest.raises(UsageError, match=r"^--memory 0\.0 GB cannot .* of 1 Sentinel-2 acquisitions; give at least --memory 0\.7G$"):
        block_for_memory(0, 1, 1)


# -- footprints on the output grid ---------------------------------------------------------------
def test_grid_window_has_a_one_pixel_margin_on_each_side() -> None:
    # x 300030..300070 -> columns 3..7; y 9699970..9699910 -> rows 3..9; one more pixel each side
    assert _grid_window(GRID, (300030.0, 9699910.0, 300070.0, 9699970.0), UTM50S) == Window(2, 2, 6, 8)
    assert _grid_window(GRID, GRID.bounds, UTM50S) == Window(0, 0, W, H)  # clipped to the grid
    # touching the grid's right edge: only the margin column lies on the grid
    assert _grid_window(GRID, (300160.0, 9699880.0, 300200.0, 9700000.0), UTM50S) == Window(15, 0, 1, H)
    far = _grid_window(GRID, (400000.0, 9699880.0, 400160.0, 9700000.0), UTM50S)
    assert far.width == 0


def test_intersects_touching_windows_do_not_one_pixel_overlaps_do() -> None:
    a = Window(0, 0, 4, 4)
    for b in (Window(4, 0, 4, 4), Window(-4, 0, 4, 4), Window(0, 4, 4, 4), Window(0, -4, 4, 4),
              Window(10, 0, 4, 4), Window(0, 10, 4, 4), Window(10, 10, 4, 4)):
        assert not composite_mod._intersects(a, b) and not _intersects(b, a), b
    for b in (Window(3, 0, 4, 4), Window(-3, 0, 4, 4), Window(0, 3, 4, 4), Window(0, -3, 4, 4),
              Window(1, 1, 1, 1)):
        assert _intersects(a, b) and _intersects(b, a), b


# -- Sentinel-1 dates from tags ---------------------------------------------------------------------
def test_date_tag_reads_the_date_tags_of_a_raster(tmp_path: Path) -> None:
    cases = [({"AREA_OR_POINT": "Area", "acquisition_date": "20210704"}, D(2021, 7, 4)),
             ({"Sensing_Date": "2021-08-01T10:00:00"}, D(2021, 8, 1)),
             ({"DATE": "unknown", "SENSING_DATE": "2021-09-02"}, D(2021, 9, 2)),
             ({"date": "20210905"}, D(2021, 9, 5)),
             ({"PROCESSED": "2021-10-01"}, None)]
    for k, (tags, expect) in enumerate(cases):
        p = _s1(tmp_path / f"vv_{k}.tif")
        with rasterio.open(p, "r+") as ds:
            ds.update_tags(**tags)
        with rasterio.open(p) as ds:
            assert _date_tag(SimpleNamespace(ds=ds)) == expect, tags
    assert _date_tag(SimpleNamespace(ds=None)) is None and _date_tag(object()) is None


def test_sentinel1_dates_come_from_names_else_tags_and_order_the_acquisitions(tmp_path: Path) -> None:
    s2 = [_s2(tmp_path / f"S2_{n}_{d}T000000") for n, d in (("d", "20210101"), ("a", "20210301"),
                                                             ("c", "20210101"))]
    s1 = [_s1(tmp_path / f"{n}_VV.tif") for n in ("d_20210101", "a_20210301", "c_20210101")]
    tagged = _s1(tmp_path / "vv_linear.tif")
    with rasterio.open(tagged, "r+") as ds:
        ds.update_tags(ACQUISITION_DATE="2021-02-01")
    with CompositeSource(s2, [*s1, tagged], dilation=0) as src:
        # by date, then by path
        assert [a.path.name for a in src.s2] == ["S2_c_20210101T000000", "S2_d_20210101T000000",
                                                 "S2_a_20210301T000000"]
        assert [a.path.name for a in src.s1] == ["c_20210101_VV.tif", "d_20210101_VV.tif", "vv_linear.tif",
                                                 "a_20210301_VV.tif"]
        assert [i["date"] for i in src.inputs["s1"]] == ["2021-01-01", "2021-01-01", "2021-02-01", "2021-03-01"]
        assert src.path == tmp_path / "S2_c_20210101T000000"  # the scene's path: the first acquisition


# -- options checked before anything is opened -------------------------------------------------------
def test_refuses_bad_speckle_options_and_dilations_naming_them(tmp_path: Path) -> None:
    nothing = [tmp_path / "never_opened"]
    with pytest.raises(UsageError, match=r"^speckle filter 'gamma' is not one of lee, none$"):
        CompositeSource(nothing, nothing, Preprocessing(s1=S1Params(speckle_filter="gamma")))
    for window in (0, 2, 4):
        with pytest.raises(UsageError, match=rf"^--speckle-window {window} must be an odd number >= 1$"):
            CompositeSource(nothing, nothing, Preprocessing(s1=S1Params(speckle_window=window)))
    for bad in (-1, 101, True, 2.5):
        with pytest.raises(UsageError, match=rf"^--dilation {bad} must be a whole number of pixels from 0 to 100 "
                                             r"\(default 5\)$"):
            CompositeSource(nothing, nothing, dilation=bad)


def test_accepts_the_limits_of_the_options(tmp_path: Path) -> None:
    s2, s1 = [_s2(tmp_path / "S2_20210101T000000")], [_s1(tmp_path / "S1_20210101_VV.tif")]
    for window in (1, 3):
        with CompositeSource(s2, s1, Preprocessing(s1=S1Params(speckle_window=window))) as src:
            assert src.preprocessing.s1.speckle_window == window
    with CompositeSource(s2, s1, dilation=100) as src:
        assert src.dilation == 100
    # a GLCM without edges gets the default: 31 equal-width dB edges over -25..5
    with CompositeSource(s2, s1, Preprocessing(glcm=GlcmParams())) as src:
        assert src.preprocessing.glcm.edges == tuple(-25.0 + 30.0 * k / 32 for k in range(1, 32))
        np.testing.assert_array_equal(src.edges, [-25.0 + 0.9375 * k for k in range(1, 32)])


# -- options passed on to the readers ---------------------------------------------------------------
def test_explicit_s2_offset_applies_to_every_acquisition(tmp_path: Path) -> None:
    # DN 2000 of baseline 03.01 products: 0.2 by their metadata, 0.1 with --s2-offset -1000
    s2 = [_s2(tmp_path / f"S2_2021010{k}T000000", 0.2) for k in (1, 2)]
    s1 = [_s1(tmp_path / "S1_20210101_VV.tif")]
    with CompositeSource(s2, s1, s2_offset=-1000, dilation=0) as src:
        assert [a.reader.offset.value for a in src.s2] == [-1000, -1000]
        x = src.read(Window(0, 0, W, H))
    np.testing.assert_allclose(x[:9], 0.1, rtol=1e-6)


def test_sentinel2_resampling_reaches_the_reader(tmp_path: Path) -> None:
    # columns alternate 0.1 / 0.3; a grid a quarter pixel to the right puts each output centre a
    # quarter pixel past a source centre: nearest gives the source pixel, bilinear 3/4 + 1/4 of two
    refl = np.where(np.arange(W) % 2 == 0, 0.1, 0.3) * np.ones((9, H, 1))
    s2 = write_s2(tmp_path / "S2_20210101T000000", dn_for(refl, 0), np.full((H, W), 4, np.uint8))
    grid = Grid(UTM50S, TRANSFORM * Affine.translation(0.25, 0), W - 2, H)
    prep = Preprocessing(s2=S2Params(resampling="nearest"))
    with CompositeSource([s2], [_s1(tmp_path / "S1_20210101_VV.tif")], prep, grid=grid, dilation=0) as src:
        b02 = src.read(Window(0, 2, W - 2, H - 4))[0]
    np.testing.assert_allclose(b02, np.broadcast_to(refl[0, 0, : W - 2], b02.shape), rtol=1e-6)


def test_declared_sentinel1_units_reach_the_reader(tmp_path: Path) -> None:
    s2 = [_s2(tmp_path / "S2_20210101T000000")]
    lin = _s1(tmp_path / "S1_20210101_VV.tif", 0.05)
    msg = (rf"^--s1 {re.escape(str(lin))} was declared dB but 100% of its values are >= 0 \(median 0\.05\), "
           r"which is linear power, not dB \(sigma0 in dB is mostly -25\.\.\+5\); pass --s1-units linear \(or auto\)$")
    with pytest.raises(InputError, match=msg):
        CompositeSource(s2, [lin], s1_units="db")
    with pytest.raises(InputError, match=msg):  # or declared in the preprocessing
        CompositeSource(s2, [lin], Preprocessing(s1=S1Params(units="db")))
    db = _s1(tmp_path / "S1_20210102_VV.tif", -13.0)
    for s1, units in (([lin], "linear"), ([db], "db"), ([lin, db], "mixed")):
        with CompositeSource(s2, s1) as src:
            assert src.preprocessing.s1.units == units


def test_how_vv_was_made_is_recorded_when_every_acquisition_agrees(tmp_path: Path, monkeypatch) -> None:
    s2 = [_s2(tmp_path / "S2_20210101T000000")]
    s1 = [_s1(tmp_path / f"S1_2021010{k}_VV.tif") for k in (1, 2)]
    made = iter([{"source": "grd", "terrain": "dem"}, {"source": "grd", "terrain": "dem"},
                 {"source": "grd", "terrain": "dem"}, {"source": "grd", "terrain": "none"}])
    real = composite_mod.open_s1

    def open_s1(*a, **k):  # noqa: ANN002, ANN003, ANN202
        r = real(*a, **k)
        r.made = next(made)
        return r

    monkeypatch.setattr(composite_mod, "open_s1", open_s1)
    with CompositeSource(s2, s1) as src:
        assert (src.preprocessing.s1.source, src.preprocessing.s1.terrain) == ("grd", "dem")
    with CompositeSource(s2, s1) as src:  # they differ: nothing is claimed
        assert (src.preprocessing.s1.source, src.preprocessing.s1.terrain) == ("raster", "unknown")


def test_orbit_is_passed_to_grd_products_only(tmp_path: Path) -> None:
    s2 = [_s2(tmp_path / "S2_20210101T000000")]
    with CompositeSource(s2, [_s1(tmp_path / "S1_20210101_VV.tif")], orbit=tmp_path / "orbits") as src:
        assert len(src.s1) == 1  # a raster ignores --orbit among GRD products


@pytest.mark.realdata
def test_orbit_reaches_a_grd_product(realdata: Path, tmp_path: Path) -> None:
    from grd_factory import make_product, s2_grid_over

    safe = make_product(realdata, tmp_path / "safe", Window(12800, 7800, 64, 64))
    grid = s2_grid_over(safe.geo, 7830.0, 12830.0, 8)
    s2 = [_s2(tmp_path / "S2_20211223T022551", h=8, w=8, transform=grid.transform)]
    write_s2(s2[0], dn_for(np.full((9, 8, 8), 0.1), 0), np.full((8, 8), 4, np.uint8), crs=grid.crs,
             transform=grid.transform)
    (tmp_path / "orbits").mkdir()
    with pytest.raises(InputError, match=rf"^--orbit {re.escape(str(tmp_path / 'orbits'))} holds no S1B orbit file"):
        CompositeSource(s2, [safe.path], orbit=tmp_path / "orbits")


def test_skip_disjoint_skips_sentinel1_off_the_grid_else_refuses(tmp_path: Path) -> None:
    s2 = [_s2(tmp_path / "S2_20210101T000000")]
    far = _s1(tmp_path / "S1_20201231_VV.tif", transform=Affine(10, 0, 500000, 0, -10, 9600000))
    on = [_s1(tmp_path / f"S1_2021010{k}_VV.tif") for k in (1, 2)]
    with CompositeSource(s2, [far, *on], skip_disjoint=True) as src:
        assert [a.path.name for a in src.s1] == ["S1_20210101_VV.tif", "S1_20210102_VV.tif"]
        assert src.skipped == ["S1_20201231_VV.tif (off the grid)"]
    with pytest.raises(CRSError, match=rf"^--s1 {re.escape(str(far))} does not overlap the Sentinel-2 scene"):
        CompositeSource(s2, [far, *on])


def test_sentinel1_refusals_name_the_option(tmp_path: Path) -> None:
    s2 = [_s2(tmp_path / "S2_20210101T000000")]
    missing = tmp_path / "S1_missing_VV.tif"
    with pytest.raises(InputNotFoundError, match=rf"^--s1 {re.escape(str(missing))} does not exist; check the path$"):
        CompositeSource(s2, [missing])
    with pytest.raises(InputError, match=r"^no Sentinel-1 acquisition to composite; pass sigma0 VV rasters or "
                                         r"GRD products with --s1$"):
        CompositeSource(s2, [])
    _s1(tmp_path / "s1" / "S1_20210701_VV.tif")
    with pytest.raises(InputError, match=r"^no Sentinel-1 acquisition to composite in the period "
                                         r"2021-01-01\.\.2021-01-31; pass sigma0 VV rasters or GRD products with --s1$"):
        CompositeSource(s2, [tmp_path / "s1"], period=Period.of("2021-01-01", "2021-01-31"))


# -- acquisitions and the period ---------------------------------------------------------------------
def test_period_keeps_undated_sentinel1_with_a_warning_and_refuses_undated_sentinel2(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    period = Period.of("2021-01-01", "2021-12-31")
    s2 = [_s2(tmp_path / "S2_20210101T000000")]
    undated = _s1(tmp_path / "vv_linear.tif")
    with caplog.at_level(logging.WARNING, logger="coalmine.preprocess"):
        with CompositeSource(s2, [undated], period=period) as src:
            assert [a.path for a in src.s1] == [undated] and src.s1[0].date is None
    assert f"--s1 {undated}: no acquisition date in its name; used although a period is given" in caplog.text
    tile = _s2(tmp_path / "tileA")
    msg = (rf"^--s2 {re.escape(str(tile))}: cannot tell its acquisition date \(no date in the metadata or the "
           r"name\) to check it against the period 2021-01-01\.\.2021-12-31; rename it with its date "
           r"\(…_20230715T022551…\) or drop --start/--end$")
    with pytest.raises(InputError, match=msg):
        CompositeSource([tile], [undated], period=period)
    with CompositeSource([tile], [undated]) as src:  # without a period no date is needed
        assert src.s2[0].date is None


def test_refuses_a_named_acquisition_outside_the_period_naming_the_option(tmp_path: Path) -> None:
    s2 = [_s2(tmp_path / "S2_20210101T000000"), _s2(tmp_path / "S2_20210315T000000")]
    s1 = [_s1(tmp_path / "S1_20210101_VV.tif")]
    with pytest.raises(InputError, match=rf"^--s2 {re.escape(str(s2[1]))} was acquired on 2021-03-15, outside the "
                                         r"period 2021-01-01\.\.2021-02-28; remove it or widen --start/--end$"):
        CompositeSource(s2, s1, period=Period.of("2021-01-01", "2021-02-28"))
    with pytest.raises(InputError, match=rf"^--s1 {re.escape(str(s1[0]))} was acquired on 2021-01-01, outside"):
        CompositeSource(s2[1:], s1, period=Period.of("2021-03-01", "2021-03-31"))


def test_found_acquisitions_outside_the_period_are_skipped_without_opening_them(tmp_path: Path) -> None:
    period = Period.of("2021-01-01", "2021-06-30")
    acq = tmp_path / "acq"
    _s2(acq / "S2_20210101T022551")
    _s2(acq / "S2_20211001T022551_L1C", level="L1C")  # a Level-1C outside the period: never opened
    s1 = tmp_path / "s1"
    _s1(s1 / "S1_20210101T221516_VV.tif")
    _s1(s1 / "S1_20210701T221516_VV.tif")
    with CompositeSource([str(acq / "S2_*")], [s1], period=period) as src:
        assert [a.path.name for a in src.s2] == ["S2_20210101T022551"]
        assert [a.path.name for a in src.s1] == ["S1_20210101T221516_VV.tif"]
        assert src.skipped == ["S2_20211001T022551_L1C (2021-10-01, outside the period)",
                               "S1_20210701T221516_VV.tif (2021-07-01, outside the period)"]
        assert src.inputs["skipped"] == src.skipped


def test_the_metadata_date_wins_and_a_found_acquisition_outside_is_skipped(tmp_path: Path) -> None:
    from test_input_numbers import mtd_xml

    acq = tmp_path / "acq"
    a = _s2(acq / "A_tile")  # no date in its name; the metadata says 2021-11-05
    (a / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline="03.01", date="2021-11-05"))
    _s2(acq / "B_20210301T022551")
    s1 = [_s1(tmp_path / "S1_20210301_VV.tif")]
    with CompositeSource([str(acq / "*")], s1, period=Period.of("2021-01-01", "2021-06-30")) as src:
        assert [x.path.name for x in src.s2] == ["B_20210301T022551"]
        assert src.skipped == ["A_tile (2021-11-05, outside the period)"]
    # named in its folder with another date, the metadata's counts
    c = _s2(tmp_path / "S2_20210704T022551")
    (c / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline="03.01", date="2021-11-05"))
    with CompositeSource([c], s1) as src:
        assert src.s2[0].date == D(2021, 11, 5)
        # the files hashed: the bands, the SCL and the metadata, sorted by name
        assert [f.name for f in src.s2[0].files] == ["MTD_MSIL2A.xml", *(
            f"T50MLA_S2_20210704T022551_{b}_10m.tif"
            for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12", "SCL"))]


def test_a_bare_date_in_the_folder_name_dates_an_acquisition_without_metadata_date(tmp_path: Path) -> None:
    s2 = [_s2(tmp_path / "S2_2021-07-04")]
    with CompositeSource(s2, [_s1(tmp_path / "S1_20210704_VV.tif")]) as src:
        assert src.s2[0].reader.metadata.date is None and src.s2[0].date == D(2021, 7, 4)
        assert src.inputs["s2"][0]["date"] == "2021-07-04"


def test_no_sentinel2_acquisition_message_lists_at_most_five_skipped(tmp_path: Path) -> None:
    period = Period.of("2021-01-01", "2021-12-31")
    s1 = [_s1(tmp_path / "S1_20210101_VV.tif")]
    for k in range(1, 7):
        (tmp_path / "old" / f"S2_2020010{k}T000000").mkdir(parents=True)  # skipped by name, never opened
    skipped = [f"S2_2020010{k}T000000 (2020-01-0{k}, outside the period)" for k in range(1, 7)]
    head = "^no Sentinel-2 acquisition to composite in the period 2021-01-01\\.\\.2021-12-31 \\(skipped: "
    tail = "; pass L2A acquisitions with --s2 or widen --start/--end$"
    with pytest.raises(InputError, match=head + re.escape("; ".join(skipped[:5]) + " …)") + tail):
        CompositeSource([str(tmp_path / "old" / "S2_*")], s1, period=period)
    with pytest.raises(InputError, match=head + re.escape("; ".join(skipped[:5]) + ")") + tail):
        CompositeSource([str(tmp_path / "old" / "S2_2020010[1-5]*")], s1, period=period)
    with pytest.raises(InputError, match="^no Sentinel-2 acquisition to composite" + tail):
        CompositeSource([], s1)
    with pytest.raises(InputError, match="^no Sentinel-2 acquisition to composite" + tail):
        CompositeSource([], s1, period=period)  # none given: the period is not why


# -- refusals of what cannot be composited --------------------------------------------------------
def test_refusals_of_inputs_that_are_not_sentinel2_acquisitions(tmp_path: Path) -> None:
    s2 = _s2(tmp_path / "S2_20210101T000000")
    s1 = _s1(tmp_path / "S1_20210115T221516_VV.tif")
    with pytest.raises(InputError, match=rf"^--s2 {re.escape(str(s1))} is a Sentinel-1 raster \(band VV\), not a "
                                         r"Sentinel-2 acquisition; give it with --s1, and name the Sentinel-2 "
                                         r"acquisitions on their own \(their folders, or a quoted pattern such as "
                                         r"'downloads/\*_S2'\)$"):
        CompositeSource([s2, s1], [s1])
    stack = tmp_path / "S2_20210102T000000_stack.tif"
    with rasterio.open(stack, "w", driver="GTiff", width=4, height=4, count=N_BANDS, dtype="float32",
                       crs=UTM50S, transform=TRANSFORM) as ds:
        ds.descriptions = BAND_NAMES
    with pytest.raises(InputError, match=rf"^--s2 {re.escape(str(stack))} is a 23-band stack made by coal-prepare, "
                                         r"not a Sentinel-2 acquisition; a composite is made from the acquisitions "
                                         r"themselves \(their band files and SCL\): pass those instead$"):
        CompositeSource([s2, stack], [s1])
    junk = _touch(tmp_path / "S2_20210103T000000.tif", b"not a raster")
    with pytest.raises(InputError, match=rf"^--s2 {re.escape(str(junk))} is not a raster GDAL can read"):
        CompositeSource([s2, junk], [s1])
    bare = _s2(tmp_path / "S2_20210104T000000", with_scl=False)
    with pytest.raises(InputError, match=rf"^--s2 {re.escape(str(bare))} has no SCL \(scene classification\) band; "
                                         r"a composite masks every acquisition's clouds with its own SCL: add the "
                                         r"SCL file \(…_SCL_20m\.jp2\) to the acquisition or leave the acquisition out$"):
        CompositeSource([s2, bare], [s1])


def test_off_grid_sentinel2_message_gives_both_extents(tmp_path: Path) -> None:
    a = _s2(tmp_path / "S2_20210101T000000")
    far = _s2(tmp_path / "S2_20210102T000000", transform=Affine(10, 0, 500000, 0, -10, 9600000))
    s1 = [_s1(tmp_path / "S1_20210101_VV.tif")]
    with pytest.raises(CRSError, match=rf"^--s2 {re.escape(str(far))} does not overlap the output grid: its extent "
                                       r"\(500000, 9599880, 500160, 9600000\) vs the grid's \(300000, 9699880, 300160, "
                                       r"9700000\) \(left, bottom, right, top in EPSG:32750\); remove it, or give a "
                                       r"grid that covers all acquisitions \(--grid-from AOI or --like REF\.tif\)$"):
        CompositeSource([a, far], s1)
    below = _s2(tmp_path / "S2_20210103T000000", transform=TRANSFORM * Affine.translation(0, 1000))
    with pytest.raises(CRSError, match="S2_20210103T000000 does not overlap the output grid"):  # columns overlap
        CompositeSource([a, below], s1)


def test_skip_disjoint_sentinel2_keeps_the_later_ones_and_refuses_when_none_is_left(tmp_path: Path) -> None:
    far = _s2(tmp_path / "S2_20210101T000000", transform=Affine(10, 0, 500000, 0, -10, 9600000))
    on = [_s2(tmp_path / f"S2_2021020{k}T000000") for k in (1, 2)]
    s1 = [_s1(tmp_path / "S1_20210101_VV.tif")]
    with CompositeSource([far, *on], s1, grid=GRID, skip_disjoint=True) as src:
        assert [a.path.name for a in src.s2] == ["S2_20210201T000000", "S2_20210202T000000"]
        assert src.skipped == ["S2_20210101T000000 (off the grid)"]
    with pytest.raises(InputError, match=r"^none of the Sentinel-2 acquisitions overlaps the output grid; give a "
                                         r"grid over the acquisitions \(--grid-from AOI, --like REF\.tif\)$"):
        CompositeSource([far], s1, grid=GRID, skip_disjoint=True)


def test_acquisitions_touching_the_grid_are_kept_and_add_nothing(tmp_path: Path) -> None:
    a = _s2(tmp_path / "S2_20210101T000000", 0.1)
    right = _s2(tmp_path / "S2_20210102T000000", 0.3, transform=TRANSFORM * Affine.translation(W, 0))
    below = _s2(tmp_path / "S2_20210103T000000", 0.3, transform=TRANSFORM * Affine.translation(0, H))
    with CompositeSource([a, right, below], [_s1(tmp_path / "S1_20210101_VV.tif")], grid=GRID, dilation=0) as src:
        assert [x.footprint for x in src.s2] == [Window(0, 0, W, H), Window(W - 1, 0, 1, H), Window(0, H - 1, W, 1)]
        x, counts = src.read_with_counts(GRID.full)
    np.testing.assert_allclose(x[:9], 0.1, rtol=1e-6)
    assert (counts[0] == 1).all()


# -- reading ----------------------------------------------------------------------------------------
def test_an_acquisition_missing_the_block_does_not_stop_the_later_ones(tmp_path: Path) -> None:
    left = _s2(tmp_path / "S2_20210101T000000", 0.1, w=8)
    right = _s2(tmp_path / "S2_20210201T000000", 0.3, w=8, transform=TRANSFORM * Affine.translation(8, 0))
    with CompositeSource([left, right], [_s1(tmp_path / "S1_20210101_VV.tif")], grid=GRID, dilation=0) as src:
        x, counts = src.read_with_counts(Window(12, 0, 4, H))  # the left one's footprint ends at column 8
    np.testing.assert_allclose(x[:9], 0.3, rtol=1e-6)
    assert (counts[0] == 1).all() and (counts[1] == 1).all()


def test_a_pixel_without_sentinel1_is_nodata_in_every_band(tmp_path: Path) -> None:
    w = 40
    s2 = [_s2(tmp_path / f"S2_2021010{k}T000000", w=w) for k in (1, 2)]
    s1 = [_s1(tmp_path / "S1_20210101_VV.tif", w=20)]  # covers columns 0..19 only
    grid = Grid(UTM50S, TRANSFORM, w, H)
    with CompositeSource(s2, s1, dilation=0) as src:
        x, counts = src.read_with_counts(grid.full)
        assert np.array_equal(src.read_counts(grid.full), counts)
    assert (counts[0] == 2).all()
    assert (counts[1][:, :20] == 1).all() and (counts[1][:, 21:] == 0).all()
    assert np.isnan(x[:, :, 21:]).all()  # clear in Sentinel-2, but no VV: nodata in all 23 bands
    assert np.isfinite(x[:, :, :12]).all()


def test_one_sentinel1_acquisition_is_filtered_with_the_looks_of_one(tmp_path: Path) -> None:
    from coalmine.runtime.preprocess.speckle import lee_filter, power_to_db

    power = (0.05 * np.random.default_rng(1).gamma(4.4, 1 / 4.4, (H, W))).astype(np.float32)
    s1 = write_s1(tmp_path / "S1_20210101_VV.tif", power)
    with CompositeSource([_s2(tmp_path / "S2_20210101T000000")], [s1], dilation=0) as src:
        vv = src.read(GRID.full)[12]
    np.testing.assert_allclose(vv, power_to_db(lee_filter(power, 5, np.full((H, W), 4.4))), atol=2e-5)
    assert np.abs(vv - power_to_db(lee_filter(power, 5, np.full((H, W), 8.8)))).max() > 0.05


def test_a_composite_read_records_its_stages(tmp_path: Path) -> None:
    with CompositeSource([_s2(tmp_path / "S2_20210101T000000")], [_s1(tmp_path / "S1_20210101_VV.tif")]) as src:
        src.read(GRID.full)
        stages = src.timers.as_dict()
    assert set(stages) == {"scl", "read_s2", "median", "indices", "warp_s1", "speckle", "glcm", "mask"}
    assert all(v >= 0 for v in stages.values())


def test_close_stops_the_hashing_thread_and_may_be_repeated(tmp_path: Path) -> None:
    src = CompositeSource([_s2(tmp_path / "S2_20210101T000000")], [_s1(tmp_path / "S1_20210101_VV.tif")])
    src.start_hashing()
    pool = src._hash_pool
    assert len(src.inputs["s2"][0]["sha256"]) == 64
    src.close()
    assert not any(t.is_alive() for t in pool._threads)
    src.close()
