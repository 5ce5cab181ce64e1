"""The monitor's QGIS project: ``coalmine.qgs`` names every layer by a path relative to itself,
``mines.gpkg`` holds every year's mine polygons with the fields the temporal controller needs,
and — where QGIS's own Python bindings are installed — QGIS loads the project headless with
every layer valid, styled and timed as written, also after the folder has been moved.

The QGIS check runs ``tests/qgis_load.py`` with the Python that has the ``qgis`` package
(Debian/Ubuntu: ``apt-get install python3-qgis``, used by ``/usr/bin/python3``); without it the
check is skipped with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import rasterio
from coalmine.runtime.monitor import load_config, run_monitor
from scipy import ndimage
from test_monitor_data import make_mask_project, oracle_run_scene

HERE = Path(__file__).parent
QGIS_PYTHON = os.environ.get("COALMINE_QGIS_PYTHON", "/usr/bin/python3")


def _qgis_python() -> str | None:
    """The interpreter that imports qgis.core, or None."""
    if not Path(QGIS_PYTHON).is_file():
        return None
    r = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, timeout=60)
    return QGIS_PYTHON if r.returncode == 0 else None


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    root = tmp_path_factory.mktemp("qgis")
    p = make_mask_project(root, years=range(2016, 2019))
    run_monitor(load_config(p["config"]), runner=oracle_run_scene)
    return p


def _layers(qgs: Path) -> dict[str, ET.Element]:
    tree = ET.parse(qgs)
    return {ml.findtext("id"): ml for ml in tree.getroot().iter("maplayer")}


def test_project_layers_use_relative_paths_to_existing_files(monitored):
    out = monitored["root"] / "out"
    qgs = out / "coalmine.qgs"
    layers = _layers(qgs)
    assert set(layers) == {
        "coalmine_mines", "coalmine_aois",
        *(f"coalmine_mask_{y}" for y in (2016, 2017, 2018)),
        "coalmine_change_2016_2017", "coalmine_change_2017_2018",
    }  # the oracle's scenes are masks: no true-colour pictures
    for lid, ml in layers.items():
        src = ml.findtext("datasource")
        assert src.startswith(("./", "../")), (lid, src)
        assert (out / src.split("|")[0]).resolve().is_file(), (lid, src)
        assert len(lid) > 10  # QGIS replaces shorter ids, which would orphan the layer tree
    root = ET.parse(qgs).getroot()
    assert root.find("properties/Paths/Absolute").text == "false"
    assert root.find("projectCrs/spatialrefsys/authid").text == "EPSG:32750"
    change = layers["coalmine_change_2017_2018"]
    entries = {e.get("label"): e.get("color") for e in change.iter("paletteEntry")}
    assert entries == {"newly mined": "#d73027", "no longer mined": "#1a9850", "stable mine": "#5c3a21"}
    t = change.find("temporal/fixedRange")
    assert (t.findtext("start"), t.findtext("end")) == ("2018-01-01T00:00:00Z", "2019-01-01T00:00:00Z")


def test_mines_geopackage_holds_every_year_with_dates(monitored):
    import pyogrio

    out = monitored["root"] / "out"
    meta, _, wkb, values = pyogrio.raw.read(out / "mines.gpkg", layer="mines")
    fields = list(meta["fields"])
    assert fields == ["year", "date_start", "date_end", "area_ha", "valid_share", "model"]
    years = values[0]
    for y in (2016, 2017, 2018):
        with rasterio.open(out / "yearly" / f"mask_{y}.tif") as ds:
            mined = ds.read(1) == 1
        _, n = ndimage.label(mined)  # 4-connected pieces, as GDAL traces them
        assert (years == y).sum() == n
        sel = years == y
        assert values[3][sel].sum() == pytest.approx(mined.sum() * 0.01, rel=0.005)  # geodesic ≈ 10 m pixels
        assert str(values[1][sel][0])[:10] == f"{y}-01-01" and str(values[2][sel][0])[:10] == f"{y + 1}-01-01"
    info = pyogrio.read_info(out / "mines.gpkg", layer="mines")
    assert info["crs"] == "EPSG:32750" and info["geometry_type"] == "MultiPolygon"


def test_an_unchanged_series_keeps_its_geopackage(monitored):
    out = monitored["root"] / "out"
    before = (out / "mines.gpkg").stat().st_mtime_ns
    run_monitor(load_config(monitored["config"]), runner=oracle_run_scene)
    assert (out / "mines.gpkg").stat().st_mtime_ns == before


def _load(qgs: Path) -> dict:
    py = _qgis_python()
    if py is None:
        pytest.skip(f"QGIS's Python bindings are not importable by {QGIS_PYTHON} "
                    "(Debian/Ubuntu: apt-get install python3-qgis; or set COALMINE_QGIS_PYTHON)")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(qgs.parent)}
    r = subprocess.run([py, str(HERE / "qgis_load.py"), str(qgs)], capture_output=True, text=True, timeout=300,
                       env=env, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_qgis_opens_the_project_with_every_layer_valid(monitored, tmp_path):
    # moved elsewhere first: only relative paths can survive that
    moved = tmp_path / "copy"
    shutil.copytree(monitored["root"], moved)
    shutil.rmtree(monitored["root"] / "out" / "yearly")  # the original is gone for good measure
    try:
        got = _load(moved / "out" / "coalmine.qgs")
    finally:
        shutil.copytree(moved / "out" / "yearly", monitored["root"] / "out" / "yearly")
    assert got["read"] and got["crs"] == "EPSG:32750"
    assert got["messages"] == []
    by_id = {lay["id"]: lay for lay in got["layers"]}
    assert all(lay["valid"] for lay in got["layers"]), [lay["name"] for lay in got["layers"] if not lay["valid"]]
    assert all(str(moved) in lay["source"] for lay in got["layers"])
    mines = by_id["coalmine_mines"]
    assert mines["features"] > 0 and "year" in mines["fields"] and mines["temporal"]
    assert (mines["start_field"], mines["end_field"], mines["mode"]) == ("date_start", "date_end", 2)
    aois = by_id["coalmine_aois"]
    assert aois["labels"] and aois["features"] == 2
    mask = by_id["coalmine_mask_2018"]
    assert mask["renderer"] == "paletted" and mask["classes"] == {"1.0": ["mined", "#5c3a21", 170]}
    assert mask["range"] == ["2018-01-01", "2019-01-01"]
    change = by_id["coalmine_change_2016_2017"]
    assert change["renderer"] == "paletted" and set(change["classes"]) == {"1.0", "2.0", "3.0"}
    assert got["tree"][0].startswith("Mine outlines")
    assert got["qgis"] >= "3.22"
