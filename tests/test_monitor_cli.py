"""coal-monitor through its CLI with the real run_scene (tiny ONNX bundle, synthetic raw
Sentinel-2 folders + Sentinel-1 files): status line and exit codes, areas against the masks,
crash-resume after SIGKILL in a real subprocess, and the lock against a concurrent run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import crash_points
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.runtime.cli.monitor import main
from coalmine.runtime.monitor import RunLock
from factories import make_tiny_bundle
from test_monitor_data import (
    PX_HA,
    expected_ha,
    ledger_state,
    report_tables,
    synth_config,
    write_aois,
)

CONFIG = synth_config()


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Three synthetic years (64 px) made once; each test copies them."""
    from coalmine.train.synth import make_series

    root = tmp_path_factory.mktemp("series")
    make_series(root / "series", range(2016, 2019), seed=5, size=64)
    return root / "series"


@pytest.fixture
def project(tmp_path, series):
    return _project(tmp_path / "p", series)


def _project(root: Path, series: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copytree(series, root / "series")
    make_tiny_bundle(root / "bundle", kind="linear")
    write_aois(root / "aois.geojson")
    (root / "monitor.toml").write_text(CONFIG)
    return root


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _state(root: Path):
    """Ledger and report content that must not depend on how the runs went (no timings)."""
    return ledger_state(root), report_tables(root, ("yearly_areas.csv", "changes.csv", "change_maps.csv"))


def test_cli_runs_then_does_nothing(project):
    runner = CliRunner()
    res = runner.invoke(main, [str(project / "monitor.toml"), "-q"])
    assert res.exit_code == 0, res.output
    line = res.stderr.strip().splitlines()[-1]
    assert line == f"coal-monitor: 3 new scenes processed, 0 unchanged, 0 failed; report: {project / 'out' / 'report.html'}"
    assert res.stdout == ""  # nothing on stdout: cron mails only what matters
    res = runner.invoke(main, [str(project / "monitor.toml"), "-q"])
    assert res.exit_code == 0
    assert "coal-monitor: 0 new scenes processed, 3 unchanged, 0 failed; report: " in res.stderr


def test_real_run_areas_match_the_predicted_masks(project):
    res = CliRunner().invoke(main, [str(project / "monitor.toml"), "-q"])
    assert res.exit_code == 0, res.output
    con = sqlite3.connect(project / "out" / "ledger.sqlite")
    yearly = {int(r["year"]): r for r in _csv(project / "out" / "reports" / "yearly_areas.csv")}
    assert sorted(yearly) == [2016, 2017, 2018]
    for key, outputs, s1 in con.execute("SELECT key, outputs, s1_path FROM scenes"):
        assert s1 and s1.endswith("_S1_VV_sigma0_linear.tif") and Path(key).name[6:10] in s1  # paired
        o = json.loads(outputs)
        with rasterio.open(project / "out" / o["folder"] / o["mask"]) as ds:
            mask = ds.read(1)
        want = expected_ha(mask)  # count the predicted mask's pixels directly
        year = int(Path(key).name[6:10])
        assert float(yearly[year]["total_mapped_area"]) == pytest.approx(want["total"], abs=PX_HA / 2)
        assert float(yearly[year]["West"]) == pytest.approx(want["West"], abs=PX_HA / 2)
        # the 64 px scenes see 4 % of East (it lies mostly beyond their edge): no data, not 0 ha
        assert yearly[year]["East"] == ""
        summary = json.loads((project / "out" / o["folder"] / o["summary"]).read_text())
        assert ".partial-" not in summary["outputs"]["mask"]  # points at the final folder
    assert (project / "out" / "change" / "change_2017_2018.tif").is_file()


def test_cli_bad_config_exit_2_one_line(project):
    (project / "bad.toml").write_text("colour = 'red'\n" + CONFIG)
    res = CliRunner().invoke(main, [str(project / "bad.toml")])
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"coal-monitor: error: {project / 'bad.toml'}: unknown key 'colour'; known keys: "
        "aoi_name_field, aois, bundle, cluster, composite, compositing, ledger, max_attempts, min_valid_share, "
        "output, run, scenes, search, source, title, yearly_rule"
    )
    res = CliRunner().invoke(main, [str(project / "missing.toml")])
    assert res.exit_code == 1 and "configuration file" in res.stderr and "does not exist" in res.stderr


def test_cli_lock_exit_75(project):
    with RunLock(project / "out"):
        res = CliRunner().invoke(main, [str(project / "monitor.toml")])
    assert res.exit_code == 75
    assert "another coal-monitor run (pid" in res.stderr and "holds the lock" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def _start(root: Path, pause: str | None, marker: Path | None = None) -> subprocess.Popen:
    """coal-monitor in a subprocess; with ``pause`` it stops at that crash point (crash_points)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COALMINE_CRASH")}
    code = "from coalmine.runtime.cli.monitor import main; main()"
    if pause:
        env.update(crash_points.env(pause, marker))
        code = crash_points.COORDINATOR
    return subprocess.Popen(
        [sys.executable, "-c", code, str(root / "monitor.toml"), "-q"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"monitor exited early: {proc.returncode} {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("monitor never reached the pause point")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_at_any_point_then_restart_equals_an_uninterrupted_run(tmp_path, series):
    ref = _project(tmp_path / "ref", series)
    p = _start(ref, None)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert err.strip().splitlines()[-1].startswith("coal-monitor: 3 new scenes processed")
    want = _state(ref)

    crashed = _project(tmp_path / "crash", series)
    # Kill inside scene work (before the runner), with the outputs complete under temporary names,
    # and after their rename but before the ledger transaction: the three distinct windows. Each
    # restart resumes where the previous one died (scene 2 of 3, then 2 of the 2 left, then the last).
    for phase in ("before_run:2", "before_rename:2", "before_commit:1"):
        marker = tmp_path / f"marker-{phase.replace(':', '-')}"
        proc = _start(crashed, phase, marker)
        _wait_for(marker, proc)
        if phase.startswith("before_run"):
            # meanwhile a second run is refused by the lock, with exit code 75 and a clear message
            second = _start(crashed, None)
            _, err2 = second.communicate(timeout=60)
            assert second.returncode == 75
            assert "another coal-monitor run" in err2 and f"pid {proc.pid}" in err2
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        con = sqlite3.connect(crashed / "out" / "ledger.sqlite")
        assert con.execute("SELECT count(*) FROM scenes WHERE status='running'").fetchone()[0] == 1
        con.close()
    proc = _start(crashed, None)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    got = _state(crashed)
    assert got == want
    # no temporary leftovers, and exactly one output folder per scene
    assert not [q for q in (crashed / "out").rglob(".*") if ".partial" in q.name or ".old-" in q.name]
    assert len(list((crashed / "out" / "scenes").iterdir())) == 3
    # nothing counted twice: one row of areas per scene and AOI
    con = sqlite3.connect(crashed / "out" / "ledger.sqlite")
    assert con.execute("SELECT count(*) FROM scene_areas").fetchone()[0] == 3 * 2
    attempts = [a for (a,) in con.execute("SELECT attempts FROM scenes")]
    assert len(attempts) == 3 and max(attempts) >= 2  # the killed scenes were really redone
