"""coal-monitor with ``compositing = "input"``: one composite per year from all its acquisitions,
mapped once; the ledger keys a year by the set of its inputs; a killed run resumes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import crash_points
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.runtime.cli.monitor import main
from coalmine.runtime.errors import ConfigError
from coalmine.runtime.monitor.config import load_config
from factories import make_tiny_bundle
from test_monitor_cli import _wait_for
from test_monitor_data import ledger_state, report_tables, write_aois

SIZE = 120  # the AOIs of test_monitor_data cover this grid exactly

CONFIG = """\
title = "Synthetic Tapin, composites"
bundle = "bundle"
aois = "aois.geojson"
output = "out"
compositing = "input"

[composite]
dilation = 1

[run]
backend = "cpu"

[[search]]
folder = "acq"
glob = "synth_*_S2"
date_format = "%Y-%m-%d"
s1_folder = "acq"
s1_glob = "synth_*_S1_VV*.tif"
"""


@pytest.fixture(scope="module")
def acquisitions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three clouded acquisitions in each of 2020 and 2021, made once."""
    from coalmine.train.synth import make_acquisitions

    root = tmp_path_factory.mktemp("acq")
    for year in (2020, 2021):
        make_acquisitions(root / "acq", year, 3, seed=5, size=SIZE, cloud_cover=(0.2, 0.4))
    return root / "acq"


def _project(root: Path, acquisitions: Path, config: str = CONFIG) -> Path:
    root.mkdir(parents=True)
    shutil.copytree(acquisitions, root / "acq")
    make_tiny_bundle(root / "bundle", kind="linear")
    write_aois(root / "aois.geojson")
    (root / "monitor.toml").write_text(config)
    return root


def _run(root: Path) -> tuple[int, str]:
    """Exit code and the status line (the last line on stderr)."""
    res = CliRunner().invoke(main, [str(root / "monitor.toml"), "-q"])
    lines = res.stderr.strip().splitlines()
    return res.exit_code, lines[-1] if lines else res.output


def _years(root: Path) -> dict[int, dict]:
    con = sqlite3.connect(root / "out" / "ledger.sqlite")
    con.row_factory = sqlite3.Row
    rows = {r["year"]: dict(r) for r in con.execute("SELECT * FROM years")}
    for r in rows.values():
        r["observations"] = json.loads(r["observations"])
    finished = dict(con.execute("SELECT year, finished FROM scenes").fetchall())
    con.close()
    for y, r in rows.items():
        r["finished"] = finished[y]
    return rows


def test_one_composite_per_year_and_only_the_changed_year_rebuilt(tmp_path: Path, acquisitions: Path) -> None:
    root = _project(tmp_path / "p", acquisitions)
    code, out = _run(root)
    assert code == 0, out
    assert out.startswith("coal-monitor: 2 new year composites processed, 0 unchanged, 0 failed")
    years = _years(root)
    assert sorted(years) == [2020, 2021]
    for y, r in years.items():
        folder = root / "out" / "composites" / str(y)
        assert (folder / f"composite_{y}.tif").is_file() and (folder / f"composite_{y}_quality.tif").is_file()
        assert r["rule"] == "input composite" and r["n_scenes"] == 3
        obs = r["observations"]
        assert obs["s2_acquisitions"] == 3 and obs["s1_acquisitions"] == 3
        assert obs["clear_observations"]["max"] <= 3
        # the yearly mask is the map of the composite, and its hectares are counted from it
        with rasterio.open(root / "out" / r["composite"]) as m:
            mine = m.read(1) == 1
        assert r["total_ha"] == pytest.approx(float(mine.sum()) * 0.01, abs=1e-6)
        with rasterio.open(folder / f"composite_{y}_quality.tif") as q:
            few = q.read(1) < 3
        share = obs["mapped_share_below"]
        assert share == (pytest.approx(float(few[mine].mean()), abs=1e-6) if mine.any() else None)
    assert "few clear observations" in (root / "out" / "report.html").read_text()
    # the maps' true-colour picture of a year is its composite's B04/B03/B02
    for y in years:
        with rasterio.open(root / "out" / "yearly" / f"truecolour_{y}.tif") as pic:
            assert pic.count == 3 and pic.tags()["COALMINE_SOURCE"] == f"composite_{y}.tif"
            assert pic.read(1).any()

    code, out = _run(root)  # nothing new: nothing rebuilt
    assert code == 0 and "0 new year composites processed, 2 unchanged" in out

    # a new acquisition of 2021 rebuilds 2021 only
    from coalmine.train.synth import make_scene

    make_scene(root / "acq", 2021, seed=5, size=SIZE, date="2021-12-20", prefix="synth_2021-12-20",
               cloud_cover=0.1)
    code, out = _run(root)
    assert code == 0 and "1 new year composite processed, 1 unchanged" in out, out
    after = _years(root)
    assert after[2020]["finished"] == years[2020]["finished"]
    assert after[2021]["finished"] != years[2021]["finished"]
    assert after[2021]["observations"]["s2_acquisitions"] == 4


