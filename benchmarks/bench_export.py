"""Benchmark the exported artefacts on the same tiles: PyTorch eager fp32, ONNX Runtime fp32 and INT8.

Targets: ONNX Runtime fp32 >= 1.5x PyTorch eager, INT8 >= 2x ONNX Runtime fp32 with
>= 99 % mask agreement. On a CUDA machine it also measures PyTorch fp32 vs fp16 (peak GPU memory
via ``torch.cuda.max_memory_allocated``), ONNX Runtime CUDA on the fp16 model and a TensorRT
engine where tensorrt is installed; elsewhere it prints "not available" with the reason.

Without ``--bundle`` a toy bundle is made (``tests/toy_bundle.py``: U-Net-ResNet34, 23 bands,
briefly fitted so the mask is mixed). The timed tiles are cut from a generated Tapin-like scene
run through ``prepare_scene``; every model sees the same normalised tiles; each timing is the
best of ``--repeat`` passes after one warm-up batch, the CPU models taking turns pass by pass.

Usage:
    python benchmarks/bench_export.py [--bundle DIR] [--tiles 32] [--tile 128] [--batch 8] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # toy_bundle


def _time(fn, x: np.ndarray, batch: int, repeat: int) -> tuple[float, np.ndarray]:
    """Best wall time of ``repeat`` passes over ``x`` in batches (after a warm-up batch)."""
    fn(x[:batch])
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        parts = [fn(x[i : i + batch]) for i in range(0, len(x), batch)]
        best = min(best, time.perf_counter() - t0)
        out = np.concatenate(parts)
    return best, out


def _ort(path: Path, threads: int, providers: list[str] | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess, (lambda a: sess.run(None, {name: a})[0])


def _agreement(a: np.ndarray, b: np.ndarray, logit_thr: float) -> float:
    return float(np.mean((a > logit_thr) == (b > logit_thr)))


def _time_interleaved(fns: dict, x: np.ndarray, batch: int, repeat: int) -> dict:
    """Like :func:`_time` for several models, taking turns pass by pass.

    On a shared machine the load changes minute by minute; interleaving the passes gives every
    model the same mix of quiet and busy moments instead of favouring whichever ran first.
    """
    for fn in fns.values():
        fn(x[:batch])
    best = dict.fromkeys(fns, float("inf"))
    outs = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            parts = [fn(x[i : i + batch]) for i in range(0, len(x), batch)]
            best[name] = min(best[name], time.perf_counter() - t0)
            outs[name] = np.concatenate(parts)
    return {name: (best[name], outs[name]) for name in fns}


def cpu_rows(bundle, x: np.ndarray, batch: int, threads: int, repeat: int) -> list[tuple]:
    import torch
    from coalmine.train.model import load_model

    torch.set_num_threads(threads)
    thr = float(np.log(bundle.threshold / (1 - bundle.threshold)))
    model = load_model(bundle)

    def torch_fn(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(a)).numpy()

    _, f32 = _ort(bundle.file("onnx"), threads)
    _, f8 = _ort(bundle.file("onnx_int8"), threads)
    res = _time_interleaved({"pt": torch_fn, "f32": f32, "i8": f8}, x, batch, repeat)
    (t_pt, y_pt), (t_32, y_32), (t_8, y_8) = res["pt"], res["f32"], res["i8"]
    return [
        ("PyTorch eager fp32 (CPU)", t_pt, None, "baseline"),
        ("ONNX Runtime fp32 (CPU)", t_32, _agreement(y_32, y_pt, thr),
         f"{t_pt / t_32:.2f}x PyTorch (target >= 1.5x)"),
        ("ONNX Runtime INT8 QDQ (CPU)", t_8, _agreement(y_8, y_32, thr),
         f"{t_32 / t_8:.2f}x ORT fp32 (target >= 2x)"),
    ]


def cuda_rows(bundle, x: np.ndarray, batch: int, repeat: int, tile: int) -> list[tuple] | str:
    """GPU figures, or the reason they are not available."""
    import torch

    if not torch.cuda.is_available():
        return "not available (no CUDA GPU: torch.cuda.is_available() is False)"
    from coalmine.train.model import load_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    thr = float(np.log(bundle.threshold / (1 - bundle.threshold)))
    rows = []
    model = load_model(bundle, device="cuda")

    def run(dtype):
        def fn(a: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                out = model(torch.from_numpy(a).cuda()).float().cpu().numpy()
            return out
        return fn

    peaks = {}
    outs = {}
    for label, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        t, y = _time(run(dtype), x, batch, repeat)
        peaks[label] = torch.cuda.max_memory_allocated() / 2**30
        outs[label] = y
        rows.append((f"PyTorch eager {label} (CUDA, batch {batch}, peak {peaks[label]:.2f} GiB)", t,
                     None if label == "fp32" else _agreement(y, outs["fp32"], thr),
                     "GPU baseline" if label == "fp32" else f"{rows[0][1] / t:.2f}x PyTorch fp32"))
    t_base = rows[0][1]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers() and bundle.has("onnx_fp16"):
        _, f = _ort(bundle.file("onnx_fp16"), 1, ["CUDAExecutionProvider"])
        t, y = _time(f, x, batch, repeat)
        rows.append(("ONNX Runtime CUDA fp16", t, _agreement(y, outs["fp32"], thr), f"{t_base / t:.2f}x PyTorch fp32"))
    else:
        rows.append(("ONNX Runtime CUDA fp16", float("nan"), None, "not available (onnxruntime-gpu not installed)"))
    if importlib.util.find_spec("tensorrt") is not None:
        from coalmine.runtime.backends.tensorrt import build_gated, engine_source

        src = engine_source(bundle)
        be, rep = build_gated(bundle, tile=tile, max_batch=batch, workspace_bytes=1 << 30, when="benchmark")
        if be is None:
            rows.append((f"TensorRT ({src.name})", float("nan"), None, f"failed its gate: {rep.summary()}"))
            return rows
        with be:
            t, y = _time(be.infer, x, batch, repeat)
        rows.append((f"TensorRT ({src.name})", t, _agreement(y, outs["fp32"], thr), f"{t_base / t:.2f}x PyTorch fp32"))
    else:
        rows.append(("TensorRT", float("nan"), None, "not available (tensorrt not installed)"))
    return rows


def print_table(title: str, rows: list[tuple], n: int) -> None:
    print(f"\n{title}")
    print(f"{'model':<58} {'tiles/s':>8} {'ms/tile':>8} {'mask agr.':>10}  ratio")
    for name, t, agr, ratio in rows:
        tps = n / t if t == t else float("nan")
        ms = 1000 * t / n if t == t else float("nan")
        a = "-" if agr is None else f"{100 * agr:.3f}%"
        print(f"{name:<58} {tps:>8.2f} {ms:>8.1f} {a:>10}  {ratio}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, help="a trained bundle (default: make a toy one)")
    ap.add_argument("--tiles", type=int, default=32, help="number of tiles timed")
    ap.add_argument("--tile", type=int, default=128, help="tile size (the study's training tile is 128)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from coalmine.export.api import export_bundle
    from coalmine.runtime.bundle import load_bundle
    from toy_bundle import synth_tiles

    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    try:
        if args.bundle:
            bdir = work / "bundle"
            shutil.copytree(args.bundle, bdir)
        else:
            from toy_bundle import make_toy_bundle

            bdir = make_toy_bundle(work / "bundle", n_val=16, tile=args.tile, threads=args.threads)
        t0 = time.perf_counter()
        export_bundle(bdir, fp16=True, int8=True, engine=False, progress=False)
        t_export = time.perf_counter() - t0
        bundle = load_bundle(bdir)
        raw, _ = synth_tiles(args.tiles, args.tile, seed=123)
        x = bundle.normalization.apply(raw)
        print(f"coal-export benchmark: {args.tiles} tiles of 23x{args.tile}x{args.tile}, batch {args.batch}, "
              f"{args.threads} CPU threads, best of {args.repeat}; export (fp32+fp16+int8 with gates) took "
              f"{t_export:.1f} s")
        rows = cpu_rows(bundle, x, args.batch, args.threads, args.repeat)
        print_table("CPU", rows, len(x))
        gpu = cuda_rows(bundle, x, args.batch, args.repeat, args.tile)
        if isinstance(gpu, str):
            print(f"\nCUDA: {gpu}")
        else:
            print_table("CUDA", gpu, len(x))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
