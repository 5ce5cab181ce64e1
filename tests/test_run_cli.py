"""``coal-run`` command line: help, a run, refusals with exit codes, and a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from coalmine.runtime.cli.run import main
from factories import box, make_stack, make_tiny_bundle, write_stack


@pytest.fixture
def setup(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle", kind="linear", bias=0.1, tile=64, overlap=16)
    scene = write_stack(tmp_path / "scene.tif", make_stack(90, 110, seed=1))
    return bundle, scene


def test_help_shows_options_and_defaults():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for s in ("--bundle", "--backend [auto|tensorrt|cuda|cpu]", "--gpu-mem", "[default: 6.0]", "--batch-size",
              "--tile", "--overlap", "--threshold", "--aoi", "--min-area", "--quiet", "--s1"):
        assert s in r.output


def test_cli_run_prints_summary_json(tmp_path, setup):
    bundle, scene = setup
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Feature", "properties": {"name": "everything"},
                               "geometry": box(110.0, -12.0, 120.0, 0.0)}))
    r = CliRunner().invoke(main, [str(scene), "--bundle", str(bundle.path), "--out", str(tmp_path / "o"),
                                  "--tile", "64", "--aoi", str(aoi), "--backend", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["areas_ha"]["aois"]["everything"] == pytest.approx(s["areas_ha"]["total"])
    assert s["backend"]["reason"] == "cpu requested with --backend cpu; fp32 model (the bundle has no model.int8.onnx)"
    assert r.stderr == ""  # --quiet: no progress bar, no info
    assert sorted(os.listdir(tmp_path / "o")) == ["scene_mask.tif", "scene_mines.geojson", "scene_prob.tif",
                                                  "scene_summary.json"]


def test_cli_reports_backend_choice_on_stderr(tmp_path, setup):
    bundle, scene = setup
    r = CliRunner().invoke(main, [str(scene), "-b", str(bundle.path), "-o", str(tmp_path / "o"), "--tile", "64"])
    assert r.exit_code == 0
    assert "backend: onnxruntime-cpu" in r.stderr and "tensorrt skipped" in r.stderr


@pytest.mark.parametrize("args,code,msg", [
    (["--tile", "50"], 2, "coal-run: error: --tile 50 is not a positive multiple of 32"),
    (["--batch-size", "lots"], 2, "coal-run: error: --batch-size 'lots' must be a positive integer or 'auto'"),
    (["--threshold", "0"], 2, "coal-run: error: --threshold 0 must lie strictly between 0 and 1"),
    (["--backend", "cuda"], 1, "coal-run: error: --backend cuda cannot run"),
])
def test_cli_refusals(tmp_path, setup, args, code, msg):
    bundle, scene = setup
    r = CliRunner().invoke(main, [str(scene), "-b", str(bundle.path), "-o", str(tmp_path / "o"), "-q", *args])
    assert r.exit_code == code, r.output
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0]  # one line, no traceback
    assert r.stderr.startswith(msg), r.stderr
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []


def test_cli_refuses_missing_bundle_and_scene(tmp_path, setup):
    bundle, scene = setup
    r = CliRunner().invoke(main, [str(scene), "-b", str(tmp_path / "none"), "-q"])
    assert r.exit_code == 1 and "bundle folder" in r.stderr and "does not exist" in r.stderr
    r = CliRunner().invoke(main, [str(tmp_path / "nope.tif"), "-b", str(bundle.path), "-q"])
    assert r.exit_code == 1 and "nope.tif" in r.stderr and "does not exist" in r.stderr


def test_subprocess_run_without_torch(tmp_path, setup):
    # The real console script in a fresh interpreter; then run_scene in another one, checking
    # that neither torch nor the training/export code was imported.
    bundle, scene = setup
    exe = Path(sys.executable).parent / "coal-run"
    out = tmp_path / "o"
    p = subprocess.run([str(exe), str(scene), "--bundle", str(bundle.path), "--out", str(out), "--tile", "64"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["outputs"]["mask"] == str(out / "scene_mask.tif")
    code = (
        "import sys\n"
        "from coalmine.runtime.run import run_scene\n"
        f"s = run_scene({str(scene)!r}, {str(bundle.path)!r}, {str(tmp_path / 'o2')!r}, tile=64, progress=False)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'segmentation_models_pytorch', 'torchvision')"
        " or m.startswith(('coalmine.train', 'coalmine.export'))]\n"
        "print(len(bad), s['pixels']['mine'])\n"
    )
    q = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert q.returncode == 0, q.stderr
    n_bad, mine = q.stdout.split()
    assert n_bad == "0" and int(mine) == json.loads(p.stdout)["pixels"]["mine"]
    # A refusal through the real process: exit 1, one line.
    r = subprocess.run([str(exe), str(tmp_path / "missing.tif"), "--bundle", str(bundle.path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "missing.tif" in r.stderr


@pytest.mark.realdata
def test_real_bigearthnet_raw_inputs_with_geopackage_aoi(realdata, tmp_path):
    # Real Sentinel-2 L2A band files + Sentinel-1 VV (dB) from BigEarthNet, preprocessed on the
    # fly by coal-run; an AOI GeoPackage in EPSG:4326 over the patch's west half.
    import rasterio
    from coalmine.runtime.areas import pixel_areas_ha
    from factories import write_gpkg
    from rasterio.warp import transform_geom

    ben = realdata / "bigearthnet"
    s2 = next(p for p in ben.glob("S2*_87_48") if p.is_dir())
    s1 = next(next(p for p in ben.glob("S1*_87_48") if p.is_dir()).glob("*_VV.tif"))
    bundle = make_tiny_bundle(tmp_path / "b", kind="conv", tile=64, overlap=16)
    with rasterio.open(next(s2.glob("*_B02.tif"))) as ref:
        crs, tr, w, h = ref.crs, ref.transform, ref.width, ref.height
    x0, y1 = tr @ (0, 0)
    x1, y0 = tr @ (w // 2, h)
    west = transform_geom(crs, "EPSG:4326", box(x0, y0, x1, y1, n=30))
    aoi = write_gpkg(tmp_path / "aoi.gpkg", [({"name": "west"}, west)])
    r = CliRunner().invoke(main, [str(s2), "--s1", str(s1), "-b", str(bundle.path), "-o", str(tmp_path / "o"),
                                  "--tile", "64", "--aoi", str(aoi), "-q", "--prefix", "ben"])
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    with rasterio.open(tmp_path / "o" / "ben_mask.tif") as ds:
        assert ds.crs == crs and ds.transform == tr
        m = ds.read(1)
    assert s["nodata_share"] < 0.01
    west_ha = float((m[:, : w // 2] == 1).sum()) * float(pixel_areas_ha(crs, tr, h, w)[0, 0])
    assert s["areas_ha"]["aois"]["west"] == pytest.approx(west_ha, rel=0.02)


def test_a_sentinel1_raster_given_as_the_scene_is_named_with_the_fix(tmp_path, setup):
    import numpy as np
    import rasterio
    from affine import Affine

    bundle, _ = setup
    vv = tmp_path / "vv_db.tif"
    with rasterio.open(vv, "w", driver="GTiff", width=64, height=64, count=1, dtype="float32",
                       crs="EPSG:32750", transform=Affine(10, 0, 300000, 0, -10, 9700000)) as ds:
        ds.write(np.full((1, 64, 64), -12.0, np.float32))
        ds.set_band_description(1, "VV")
    r = CliRunner().invoke(main, [str(vv), "-b", str(bundle.path), "-o", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == (f"coal-run: error: {vv} is a Sentinel-1 raster (one band VV), not a scene; give "
                                "the Sentinel-2 scene as SCENE and this file with --s1")
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []
