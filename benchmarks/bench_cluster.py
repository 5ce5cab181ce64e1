"""Benchmark coal-monitor on Dask: local sequential path vs a LocalCluster of worker processes.

1. Real work: 8 small synthetic raw scenes (Sentinel-2 band folders + Sentinel-1 VV, one per
   year, ``coalmine.train.synth``) mapped with a tiny ONNX conv bundle by the real
   ``run_scene`` (preprocessing incl. the S1 warp, speckle filter and GLCM, inference,
   COG outputs, hectares per AOI), then yearly composites, change maps and reports.
   Wall time of ``run_monitor`` with the default local executor (the baseline) and with a
   ``DaskExecutor`` on a LocalCluster of N single-threaded worker processes (started
   before timing; its start-up is shown separately). The ledgers must agree.
2. Scheduling overhead per scene: a no-op runner (copies a 64 x 64 mask) through
   ``run_monitor`` locally, through the cluster one scene at a time (``max_in_flight=1``,
   so the difference to local is the per-scene cost of going through Dask: submit,
   pickling, the worker round trip, the result back), and through the cluster in parallel.

Usage:
    python benchmarks/bench_cluster.py                     # 8 scenes of 256 px, 2 workers
    python benchmarks/bench_cluster.py --size 512 --workers 2 --scenes 8
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from factories import make_tiny_bundle  # noqa: E402
from test_monitor_data import write_aois, write_mask  # noqa: E402

CONFIG = """\
title = "bench"
bundle = "{bundle}"
aois = "{aois}"
output = "{output}"

[run]
backend = "cpu"

[[search]]
folder = "{series}"
glob = "synth_*_S2"
date_regex = 'synth_(?P<year>\\d{{4}})_S2'
s1_folder = "{series}"
s1_glob = "synth_*_S1_VV*.tif"
s1_date_regex = 'synth_(?P<year>\\d{{4}})_S1'
"""


def noop_runner(scene: Any, bundle: Any, out_dir: Any, *, prefix: str | None = None, **kw: Any) -> dict[str, Any]:
    """A runner that does no mapping: copies a prepared 64 x 64 mask (scheduling cost only)."""
    out = Path(out_dir) / f"{prefix}_mask.tif"
    shutil.copyfile(Path(bundle) / "noop_mask.tif", out)
    return {"outputs": {"mask": str(out)}, "nodata_share": 0.0, "backend": "noop", "timings": {}}


def write_config(root: Path, name: str, series: Path, bundle: Path, aois: Path) -> Path:
    cfg = root / f"{name}.toml"
    cfg.write_text(CONFIG.format(bundle=bundle, aois=aois, output=root / name, series=series))
    return cfg


def areas(root: Path, name: str) -> list[tuple[str, str, float]]:
    con = sqlite3.connect(root / name / "ledger.sqlite")
    rows = [(Path(k).name, a, round(h, 6)) for k, a, h in con.execute(
        "SELECT key, aoi, hectares FROM scene_areas ORDER BY key, aoi")]
    con.close()
    return rows


def timed_run(cfg: Path, executor: Any = None, runner: Any = None) -> tuple[float, Any]:
    from coalmine.runtime.monitor import load_config, run_monitor

    kw = {"runner": runner} if runner is not None else {}
    t = time.perf_counter()
    s = run_monitor(load_config(cfg), executor=executor, **kw)
    return time.perf_counter() - t, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=256, help="scene side in pixels")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)

    import distributed
    import numpy as np
    from coalmine.runtime.monitor.cluster import DaskExecutor
    from coalmine.train.synth import make_series

    root = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    try:
        t = time.perf_counter()
        years = range(2022 - args.scenes, 2022)
        make_series(root / "series", years, seed=11, size=args.size)
        bundle = make_tiny_bundle(root / "bundle", kind="conv").path
        write_mask(bundle / "noop_mask.tif", (np.arange(64 * 64).reshape(64, 64) % 3 == 0).astype("uint8"))
        aois = write_aois(root / "aois.geojson")
        print(f"# {args.scenes} synthetic scenes of {args.size} x {args.size} px made in "
              f"{time.perf_counter() - t:.1f} s; {os.cpu_count()} CPU(s), {platform.machine()}, "
              f"Python {platform.python_version()}, distributed {distributed.__version__}", flush=True)
        cfg = {n: write_config(root, n, root / "series", bundle, aois)
               for n in ("local", "dask", "noop_local", "noop_serial", "noop_dask")}

        t_local, s_local = timed_run(cfg["local"])
        t = time.perf_counter()
        ex = DaskExecutor(f"local:{args.workers}").connect()
        t_start = time.perf_counter() - t
        try:
            with distributed.get_task_stream(client=ex.client) as ts:
                t_dask, s_dask = timed_run(cfg["dask"], ex)
            work = [t for t in ts.data if str(t["key"]).startswith("coal-scene-")]
            compute = [sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute")
                       for t in work]
            t_noop_local, _ = timed_run(cfg["noop_local"], runner=noop_runner)
            serial = DaskExecutor(ex.client.scheduler.address, max_in_flight=1).connect()
            try:
                t_noop_serial, _ = timed_run(cfg["noop_serial"], serial, runner=noop_runner)
            finally:
                serial.close()
            t_noop_dask, _ = timed_run(cfg["noop_dask"], ex, runner=noop_runner)
        finally:
            ex.close()
        same = areas(root, "local") == areas(root, "dask") and s_local.processed == s_dask.processed == args.scenes
        n = args.scenes
        rows = [
            ("real scenes, local sequential (baseline)", t_local, 1.0),
            (f"real scenes, LocalCluster {args.workers} workers", t_dask, t_local / t_dask),
            ("no-op runner, local sequential (baseline)", t_noop_local, 1.0),
            ("no-op runner, cluster, 1 scene in flight", t_noop_serial, t_noop_local / t_noop_serial),
            (f"no-op runner, cluster, {args.workers} workers", t_noop_dask, t_noop_local / t_noop_dask),
        ]
        print(f"\n| run ({n} scenes) | wall s | speed-up vs local |\n|---|---:|---:|")
        for name, sec, ratio in rows:
            print(f"| {name} | {sec:.2f} | {ratio:.2f}x |")
        overhead = (t_noop_serial - t_noop_local) / n
        print(f"\nLocalCluster start-up ({args.workers} worker processes): {t_start:.2f} s (not in the times above)")
        print(f"scheduling overhead per scene (cluster serial - local, no-op runner): {overhead * 1000:.0f} ms")
        if compute:
            print(f"real scenes: mean task compute on a worker {np.mean(compute):.2f} s; "
                  f"local mean per scene {t_local / n:.2f} s (incl. composites and reports)")
        print(f"ledger areas identical local vs cluster: {'yes' if same else 'NO'}")
        if args.json:
            args.json.write_text(json.dumps({
                "scenes": n, "size": args.size, "workers": args.workers, "t_local": t_local, "t_dask": t_dask,
                "ratio": t_local / t_dask, "t_startup": t_start, "t_noop_local": t_noop_local,
                "t_noop_serial": t_noop_serial, "t_noop_dask": t_noop_dask, "overhead_per_scene": overhead,
                "task_compute_mean": float(np.mean(compute)) if compute else None, "identical": same,
            }, indent=1))
        if not same:
            sys.exit(1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
