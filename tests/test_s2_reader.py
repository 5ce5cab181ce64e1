"""The Sentinel-2 reader's decisions, each checked against a hand-written input and its expected outcome.

Band discovery (which file is a band, which is left out, which of several copies wins), the product
metadata (``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml`` snippets, GeoTIFF tags), the processing level and
the exact text that tells the user why a product is refused, the checks on the digital numbers
(8-bit, float reflectance, the darkest-pixel test of the level) and the SCL band. Every expected
offset, level, date and message is written out here, never taken from a second run of the reader.

The rasters are tiny (4 x 6 px on one 10 m grid, see ``test_input_numbers``), so the whole file
runs in a few seconds.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.bands import S2_BANDS
from coalmine.runtime.errors import (
    BandError,
    CRSError,
    InputError,
    InputNotFoundError,
    RasterError,
    UsageError,
)
from coalmine.runtime.preprocess import s2 as s2mod
from coalmine.runtime.preprocess.s2 import S2Reader
from rasterio.windows import Window
from test_input_numbers import (
    CRS_UTM,
    DN,
    TRANSFORM,
    H,
    W,
    dn_arrays,
    expected_reflectance,
    mtd_xml,
    read_all,
    same_offset,
    write_band,
    write_folder,
    write_multiband,
)

STEM = "T50MLA_20230101T022551"
ALL = Window(0, 0, W, H)
EXPECTED_DN = ("Sentinel-2 Level-2A bands are digital numbers as delivered: integers (uint16), "
               "reflectance x 10000 (+1000 from processing baseline 04.00)")


def write_bands(folder: Path, name: str = "{stem}_{b}.tif", *, stem: str = STEM, add: int = 0,
                skip: tuple[str, ...] = (), tags: dict[str, str] | None = None) -> Path:
    """The nine bands of :func:`dn_arrays` (+ ``add``) as single-band GeoTIFFs named ``name``.

    The default names (``T50MLA_20230101T022551_B02.tif``) say neither the level nor a resolution,
    and their 2023 date makes the guessed offset -1000.
    """
    for b, a in dn_arrays().items():
        if b not in skip:
            write_band(folder / name.format(stem=stem, b=b), a + np.uint16(add), tags)
    return folder


def write_raster(path: Path, data: np.ndarray, *, res: tuple[float, float] = (10.0, 10.0),
                 nodata: float | None = None, crs: object = CRS_UTM, scales: tuple[float, ...] | None = None,
                 descriptions: tuple[str, ...] | None = None) -> Path:
    """A GeoTIFF of any type, with the grid's origin and pixel size ``res`` (x, y)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data if data.ndim == 3 else data[None]
    prof = {"driver": "GTiff", "dtype": data.dtype.name, "count": data.shape[0], "height": data.shape[1],
            "width": data.shape[2], "transform": Affine(res[0], 0.0, TRANSFORM.c, 0.0, -res[1], TRANSFORM.f)}
    if crs is not None:
        prof["crs"] = crs
    if nodata is not None:
        prof["nodata"] = nodata
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
        if scales is not None:
            ds.scales = scales
        for i, d in enumerate(descriptions or (), start=1):
            ds.set_band_description(i, d)
    return path


def l1c_refusal(path: Path, told_by: str) -> str:
    return (f"--s2 {path} is a Sentinel-2 Level-1C product (top-of-atmosphere reflectance), not Level-2A "
            f"(surface reflectance, which the model expects), as {told_by} tells; use the L2A product of "
            "the same date or process this one with Sen2Cor")


def refused(path: Path, exc: type[Exception] = InputError, **kw) -> str:
    with pytest.raises(exc) as e:
        S2Reader(path, **kw)
    return str(e.value)


# -- band discovery -------------------------------------------------------------------------------

def test_quality_masks_other_files_and_folders_are_not_bands(tmp_path):
    # Each of these is named after a band and finer than the real band (5 m), so if it were taken
    # for the band it would win; none is a band file.
    folder = write_folder(tmp_path / "s2", STEM)
    fine = np.full((2 * H, 2 * W), 5000, np.uint16)
    write_raster(folder / "QI_DATA" / f"{STEM}_B02_5m.tif", fine, res=(5.0, 5.0))  # quality folder
    write_raster(folder / "qi_data" / f"{STEM}_B06_5m.tif", fine, res=(5.0, 5.0))  # in any case
    write_raster(folder / f"MSK_CLDPRB_{STEM}_B03.tif", fine, res=(5.0, 5.0))  # a mask beside the bands
    (folder / f"{STEM}_B04_notes.txt").write_text("not a raster")
    (folder / f"{STEM}_B08_5m.tif").mkdir()  # a folder with a raster's name
    refl, r = read_all(folder)
    assert {b: ref.path for b, ref in r.band_refs.items()} == {
        b: folder / f"L2A_{STEM}_{b}_10m.tif" for b in S2_BANDS}
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(-1000.0)), rtol=1e-6)


def test_a_folder_without_band_files_is_refused_with_the_band_names(tmp_path):
    folder = tmp_path / "scene"
    write_raster(folder / "image.tif", np.ones((H, W), np.uint16))
    assert refused(folder, BandError) == (
        f"--s2 folder {folder} holds no raster files named after Sentinel-2 bands (expected names "
        "containing B02, B03, B04, B05, B06, B07, B08, B11, B12, e.g. T50MLA_..._B02_10m.jp2)")


def test_scl_file_sorted_before_the_bands(tmp_path):
    folder = write_bands(tmp_path / "s2", "{stem}_{b}_10m.tif")
    scl = write_raster(folder / "SCL.tif", np.full((H, W), 4, np.uint8))  # "S" < "T": listed first
    with S2Reader(folder) as r:
        assert r.scl_ref is not None and r.scl_ref.path == scl
        assert sorted(r.band_refs) == sorted(S2_BANDS)


