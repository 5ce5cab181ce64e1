"""The numbers that enter the stack, checked against hand-worked values.

Every expectation here is computed by hand (or by an independent implementation written in this
file), never by running the pipeline twice: index formulas on a pixel whose bands all differ;
Sentinel-2 DN -> reflectance for every place the DN offset can come from (SAFE name, MTD_MSIL2A.xml,
GeoTIFF tags, GDAL scale/offset, PROCESSING_BASELINE, the acquisition-date guess on both sides of
2022-01-25, an explicit offset); and the Lee filter's domain (linear power, then dB).

The inputs are tiny rasters written here with rasterio, all on one 10 m grid, so no resampling
blurs the numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.bands import BAND_NAMES, S2_BANDS
from coalmine.runtime.errors import InputError, UnitsError, UsageError
from coalmine.runtime.preprocess import open_scene
from coalmine.runtime.preprocess.indices import compute_indices
from coalmine.runtime.preprocess.s1 import detect_units
from coalmine.runtime.preprocess.s2 import S2Reader
from coalmine.runtime.preprocess.speckle import box_sum, db_to_power, lee_filter, power_to_db
from rasterio.crs import CRS
from rasterio.windows import Window

CRS_UTM = CRS.from_epsg(32750)
TRANSFORM = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 9700000.0)
H, W = 4, 6

#: The DN of each band on the "typical" pixels: after the -1000 offset the reflectances are
#: 0.05 0.07 0.04 0.11 0.19 0.23 0.30 0.20 0.13 (vegetation-like, every band different).
DN = {"B02": 1500, "B03": 1700, "B04": 1400, "B05": 2100, "B06": 2900, "B07": 3300,
      "B08": 4000, "B11": 3000, "B12": 2300}


def dn_arrays() -> dict[str, np.ndarray]:
    """(H, W) uint16 DN per band: DN[b] + 10 * column (so pixels differ), with two special pixels.

    - (0, 0): B05 is 0 (nodata DN) -> the whole pixel is nodata in all nine bands;
    - (1, 1): B03 is 600 -> with the -1000 offset its reflectance would be -0.04: clipped to 0.
    """
    out = {}
    for b, v in DN.items():
        a = np.full((H, W), v, dtype=np.uint16) + (10 * np.arange(W, dtype=np.uint16))[None, :]
        out[b] = a
    out["B05"][0, 0] = 0
    out["B03"][1, 1] = 600
    return out


def expected_reflectance(offsets: dict[str, float], scale: float = 10000.0) -> np.ndarray:
    """(9, H, W) float64: (DN + offset) / scale, clipped at 0, NaN where any band's DN is 0."""
    dns = dn_arrays()
    refl = np.stack([np.maximum((dns[b].astype(np.float64) + offsets[b]) / scale, 0.0)
                     for b in S2_BANDS])
    refl[:, 0, 0] = np.nan
    return refl


def write_band(path: Path, data: np.ndarray, tags: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prof = {"driver": "GTiff", "dtype": "uint16", "count": 1, "height": H, "width": W,
            "crs": CRS_UTM, "transform": TRANSFORM}
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data, 1)
        if tags:
            ds.update_tags(**tags)
    return path


def write_folder(folder: Path, stem: str, tags: dict[str, str] | None = None) -> Path:
    """One GeoTIFF per band named ``L2A_{stem}_{band}_10m.tif`` (as in a SAFE IMG_DATA folder).

    The names say Level-2A: without it, blue reflectance of 0.15 on every pixel (offset 0) is
    what top-of-atmosphere data looks like, and the reader refuses it as Level-1C.
    """
    for b, a in dn_arrays().items():
        write_band(folder / f"L2A_{stem}_{b}_10m.tif", a, tags)
    return folder


def write_multiband(path: Path, tags: dict[str, str] | None = None,
                    scale_offset: tuple[float, float] | None = None) -> Path:
    """A 9-band GeoTIFF whose band descriptions name the bands (e.g. an Earth Engine export),
    tagged ``PROCESSING_LEVEL=Level-2A`` (see :func:`write_folder` for why the level is said)."""
    dns = dn_arrays()
    tags = {"PROCESSING_LEVEL": "Level-2A", **(tags or {})}
    prof = {"driver": "GTiff", "dtype": "uint16", "count": 9, "height": H, "width": W,
            "crs": CRS_UTM, "transform": TRANSFORM}
    with rasterio.open(path, "w", **prof) as ds:
        for i, b in enumerate(S2_BANDS, start=1):
            ds.write(dns[b], i)
            ds.set_band_description(i, b)
        if scale_offset is not None:
            ds.scales = (scale_offset[0],) * 9
            ds.offsets = (scale_offset[1],) * 9
        if tags:
            ds.update_tags(**tags)
    return path


