"""Benchmark coal-run: ONNX Runtime CPU vs PyTorch eager, end-to-end time, stage shares, peak RSS.

1. Model throughput: the same randomly initialised U-Net-ResNet34 (smp, 23 bands -> 1 logit),
   the same tiles, PyTorch eager on the CPU (the baseline) vs ONNX Runtime CPU (graph
   optimisation ALL, intra-op threads = cores) at several tile/batch choices. Mpx/s and the
   ratio to PyTorch, plus the largest logit difference (parity).
2. End to end: ``run_scene`` on a prepared 23-band stack crop (default 2048 x 2048) with that
   U-Net, in a fresh subprocess: wall time, Mpx/s, share of time per stage, peak RSS. With
   ``--base REV`` the same runs with the code of git revision REV too (``bench_revisions.tree``),
   interleaved ``--repeats`` times, at each ``--blocks`` size: the ratio tree / base and whether
   the probability rasters of the block sizes are equal.
3. Memory bound: ``run_scene`` with a tiny 1x1-conv model on a small and on a full
   10980 x 10980 stack (sparse GeoTIFF: 1 block in 6 holds data, the rest is nodata, which
   is read, normalised, inferred and written like data): peak RSS must not grow with the scene.

Usage:
    python benchmarks/bench_run.py                 # everything (~10-15 min on 2 shared cores)
    python benchmarks/bench_run.py --quick         # small sizes, a smoke run
    python benchmarks/bench_run.py --skip-full     # without the 10980^2 stack
    python benchmarks/bench_run.py --sections 2 --crop 1536 --base main --repeats 3 --blocks 512,1024
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from factories import make_stack, make_tiny_bundle, unet_onnx, write_stack  # noqa: E402


def cores() -> int:
    return len(os.sched_getaffinity(0))


# -- 1. model throughput ---------------------------------------------------------------------
def bench_model(onnx_path: Path, tile: int, n_tiles: int, repeats: int) -> list[dict]:
    import torch
    from coalmine.runtime.backends.onnx import onnx_session
    from coalmine.runtime.bundle import ModelSpec
    from coalmine.train.model import build_model

    torch.manual_seed(0)  # the same seed as the exported ONNX: identical weights
    model = build_model(ModelSpec()).eval()
    torch.set_num_threads(cores())
    rng = np.random.default_rng(0)
    rows = []

    def timed(fn, x, batch):
        fn(x[:batch])  # warm-up
        t = time.perf_counter()
        for _ in range(repeats):
            for k in range(0, len(x), batch):
                fn(x[k : k + batch])
        dt = time.perf_counter() - t
        return len(x) * repeats * x.shape[2] * x.shape[3] / dt / 1e6, dt

    sess = onnx_session(onnx_path, ["CPUExecutionProvider"], threads=cores())
    configs = [(tile, 4), (tile, 1), (2 * tile, 1)]
    ref = {}
    for t, batch in configs:
        n = max(batch, n_tiles if t == tile else max(1, n_tiles // 4))
        x = rng.standard_normal((n, 23, t, t)).astype(np.float32)

        def run_torch(b):
            with torch.inference_mode():
                return model(torch.from_numpy(b)).numpy()

        def run_ort(b):
            return sess.run(["logits"], {"input": b})[0]

        mpx_t, _ = timed(run_torch, x, batch)
        mpx_o, _ = timed(run_ort, x, batch)
        diff = float(np.abs(run_torch(x[:1]) - run_ort(x[:1])).max())
        ref[(t, batch)] = mpx_t
        rows.append({"tile": t, "batch": batch, "tiles": n * repeats, "torch_mpx_s": mpx_t, "ort_mpx_s": mpx_o,
                     "ratio": mpx_o / mpx_t, "max_abs_logit_diff": diff})
    return rows


# -- 2./3. end to end in a subprocess ------------------------------------------------------------
CHILD = r"""
import json, sys, time
if "PYTHONPATH" in __import__("os").environ:  # a --base revision: import it, not the editable install
    sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable")]
from coalmine.runtime.run import run_scene
args = json.loads(sys.argv[1])
t = time.perf_counter()
s = run_scene(args["scene"], args["bundle"], args["out"], tile=args["tile"], progress=False, prefix="bench",
              batch_size=args.get("batch", "auto"), **({"block": args["block"]} if args.get("block") else {}))