def test_the_finest_copy_of_a_band_wins_then_the_name(tmp_path):
    folder = write_bands(tmp_path / "s2", "{stem}_{b}_10m.tif", skip=("B05", "B06"))
    # B05 twice: 20 m square pixels (listed first), and 10 m wide x 40 m high pixels: the finer
    # x resolution (10 m) wins
    write_raster(folder / "A_B05_20m.tif", np.full((2, 3), 2000, np.uint16), res=(20.0, 20.0))
    write_raster(folder / "B_B05_10x40m.tif", np.full((1, W), 3000, np.uint16), res=(10.0, 40.0))
    # B06 twice at 10 m: the smaller path string wins ("R10m-x/..." < "R10m/...": "-" < "/")
    write_band(folder / "R10m" / f"{STEM}_B06.tif", np.full((H, W), 2500, np.uint16))
    write_band(folder / "R10m-x" / f"{STEM}_B06.tif", np.full((H, W), 3500, np.uint16))
    refl, r = read_all(folder)
    assert r.band_refs["B05"].path.name == "B_B05_10x40m.tif"
    assert r.band_refs["B06"].path == folder / "R10m-x" / f"{STEM}_B06.tif"
    np.testing.assert_allclose(refl[3, 1:, :], (3000 - 1000) / 10000, rtol=1e-6)  # B05
    np.testing.assert_allclose(refl[4, 1:, :], (3500 - 1000) / 10000, rtol=1e-6)  # B06


# -- the zipped SAFE ------------------------------------------------------------------------------

SAFE = "S2A_MSIL2A_20210601T022551_N0400_R046_T50MLA_20210601T050000.SAFE"


def test_zip_leaves_out_masks_quality_data_and_folder_entries(tmp_path):
    src = tmp_path / "src"
    write_folder(src / "R10m", "T50MLA_20210601T022551")
    fine = np.full((2 * H, 2 * W), 5000, np.uint16)
    write_raster(src / "QI" / "T50MLA_B02_5m.tif", fine, res=(5.0, 5.0))
    write_raster(src / "MSK" / "MSK_CLDPRB_B03.tif", fine, res=(5.0, 5.0))
    z = tmp_path / f"{SAFE}.zip"
    img = f"{SAFE}/GRANULE/L2A_T50MLA_A031234_20210601T022551/IMG_DATA"
    with zipfile.ZipFile(z, "w") as zf:
        # the metadata first (a member that is no raster comes before the bands)
        zf.writestr(f"{SAFE}/MTD_MSIL2A.xml", mtd_xml(baseline="04.00", date="2021-06-01"))
        zf.writestr(f"{SAFE}/GRANULE/L2A_T50MLA_A031234_20210601T022551/QI_DATA/", "")
        zf.write(src / "QI" / "T50MLA_B02_5m.tif",
                 f"{SAFE}/GRANULE/L2A_T50MLA_A031234_20210601T022551/QI_DATA/T50MLA_B02_5m.tif")
        zf.write(src / "MSK" / "MSK_CLDPRB_B03.tif", f"{img}/MSK_CLDPRB_B03.tif")
        zf.writestr(f"{img}/T50MLA_B08_5m.tif/", "")  # a folder entry with a raster's name
        for f in sorted((src / "R10m").iterdir()):
            zf.write(f, f"{img}/R10m/{f.name}")
    refl, r = read_all(z)
    assert r.kind == "safe zip"
    assert {b: ref.path.name for b, ref in r.band_refs.items()} == {
        b: f"L2A_T50MLA_20210601T022551_{b}_10m.tif" for b in S2_BANDS}
    assert r.offset.source == "metadata: processing baseline 04.00 (MTD_MSIL2A.xml)"
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(-1000.0)), rtol=1e-6)


def test_a_file_that_is_no_zip_is_refused_with_the_fix(tmp_path):
    z = tmp_path / f"{SAFE}.zip"
    z.write_text("an HTML error page instead of the product")
    msg = refused(z)
    assert msg.startswith(f"--s2 {z} is not a readable zip (")
    assert msg.endswith("); the download is truncated or damaged: download the product again")


# -- MTD_MSIL2A.xml / MTD_MSIL1C.xml --------------------------------------------------------------

def l1c_mtd(product_type: str = "") -> str:
    ptype = f"<PRODUCT_TYPE>{product_type}</PRODUCT_TYPE>" if product_type else ""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<n1:Level-1C_User_Product xmlns:n1="https://psd-14.'
            'sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd"><n1:General_Info><Product_Info>'
            f"<PRODUCT_START_TIME>2023-01-01T02:25:51.024Z</PRODUCT_START_TIME>{ptype}"
            "</Product_Info></n1:General_Info></n1:Level-1C_User_Product>\n")


def test_level_1c_told_by_the_name_of_its_metadata_file(tmp_path):
    # No PRODUCT_TYPE, band names that say nothing, dark values that would pass for Level-2A:
    # the file name MTD_MSIL1C.xml alone says Level-1C.
    folder = write_bands(tmp_path / "s2")
    (folder / "MTD_MSIL1C.xml").write_text(l1c_mtd())
    assert refused(folder) == l1c_refusal(folder, "MTD_MSIL1C.xml")
    with S2Reader(folder, allow_l1c=True) as r:
        assert (r.metadata.level, r.metadata.level_from) == ("L1C", "MTD_MSIL1C.xml")


def test_level_1c_told_by_product_type(tmp_path):
    # an MTD_MSIL2A.xml whose PRODUCT_TYPE says Level-1C, beside bands named L2A: PRODUCT_TYPE wins
    folder = write_folder(tmp_path / "s2", STEM)
    (folder / "MTD_MSIL2A.xml").write_text(
        mtd_xml(baseline="04.00", date="2023-01-01").replace("S2MSI2A", "S2MSI1C"))
    assert refused(folder) == l1c_refusal(folder, "MTD_MSIL2A.xml")


def test_level_2a_told_by_its_metadata_file(tmp_path):
    folder = write_bands(tmp_path / "s2")  # names without level or resolution
    (folder / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline="04.00", date="2023-01-01"))
    with S2Reader(folder) as r:
        assert (r.metadata.level, r.metadata.level_from) == ("L2A", "MTD_MSIL2A.xml")
        assert r.metadata.date == "20230101" and r.metadata.baseline == "04.00"


def test_metadata_elements_in_a_default_namespace(tmp_path):
    # every element namespaced ({uri}PROCESSING_BASELINE): the local name is what counts
    folder = write_folder(tmp_path / "s2", "T50MLA_20210601T022551")
    (folder / "MTD_MSIL2A.xml").write_text(
        '<Level-2A_User_Product xmlns="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">'
        "<General_Info><Product_Info><PRODUCT_START_TIME>2021-06-01T02:25:51.024Z</PRODUCT_START_TIME>"
        "<PROCESSING_BASELINE>04.00</PROCESSING_BASELINE></Product_Info></General_Info>"
        "</Level-2A_User_Product>")
    refl, r = read_all(folder)
    assert r.offset.source == "metadata: processing baseline 04.00 (MTD_MSIL2A.xml)"
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(-1000.0)), rtol=1e-6)


