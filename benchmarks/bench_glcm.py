"""Benchmark the GLCM kernel against scikit-image and a vectorised NumPy baseline.

Input: a synthetic Sentinel-1 VV image in dB — a smooth backscatter field times gamma speckle
(ENL 4.4, like a multi-looked GRD) — quantized with equal-width edges over -25..5 dB into
L = 32 levels; window W = 9, distances d = 1 and 4 (SNAP's default).

Prints one table of Mpx/s for: this kernel on 1 thread and on all cores; scikit-image per-window
graycomatrix + graycoprops (a small crop); a vectorised NumPy baseline (per-window counts with
bincount over stacked windows, a moderate crop); the ratios, all measured in this run; and the
time to texture a whole 10980 x 10980 Sentinel-2 tile, processed in row blocks with glcm_block
as coal-prepare does, keeping only a running checksum.

    python benchmarks/bench_glcm.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_glcm.py --quick    # smaller crops; scene measured on 1/16, scaled x16
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import numpy as np
from coalmine.runtime.texture import (
    FEATURES,
    equal_width_edges,
    glcm_block,
    glcm_features,
    quantize,
)

L, W = 32, 9
ENL = 4.4
SCENE = 10980
EDGES = equal_width_edges(-25.0, 5.0, L)


def synthetic_vv_db(rows: int, cols: int, seed: int = 0, row_off: int = 0) -> np.ndarray:
    """Speckled VV in dB: a smooth field (fields, water, slopes) times gamma speckle of ENL 4.4.

    The field is an analytic function of the absolute row/column, so blocks of one scene can be
    generated separately and agree; speckle is seeded per block.
    """
    r = (np.arange(rows, dtype=np.float64) + row_off)[:, None]
    c = np.arange(cols, dtype=np.float64)[None, :]
    field_db = (
        -12.0
        + 4.0 * np.sin(r / 97.0) * np.cos(c / 131.0)
        + 2.5 * np.sin((r + 2 * c) / 23.0)
        - 8.0 * (np.sin(r / 400.0 + c / 530.0) > 0.93)  # water bodies: dark
    )
    rng = np.random.default_rng([seed, row_off])
    speckle = rng.gamma(ENL, 1.0 / ENL, size=(rows, cols))
    return (field_db + 10.0 * np.log10(speckle)).astype(np.float32)


def levels_image(n: int, seed: int = 0) -> np.ndarray:
    return quantize(synthetic_vv_db(n, n, seed), EDGES)


def best_times(fn, repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time (all threads of this process) over `repeat` runs.

    On a shared machine the wall time depends on what else runs; CPU seconds much less so.
    """
    wall = cpu = math.inf
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


# --- baselines ------------------------------------------------------------------------------------


def skimage_per_window(levels: np.ndarray, d: int) -> np.ndarray:
    """Per-pixel scikit-image: one graycomatrix + graycoprops per window (nine features)."""
    from skimage.feature import graycomatrix, graycoprops

    h = W // 2
    rows, cols = levels.shape
    names = ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "entropy", "mean",
             "variance", "correlation")
    out = np.empty((len(names), rows, cols))
    for y in range(rows):
        for x in range(cols):
            win = levels[max(0, y - h) : y + h + 1, max(0, x - h) : x + h + 1]
            # skimage's offset is (round(r sin a), round(r cos a)): the diagonals need r = d*sqrt 2.
            g = graycomatrix(win, [d], [0, np.pi / 2], levels=L, symmetric=True).sum(axis=(2, 3))
            g = g + graycomatrix(win, [d * math.sqrt(2)], [np.pi / 4, 3 * np.pi / 4], levels=L,
                                 symmetric=True).sum(axis=(2, 3))
            p = (g / g.sum())[:, :, None, None]
            for k, name in enumerate(names):
                out[k, y, x] = graycoprops(p, name)[0, 0]
    return out


