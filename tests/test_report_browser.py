"""The report in a real browser: headless Chromium renders ``report.html`` from the file
system with the network switched off, takes a screenshot, and every image on the page has
loaded (one self-contained file: data: URIs only, no script, nothing fetched).

Chromium is found as ``chromium`` / ``chromium-browser`` / ``google-chrome`` on the PATH (or
``COALMINE_CHROMIUM``); without it the test is skipped with that reason. To look at a report
yourself the same way::

    chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \\
        --window-size=1100,6000 --screenshot=report.png file://$PWD/out/report.html
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from coalmine.runtime.monitor import load_config, run_monitor
from test_monitor_data import make_mask_project, oracle_run_scene


def _chromium() -> str | None:
    for name in (os.environ.get("COALMINE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _shoot(browser: str, page, png, extra=()) -> subprocess.CompletedProcess:
    args = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network: a dead proxy
            "--window-size=1100,2400", f"--screenshot={png}", *extra, page.as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": str(png.parent)})


@pytest.mark.slow
def test_the_report_renders_offline_in_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium, or set COALMINE_CHROMIUM)")
    p = make_mask_project(tmp_path, years=range(2017, 2019))
    s = run_monitor(load_config(p["config"]), runner=oracle_run_scene)
    html = s.report.read_text(encoding="utf-8")
    # self-contained: every src and href is a data: URI or a fragment, no script
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("data:image/png;base64,", "data:image/jpeg;base64,", "#")) for r in refs)
    assert "<script" not in html.lower()
    shot = tmp_path / "report.png"
    r = _shoot(browser, s.report, shot)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    with rasterio.open(shot) as ds:
        img = ds.read()
    assert img.shape[1:] == (2400, 1100)
    # the page drew something beyond its background: text, tables and the inline images
    rgb = img[:3].reshape(3, -1).T
    colours = np.unique(rgb // 16, axis=0)
    assert len(colours) > 50
    # the images decoded: a page whose images are broken has no coloured map pixels; the maps'
    # grey background (#d9d9d6, no true-colour picture for masks) shows in the shot
    assert ((rgb[:, 0] == 0xD9) & (rgb[:, 1] == 0xD9) & (rgb[:, 2] == 0xD6)).sum() > 2000