def test_empty_metadata_elements_say_nothing(tmp_path):
    # An empty PROCESSING_BASELINE leaves the baseline to the SAFE name (_N0400_: -1000), though the
    # 2021 start time would guess 0; an empty BOA_ADD_OFFSET is no offset.
    safe = tmp_path / SAFE
    write_folder(safe / "GRANULE" / "L2A_T50MLA" / "IMG_DATA" / "R10m", "T50MLA_20210601T022551")
    (safe / "MTD_MSIL2A.xml").write_text(
        mtd_xml(baseline=None, date="2021-06-01", offsets={1: 0})
        .replace('<BOA_ADD_OFFSET band_id="1">0</BOA_ADD_OFFSET>', '<BOA_ADD_OFFSET band_id="1"/>')
        .replace("<PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>", "<PRODUCT_TYPE/><PROCESSING_BASELINE> </PROCESSING_BASELINE>"))
    refl, r = read_all(safe)
    assert r.metadata.offsets == {} and r.metadata.baseline == "04.00"
    assert r.offset.source == f"metadata: processing baseline 04.00 (product name {SAFE})"
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(-1000.0)), rtol=1e-6)


def offsets_mtd(items: str) -> str:
    return mtd_xml(baseline="04.00", date="2023-01-01").replace(
        "</QUANTIFICATION_VALUES_LIST>",
        f"</QUANTIFICATION_VALUES_LIST><BOA_ADD_OFFSET_VALUES_LIST>{items}</BOA_ADD_OFFSET_VALUES_LIST>")


def test_boa_add_offset_band_ids_0_to_12(tmp_path):
    # band_id 0 is B01, 12 is B12; an id past the list (13) is ignored
    folder = write_folder(tmp_path / "s2", STEM)
    items = "".join(f'<BOA_ADD_OFFSET band_id="{i}">{-1000 - i}</BOA_ADD_OFFSET>' for i in range(14))
    (folder / "MTD_MSIL2A.xml").write_text(offsets_mtd(items))
    with S2Reader(folder) as r:
        assert r.metadata.offsets == {
            "B01": -1000.0, "B02": -1001.0, "B03": -1002.0, "B04": -1003.0, "B05": -1004.0, "B06": -1005.0,
            "B07": -1006.0, "B08": -1007.0, "B8A": -1008.0, "B09": -1009.0, "B10": -1010.0, "B11": -1011.0,
            "B12": -1012.0}


def test_boa_add_offset_without_band_id_is_band_id_0(tmp_path):
    folder = write_folder(tmp_path / "s2", STEM)
    (folder / "MTD_MSIL2A.xml").write_text(offsets_mtd("<BOA_ADD_OFFSET>-700</BOA_ADD_OFFSET>"))
    with S2Reader(folder) as r:
        assert r.metadata.offsets == {"B01": -700.0}


def test_offset_of_b02_is_the_default_of_unlisted_bands(tmp_path):
    # only B02 (band_id 1) listed: every band gets its -1000
    folder = write_folder(tmp_path / "s2", STEM)
    (folder / "MTD_MSIL2A.xml").write_text(offsets_mtd('<BOA_ADD_OFFSET band_id="1">-1000</BOA_ADD_OFFSET>'))
    refl, r = read_all(folder)
    assert r.offset.offsets == same_offset(-1000.0)
    assert r.offset.source == "metadata: BOA_ADD_OFFSET from MTD_MSIL2A.xml"
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(-1000.0)), rtol=1e-6)


@pytest.mark.parametrize("start,offset", [("2022-01-24", 0.0), ("2022-01-25", -1000.0)])
def test_product_start_time_gives_the_date_of_the_guess(tmp_path, caplog, start, offset):
    # no baseline, no offsets in the metadata, no date in the band names: PRODUCT_START_TIME is the
    # acquisition date (not GENERATION_TIME, which comes later in the file)
    folder = write_bands(tmp_path / "s2", "T50MLA_{b}_10m.tif")
    (folder / "MTD_MSIL2A.xml").write_text(
        mtd_xml(baseline=None, date=start).replace(
            "</Product_Info>", "<GENERATION_TIME>2023-03-01T05:00:00.000Z</GENERATION_TIME></Product_Info>"))
    day = start.replace("-", "")
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        refl, r = read_all(folder)
    assert r.metadata.date == day
    assert (r.offset.value, r.offset.source) == (offset, f"guess: date {day}")
    assert f"guessed offset {offset:g} from the acquisition date {day}" in caplog.text
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(offset)), rtol=1e-6)


def test_unparsable_metadata_message(tmp_path):
    folder = write_folder(tmp_path / "s2", STEM)
    (folder / "MTD_MSIL2A.xml").write_text("<Level-2A_User_Product>")
    msg = refused(folder)
    assert msg.startswith(f"Sentinel-2 metadata {folder / 'MTD_MSIL2A.xml'} cannot be parsed (")
    assert msg.endswith("); remove it or pass --s2-offset explicitly")


# -- GeoTIFF tags ---------------------------------------------------------------------------------

def test_offset_source_tag_is_appended_to_the_source(tmp_path):
    path = write_multiband(tmp_path / "stack.tif", {"BOA_ADD_OFFSET": "-1000",
                                                    "BOA_ADD_OFFSET_SOURCE": "processing baseline 05.10"})
    refl, r = read_all(path)
    assert r.offset.source == "metadata: BOA_ADD_OFFSET from tags of stack.tif (processing baseline 05.10)"
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(-1000.0)), rtol=1e-6)


def test_quantification_value_tag_is_the_scale(tmp_path):
    path = write_multiband(tmp_path / "stack.tif", {"BOA_ADD_OFFSET": "-1000", "BOA_QUANTIFICATION_VALUE": "20000"})
    refl, r = read_all(path)
    assert r.offset.scale == 20000.0
    assert refl[6, 2, 3] == pytest.approx((4000 + 30 - 1000) / 20000, rel=1e-6)  # B08 by hand


