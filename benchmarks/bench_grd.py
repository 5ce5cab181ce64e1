"""Benchmark Sentinel-1 input paths onto a full Sentinel-2 tile: GRD product vs calibrated GeoTIFF.

What ``coal-prepare`` does with the S1 input, for every block of a 10980 x 10980 px Sentinel-2
grid (1024 px blocks read with the stack's 15 px halo): resample sigma0 onto the block, Lee
filter, dB. Three inputs, each run in its own subprocess (wall time; CPU time; peak RSS polled with
psutil and the child's own VmHWM):

* ``geotiff`` -- the baseline: sigma0 already calibrated and terrain-corrected (as SNAP, GEE or
  ASF deliver it), a float32 GeoTIFF in UTM on a 10 m grid shifted against Sentinel-2;
* ``grd`` -- an IW GRDH product (the real annotation, calibration and noise XML of
  ../shared/realdata with a generated measurement): noise removal, calibration, Range-Doppler
  geocoding on the geolocation grid's heights;
* ``grd+dem`` -- the same with a 30 m DEM (terrain correction).

Each runs at the full tile and at a quarter of its area (half the side) to show that memory does
not grow with the scene. Ratios are against ``geotiff`` at the same size, measured in the same
run.

With ``--prepare`` the three inputs also go through the whole of ``coal-prepare`` (a synthetic
Sentinel-2 L2A multi-band tile on the same grid; ``bench_prepare.run_prepare``), which answers
how much a GRD product adds to preparing a scene.

Usage:
    python benchmarks/bench_grd.py                 # 10980 px and 5490 px grids
    python benchmarks/bench_grd.py --size 4096
    python benchmarks/bench_grd.py --prepare       # also full coal-prepare runs at --size
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
from affine import Affine
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from grd_factory import SAFE_NAME, UTM, Geo, make_product, real_safe  # noqa: E402

REALDATA = REPO.parent / "shared" / "realdata"
CENTRE = (8300.0, 13050.0)  # image line/pixel the grids are centred on
HALO = 15


def make_grd(out: Path, geo: Geo, size: int, seed: int = 3) -> Path:
    """A GRD product whose measurement covers a ``size`` px S2 grid around CENTRE (plus margin)."""
    from coalmine.runtime.preprocess.s1grd.annotation import parse_calibration, parse_noise
    from coalmine.runtime.preprocess.s1grd.radiometry import Radiometry

    made = make_product(REALDATA, out, Window(0, 0, 1, 1))  # XML + an empty sparse raster
    half = int(size * 0.66) + 64  # a rotated square needs about size * (cos + sin) / 2
    r0, r1 = max(0, int(CENTRE[0]) - half), min(16705, int(CENTRE[0]) + half)
    c0, c1 = max(0, int(CENTRE[1]) - half), min(26102, int(CENTRE[1]) + half)
    stem = next((made.path / "annotation").glob("s1b-*.xml")).stem
    cal = parse_calibration((made.path / f"annotation/calibration/calibration-{stem}.xml").read_bytes(), "c")
    noise = parse_noise((made.path / f"annotation/calibration/noise-{stem}.xml").read_bytes(), "n")
    rad = Radiometry(cal, noise, 3.40)
    meas = next((made.path / "measurement").glob("*.tiff"))
    rng = np.random.default_rng(seed)
    cols = np.arange(c0, c1, dtype=np.float64)
    with rasterio.open(meas, "r+") as ds:
        for r in range(r0, r1, 512):
            rows = np.arange(r, min(r + 512, r1), dtype=np.float64)
            L, P = np.meshgrid(rows, cols, indexing="ij")
            s0 = 10 ** ((-12 + 5 * np.sin(L / 300.0) * np.cos(P / 400.0)) / 10)
            s0 = s0 * rng.gamma(4.4, 1 / 4.4, size=s0.shape)
            from coalmine.runtime.preprocess.s1grd.radiometry import lut_window

            A = lut_window(rad.cal, rows, cols)
            dn = np.sqrt(s0 * A * A + rad.noise_window(rows, cols))
            ds.write(np.clip(np.rint(dn), 1, 65534).astype(np.uint16), 1,
                     window=Window(c0, r, c1 - c0, rows.size))
    return made.path


def s2_transform(geo: Geo, size: int) -> Affine:
    x, y = geo.utm(np.array([CENTRE[0]]), np.array([CENTRE[1]]))
    x0 = np.floor(x[0] / 10) * 10 - size * 5
    y0 = np.floor(y[0] / 10) * 10 + size * 5
    return Affine(10, 0, x0, 0, -10, y0)


def make_geotiff(path: Path, t: Affine, size: int, seed: int = 4) -> None:
    """Calibrated sigma0 (linear) on a 10 m UTM grid shifted by 3.7 / 6.2 m, covering the S2 grid."""
    rng = np.random.default_rng(seed)
    n = size + 40
    tt = Affine(10, 0, t.c - 200 + 3.7, 0, -10, t.f + 200 - 6.2)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32",
                       crs=UTM, transform=tt, tiled=True, blockxsize=512, blockysize=512,
                       compress="zstd", nodata=float("nan")) as ds:
        for r in range(0, n, 512):
            h = min(512, n - r)
            rr, cc = np.meshgrid(np.arange(r, r + h), np.arange(n), indexing="ij")
            s0 = 10 ** ((-12 + 5 * np.sin(rr / 300.0) * np.cos(cc / 400.0)) / 10)
            ds.write((s0 * rng.gamma(4.4, 1 / 4.4, size=s0.shape)).astype("float32"), 1,
                     window=Window(0, r, n, h))


def make_dem(path: Path, t: Affine, size: int) -> None:
    """A 30 m DEM of rolling hills (0..600 m) with a few 150 m pits, covering the S2 grid."""
    n = size // 3 + 40
    x0, y0 = t.c - 600, t.f + 600
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    h = 300 + 300 * np.sin(xx / 90.0) * np.cos(yy / 130.0)
    for cy, cx in ((n * 0.3, n * 0.4), (n * 0.6, n * 0.7), (n * 0.8, n * 0.2)):
        h -= 150 * (((xx - cx) ** 2 + (yy - cy) ** 2) < (n * 0.03) ** 2)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32",
                       crs=UTM, transform=Affine(30, 0, x0, 0, -30, y0), tiled=True,
                       blockxsize=512, blockysize=512, compress="zstd") as ds:
        ds.write(h.astype("float32"), 1)


CHILD = r"""
import sys, time
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from coalmine.runtime.raster import Grid
from coalmine.runtime.tiling import block_grid
from coalmine.runtime.preprocess.speckle import lee_filter, power_to_db
mode, path, dem, size, a, c, e, f = sys.argv[1:9]
size = int(size)
grid = Grid(CRS.from_string("EPSG:32633"), Affine(float(a), 0, float(c), 0, float(e), float(f)), size, size)
t0 = time.perf_counter()
if mode == "geotiff":
    from coalmine.runtime.preprocess.s1 import S1Reader
    r = S1Reader(path, grid)