def test_the_grid_is_the_aois_extent_not_the_first_scene(tmp_path: Path, acquisitions: Path) -> None:
    from pyproj import Transformer
    from test_monitor_data import ORIGIN

    root = _project(tmp_path / "p", acquisitions)
    # an AOI reaching 50 px further east than the acquisitions: the composite covers it all,
    # and where no acquisition reaches it is nodata
    tr = Transformer.from_crs("EPSG:32750", "EPSG:4326", always_xy=True)
    x0, x1, y0, y1 = ORIGIN[0], ORIGIN[0] + (SIZE + 50) * 10.0, ORIGIN[1] - SIZE * 10.0, ORIGIN[1]
    ring = [list(tr.transform(x, y)) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
    (root / "aois.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Wide"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    code, out = _run(root)
    assert code == 0, out
    with rasterio.open(root / "out" / "composites" / "2020" / "composite_2020.tif") as ds:
        assert ds.width > SIZE + 30
        valid = np.isfinite(ds.read(1))
    assert valid[:, :SIZE - 10].mean() > 0.8 and not valid[:, SIZE + 10:].any()


@pytest.mark.parametrize(("extra", "message"), [
    ('yearly_rule = "median"\n', "yearly_rule combines scene masks"),
    ('[composite]\ndilation = 1\n', None),
])
def test_config_refusals(tmp_path: Path, acquisitions: Path, extra: str, message: str | None) -> None:
    if message is None:  # [composite] without compositing = "input"
        cfg = CONFIG.replace('compositing = "input"\n', "").replace("[composite]\ndilation = 1\n", extra)
        message = '[composite] applies to compositing = "input"'
    else:
        cfg = CONFIG.replace('compositing = "input"\n', f'compositing = "input"\n{extra}')
    root = _project(tmp_path / "p", acquisitions, cfg)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(root / "monitor.toml")
    bad = CONFIG.replace("dilation = 1", "dilation = 500")
    (root / "monitor.toml").write_text(bad)
    with pytest.raises(ConfigError, match="composite.dilation = 500 must be"):
        load_config(root / "monitor.toml")


def _state(root: Path) -> tuple:
    """Ledger and report content that must not depend on how the runs went. The years'
    fingerprints cover their inputs' absolute paths, which differ between two project folders."""
    scenes, *rest = ledger_state(root)
    return [s[:2] + s[3:] for s in scenes], *rest, report_tables(root)


def _start(root: Path, pause: str | None, marker: Path | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COALMINE_CRASH")}
    code = "from coalmine.runtime.cli.monitor import main; main()"
    if pause:
        env.update(crash_points.env(pause, marker))
        code = crash_points.COORDINATOR
    return subprocess.Popen([sys.executable, "-c", code, str(root / "monitor.toml"), "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_double_counting(tmp_path: Path, acquisitions: Path) -> None:
    ref = _project(tmp_path / "ref", acquisitions)
    assert _run(ref)[0] == 0
    want = _state(ref)

    crashed = _project(tmp_path / "crash", acquisitions)
    for phase in ("before_run:2", "before_commit:1"):  # inside the 2nd year; after the rename, before commit
        marker = tmp_path / f"marker-{phase.replace(':', '-')}"
        proc = _start(crashed, phase, marker)
        _wait_for(marker, proc, timeout=300)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        con = sqlite3.connect(crashed / "out" / "ledger.sqlite")
        assert con.execute("SELECT count(*) FROM scenes WHERE status='running'").fetchone()[0] == 1
        con.close()
    assert _run(crashed)[0] == 0
    assert _state(crashed) == want
    con = sqlite3.connect(crashed / "out" / "ledger.sqlite")
    assert con.execute("SELECT count(*) FROM scene_areas").fetchone()[0] == 2 * 2  # two years, two AOIs
    assert max(a for (a,) in con.execute("SELECT attempts FROM scenes")) >= 2
    con.close()
    assert not [q for q in (crashed / "out").rglob(".*") if ".partial" in q.name or ".old-" in q.name]


@pytest.mark.slow
def test_on_dask_a_year_is_one_task(tmp_path: Path, acquisitions: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="the cluster extra (dask, distributed) is not installed")
    local = _project(tmp_path / "local", acquisitions)
    assert _run(local)[0] == 0
    dask = _project(tmp_path / "dask", acquisitions)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \
            distributed.Client(lc.scheduler_address) as c, distributed.get_task_stream(client=c) as ts:
        res = CliRunner().invoke(main, [str(dask / "monitor.toml"), "-q", "--scheduler", lc.scheduler_address])
    assert res.exit_code == 0, res.output
    ran = sorted(str(t["key"]) for t in ts.data if str(t["key"]).startswith("coal-"))
    assert len(ran) == 2 and all(k.startswith("coal-scene-composite_20") for k in ran), ran
    assert _state(dask) == _state(local)


@pytest.mark.slow
def test_a_year_without_a_clear_pixel_is_no_data_and_a_new_model_remaps_every_year(
        tmp_path: Path, acquisitions: Path) -> None:
    from coalmine.runtime.monitor import run_monitor
    from factories import tiny_onnx

    root = _project(tmp_path / "p", acquisitions)
    for scl in (root / "acq").glob("synth_2021-*_S2/*_SCL_*.tif"):  # 2021 clouded all year
        with rasterio.open(scl, "r+") as ds:
            ds.write(np.full((ds.height, ds.width), 9, np.uint8), 1)
    s = run_monitor(load_config(root / "monitor.toml"))
    assert (s.processed, s.failed) == (2, 0)
    years = _years(root)
    # no clear observation: 2021 has no hectares and no composite, never 0 ha
    assert years[2021]["total_ha"] is None and years[2021]["composite"] is None
    assert years[2020]["total_ha"] is not None and years[2020]["total_ha"] > 0
    con = sqlite3.connect(root / "out" / "ledger.sqlite")
    status = dict(con.execute("SELECT year, status FROM scenes").fetchall())
    assert status == {2020: "done", 2021: "nodata"}
    assert con.execute("SELECT count(*) FROM scene_areas WHERE key = 'composite:2021'").fetchone()[0] == 0
    con.close()
    assert not (root / "out" / "yearly" / "mask_2021.tif").exists()

    # coal-export --int8 adds a model "auto" runs on the CPU: every year is composited and mapped again
    tiny_onnx(root / "bundle" / "model.int8.onnx", kind="linear", bias=-0.3)
    s = run_monitor(load_config(root / "monitor.toml"))
    assert s.reasons == {"model changed: model.int8.onnx added": 2}
    con = sqlite3.connect(root / "out" / "ledger.sqlite")
    ran = dict(con.execute("SELECT year, model_file FROM scenes WHERE status = 'done'").fetchall())
    con.close()
    assert ran == {2020: "model.int8.onnx"}
    after = _years(root)
    assert after[2021]["total_ha"] is None  # (finish times have whole seconds: the model file tells the re-run)
    assert json.loads(after[2020]["models"])[0]["file"] == "model.int8.onnx"
    assert (s.processed, s.unchanged) == (2, 0)
    assert run_monitor(load_config(root / "monitor.toml")).unchanged == 2
