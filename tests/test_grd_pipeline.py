"""A Sentinel-1 GRD product (SAFE folder, zip, COG-SAFE) through coal-prepare, coal-train,
coal-run and coal-monitor, with and without a DEM; what is recorded; refusals at the CLI.

Products are generated from the real annotation XML of ../shared/realdata (tests/grd_factory.py)
with a Sentinel-2 multi-band GeoTIFF on a 256 px UTM grid over the footprint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from coalmine.runtime.bands import VV_INDEX
from coalmine.runtime.cli.prepare import main as prepare_main
from coalmine.runtime.cli.run import main as run_main
from coalmine.runtime.preprocess.stack import INPUTS_TAG, PREPROCESSING_TAG
from factories import make_tiny_bundle
from grd_factory import UTM, make_product, s2_grid_over, write_s2
from pyproj import Transformer
from rasterio.windows import Window

pytestmark = pytest.mark.realdata

WIN = Window(12800, 7800, 500, 500)
CENTRE = (8050.0, 13050.0)
SIZE = 256


@pytest.fixture(scope="module")
def world(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("grdworld")
    safe = make_product(realdata, root / "safe", WIN)
    (root / "zip").mkdir()
    z = make_product(realdata, root / "zip", WIN, zip_it=True)
    (root / "cog").mkdir()
    cog = make_product(realdata, root / "cog", WIN, layout="cog")
    grid = s2_grid_over(safe.geo, *CENTRE, SIZE)
    s2 = write_s2(root / "s2_l2a.tif", grid)
    dem = root / "dem.tif"
    base = float(safe.geo.terrain(*CENTRE))
    T = grid.transform
    with rasterio.open(dem, "w", driver="GTiff", width=120, height=120, count=1, dtype="float32",
                       crs=UTM, transform=Affine(30, 0, T.c - 300, 0, -30, T.f + 300)) as ds:
        ds.write(np.full((1, 120, 120), base, np.float32))
    labels = root / "labels.tif"
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[40:120, 60:150] = 1
    with rasterio.open(labels, "w", driver="GTiff", width=SIZE, height=SIZE, count=1,
                       dtype="uint8", crs=grid.crs, transform=grid.transform, nodata=255) as ds:
        ds.write(lab, 1)
    return {"root": root, "safe": safe.path, "zip": z.path, "cog": cog.path, "grid": grid,
            "s2": s2, "dem": dem, "labels": labels}


def _prepare(world: dict, s1: Path, out: Path, *extra: str):  # noqa: ANN202
    return CliRunner().invoke(prepare_main, ["--s2", str(world["s2"]), "--s1", str(s1), "-o",
                                             str(out), "-q", *extra])


def test_safe_zip_and_cog_prepare_to_the_same_stack(world, tmp_path) -> None:  # noqa: ANN001
    outs = {}
    for form in ("safe", "zip", "cog"):
        res = _prepare(world, world[form], tmp_path / f"{form}.tif")
        assert res.exit_code == 0, res.output
        outs[form] = tmp_path / f"{form}.tif"
    data = {}
    for form, p in outs.items():
        with rasterio.open(p) as ds:
            data[form] = ds.read()
            tags = ds.tags()
        inputs = json.loads(tags[INPUTS_TAG])
        prep = json.loads(tags[PREPROCESSING_TAG])
        assert inputs["s1_form"] == {"safe": "SAFE folder", "zip": "SAFE zip",
                                     "cog": "COG-SAFE folder"}[form]
        assert inputs["s1_ipf"] == "3.40" and inputs["s1_noise_removal"].startswith("range x azimuth")
        assert inputs["s1_orbit"] == "annotation state vectors" and inputs["s1_terrain"] == "none"
        assert prep["s1"]["source"] == "grd" and prep["s1"]["terrain"] == "none"
        assert prep["s1"]["radiometry"] == "sigma0"
    vv = data["safe"][VV_INDEX]
    assert np.isfinite(vv).mean() > 0.99 and -20 < np.nanmedian(vv) < -5
    np.testing.assert_array_equal(data["safe"], data["zip"])
    np.testing.assert_array_equal(data["safe"], data["cog"])


def test_prepare_with_dem_records_it_and_runs_in_a_subprocess(world, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "dem.tif"
    exe = Path(sys.executable).parent / "coal-prepare"
    r = subprocess.run([str(exe), "--s2", str(world["s2"]), "--s1", str(world["zip"]), "--dem",
                        str(world["dem"]), "-o", str(out), "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with rasterio.open(out) as ds:
        inputs = json.loads(ds.tags()[INPUTS_TAG])
        prep = json.loads(ds.tags()[PREPROCESSING_TAG])
    assert prep["s1"]["terrain"] == "dem"
    assert inputs["dem"] == str(world["dem"]) and len(inputs["dem_sha256"]) == 64
    assert "Range-Doppler terrain correction with DEM" == inputs["s1_geocoding"]


def test_dem_with_a_calibrated_raster_is_refused(world, tmp_path) -> None:  # noqa: ANN001
    g = world["grid"]
    tif = tmp_path / "vv_linear.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=g.width, height=g.height, count=1,
                       dtype="float32", crs=g.crs, transform=g.transform) as ds:
        ds.write(np.full((1, g.height, g.width), 0.05, np.float32))
    res = _prepare(world, tif, tmp_path / "x.tif", "--dem", str(world["dem"]))
    assert res.exit_code == 2
    assert f"--dem applies to a Sentinel-1 GRD product (SAFE folder or zip), but --s1 {tif}" in res.output
    assert not (tmp_path / "x.tif").exists()


def test_uncalibrated_geotiff_refusal_points_to_the_grd_product(world, tmp_path) -> None:  # noqa: ANN001
    g = world["grid"]
    tif = tmp_path / "vv_dn.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=g.width, height=g.height, count=1,
                       dtype="uint16", crs=g.crs, transform=g.transform) as ds:
        ds.write(np.full((1, g.height, g.width), 180, np.uint16))
    res = _prepare(world, tif, tmp_path / "x.tif")
    assert res.exit_code == 1
    line = res.output.strip().splitlines()[-1]
    assert f"--s1 {tif}" in line and "raw GRD digital numbers" in line
    assert "give the GRD product itself instead (the S1?_IW_GRDH_….SAFE folder or its .zip" in line


def test_train_on_a_grd_zip_then_run_on_its_safe_with_a_dem(world, tmp_path) -> None:  # noqa: ANN001
    from coalmine.train.cli import main as train_main

    bundle = tmp_path / "bundle"
    res = CliRunner().invoke(train_main, [
        "--scene", str(world["s2"]), "--s1", str(world["zip"]), "--labels", str(world["labels"]),
        "-o", str(bundle), "--epochs", "1", "--tile", "64", "--batch-size", "4", "--max-patches", "8",
        "--block-tiles", "1", "--buffer", "0", "--glcm-edges", "equal_width", "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    b = json.loads((bundle / "bundle.json").read_text())
    assert b["preprocessing"]["s1"]["source"] == "grd"
    assert b["preprocessing"]["s1"]["terrain"] == "none"
    from coalmine.export.api import export_bundle  # the runtime runs ONNX

    export_bundle(bundle, fp16=False, int8=False, engine=False)
    out = tmp_path / "maps"
    res = CliRunner().invoke(run_main, [str(world["s2"]), "--s1", str(world["safe"]), "--dem",
                                        str(world["dem"]), "-b", str(bundle), "--out", str(out),
                                        "--backend", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads(next(out.glob("*_summary.json")).read_text())
    assert summary["s1_made"] == {"source": "grd", "radiometry": "sigma0", "terrain": "dem"}
    assert summary["inputs"]["s1_geocoding"] == "Range-Doppler terrain correction with DEM"
    assert summary["inputs"]["dem_sha256"]
    warn = [w for w in summary["warnings"] if "DEM" in w]
    assert warn and "terrain-corrected with a DEM" in warn[0] and "without a DEM" in warn[0]


def test_monitor_config_with_a_cog_safe_and_a_dem(world, tmp_path) -> None:  # noqa: ANN001
    from coalmine.runtime.cli.monitor import main as monitor_main

    proj = tmp_path / "proj"
    proj.mkdir()
    make_tiny_bundle(proj / "bundle", kind="linear")
    g = world["grid"]
    tr = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True)
    b = g.bounds
    ring = [list(tr.transform(x, y)) for x, y in ((b.left, b.bottom), (b.right, b.bottom),
                                                  (b.right, b.top), (b.left, b.top), (b.left, b.bottom))]
    (proj / "aois.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "pit"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    (proj / "dem.tif").write_bytes(world["dem"].read_bytes())
    (proj / "monitor.toml").write_text(f"""\