else:
    from coalmine.runtime.preprocess.s1grd import GrdReader
    r = GrdReader(path, grid, dem=dem if mode == "grd+dem" else None, dem_vertical="ellipsoid")
valid = 0
for w in (b.core for b in block_grid(size, size, block=1024, halo=0)):
    region = grid.expand(w, 15)
    vv = power_to_db(lee_filter(r.read_power(region), 5))
    ro, co = w.row_off - region.row_off, w.col_off - region.col_off
    valid += int(np.isfinite(vv[ro:ro + w.height, co:co + w.width]).sum())
r.close()
hwm = [int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmHWM")]
print(time.perf_counter() - t0, valid, hwm[0] if hwm else 0)
"""


def run(mode: str, path: Path, dem: Path | None, size: int, t: Affine) -> dict:
    cmd = [sys.executable, "-c", CHILD, mode, str(path), str(dem), str(size),
           repr(t.a), repr(t.c), repr(t.e), repr(t.f)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while True:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            pass
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{mode} failed: {err[-2000:]}")
    inner, valid, hwm = out.split()
    # wait4's ru_maxrss would include the pages the child shared with this (large) parent
    # before exec; the child's own VmHWM and the polled RSS do not
    return {"mode": mode, "size": size, "wall": wall, "inner": float(inner), "valid": int(valid),
            "cpu": ru.ru_utime + ru.ru_stime, "peak": max(peak, int(hwm))}


def make_s2(path: Path, t: Affine, size: int, seed: int = 5) -> None:
    """A Sentinel-2 L2A multi-band tile (9 bands, uint16, ZSTD tiles) on the S2 grid."""
    rng = np.random.default_rng(seed)
    bands = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=len(bands),
                       dtype="uint16", crs=UTM, transform=t, nodata=0, tiled=True, blockxsize=512,
                       blockysize=512, compress="zstd", interleave="band") as ds:
        for r in range(0, size, 512):
            h = min(512, size - r)
            yy, xx = np.mgrid[r:r + h, 0:size]
            base = 1200 + 600 * np.sin(xx / 170.0) * np.cos(yy / 230.0)
            for i in range(1, len(bands) + 1):
                a = base * (0.6 + 0.1 * i) + rng.normal(0, 40, size=base.shape)
                ds.write(np.clip(a, 1, 10000).astype("uint16"), i, window=Window(0, r, size, h))
        for i, b in enumerate(bands, start=1):
            ds.set_band_description(i, b)
        ds.update_tags(BOA_ADD_OFFSET="0", PROCESSING_BASELINE="05.09", PRODUCT_TYPE="S2MSI2A")


def prepare_runs(tmp: Path, grd: Path, geo: Geo, size: int) -> list[dict]:
    """coal-prepare with each S1 input on the same S2 tile (bench_prepare's subprocess runner)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_prepare import run_prepare

    tr = s2_transform(geo, size)
    s2, tif, dem = tmp / "s2.tif", tmp / f"sigma0_{size}.tif", tmp / f"dem_{size}.tif"
    make_s2(s2, tr, size)
    if not tif.exists():
        make_geotiff(tif, tr, size)
        make_dem(dem, tr, size)
    rows = []
    for mode, s1, extra in (("geotiff", tif, []), ("grd", grd, []),
                            ("grd+dem", grd, ["--dem", str(dem)])):
        out = tmp / f"scene_{mode.replace('+', '_')}.tif"
        r = run_prepare(s2, s1, out, 1024, extra=extra)
        r["mode"] = mode
        rows.append(r)
        out.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980, help="S2 grid side in 10 m pixels")
    ap.add_argument("--prepare", action="store_true", help="also run coal-prepare end to end")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not real_safe(REALDATA).is_dir():
        raise SystemExit(f"needs the real GRD XML at {real_safe(REALDATA)}")
    geo = Geo.read(next((real_safe(REALDATA) / "annotation").glob("s1b-*.xml")))
    tmp = Path(tempfile.mkdtemp(prefix="bench_grd_"))
    rows = []
    try:
        t = time.perf_counter()
        grd = make_grd(tmp, geo, args.size)
        for size in (args.size // 2, args.size):
            tr = s2_transform(geo, size)
            tif, dem = tmp / f"sigma0_{size}.tif", tmp / f"dem_{size}.tif"
            make_geotiff(tif, tr, size)
            make_dem(dem, tr, size)
            gen = time.perf_counter() - t
            for mode in ("geotiff", "grd", "grd+dem"):
                rows.append(run(mode, tif if mode == "geotiff" else grd, dem, size, tr))
            t = time.perf_counter()
        prep_rows = prepare_runs(tmp, grd, geo, args.size) if args.prepare else []
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"Sentinel-1 input benchmark (cpus={os.cpu_count()}, block 1024 + halo {HALO}, load avg "
          f"at end {os.getloadavg()[0]:.1f}); product {SAFE_NAME}")
    print(f"{'grid':>12} {'input':>8} {'wall s':>7} {'CPU s':>7} {'Mpx/s':>6} {'peak RSS MB':>11} "
          f"{'valid %':>7} {'time / geotiff':>14}")
    base = {r["size"]: r for r in rows if r["mode"] == "geotiff"}
    for r in rows:
        b = base[r["size"]]
        print(f"{r['size']:>5}x{r['size']:<6} {r['mode']:>8} {r['wall']:7.1f} {r['cpu']:7.1f} "
              f"{r['size'] ** 2 / 1e6 / r['wall']:6.2f} {r['peak'] / 2**20:11.0f} "
              f"{100 * r['valid'] / r['size'] ** 2:7.1f} {r['wall'] / b['wall']:14.2f}")
    full = [r for r in rows if r["size"] == args.size]
    quarter = {r["mode"]: r for r in rows if r["size"] == args.size // 2}
    for r in full:
        print(f"{r['mode']:>8}: full/quarter time {r['wall'] / quarter[r['mode']]['wall']:.2f}, "
              f"peak RSS {r['peak'] / quarter[r['mode']]['peak']:.2f}")
    print(f"input generation (not timed): last {gen:.0f} s")
    if prep_rows:
        b = prep_rows[0]
        print(f"coal-prepare end to end, {args.size}x{args.size} px (S2 multi-band tile + S1 input):")
        print(f"{'input':>8} {'wall s':>7} {'CPU s':>7} {'peak RSS MB':>11} {'wall / geotiff':>14} "
              f"{'CPU / geotiff':>13}")
        for r in prep_rows:
            print(f"{r['mode']:>8} {r['wall']:7.1f} {r['cpu']:7.1f} {r['peak_rss'] / 2**20:11.0f} "
                  f"{r['wall'] / b['wall']:14.2f} {r['cpu'] / b['cpu']:13.2f}")
        t = prep_rows[1]["timings"]
        print("  stage seconds of the grd run: " + ", ".join(
            f"{k} {v:.1f}" for k, v in t.items() if isinstance(v, float) and k != "total"))


if __name__ == "__main__":
    main()