@pytest.mark.parametrize("tags", [{"PRODUCT_TYPE": "S2MSI1C"}, {"PROCESSING_LEVEL": "Level-1C"}])
def test_level_1c_told_by_a_tag(tmp_path, tags):
    # the tag of B02 wins over band names that say L2A
    folder = write_folder(tmp_path / "s2", STEM, tags=tags)
    assert refused(folder) == l1c_refusal(
        folder, f"PROCESSING_LEVEL/PRODUCT_TYPE tag of L2A_{STEM}_B02_10m.tif")


# Bright values (B02 reflectance 0.15-0.2 after the -1000 offset) look like top-of-atmosphere
# reflectance: only what the metadata or names say makes them Level-2A.
BRIGHT = 1000


@pytest.mark.parametrize("tags,told_by", [
    ({"PROCESSING_LEVEL": "Level-2A"}, f"PROCESSING_LEVEL/PRODUCT_TYPE tag of {STEM}_B02.tif"),
    ({"PRODUCT_TYPE": "S2MSI2A"}, f"PROCESSING_LEVEL/PRODUCT_TYPE tag of {STEM}_B02.tif"),
    ({"BOA_ADD_OFFSET": "-1000"}, f"BOA_ADD_OFFSET tag of {STEM}_B02.tif"),
])
def test_level_2a_told_by_a_tag(tmp_path, tags, told_by):
    folder = write_bands(tmp_path / "s2", add=BRIGHT, tags=tags)
    with S2Reader(folder) as r:
        assert (r.metadata.level, r.metadata.level_from) == ("L2A", told_by)


def test_gdal_scale_0_is_no_scale(tmp_path):
    # a scale of 0 says nothing: the offset is guessed from the 2023 date in the name
    path = tmp_path / f"S2_{STEM}_stack.tif"
    write_multiband(path)
    with rasterio.open(path, "r+") as ds:
        ds.scales = (0.0,) * 9
    refl, r = read_all(path)
    assert (r.offset.value, r.offset.scale, r.offset.source) == (-1000.0, 10000.0, "guess: date 20230101")
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(-1000.0)), rtol=1e-6)


# -- the level from the names ---------------------------------------------------------------------

def test_level_1c_told_by_the_names(tmp_path):
    folder = write_bands(tmp_path / "S2A_MSIL1C_20230101T022551_N0509_R046_T50MLA_20230101T040000")
    assert refused(folder) == l1c_refusal(folder, "file names")


def test_level_1c_read_anyway_keeps_the_tag_as_source(tmp_path):
    folder = write_bands(tmp_path / "S2A_MSIL1C_20230101T022551", tags={"PROCESSING_BASELINE": "04.00"})
    with S2Reader(folder, allow_l1c=True) as r:
        assert (r.metadata.level, r.metadata.level_from) == ("L1C", "file names")
        assert r.offset.source == f"metadata: processing baseline 04.00 (tags of {STEM}_B02.tif)"


@pytest.mark.parametrize("name,told_by", [
    ("S2B_L2A_{stem}_{b}.tif", "file names"),
    ("{stem}_{b}_10m.tif", "band file names with a resolution (_B02_10m: Level-2A naming)"),
])
def test_level_2a_told_by_the_names(tmp_path, name, told_by):
    folder = write_bands(tmp_path / "s2", name, add=BRIGHT)
    with S2Reader(folder) as r:
        assert (r.metadata.level, r.metadata.level_from) == ("L2A", told_by)


# -- reading --------------------------------------------------------------------------------------

def test_read_gives_float32(tmp_path):
    refl, _ = read_all(write_folder(tmp_path / "s2", STEM))
    assert refl.dtype == np.float32 and refl.shape == (9, H, W)


def truncated(path: Path, dtype: str = "uint16") -> Path:
    """A tiled GeoTIFF cut after its first 32nd: it opens (its header comes first), its first tiles
    cannot be read."""
    a = np.random.default_rng(0).integers(1, 250, (256, 256)).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", dtype=dtype, count=1, width=256, height=256, crs=CRS_UTM,
                       transform=TRANSFORM, tiled=True, blockxsize=64, blockysize=64) as ds:
        ds.write(a, 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 32])
    return path


def test_unreadable_band_names_the_option(tmp_path):
    folder = write_bands(tmp_path / "s2", "S2B_L2A_{stem}_{b}.tif", skip=("B05",))
    bad = truncated(folder / f"S2B_L2A_{STEM}_B05.tif")
    with S2Reader(folder) as r, pytest.raises(RasterError) as e:
        r.read(Window(0, 0, 256, 256))
    assert str(e.value).startswith(f"--s2 {bad} cannot be read (")


def test_unreadable_b02_sample_names_the_option(tmp_path):
    # no level said anywhere: the darkest B02 values are read to decide it, and cannot be
    folder = write_bands(tmp_path / "s2", skip=("B02",))
    bad = truncated(folder / f"{STEM}_B02.tif")
    with pytest.raises(RasterError) as e:
        S2Reader(folder)
    assert str(e.value).startswith(f"--s2 {bad} cannot be read (")


# -- SCL ------------------------------------------------------------------------------------------

CLASSES = (np.arange(H * W, dtype=np.uint8).reshape(H, W) % 12)


def test_scl_classes_exact_with_a_declared_nodata(tmp_path):
    # The SCL file declares nodata 0 (as some writers do); class 0 and class 1 are classes, read as
    # they are (masked later by SCL_MASKED), not turned into "outside the raster" (NaN).
    folder = write_folder(tmp_path / "s2", STEM)
    write_raster(folder / f"{STEM}_SCL_10m.tif", CLASSES, nodata=0)
    with S2Reader(folder) as r:
        got = r.scl_classes(None, ALL)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, CLASSES.astype(np.float32))


def test_scl_given_wins_over_the_one_found(tmp_path):
    folder = write_folder(tmp_path / "s2", STEM)
    write_raster(folder / f"{STEM}_SCL_10m.tif", np.full((H, W), 4, np.uint8))  # vegetation: valid
    given = write_raster(tmp_path / "other_SCL.tif", CLASSES)
    with S2Reader(folder) as r:
        ref = r.open_scl(given)
        assert (ref.path, ref.index) == (given, 1)
        np.testing.assert_array_equal(r.scl_classes(ref, ALL), CLASSES.astype(np.float32))
        np.testing.assert_array_equal(r.scl_invalid(ref, ALL), np.isin(CLASSES, [0, 1, 3, 8, 9, 10]))


