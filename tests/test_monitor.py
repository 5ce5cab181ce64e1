"""coal-monitor library: config, ledger, yearly rules, change maps, reports, idempotence.

Areas are checked against pixel counts of masks made here (test_monitor_data), through an
"oracle" runner whose prediction is the scene's own mask; the real run_scene path is in
test_monitor_cli.py.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import sqlite3

import numpy as np
import pytest
import rasterio
from coalmine.runtime.errors import ConfigError, InputNotFoundError
from coalmine.runtime.monitor import LedgerLockedError, RunLock, load_config, run_monitor
from coalmine.runtime.monitor.change import classify
from coalmine.runtime.monitor.config import date_from_name, date_pattern, discover_scenes
from coalmine.runtime.monitor.ledger import fingerprint, hash_input
from coalmine.runtime.monitor.yearly import combine
from test_monitor_data import (
    PX_HA,
    expected_ha,
    make_mask_project,
    mine_mask,
    oracle_run_scene,
    write_aois,
    write_config,
    write_mask,
)

TOL = PX_HA / 2  # areas are pixel counts: anything within half a pixel is exact


@pytest.fixture
def project(tmp_path):
    return make_mask_project(tmp_path)


def _run(cfg_path, **kw):
    return run_monitor(load_config(cfg_path), runner=oracle_run_scene, **kw)


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _expected_years(project, rule="max_extent"):
    by_year: dict[int, list[np.ndarray]] = {}
    for name, m in sorted(project["masks"].items()):
        by_year.setdefault(int(name[3:7]), []).append(m)
    return {y: combine(np.stack(ms), rule) for y, ms in by_year.items()}


# -- yearly rules and change classes (hand-worked) ------------------------------------------------


def test_combine_rules_hand_worked():
    # three scenes, four pixels: [mine,mine,no], [mine,no,no], [nodata,mine,nodata], [nodata x3]
    m = np.array([[[1, 1, 255, 255]], [[1, 0, 1, 255]], [[0, 0, 255, 255]]], dtype=np.uint8)
    assert combine(m, "max_extent").tolist() == [[1, 1, 1, 255]]
    assert combine(m, "median").tolist() == [[1, 0, 1, 255]]    # 2/3, 1/3, 1/1
    assert combine(m, "majority").tolist() == [[1, 0, 1, 255]]
    two = m[:2]  # ties: 1 of 2 valid observations
    assert combine(two, "median").tolist() == [[1, 1, 1, 255]]
    assert combine(two, "majority").tolist() == [[1, 0, 1, 255]]
    assert combine(m, "latest").tolist() == [[0, 0, 1, 255]]
    with pytest.raises(ValueError, match="yearly rule 'mean' is unknown"):
        combine(m, "mean")


def test_change_classes():
    before = np.array([0, 0, 1, 1, 255, 0], dtype=np.uint8)
    after = np.array([0, 1, 0, 1, 1, 255], dtype=np.uint8)
    assert classify(before, after).tolist() == [0, 1, 2, 3, 255, 255]


# -- config ---------------------------------------------------------------------------------------


def test_date_patterns():
    assert date_from_name("S2A_MSIL2A_20190714T023551_N0213", date_pattern("%Y%m%d")) == dt.date(2019, 7, 14)
    assert date_from_name("tile_2020-03-05.tif", date_pattern("%Y-%m-%d")) == dt.date(2020, 3, 5)
    assert date_from_name("L_2021_200.tif", date_pattern("%Y_%j")) == dt.date(2021, 7, 19)
    rx = date_pattern(date_regex=r"mosaic_(?P<year>\d{4})")
    assert date_from_name("mosaic_2018_v2.tif", rx) == dt.date(2018, 7, 1)
    assert date_from_name("no_date_here.tif", date_pattern("%Y%m%d")) is None
    with pytest.raises(ConfigError, match="directive %Q is not supported"):
        date_pattern("%Y%Q")
    with pytest.raises(ConfigError, match=r"needs a named group \(\?P<year>"):
        date_pattern(date_regex=r"\d{4}")


def test_config_loads_and_discovers(project):
    cfg = load_config(project["config"])
    assert cfg.bundle == project["bundle"] and cfg.output == project["root"] / "out"
    scenes = discover_scenes(cfg)
    assert [s.date.isoformat() for s in scenes] == [
        "2016-07-15", "2017-07-15", "2017-09-10", "2018-07-15", "2019-07-15"]


def test_config_explicit_scenes_and_s1_pairing(tmp_path):
    make_mask_project(tmp_path, years=range(2016, 2017))
    s1 = tmp_path / "s1"
    s1.mkdir()
    for d in ("20160709", "20160722", "20161201"):
        (s1 / f"S1A_{d}_VV.tif").write_bytes(b"x")
    (tmp_path / "monitor.toml").write_text(
        'bundle = "bundle"\naois = "aois.geojson"\noutput = "out"\n'
        '[[scenes]]\npath = "incoming/S2_20160715_scene.tif"\ndate = 2016-07-15\ns1 = "s1/S1A_20161201_VV.tif"\n'
        '[[search]]\nfolder = "s1"\nglob = "S1A_2016070*"\ndate_format = "%Y%m%d"\n'
        's1_folder = "s1"\ns1_glob = "S1A_*_VV.tif"\ns1_max_days = 10\n'
    )
    scenes = {s.path.name: s for s in discover_scenes(load_config(tmp_path / "monitor.toml"))}
    assert scenes["S2_20160715_scene.tif"].s1 == s1 / "S1A_20161201_VV.tif"  # explicit pairing kept
    # the search scene 2016-07-09 pairs with the nearest S1 date: itself (0 days), not 07-22
    assert scenes["S1A_20160709_VV.tif"].s1 == s1 / "S1A_20160709_VV.tif"


@pytest.mark.parametrize(
    "text, error, message",
    [
        ('bundle="bundle"\naois="aois.geojson"\noutput="out"\nouptut="x"\n[[search]]\nfolder="incoming"\n'
         'date_format="%Y%m%d"\n', ConfigError, "unknown key 'ouptut'"),
        ('bundle="bundle"\naois="aois.geojson"\noutput="out"\n[run]\nbackend="cpu"\ntreshold=0.4\n'
         '[[search]]\nfolder="incoming"\ndate_format="%Y%m%d"\n', ConfigError, "unknown key 'run.treshold'"),
        ('bundle="bundle"\naois="aois.geojson"\noutput="out"\n[[scenes]]\npath="incoming/S2_20160715_scene.tif"\n'
         'date=2016-07-15\nsone="x"\n', ConfigError, "unknown key 'scenes[0].sone'"),
        ('bundle="nope"\naois="aois.geojson"\noutput="out"\n[[search]]\nfolder="incoming"\ndate_format="%Y%m%d"\n',
         InputNotFoundError, "bundle folder"),
        ('bundle="bundle"\naois="missing.geojson"\noutput="out"\n[[search]]\nfolder="incoming"\n'
         'date_format="%Y%m%d"\n', InputNotFoundError, "AOI file"),
        ('bundle="bundle"\naois="aois.geojson"\noutput="out"\n[[scenes]]\npath="incoming/gone.tif"\n'
         'date=2016-07-15\n', InputNotFoundError, "scenes[0].path"),
        ('bundle="bundle"\naois="aois.geojson"\noutput="out"\n', ConfigError, "no scenes"),
        ('aois="aois.geojson"\noutput="out"\n', ConfigError, "required key 'bundle' is missing"),
        ('bundle="bundle"\naois="aois.geojson"\noutput="out"\nyearly_rule="mean"\n[[search]]\n'
         'folder="incoming"\ndate_format="%Y%m%d"\n', ConfigError, "yearly_rule 'mean' is not one of"),
        ('bundle="bundle"\naois="aois.geojson"\noutput="out"\n[run]\ntile="big"\n[[search]]\n'
         'folder="incoming"\ndate_format="%Y%m%d"\n', ConfigError, "run.tile = 'big' must be a whole number"),
        ('bundle="bundle"\naois=\n', ConfigError, "is not valid TOML"),
        ('bundle="bundle"\naois="aois.geojson"\noutput="out"\n[[scenes]]\npath="incoming/S2_20160715_scene.tif"\n'
         'date="July"\n', ConfigError, "scenes[0].date 'July' is not a date"),
    ],
)
def test_config_refusals(project, text, error, message):
    path = project["root"] / "bad.toml"
    path.write_text(text)
    with pytest.raises(error) as ei:
        load_config(path)
    assert message in str(ei.value)
    assert str(path) in str(ei.value) or "bundle folder" in message  # names the config file
    assert "\n" not in str(ei.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(InputNotFoundError, match="configuration file .* does not exist"):
        load_config(tmp_path / "nope.toml")


def test_search_file_without_date_is_refused(project):
    write_mask(project["scenes"] / "S2_latest_scene.tif", mine_mask(2016))
    with pytest.raises(ConfigError, match="S2_latest_scene.tif matches glob 'S2_\\*.tif' but its name has no date"):
        discover_scenes(load_config(project["config"]))


@pytest.mark.parametrize("names, message", [((None, "East"), "without the name field 'name'"),
                                            (("", "East"), "has an empty 'name'")])
def test_aois_without_names_are_refused(project, names, message):
    write_aois(project["aois"], names)
    with pytest.raises(ConfigError) as ei:
        _run(project["config"])
    assert message in str(ei.value) and "aoi_name_field" in str(ei.value)
    assert not (project["root"] / "out" / "ledger.sqlite").exists() or not sqlite3.connect(
        project["root"] / "out" / "ledger.sqlite").execute("SELECT count(*) FROM scenes").fetchone()[0]


# -- the whole run on known masks -------------------------------------------------------------------


def test_yearly_areas_changes_and_rasters_match_the_masks(project):
    s = _run(project["config"])
    assert (s.processed, s.unchanged, s.failed, s.exit_code) == (5, 0, 0, 0)
    out = project["root"] / "out"
    expected = {y: expected_ha(m) for y, m in _expected_years(project).items()}
    rows = _csv(out / "reports" / "yearly_areas.csv")
    assert [int(r["year"]) for r in rows] == [2016, 2017, 2018, 2019]
    assert list(rows[0]) == ["year", "West", "East", "total_mapped_area"]  # AOI file order
    for r in rows:
        e = expected[int(r["year"])]
        assert float(r["West"]) == pytest.approx(e["West"], abs=TOL)
        assert float(r["East"]) == pytest.approx(e["East"], abs=TOL)
        assert float(r["total_mapped_area"]) == pytest.approx(e["total"], abs=TOL)
    # 2017 has two scenes: max extent is their union, more than either scene alone
    m17 = [m for n, m in project["masks"].items() if "2017" in n]
    assert expected[2017]["total"] > max(expected_ha(m)["total"] for m in m17)

    changes = _csv(out / "reports" / "changes.csv")
    for c in changes:
        y0, y1, area = int(c["from_year"]), int(c["to_year"]), c["area"]
        key = "total" if area == "Total mapped area" else area
        a, b = expected[y0][key], expected[y1][key]
        assert float(c["change_ha"]) == pytest.approx(b - a, abs=2 * TOL)
        assert float(c["change_pct"]) == pytest.approx(100 * (b - a) / a, abs=0.01)
    assert {(c["from_year"], c["to_year"]) for c in changes} == {("2016", "2017"), ("2017", "2018"), ("2018", "2019")}

    # composites and change rasters equal the NumPy truth pixel for pixel
    truth = _expected_years(project)
    for y, m in truth.items():
        with rasterio.open(out / "yearly" / f"mask_{y}.tif") as ds:
            np.testing.assert_array_equal(ds.read(1), m)
    with rasterio.open(out / "change" / "change_2016_2017.tif") as ds:
        got = ds.read(1)
        cmap = ds.colormap(1)
        assert ds.nodata == 255
        assert ds.overviews(1) or max(ds.shape) <= 512  # COG: overviews only when large enough
    np.testing.assert_array_equal(got, classify(truth[2016], truth[2017]))
    assert cmap[1][:3] == (215, 48, 39) and cmap[2][:3] == (26, 152, 80)
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(str(out / "change" / "change_2016_2017.tif"))[0]
    assert cog_validate(str(out / "yearly" / "mask_2019.tif"))[0]
    cm = _csv(out / "reports" / "change_maps.csv")[0]
    newly = ((truth[2016] == 0) & (truth[2017] == 1)).sum() * PX_HA
    assert float(cm["newly_mined_ha"]) == pytest.approx(newly, abs=TOL)


@pytest.mark.parametrize("rule", ["median", "majority", "latest"])
def test_other_yearly_rules(tmp_path, rule):
    p = make_mask_project(tmp_path, years=range(2017, 2018))
    write_config(p["config"], rule=rule)
    _run(p["config"])
    want = expected_ha(_expected_years(p, rule)[2017])
    row = _csv(tmp_path / "out" / "reports" / "yearly_areas.csv")[0]
    assert float(row["total_mapped_area"]) == pytest.approx(want["total"], abs=TOL)
    assert float(row["West"]) == pytest.approx(want["West"], abs=TOL)


def test_html_report_is_self_contained_and_has_the_values(project):
    s = _run(project["config"])
    page = s.report.read_text(encoding="utf-8")
    assert s.report == project["root"] / "out" / "report.html"
    # no external resources: every src/href is a data: URI, no http(s) or file links
    assert not re.search(r"https?://", page)
    assert "file:" not in page
    srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert srcs and all(u.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for u in srcs)
    assert "<script" not in page.lower()
    # the table values are in it
    for r in _csv(project["root"] / "out" / "reports" / "yearly_areas.csv"):
        assert f"{float(r['West']):,.1f}" in page and f"{float(r['total_mapped_area']):,.1f}" in page
    assert "Test region" in page and "maximum extent" in page
    assert page.count('alt="mine map') == 4 and page.count('alt="change') == 3


# -- idempotence, changes, failures, lock -----------------------------------------------------------


def _ledger_state(path):
    con = sqlite3.connect(path)
    scenes = con.execute(
        "SELECT key, status, sha256, total_ha, outputs FROM scenes ORDER BY key").fetchall()
    areas = con.execute("SELECT key, aoi, round(hectares, 6) FROM scene_areas ORDER BY key, aoi").fetchall()
    years = con.execute("SELECT year, fingerprint, round(total_ha, 6) FROM years ORDER BY year").fetchall()
    yareas = con.execute("SELECT year, aoi, round(hectares, 6) FROM year_areas ORDER BY year, aoi").fetchall()
    con.close()
    return scenes, areas, years, yareas


def test_second_run_processes_nothing(project, monkeypatch):
    _run(project["config"])
    out = project["root"] / "out"
    before = _ledger_state(out / "ledger.sqlite")
    comp = out / "yearly" / "mask_2018.tif"
    t_comp = comp.stat().st_mtime_ns
    import coalmine.runtime.monitor.ledger as ledger_mod

    calls = []
    monkeypatch.setattr(ledger_mod, "hash_input", lambda p, chunk=0: calls.append(p) or "x")
    s = _run(project["config"])
    assert (s.processed, s.unchanged, s.failed) == (0, 5, 0)
    assert calls == []  # the size+mtime pre-check avoided re-hashing unchanged inputs
    assert _ledger_state(out / "ledger.sqlite") == before
    assert comp.stat().st_mtime_ns == t_comp  # composites not rebuilt
    assert "0 new scenes processed, 5 unchanged, 0 failed; report: " in s.status_line()


def test_changed_input_is_reprocessed_and_touched_is_not(project):
    _run(project["config"])
    scene = project["scenes"] / "S2_20180715_scene.tif"
    st = scene.stat()
    os.utime(scene, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same content
    s = _run(project["config"])
    assert (s.processed, s.unchanged) == (0, 5)

    new = mine_mask(2018)
    new[0:50, 60:120] = 1  # much more mining in the East
    write_mask(scene, new)
    s = _run(project["config"])
    assert (s.processed, s.unchanged) == (1, 4)
    assert s.reasons["input changed"] == 1
    row = {int(r["year"]): r for r in _csv(project["root"] / "out" / "reports" / "yearly_areas.csv")}
    assert float(row[2018]["East"]) == pytest.approx(expected_ha(new)["East"], abs=TOL)
    con = sqlite3.connect(project["root"] / "out" / "ledger.sqlite")
    sha = con.execute("SELECT sha256 FROM scenes WHERE key=?", (str(scene),)).fetchone()[0]
    assert sha == hash_input(scene)
    # only one set of per-AOI rows for the scene: nothing counted twice
    assert con.execute("SELECT count(*) FROM scene_areas WHERE key=?", (str(scene),)).fetchone()[0] == 2


def test_new_scene_is_added_to_its_year(project):
    _run(project["config"])
    m = mine_mask(2019)
    m[100:115, 80:110] = 1
    write_mask(project["scenes"] / "S2_20191020_scene.tif", m)
    s = _run(project["config"])
    assert (s.processed, s.unchanged) == (1, 5)
    row = {int(r["year"]): r for r in _csv(project["root"] / "out" / "reports" / "yearly_areas.csv")}
    union = combine(np.stack([mine_mask(2019), m]), "max_extent")
    assert float(row[2019]["total_mapped_area"]) == pytest.approx(expected_ha(union)["total"], abs=TOL)


def test_failed_scene_is_recorded_and_retried_up_to_max_attempts(project):
    broken = write_mask(project["scenes"] / "S2_20200715_broken.tif", mine_mask(2020))
    write_config(project["config"], extra="max_attempts = 2")
    s = _run(project["config"])
    assert (s.processed, s.failed, s.exit_code) == (5, 1, 1)
    assert "not a raster" in s.failures[0][1]
    con = sqlite3.connect(project["root"] / "out" / "ledger.sqlite")
    status, err, attempts = con.execute(
        "SELECT status, error, attempts FROM scenes WHERE key=?", (str(broken),)).fetchone()
    assert status == "failed" and "not a raster" in err and attempts == 1
    assert "failed" in s.report.read_text() and "not a raster" in s.report.read_text()
    s = _run(project["config"])  # attempt 2 of 2
    assert (s.processed, s.failed) == (0, 1)
    s = _run(project["config"])  # given up: not retried, still reported
    assert (s.processed, s.failed, s.given_up, s.exit_code) == (0, 0, 1, 1)
    s = _run(project["config"], retry_failed=True)
    assert s.failed == 1
    assert not list((project["root"] / "out" / "scenes").glob(".*"))  # no partial folders left


def test_second_concurrent_run_is_refused_by_the_lock(project):
    out = project["root"] / "out"
    with RunLock(out):
        with pytest.raises(LedgerLockedError) as ei:
            _run(project["config"])
    msg = str(ei.value)
    assert "another coal-monitor run" in msg and f"pid {os.getpid()}" in msg and "holds the lock" in msg
    assert ei.value.exit_code == 75
    assert not (out / "ledger.sqlite").exists()  # refused before touching the ledger
    s = _run(project["config"])  # the lock is released
    assert s.processed == 5


def test_fingerprint_precheck(tmp_path):
    f = write_mask(tmp_path / "a.tif", mine_mask(2016))
    st = fingerprint(f)
    assert st.sha256 == hash_input(f)
    same = fingerprint(f, known=st.__class__(st.size, st.mtime_ns, st.nfiles, "cached"))
    assert same.sha256 == "cached"  # size+mtime unchanged: no re-hash
    folder = tmp_path / "safe"
    folder.mkdir()
    (folder / "B02.tif").write_bytes(b"abc")
    (folder / "B03.tif").write_bytes(b"def")
    h1 = hash_input(folder)
    (folder / "B03.tif").write_bytes(b"deg")
    assert hash_input(folder) != h1


def test_ledger_records_runs(project):
    _run(project["config"])
    _run(project["config"])
    con = sqlite3.connect(project["root"] / "out" / "ledger.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    runs = con.execute("SELECT status, processed, unchanged FROM runs ORDER BY id").fetchall()
    assert runs == [("ok", 5, 0), ("ok", 0, 5)]
    outputs = json.loads(con.execute("SELECT outputs FROM scenes LIMIT 1").fetchone()[0])
    assert (project["root"] / "out" / outputs["folder"] / outputs["mask"]).is_file()


def test_dry_run_writes_nothing(project):
    s = _run(project["config"], dry_run=True)
    assert s.reasons == {"new": 5} and s.processed == 0
    assert not (project["root"] / "out" / "report.html").exists()
    assert not list((project["root"] / "out").glob("scenes"))


def test_removed_years_leave_the_report(project):
    _run(project["config"])
    (project["scenes"] / "S2_20190715_scene.tif").unlink()
    _run(project["config"])
    years = [int(r["year"]) for r in _csv(project["root"] / "out" / "reports" / "yearly_areas.csv")]
    assert years == [2016, 2017, 2018]
