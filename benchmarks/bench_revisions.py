"""Compare two revisions of coalmine on the same data: identical outputs, and time.

For a refactoring that must not change results or speed: the code of ``--base`` (a git
revision) and of the working tree are each put in a folder of their own (``git archive``; the
working tree's compiled GLCM kernel is copied beside both, so only Python differs), and
``run_scene`` (a prepared stack, a small convolutional ONNX model, CPU backend) and
``prepare_scene`` (a synthetic raw Sentinel-2 + Sentinel-1 scene) run in fresh subprocesses,
the two revisions interleaved ``--repeats`` times so that machine load falls on both alike.

Prints per revision the best and median seconds, the ratio working tree / base, and whether
the probability and mask rasters and the prepared stack are equal bit for bit.

Usage:
    python benchmarks/bench_revisions.py --base 9b64442              # ~5 min on 2 shared cores
    python benchmarks/bench_revisions.py --base main --repeats 5 --size 1536
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

#: Each child imports coalmine from its revision's folder (PYTHONPATH), not from an editable install.
ISOLATE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable")]
"""
RUN = ISOLATE + """
import time
from coalmine.runtime.run import run_scene
t = time.perf_counter()
run_scene(sys.argv[1], sys.argv[2], sys.argv[3], tile=256, backend="cpu", progress=False, prefix="x")
print(time.perf_counter() - t)
"""
PREPARE = ISOLATE + """
import time
from coalmine.runtime.preprocess import prepare_scene
t = time.perf_counter()
prepare_scene(sys.argv[1], sys.argv[2], sys.argv[3], progress=False, block=512)
print(time.perf_counter() - t)
"""


def tree(rev: str | None, dest: Path) -> Path:
    """A folder whose ``coalmine/`` holds the package of ``rev`` (None: the working tree)."""
    src = dest / "src"
    src.mkdir(parents=True)
    if rev is None:
        for d in ("runtime", "train", "export"):
            shutil.copytree(REPO / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "runtime", "train", "export"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    import coalmine.runtime._glcm as glcm

    shutil.copy(glcm.__file__, src / "runtime")
    pkg = dest / "path" / "coalmine"
    pkg.mkdir(parents=True)
    for d in ("runtime", "train", "export"):
        (pkg / d).symlink_to(src / d)
    return dest / "path"


def timed(code: str, path: Path, args: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(path)
    probe = "\nimport coalmine.runtime.run as r; assert r.__file__.startswith(sys.argv[-1]), r.__file__\n"
    p = subprocess.run([sys.executable, "-c", code + probe, *args, str(path)], capture_output=True, text=True,
                       env=env, cwd=path)
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    return float(p.stdout.split()[-1])


def same(a: Path, b: Path) -> bool:
    import numpy as np
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return (x.descriptions == y.descriptions and x.transform == y.transform
                and np.array_equal(x.read(), y.read(), equal_nan=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare the working tree with")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=1536, help="side of the stack given to run_scene")
    ap.add_argument("--raw-size", type=int, default=768, help="side of the raw scene given to prepare_scene")
    a = ap.parse_args()
    from coalmine.train.synth import make_scene
    from factories import make_stack, make_tiny_bundle, write_stack

    with tempfile.TemporaryDirectory(prefix="bench_rev_") as tmp:
        work = Path(tmp)
        paths = {"base": tree(a.base, work / "base"), "tree": tree(None, work / "tree")}
        stack = write_stack(work / "stack.tif", make_stack(a.size, a.size, seed=1), block=512)
        bundle = make_tiny_bundle(work / "bundle", kind="conv", tile=256, overlap=32).path
        sc = make_scene(work / "synth", 2019, seed=3, size=a.raw_size)
        secs: dict[tuple[str, str], list[float]] = {}
        for i in range(a.repeats):
            for rev, path in paths.items():
                out = work / f"{rev}_{i}"
                secs.setdefault(("run_scene", rev), []).append(timed(RUN, path, [str(stack), str(bundle), str(out)]))
                secs.setdefault(("prepare_scene", rev), []).append(
                    timed(PREPARE, path, [str(sc.s2_dir), str(sc.s1_path), str(out / "stack.tif")]))
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
              f"{a.repeats} interleaved runs each; stack {a.size} px, raw scene {a.raw_size} px")
        print(f"{'step':<15}{'base best':>11}{'tree best':>11}{'base median':>13}{'tree median':>13}{'tree/base':>11}")
        for step in ("run_scene", "prepare_scene"):
            b, t = secs[(step, "base")], secs[(step, "tree")]
            print(f"{step:<15}{min(b):>10.2f}s{min(t):>10.2f}s{statistics.median(b):>12.2f}s"
                  f"{statistics.median(t):>12.2f}s{min(t) / min(b):>10.3f}x")
        equal = {name: all(same(work / f"base_{i}" / name, work / f"tree_{i}" / name) for i in range(a.repeats))
                 for name in ("x_prob.tif", "x_mask.tif", "stack.tif")}
        print("bit-identical outputs: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in equal.items()))
        print(json.dumps({"base": a.base, "seconds": {f"{k[0]}/{k[1]}": v for k, v in secs.items()},
                          "identical": equal}))


if __name__ == "__main__":
    main()