def test_no_scl_found_message(tmp_path):
    folder = write_folder(tmp_path / "s2", STEM)
    with S2Reader(folder) as r, pytest.raises(UsageError) as e:
        r.scl_classes(None, ALL)
    assert str(e.value) == f"--scl auto: no SCL file found in {folder}; pass --scl PATH"


def test_scl_refusals_name_the_option(tmp_path):
    folder = write_folder(tmp_path / "s2", STEM)
    stack = write_raster(tmp_path / "stack.tif", np.stack([CLASSES] * 3))
    nocrs = write_raster(tmp_path / "nocrs_SCL.tif", CLASSES, crs=None)
    garbage = tmp_path / "garbage_SCL.tif"
    garbage.write_text("not a raster")
    short = truncated(tmp_path / "short_SCL.tif", "uint8")
    with S2Reader(folder) as r:
        with pytest.raises(BandError) as e:
            r.open_scl(stack)
        assert str(e.value) == (
            f"--scl {stack} has 3 bands; the scene classification is one band of classes 0-11 (the Level-2A "
            "product's *_SCL_20m.jp2): give that file, or --scl auto to find it beside the bands")
        with pytest.raises(InputNotFoundError) as e:
            r.open_scl(tmp_path / "nope.tif")
        assert str(e.value) == f"--scl {tmp_path / 'nope.tif'} does not exist; check the path"
        with pytest.raises(CRSError) as e:
            r.open_scl(nocrs)
        assert str(e.value).startswith(f"--scl {nocrs} has no coordinate reference system")
        with pytest.raises(RasterError) as e:
            r.open_scl(garbage)
        assert str(e.value).startswith(f"--scl {garbage} is not a raster GDAL can read")
        ref = r.open_scl(short)
        with pytest.raises(RasterError) as e:
            r.scl_classes(ref, ALL)
        assert str(e.value).startswith(f"--scl {short} cannot be read (")


# -- digital numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_8_bit_band_is_refused(tmp_path, dtype):
    folder = write_folder(tmp_path / "s2", STEM)
    name = f"L2A_{STEM}_B04_10m.tif"
    write_raster(folder / name, np.full((H, W), 100, dtype))
    assert refused(folder, BandError) == (
        f"--s2 band B04 ({name}) is {dtype}, an 8-bit image (a visual product such as TCI?); {EXPECTED_DN}: "
        "give the band files of the L2A product")


def test_8_bit_band_of_a_stack_names_its_index(tmp_path):
    stack = write_raster(tmp_path / "tci.tif", np.full((9, H, W), 100, np.uint8), descriptions=S2_BANDS)
    assert refused(stack, BandError).startswith("--s2 band B02 (tci.tif, band 1) is uint8, an 8-bit image")


def float_band(folder: Path, band: str, values: np.ndarray, **kw) -> str:
    name = f"L2A_{STEM}_{band}_10m.tif"
    write_raster(folder / name, values.astype(np.float32), **kw)
    return name


def reflectance_refusal(band: str, name: str, p99: str) -> str:
    return (f"--s2 band {band} ({name}) is float32 with values of reflectance (99 % below {p99}), not digital "
            f"numbers; {EXPECTED_DN}: give the band as delivered, or multiply it by 10000 and remove the "
            "offset, like the others")


def test_float_reflectance_band_is_refused(tmp_path):
    # B11 converted to reflectance by another tool; NaN and nodata-DN 0 pixels are no values
    folder = write_folder(tmp_path / "s2", STEM)
    v = np.full((H, W), 0.25)
    v[0, :3] = np.nan
    v[1, :3] = 0.0
    name = float_band(folder, "B11", v)
    assert refused(folder, BandError) == reflectance_refusal("B11", name, "0.25")


def test_float_band_nodata_is_no_value(tmp_path):
    # 6 of 24 pixels are the band's nodata (9999): left out, the rest is reflectance
    folder = write_folder(tmp_path / "s2", STEM)
    v = np.full((H, W), 0.2)
    v[0] = 9999.0
    name = float_band(folder, "B12", v, nodata=9999.0)
    assert refused(folder, BandError) == reflectance_refusal("B12", name, "0.2")


@pytest.mark.parametrize("value,ok", [(2.99, False), (3.0, True)])
def test_float_band_boundary_at_max_reflectance(tmp_path, value, ok):
    folder = write_folder(tmp_path / "s2", STEM)
    name = float_band(folder, "B06", np.full((H, W), value))
    if ok:
        S2Reader(folder).close()  # 99 % at 3.0 or above: digital numbers (however low)
    else:
        assert refused(folder, BandError) == reflectance_refusal("B06", name, "2.99")


def test_float_band_with_scale_0_is_checked_like_one_without(tmp_path):
    folder = write_folder(tmp_path / "s2", STEM)
    name = float_band(folder, "B07", np.full((H, W), 0.3), scales=(0.0,))
    assert refused(folder, BandError) == reflectance_refusal("B07", name, "0.3")


