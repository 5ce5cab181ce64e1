"""``coal-prepare`` with several acquisitions: the composite through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.runtime.cli.prepare import main
from coalmine.runtime.preprocess.composite import DEFAULT_DILATION
from coalmine.runtime.preprocess.prepare_composite import COMPOSITE_TAG, DEFAULT_MEMORY
from composite_factory import dn_for, write_s1, write_s2

H, W = 32, 40


def _acquisitions(root: Path, dates: list[str]) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    for k, d in enumerate(dates):
        scl = np.full((H, W), 4, np.uint8)
        scl[k * 6: k * 6 + 8, :] = 9  # a cloud band that moves down
        write_s2(root / "s2" / f"S2A_MSIL2A_{d}T022551_N0301", dn_for(0.05 + 0.3 * rng.random((9, H, W)), 0), scl)
        write_s1(root / "s1" / f"S1A_IW_{d}T221516_VV.tif", np.full((H, W), 0.02 * (k + 1), np.float32))
    return root / "s2", root / "s1"


def _run(args: list[str]) -> object:
    return CliRunner().invoke(main, [*args, "-q"], catch_exceptions=False)


def test_folders_and_a_period_make_a_composite(tmp_path: Path) -> None:
    s2, s1 = _acquisitions(tmp_path, ["20210110", "20210312", "20210520", "20220105"])
    out = tmp_path / "out" / "tapin_2021.tif"
    res = _run(["--s2", str(s2), "--s1", str(s1), "--start", "2021-01-01", "--end", "2021-12-31",
                "-o", str(out), "--dilation", "1"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(out)
    with rasterio.open(out) as ds:
        comp = json.loads(ds.tags()[COMPOSITE_TAG])
        assert comp["s2_acquisitions"] == 3 and comp["s1_acquisitions"] == 3 and comp["dilation_px"] == 1
        assert np.isfinite(ds.read(1)).all()  # the moving cloud left every pixel clear somewhere
    assert (tmp_path / "out" / "tapin_2021_quality.tif").is_file()


def test_repeated_options_and_patterns(tmp_path: Path) -> None:
    s2, s1 = _acquisitions(tmp_path, ["20210110", "20210312"])
    a, b = sorted(s2.iterdir())
    out = tmp_path / "c.tif"
    res = _run(["--s2", str(a), "--s2", str(b), "--s1", str(s1 / "S1A_*"), "-o", str(out), "--memory", "2G"])
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as ds:
        inputs = json.loads(ds.tags()["COALMINE_INPUTS"])
    assert [i["date"] for i in inputs["s2"]] == ["2021-01-10", "2021-03-12"]
    assert inputs["dilation_px"] == DEFAULT_DILATION


def test_one_acquisition_of_each_stays_a_single_scene(tmp_path: Path) -> None:
    s2, s1 = _acquisitions(tmp_path, ["20210110"])
    out = tmp_path / "one.tif"
    res = _run(["--s2", str(s2), "--s1", str(s1), "-o", str(out)])  # folders holding one acquisition each
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as ds:
        assert COMPOSITE_TAG not in ds.tags()
    assert not (tmp_path / "one_quality.tif").exists()


@pytest.mark.parametrize(("extra", "code", "message"), [
    (["--start", "2021-02-01", "--end", "2021-02-28"], 1, "no Sentinel-2 acquisition to composite in the period"),
    (["--scl", "auto"], 2, "--scl auto: a composite masks every acquisition with its own SCL; drop --scl"),
    (["--like", "x.tif", "--grid-from", "a.geojson"], 2, "give either --like or --grid-from, not both"),
    (["--crs", "EPSG:32750"], 2, "--crs sets the CRS of the --grid-from grid"),
    (["--memory", "lots"], 2, "--memory lots is not a size"),
    (["--memory", "100M"], 2, "--memory 0.1 GB cannot hold one 512 px block"),
    (["--start", "2021-13-01"], 2, "--start 2021-13-01 is not a date"),
])
def test_refusals_name_the_option_and_write_nothing(tmp_path: Path, extra: list[str], code: int, message: str) -> None:
    s2, s1 = _acquisitions(tmp_path, ["20210110", "20210312"])
    out = tmp_path / "out" / "c.tif"
    res = CliRunner().invoke(main, ["--s2", str(s2), "--s1", str(s1), "-o", str(out), "-q", *extra])
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("coal-prepare: error: ") and message in lines[0], res.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_help_quotes_the_defaults_of_the_code() -> None:
    text = CliRunner().invoke(main, ["--help"]).output
    assert f"[default: {DEFAULT_DILATION} ({DEFAULT_DILATION * 10} m)]" in " ".join(text.split())
    assert DEFAULT_MEMORY == 4 << 30 and "[default: 4G]" in text


def test_composite_through_a_real_process(tmp_path: Path) -> None:
    s2, s1 = _acquisitions(tmp_path, ["20210110", "20210312"])
    out = tmp_path / "c.tif"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "coalmine.runtime.cli.prepare", "--s2", str(s2 / "*"), "--s1",
                           str(s1), "-o", str(out), "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and out.is_file()
