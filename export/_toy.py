"""A small, briefly fitted bundle for tests and benchmarks when no trained bundle is at hand.

A randomly initialised U-Net gives near-constant logits far from the threshold, so every
conversion "agrees" with it and a parity gate would prove nothing. This module makes raw
23-band tiles whose values look like a prepared stack (reflectance, indices, VV in dB, GLCM
textures, NaN nodata), draws "mine" blobs into them, fits the U-Net-ResNet34 for a few
steps and re-estimates the BatchNorm statistics, so the mask is mixed, follows the input and
has plenty of pixels near the decision threshold. It is not a model of anything real.

Example:
    >>> from coalmine.export._toy import make_toy_bundle
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
) -> Path:
    """Write a bundle (bundle.json, model.pt, val_tiles.npz) with a briefly fitted U-Net.

    Args:
        out_dir: bundle folder to create.
        n_val: number of validation tiles saved in ``val_tiles.npz``.
        tile: validation tile size and the bundle's tile size (a multiple of 32).
        steps: optimiser steps on 32 x 32 training tiles (20 take a few seconds on 2 cores).
        seed: seed for data and weights.
        bundle_id: identifier stored in bundle.json.
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
        return _make(Path(out_dir), n_val, tile, steps, seed, bundle_id)
    finally:
        torch.set_num_threads(saved_threads)


def _make(out: Path, n_val: int, tile: int, steps: int, seed: int, bundle_id: str) -> Path:
    import torch
    from coalmine.train.model import build_model, save_model

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    spec = ModelSpec()
    model = build_model(spec)
    xt, yt = make_tiles(32, 32, seed=seed + 1)
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
    # A few steps leave BatchNorm running statistics far from the data; re-estimate them
    # as a cumulative average so eval-mode outputs are sensible.
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    with torch.no_grad():
        for i in range(0, len(xt_n), 8):
            model(xt_n[i : i + 8])
    model.eval()
    save_model(model, spec, out / "model.pt")
    xv, yv = make_tiles(n_val, tile, seed=seed + 2)
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
        training={"note": "toy bundle: a few optimiser steps on generated tiles", "seed": seed},
    ).save()
    return out