def mtd_xml(*, baseline: str | None, date: str, offsets: dict[int, int] | None = None,
            quantification: int = 10000) -> str:
    """A Level-2A product metadata file with the elements a real MTD_MSIL2A.xml carries."""
    base = f"<PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>" if baseline else ""
    offs = ""
    if offsets is not None:
        items = "".join(f'<BOA_ADD_OFFSET band_id="{k}">{v}</BOA_ADD_OFFSET>' for k, v in offsets.items())
        offs = f"<BOA_ADD_OFFSET_VALUES_LIST>{items}</BOA_ADD_OFFSET_VALUES_LIST>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/'
        'User_Product_Level-2A.xsd"><n1:General_Info><Product_Info>'
        f"<PRODUCT_START_TIME>{date}T02:25:51.024Z</PRODUCT_START_TIME>"
        "<PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>"
        f"{base}</Product_Info><Product_Image_Characteristics><QUANTIFICATION_VALUES_LIST>"
        f'<BOA_QUANTIFICATION_VALUE unit="none">{quantification}</BOA_QUANTIFICATION_VALUE>'
        f"</QUANTIFICATION_VALUES_LIST>{offs}</Product_Image_Characteristics>"
        "</n1:General_Info></n1:Level-2A_User_Product>\n"
    )


def read_all(path: Path, **kw) -> tuple[np.ndarray, S2Reader]:
    with S2Reader(path, **kw) as r:
        return r.read(Window(0, 0, W, H)), r


def same_offset(v: float) -> dict[str, float]:
    return dict.fromkeys(S2_BANDS, v)


# -- indices ---------------------------------------------------------------------------------

def test_indices_on_a_pixel_whose_bands_all_differ():
    # B02 .05, B03 .07, B04 .04, B05 .11, B06 .19, B07 .23, B08 .30, B11 .20, B12 .13
    refl = np.array([0.05, 0.07, 0.04, 0.11, 0.19, 0.23, 0.30, 0.20, 0.13], np.float32)[:, None, None]
    idx = compute_indices(refl)
    assert idx.dtype == np.float32 and idx.shape == (3, 1, 1)  # the stack's type, one plane per index
    ndvi, ndci, bai = idx[:, 0, 0]
    assert ndvi == pytest.approx(13 / 17, rel=1e-6)  # (B08 - B04) / (B08 + B04) = .26 / .34
    assert ndci == pytest.approx(1 / 5, rel=1e-6)  # (B08 - B11) / (B08 + B11) = .10 / .50
    assert bai == pytest.approx(-5 / 7, rel=1e-6)  # (B02 - B08) / (B02 + B08) = -.25 / .35
    # the band names, not the positions, pick the inputs: same pixel with the bands reversed
    rev = compute_indices(refl[::-1].copy(), bands=S2_BANDS[::-1])[:, 0, 0]
    np.testing.assert_allclose(rev, [13 / 17, 1 / 5, -5 / 7], rtol=1e-6)


def test_normalized_difference_broadcasts_and_gives_float32():
    from coalmine.runtime.preprocess.indices import normalized_difference

    # a column (2, 1) against a row (1, 3): (a - b) / (a + b) on the 2 x 3 grid, by hand
    a = np.array([[3.0], [1.0]])
    b = np.array([[1.0, 3.0, 0.0]])
    r = normalized_difference(a, b)
    assert r.dtype == np.float32 and r.shape == (2, 3)
    np.testing.assert_allclose(r, [[0.5, 0.0, 1.0], [0.0, -0.5, 1.0]], rtol=1e-7)
    # a + b = 0 with a != b (a negative reflectance after the -1000 DN offset): nodata, never ±inf
    z = normalized_difference(np.array([0.1, -0.02], np.float32), np.array([-0.1, 0.02], np.float32))
    assert np.isnan(z).all()


# -- Sentinel-2 DN offset: every source ---------------------------------------------------------

@pytest.mark.parametrize("name,offset", [
    # the baseline in the SAFE name decides, whatever the acquisition date says
    ("S2A_MSIL2A_20220301T022551_N0400_R046_T50MLA_20220301T050000.SAFE", -1000.0),
    ("S2A_MSIL2A_20190614T022551_N0500_R046_T50MLA_20230101T050000.SAFE", -1000.0),
    ("S2B_MSIL2A_20220301T022551_N0301_R046_T50MLA_20220301T050000.SAFE", 0.0),
])
def test_offset_from_the_baseline_in_the_safe_name(tmp_path, caplog, name, offset):
    safe = tmp_path / name
    write_folder(safe / "GRANULE" / "L2A_T50MLA" / "IMG_DATA" / "R10m", "T50MLA_20220301T022551")
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        refl, r = read_all(safe)
    assert r.kind == "safe" and "processing baseline" in r.offset.source and name in r.offset.source
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(offset)), rtol=1e-6)
    assert caplog.text == ""  # nothing guessed


