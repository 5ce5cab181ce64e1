"""coal-demo: AOIs from the Tapin mine points, planted mines, refusals, and the whole chain
(quick settings) end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.train.demo import (
    builtin_sites,
    main,
    mine_plans_at,
    sites_from_points,
    write_aoi_file,
)


@pytest.fixture
def points(realdata):
    return realdata / "tapin_mines" / "tapin_gcmt_points.geojson"


def test_sites_follow_the_tapin_layout(points):
    sites, origin = sites_from_points(points, 256)
    names = [s.name for s in sites]
    assert names == ["AGM Coal Mine", "BRE / NAL Coal Mines", "EBL Coal Mine"]  # BRE+NAL 200 m apart
    by = {s.name: s for s in sites}
    # the real layout: AGM lies north-east of BRE/NAL, EBL west of them
    assert by["AGM Coal Mine"].col > by["BRE / NAL Coal Mines"].col > by["EBL Coal Mine"].col
    assert by["AGM Coal Mine"].row < by["BRE / NAL Coal Mines"].row
    # uniform scale: ratio of distances equals the real one (AGM-BRE vs BRE-EBL, about 7.4 / 7.5 km)
    from pyproj import Geod

    g = Geod(ellps="WGS84")
    real = g.inv(115.259809, -2.889157, 115.225696, -2.944753)[2] / g.inv(115.225696, -2.944753, 115.151507, -2.95744)[2]
    a, b, e = by["AGM Coal Mine"], by["BRE / NAL Coal Mines"], by["EBL Coal Mine"]
    scaled = math.hypot(a.row - b.row, a.col - b.col) / math.hypot(b.row - e.row, b.col - e.col)
    assert scaled == pytest.approx(real, rel=0.02)
    for s in sites:  # inside the scene with the whole AOI
        assert s.half <= s.row <= 256 - s.half and s.half <= s.col <= 256 - s.half
    for i, s in enumerate(sites):  # no two AOIs overlap (no pixel counted twice)
        for t in sites[i + 1:]:
            assert max(abs(s.row - t.row), abs(s.col - t.col)) >= s.half + t.half
    # the scene is centred on the points in EPSG:32750 (about 2.9 S, 115.2 E)
    from pyproj import Transformer

    lon, lat = Transformer.from_crs("EPSG:32750", "EPSG:4326", always_xy=True).transform(
        origin[0] + 1280, origin[1] - 1280)
    assert 115.15 < lon < 115.25 and -2.96 < lat < -2.88
    assert origin[0] % 60 == 0 and origin[1] % 60 == 0


def test_planted_mines_lie_in_their_aois(points, tmp_path):
    from coalmine.train.synth import make_scene

    size = 128
    sites, origin = sites_from_points(points, size)
    plans = mine_plans_at(sites, seed=0, size=size)
    aoi_path = write_aoi_file(tmp_path / "aois.geojson", sites, origin)
    assert [f["properties"]["name"] for f in json.loads(aoi_path.read_text())["features"]] == [s.name for s in sites]
    inside = np.zeros((size, size), dtype=bool)
    band = np.zeros((size, size), dtype=bool)  # a margin around each AOI: no mine may spill into it
    for s in sites:
        band[max(0, int(s.row - s.half) - 6):int(s.row + s.half) + 6, max(0, int(s.col - s.half) - 6):int(s.col + s.half) + 6] = True
    for s in sites:
        inside[int(s.row - s.half):int(s.row + s.half), int(s.col - s.half):int(s.col + s.half)] = True
    band &= ~inside
    per_year = []
    for year in (2016, 2019, 2021):
        sc = make_scene(tmp_path, year, seed=0, size=size, plans=plans, origin=origin, cloud_cover=0)
        with rasterio.open(sc.label_path) as ds:
            lab = ds.read(1)
            assert ds.transform.c == origin[0] and ds.transform.f == origin[1]
        assert not ((lab == 1) & band).any()  # AOI mines stay inside, other mines stay away
        per_year.append([int(((lab == 1) & (np.abs(np.arange(size)[:, None] - s.row) < s.half)
                              & (np.abs(np.arange(size)[None, :] - s.col) < s.half)).sum()) for s in sites])
    per_year = np.array(per_year)
    assert (per_year[-1] > 0).all()  # every AOI has a mine by 2021
    assert (np.diff(per_year, axis=0) != 0).any()  # and the areas change over the years


def test_builtin_sites_without_points_file():
    sites = builtin_sites(seed=3, size=256)
    assert sites and all(s.name.startswith("Pit ") for s in sites)
    assert all(0 <= s.row < 256 and 0 <= s.col < 256 for s in sites)
    for i, s in enumerate(sites):
        for t in sites[i + 1:]:
            assert max(abs(s.row - t.row), abs(s.col - t.col)) >= s.half + t.half


def test_demo_refusals(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("precious")
    r = CliRunner().invoke(main, ["--out", str(tmp_path / "mine"), "--quick"])
    assert r.exit_code == 2
    assert "exists and is not a coal-demo folder; choose a new or empty folder" in r.stderr
    assert (tmp_path / "mine" / "thesis.docx").read_text() == "precious"
    r = CliRunner().invoke(main, ["--out", str(tmp_path / "d"), "--mines", str(tmp_path / "none.geojson")])
    assert r.exit_code == 1 and "--mines" in r.stderr and "does not exist" in r.stderr
    r = CliRunner().invoke(main, ["--out", str(tmp_path / "d"), "--size", "101"])
    assert r.exit_code == 2 and "--size 101 must be even" in r.stderr


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, points):
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["--out", str(out), "--quick", "--seed", "1", "--mines", str(points), "-q"])
    assert r.exit_code == 0, r.output
    report = out / "monitor" / "report.html"
    assert r.stdout.strip() == str(report.resolve())
    page = report.read_text(encoding="utf-8")
    for name in ("AGM Coal Mine", "BRE / NAL Coal Mines", "EBL Coal Mine"):
        assert name in page
    assert all(str(y) in page for y in range(2016, 2022))
    assert (out / "model" / "model.onnx").is_file() and (out / "model" / "bundle.json").is_file()
    # trained on five years; the held-out year is a test scene with its own (unbiased) figures
    from coalmine.train.demo import TEST_YEAR

    rep = json.loads((out / "model" / "report.json").read_text())
    assert rep["patches"]["test"] > 0 and rep["test"] is not None and rep["test"]["pixels"] > 0
    used = json.loads((out / "model" / "bundle.json").read_text())["training"]["config"]["scenes"]
    assert sorted(f"{s['split']}:{s['path'].rsplit('_', 2)[-2]}" for s in used) == sorted(
        [f"train:{y}" for y in range(2016, 2022) if y != TEST_YEAR] + [f"test:{TEST_YEAR}"])
    assert len(list((out / "monitor" / "change").glob("change_*.tif"))) == 5
    # coal-export --fp16 --int8 ran with its gates' table on stderr; the monitor ran the model that
    # "auto" picks on this machine (INT8 on a CPU) and the report names it per year
    assert "model.fp16.onnx  vs model.onnx" in r.stderr and (out / "model" / "model.fp16.onnx").is_file()
    int8 = (out / "model" / "model.int8.onnx").is_file()
    assert int8 or "model.int8.onnx failed its parity gate" in r.stderr
    import sqlite3

    con = sqlite3.connect(out / "monitor" / "ledger.sqlite")
    used_models = set(con.execute("SELECT model_file, precision FROM scenes"))
    con.close()
    import onnxruntime

    on_gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if not on_gpu:
        assert used_models == ({("model.int8.onnx", "int8")} if int8 else {("model.onnx", "fp32")})
    text = page.replace("\n", " ")
    assert "The model behind the numbers" in text and "Export gates" in text
    assert "Accuracy: Test split (held out whole)" in text
    for f, _ in used_models:
        assert f in text
    # maps over each year's true-colour picture, and the QGIS project beside the report
    assert all((out / "monitor" / "yearly" / f"truecolour_{y}.tif").is_file() for y in range(2016, 2022))
    assert (out / "monitor" / "coalmine.qgs").is_file() and (out / "monitor" / "mines.gpkg").is_file()
    # the written monitor.toml is a working configuration: a second run has nothing to do
    from coalmine.runtime.cli.monitor import main as monitor_main

    r2 = CliRunner().invoke(monitor_main, [str(out / "monitor.toml"), "-q"])
    assert r2.exit_code == 0
    assert "0 new scenes processed, 6 unchanged, 0 failed" in r2.stderr


@pytest.mark.slow
def test_demo_composite_mode_monitors_one_composite_per_year(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["--out", str(out), "--quick", "--composite", "3", "-q"])
    assert r.exit_code == 0, r.output
    cfg = (out / "monitor.toml").read_text()
    assert 'compositing = "input"' in cfg
    assert len(list((out / "data" / "acquisitions").glob("synth_*_S2"))) == 3 * 6
    assert sorted(p.name for p in (out / "monitor" / "composites").iterdir()) == [str(y) for y in range(2016, 2022)]
    page = (out / "monitor" / "report.html").read_text(encoding="utf-8")
    assert "one composite per year" in page and "few clear observations" in page
