"""Benchmark annual composites: wall time and peak RSS of ``coal-prepare`` on many acquisitions,
against the single-acquisition ``coal-prepare`` of the same scene measured in the same run.

Two cases (defaults): 12 acquisitions of a 5490 x 5490 px scene (a quarter of a Sentinel-2
tile) and 70 acquisitions of a 2048 x 2048 px scene (a year of 5-day revisits). The scene is
generated once per size like ``bench_prepare.py`` does (a seeded synthetic scene tiled into
full-size ZSTD GeoTIFF band files, 20 m bands at 20 m); each acquisition is a folder with its
own SCL (clouds on 640 m cells covering 20-70 % of the scene, with shadows), its own metadata
and date, and links to the scene's band files and Sentinel-1 raster. So the composite reads and
decodes every band of every acquisition as it would for distinct files, but the operating
system's page cache may serve repeated bytes (real acquisitions are distinct files: expect more
disk reading there).

Each run is a ``coal-prepare`` subprocess (``--timings``); its peak RSS comes from polling
(psutil) and the kernel's own maximum (wait4). The table gives the ratio per acquisition:
``(composite wall / acquisitions) / single wall``.

Usage:
    python benchmarks/bench_composite.py                           # both cases
    python benchmarks/bench_composite.py --case 70x2048 --memory 4G
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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

sys.path.insert(0, str(Path(__file__).parent))
from bench_prepare import generate  # noqa: E402

#: acquisitions x scene side; "3x512" is a quick smoke run.
CASES = {"12x5490": (12, 5490), "70x2048": (70, 2048), "3x512": (3, 512)}


def acquisitions(scene: Path, s1: Path, folder: Path, n: int, seed: int = 3) -> tuple[Path, Path]:
    """``n`` acquisition folders over ``scene``'s bands, each with its own clouds and date."""
    rng = np.random.default_rng(seed)
    with rasterio.open(next(scene.glob("*_B11_*.tif"))) as ref:
        h20, w20, crs, t20 = ref.height, ref.width, ref.crs, ref.transform
    cell = 32  # 32 px of 20 m: 640 m clouds
    s2_root, s1_root = folder / "s2", folder / "s1"
    s1_root.mkdir(parents=True)
    for k in range(n):
        date = dt.date(2023, 1, 1) + dt.timedelta(days=k * (365 // n))
        stamp = f"{date:%Y%m%d}T022551"
        d = s2_root / f"S2B_MSIL2A_{stamp}_N0509_R046_T50MLA"
        d.mkdir(parents=True)
        for f in scene.iterdir():
            if "_SCL_" in f.name or f.name == "MTD_MSIL2A.xml":
                continue
            os.symlink(f, d / f.name.replace("20230715T022551", stamp))
        mtd = (scene / "MTD_MSIL2A.xml").read_text().replace("2023-07-15", date.isoformat())
        (d / "MTD_MSIL2A.xml").write_text(mtd)
        cover = rng.uniform(0.2, 0.7)
        cells = rng.random(((h20 + cell - 1) // cell, (w20 + cell - 1) // cell)) < cover
        shadow = np.roll(cells, 1, axis=1) & ~cells & (rng.random(cells.shape) < 0.5)
        scl = np.where(cells, 9, np.where(shadow, 3, 4)).astype(np.uint8)
        scl = scl.repeat(cell, 0).repeat(cell, 1)[:h20, :w20]
        with rasterio.open(d / f"T50MLA_{stamp}_SCL_20m.tif", "w", driver="GTiff", width=w20, height=h20,
                           count=1, dtype="uint8", crs=crs, transform=t20, tiled=True, blockxsize=512,
                           blockysize=512, compress="zstd") as dst:
            dst.write(scl, 1)
        os.symlink(s1, s1_root / f"S1A_IW_GRDH_{stamp}_VV_sigma0.tif")
    return s2_root, s1_root


def add_scl(scene: Path) -> None:
    """The single-acquisition baseline's SCL: the same kind of clouds as the series."""
    with rasterio.open(next(scene.glob("*_B11_*.tif"))) as ref:
        h20, w20, crs, t20 = ref.height, ref.width, ref.crs, ref.transform
    rng = np.random.default_rng(99)
    cells = rng.random(((h20 + 31) // 32, (w20 + 31) // 32)) < 0.45
    scl = np.where(cells, 9, 4).astype(np.uint8).repeat(32, 0).repeat(32, 1)[:h20, :w20]
    with rasterio.open(scene / "T50MLA_20230715T022551_SCL_20m.tif", "w", driver="GTiff", width=w20,
                       height=h20, count=1, dtype="uint8", crs=crs, transform=t20, tiled=True,
                       blockxsize=512, blockysize=512, compress="zstd") as dst:
        dst.write(scl, 1)


def run(args: list[str], out: Path) -> dict:
    """coal-prepare with ``args`` in a subprocess: wall and CPU seconds, peak RSS, stage timings."""
    exe = Path(sys.executable).parent / "coal-prepare"
    tj = out.with_suffix(".json")
    cmd = [str(exe), *args, "-o", str(out), "--timings", str(tj), "-q"]
    t0 = time.perf_counter()
    with open(out.with_suffix(".err"), "w+b") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        ps, peak = psutil.Process(proc.pid), 0
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
        err.seek(0)
        msg = err.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"coal-prepare failed: {msg[-2000:]}")
    return {"wall": wall, "peak_rss": max(peak, ru.ru_maxrss * 1024), "cpu": ru.ru_utime + ru.ru_stime,
            "timings": json.loads(tj.read_text()), "cmd": " ".join(cmd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(CASES), action="append", help="default: both")
    ap.add_argument("--memory", default="4G", help="coal-prepare --memory for the composites")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_composite_"))
    load0 = os.getloadavg()[0]
    try:
        for case in args.case or ["12x5490", "70x2048"]:
            n, size = CASES[case]
            d = tmp / case
            t = time.perf_counter()
            scene, s1 = generate(d / "scene", size)
            add_scl(scene)
            s2_root, s1_root = acquisitions(scene, s1, d / "acq", n)
            gen = time.perf_counter() - t
            single = run(["--s2", str(scene), "--s1", str(s1), "--scl", "auto"], d / "single.tif")
            (d / "single.tif").unlink()
            comp = run(["--s2", str(s2_root), "--s1", str(s1_root), "--memory", args.memory], d / "comp.tif")
            rows.append({"case": case, "n": n, "size": size, "gen": gen, "single": single, "comp": comp})
            shutil.rmtree(d, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"coal-prepare composite benchmark  (cpus={os.cpu_count()}, --memory {args.memory}, "
          f"load avg at start {load0:.1f}, at end {os.getloadavg()[0]:.1f})")
    print(f"{'case':>9} {'run':>10} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12} {'block':>6} "
          f"{'per acq s':>10} {'ratio/acq':>10}")
    for r in rows:
        s, c = r["single"], r["comp"]
        print(f"{r['case']:>9} {'single':>10} {s['wall']:8.1f} {s['cpu']:8.1f} {s['peak_rss'] / 2**20:12.0f} "
              f"{s['timings'].get('block', 1024):>6} {s['wall']:10.1f} {1.0:10.2f}")
        per = c["wall"] / r["n"]
        print(f"{r['case']:>9} {'composite':>10} {c['wall']:8.1f} {c['cpu']:8.1f} {c['peak_rss'] / 2**20:12.0f} "
              f"{c['timings'].get('block'):>6} {per:10.1f} {per / s['wall']:10.2f}")
    for r in rows:
        t = r["comp"]["timings"]
        parts = ", ".join(f"{k} {t[k]:.0f}" for k in ("scl", "read_s2", "median", "warp_s1", "speckle", "glcm",
                                                      "write", "cog") if k in t)
        print(f"{r['case']} composite stage seconds: {parts}; input generation {r['gen']:.0f} s")
    print(f"command: {rows[-1]['comp']['cmd']}" if rows else "")


if __name__ == "__main__":
    main()
