"""The report's maps and model card: true-colour pictures from stacks and raw Sentinel-2, the
robust stretch, mines that survive the reduction to display cells, round scale bars and
graticules, one small map per AOI only where AOIs lie far apart, and the study-style accuracy
table, export gates and per-year models of the model card."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.aoi import Aoi
from coalmine.runtime.bundle import load_bundle
from coalmine.runtime.monitor import load_config, run_monitor
from coalmine.runtime.monitor.backdrop import preview_grid, read_rgb, stretch, write_truecolour
from coalmine.runtime.monitor.maps import (
    Extent,
    Layer,
    draw_graticule,
    draw_map,
    draw_scale_bar,
    far_apart,
    image_mime,
    nice_length,
    read_display,
)
from coalmine.runtime.monitor.modelcard import accuracy_table, read_model_card
from coalmine.runtime.raster import Grid
from factories import box, make_stack, write_stack
from rasterio.crs import CRS
from test_monitor_data import make_mask_project, oracle_run_scene

UTM = CRS.from_epsg(32750)
TRANSFORM = Affine(10, 0, 300000, 0, -10, 9700000)


def _mask(path, arr, transform=TRANSFORM, crs=UTM):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype="uint8",
                       crs=crs, transform=transform, nodata=255) as ds:
        ds.write(arr, 1)
    return path


# -- the picture ----------------------------------------------------------------------------------


def test_stretch_maps_percentiles_and_keeps_nodata_zero():
    rng = np.random.default_rng(0)
    rgb = rng.normal(0.1, 0.02, (3, 50, 60)).astype(np.float32)
    rgb[0, 0, 0] = 50.0          # one glint: a min-max stretch would turn the rest black
    rgb[:, 10, :] = np.nan
    out = stretch(rgb)
    assert out.dtype == np.uint8 and (out[:, 10, :] == 0).all()
    valid = np.isfinite(rgb).all(axis=0)
    assert out[:, valid].min() >= 1 and out[0, 0, 0] == 255
    # the 2nd..98th percentiles span the range: the median lands mid-way, not near black
    assert 100 < np.median(out[1][valid]) < 160
    assert (stretch(np.full((3, 4, 4), np.nan, np.float32)) == 0).all()


def test_truecolour_from_a_stack_and_from_raw_sentinel2(tmp_path):
    from coalmine.train.synth import make_scene

    sc = make_scene(tmp_path / "raw", 2019, seed=3, size=128)
    with rasterio.open(sc.label_path) as ds:
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    raw = read_rgb(sc.s2_dir, grid)
    with rasterio.open(next(sc.s2_dir.glob("*B04*"))) as b4:
        dn = b4.read(1).astype(np.float64)
    # B04 read through the warp equals the band file where both are valid (same 10 m grid)
    ok = np.isfinite(raw[0]) & (dn > 0)
    assert ok.mean() > 0.5 and np.allclose(raw[0][ok], dn[ok])
    assert np.isnan(raw[0][dn == 0]).all()  # DN 0 is no data
    # a 23-band stack: reflectance with NaN nodata, found by its band descriptions
    stack = make_stack(64, 80, seed=1)
    stack[:, :8, :] = np.nan
    p = write_stack(tmp_path / "stack.tif", stack)
    g = Grid.of(p)
    rgb = read_rgb(p, g)
    assert np.allclose(rgb[0][8:], stack[2][8:]) and np.allclose(rgb[2][8:], stack[0][8:])  # B04, B02
    assert np.isnan(rgb[:, :8]).all()
    out = write_truecolour(p, g, tmp_path / "tc.tif", max_px=32)
    with rasterio.open(out) as ds:
        # 80 px at most 32: a whole factor of 3, so 27 px of three times the pixel size
        assert ds.count == 3 and ds.width == 27 and ds.nodata == 0 and ds.crs == g.crs
        assert ds.transform.a == pytest.approx(g.transform.a * 3)
        assert ds.descriptions == ("B04", "B03", "B02")
        a = ds.read()
    assert (a[:, 0] == 0).all() and (a[:, -1] > 0).all()
    # a scene whose bands cannot be found gives no picture, and no error
    assert write_truecolour(_mask(tmp_path / "m.tif", np.zeros((8, 8), np.uint8)), g, tmp_path / "x.tif") is None


def test_preview_grid_keeps_the_footprint():
    g = Grid(UTM, Affine(10, 0, 300000, 0, -10, 9700000), 5000, 3000)
    p = preview_grid(g, 2048)
    assert (p.width, p.height) == (1667, 1000) and p.transform.a == 30
    assert p.bounds.left == g.bounds.left and p.bounds.top == g.bounds.top


# -- drawing -----------------------------------------------------------------------------------------


def test_a_single_pixel_pit_survives_the_reduction_and_nodata_is_shared(tmp_path):
    a = np.zeros((1000, 1000), np.uint8)
    a[503, 771] = 1                       # one mined pixel
    a[:, :500] = 255                      # the west half not observed
    p = _mask(tmp_path / "m.tif", a)
    classes, nodata, ext = read_display(p, Extent(300000, 9690000, 310000, 9700000), max_px=100)
    mined = classes[1]
    assert mined.shape == (100, 100) and mined.sum() == 1 and mined[50, 77]
    assert nodata[:, :50].min() == 1.0 and nodata[:, 50:].max() == 0.0
    assert ext == Extent(300000, 9690000, 310000, 9700000)


@pytest.mark.parametrize("span, expect", [(3700.0, 2000.0), (260.0, 200.0), (12.0, 10.0), (0.9, 0.5)])
def test_nice_lengths(span, expect):
    assert nice_length(span) == expect


def test_scale_bar_and_graticule_in_metres_and_degrees():
    from matplotlib.figure import Figure

    ax = Figure().add_axes((0, 0, 1, 1))
    utm = Extent(300000, 9675000, 301280, 9676280)        # 1.28 km wide
    assert draw_scale_bar(ax, UTM, utm) == 200.0             # a quarter of the width, rounded down
    step = draw_graticule(ax, UTM, utm)
    assert step == 0.005                                     # ~0.0115° across: 2-3 lines
    texts = [t.get_text() for t in ax.texts]
    assert any(t.endswith("°E") for t in texts) and any(t.endswith("°S") for t in texts)
    ax = Figure().add_axes((0, 0, 1, 1))
    geo = Extent(115.0, -3.0, 115.2, -2.8)                  # 0.2° ≈ 22 km wide
    assert draw_scale_bar(ax, CRS.from_epsg(4326), geo) == 5000.0
    assert draw_graticule(ax, CRS.from_epsg(4326), geo) == 0.05


def test_draw_map_gives_a_jpeg_over_the_picture_and_a_png_without(tmp_path):
    a = np.zeros((120, 120), np.uint8)
    a[40:60, 40:70] = 1
    p = _mask(tmp_path / "m.tif", a)
    stack = make_stack(120, 120, seed=2)
    tc = write_truecolour(write_stack(tmp_path / "s.tif", stack, transform=Affine(10, 0, 300000, 0, -10, 9700000)),
                          Grid.of(p), tmp_path / "tc.tif")
    aoi = Aoi("Pit $x$ <1>", box(300100, 9699000, 300900, 9699800), UTM)
    jpg = draw_map(Layer(p, "mask", tc), [aoi], title="2019", note="1 scene, 100 % observed")
    assert jpg[:3] == b"\xff\xd8\xff" and image_mime(jpg) == "image/jpeg" and len(jpg) > 10_000
    with rasterio.MemoryFile(jpg) as mf, mf.open() as ds:
        img = ds.read()
    assert img.shape[0] == 3 and img.shape[2] == 600  # 6 in at 100 dpi
    png = draw_map(Layer(p, "mask"), [aoi], title="2019")  # no picture: flat colours stay lossless PNG
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and image_mime(png) == "image/png"


def test_small_maps_per_aoi_only_when_aois_are_far_apart():
    full = Extent(300000, 9600000, 400000, 9700000)        # 100 km
    near = [Aoi("a", box(310000, 9610000, 360000, 9660000), UTM)]
    far = [Aoi("a", box(310000, 9610000, 312000, 9612000), UTM), Aoi("b", box(390000, 9690000, 392000, 9692000), UTM)]
    assert not far_apart(near, UTM, full) and far_apart(far, UTM, full) and not far_apart([], UTM, full)


# -- the model card --------------------------------------------------------------------------------


def test_accuracy_table_is_the_studys_table_2():
    # the study's Table 2 (rows = map, columns = reference; class order of coal-train: background, mine)
    t = accuracy_table("test", {"classes": ["background", "mine"], "confusion_matrix": [[21786, 378], [326, 4190]],
                                "overall_accuracy": 0.974, "kappa": 0.907})
    assert [r["name"] for r in t.rows] == ["mine (coal)", "no mine"]
    assert [r["counts"] for r in t.rows] == [[4190, 326], [378, 21786]]
    assert [r["total"] for r in t.rows] == [4516, 22164] and t.column_totals == [4568, 22112] and t.total == 26680
    assert [round(100 * r["users"], 1) for r in t.rows] == [92.8, 98.3]
    assert [round(100 * p, 1) for p in t.producers] == [91.7, 98.5]


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def test_the_report_carries_the_model_card_and_the_maps(tmp_path):
    p = make_mask_project(tmp_path, years=range(2017, 2019))
    report = {"threshold": 0.5, "validation": {"classes": ["background", "mine"],
                                               "confusion_matrix": [[21786, 378], [326, 4190]],
                                               "overall_accuracy": 0.97361, "kappa": 0.9068},
              "test": {"classes": ["background", "mine"], "confusion_matrix": [[900, 30], [10, 60]],
                       "overall_accuracy": 0.96, "kappa": 0.72}}
    (p["bundle"] / "report.json").write_text(json.dumps(report))
    gates = {"created": "2026-03-04T05:06:07+00:00", "reports": {
        "onnx_int8": {"artefact": "model.int8.onnx", "reference": "model.onnx", "passed": True,
                      "mask_agreement": 0.99612, "iou_drop_points": 0.4,
                      "tolerances": {"min_mask_agreement": 0.99, "max_iou_drop_points": None}}}}
    (p["bundle"] / "parity_report.json").write_text(json.dumps(gates))
    b = json.loads((p["bundle"] / "bundle.json").read_text())
    b["files"]["parity_report"] = "parity_report.json"
    b["training"].update({"data_fingerprint": "f" * 64, "epochs_run": 42, "epochs_max": 200, "best_epoch": 12,
                          "config": {"scenes": [{"path": "/d/synth_2016_S2", "labels": "/d/l16.tif", "split": "train"},
                                                {"path": "/d/synth_2019_S2", "labels": "/d/l19.tif", "split": "test"}]}})
    (p["bundle"] / "bundle.json").write_text(json.dumps(b))
    card = read_model_card(load_bundle(p["bundle"]))
    assert [a.split for a in card.accuracy] == ["validation", "test"] and card.gates[0].passed
    s = run_monitor(load_config(p["config"]), runner=oracle_run_scene)
    t = _Text()
    t.feed(s.report.read_text(encoding="utf-8"))
    text = " ".join(" ".join(t.parts).split())
    assert "The model behind the numbers" in text and "oracle-1" in text and "f" * 64 in text
    assert "42 of 200 (best: 12)" in text and "synth_2019_S2" in text
    assert "mine (coal) 4,190 326 4,516 92.8 %" in text and "producer's accuracy 91.7 % 98.5 %" in text
    assert "Overall accuracy 97.4 % · kappa 0.907" in text and "kappa 0.720" in text
    assert "model.int8.onnx model.onnx 99.612 % ≥ 99.0 % 0.40 – passed" in text
    assert "Where the mines are" in text and "coalmine.qgs" in text
    # the maps are inline images; the two AOIs are half the map each: no per-AOI grid
    page = s.report.read_text(encoding="utf-8")
    assert page.count('alt="mine map ') == 2 and page.count('alt="change ') == 1
    assert "Each area of interest, year by year" not in text