def test_offset_per_band_from_mtd_boa_add_offset(tmp_path):
    # BOA_ADD_OFFSET band_id follows the physical band order B01 B02 ... B08 B8A B09 B10 B11 B12;
    # a different offset per band shows which one each band gets.
    folder = write_folder(tmp_path / "s2", "T50MLA_20210601T022551")
    offsets = {bid: -1000 - 10 * bid for bid in range(13)}
    (folder / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline="04.00", date="2021-06-01", offsets=offsets))
    refl, r = read_all(folder)
    want = {"B02": -1010, "B03": -1020, "B04": -1030, "B05": -1040, "B06": -1050, "B07": -1060,
            "B08": -1070, "B11": -1110, "B12": -1120}  # B8A (id 8), B09, B10 are not used
    assert r.offset.offsets == want and "BOA_ADD_OFFSET" in r.offset.source
    np.testing.assert_allclose(refl, expected_reflectance(want), rtol=1e-6)
    # pixel (2, 3) of B08 by hand: (4000 + 30 - 1070) / 10000
    assert refl[6, 2, 3] == pytest.approx(0.296, rel=1e-6)


@pytest.mark.parametrize("baseline,date,offset", [
    ("04.00", "2021-06-01", -1000.0),  # the baseline decides, not the date
    ("03.01", "2022-06-01", 0.0),
    ("02.14", "2019-06-01", 0.0),
])
def test_offset_from_mtd_processing_baseline(tmp_path, baseline, date, offset):
    folder = write_folder(tmp_path / "s2", "T50MLA_20230101T022551")
    (folder / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline=baseline, date=date))
    refl, r = read_all(folder)
    assert r.offset.value == offset and f"processing baseline {baseline}" in r.offset.source
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(offset)), rtol=1e-6)


def test_mtd_quantification_value_is_the_scale(tmp_path):
    folder = write_folder(tmp_path / "s2", "T50MLA_20210601T022551")
    (folder / "MTD_MSIL2A.xml").write_text(
        mtd_xml(baseline="04.00", date="2021-06-01", quantification=20000,
                offsets=dict.fromkeys(range(13), -1000)))
    refl, r = read_all(folder)
    assert r.offset.scale == 20000.0
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(-1000.0), 20000.0), rtol=1e-6)
    assert refl[6, 3, 5] == pytest.approx((4000 + 50 - 1000) / 20000, rel=1e-6)


@pytest.mark.parametrize("tags,offset", [
    ({"BOA_ADD_OFFSET": "-1000"}, -1000.0),
    ({"PROCESSING_BASELINE": "04.00"}, -1000.0),
    ({"PROCESSING_BASELINE": "03.01", "DATE": "2023-01-01"}, 0.0),
])
def test_offset_from_geotiff_tags(tmp_path, tags, offset):
    # named with a 2021 date (the guess would say 0) or 2023 (the guess would say -1000)
    date = "20210601T022551" if offset else "20230101T022551"
    path = write_multiband(tmp_path / f"S2_{date}_stack.tif", tags)
    refl, r = read_all(path)
    assert r.kind == "multiband" and r.offset.value == offset and r.offset.source.startswith("metadata")
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(offset)), rtol=1e-6)


def test_offset_tags_of_single_band_files(tmp_path):
    folder = write_folder(tmp_path / "s2", "T50MLA_20210601T022551",
                          tags={"BOA_ADD_OFFSET": "-1000", "BOA_QUANTIFICATION_VALUE": "10000"})
    refl, r = read_all(folder)
    assert r.offset.value == -1000.0 and "tags of" in r.offset.source
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(-1000.0)), rtol=1e-6)


