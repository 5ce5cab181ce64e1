"""A small, briefly fitted bundle for tests and benchmarks when no trained bundle is at hand.

A randomly initialised U-Net gives near-constant logits far from the threshold, so every
conversion "agrees" with it and a parity gate would prove nothing. This module cuts raw
23-band tiles from generated Tapin-like scenes run through the real preprocessing
(``coalmine.train.synth`` + ``prepare_scene``; or, with ``source="generated"``, from a quick
stand-in that mimics a stack's value ranges), fits the U-Net-ResNet34 for a few steps and
re-estimates the BatchNorm statistics, so the mask is mixed, follows the input and has plenty
of pixels near the decision threshold. It is not a model of anything real.

Example:
    >>> from toy_bundle import make_toy_bundle   # tests/ on sys.path  # doctest: +SKIP
    >>> bundle_dir = make_toy_bundle("/tmp/toy", n_val=8, tile=64)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from coalmine.runtime.bands import BAND_NAMES
from coalmine.runtime.bundle import Bundle, ModelSpec, Normalization, Preprocessing

# Per-band (background, mine) means of a plausible stack; mines are bare, dark-ish, rough.
_S2_BG = np.array([0.04, 0.07, 0.05, 0.11, 0.22, 0.27, 0.30, 0.17, 0.08], dtype=np.float32)
_S2_MINE = np.array([0.09, 0.11, 0.13, 0.15, 0.17, 0.19, 0.20, 0.26, 0.22], dtype=np.float32)


def make_tiles(
    n: int, size: int = 64, *, seed: int = 0, nodata_share: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Generate raw (un-normalised) stack tiles and labels.

    Args:
        n: number of tiles.
        size: tile height and width in pixels.
        seed: random seed (the result is deterministic for a seed).
        nodata_share: rough share of tiles that get a NaN nodata strip (as at a swath edge).

    Returns:
        ``x`` float32 (n, 23, size, size) with NaN nodata and ``y`` uint8 (n, size, size)
        (1 = mine, 0 = background, 255 where the input is nodata).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    x = np.empty((n, len(BAND_NAMES), size, size), dtype=np.float32)
    y = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        mine = np.zeros((size, size), dtype=bool)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(size / 12, size / 4, 2)
            mine |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
        m = mine.astype(np.float32)
        s2 = _S2_BG[:, None, None] * (1 - m) + _S2_MINE[:, None, None] * m
        s2 = s2 * rng.normal(1.0, 0.12, s2.shape).astype(np.float32)
        s2 = np.clip(s2, 0.001, 1.0)
        b02, b04, b08, b11 = s2[0], s2[2], s2[6], s2[7]
        vv = -11.0 + 4.0 * m + rng.normal(0.0, 1.5, (size, size)).astype(np.float32)
        tex = rng.normal(1.0, 0.2, (10, size, size)).astype(np.float32) * (1.0 + 0.8 * m)
        x[i, :9] = s2
        x[i, 9] = (b08 - b04) / (b08 + b04)
        x[i, 10] = (b08 - b11) / (b08 + b11)
        x[i, 11] = (b02 - b08) / (b02 + b08)
        x[i, 12] = vv
        x[i, 13:] = tex
        y[i] = mine
        if rng.random() < nodata_share * 4:  # a NaN strip along one edge, labels nodata there
            w = int(rng.integers(2, max(3, size // 6)))
            x[i, :, :, :w] = np.nan
            y[i, :, :w] = 255
    return x, y


def synth_stack(side: int, *, seed: int = 0, work_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A generated Tapin-like scene run through the real preprocessing.

    ``coalmine.train.synth.make_scene`` writes Sentinel-2 L2A-like DN bands, a Sentinel-1
    sigma0 raster on another grid and labels; ``coal-prepare``'s ``prepare_scene`` turns them into
    the 23-band stack (reflectance, indices, VV dB, speckle filter, GLCM).

    Returns:
        the stack float32 (23, side, side) with NaN nodata and the labels uint8 (side, side),
        255 wherever the label or any band is nodata.
    """
    import tempfile

    import rasterio
    from coalmine.runtime.preprocess import prepare_scene
    from coalmine.train.synth import make_scene

    side += side % 2
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        sc = make_scene(tmp, 2019, seed=seed, size=side)
        stack = prepare_scene(sc.s2_dir, sc.s1_path, Path(tmp) / "stack.tif", progress=False)
        with rasterio.open(stack) as ds:
            full = ds.read().astype(np.float32)
        with rasterio.open(sc.label_path) as ds:
            lab = ds.read(1)
    lab = np.where(np.isfinite(full).all(axis=0), lab, 255).astype(np.uint8)
    return full, lab


