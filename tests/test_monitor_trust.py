"""The monitor's numbers are right or absent: results are keyed by the model file that made
them (a new or re-exported model re-maps the scenes; the report names it per year), a version-1
ledger migrates cleanly, and a scene, year or AOI without enough valid pixels is "no data" —
never 0 ha, never −100 % — in the ledger, the CSV tables and the HTML report.

These runs use the real ``run_scene`` with a tiny linear ONNX model on small stacks (seconds).
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from html.parser import HTMLParser

import numpy as np
import pytest
from coalmine.runtime.monitor import load_config, run_monitor
from coalmine.runtime.monitor.ledger import SCHEMA_VERSION, Ledger
from factories import DEFAULT_TRANSFORM, make_stack, make_tiny_bundle, tiny_onnx, write_stack
from pyproj import Transformer

N = 64
YEARS = (2018, 2019, 2020, 2021)


def _aois(path):
    """West (columns 0-31) and East (32-63) halves of the test grid, in lon/lat."""
    tr = Transformer.from_crs("EPSG:32750", "EPSG:4326", always_xy=True)
    feats = []
    for name, (c0, c1) in (("West", (0, 32)), ("East", (32, 64))):
        x0, y1 = DEFAULT_TRANSFORM * (c0, 0)
        x1, y0 = DEFAULT_TRANSFORM * (c1, N)
        ring = [list(tr.transform(x, y)) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
        feats.append({"type": "Feature", "properties": {"name": name},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def _project(tmp_path, stacks, run="", extra=""):
    """Stacks named by year in ``incoming/``, the tiny bundle, AOIs and a configuration."""
    for year, stack in stacks.items():
        write_stack(tmp_path / "incoming" / f"S2_{year}0715_stack.tif", stack)
    bundle = make_tiny_bundle(tmp_path / "bundle", kind="linear", bias=0.1, tile=64, overlap=16)
    _aois(tmp_path / "aois.geojson")
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        'title = "Trust"\nbundle = "bundle"\naois = "aois.geojson"\noutput = "out"\n' + extra
        + '\n[run]\nbackend = "cpu"\ntile = 64\n' + run
        + '\n[[search]]\nfolder = "incoming"\nglob = "S2_*.tif"\ndate_format = "%Y%m%d"\n'
    )
    return cfg, bundle


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _scenes(root):
    con = sqlite3.connect(root / "out" / "ledger.sqlite")
    con.row_factory = sqlite3.Row
    rows = con.execute("SELECT * FROM scenes ORDER BY date").fetchall()
    con.close()
    return rows


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def _page_text(path):
    p = _Text()
    p.feed(path.read_text(encoding="utf-8"))
    return " ".join(" ".join(p.parts).split())


# -- which model made the numbers ------------------------------------------------------------------


@pytest.fixture
def plain(tmp_path):
    return _project(tmp_path, {y: make_stack(N, N, seed=y) for y in YEARS[:2]})


def test_an_int8_export_remaps_every_scene_and_the_report_names_it(tmp_path, plain):
    cfg, bundle = plain
    s = run_monitor(load_config(cfg))
    assert (s.processed, s.exit_code) == (2, 0)
    first = _scenes(tmp_path)
    assert {(r["model_file"], r["precision"], r["backend"]) for r in first} == {
        ("model.onnx", "fp32", "onnxruntime-cpu")}
    assert first[0]["model_sha256"] == hashlib.sha256((bundle.path / "model.onnx").read_bytes()).hexdigest()

    # coal-export --int8 adds model.int8.onnx; "auto" now runs it on the CPU
    tiny_onnx(bundle.path / "model.int8.onnx", kind="linear", bias=-0.3)
    s = run_monitor(load_config(cfg))
    assert (s.processed, s.unchanged) == (2, 0)          # nothing kept as "unchanged" from fp32
    assert s.reasons == {"model changed: model.int8.onnx added": 2}
    rows = _scenes(tmp_path)
    assert {(r["model_file"], r["precision"]) for r in rows} == {("model.int8.onnx", "int8")}
    # the other model really ran: the hectares moved with it
    assert [r["total_ha"] for r in rows] != [r["total_ha"] for r in first]
    details = _csv(tmp_path / "out" / "reports" / "yearly_details.csv")
    assert {d["models"] for d in details} == {"model.int8.onnx (int8)"}
    scenes_csv = _csv(tmp_path / "out" / "reports" / "scenes.csv")
    assert {(r["model_file"], r["precision"]) for r in scenes_csv} == {("model.int8.onnx", "int8")}
    text = _page_text(tmp_path / "out" / "report.html")
    assert "Model (precision) model.int8.onnx (int8) model.int8.onnx (int8)" in text
    assert "different model files" not in text
    # and a third run has nothing to do
    s = run_monitor(load_config(cfg))
    assert (s.processed, s.unchanged) == (0, 2)


def test_a_re_exported_model_remaps_and_an_unusable_one_does_not(tmp_path, plain):
    cfg, bundle = plain
    cfg.write_text(cfg.read_text().replace('tile = 64\n', 'tile = 64\nprecision = "fp32"\n'))
    run_monitor(load_config(cfg))
    tiny_onnx(bundle.path / "model.int8.onnx", kind="linear", bias=-0.3)
    s = run_monitor(load_config(cfg))                    # fp32 is configured: INT8 cannot be run
    assert (s.processed, s.unchanged) == (0, 2)
    tiny_onnx(bundle.path / "model.onnx", kind="linear", bias=0.4)   # model.onnx re-exported
    s = run_monitor(load_config(cfg))
    assert s.reasons == {"model changed: model.onnx re-exported": 2}


def test_a_change_of_run_options_remaps_every_scene(tmp_path, plain):
    cfg, _ = plain
    first = run_monitor(load_config(cfg))
    assert first.processed == 2
    before = [r["total_ha"] for r in _scenes(tmp_path)]
    cfg.write_text(cfg.read_text().replace("tile = 64\n", "tile = 64\nthreshold = 0.7\n"))
    s = run_monitor(load_config(cfg))
    assert (s.processed, s.unchanged) == (2, 0)
    assert s.reasons == {"bundle or run options changed": 2}
    after = _scenes(tmp_path)
    assert all(a < b for a, b in zip([r["total_ha"] for r in after], before, strict=True))  # fewer pixels pass 0.7
    assert {json.loads(r["options"])["threshold"] for r in after} == {0.7}


def test_a_mixed_series_is_named_in_the_report(tmp_path, plain):
    cfg, bundle = plain
    run_monitor(load_config(cfg))
    # a ledger where one year was mapped by another file (e.g. a cluster worker that chose
    # another backend): the report warns and names both
    con = sqlite3.connect(tmp_path / "out" / "ledger.sqlite")
    con.execute("UPDATE scenes SET model_file='model.fp16.onnx', precision='fp16', model_sha256='ab' "
                "WHERE date LIKE '2019%'")
    con.commit()
    con.close()
    from coalmine.runtime.monitor.layout import MonitorLayout
    from coalmine.runtime.monitor.reports import write_reports
    from coalmine.runtime.monitor.scheduler import read_config_aois
    from coalmine.runtime.monitor.yearly import update_years

    c = load_config(cfg)
    lay = MonitorLayout(c.output, c.ledger_path)
    with Ledger(lay.ledger) as led:
        keys = {r["key"] for r in led.scenes()}
        update_years(c, led, lay, keys, read_config_aois(c))
        write_reports(c, led, lay, keys, read_config_aois(c))
    text = _page_text(tmp_path / "out" / "report.html")
    assert "come from 2 different model files (model.fp16.onnx, model.onnx)" in text


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT NOT NULL, finished TEXT, pid INTEGER,
    host TEXT, status TEXT NOT NULL DEFAULT 'running', processed INTEGER DEFAULT 0, unchanged INTEGER DEFAULT 0,
    failed INTEGER DEFAULT 0, message TEXT);
CREATE TABLE scenes (key TEXT PRIMARY KEY, path TEXT NOT NULL, s1_path TEXT, date TEXT NOT NULL,
    year INTEGER NOT NULL, size INTEGER, mtime_ns INTEGER, nfiles INTEGER, sha256 TEXT, s1_size INTEGER,
    s1_mtime_ns INTEGER, s1_nfiles INTEGER, s1_sha256 TEXT, bundle_id TEXT, options TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')), token TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, run_id INTEGER, started TEXT, finished TEXT, seconds REAL, timings TEXT,
    outputs TEXT, total_ha REAL, nodata_share REAL, backend TEXT, error TEXT);
CREATE TABLE scene_areas (key TEXT NOT NULL REFERENCES scenes(key) ON DELETE CASCADE, aoi TEXT NOT NULL,
    hectares REAL NOT NULL, PRIMARY KEY (key, aoi));
CREATE TABLE years (year INTEGER PRIMARY KEY, rule TEXT NOT NULL, fingerprint TEXT NOT NULL,
    n_scenes INTEGER NOT NULL, composite TEXT NOT NULL, total_ha REAL NOT NULL, valid_share REAL,
    updated TEXT NOT NULL);
CREATE TABLE year_areas (year INTEGER NOT NULL REFERENCES years(year) ON DELETE CASCADE, aoi TEXT NOT NULL,
    hectares REAL NOT NULL, PRIMARY KEY (year, aoi));
CREATE TABLE changes (from_year INTEGER NOT NULL, to_year INTEGER NOT NULL, fingerprint TEXT NOT NULL,
    raster TEXT NOT NULL, stats TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (from_year, to_year));
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO runs(started, status, processed) VALUES ('2024-01-01T00:00:00+00:00', 'ok', 1);
INSERT INTO scenes(key, path, date, year, sha256, bundle_id, options, status, attempts, outputs, total_ha, backend)
    VALUES ('/x/a.tif', '/x/a.tif', '2019-07-15', 2019, 'aa', 'b1', '{}', 'done', 1,
            '{"folder": "scenes/a", "mask": "a_mask.tif"}', 12.5, 'onnxruntime-cpu');
INSERT INTO scene_areas VALUES ('/x/a.tif', 'West', 10.0), ('/x/a.tif', 'East', 2.5);
INSERT INTO years VALUES (2019, 'max_extent', 'fp', 1, 'yearly/mask_2019.tif', 12.5, 1.0, '2024-01-01');
INSERT INTO year_areas VALUES (2019, 'West', 10.0), (2019, 'East', 2.5);
"""