@pytest.mark.parametrize("scale,add,offset,quant", [
    (1e-4, -0.1, -1000.0, 10000.0),  # reflectance = DN * 1e-4 - 0.1 = (DN - 1000) / 10000
    (1e-4, 0.0, 0.0, 10000.0),  # metadata says no offset although the 2023 date would guess -1000
    (5e-5, -0.05, -1000.0, 20000.0),
])
def test_offset_from_gdal_band_scale_and_offset(tmp_path, scale, add, offset, quant):
    path = write_multiband(tmp_path / "S2_20230101T022551_stack.tif", scale_offset=(scale, add))
    refl, r = read_all(path)
    assert r.offset.value == pytest.approx(offset) and r.offset.scale == pytest.approx(quant)
    assert "band scale/offset" in r.offset.source
    # the GDAL rule itself, written out: DN * scale + offset
    dns = dn_arrays()
    by_gdal = np.stack([np.maximum(dns[b] * scale + add, 0.0) for b in S2_BANDS])
    by_gdal[:, 0, 0] = np.nan
    np.testing.assert_allclose(refl, by_gdal, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(offset), quant), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("date,offset", [("20220124", 0.0), ("20220125", -1000.0), ("20230601", -1000.0),
                                         ("20211231", 0.0)])
def test_offset_guessed_from_the_acquisition_date(tmp_path, caplog, date, offset):
    # baseline 04.00 (with the -1000 offset) started on 2022-01-25
    folder = write_folder(tmp_path / "s2", f"T50MLA_{date}T022551")
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        refl, r = read_all(folder)
    assert r.offset.value == offset and r.offset.source == f"guess: date {date}"
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(offset)), rtol=1e-6)
    assert f"guessed offset {offset:g} from the acquisition date {date}" in caplog.text
    assert "--s2-offset" in caplog.text


def test_no_metadata_and_no_date_assumes_zero_with_a_warning(tmp_path, caplog):
    folder = write_folder(tmp_path / "s2", "tile")
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        refl, r = read_all(folder)
    assert r.offset.value == 0.0 and r.offset.source == "guess: no metadata"
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(0.0)), rtol=1e-6)
    assert "assuming offset 0" in caplog.text and "--s2-offset -1000" in caplog.text


@pytest.mark.parametrize("meta,explicit,warns", [
    ("03.01", -1000.0, True),  # the product says 0, the user says -1000: the user wins, with a warning
    ("04.00", 0.0, True),
    ("04.00", -1000.0, False),  # agreeing: nothing to warn about
    (None, -1000.0, False),  # nothing to contradict (a 2021 date would have guessed 0)
])
def test_explicit_offset_wins(tmp_path, caplog, meta, explicit, warns):
    folder = write_folder(tmp_path / "s2", "T50MLA_20210601T022551")
    if meta is not None:
        (folder / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline=meta, date="2021-06-01"))
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        refl, r = read_all(folder, s2_offset=explicit)
    assert r.offset.value == explicit and r.offset.source == "explicit --s2-offset"
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(explicit)), rtol=1e-6)
    if warns:
        other = 0 if meta == "03.01" else -1000
        assert f"--s2-offset {explicit:g} overrides the product's own offset" in caplog.text
        assert f"processing baseline {meta}" in caplog.text and f"says {other}" in caplog.text
    else:
        assert caplog.text == ""


def test_positive_explicit_offset_is_refused(tmp_path):
    folder = write_folder(tmp_path / "s2", "T50MLA_20210601T022551")
    with pytest.raises(UsageError, match=r"--s2-offset 1000 is positive.*use -1000 for processing "
                                         r"baseline 04.00 and later, 0 before"):
        S2Reader(folder, s2_offset=1000)


def test_partial_offset_list_and_unreadable_baseline(tmp_path, caplog):
    # Only B08 (band_id 7) listed: B08 gets it, the others fall back to B02's, absent here: 0.
    folder = write_folder(tmp_path / "a", "T50MLA_20230101T022551")
    (folder / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline="04.00", date="2023-01-01", offsets={7: -1000}))
    refl, r = read_all(folder)
    want = {**same_offset(0.0), "B08": -1000.0}
    assert r.offset.offsets == want
    np.testing.assert_allclose(refl, expected_reflectance(want), rtol=1e-6)
    # A baseline that is not a number says nothing: the date decides (2023: -1000), with a warning.
    path = write_multiband(tmp_path / "S2_20230101T022551_stack.tif", {"PROCESSING_BASELINE": "N/A"})
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        refl, r = read_all(path)
    assert r.offset.value == -1000.0 and r.offset.source == "guess: date 20230101"
    assert "guessed offset -1000" in caplog.text


def test_unparsable_mtd_is_refused(tmp_path):
    folder = write_folder(tmp_path / "s2", "T50MLA_20230101T022551")
    (folder / "MTD_MSIL2A.xml").write_text("<Level-2A_User_Product><General_Info>")
    with pytest.raises(InputError, match=r"MTD_MSIL2A.xml cannot be parsed .*pass --s2-offset explicitly"):
        S2Reader(folder)