def cut_tiles(full: np.ndarray, lab: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a (C, H, W) stack and its (H, W) labels into non-overlapping size x size tiles."""
    c = full.shape[0]
    ky, kx = full.shape[1] // size, full.shape[2] // size
    xs = full[:, : ky * size, : kx * size].reshape(c, ky, size, kx, size).transpose(1, 3, 0, 2, 4)
    ys = lab[: ky * size, : kx * size].reshape(ky, size, kx, size).transpose(0, 2, 1, 3)
    return xs.reshape(ky * kx, c, size, size), ys.reshape(ky * kx, size, size)


def synth_tiles(
    n: int,
    size: int,
    *,
    seed: int = 0,
    prefer_mines: bool = True,
    work_dir: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` tiles of ``size`` cut from :func:`synth_stack` (a scene with twice as many tiles).

    With ``prefer_mines`` the tiles with the most mine pixels are taken (a small validation set
    still has both classes); otherwise a random choice (the natural class balance).

    Returns:
        ``x`` float32 (n, 23, size, size) raw with NaN nodata, ``y`` uint8 (n, size, size).
    """
    side = int(np.ceil(np.sqrt(max(n, 1) * 2))) * size
    xs, ys = cut_tiles(*synth_stack(side, seed=seed, work_dir=work_dir), size)
    if prefer_mines:
        order = np.argsort(-(ys == 1).sum(axis=(1, 2)), kind="stable")[:n]
    else:
        order = np.random.default_rng(seed).permutation(len(ys))[:n]
    return np.ascontiguousarray(xs[order]), np.ascontiguousarray(ys[order])


def fit_normalization(x: np.ndarray) -> Normalization:
    """Per-band mean/std of raw tiles, ignoring NaN (what coal-train stores)."""
    mean = np.nanmean(x, axis=(0, 2, 3)).astype(np.float64)
    std = np.nanstd(x, axis=(0, 2, 3)).astype(np.float64)
    std = np.where(std > 1e-6, std, 1.0)
    return Normalization(mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


def make_toy_bundle(
    out_dir: str | Path,
    *,
    n_val: int = 8,
    tile: int = 64,
    steps: int = 20,
    seed: int = 0,
    bundle_id: str = "toy-unet-resnet34",
    threads: int | None = 1,
    source: str = "synth",
) -> Path:
    """Write a bundle (bundle.json, model.pt, val_tiles.npz) with a briefly fitted U-Net.

    Args:
        out_dir: bundle folder to create.
        n_val: number of validation tiles saved in ``val_tiles.npz``.
        tile: validation tile size and the bundle's tile size (a multiple of 32).
        steps: optimiser steps on 32 x 32 training tiles (20 take a few seconds on 2 cores).
        seed: seed for data and weights.
        bundle_id: identifier stored in bundle.json.
        source: "synth" (tiles from ``coalmine.train.synth`` scenes through ``prepare_scene``:
            the real preprocessing chain) or "generated" (:func:`make_tiles`, no rasterio work).
        threads: torch intra-op threads while fitting (restored afterwards; None = leave as is).
            One thread is several times faster than two contending ones on a shared small VM.

    Returns:
        The bundle folder.
    """
    import torch

    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _make(Path(out_dir), n_val, tile, steps, seed, bundle_id, source)
    finally:
        torch.set_num_threads(saved_threads)


def _make(out: Path, n_val: int, tile: int, steps: int, seed: int, bundle_id: str, source: str) -> Path:
    import torch
    from coalmine.train.model import build_model, save_model

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    spec = ModelSpec()
    model = build_model(spec)
    if source == "synth":
        full, lab = synth_stack(max(384, 3 * tile), seed=seed + 1)
        xt, yt = cut_tiles(full, lab, 32)
        xb, _ = cut_tiles(full, lab, tile)
        del full, lab
        xv, yv = synth_tiles(n_val, tile, seed=seed + 2)
    else:
        xt, yt = make_tiles(64, 32, seed=seed + 1)
        xb, _ = make_tiles(8, tile, seed=seed + 3)
        xv, yv = make_tiles(n_val, tile, seed=seed + 2)
    norm = fit_normalization(xt)
    xt_n = torch.from_numpy(norm.apply(xt))
    target = torch.from_numpy((yt == 1).astype(np.float32))[:, None]
    weight = torch.from_numpy((yt != 255).astype(np.float32))[:, None]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(xt), 8, replace=False))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(xt_n[idx]), target[idx], weight=weight[idx]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    # A few steps leave BatchNorm running statistics far from the data; re-estimate them as a
    # cumulative average over training-scene tiles at the bundle's tile size (at 32 x 32 the
    # deepest feature map is 1 x 1 and its statistics do not carry over to larger tiles).
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    xb_n = torch.from_numpy(norm.apply(xb))
    with torch.no_grad():
        for i in range(0, min(len(xb_n), 16), 4):
            model(xb_n[i : i + 4])
    model.eval()
    save_model(model, spec, out / "model.pt")
    np.savez_compressed(out / "val_tiles.npz", x=xv, y=yv)
    Bundle(
        path=out,
        bundle_id=bundle_id,
        bands=BAND_NAMES,
        preprocessing=Preprocessing(),
        normalization=norm,
        model=spec,
        tile_size=tile,
        overlap=min(32, tile // 4),
        training={"note": f"toy bundle: a few optimiser steps on {source} tiles", "seed": seed},
    ).save()
    return out