def test_float_band_of_a_stack_is_sampled_in_its_own_band(tmp_path):
    # B02 (band 1) holds digital numbers with a GDAL scale of 1e-4, B03 (band 2) reflectance with
    # none, B05 (band 4) digital numbers with a scale of 2: B03 is refused, by its own values and scale
    dns = dn_arrays()
    data = np.stack([dns[b].astype(np.float32) for b in S2_BANDS])
    data[1] = 0.07
    scales = (1e-4, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    stack = write_raster(tmp_path / "stack.tif", data, descriptions=S2_BANDS, scales=scales)
    assert refused(stack, BandError) == (
        f"--s2 band B03 (stack.tif, band 2) is float32 with values of reflectance (99 % below 0.07), not digital "
        f"numbers; {EXPECTED_DN}: give the band as delivered, or multiply it by 10000 and remove the offset, "
        "like the others")


def test_complex_band_is_refused(tmp_path):
    folder = write_folder(tmp_path / "s2", STEM)
    name = f"L2A_{STEM}_B08_10m.tif"
    write_raster(folder / name, np.full((H, W), 4000 + 0j, np.complex64))
    assert refused(folder, BandError) == f"--s2 band B08 ({name}) is complex64; {EXPECTED_DN}"


def test_sample_is_read_decimated_to_512(tmp_path, monkeypatch):
    # a 600 x 700 B02: its darkest values are read at 512 x 512 at most (memory), a small one whole
    seen = []
    real = s2mod.read_checked

    def spy(ds, option, *args, **kw):
        seen.append((Path(ds.name).name, kw.get("out_shape")))
        return real(ds, option, *args, **kw)

    monkeypatch.setattr(s2mod, "read_checked", spy)
    big = tmp_path / "big"
    for b in S2_BANDS:
        write_raster(big / f"{STEM}_{b}.tif", np.full((600, 700), DN[b], np.uint16))
    S2Reader(big).close()
    small = write_bands(tmp_path / "small")
    S2Reader(small).close()
    assert seen == [(f"{STEM}_B02.tif", (512, 512)), (f"{STEM}_B02.tif", (H, W))]


# -- the level from the darkest pixels ------------------------------------------------------------

def b02_only(tmp_path: Path, b02: np.ndarray, **kw) -> Path:
    """Bands that say no level (2023 date: offset -1000), with the given B02 DN."""
    folder = write_bands(tmp_path / "s2", skip=("B02",))
    write_raster(folder / f"{STEM}_B02.tif", b02.astype(np.uint16), **kw)
    return folder


def toa_refusal(folder: Path, dark: str) -> str:
    return (f"--s2 {folder} does not say its processing level (no MTD_MSIL2A.xml, no PROCESSING_LEVEL or "
            "BOA_ADD_OFFSET tag, no SCL band, no L2A in its names) and its darkest pixels look like "
            f"top-of-atmosphere reflectance (Level-1C): 99 % of B02 lies above {dark}, while the darkest "
            "surface reflectance (Level-2A) of water and forest lies below 0.03; use the Level-2A product, or if "
            "this is Level-2A, put its MTD_MSIL2A.xml or SCL band beside the bands (or pass --scl)")


def test_darkest_b02_at_the_threshold_is_refused(tmp_path):
    # (1600 - 1000) / 10000 = 0.06 = TOA_DARK_B02 on every valid pixel; the nodata DN 0 (a quarter of
    # the pixels) is no value, else the darkest 1 % would be 0
    b02 = np.full((H, W), 1600)
    b02[0] = 0
    folder = b02_only(tmp_path, b02)
    assert refused(folder) == toa_refusal(folder, "0.060")


def test_darkest_b02_just_below_the_threshold_is_level_2a(tmp_path, caplog):
    folder = b02_only(tmp_path, np.full((H, W), 1599))
    with caplog.at_level(logging.INFO, logger="coalmine"), S2Reader(folder) as r:
        assert (r.metadata.level, r.metadata.level_from) == (
            "L2A", "darkest 1 % of B02 below 0.060: surface reflectance")
    assert (f"Sentinel-2 {folder}: processing level not recorded; taken as Level-2A "
            "(darkest 1 % of B02 below 0.060: surface reflectance)") in caplog.text


def test_darkest_one_percent_is_the_first_percentile(tmp_path):
    # 23 pixels at 0.15 and one at 0.01 (DN 1100): the 1st percentile, interpolated between the two
    # smallest of 24 values, is 0.01 + 0.23 * 0.14 = 0.0422 < 0.06 (the 2nd would be 0.0744)
    b02 = np.full((H, W), 2500)
    b02[2, 2] = 1100
    with S2Reader(b02_only(tmp_path, b02)) as r:
        assert r.metadata.level_from == "darkest 1 % of B02 below 0.042: surface reflectance"


def test_the_dataset_nodata_is_no_value_in_the_darkest_pixels(tmp_path):
    # B02's declared nodata (1) and the nodata DN (0), each on a quarter of the pixels, are left
    # out: the rest, 0.06, is refused
    b02 = np.full((H, W), 1600)
    b02[0] = 0
    b02[1] = 1
    folder = b02_only(tmp_path, b02, nodata=1)
    assert refused(folder) == toa_refusal(folder, "0.060")


def test_no_valid_b02_leaves_the_level_open(tmp_path):
    with S2Reader(b02_only(tmp_path, np.zeros((H, W)))) as r:
        assert r.metadata.level is None


@pytest.mark.parametrize("extra,told_by", [
    ("scl", "an SCL band (made by Level-2A processing only)"),
    ("given", "an SCL band (made by Level-2A processing only)"),
])
def test_scl_band_says_level_2a(tmp_path, extra, told_by):
    folder = write_bands(tmp_path / "s2", add=BRIGHT)  # bright: would be refused as Level-1C
    if extra == "scl":
        write_raster(folder / f"{STEM}_SCL.tif", CLASSES)
    with S2Reader(folder, scl_given=extra == "given") as r:
        assert (r.metadata.level, r.metadata.level_from) == ("L2A", told_by)


def test_b10_band_says_level_1c(tmp_path):
    folder = write_bands(tmp_path / "s2")  # dark: would pass for Level-2A
    write_band(folder / f"{STEM}_B10.tif", np.full((H, W), 20, np.uint16))
    assert refused(folder) == l1c_refusal(folder, "a B10 band (Level-2A products have none)")


# -- the offset warnings, word for word -----------------------------------------------------------

def test_offset_warnings_word_for_word(tmp_path, caplog):
    guessed = write_bands(tmp_path / "dated")  # the 2023 date in the names
    undated = write_bands(tmp_path / "undated", "L2A_tile_{b}.tif")
    told = write_folder(tmp_path / "told", STEM)
    (told / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline="03.01", date="2023-01-01"))
    with caplog.at_level(logging.WARNING, logger="coalmine"):
        read_all(guessed)
        read_all(undated)
        read_all(told, s2_offset=-1000)
    assert caplog.messages == [
        f"no Sentinel-2 processing baseline found for {guessed}; guessed offset -1000 from the acquisition "
        "date 20230101 (baseline 04.00 started 2022-01-25); pass --s2-offset to be sure",
        f"no Sentinel-2 processing baseline or date found for {undated}; assuming offset 0 (products before "
        "2022-01-25); pass --s2-offset -1000 for newer products",
        "--s2-offset -1000 overrides the product's own offset (metadata: processing baseline 03.01 "
        "(MTD_MSIL2A.xml) says 0)",
    ]


# -- more on the digital numbers ------------------------------------------------------------------

def test_the_99th_percentile_not_the_maximum(tmp_path):
    # 23 pixels at 0.25 and one at 3.5: the 99th percentile, between the two largest of 24 values,
    # is 0.25 + 0.77 * 3.25 = 2.7525 < 3 (reflectance), though the maximum is not
    folder = write_folder(tmp_path / "s2", STEM)
    v = np.full((H, W), 0.25)
    v[3, 5] = 3.5
    name = float_band(folder, "B11", v)
    assert refused(folder, BandError) == reflectance_refusal("B11", name, "2.75")


