"""coal-monitor with a ``[source]`` on the local STAC catalogue (tests/stac_fixture.py):
fetch -> prepare -> run -> monitor report end to end, a catalogue that is down, the dry run,
and the refusals of a bad ``[source]``."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.runtime.bundle import Normalization
from coalmine.runtime.cli.fetch import main as fetch_cli
from coalmine.runtime.cli.monitor import main as monitor_cli
from coalmine.runtime.cli.prepare import main as prepare_cli
from coalmine.runtime.cli.run import main as run_cli
from factories import make_tiny_bundle

SOURCE = """\
title = "Fetched scenes"
bundle = "bundle"
aois = "aoi.geojson"
output = "out"

[run]
backend = "cpu"

[source]
catalog = "{url}"
start = 2023-01-01
end = 2023-12-31
since_last_run = true
{extra}
"""


@pytest.fixture
def cat(stac_catalogue):
    srv = stac_catalogue["srv"]
    srv.faults.clear()
    srv.reset_counts()
    srv.items = [stac_catalogue["scene"].pc_item, stac_catalogue["scene"].rtc_item]
    return stac_catalogue


def _project(root: Path, cat, url: str | None = None, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(cat["aoi"], root / "aoi.geojson")
    (root / "monitor.toml").write_text(SOURCE.format(url=url or cat["srv"].url, extra=extra))
    return root


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _ok(res) -> None:
    assert res.exit_code == 0, res.output


def _lines(res) -> list[str]:
    return [ln for ln in res.output.splitlines() if ln.strip()]


def test_fetch_prepare_run_then_the_monitor_maps_and_reports_the_fetched_scene(cat, tmp_path):
    root = _project(tmp_path / "p", cat)
    downloads = root / "out" / "downloads"  # the monitor's default [source] folder
    runner = CliRunner()
    # 1. coal-fetch, as a user would run it
    res = runner.invoke(fetch_cli, ["--aoi", str(root / "aoi.geojson"), "--start", "2023-01-01", "--end",
                                    "2023-12-31", "-o", str(downloads), "--catalog", cat["srv"].url, "-q"])
    _ok(res)
    s2, vv = (Path(p) for p in res.stdout.split())  # the new acquisitions on stdout
    assert s2.parent == downloads / "s2" and vv.parent == downloads / "s1" and vv.name.endswith("_VV.tif")
    # 2. coal-prepare on the fetched folder; a bundle whose normalisation centres this stack's
    #    bands, so the tiny linear model maps about half of the valid pixels as mine
    res = runner.invoke(prepare_cli, ["--s2", str(s2), "--s1", str(vv), "-o", str(tmp_path / "stack.tif"), "-q"])
    _ok(res)
    with rasterio.open(tmp_path / "stack.tif") as ds:
        stack = ds.read()
    assert np.isfinite(stack).all(axis=0).mean() > 0.9
    mean = tuple(float(np.nanmean(b)) for b in stack)
    std = tuple(float(np.nanstd(b)) or 1.0 for b in stack)
    make_tiny_bundle(root / "bundle", kind="linear", normalization=Normalization(mean=mean, std=std))
    # 3. coal-run on the stack
    res = runner.invoke(run_cli, [str(tmp_path / "stack.tif"), "-b", str(root / "bundle"), "-o",
                                  str(tmp_path / "run"), "--aoi", str(root / "aoi.geojson"), "--backend", "cpu", "-q"])
    _ok(res)
    (summary,) = (tmp_path / "run").glob("*_summary.json")
    run_ha = json.loads(summary.read_text())["areas_ha"]
    assert run_ha["total"] > 0
    # 4. coal-monitor with [source]: nothing new to fetch, the fetched scene is mapped
    cat["srv"].reset_counts()
    res = runner.invoke(monitor_cli, [str(root / "monitor.toml"), "-q"])
    _ok(res)
    assert _lines(res)[-1].startswith("coal-monitor: 0 acquisition(s) fetched, 1 new scene processed")
    assert cat["srv"].file_bytes() == 0
    con = sqlite3.connect(root / "out" / "ledger.sqlite")
    (path, status, total), = con.execute("SELECT path, status, total_ha FROM scenes").fetchall()
    areas = dict(con.execute("SELECT aoi, hectares FROM scene_areas").fetchall())
    con.close()
    assert Path(path) == s2 and status == "done"
    # the raw route (the monitor prepares on the fly) gives the stack route's hectares
    assert total == pytest.approx(run_ha["total"], abs=1e-9)
    assert areas["Pit"] == pytest.approx(run_ha["aois"]["Pit"], abs=1e-9) and areas["Pit"] > 0
    # the report lists the fetched acquisitions and their cloud cover
    html = (root / "out" / "report.html").read_text()
    assert "Fetched from the catalogue" in html and cat["scene"].pc_item["id"] in html
    rows = list(csv.DictReader(open(root / "out" / "reports" / "fetched.csv", newline="")))
    assert [(r["kind"], r["stac_id"], r["status"]) for r in rows] == [
        ("Sentinel-1", cat["scene"].rtc_item["id"], "fetched"),
        ("Sentinel-2", cat["scene"].pc_item["id"], "fetched")]
    assert float(rows[1]["cloud_cover_pct"]) == 12.5 and rows[1]["s1_id"] == cat["scene"].rtc_item["id"]
    assert 0 <= float(rows[1]["window_cloud_pct"]) <= 100
    # 5. the next timer run: nothing to fetch, nothing to map
    res = runner.invoke(monitor_cli, [str(root / "monitor.toml"), "-q"])
    _ok(res)
    assert "0 new scenes processed, 1 unchanged" in _lines(res)[-1]


def test_a_catalogue_that_is_down_leaves_the_monitor_mapping_what_it_has(cat, tmp_path):
    root = _project(tmp_path / "p", cat)
    make_tiny_bundle(root / "bundle", kind="linear")
    runner = CliRunner()
    res = runner.invoke(monitor_cli, [str(root / "monitor.toml"), "-q"])
    _ok(res)
    assert "1 acquisition(s) fetched, 1 new scene processed" in _lines(res)[-1]
    dead = _dead_url()
    (root / "monitor.toml").write_text(SOURCE.format(url=dead, extra="retries = 1\ntimeout = 2"))
    res = runner.invoke(monitor_cli, [str(root / "monitor.toml"), "-q"])
    assert res.exit_code == 69, res.output
    last = _lines(res)[-1]
    assert last.startswith(f"coal-monitor: fetch failed: the catalogue {dead} cannot be reached")
    assert "mapped what was there: 0 new scenes processed, 1 unchanged, 0 failed" in last
    html = (root / "out" / "report.html").read_text()
    assert "fetch failed: the catalogue" in html  # the report says the last fetch failed ...
    assert cat["scene"].pc_item["id"] in html  # ... and still lists what was fetched before


def test_dry_run_lists_what_would_be_fetched_and_writes_nothing(cat, tmp_path):
    root = _project(tmp_path / "p", cat)
    make_tiny_bundle(root / "bundle", kind="linear")
    res = CliRunner().invoke(monitor_cli, [str(root / "monitor.toml"), "--dry-run"])
    _ok(res)
    assert "dry run: 1 acquisition(s) to fetch; then 0 scene(s) to process" in res.output
    assert f"would fetch Sentinel-2 2023-07-15 (cloud 12 %): {cat['scene'].pc_item['id']}" in res.output
    assert not (root / "out" / "downloads").exists() and cat["srv"].file_bytes() == 0


@pytest.mark.parametrize(("extra", "catalog", "expect"), [
    ("colour = \"red\"", None, "unknown key 'source.colour'"),
    ("", "earthsearch", "source.catalog 'earthsearch' is neither a known catalogue"),
    ("s1 = \"none\"", None, "needs Sentinel-1 VV"),
    ("s1 = \"grd\"", "earth-search", "requester-pays S3 bucket and needs AWS credentials"),
    ("s1 = \"slc\"", None, "source.s1 'slc' is not one of rtc, grd, none"),
    ("max_cloud = 120", None, "source.max_cloud 120 must be a percentage"),
    ("token_env = \"COALMINE_NO_SUCH_TOKEN\"", None, "environment variable COALMINE_NO_SUCH_TOKEN"),
    ("", "planetary-computer", "environment variable PC_SDK_SUBSCRIPTION_KEY"),
    ("s1_catalog = \"planetary-computer\"", "earth-search", "environment variable PC_SDK_SUBSCRIPTION_KEY"),
    ("", "earth-search", "no Sentinel-1 RTC collection"),
])
def test_a_bad_source_table_is_refused_in_one_line(cat, tmp_path, monkeypatch, extra, catalog, expect):
    monkeypatch.delenv("PC_SDK_SUBSCRIPTION_KEY", raising=False)
    monkeypatch.delenv("COALMINE_NO_SUCH_TOKEN", raising=False)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    root = _project(tmp_path / "p", cat, url=catalog, extra=extra)
    make_tiny_bundle(root / "bundle", kind="linear")
    res = CliRunner().invoke(monitor_cli, [str(root / "monitor.toml"), "-q"])
    assert res.exit_code == 2
    (line,) = _lines(res)
    assert line.startswith(f"coal-monitor: error: {root / 'monitor.toml'}") and expect in line
    assert not (root / "out").exists()
