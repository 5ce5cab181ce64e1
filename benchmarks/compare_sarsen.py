"""sarsen against coalmine's own Range-Doppler terrain correction: agreement, time, memory.

sarsen (with xarray-sentinel) is the maintained open implementation of Sentinel-1 terrain
correction; coalmine has its own (``coalmine.runtime.preprocess.s1grd``). This script is the
measurement behind that choice. On the real S1B IW GRDH annotation of ../shared/realdata with a
generated measurement (tests/grd_factory.py) and a DEM on a ``--size`` px UTM 10 m grid, it runs

* sarsen's ``terrain_correction`` (beta0, linear interpolation, no noise removal -- sarsen has
  none) in a subprocess of ``--sarsen-python`` (a Python where ``pip install sarsen`` was done;
  it is not a coalmine dependency), and
* coalmine's ``GrdReader`` on the same grid, once as beta0 without noise removal (to compare
  with sarsen) and once as the sigma0 it really produces,

and prints the time, peak RSS, the dB difference between the two beta0 images and the sub-pixel
shift that best aligns them, and both against the known field the measurement was made from.

Usage:
    python -m venv /tmp/sarsenv && /tmp/sarsenv/bin/pip install sarsen
    python benchmarks/compare_sarsen.py --sarsen-python /tmp/sarsenv/bin/python --size 1024
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from grd_factory import UTM, make_product, s2_grid_over, smooth_sigma0  # noqa: E402

REALDATA = REPO.parent / "shared" / "realdata"
CENTRE = (8050.0, 13050.0)

SARSEN = r"""
import resource, sys, time
t0 = time.perf_counter()
from sarsen import apps, sentinel1
t1 = time.perf_counter()
p = sentinel1.Sentinel1SarProduct(sys.argv[1], measurement_group="IW/VV")
apps.terrain_correction(p, dem_urlpath=sys.argv[2], output_urlpath=sys.argv[3],
                        interp_method="linear", chunks=1024)
print(t1 - t0, time.perf_counter() - t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sarsen-python", required=True, help="a Python with sarsen installed")
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    from coalmine.runtime.preprocess.s1grd import GrdReader
    from coalmine.runtime.preprocess.s1grd.annotation import parse_calibration
    from coalmine.runtime.preprocess.s1grd.radiometry import Radiometry

    tmp = Path(tempfile.mkdtemp(prefix="cmp_sarsen_"))
    try:
        n = args.size
        half = int(n * 0.7) + 50
        made = make_product(REALDATA, tmp, Window(int(CENTRE[1]) - half, int(CENTRE[0]) - half,
                                                 2 * half, 2 * half))
        grid = s2_grid_over(made.geo, *CENTRE, n)
        # A DEM equal to the processor's terrain surface, the one the measurement was made on,
        # so that the known field is the truth for a terrain-corrected result.
        flat = GrdReader(made.path, grid)
        line, pixel = flat.positions(grid.full)
        h = flat.grid_heights(line, pixel)
        flat.close()
        dem = tmp / "dem.tif"
        with rasterio.open(dem, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32",
                           crs=UTM, transform=grid.transform) as ds:
            ds.write(h.astype("float32"), 1)
        gtc = tmp / "gtc.tif"
        out = subprocess.run([args.sarsen_python, "-c", SARSEN, str(made.path), str(dem), str(gtc)],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"sarsen failed: {out.stderr[-2000:]}")
        s_import, s_time, s_rss = (float(x) for x in out.stdout.split()[-3:])
        with rasterio.open(gtc) as ds:
            s = ds.read(1).astype(np.float64)
            if ds.transform.e > 0:  # sarsen writes its output south-up
                s = s[::-1]

        t0 = time.perf_counter()
        r = GrdReader(made.path, grid, dem=dem, dem_vertical="ellipsoid")
        sigma0 = r.read_power(grid.full)
        c_time = time.perf_counter() - t0
        c_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        r.radiometry = Radiometry(parse_calibration(r.product.calibration, "calibration"), None,
                                  r.product.ipf, lut="betaNought")
        beta0 = r.read_power(grid.full).astype(np.float64)
        r.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ok = np.isfinite(beta0) & np.isfinite(s) & (s > 0)
    d = 10 * np.log10(beta0[ok]) - 10 * np.log10(s[ok])
    sdb = 10 * np.log10(np.where(ok, s, np.nan))
    gy, gx = np.gradient(sdb)
    m = ok & np.isfinite(gx) & np.isfinite(gy)
    shift = np.linalg.lstsq(np.c_[gx[m], gy[m]], (10 * np.log10(beta0) - sdb)[m], rcond=None)[0]
    T = grid.transform
    X, Y = np.meshgrid(T.c + T.a * (np.arange(n) + 0.5), T.f + T.e * (np.arange(n) + 0.5))
    truth_db = 10 * np.log10(smooth_sigma0(X, Y))
    e_sig = np.abs(10 * np.log10(sigma0) - truth_db)

    def shape_err(img: np.ndarray) -> float:  # beta0 = sigma0 / sin(incidence): offset removed
        e = 10 * np.log10(img) - truth_db
        return float(np.nanmedian(np.abs(e - np.nanmedian(e))))

    print(f"sarsen vs coalmine terrain correction, {n}x{n} px UTM 10 m grid with a DEM "
          f"(cpus={os.cpu_count()}, load avg {os.getloadavg()[0]:.1f})")
    print(f"{'':10} {'import s':>9} {'run s':>7} {'peak RSS MB':>12} {'|beta0 - truth| median dB':>26}")
    print(f"{'sarsen':10} {s_import:9.1f} {s_time:7.1f} {s_rss / 2**20:12.0f} {shape_err(s):26.3f}")
    print(f"{'coalmine':10} {'-':>9} {c_time:7.1f} {c_rss / 2**20:12.0f} {shape_err(beta0):26.3f}")
    print(f"time ratio sarsen/coalmine: {s_time / c_time:.1f}")
    print(f"beta0 coalmine - sarsen: median {np.median(d):+.4f} dB, p95 |d| "
          f"{np.percentile(np.abs(d), 95):.4f} dB, max |d| {np.abs(d).max():.4f} dB; best-fit "
          f"shift x {shift[0]:+.4f} px, y {shift[1]:+.4f} px")
    print(f"coalmine sigma0 (noise removed) vs the known field: median {np.nanmedian(e_sig):.3f} dB, "
          f"max {np.nanmax(e_sig):.3f} dB")


if __name__ == "__main__":
    main()