def test_a_version_1_ledger_is_migrated_with_its_rows(tmp_path):
    path = tmp_path / "ledger.sqlite"
    con = sqlite3.connect(path)
    con.executescript(V1_SCHEMA)
    con.close()
    with Ledger(path) as led:
        (row,) = led.scenes()
        assert (row["status"], row["total_ha"], row["backend"]) == ("done", 12.5, "onnxruntime-cpu")
        assert row["model_file"] is None and row["model_state"] is None and row["valid_share"] is None
        assert led.scene_areas("/x/a.tif") == {"East": 2.5, "West": 10.0}
        assert led.year_areas() == {2019: {"East": 2.5, "West": 10.0}}
        assert [r["status"] for r in led.runs()] == ["ok"]
        assert led.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        # the new constraints hold: a scene may now be 'nodata', an AOI figure may be absent
        led.conn.execute("UPDATE scenes SET status='nodata', total_ha=NULL")
        led.conn.execute("UPDATE year_areas SET hectares=NULL")
        assert led.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with Ledger(path) as led:  # opening again is a no-op
        assert len(led.scenes()) == 1


def test_scenes_of_a_version_1_ledger_are_remapped_once(tmp_path, plain):
    cfg, _ = plain
    run_monitor(load_config(cfg))
    con = sqlite3.connect(tmp_path / "out" / "ledger.sqlite")   # make it look like an old ledger
    con.execute("UPDATE scenes SET model_state=NULL, model_file=NULL, model_sha256=NULL, precision=NULL")
    con.commit()
    con.close()
    s = run_monitor(load_config(cfg))
    assert s.reasons == {"model not recorded (mapped before the ledger kept model files)": 2}
    assert run_monitor(load_config(cfg)).processed == 0