bundle = "bundle"
aois = "aois.geojson"
output = "out"
[run]
backend = "cpu"
dem = "dem.tif"
[[scenes]]
path = "{world['s2']}"
date = 2021-12-23
s1 = "{world['cog']}"
""")
    res = CliRunner().invoke(monitor_main, [str(proj / "monitor.toml"), "-q"])
    assert res.exit_code == 0, res.output
    summaries = list((proj / "out").rglob("*_summary.json"))
    assert summaries
    s = json.loads(summaries[0].read_text())
    assert s["inputs"]["s1_form"] == "COG-SAFE folder"
    assert s["inputs"]["dem"] == str(proj / "dem.tif")


def test_training_config_scene_takes_dem_and_orbit(tmp_path) -> None:  # noqa: ANN001
    from coalmine.train.config import load_config

    for name in ("s2.tif", "labels.tif", "dem.tif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "S1A_IW_GRDH_1SDV_x.zip").write_bytes(b"")
    (tmp_path / "orbits").mkdir()
    (tmp_path / "train.toml").write_text(
        '[[scenes]]\npath = "s2.tif"\ns1 = "S1A_IW_GRDH_1SDV_x.zip"\nlabels = "labels.tif"\n'
        'dem = "dem.tif"\norbit = "orbits"\n')
    s = load_config(tmp_path / "train.toml").scenes[0]
    assert s.dem == tmp_path / "dem.tif" and s.orbit == tmp_path / "orbits"
