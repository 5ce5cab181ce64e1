"""Benchmark coal-fetch: one 10 x 10 km AOI from a full 10980 px Sentinel-2 tile, windows vs whole files.

A synthetic Sentinel-2 L2A tile in the shape Earth Search serves (COGs: DEFLATE, 1024 px tiles,
overviews; 10 m bands 10980^2, 20 m bands and SCL 5490^2; an item with Earth Search's asset keys)
is served by the local STAC API of ``tests/stac_fixture.py`` on 127.0.0.1. Two ways to get the
nine bands + SCL that coal-prepare needs for an AOI:

* **window** — ``coalmine.runtime.fetch.fetch``: search, then HTTP range reads of the AOI window
  plus the processing halo on each asset's own grid (what ``coal-fetch`` does);
* **whole files** — plain HTTP GETs of the ten band files (what a download-the-product workflow does).

Bytes are those the server sent (file bodies); seconds are wall time. Each is measured on the
loopback link as it is (no limit), and with a simulated distant server: ``--latency-ms`` before
every file response and ``--mbps`` per connection. The tile's content is a smooth field plus noise
so DEFLATE compresses it about as much as real L2A bands.

With ``--grd``: the bytes ``coal-fetch --s1 grd`` reads of a Sentinel-1 GRD product for one AOI
(the XML whole, the VV measurement's window) against the product's VV files. The product is the
tests' generated one (tests/grd_stac.py: the real XML of ``--realdata``, a full-size 26102 x 16705
measurement served as a 256 px tiled DEFLATE GeoTIFF with speckle in a 2400 px data window, empty
elsewhere); the AOI, at most 5 km (the Sentinel-2 tile over it is 5.12 km), lies in that window.

Usage:
    python benchmarks/bench_fetch.py                       # 10980 px tile, 10 km AOI
    python benchmarks/bench_fetch.py --size 5490 --aoi-km 5 --quick   # a smaller, faster run
    python benchmarks/bench_fetch.py --grd --aoi-km 5      # GRD: window + XML vs the product's VV files
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import requests  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import transform_geom  # noqa: E402
from stac_fixture import (  # noqa: E402
    StacServer,
    earth_search_s2_item,
    raster_info,
    standard_collections,
)

BANDS_10 = ("B02", "B03", "B04", "B08")
BANDS_20 = ("B05", "B06", "B07", "B11", "B12")
ORIGIN = (300000.0, 9700000.0)  # UTM 50S, near Tapin


def _field(n: int, rng: np.random.Generator, base: float, spread: float, noise: float) -> np.ndarray:
    coarse = rng.normal(base, spread, size=(n // 180 + 2, n // 180 + 2)).astype(np.float32)
    f = np.repeat(np.repeat(coarse, 180, axis=0), 180, axis=1)[:n, :n]
    f += rng.normal(0.0, noise, size=(n, n)).astype(np.float32)
    return np.clip(f, 1, 65535).astype(np.uint16)


def _cog(arr: np.ndarray, path: Path, res: float, nodata: int = 0) -> None:
    profile = {"driver": "COG", "count": 1, "height": arr.shape[0], "width": arr.shape[1], "dtype": arr.dtype.name,
               "crs": "EPSG:32750", "transform": from_origin(*ORIGIN, res, res), "nodata": nodata,
               "compress": "deflate", "predictor": 2, "blocksize": 1024, "num_threads": "ALL_CPUS"}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arr, 1)


def make_tile(root: Path, size: int, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    half = size // 2
    files = {}
    t0 = time.monotonic()
    _cog(_field(size, rng, 1500, 400, 60), root / "B02.tif", 10.0)
    _cog(_field(half, rng, 2200, 500, 60), root / "B05.tif", 20.0)
    scl = np.where(_field(half, rng, 5, 1.5, 0.0) > 6, 8, 4).astype(np.uint8)
    _cog(scl, root / "SCL.tif", 20.0)
    files = {"B02": root / "B02.tif", "B05": root / "B05.tif", "SCL": root / "SCL.tif"}
    for b in BANDS_10[1:]:
        os.link(root / "B02.tif", root / f"{b}.tif")
        files[b] = root / f"{b}.tif"
    for b in BANDS_20[1:]:
        os.link(root / "B05.tif", root / f"{b}.tif")
        files[b] = root / f"{b}.tif"
    print(f"tile written in {time.monotonic() - t0:.0f} s: "
          + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.0f} MB" for p in (files["B02"], files["B05"], files["SCL"])),
          file=sys.stderr)
    return files


def aoi_file(path: Path, size: int, km: float) -> Path:
    cx, cy = ORIGIN[0] + size * 5.0, ORIGIN[1] - size * 5.0
    h = km * 500.0
    ring = [[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h], [cx - h, cy - h]]
    g = transform_geom("EPSG:32750", "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "AOI"}, "geometry": g}]}))
    return path


def run_window(srv: StacServer, aoi: Path, out: Path) -> tuple[int, float, int]:
    from coalmine.runtime.fetch import FetchOptions, FetchRequest, fetch, resolve_catalogue

    shutil.rmtree(out, ignore_errors=True)
    srv.reset_counts()
    req = FetchRequest(aois=aoi, out=out, start=dt.date(2023, 1, 1), end=dt.date(2023, 12, 31),
                       catalogue=resolve_catalogue(srv.url), s1="none", options=FetchOptions(timeout=120))
    t0 = time.monotonic()
    s = fetch(req)
    secs = time.monotonic() - t0
    assert s.exit_code == 0 and len(s.fetched) == 1, s.status_line()
    n_req = sum(1 for m, p, _ in srv.requests if p.startswith("/files/"))
    return srv.file_bytes(), secs, n_req


def run_whole(srv: StacServer, item: dict, out: Path) -> tuple[int, float]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    srv.reset_counts()
    keys = ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "swir16", "swir22", "scl")
    t0 = time.monotonic()
    with requests.Session() as session:
        for k in keys:
            with session.get(item["assets"][k]["href"], stream=True, timeout=600) as r:
                r.raise_for_status()
                with open(out / f"{k}.tif", "wb") as f:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
    return srv.file_bytes(), time.monotonic() - t0


def run_grd(realdata: Path, work: Path, km: float) -> None:
    """Fetch one AOI of the tests' GRD product (with its S2 tile) and print the GRD bytes read vs whole."""
    from coalmine.runtime.fetch import FetchOptions, FetchRequest, fetch, resolve_catalogue
    from grd_stac import aoi_over, make_grd_world

    load0 = os.getloadavg()
    srv = StacServer(work / "files").start()
    srv.collections = standard_collections()
    try:
        t0 = time.monotonic()
        w = make_grd_world(realdata, work, srv)
        print(f"GRD product generated in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        srv.items = [w.s2_item, w.pc_item]
        aoi = aoi_over(work / "aoi_grd.geojson", w.s2_grid, size=round(km * 100))
        srv.reset_counts()
        req = FetchRequest(aois=aoi, out=work / "dl", start=dt.date(2021, 12, 1), end=dt.date(2021, 12, 31),
                           catalogue=resolve_catalogue(srv.url), s1="grd", options=FetchOptions(timeout=120))
        t0 = time.monotonic()
        s = fetch(req)
        secs = time.monotonic() - t0
        assert s.exit_code == 0 and s.waiting_s1 == 0, s.status_line()
        sent = {k.split("_grd/", 1)[1]: v for k, v in srv.bytes_sent.items() if "_grd/" in k}
        n_req = sum(1 for _, p, _ in srv.requests if "_grd/" in p)
    finally:
        srv.stop()
    load1 = os.getloadavg()
    size = {k: p.stat().st_size for k, p in w.served.items() if k in sent}
    (m,) = (work / "dl" / "s1").glob("*.SAFE/measurement/*.tiff")
    with rasterio.open(m) as ds, rasterio.open(w.served["measurement/iw-vv.tiff"]) as full:
        win = (ds.width, ds.height)
        raw = full.width * full.height * 2  # a SAFE measurement: uncompressed uint16
    meas, xml = "measurement/iw-vv.tiff", [k for k in sent if k != "measurement/iw-vv.tiff"]
    print(f"\nMachine: {platform.machine()} {os.cpu_count()} cores, {platform.python_version()}, "
          f"GDAL {rasterio.__gdal_version__}; load average {load0[0]:.1f} before, {load1[0]:.1f} after")
    print(f"AOI {km:g} x {km:g} km; measurement window {win[0]} x {win[1]} px of the image; the whole "
          f"fetch (S2 window + GRD) {secs:.2f} s, {n_req} GRD requests\n")
    print("| part | fetched MB | whole file MB | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| XML + manifest ({len(xml)} files) | {sum(sent[k] for k in xml) / 1e6:.2f} | "
          f"{sum(size[k] for k in xml) / 1e6:.2f} | 1.0x |")
    print(f"| VV measurement (served: tiled DEFLATE, data in 2400^2 px only) | {sent[meas] / 1e6:.2f} | "
          f"{size[meas] / 1e6:.1f} | {size[meas] / sent[meas]:.0f}x |")
    print(f"| VV measurement as in a SAFE product (uncompressed uint16) | {sent[meas] / 1e6:.2f} | "
          f"{raw / 1e6:.0f} | {raw / sent[meas]:.0f}x |")
    total = sum(sent.values())
    print(f"| all GRD bytes vs the SAFE's VV files | {total / 1e6:.2f} | "
          f"{(raw + sum(size[k] for k in xml)) / 1e6:.0f} | {(raw + sum(size[k] for k in xml)) / total:.0f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980, help="10 m tile size in pixels")
    ap.add_argument("--aoi-km", type=float, default=10.0, help="AOI side in km")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="simulated latency per file response")
    ap.add_argument("--mbps", type=float, default=100.0, help="simulated bandwidth per connection (Mbit/s)")
    ap.add_argument("--quick", action="store_true", help="skip the simulated distant server")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--grd", action="store_true", help="Sentinel-1 GRD: one AOI's window + XML vs the VV files "
                    "(AOI at most 5 km)")
    ap.add_argument("--realdata", type=Path, default=HERE.parent.parent / "shared" / "realdata",
                    help="folder with the real GRD XML (s1_grd_safe_xml/)")
    args = ap.parse_args()
    if args.grd:
        if args.aoi_km > 5.12:
            ap.error("--grd: --aoi-km is at most 5.12 (the Sentinel-2 tile over the generated GRD data)")
        work = args.keep or Path(tempfile.mkdtemp(prefix="bench_fetch_grd_"))
        try:
            run_grd(args.realdata, work, args.aoi_km)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        return

    load0 = os.getloadavg()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_fetch_"))
    (work / "files").mkdir(parents=True, exist_ok=True)
    files = make_tile(work / "files", args.size)
    srv = StacServer(work / "files").start()
    srv.collections = standard_collections()
    rasters = {b: raster_info(p, srv.file_url(p.name)) for b, p in files.items()}
    item = earth_search_s2_item(srv.url, "S2B_50MLA_20230715_0_L2A",
                                dt.datetime(2023, 7, 15, 2, 25, 51, tzinfo=dt.timezone.utc), rasters,
                                baseline="05.09", offset_applied=True, cloud=10.0)
    srv.items = [item]
    aoi = aoi_file(work / "aoi.geojson", args.size, args.aoi_km)
    whole_size = sum(p.stat().st_size for p in files.values())

    settings = [("loopback, no limit", 0.0, None)]
    if not args.quick:
        settings.append((f"{args.latency_ms:g} ms, {args.mbps:g} Mbit/s per connection",
                         args.latency_ms / 1000.0, args.mbps * 1e6 / 8))
    rows = []
    try:
        for name, lat, rate in settings:
            srv.latency, srv.rate = lat, rate
            wb, ws, nreq = run_window(srv, aoi, work / "window")
            hb, hs = run_whole(srv, item, work / "whole")
            assert hb == whole_size
            rows.append((name, wb, ws, nreq, hb, hs))
    finally:
        srv.stop()
    load1 = os.getloadavg()
    local = sum(p.stat().st_size for p in (work / "window").rglob("*.tif"))

    print(f"\nMachine: {platform.machine()} {os.cpu_count()} cores, {platform.python_version()}, "
          f"GDAL {rasterio.__gdal_version__}; load average {load0[0]:.1f} before, {load1[0]:.1f} after")
    print(f"Tile {args.size}^2 px (10 bands + SCL: {whole_size / 1e6:.0f} MB of COGs), AOI {args.aoi_km:g} x "
          f"{args.aoi_km:g} km; window files on disk {local / 1e6:.1f} MB\n")
    print("| link | window MB | window s | range requests | whole files MB | whole files s | bytes ratio | time ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, wb, ws, nreq, hb, hs in rows:
        print(f"| {name} | {wb / 1e6:.1f} | {ws:.2f} | {nreq} | {hb / 1e6:.0f} | {hs:.2f} | "
              f"{hb / wb:.0f}x | {hs / ws:.1f}x |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