# -- no data is not 0 ha --------------------------------------------------------------------------


@pytest.fixture
def cloudy(tmp_path):
    """2018 clear; 2019 without a single valid pixel; 2020 with the East half under clouds;
    2021 with 70 % of the East half observed."""
    stacks = {y: make_stack(N, N, seed=y) for y in YEARS}
    stacks[2019][:] = np.nan
    stacks[2020][3, :, 32:] = np.nan
    stacks[2021][3, :, 32:42] = np.nan
    return _project(tmp_path, stacks)


def test_no_data_years_and_aois_have_no_figure(tmp_path, cloudy):
    cfg, _ = cloudy
    s = run_monitor(load_config(cfg))
    assert (s.processed, s.failed, s.exit_code, s.no_data) == (4, 0, 0, 1)
    assert "1 of the processed without a valid pixel: no data" in s.status_line()
    rows = {r["date"][:4]: r for r in _scenes(tmp_path)}
    assert rows["2019"]["status"] == "nodata" and rows["2019"]["total_ha"] is None
    assert "has no valid pixel" in rows["2019"]["error"]
    assert rows["2020"]["status"] == "done" and rows["2020"]["valid_share"] == pytest.approx(0.5)

    out = tmp_path / "out" / "reports"
    yearly = {r["year"]: r for r in _csv(out / "yearly_areas.csv")}
    assert set(yearly) == {"2018", "2019", "2020", "2021"}
    assert yearly["2019"] == {"year": "2019", "West": "", "East": "", "total_mapped_area": ""}
    assert yearly["2020"]["East"] == "" and float(yearly["2020"]["West"]) >= 0
    assert yearly["2020"]["total_mapped_area"] != ""    # half the extent observed: at the threshold, shown
    changes = {(r["area"], r["from_year"]): r for r in _csv(out / "changes.csv")}
    for area in ("West", "East", "Total mapped area"):
        assert changes[(area, "2018")]["change_ha"] == "" and changes[(area, "2018")]["change_pct"] == ""
        assert changes[(area, "2019")]["change_ha"] == ""
    assert changes[("East", "2020")]["change_ha"] == "" and changes[("West", "2020")]["change_ha"] != ""
    details = {(r["year"], r["area"]): r for r in _csv(out / "yearly_details.csv")}
    assert details[("2019", "West")]["coverage"] == "no data" and details[("2019", "West")]["hectares"] == ""
    assert details[("2021", "East")]["coverage"] == "partial"
    assert float(details[("2021", "East")]["valid_share"]) == pytest.approx(22 / 32)
    assert details[("2018", "East")]["coverage"] == "full"
    assert details[("2020", "Total mapped area")]["coverage"] == "partial"
    scenes = {r["date"][:4]: r for r in _csv(out / "scenes.csv")}
    assert scenes["2019"]["status"] == "no data" and scenes["2019"]["mined_ha"] == ""

    text = _page_text(tmp_path / "out" / "report.html")
    assert "-100" not in text and "−100" not in text
    # the 2019 column of the yearly table: no data in every row, never 0.0
    assert "West" in text and text.count("no data") >= 4