def test_float_band_without_a_valid_value_is_not_judged_here(tmp_path):
    folder = write_folder(tmp_path / "s2", STEM)
    v = np.zeros((H, W))
    v[0] = np.nan
    float_band(folder, "B11", v)
    with S2Reader(folder) as r:
        assert np.isnan(r.read(ALL)).all()


def test_stack_bands_of_different_types_are_checked_each(tmp_path):
    # a VRT whose B12 (band 9) comes from an 8-bit file, the others from uint16 files
    src = write_bands(tmp_path / "src", skip=("B12",))
    write_raster(src / "B12_8bit.tif", np.full((H, W), 200, np.uint8))
    bands = "".join(
        f'<VRTRasterBand dataType="{"Byte" if b == "B12" else "UInt16"}" band="{i}"><Description>{b}</Description>'
        f'<SimpleSource><SourceFilename relativeToVRT="1">src/'
        f'{"B12_8bit.tif" if b == "B12" else f"{STEM}_{b}.tif"}</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
        for i, b in enumerate(S2_BANDS, start=1))
    vrt = tmp_path / "stack.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="{W}" rasterYSize="{H}"><SRS>EPSG:32750</SRS>'
                   f"<GeoTransform>{TRANSFORM.c}, 10, 0, {TRANSFORM.f}, 0, -10</GeoTransform>{bands}</VRTDataset>")
    assert refused(vrt, BandError).startswith("--s2 band B12 (stack.vrt, band 9) is uint8, an 8-bit image")


# -- band names, forms and their refusals ---------------------------------------------------------

def test_band_of_reads_the_last_part_of_a_path():
    assert s2mod.band_of("T50MLA_20230101T022551_B8A_20m") == "B8A"
    assert s2mod.band_of("GRANULE/B12_folder/T50MLA_B02_10m.jp2") == "B02"
    assert s2mod.band_of("R10m/B04/preview.tif") is None  # a band in a folder's name only


def test_missing_bands_are_listed_with_those_found(tmp_path):
    folder = write_bands(tmp_path / "s2", skip=("B06", "B12"))
    write_band(folder / f"{STEM}_B8A.tif", dn_arrays()["B05"])
    assert refused(folder, BandError) == (
        f"--s2 {folder} lacks band(s) B06, B12 (found: B02, B03, B04, B05, B07, B08, B11, B8A); the stack "
        "needs B02 B03 B04 B05 B06 B07 B08 B11 B12: add the missing band file(s)")


def test_missing_input_and_single_band_file_are_refused(tmp_path):
    assert refused(tmp_path / "nope", InputNotFoundError) == f"--s2 {tmp_path / 'nope'} does not exist; check the path"
    one = write_band(tmp_path / f"{STEM}_B02.tif", dn_arrays()["B02"])
    assert refused(one, BandError) == (
        f"--s2 {one} is a single-band raster; pass the folder that holds all the Sentinel-2 band files "
        "(B02 B03 B04 B05 B06 B07 B08 B11 B12) or a multi-band GeoTIFF")


def test_unreadable_band_file_names_the_option(tmp_path):
    folder = write_bands(tmp_path / "s2", skip=("B07",))
    bad = folder / f"{STEM}_B07.tif"
    bad.write_text("not a raster")
    assert refused(folder, RasterError).startswith(f"--s2 {bad} is not a raster GDAL can read")


def test_bands_without_crs_gcps_only_or_another_crs_are_refused(tmp_path):
    nocrs = write_bands(tmp_path / "a", skip=("B02",))
    write_raster(nocrs / f"{STEM}_B02.tif", dn_arrays()["B02"], crs=None)
    assert refused(nocrs, CRSError).startswith(f"--s2 {nocrs / f'{STEM}_B02.tif'} has no coordinate reference system")
    nocrs5 = write_bands(tmp_path / "b", skip=("B05",))
    write_raster(nocrs5 / f"{STEM}_B05.tif", dn_arrays()["B05"], crs=None)
    assert refused(nocrs5, CRSError).startswith(f"--s2 {nocrs5 / f'{STEM}_B05.tif'} has no coordinate reference system")
    other = write_bands(tmp_path / "c", skip=("B05",))
    write_raster(other / f"{STEM}_B05.tif", dn_arrays()["B05"], crs=rasterio.crs.CRS.from_epsg(32650))
    assert refused(other, BandError) == (
        f"--s2 band B05 ({STEM}_B05.tif) is in EPSG:32650, B02 in EPSG:32750; all Sentinel-2 bands must share one CRS")
    gcps = write_bands(tmp_path / "d", skip=("B02",))
    from rasterio.control import GroundControlPoint as GCP
    pts = [GCP(0, 0, 300000, 9700000), GCP(0, W, 300060, 9700000), GCP(H, 0, 300000, 9699960)]
    with rasterio.open(gcps / f"{STEM}_B02.tif", "w", driver="GTiff", dtype="uint16", count=1, height=H, width=W,
                       gcps=pts, crs=CRS_UTM) as ds:
        ds.write(dn_arrays()["B02"], 1)
    assert refused(gcps, BandError) == (
        f"--s2 band B02 in {gcps / f'{STEM}_B02.tif'} is geocoded by GCPs only; Sentinel-2 bands must be on a map "
        "grid (CRS + geotransform)")


def stack_of(path: Path, descriptions: tuple[str, ...], add: int = 0) -> Path:
    """A uint16 stack whose bands are described by ``descriptions`` (a band name: its DN + add;
    SCL: the classes; anything else: 7)."""
    dns = dn_arrays()
    planes = [(dns[d] + np.uint16(add)) if d in dns else (CLASSES.astype(np.uint16) if d == "SCL"
                                                          else np.full((H, W), 7, np.uint16))
              for d in descriptions]
    return write_raster(path, np.stack(planes), descriptions=descriptions)


def test_stack_without_descriptions_is_refused(tmp_path):
    stack = write_raster(tmp_path / "stack.tif", np.stack([dn_arrays()[b] for b in S2_BANDS]))
    assert refused(stack, BandError) == (
        f"--s2 {stack} has 9 bands but no band descriptions naming them (B02, B03, ...); set the descriptions "
        "(e.g. gdal_edit.py or rasterio set_band_description) or pass a folder of single-band files")


