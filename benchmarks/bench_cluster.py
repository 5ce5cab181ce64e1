"""Benchmark coal-monitor on Dask: local sequential path vs a LocalCluster of worker processes.

1. Real work: 8 small synthetic raw scenes (Sentinel-2 band folders + Sentinel-1 VV, one per
   year, ``coalmine.train.synth``) mapped with a tiny ONNX conv bundle by the real
   ``run_scene`` (preprocessing incl. the S1 warp, speckle filter and GLCM, inference,
   COG outputs, hectares per AOI), then yearly composites, change maps and reports.
   Wall time of ``run_monitor`` with the default local executor (the baseline) and with a
   ``DaskExecutor`` on a LocalCluster of N single-threaded worker processes (started
   before timing and with the runtime imported on the workers, as it is in this process;
   that start-up is shown separately). Each path runs ``--repeats`` times into fresh output
   folders; the fastest counts (the machine is shared). All ledgers must agree.
2. Scheduling overhead per scene: the executors alone on 40 no-op scene tasks (the function
   writes a mask file and returns a result, no mapping): ``LocalExecutor`` vs ``DaskExecutor``
   with one task in flight (so the difference is the per-scene cost of going through Dask:
   submit, pickling, the worker round trip, the shared-storage checks, the result back) and
   with the default bound (the two workers in parallel). Median of 3 repeats after a warm-up.

Usage:
    python benchmarks/bench_cluster.py                     # 8 scenes of 256 px, 2 workers
    python benchmarks/bench_cluster.py --size 512 --workers 2 --scenes 8
"""

from __future__ import annotations

import argparse
import importlib
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
from test_monitor_data import write_aois  # noqa: E402

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