def test_partial_total_and_threshold_from_the_configuration(tmp_path, cloudy):
    cfg, _ = cloudy
    cfg.write_text(cfg.read_text().replace('output = "out"\n', 'output = "out"\nmin_valid_share = 0.8\n'))
    run_monitor(load_config(cfg))
    details = {(r["year"], r["area"]): r for r in _csv(tmp_path / "out" / "reports" / "yearly_details.csv")}
    # 69 % of East observed in 2021: below 0.8 now, so no figure
    assert details[("2021", "East")]["coverage"] == "no data" and details[("2021", "East")]["hectares"] == ""
    assert details[("2021", "West")]["coverage"] == "full"
    bad = cfg.read_text().replace("min_valid_share = 0.8", "min_valid_share = 0")
    cfg.write_text(bad)
    from coalmine.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="min_valid_share must lie in"):
        load_config(cfg)


def test_a_scene_that_turns_clear_replaces_its_no_data(tmp_path, cloudy):
    cfg, _ = cloudy
    run_monitor(load_config(cfg))
    scene = tmp_path / "incoming" / "S2_20190715_stack.tif"
    scene.unlink()
    write_stack(scene, make_stack(N, N, seed=2019))
    s = run_monitor(load_config(cfg))
    assert s.reasons.get("input changed") == 1 and s.no_data == 0
    yearly = {r["year"]: r for r in _csv(tmp_path / "out" / "reports" / "yearly_areas.csv")}
    assert yearly["2019"]["West"] != "" and yearly["2019"]["total_mapped_area"] != ""