def test_stack_with_an_undescribed_band_a_repeated_band_and_scl(tmp_path):
    # band 1 undescribed (skipped), B02 at 2 and again at 11 (the first wins), SCL at 12; bright
    # values, so only the SCL band makes it Level-2A
    desc = ("", *S2_BANDS, "B02", "SCL")
    stack = stack_of(tmp_path / "stack.tif", desc, add=BRIGHT)
    with rasterio.open(stack, "r+") as ds:
        ds.write(np.full((H, W), 9000, np.uint16), 11)
    with S2Reader(stack) as r:
        assert r.kind == "multiband"
        assert {b: ref.index for b, ref in r.band_refs.items()} == {b: i for i, b in enumerate(S2_BANDS, start=2)}
        assert (r.scl_ref.path, r.scl_ref.index) == (stack, 12)
        assert r.metadata.level_from == "an SCL band (made by Level-2A processing only)"
        np.testing.assert_array_equal(r.scl_classes(None, ALL), CLASSES.astype(np.float32))
        assert r.offset.source == "guess: no metadata"  # no date in "stack.tif": offset 0
        np.testing.assert_allclose(r.read(ALL)[0, 1:], (dn_arrays()["B02"][1:] + BRIGHT) / 10000, rtol=1e-6)


def test_stack_without_scl_or_level_is_judged_by_its_values(tmp_path):
    stack = stack_of(tmp_path / f"S2_{STEM}.tif", S2_BANDS, add=BRIGHT)
    msg = refused(stack)
    assert msg.startswith(f"--s2 {stack} does not say its processing level")
    dark = stack_of(tmp_path / f"S2_{STEM}_dark.tif", S2_BANDS)
    with S2Reader(dark) as r:
        assert r.scl_ref is None and r.metadata.level == "L2A"


@pytest.mark.parametrize("mtd,kind", [(None, "folder"), ("MTD_MSIL2A.xml", "safe"), ("MTD_MSIL1C.xml", "folder")])
def test_folder_kind(tmp_path, mtd, kind):
    folder = write_folder(tmp_path / "s2", STEM)
    if mtd:
        (folder / mtd).write_text(mtd_xml(baseline="04.00", date="2023-01-01"))
    with S2Reader(folder, allow_l1c=True) as r:
        assert r.kind == kind


def test_metadata_up_to_five_folders_above_the_bands(tmp_path):
    # a SAFE's bands lie in SAFE/GRANULE/*/IMG_DATA/R10m: its MTD is 4 folders up; the search stops
    # at the 5th, so an MTD_MSIL2A.xml further up belongs to something else
    top = tmp_path / "x"
    folder = write_folder(top / "a" / "b" / "c" / "d" / "e" / "f", "T50MLA_20210601T022551")
    (top / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline="04.00", date="2021-06-01"))
    with S2Reader(folder) as r:
        assert r.offset.source == "guess: date 20210601"
    (top / "a" / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline="04.00", date="2021-06-01"))
    with S2Reader(folder) as r:
        assert r.offset.source == "metadata: processing baseline 04.00 (MTD_MSIL2A.xml)"
    # a stack file: the search starts in its folder (f: the MTD in a is 5 folders up)
    stack = write_multiband(top / "a" / "b" / "c" / "d" / "e" / "f" / "S2_20210601T022551_stack.tif")
    with S2Reader(stack) as r:
        assert r.offset.source == "metadata: processing baseline 04.00 (MTD_MSIL2A.xml)"


# -- zips without metadata, damaged members -------------------------------------------------------

def zip_of(z: Path, folder: Path, inner: str, extra: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(z, "w") as zf:
        for name, text in (extra or {}).items():
            zf.writestr(f"{inner}/{name}", text)
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{inner}/GRANULE/L2A_T50MLA/IMG_DATA/{f.name}")
    return z


def test_zip_without_metadata_uses_its_name(tmp_path):
    # no MTD: the baseline comes from the zip's name (_N0400_, a 2021 date would guess 0)
    bands = write_bands(tmp_path / "bands", "T50MLA_20210601T022551_{b}_10m.tif")
    z = zip_of(tmp_path / f"{SAFE}.zip", bands, SAFE)
    refl, r = read_all(z)
    assert r.offset.source == f"metadata: processing baseline 04.00 (product name {SAFE}.zip)"
    np.testing.assert_allclose(refl, expected_reflectance(same_offset(-1000.0)), rtol=1e-6)


def test_zip_without_metadata_uses_its_band_names(tmp_path):
    # neither the zip's name nor a metadata file says anything: the band names give the level and date
    bands = write_bands(tmp_path / "bands", "{stem}_{b}_10m.tif", add=BRIGHT)
    z = zip_of(tmp_path / "product.zip", bands, "product")
    with S2Reader(z) as r:
        assert r.metadata.level_from == "band file names with a resolution (_B02_10m: Level-2A naming)"
        assert r.offset.source == "guess: date 20230101"
    r.close()  # closing twice is harmless


def test_zip_of_level_1c_and_the_shortest_metadata_path(tmp_path):
    bands = write_bands(tmp_path / "bands")
    z = zip_of(tmp_path / "l1c.zip", bands, "product", {"MTD_MSIL1C.xml": l1c_mtd()})
    assert refused(z) == l1c_refusal(z, "MTD_MSIL1C.xml")
    # two MTD_MSIL2A.xml: the product's own (the shortest path) wins over a copy deeper in the zip
    z2 = zip_of(tmp_path / "two.zip", write_bands(tmp_path / "b2", "{stem}_{b}_10m.tif"), "product",
                {"MTD_MSIL2A.xml": mtd_xml(baseline="04.00", date="2023-01-01"),
                 "AUX/MTD_MSIL2A.xml": mtd_xml(baseline="03.01", date="2023-01-01")})
    with S2Reader(z2) as r:
        assert (r.metadata.baseline, r.offset.value) == ("04.00", -1000.0)


def test_damaged_zip_member_is_refused(tmp_path):
    bands = write_bands(tmp_path / "bands", "{stem}_{b}_10m.tif", skip=("B04",))
    (bands / f"{STEM}_B04_10m.tif").write_text("not a raster")
    z = zip_of(tmp_path / f"{SAFE}.zip", bands, SAFE)
    msg = refused(z)
    assert msg.startswith(f"--s2 {z}: {STEM}_B04_10m.tif cannot be read from the zip (")
    assert msg.endswith("); the download is damaged: download it again")