s["_wall_outer"] = time.perf_counter() - t
# VmHWM (peak resident set of this process image): unlike ru_maxrss it is not inherited
# from the parent across fork/exec.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
s["_peak_rss_mb"] = int(hwm.split()[1]) / 1024
s["_torch_loaded"] = any(m.split(".")[0] == "torch" for m in sys.modules)
print(json.dumps(s))
"""


def run_child(scene: Path, bundle: Path, out: Path, tile: int, *, block: int | None = None,
              path: Path | None = None) -> dict:
    """``run_scene`` in a fresh process; ``path``: a folder holding another revision's ``coalmine``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"scene": str(scene), "bundle": str(bundle),
                                                                  "out": str(out), "tile": tile, "block": block})],
                       capture_output=True, text=True, env=env, cwd=path or None)
    if p.returncode:
        raise SystemExit(f"run_scene failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def write_big_sparse_stack(path: Path, size: int, every: int = 6, block: int = 512) -> Path:
    """A size x size stack; 1 block in ``every`` holds smooth data, the rest is left sparse (NaN)."""
    import rasterio
    from coalmine.runtime.bands import BAND_NAMES
    from coalmine.runtime.bundle import Preprocessing
    from factories import DEFAULT_TRANSFORM, PREP_TAG, UTM50S
    from rasterio.windows import Window

    if path.is_file():  # reuse a stack from an earlier run in the same --workdir
        with rasterio.open(path) as ds:
            if ds.width == size and ds.height == size:
                return path
    pattern = make_stack(block, block, seed=1, scale=12.0)
    prof = {"driver": "GTiff", "dtype": "float32", "count": 23, "width": size, "height": size, "crs": UTM50S,
            "transform": DEFAULT_TRANSFORM, "nodata": float("nan"), "tiled": True, "blockxsize": block,
            "blockysize": block, "compress": "deflate", "zlevel": 1, "sparse_ok": True, "BIGTIFF": "YES"}
    with rasterio.open(path, "w", **prof) as ds:
        for i, name in enumerate(BAND_NAMES, start=1):
            ds.set_band_description(i, name)
        ds.update_tags(**{PREP_TAG: json.dumps(Preprocessing().to_dict())})
        nb = (size + block - 1) // block
        for bi in range(nb):
            for bj in range(nb):
                if (bi + bj) % every:
                    continue
                h, w = min(block, size - bi * block), min(block, size - bj * block)
                ds.write(pattern[:, :h, :w], window=Window(bj * block, bi * block, w, h))
    return path


STAGES = ("read", "normalise", "infer", "blend", "write", "wait_read", "wait_write", "cog", "areas", "polygons")


def stage_table(s: dict) -> str:
    t = s["timings"]
    wall = t["wall"]
    parts = [f"{k} {t.get(k, 0.0):.1f}s ({100 * t.get(k, 0.0) / wall:.1f}%)" for k in STAGES]
    return "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--tiles", type=int, default=8, help="tiles per throughput measurement")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--crop", type=int, default=2048, help="side of the U-Net end-to-end stack")
    ap.add_argument("--full", type=int, default=10980, help="side of the tiny-model memory stack")
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--sections", default="1,2,3", help="which sections to run, e.g. 3")
    ap.add_argument("--base", default=None, help="section 2: also run git revision BASE, interleaved")
    ap.add_argument("--blocks", default="1024", help="section 2 with --base: block sizes, e.g. 512,1024")
    a = ap.parse_args()
    if a.quick:
        a.tiles, a.crop, a.full = 4, 512, 2048
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_run_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# bench_run  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.processor() or platform.machine()}"
          f", {cores()} cores, python {platform.python_version()}  workdir {work}")
    print("# the machine is shared with other work: figures are indicative")
    sections = {int(x) for x in a.sections.split(",")}
    onnx_path = unet_onnx(work / "unet.onnx", tile=a.tile, seed=0)
    if 1 in sections:
        section1(a, onnx_path)
    if 2 in sections:
        section2(a, work, onnx_path)
    if 3 in sections:
        section3(a, work)
    print("\ntarget: peak RSS < 2048 MB whatever the scene size; ORT >= 1.5x PyTorch eager")