def test_scl_classes_masked(tmp_path):
    # one pixel per SCL class 0..11: masked are 0 no data, 1 saturated, 3 cloud shadow,
    # 8 / 9 cloud medium / high probability, 10 thin cirrus
    folder = write_folder(tmp_path / "s2", "T50MLA_20230101T022551")
    scl = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 12
    write_band(folder / "T50MLA_20230101T022551_SCL_10m.tif", scl)
    with S2Reader(folder) as r:
        bad = r.scl_invalid(None, Window(0, 0, W, H))
    np.testing.assert_array_equal(bad, np.isin(scl, [0, 1, 3, 8, 9, 10]))
    assert bad.sum() == 12  # 24 pixels, each class twice


def test_20m_bands_are_interpolated_bilinearly_onto_the_10m_grid(tmp_path):
    # A 20 m band whose value is 100 x its column: pixel centres at x = 20 i + 10 m. Bilinear
    # interpolation at the 10 m centres x = 10 j + 5 gives 5 x - 50 = 50 j - 25 inside.
    folder = tmp_path / "s2"
    w20, h20 = 8, 4
    for b, v in DN.items():
        if b in ("B02", "B03", "B04", "B08"):
            write_band(folder / f"T50MLA_20230101T022551_{b}_10m.tif", np.full((H, W), v, np.uint16))
    prof = {"driver": "GTiff", "dtype": "uint16", "count": 1, "height": h20, "width": w20, "crs": CRS_UTM,
            "transform": Affine(20.0, 0.0, TRANSFORM.c, 0.0, -20.0, TRANSFORM.f)}
    for b in ("B05", "B06", "B07", "B11", "B12"):
        ramp = np.tile((1000 + 100 * np.arange(w20)).astype(np.uint16), (h20, 1))
        with rasterio.open(folder / f"T50MLA_20230101T022551_{b}_20m.tif", "w", **prof) as ds:
            ds.write(ramp, 1)
    with S2Reader(folder, s2_offset=0.0) as r:
        refl = r.read(Window(0, 0, W, H))
    dn_b05 = refl[3] * 10000  # B05
    # 10 m columns 1..5 (inside the 20 m centres): 1000 + 50 j - 25
    np.testing.assert_allclose(dn_b05[1:3, 1:6], np.tile(1000 + 50 * np.arange(1, 6) - 25.0, (2, 1)), rtol=1e-6)
    np.testing.assert_allclose(refl[0], 0.15, rtol=1e-6)  # the 10 m bands as they are


# -- Sentinel-1 units -------------------------------------------------------------------------

def sample(median: float, n_negative: int = 0, n: int = 200) -> np.ndarray:
    """n values around ``median`` (0.5x ... 1.5x), the first ``n_negative`` of them negative."""
    v = median * np.linspace(0.5, 1.5, n)
    v[:n_negative] = -np.abs(v[:n_negative]) - 1.0
    return v


@pytest.mark.parametrize("values,dtype,units", [
    (sample(0.05), "float32", "linear"),  # sigma0 around -13 dB in power
    (sample(1.9), "float32", "linear"),  # bright, still below the 2.0 limit for power
    (sample(-13.0, n_negative=200), "float32", "db"),
    (sample(0.5, n_negative=2), "float32", "db"),  # 2 of 200 = 1 % negative: dB (power never is)
    (sample(0.5, n_negative=1), "float32", "linear"),  # 0.5 % negative: noise, still power
    (np.array([0, 1, 1, 1, 2]), "uint8", "linear"),  # integer data with median 1 is not DN
])
def test_s1_units_detected(values, dtype, units):
    assert detect_units(values, dtype, "auto", "vv.tif") == units


@pytest.mark.parametrize("values,dtype,given,match", [
    (sample(2.1), "float32", "auto", "float32 with median 2.1 .*raw GRD digital numbers"),
    (sample(150.0), "uint16", "auto", "uint16 with median 150"),
    (np.array([1, 2, 2, 2, 3]), "int16", "linear", "int16 with median 2 "),  # integers above 1: DN
    (sample(400.0), "uint16", "db", "holds integer values around 400: raw GRD digital numbers"),
    (sample(0.5, n_negative=10), "float32", "linear", "declared linear but 5% of its values are negative"),
])
def test_s1_values_that_are_not_sigma0_are_refused(values, dtype, given, match):
    with pytest.raises(UnitsError, match=match) as e:
        detect_units(values, dtype, given, "vv.tif")
    assert "--s1 vv.tif" in str(e.value)