def numpy_vectorised(levels: np.ndarray, d: int, chunk: int = 2048) -> np.ndarray:
    """Vectorised NumPy: per-window co-occurrence counts by one bincount over stacked windows.

    The raster is padded with nodata (a pair with a padded pixel is dropped, which is exactly the
    clipping convention), pair codes are computed once per offset, the codes of each window are
    gathered with sliding_window_view, and all windows of a chunk are counted with one bincount.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    h = W // 2
    rows, cols = levels.shape
    pad = np.pad(levels.astype(np.int32), h, constant_values=255)
    dump = L * L  # bin for pairs with a nodata pixel
    views = []
    for dr, dc in ((0, d), (d, d), (d, 0), (d, -d)):
        c_start = max(0, -dc)
        a = pad[: pad.shape[0] - dr, c_start : pad.shape[1] - max(0, dc)]
        b = pad[dr:, c_start + dc : pad.shape[1] - max(0, dc) + dc]
        code = np.where((a == 255) | (b == 255), dump, a * L + b)
        views.append(sliding_window_view(code, (W - dr, W - abs(dc)))[:rows, :cols])
    i, j = np.divmod(np.arange(L * L), L)
    out = np.empty((10, rows * cols))
    for start in range(0, rows * cols, chunk):
        idx = np.arange(start, min(start + chunk, rows * cols))
        y, x = np.divmod(idx, cols)
        codes = np.concatenate([v[y, x].reshape(idx.size, -1) for v in views], axis=1)
        flat = codes + (np.arange(idx.size) * (dump + 1))[:, None]
        cnt = np.bincount(flat.ravel(), minlength=idx.size * (dump + 1))
        cnt = cnt.reshape(idx.size, dump + 1)[:, :dump].reshape(idx.size, L, L)
        m = (cnt + cnt.transpose(0, 2, 1)).reshape(idx.size, dump).astype(np.float64)
        n = m.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = m / n
            asm = (p * p).sum(1)
            mu = p @ i
            var = p @ (i * i) - mu**2
            cov = p @ (i * j) - mu**2
            plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0)
            out[:, idx] = [
                p @ ((i - j) ** 2),
                p @ np.abs(i - j),
                p @ (1.0 / (1.0 + (i - j) ** 2)),
                asm,
                np.sqrt(asm),
                p.max(1),
                -plogp.sum(1),
                mu,
                var,
                np.where(var > 1e-15, cov / np.where(var > 1e-15, var, 1), 1.0),
            ]
    return out.reshape(10, rows, cols)


# --- the whole-scene run --------------------------------------------------------------------------


def scene_run(size: int, d: int, block: int = 512) -> tuple[float, float, float, float]:
    """Texture a size x size scene in row blocks via glcm_block; only a checksum is kept.

    Returns (wall and CPU seconds for the GLCM only, seconds for synthesis + quantization,
    checksum).
    """
    levels = np.empty((size, size), np.uint8)
    t0 = time.perf_counter()
    for r in range(0, size, block):
        n = min(block, size - r)
        levels[r : r + n] = quantize(synthetic_vv_db(n, size, seed=1, row_off=r), EDGES)
    t_make = time.perf_counter() - t0
    checksum = 0.0
    t_glcm = c_glcm = 0.0
    for r in range(0, size, block):
        n = min(block, size - r)
        t0, c0 = time.perf_counter(), time.process_time()
        f = glcm_block(levels, (r, 0, n, size), L, window_size=W, distance=d)
        t_glcm += time.perf_counter() - t0
        c_glcm += time.process_time() - c0
        checksum += float(np.nansum(f[FEATURES.index("entropy")], dtype=np.float64))
    return t_glcm, c_glcm, t_make, checksum


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small crops; scene on 1/16, scaled x16")
    ap.add_argument("--no-scene", action="store_true", help="skip the 10980 x 10980 scene run")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for the all-cores run (default: all cores)")
    args = ap.parse_args(argv)

    n_ours = 1024 if args.quick else 2048
    n_numpy = 96 if args.quick else 192
    n_sk = 12 if args.quick else 24
    repeat = 2 if args.quick else 3
    cores = args.threads

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, NumPy {np.__version__}", file=sys.stderr)
    load0 = os.getloadavg()[0]
    img = levels_image(n_ours)
    print(f"input: {n_ours}x{n_ours} synthetic VV dB (gamma speckle ENL {ENL}), L={L}, W={W}; "
          f"levels used: {np.unique(img).size}", file=sys.stderr)

    rows = []
    for d in (1, 4):
        t1, c1 = best_times(lambda d=d: glcm_features(img, L, W, d, threads=1), repeat)
        tn, cn = best_times(lambda d=d: glcm_features(img, L, W, d, threads=cores), repeat)
        ours1, oursn = img.size / t1 / 1e6, img.size / tn / 1e6
        cpu1, work = img.size / c1 / 1e6, c1 / cn

        crop = np.ascontiguousarray(img[:n_numpy, :n_numpy])
        t_np, c_np = best_times(lambda d=d, crop=crop: numpy_vectorised(crop, d), 1)
        np_rate, np_cpu = crop.size / t_np / 1e6, crop.size / c_np / 1e6
        ref = numpy_vectorised(crop, d)
        agree_np = np.allclose(glcm_features(crop, L, W, d), ref, rtol=1e-5, atol=1e-6, equal_nan=True)

        skc = np.ascontiguousarray(img[:n_sk, :n_sk])
        t_sk, c_sk = best_times(lambda d=d, skc=skc: skimage_per_window(skc, d), 1)
        sk_rate, sk_cpu = skc.size / t_sk / 1e6, skc.size / c_sk / 1e6
        sk = skimage_per_window(skc, d)
        ours_sk = glcm_features(skc, L, W, d)[[0, 1, 2, 3, 4, 6, 7, 8, 9]]
        agree_sk = np.allclose(ours_sk, sk, rtol=1e-5, atol=1e-6)

        rows.append((d, ours1, oursn, sk_rate, np_rate, agree_sk, agree_np,
                     (cpu1, work, sk_cpu, np_cpu)))

    print()
    print(f"GLCM textures, L={L}, W={W}, synthetic speckled VV; Mpx/s (best of {repeat}); "
          f"ours: {n_ours}x{n_ours}, NumPy: {n_numpy}x{n_numpy}, skimage: {n_sk}x{n_sk} crop")
    hdr = (f"{'d':>2} | {'ours 1 thr':>10} | {f'ours {cores} thr':>10} | {'speed-up':>8} | "
           f"{'skimage':>9} | {'NumPy vec':>9} | {'ours/skimage':>12} | {'ours/NumPy':>10} | "
           f"{'ours/SNAP*':>10} | agree sk/np")
    print(hdr)
    print("-" * len(hdr))
    for d, o1, on, sk, npr, a_sk, a_np, _ in rows:
        print(f"{d:>2} | {o1:>10.2f} | {on:>10.2f} | {on / o1:>7.2f}x | {sk:>9.5f} | {npr:>9.4f} | "
              f"{o1 / sk:>11.0f}x | {o1 / npr:>9.0f}x | {o1 / 0.2:>9.1f}x | "
              f"{'yes' if a_sk else 'NO'}/{'yes' if a_np else 'NO'}")
    print("* SNAP's GLCM operator at about 0.2 Mpx/s (a published figure, not measured here);"
          " speed-up = all cores / 1 thread (wall clock)")
    print()
    print("CPU-time view (less sensitive to other work on a shared machine):")
    for d, *_, (cpu1, work, sk_cpu, np_cpu) in rows:
        print(f"  d={d}: Mpx per CPU-second: ours 1 thread {cpu1:.2f}, skimage {sk_cpu:.5f}, "
              f"NumPy {np_cpu:.4f}; ours/skimage {cpu1 / sk_cpu:.0f}x, ours/NumPy "
              f"{cpu1 / np_cpu:.0f}x; CPU seconds 1 thread / {cores} threads = {work:.2f} "
              f"(1.00 = threading adds no work)")
    print(f"  load average (1 min) before / after: {load0:.1f} / {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")

    if not args.no_scene:
        size = SCENE // 4 if args.quick else SCENE
        scale = (SCENE / size) ** 2
        print()
        print(f"whole scene {SCENE}x{SCENE} ({SCENE * SCENE / 1e6:.1f} Mpx), {cores} threads, "
              f"row blocks of 512 via glcm_block:")
        for d in (1, 4):
            t_glcm, c_glcm, t_make, checksum = scene_run(size, d)
            how = "measured" if scale == 1 else f"measured on {size}x{size}, extrapolated x{scale:.0f}"
            print(f"  d={d}: GLCM {t_glcm * scale:6.1f} s wall ({how}; "
                  f"{size * size / t_glcm / 1e6:.2f} Mpx/s), {c_glcm * scale:.1f} CPU-s "
                  f"(≈ {c_glcm * scale / cores:.1f} s wall on {cores} idle cores); "
                  f"synthesis+quantize {t_make * scale:.1f} s; entropy checksum {checksum:.6e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
