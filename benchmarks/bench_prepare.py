"""Benchmark ``coal-prepare`` on a full-size synthetic Sentinel-2 tile: wall time, peak RSS, stages.

A 10980 x 10980 px scene (one Sentinel-2 tile at 10 m) is generated once into a temporary folder,
streaming: a seeded ``coalmine.train.synth`` scene of ``size / 10`` px is written tile by tile
into full-size band files (10 m bands at 10 m, 20 m bands at 20 m, ZSTD-compressed tiled
GeoTIFFs like a COG download) and a Sentinel-1 sigma0 raster on its own shifted grid. Then
``coal-prepare`` runs in a subprocess (``--timings`` JSON) while its resident memory (RSS, with
children) is polled every 0.1 s with psutil.

The baseline, measured in the same run, is the same scene at a quarter of the area (half the
side): the full tile is 4x larger, so the table's ratios should read about 4 for time and about
1 for peak RSS (streaming: memory does not grow with the scene).

Usage:
    python benchmarks/bench_prepare.py                     # 10980 px tile and its quarter
    python benchmarks/bench_prepare.py --size 4096 --block 1024
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import rasterio
from coalmine.train.synth import DEFAULT_ORIGIN, make_scene
from rasterio.transform import from_origin
from rasterio.windows import Window


def generate(folder: Path, size: int, seed: int = 7) -> tuple[Path, Path]:
    """Write a ``size`` x ``size`` scene by tiling a small synthetic scene; returns (s2_dir, s1)."""
    base = max(128, (size // 10) // 2 * 2)
    tile = make_scene(folder / "base", 2023, seed=seed, size=base, cloud_cover=0.05,
                      nodata_corner=False)
    s2 = folder / "S2B_MSIL2A_20230715T022551_N0509_R046_T50MLA"
    s2.mkdir(parents=True)
    shutil.copy(tile.s2_dir / "MTD_MSIL2A.xml", s2 / "MTD_MSIL2A.xml")
    x0, y0 = DEFAULT_ORIGIN
    opts = {"driver": "GTiff", "tiled": True, "blockxsize": 512, "blockysize": 512,
            "compress": "zstd", "count": 1, "crs": tile.crs}
    for band, path in tile.band_paths.items():
        with rasterio.open(path) as src:
            a = src.read(1)
            res = src.res[0]
            tags = src.tags()
        n = size if res == 10.0 else size // 2
        with rasterio.open(s2 / path.name, "w", width=n, height=n, dtype="uint16", nodata=0,
                           transform=from_origin(x0, y0, res, res), **opts) as dst:
            dst.update_tags(**tags)
            dst.set_band_description(1, band)
            th, tw = a.shape
            for r in range(0, n, th):
                for c in range(0, n, tw):
                    h, w = min(th, n - r), min(tw, n - c)
                    dst.write(a[:h, :w], 1, window=Window(c, r, w, h))
    # S1: the small raster's inner part repeated on a grid shifted against S2, covering it
    with rasterio.open(tile.s1_path) as src:
        a = src.read(1)[10:-10, 10:-10]
        t = src.transform
    n1 = size + 40
    s1 = folder / "S1_VV_sigma0_linear.tif"
    with rasterio.open(s1, "w", width=n1, height=n1, dtype="float32", nodata=float("nan"),
                       transform=from_origin(x0 - 200 + (t.c % 10), y0 + 200 + (t.f % 10) - 10,
                                             10.0, 10.0), **opts) as dst:
        th, tw = a.shape
        for r in range(0, n1, th):
            for c in range(0, n1, tw):
                h, w = min(th, n1 - r), min(tw, n1 - c)
                dst.write(a[:h, :w], 1, window=Window(c, r, w, h))
    shutil.rmtree(folder / "base")
    return s2, s1


def run_prepare(s2: Path, s1: Path, out: Path, block: int, extra: list[str] | None = None) -> dict:
    """Run coal-prepare in a subprocess; return wall time, peak RSS and its stage timings.

    ``extra``: further command-line options (e.g. ``["--dem", path]``)."""
    exe = Path(sys.executable).parent / "coal-prepare"
    tj = out.with_suffix(".json")
    cmd = [str(exe), "--s2", str(s2), "--s1", str(s1), "-o", str(out), "--block", str(block),
           "--timings", str(tj), "-q", *(extra or [])]
    t0 = time.perf_counter()
    with open(out.with_suffix(".err"), "w+b") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        ps = psutil.Process(proc.pid)
        peak = 0
        # poll RSS (with any children) until the process ends, then reap it with wait4 for the
        # kernel's own peak RSS and CPU seconds
        while True:
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        msg = err.read().decode(errors="replace")
    if proc.returncode:
        raise SystemExit(f"coal-prepare failed ({proc.returncode}): {msg[-2000:]}")
    peak = max(peak, ru.ru_maxrss * 1024)  # ru_maxrss is in KiB on Linux
    cpu = ru.ru_utime + ru.ru_stime
    return {"wall": wall, "peak_rss": peak, "cpu": cpu, "timings": json.loads(tj.read_text()),
            "out_bytes": out.stat().st_size, "cmd": " ".join(cmd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980, help="scene side in 10 m pixels")
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    rows = []
    try:
        for size in (args.size // 4 * 2, args.size):  # quarter area (baseline), full
            size -= size % 2
            d = tmp / f"s{size}"
            t = time.perf_counter()
            s2, s1 = generate(d, size)
            gen = time.perf_counter() - t
            r = run_prepare(s2, s1, d / "scene.tif", args.block)
            r.update(size=size, gen=gen)
            rows.append(r)
            for p in [*s2.iterdir(), s1, d / "scene.tif"]:
                p.unlink()  # free the disk before the next size
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"coal-prepare benchmark  (cpus={os.cpu_count()}, block={args.block}, "
          f"load avg at end={os.getloadavg()[0]:.1f})")
    hdr = (f"{'scene':>13} {'Mpx':>7} {'wall s':>8} {'CPU s':>8} {'CPU/2 s':>8} {'Mpx/s':>7} "
           f"{'peak RSS MB':>12} {'out MB':>8}")
    print(hdr)
    for r in rows:
        mpx = r["size"] ** 2 / 1e6
        print(f"{r['size']:>6}x{r['size']:<6} {mpx:7.1f} {r['wall']:8.1f} {r['cpu']:8.1f} "
              f"{r['cpu'] / 2:8.1f} {mpx / r['wall']:7.2f} {r['peak_rss'] / 2**20:12.0f} "
              f"{r['out_bytes'] / 2**20:8.0f}")
    print("(CPU/2: the wall time this work needs on two otherwise idle cores if both are kept busy)")
    base, full = rows
    print(f"ratio full/quarter: pixels {full['size']**2 / base['size']**2:.2f}, "
          f"time {full['wall'] / base['wall']:.2f}, CPU {full['cpu'] / base['cpu']:.2f}, "
          f"peak RSS {full['peak_rss'] / base['peak_rss']:.2f}")
    t = full["timings"]
    stages = ["read_s2", "warp_s1", "speckle", "indices", "glcm", "mask", "write"]
    print(f"stage seconds of the {full['size']} px run (compute runs in a worker thread while "
          "the main thread writes, so stages can add up to more than the wall time):")
    for s in stages:
        v = t.get(s, 0.0)
        print(f"  {s:<8} {v:8.1f} s  {100 * v / full['wall']:5.1f} % of wall")
    print(f"input generation (not timed above): {base['gen']:.0f} s + {full['gen']:.0f} s")
    print(f"command: {full['cmd']}")


if __name__ == "__main__":
    main()
