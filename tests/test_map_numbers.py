"""The numbers that leave ``coal-run``, checked against hand-worked values.

- the mask COG equals the probability COG thresholded as a QGIS user would (``prob / 250 >= t``)
  at thresholds whose ``250 t`` is not a whole number (0.35 -> level 88, 0.501 -> level 126);
- a pixel with a single NaN band, given by a custom scene source (not a stack file, whose reader
  already blanks such pixels), is nodata in both rasters and adds nothing to the hectares.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import rasterio
from coalmine.runtime.bands import BAND_NAMES, N_BANDS
from coalmine.runtime.bundle import Preprocessing
from coalmine.runtime.errors import OutputError
from coalmine.runtime.outputs import (
    OutputSet,
    mask_from_prob,
    mask_level,
    quantize_prob,
    write_feature_collection,
)
from coalmine.runtime.run import run_scene
from factories import DEFAULT_TRANSFORM, UTM50S, make_tiny_bundle, write_stack
from rasterio.windows import Window


@pytest.fixture(scope="module")
def linear_bundle(tmp_path_factory):
    # logit = sum_b (x_b - 0.5) / 0.25 / sqrt(23) + 0.1: with every band equal to v,
    # logit = 4 sqrt(23) (v - 0.5) + 0.1
    return make_tiny_bundle(tmp_path_factory.mktemp("lin"), kind="linear", bias=0.1, tile=64, overlap=16)


def read1(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.mark.parametrize("threshold,level", [(0.5, 125), (0.3, 75), (0.35, 88), (0.501, 126), (0.1, 25),
                                             (0.999, 250), (0.0, 0), (1.0, 250), (0.004, 1)])
def test_mask_level_is_the_ceiling_of_250_times_the_threshold(threshold, level):
    # 250 * 0.35 = 87.5 -> 88;  250 * 0.501 = 125.25 -> 126;  whole numbers stay themselves
    assert mask_level(threshold) == level


@pytest.fixture(scope="module")
def ramp_scene(tmp_path_factory):
    """A 96 x 128 stack whose pixels sweep the logit from -6 to +6 (every band the same value),
    so every quantised probability 1..249 occurs, both sides of every threshold included."""
    h, w = 96, 128
    logit = np.linspace(-6.0, 6.0, h * w).reshape(h, w)
    v = 0.5 + (logit - 0.1) / (4 * np.sqrt(N_BANDS))
    stack = np.repeat(v[None].astype(np.float32), N_BANDS, axis=0)
    return write_stack(tmp_path_factory.mktemp("ramp") / "ramp.tif", stack)


@pytest.mark.parametrize("threshold,level", [(0.35, 88), (0.501, 126), (0.3, 75)])
def test_mask_cog_is_the_prob_cog_thresholded_as_in_qgis(tmp_path, linear_bundle, ramp_scene, threshold, level):
    s = run_scene(ramp_scene, linear_bundle, tmp_path / "o", threshold=threshold, tile=64, block=64,
                  progress=False)
    prob = read1(tmp_path / "o" / "ramp_prob.tif")
    mask = read1(tmp_path / "o" / "ramp_mask.tif")
    assert (prob != 255).all() and set(range(1, 250)) <= set(np.unique(prob).tolist())
    # What a QGIS user does with the probability COG: raster calculator "prob@1 / 250 >= t"
    qgis = (prob.astype(np.float64) / 250.0 >= threshold).astype(np.uint8)
    np.testing.assert_array_equal(mask, qgis)
    # the boundary, by hand: level - 1 is not mine, level is
    assert (mask[prob == level - 1] == 0).all() and (mask[prob == level] == 1).all()
    assert s["pixels"]["mine"] == int((prob >= level).sum())
    assert s["areas_ha"]["total"] == pytest.approx(0.01 * int((prob >= level).sum()), rel=1e-12)
    assert f"prob_u8 >= {level} " in s["mask_rule"]


class NanBandSource:
    """A scene source held in memory: every band 0.9 (a sure mine for the linear bundle), with
    single NaN bands at a few pixels. Not a stack file, so no reader blanks those pixels first."""

    crs = UTM50S
    transform = DEFAULT_TRANSFORM
    bands = BAND_NAMES
    preprocessing = Preprocessing()
    #: (row, col, band) of each NaN: in different blocks and bands, on a block edge, at a corner.
    NANS = ((5, 7, 0), (63, 64, 12), (64, 70, 8), (99, 129, 22))

    def __init__(self) -> None:
        self.height, self.width = 100, 130
        self.data = np.full((N_BANDS, self.height, self.width), 0.9, np.float32)
        for r, c, b in self.NANS:
            self.data[b, r, c] = np.nan

    def read(self, window: Window) -> np.ndarray:
        r, c = int(window.row_off), int(window.col_off)
        return self.data[:, r: r + int(window.height), c: c + int(window.width)].copy()


def test_a_pixel_with_one_nan_band_is_nodata_and_not_counted(tmp_path, linear_bundle):
    src = NanBandSource()
    s = run_scene(src, linear_bundle, tmp_path / "o", tile=64, block=64, progress=False)
    prob = read1(tmp_path / "o" / "scene_prob.tif")
    mask = read1(tmp_path / "o" / "scene_mask.tif")
    nodata = np.zeros((100, 130), bool)
    for r, c, _ in NanBandSource.NANS:
        nodata[r, c] = True
    np.testing.assert_array_equal(prob == 255, nodata)
    np.testing.assert_array_equal(mask == 255, nodata)
    assert (mask[~nodata] == 1).all()  # logit 4 sqrt(23) * 0.4 + 0.1 = 7.77: p = 0.9996 -> 250
    assert (prob[~nodata] == 250).all()
    # 100 x 130 = 13000 pixels, 4 of them nodata: 12996 mine pixels of 0.01 ha each
    assert s["pixels"]["nodata"] == 4 and s["pixels"]["mine"] == 12996
    assert s["areas_ha"]["total"] == pytest.approx(129.96, rel=1e-12)
    assert s["nodata_share"] == pytest.approx(4 / 13000)


def test_quantize_prob_by_hand():
    p = np.array([[-0.1, 0.0, 0.0021, 0.35, 0.999, 1.2]])
    q = quantize_prob(p, np.array([[True, True, True, True, True, False]]))
    # 250 p = -25 (clipped to 0), 0, 0.525, 87.5 -> 88 (round half to even), 249.75; nodata
    assert q.dtype == np.uint8 and q.tolist() == [[0, 0, 1, 88, 250, 255]]
    assert quantize_prob(np.array([1.2]), np.array([True])).tolist() == [250]  # clipped, not wrapped


def test_mask_from_prob_by_hand():
    q = np.array([0, 87, 88, 125, 126, 250, 255], np.uint8)
    m = mask_from_prob(q, 0.35)  # level 88
    assert m.dtype == np.uint8 and m.tolist() == [0, 0, 1, 1, 1, 1, 255]
    assert mask_from_prob(q, 0.501).tolist() == [0, 0, 0, 0, 1, 1, 255]  # level 126


def test_feature_collection_streaming_keeps_members_and_refuses_nan():
    f = io.StringIO()
    feats = [{"type": "Feature", "properties": {"area_ha": 1.5}, "geometry": None},
             {"type": "Feature", "properties": {"area_ha": 0.25}, "geometry": None}]
    write_feature_collection(f, iter(feats), name="mines [0] of 2024")  # a name holding "[0]"
    doc = json.loads(f.getvalue())
    assert doc == {"type": "FeatureCollection", "name": "mines [0] of 2024", "features": feats}
    assert len(f.getvalue().splitlines()) == 4  # header, one line per feature, closing line
    empty = io.StringIO()
    write_feature_collection(empty, [], name="none")
    assert json.loads(empty.getvalue())["features"] == []
    # NaN is not JSON: a feature with a NaN area is an error, never written
    with pytest.raises(ValueError):
        write_feature_collection(io.StringIO(), [{"type": "Feature", "properties": {"area_ha": float("nan")},
                                                  "geometry": None}])


class RectanglesSource(NanBandSource):
    """Not mine (every band 0.1) except two rectangles of mine (0.9); the top-left corner is
    nodata (one NaN band), so the polygonizer meets a nodata region before the mines."""

    NANS = ()
    #: (row0, row1, col0, col1): 10 x 10 px = 100 px = 1 ha, 5 x 8 px = 40 px = 0.4 ha at 10 m
    MINES = ((20, 30, 10, 20), (50, 55, 40, 48))

    def __init__(self) -> None:
        super().__init__()
        self.data[:] = 0.1
        for r0, r1, c0, c1 in self.MINES:
            self.data[:, r0:r1, c0:c1] = 0.9
        self.data[3, :8, :8] = np.nan


def test_mine_polygons_by_hand(tmp_path, linear_bundle):
    from pyproj import Transformer

    s = run_scene(RectanglesSource(), linear_bundle, tmp_path / "o", tile=64, block=64, progress=False)
    assert s["pixels"]["mine"] == 140 and s["pixels"]["nodata"] == 64
    gj = json.loads((tmp_path / "o" / "scene_mines.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and gj["name"] == "scene_mines"
    feats = gj["features"]
    assert [f["type"] for f in feats] == ["Feature", "Feature"]
    assert [f["id"] for f in feats] == [1, 2] and [f["properties"]["id"] for f in feats] == [1, 2]
    to_ll = Transformer.from_crs("EPSG:32750", "EPSG:4326", always_xy=True)
    for f, (r0, r1, c0, c1), ha in zip(feats, RectanglesSource.MINES, (1.0, 0.4), strict=True):
        # UTM distorts areas by < 0.05 % here: the geodesic area is the nominal one
        area = f["properties"]["area_ha"]
        assert area == pytest.approx(ha, rel=5e-4) and area == round(area, 4)
        ring = np.array(f["geometry"]["coordinates"][0])
        assert (np.round(ring, 7) == ring).all()  # coordinates rounded to 7 decimals (~1 cm)
        x0, y0 = DEFAULT_TRANSFORM * (c0, r0)
        x1, y1 = DEFAULT_TRANSFORM * (c1, r1)
        lons, lats = to_ll.transform([x0, x1, x0, x1], [y0, y0, y1, y1])
        np.testing.assert_allclose([ring[:, 0].min(), ring[:, 0].max()], [min(lons), max(lons)], atol=2e-7)
        np.testing.assert_allclose([ring[:, 1].min(), ring[:, 1].max()], [min(lats), max(lats)], atol=2e-7)
    total = sum(f["properties"]["area_ha"] for f in feats)
    assert s["polygons"]["polygons"] == 2 and s["polygons"]["dropped_below_mmu"] == 0
    assert s["polygons"]["area_ha"] == pytest.approx(total, abs=1e-4)
    # a 0.5 ha minimum mapping unit drops the 0.4 ha polygon; the raster hectares stay
    s2 = run_scene(RectanglesSource(), linear_bundle, tmp_path / "o2", tile=64, block=64, progress=False,
                   min_area_ha=0.5)
    assert s2["polygons"]["polygons"] == 1 and s2["polygons"]["dropped_below_mmu"] == 1
    assert s2["polygons"]["area_ha"] == pytest.approx(1.0, rel=5e-4)
    assert s2["areas_ha"]["total"] == pytest.approx(1.4, rel=1e-12)


def test_cogs_record_bundle_threshold_scale_and_overview_resampling(tmp_path, linear_bundle):
    run_scene(RectanglesSource(), linear_bundle, tmp_path / "o", tile=64, block=64, progress=False,
              threshold=0.35)
    with rasterio.open(tmp_path / "o" / "scene_prob.tif") as p, rasterio.open(tmp_path / "o" / "scene_mask.tif") as m:
        for tags in (p.tags(), m.tags()):
            assert tags["COALMINE_BUNDLE"] == "tiny-test" and tags["COALMINE_THRESHOLD"] == "0.35"
            assert tags["COALMINE_PROB_SCALE"] == "250"
        assert p.tags()["OVERVIEW_RESAMPLING"] == "AVERAGE"  # a probability averages
        assert m.tags()["OVERVIEW_RESAMPLING"] == "NEAREST"  # a mask does not
        assert p.nodata == 255 and m.nodata == 255


def test_summary_refuses_nan(tmp_path):
    with OutputSet(tmp_path / "o", "x", UTM50S, DEFAULT_TRANSFORM, 4, 4) as outs:
        with pytest.raises(ValueError):
            outs.write_summary({"areas_ha": {"total": float("nan")}})
        outs.write_summary({"areas_ha": {"total": 1.5}})
        assert json.loads(outs.tmp["summary"].read_text()) == {"areas_ha": {"total": 1.5}}
        outs.abort()
    assert list((tmp_path / "o").iterdir()) == []


def test_output_set_stage_files_are_complete_once_closed(tmp_path):
    outs = OutputSet(tmp_path / "o", "x", UTM50S, DEFAULT_TRANSFORM, 32, 16)
    q = np.arange(16 * 32, dtype=np.uint8).reshape(16, 32) % 251
    outs.write(Window(0, 0, 32, 16), q, (q >= 125).astype(np.uint8))
    outs.close_stage()
    outs.close_stage()  # closing twice is harmless
    with rasterio.open(outs.stage["prob"]) as ds:  # the GeoTIFF is complete on disk
        np.testing.assert_array_equal(ds.read(1), q)
    with rasterio.open(outs.stage["mines"]) as ds:
        np.testing.assert_array_equal(ds.read(1), (q >= 125).astype(np.uint8))
    outs.abort()
    assert list((tmp_path / "o").iterdir()) == []


def test_output_set_that_cannot_create_its_rasters_leaves_nothing(tmp_path):
    with pytest.raises(OutputError, match="cannot write into"):
        OutputSet(tmp_path / "o", "x", UTM50S, DEFAULT_TRANSFORM, 0, 0)  # GDAL refuses a 0 x 0 raster
    assert list((tmp_path / "o").iterdir()) == []
