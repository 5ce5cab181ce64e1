"""No valid pixel is no data, never 0 ha: coal-run refuses an empty scene, reports each AOI's
valid share (hectares None where nothing was observed) and warns about implausible inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.runtime.aoi import Aoi
from coalmine.runtime.areas import mask_areas_ha
from coalmine.runtime.cli.run import main as run_main
from coalmine.runtime.errors import NoValidDataError
from coalmine.runtime.run import run_scene
from factories import DEFAULT_TRANSFORM, UTM50S, box, make_stack, make_tiny_bundle, write_stack
from rasterio.crs import CRS


@pytest.fixture
def bundle(tmp_path):
    return make_tiny_bundle(tmp_path / "bundle", kind="linear", bias=0.1, tile=64, overlap=16)


def _utm_box(c0, r0, c1, r1):
    """A rectangle in the test grid's pixel columns/rows, as EPSG:32750 coordinates."""
    x0, y0 = DEFAULT_TRANSFORM * (c0, r1)
    x1, y1 = DEFAULT_TRANSFORM * (c1, r0)
    return box(x0, y0, x1, y1)


def _mask(path, arr, transform=DEFAULT_TRANSFORM):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype="uint8", crs=UTM50S, transform=transform, nodata=255) as ds:
        ds.write(arr, 1)
    return path


def test_areas_give_no_figure_where_nothing_was_observed(tmp_path):
    m = np.ones((40, 60), np.uint8)
    m[:, 30:] = 255                                    # the eastern half is nodata
    p = _mask(tmp_path / "m.tif", m)
    aois = [
        Aoi("observed", _utm_box(0, 0, 20, 40), UTM50S),          # all valid: 20 x 40 px mined
        Aoi("cloud", _utm_box(35, 0, 55, 40), UTM50S),            # all nodata
        Aoi("half", _utm_box(20, 0, 40, 40), UTM50S),             # 10 valid of 20 columns
        Aoi("edge", _utm_box(-20, 0, 20, 40), UTM50S),            # half of it west of the raster
        Aoi("far", box(10.0, 50.0, 10.1, 50.1), CRS.from_epsg(4326)),
    ]
    r = mask_areas_ha(p, aois)
    assert r["aois"]["observed"] == pytest.approx(20 * 40 * 0.01)
    assert r["aoi_valid_share"]["observed"] == pytest.approx(1.0)
    assert r["aois"]["cloud"] is None and r["aoi_valid_share"]["cloud"] == 0.0
    assert r["aois"]["half"] == pytest.approx(10 * 40 * 0.01) and r["aoi_valid_share"]["half"] == pytest.approx(0.5)
    assert r["aoi_valid_share"]["edge"] == pytest.approx(0.5) and r["aois"]["edge"] == pytest.approx(8.0)
    assert r["aois"]["far"] is None and r["aoi_valid_share"]["far"] == 0.0
    assert any("'far' does not overlap" in w and "no data" in w for w in r["warnings"])
    assert r["valid_share"] == pytest.approx(0.5)
    empty = _mask(tmp_path / "e.tif", np.full((10, 10), 255, np.uint8))
    e = mask_areas_ha(empty, [])
    assert e["total"] is None and e["valid_share"] == 0.0


def test_run_refuses_a_scene_without_a_valid_pixel(tmp_path, bundle):
    scene = write_stack(tmp_path / "allnan.tif", np.full((23, 70, 80), np.nan, np.float32))
    out = tmp_path / "out"
    with pytest.raises(NoValidDataError, match="has no valid pixel"):
        run_scene(scene, bundle.path, out, tile=64, progress=False)
    assert not out.exists() or not list(out.iterdir())  # nothing half-written, nothing hidden
    r = CliRunner().invoke(run_main, [str(scene), "--bundle", str(bundle.path), "--out", str(out), "--tile", "64", "-q"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "allnan.tif has no valid pixel" in lines[0] and "Traceback" not in r.stderr
    assert r.stdout == "" and (not out.exists() or not list(out.iterdir()))


def test_summary_gives_each_aoi_its_valid_share(tmp_path, bundle):
    stack = make_stack(60, 80, seed=3)
    stack[:, :, 40:] = np.nan
    scene = write_stack(tmp_path / "scene.tif", stack)
    aois = [Aoi("west", _utm_box(0, 0, 40, 60), UTM50S), Aoi("east", _utm_box(40, 0, 80, 60), UTM50S)]
    s = run_scene(scene, bundle.path, tmp_path / "o", tile=64, aoi=aois, progress=False)
    assert s["aoi_valid_share"] == pytest.approx({"west": 1.0, "east": 0.0})
    assert s["areas_ha"]["aois"]["east"] is None and s["areas_ha"]["aois"]["west"] >= 0.0
    assert s["valid_share"] == pytest.approx(0.5)
    assert json.loads((tmp_path / "o" / "scene_summary.json").read_text())["aoi_valid_share"]["east"] == 0.0


def test_implausible_input_statistics_are_named(tmp_path, bundle):
    zeros = np.zeros((23, 64, 64), np.float32)
    s = run_scene(write_stack(tmp_path / "zeros.tif", zeros), bundle.path, tmp_path / "z", tile=64, progress=False)
    (w,) = [w for w in s["warnings"] if "implausible" in w]
    assert "B02" in w and "GLCM_correlation" in w and "constant" in w
    shifted = make_stack(64, 64, seed=4)
    shifted[12] = shifted[12] * 0.25 + 40.0          # VV far outside the training range
    s = run_scene(write_stack(tmp_path / "vv.tif", shifted), bundle.path, tmp_path / "v", tile=64, progress=False)
    (w,) = [w for w in s["warnings"] if "implausible" in w]
    assert "VV (mean" in w and "B02" not in w and "standard deviations" in w
    ok = run_scene(write_stack(tmp_path / "ok.tif", make_stack(64, 64, seed=5)), bundle.path, tmp_path / "k",
                   tile=64, progress=False)
    assert not [w for w in ok["warnings"] if "implausible" in w]