def section1(a: argparse.Namespace, onnx_path: Path) -> None:
    import onnxruntime
    import torch

    print(f"\n## 1. U-Net-ResNet34 throughput, same weights and tiles (torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, {cores()} threads each)\n")
    print("| tile | batch | tiles | PyTorch eager Mpx/s | ORT CPU Mpx/s | ORT / PyTorch | max |logit diff| |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in bench_model(onnx_path, a.tile, a.tiles, a.repeats):
        print(f"| {r['tile']} | {r['batch']} | {r['tiles']} | {r['torch_mpx_s']:.3f} | {r['ort_mpx_s']:.3f} | "
              f"{r['ratio']:.2f}x | {r['max_abs_logit_diff']:.1e} |")


def section2(a: argparse.Namespace, work: Path, onnx_path: Path) -> None:
    print(f"\n## 2. End to end, U-Net-ResNet34, {a.crop} x {a.crop} stack, tile {a.tile}, ORT CPU\n")
    unet_b = make_tiny_bundle(work / "unet_bundle", onnx_file=onnx_path, tile=128, overlap=32, bundle_id="bench-unet")
    crop = write_stack(work / f"crop{a.crop}.tif", make_stack(a.crop, a.crop, seed=3, scale=20.0), block=512)
    if a.base:
        section2_against(a, work, unet_b.path, crop)
        return
    s = run_child(crop, unet_b.path, work / "out_unet", a.tile)
    wall = s["timings"]["wall"]
    mpx = a.crop * a.crop / 1e6
    busy = s["timings"]["infer"] / wall
    print("| scene | wall s | Mpx/s | peak RSS MB | backend busy | tiles | batch | torch imported |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print(f"| {a.crop}² U-Net | {wall:.1f} | {mpx / wall:.3f} | {s['_peak_rss_mb']:.0f} | {100 * busy:.1f}% | "
          f"{s['tiling']['tiles']} | {s['backend']['batch_size']} | {s['_torch_loaded']} |")
    print(f"\nstages (read/write run in threads beside infer; wait_* is main-thread time blocked on I/O): "
          f"{stage_table(s)}")
    full_px = 10980 * 10980
    print(f"\nextrapolated full 10980² scene with this U-Net on this machine: {full_px / 1e6 / (mpx / wall) / 3600:.1f} h "
          f"(= {full_px / 1e6:.0f} Mpx / {mpx / wall:.3f} Mpx/s; not measured)")



def section2_against(a: argparse.Namespace, work: Path, bundle: Path, crop: Path) -> None:
    """Section 2 for the working tree and ``--base``, interleaved, at each block size."""
    import statistics

    import rasterio
    from bench_revisions import tree

    paths = {"base": tree(a.base, work / "rev_base"), "tree": tree(None, work / "rev_tree")}
    blocks = [int(b) for b in a.blocks.split(",")]
    runs: dict[tuple[str, int], list[dict]] = {}
    for i in range(a.repeats):
        for block in blocks:
            for rev, path in paths.items():
                out = work / f"out_{rev}_{block}_{i}"
                runs.setdefault((rev, block), []).append(run_child(crop, bundle, out, a.tile, block=block, path=path))
    print(f"base = {a.base}; {a.repeats} interleaved run(s) each; load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| block | revision | tiles | blocks | best wall s | median wall s | peak RSS MB | tree / base (best) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for block in blocks:
        best = {rev: min(s["timings"]["wall"] for s in runs[(rev, block)]) for rev in paths}
        for rev in paths:
            s = runs[(rev, block)][0]
            walls = [x["timings"]["wall"] for x in runs[(rev, block)]]
            ratio = f"{best['tree'] / best['base']:.3f}x" if rev == "tree" else ""
            print(f"| {block} | {rev} | {s['tiling']['tiles']} | {s['tiling']['blocks']} | {min(walls):.1f} | "
                  f"{statistics.median(walls):.1f} | {max(x['_peak_rss_mb'] for x in runs[(rev, block)]):.0f} | {ratio} |")

    def prob(rev: str, block: int) -> np.ndarray:
        with rasterio.open(work / f"out_{rev}_{block}_0" / "bench_prob.tif") as ds:
            return ds.read(1)

    for rev in paths:
        ref = prob(rev, blocks[-1])
        diffs = {b: int((prob(rev, b) != ref).sum()) for b in blocks[:-1]}
        print(f"\n{rev}: probability pixels that differ from block {blocks[-1]}: "
              + (", ".join(f"block {b}: {n}" for b, n in diffs.items()) or "(one block size only)"))


def section3(a: argparse.Namespace, work: Path) -> None:
    print("\n## 3. Peak RSS vs scene size (tiny 1x1-conv model, tile 256, block 1024)\n")
    tiny = make_tiny_bundle(work / "tiny_bundle", kind="linear", tile=256, overlap=32, bundle_id="bench-tiny")
    sizes = [a.crop] + ([] if a.skip_full else [a.full])
    print("| scene | stack on disk MB | wall s | Mpx/s | peak RSS MB | nodata share | stages |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for size in sizes:
        t = time.perf_counter()
        stack = write_big_sparse_stack(work / f"sparse{size}.tif", size)
        t_make = time.perf_counter() - t
        s = run_child(stack, tiny.path, work / f"out_tiny{size}", 256)
        wall = s["timings"]["wall"]
        print(f"| {size}² | {stack.stat().st_size / 1e6:.0f} | {wall:.1f} | {size * size / 1e6 / wall:.1f} | "
              f"{s['_peak_rss_mb']:.0f} | {s['nodata_share']:.2f} | {stage_table(s)} |")
        print(f"<!-- stack written in {t_make:.0f} s -->")


if __name__ == "__main__":
    main()