def noop_scene(task: Any) -> Any:
    """A scene function that maps nothing: writes a tiny mask file and returns its result."""
    from coalmine.runtime.monitor import SceneResult

    out = Path(task.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mask.tif").write_bytes(b"0")
    return SceneResult(key=task.key, token=task.token, out_dir=str(out), outputs={"mask": "mask.tif"},
                       areas_ha={"total": 0.0, "aois": {}}, nodata_share=0.0, backend="noop", timings={},
                       seconds=0.0)


def noop_tasks(root: Path, bundle: Path, n: int, rep: str) -> list[Any]:
    from coalmine.runtime.monitor import SceneTask

    return [SceneTask(key=f"k{i}", scene=str(root / f"s{i}.tif"), date="2019-07-14", bundle=str(bundle),
                      out_dir=str(root / "noop" / "scenes" / f"s{rep}_{i}"), prefix=f"s{i}", token=f"t{rep}_{i}")
            for i in range(n)]


def timed_executor(ex: Any, tasks: list[Any]) -> float:
    t = time.perf_counter()
    for _task, res in ex.run(noop_scene, iter(tasks)):
        assert not isinstance(res, BaseException), res
    return time.perf_counter() - t


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


def timed_run(cfg: Path, executor: Any = None) -> tuple[float, Any]:
    from coalmine.runtime.monitor import load_config, run_monitor

    t = time.perf_counter()
    s = run_monitor(load_config(cfg), executor=executor)
    return time.perf_counter() - t, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=256, help="scene side in pixels")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each path; the fastest counts")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)

    import distributed
    import numpy as np
    from coalmine.runtime.monitor import LocalExecutor
    from coalmine.runtime.monitor.cluster import DaskExecutor
    from coalmine.train.synth import make_series

    root = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    try:
        t = time.perf_counter()
        years = range(2022 - args.scenes, 2022)
        make_series(root / "series", years, seed=11, size=args.size)
        bundle = make_tiny_bundle(root / "bundle", kind="conv").path
        (root / "noop").mkdir()
        aois = write_aois(root / "aois.geojson")
        print(f"# {args.scenes} synthetic scenes of {args.size} x {args.size} px made in "
              f"{time.perf_counter() - t:.1f} s; {os.cpu_count()} CPU(s), {platform.machine()}, "
              f"Python {platform.python_version()}, distributed {distributed.__version__}", flush=True)
        r = args.repeats
        cfg = {f"{n}{i}": write_config(root, f"{n}{i}", root / "series", bundle, aois)
               for n in ("local", "dask") for i in range(r)}
        import coalmine.runtime.run  # noqa: F401  (imports are not part of the comparison)

        runs_local = [timed_run(cfg[f"local{i}"]) for i in range(r)]
        t = time.perf_counter()
        ex = DaskExecutor(f"local:{args.workers}").connect()
        ex.client.run(importlib.import_module, "coalmine.runtime.run")  # the same imports on the workers
        t_start = time.perf_counter() - t
        try:
            with distributed.get_task_stream(client=ex.client) as ts:
                runs_dask = [timed_run(cfg[f"dask{i}"], ex) for i in range(r)]
            work = [t for t in ts.data if str(t["key"]).startswith("coal-scene-")]
            compute = [sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute")
                       for t in work]
            serial = DaskExecutor(ex.client.scheduler.address, max_in_flight=1).connect()
            k = 40
            times: dict[str, list[float]] = {"local": [], "serial": [], "dask": []}
            try:
                for rep in range(4):  # repeat 0 is the warm-up
                    for name, e in (("local", LocalExecutor()), ("serial", serial), ("dask", ex)):
                        t = timed_executor(e, noop_tasks(root, bundle, k, f"{name}{rep}"))
                        if rep:
                            times[name].append(t / k)
            finally:
                serial.close()
        finally:
            ex.close()
        per = {name: float(np.median(v)) for name, v in times.items()}
        t_local, t_dask = min(t for t, _ in runs_local), min(t for t, _ in runs_dask)
        same = all(areas(root, f"{n}{i}") == areas(root, "local0") for n in ("local", "dask") for i in range(r))
        same = same and all(s.processed == args.scenes for _, s in runs_local + runs_dask)
        n = args.scenes
        print(f"\n| run_monitor, {n} real scenes (fastest of {r}) | wall s | speed-up vs local |\n|---|---:|---:|")
        print(f"| local sequential (baseline) | {t_local:.2f} | 1.00x |")
        print(f"| LocalCluster, {args.workers} worker processes | {t_dask:.2f} | {t_local / t_dask:.2f}x |")
        print(f"\n| executor alone, {k} no-op scenes | ms per scene | vs local |\n|---|---:|---:|")
        print(f"| LocalExecutor (baseline) | {per['local'] * 1000:.1f} | 1.00x |")
        print(f"| DaskExecutor, 1 scene in flight | {per['serial'] * 1000:.1f} | {per['local'] / per['serial']:.2f}x |")
        print(f"| DaskExecutor, default bound ({args.workers} workers) | {per['dask'] * 1000:.1f} | "
              f"{per['local'] / per['dask']:.2f}x |")
        overhead = per["serial"] - per["local"]
        print(f"\nLocalCluster start-up ({args.workers} worker processes): {t_start:.2f} s incl. imports (not in the times above)")
        print(f"scheduling overhead per scene (1 in flight, minus local): {overhead * 1000:.0f} ms")
        if compute:
            print(f"real scenes: mean task compute on a worker {np.mean(compute):.2f} s; "
                  f"local mean per scene {t_local / n:.2f} s (incl. composites and reports)")
        print(f"ledger areas identical local vs cluster: {'yes' if same else 'NO'}")
        if args.json:
            args.json.write_text(json.dumps({
                "scenes": n, "size": args.size, "workers": args.workers, "t_local": t_local, "t_dask": t_dask,
                "ratio": t_local / t_dask, "t_startup": t_start, "noop_per_scene": per, "overhead_per_scene": overhead,
                "task_compute_mean": float(np.mean(compute)) if compute else None, "identical": same,
            }, indent=1))
        if not same:
            sys.exit(1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