def test_s1_units_given_by_the_user(caplog):
    # dB declared on values that are linear power (no negatives, median 0.05): refused with the fix,
    # since reading them as dB would put every pixel near 0 dB
    with pytest.raises(UnitsError, match=r"--s1 vv.tif was declared dB but 100% of its values are "
                       r">= 0 \(median 0.05\), which is linear power.*pass --s1-units linear"):
        detect_units(sample(0.05), "float32", "db", "vv.tif")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        assert detect_units(sample(-13.0, n_negative=200), "float32", "db", "vv.tif") == "db"
        assert detect_units(sample(0.05), "float32", "linear", "vv.tif") == "linear"
        # integer dB (e.g. scaled) below 100 is taken as given
        assert detect_units(np.array([-20, -12, -10, 3]), "int16", "db", "vv.tif") == "db"
    assert caplog.text == ""
    with pytest.raises(UsageError, match="--s1-units 'power' is not one of auto, linear, db"):
        detect_units(sample(0.05), "float32", "power", "vv.tif")


# -- Lee filter domain: linear power, then dB ------------------------------------------------

def lee_reference(power: np.ndarray, window: int, enl: float) -> np.ndarray:
    """Lee (1980) pixel by pixel in float64: statistics of the finite values of the window
    clipped at the raster edge; ``m + k (x - m)`` with ``k = clip(vx / v, 0, 1)`` and
    ``vx = (v - m^2 / enl) / (1 + 1 / enl)``."""
    r = window // 2
    h, w = power.shape
    out = np.full((h, w), np.nan)
    cu2 = 1.0 / enl
    for i in range(h):
        for j in range(w):
            x = power[i, j]
            if not np.isfinite(x):
                continue
            win = power[max(0, i - r): i + r + 1, max(0, j - r): j + r + 1].astype(np.float64)
            win = win[np.isfinite(win)]
            m = win.mean()
            v = win.var()
            k = 0.0 if v <= 0 else min(max((v - m * m * cu2) / (1 + cu2) / v, 0.0), 1.0)
            out[i, j] = m + k * (x - m)
    return out


def test_lee_filter_equals_an_independent_reference_and_keeps_the_mean():
    rng = np.random.default_rng(7)
    power = rng.gamma(4.4, 0.05 / 4.4, size=(30, 34)).astype(np.float32)
    power[3:6, 20:25] = 0.8  # a bright building: an edge the filter must keep
    power[12, 7] = np.nan
    got = lee_filter(power, 5, 4.4)
    assert got.dtype == np.float32  # the stack's type
    ref = lee_reference(power, 5, 4.4)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-7)
    # the defaults are the documented 5 x 5 window and ENL 4.4 (Sentinel-1 IW GRD)
    np.testing.assert_allclose(lee_filter(power), ref, rtol=2e-5, atol=1e-7)


def test_lee_filter_keeps_the_mean_of_flat_speckle_in_linear_power():
    # ENL 4.4 speckle over a flat 0.05 (-13.01 dB) target: the filter is an (adaptive) local mean
    # in linear power, so the mean stays 0.05; the same filter in dB would lower it by ~0.5 dB.
    rng = np.random.default_rng(3)
    power = rng.gamma(4.4, 0.05 / 4.4, size=(200, 200)).astype(np.float32)
    f = lee_filter(power, 5, 4.4)
    assert f.mean() == pytest.approx(power.mean(), rel=2e-3)
    assert power.mean() == pytest.approx(0.05, rel=0.01)
    db_mean_of_filtered = 10 * np.log10(f.mean())
    assert db_mean_of_filtered == pytest.approx(-13.01, abs=0.05)
    assert f.std() < 0.5 * power.std()  # and it does smooth


def test_db_conversions_by_hand():
    p = np.array([1.0, 0.1, 100.0, 0.0, -1.0, np.nan])
    db = power_to_db(p)
    assert db.dtype == np.float32
    np.testing.assert_allclose(db[:3], [0.0, -10.0, 20.0], atol=1e-6)
    assert np.isnan(db[3:]).all()  # 0, negative and NaN power are nodata, never -inf
    back = db_to_power(np.array([0.0, -10.0, 20.0, np.nan]))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back[:3], [1.0, 0.1, 100.0], rtol=1e-6)
    assert np.isnan(back[3])


