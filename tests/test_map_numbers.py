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
from coalmine.runtime.outputs import (
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