def test_lee_filter_small_cases_and_refusals():
    img = np.array([[1.0, 2.0], [3.0, 4.0]], np.float64)
    one = lee_filter(img, 1)
    assert one.dtype == np.float32 and one is not img and one.tolist() == img.tolist()
    np.testing.assert_array_equal(lee_filter(np.full((5, 6), 0.25, np.float32), 3), 0.25)  # flat: itself
    np.testing.assert_array_equal(box_sum(np.arange(9.0).reshape(3, 3), 1), np.arange(9.0).reshape(3, 3))
    np.testing.assert_array_equal(box_sum(np.arange(9.0).reshape(3, 3), 5), np.full((3, 3), 36.0))
    with pytest.raises(ValueError, match=r"lee_filter expects a 2-D array, got shape \(2, 2, 2\)"):
        lee_filter(np.ones((2, 2, 2)), 3)
    with pytest.raises(ValueError, match="the speckle window must be an odd number >= 1, got 0"):
        lee_filter(img, 0)
    with pytest.raises(ValueError, match="ENL must be > 0, got 0"):
        lee_filter(img, 3, enl=0)
    # a 1 px window returns a copy also of float32 input: writing to it leaves the input alone
    f32 = img.astype(np.float32)
    out = lee_filter(f32, 1)
    out[0, 0] = 9.0
    assert f32[0, 0] == 1.0
    # any ENL > 0 is accepted, also one below 1, and filters as the reference does
    rng = np.random.default_rng(11)
    power = rng.gamma(0.8, 0.05 / 0.8, size=(12, 13)).astype(np.float32)
    np.testing.assert_allclose(lee_filter(power, 3, enl=0.8), lee_reference(power, 3, 0.8), rtol=2e-5, atol=1e-7)


# -- the stack: reflectance, indices and VV together, through RawSource ------------------------

SIZE = 40


@pytest.fixture(scope="module")
def raw_scene(tmp_path_factory):
    """Constant Sentinel-2 DN (MTD baseline 04.00) and flat ENL-4.4 speckle at 0.05 on one grid."""
    d = tmp_path_factory.mktemp("raw")
    s2 = d / "s2"
    prof = {"driver": "GTiff", "dtype": "uint16", "count": 1, "height": SIZE, "width": SIZE,
            "crs": CRS_UTM, "transform": TRANSFORM}
    s2.mkdir()
    for b, v in DN.items():
        with rasterio.open(s2 / f"T50MLA_20220601T022551_{b}_10m.tif", "w", **prof) as ds:
            ds.write(np.full((SIZE, SIZE), v, np.uint16), 1)
    (s2 / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline="04.00", date="2022-06-01",
                                               offsets=dict.fromkeys(range(13), -1000)))
    rng = np.random.default_rng(11)
    power = rng.gamma(4.4, 0.05 / 4.4, size=(SIZE, SIZE)).astype(np.float32)
    s1 = d / "vv_linear.tif"
    with rasterio.open(s1, "w", **{**prof, "dtype": "float32"}) as ds:
        ds.write(power, 1)
    with open_scene(s2, s1) as src:
        stack = src.read(Window(0, 0, SIZE, SIZE))
        units = src.preprocessing.s1.units
    return stack, power, units


def test_stack_reflectance_and_indices_by_hand(raw_scene):
    stack, _, _ = raw_scene
    assert stack.shape == (len(BAND_NAMES), SIZE, SIZE)
    inner = stack[:, 8:-8, 8:-8]
    assert np.isfinite(inner).all()
    want = [0.05, 0.07, 0.04, 0.11, 0.19, 0.23, 0.30, 0.20, 0.13, 13 / 17, 1 / 5, -5 / 7]
    for k, v in enumerate(want):
        np.testing.assert_allclose(inner[k], v, rtol=1e-6, err_msg=BAND_NAMES[k])


def test_stack_vv_is_db_of_lee_in_linear_power(raw_scene):
    stack, power, units = raw_scene
    assert units == "linear"
    vv = stack[12]
    ref_db = 10 * np.log10(lee_reference(power, 5, 4.4))
    ok = np.isfinite(vv)
    assert ok[8:-8, 8:-8].all()
    np.testing.assert_allclose(vv[ok], ref_db[ok], atol=1e-3)
    # Flat 0.05 target: mean power kept (-13.01 dB); filtering dB values would give about -13.5.
    assert 10 * np.log10(np.mean(10 ** (vv[ok] / 10))) == pytest.approx(
        10 * np.log10(power[ok].mean()), abs=0.03)
    assert 10 * np.log10(power.mean()) == pytest.approx(-13.01, abs=0.1)


# -- a prepared stack must match the bundle's preprocessing ------------------------------------

def test_stack_preprocessing_checked_against_the_bundle(caplog):
    from types import SimpleNamespace

    from coalmine.runtime.bundle import GlcmParams, Preprocessing, S1Params
    from coalmine.runtime.errors import InputError
    from coalmine.runtime.preprocess.stack import check_preprocessing

    bundle = SimpleNamespace(preprocessing=Preprocessing(glcm=GlcmParams().with_default_edges()), path="tapin")
    edges = bundle.preprocessing.glcm.edges

    def stack(**kw):
        return SimpleNamespace(preprocessing=Preprocessing(**kw), path="s.tif")

    assert check_preprocessing(stack(glcm=GlcmParams(edges=edges)), bundle) == []
    # edges equal to 1e-6 dB are the same edges (a JSON round trip), 1e-5 dB are not
    assert check_preprocessing(stack(glcm=GlcmParams(edges=tuple(e + 5e-7 for e in edges))), bundle) == []
    with pytest.raises(InputError, match=r"s.tif was prepared with GLCM bin edges .*differ from bundle tapin"):
        check_preprocessing(stack(glcm=GlcmParams(edges=tuple(e + 1e-5 for e in edges))), bundle)
    with pytest.raises(InputError) as e:
        check_preprocessing(stack(glcm=GlcmParams(window=7, distance=2, levels=16).with_default_edges(),
                                  s1=S1Params(speckle_filter="none")), bundle)
    msg = str(e.value)
    for part in ("GLCM window 7 (bundle: 9)", "GLCM distance 2 (bundle: 4)", "GLCM levels 16 (bundle: 32)",
                 "GLCM bin edges", "(31 edges)", "speckle filter none (bundle: lee/5)"):
        assert part in msg, part
    with pytest.raises(InputError, match=r"speckle filter lee/7 \(bundle: lee/5\)"):
        check_preprocessing(stack(glcm=GlcmParams(edges=edges), s1=S1Params(speckle_window=7)), bundle)
    # no filter and a 1 px window are the same thing
    none = SimpleNamespace(preprocessing=Preprocessing(glcm=GlcmParams(edges=edges),
                                                       s1=S1Params(speckle_filter="none")), path="b")
    assert check_preprocessing(stack(glcm=GlcmParams(edges=edges), s1=S1Params(speckle_window=1)), none) == []
    # a stack without the record: a warning, nothing checked
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        w = check_preprocessing(SimpleNamespace(preprocessing=None, path="old.tif"), bundle)
    assert len(w) == 1 and "old.tif records no preprocessing parameters" in w[0] and w[0] in caplog.text


def test_bin_edges_shortened_for_messages_by_hand():
    from coalmine.runtime.preprocess.stack import _short

    assert _short([-25.0, -20.0, 0.0, 5.5]) == "[-25, -20, 0, 5.5]"  # up to 4 edges: all of them
    assert _short((1, 2, 3, 4, 5)) == "[1, 2, ..., 5] (5 edges)"  # the first two, the last and the count
    assert _short([-25.0 + k for k in range(31)]) == "[-25, -24, ..., 5] (31 edges)"


def test_lee_filter_refuses_a_looks_map_with_a_zero_naming_its_smallest_value():
    power = np.full((4, 4), 0.05, np.float32)
    looks = np.full((4, 4), 4.4)
    looks[1, 2] = 0.0  # a composite's per-pixel looks: no acquisition there would be 0
    with pytest.raises(ValueError, match=r"^ENL must be > 0, got 0\.0$"):
        lee_filter(power, 5, looks)
    with pytest.raises(ValueError, match=r"^ENL must be > 0, got -1$"):
        lee_filter(power, 5, -1)


def test_nodata_zero_and_flat_regions_give_their_values_without_runtime_warnings():
    # A Sentinel-1 scene has nodata borders (a window with no valid pixel divides by a count of 0),
    # zero-power shadows and flat areas (a variance of exactly 0): none of them may print numpy's
    # "divide by zero" / "invalid value" warnings on the user's console, and each has its value.
    import warnings

    power = np.full((20, 20), 0.25, np.float32)  # flat: sums of 0.25 and 0.0625 are exact
    power[:, :7] = np.nan  # 7 columns of nodata: a 5 x 5 window at column 0..4 has none valid
    power[12:, 12:] = 0.0  # a zero-power block, 8 x 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = lee_filter(power, 5, 4.4)
        db = power_to_db(np.array([0.0, -1.0, np.nan, 0.1], np.float32))
    assert np.isnan(out[:, :7]).all()
    np.testing.assert_allclose(out[:6, 9:], 0.25, rtol=1e-6)  # windows all 0.25: the mean, itself
    np.testing.assert_array_equal(out[14:, 14:], 0.0)  # windows all zero: 0 (not 0/0 = NaN)
    assert np.isnan(db[:3]).all() and db[3] == pytest.approx(-10.0, abs=1e-6)
