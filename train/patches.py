"""Training patches: where to cut them, the spatially blocked split, and the patch cache.

Planning works on label rasters alone (no image reads):

1. **Candidates** — windows of ``tile`` x ``tile`` on a regular grid (step ``stride``) that lie
   fully inside the scene and whose label nodata share is at most ``max_nodata``.
2. **Spatial blocks** — each candidate belongs to the block (``block_tiles`` x ``tile`` pixels,
   on a grid anchored at the CRS origin) that holds its centre, in **map coordinates**, so
   the same place falls in the same block in every year of a series on one grid.
3. **Split** — whole blocks go to validation (seeded): blocks with mine pixels until the
   validation share of mine pixels reaches ``val_fraction``, then blocks without mine until
   the validation share of the other candidates does. Several seeded draws are compared and
   the one whose mine share after step 4 is closest to ``val_fraction`` (losing the fewest
   mine pixels to the buffer) is kept. Both splits keep mine pixels.
4. **Buffer** — a training patch whose window, grown by ``buffer`` pixels, overlaps a
   validation patch is dropped: no validation pixel lies within ``buffer`` pixels of a
   training patch. Scenes marked ``split = "test"`` are held out whole.
5. **Sampling** — per split every mine patch (mine share >= ``min_mine_fraction``) is kept and
   ``background_ratio`` background patches per mine patch are drawn at random;
   ``max_patches`` caps the train + validation total.

Extraction then reads each planned window once from the scene
(:meth:`SceneSource.read`), marks pixels whose image is nodata as label nodata (255), drops
patches whose nodata share is above ``max_nodata``, and stores everything in a cache folder
of ``.npy`` files (memory-mapped when training) keyed by a fingerprint of the inputs and the
settings, so later runs and ``--resume`` skip the reading.

Example:
    >>> geo = SceneGeo(crs="EPSG:32750", transform=Affine(10, 0, 0, 0, -10, 0), height=512, width=512)
    >>> plan = plan_patches([labels], [geo], ["train"], tile=128)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from coalmine.runtime._io import atomic_folder
from coalmine.runtime.errors import InputError
from rasterio.windows import Window

log = logging.getLogger("coalmine.train.patches")

LABEL_NODATA = 255
#: Seeded draws of validation blocks compared by plan_patches.
SPLIT_TRIALS = 32


@dataclass(frozen=True)
class SceneGeo:
    """The grid of one scene: CRS (any string rasterio accepts), transform, size."""

    crs: str
    transform: Affine
    height: int
    width: int

    @property
    def res(self) -> float:
        return math.hypot(self.transform.a, self.transform.d)


@dataclass(frozen=True)
class Patch:
    """One planned patch: scene index, pixel offset, split, label counts and spatial block."""

    scene: int
    row: int
    col: int
    split: str
    mine: int
    labelled: int
    block: tuple[str, int, int]

    @property
    def is_mine(self) -> bool:
        return self.mine > 0

    def window(self, tile: int) -> Window:
        return Window(self.col, self.row, tile, tile)


def candidate_windows(
    labels: np.ndarray, tile: int, stride: int, max_nodata: float
) -> list[tuple[int, int, int, int]]:
    """Grid windows of a label raster with at most ``max_nodata`` label nodata.

    Args:
        labels: uint8 (H, W), 0 background, 1 mine, 255 nodata.
        tile: window size (pixels).
        stride: step between windows (pixels).
        max_nodata: largest allowed share of nodata pixels in a window.

    Returns:
        ``(row, col, mine_pixels, labelled_pixels)`` per kept window.
    """
    h, w = labels.shape
    out: list[tuple[int, int, int, int]] = []
    if h < tile or w < tile:
        return out
    mine = (labels == 1).astype(np.int64)
    lab = (labels != LABEL_NODATA).astype(np.int64)
    # Integral images give each window's counts in O(1).
    im = np.pad(mine.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    il = np.pad(lab.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    rows = np.arange(0, h - tile + 1, stride)
    cols = np.arange(0, w - tile + 1, stride)
    r0, c0 = np.meshgrid(rows, cols, indexing="ij")
    r1, c1 = r0 + tile, c0 + tile
    n_mine = im[r1, c1] - im[r0, c1] - im[r1, c0] + im[r0, c0]
    n_lab = il[r1, c1] - il[r0, c1] - il[r1, c0] + il[r0, c0]
    ok = n_lab >= (1.0 - max_nodata) * tile * tile
    for r, c, m, n in zip(r0[ok], c0[ok], n_mine[ok], n_lab[ok], strict=True):
        out.append((int(r), int(c), int(m), int(n)))
    return out


def _block_of(geo: SceneGeo, row: int, col: int, tile: int, block_tiles: int) -> tuple[str, int, int]:
    x, y = geo.transform @ (col + tile / 2.0, row + tile / 2.0)
    size = block_tiles * tile * geo.res
    return (geo.crs, math.floor(x / size), math.floor(y / size))


def _bounds(geo: SceneGeo, p: Patch, tile: int) -> tuple[float, float, float, float]:
    t = geo.transform
    xs, ys = zip(*(t @ (p.col + dc, p.row + dr) for dr in (0, tile) for dc in (0, tile)), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def _assign_blocks(
    patches: list[Patch], val_fraction: float, rng: np.random.Generator
) -> set[tuple[str, int, int]]:
    """Choose validation blocks: mine-weighted first, then background-weighted."""
    mine_per_block: dict[tuple[str, int, int], int] = {}
    count_per_block: dict[tuple[str, int, int], int] = {}
    for p in patches:
        mine_per_block[p.block] = mine_per_block.get(p.block, 0) + p.mine
        count_per_block[p.block] = count_per_block.get(p.block, 0) + 1
    blocks = sorted(count_per_block)
    mine_blocks = [b for b in blocks if mine_per_block[b] > 0]
    bg_blocks = [b for b in blocks if mine_per_block[b] == 0]
    if len(mine_blocks) < 2:
        raise InputError(
            f"the labels give {len(mine_blocks)} spatial block(s) with mine pixels; a blocked "
            "train/validation split needs at least 2 — lower block_tiles, lower tile, or add "
            "labelled scenes with more mines"
        )
    val: set[tuple[str, int, int]] = set()
    total_mine = sum(mine_per_block.values())
    got = 0
    for i in rng.permutation(len(mine_blocks)):
        if got >= val_fraction * total_mine or len(val) >= len(mine_blocks) - 1:
            break
        b = mine_blocks[int(i)]
        val.add(b)
        got += mine_per_block[b]
    total_bg = sum(count_per_block[b] for b in bg_blocks)
    got = 0
    for i in rng.permutation(len(bg_blocks)):
        if got >= val_fraction * total_bg:
            break
        b = bg_blocks[int(i)]
        val.add(b)
        got += count_per_block[b]
    return val


def _apply_buffer(patches: list[Patch], geos: Sequence[SceneGeo], tile: int, buffer: int) -> list[Patch]:
    """Drop training patches whose window grown by ``buffer`` px overlaps a validation patch."""
    boxes = np.array([_bounds(geos[p.scene], p, tile) for p in patches], dtype=np.float64).reshape(-1, 4)
    grow = np.array([buffer * geos[p.scene].res for p in patches], dtype=np.float64)
    crs = np.array([geos[p.scene].crs for p in patches], dtype=object)
    is_val = np.array([p.split == "val" for p in patches], dtype=bool)
    drop = np.zeros(len(patches), dtype=bool)
    for c in set(crs.tolist()):
        vb = boxes[is_val & (crs == c)]
        tr = np.flatnonzero(~is_val & (crs == c))
        if len(vb) == 0 or len(tr) == 0:
            continue
        for k in range(0, len(tr), 512):
            t = tr[k : k + 512]
            tb, g = boxes[t][:, None, :], grow[t][:, None]
            # Strict inequalities: windows that only touch (buffer 0) do not overlap.
            hit = (
                (vb[None, :, 0] < tb[..., 2] + g)
                & (vb[None, :, 2] > tb[..., 0] - g)
                & (vb[None, :, 1] < tb[..., 3] + g)
                & (vb[None, :, 3] > tb[..., 1] - g)
            )
            drop[t] = hit.any(axis=1)
    return [p for p, d in zip(patches, drop, strict=True) if not d]


def _sample(
    patches: list[Patch], min_mine_fraction: float, background_ratio: float, rng: np.random.Generator
) -> tuple[list[Patch], list[Patch]]:
    mine = [p for p in patches if p.labelled and p.mine / p.labelled >= min_mine_fraction]
    rest = [p for p in patches if not (p.labelled and p.mine / p.labelled >= min_mine_fraction)]
    n_bg = min(len(rest), int(round(background_ratio * len(mine))))
    pick = rng.permutation(len(rest))[:n_bg]
    return mine, [rest[int(i)] for i in sorted(pick)]


def plan_patches(
    labels: Sequence[np.ndarray],
    geos: Sequence[SceneGeo],
    splits: Sequence[str],
    *,
    tile: int = 128,
    stride: int | None = None,
    min_mine_fraction: float = 0.01,
    background_ratio: float = 0.5,
    max_nodata: float = 0.2,
    max_patches: int | None = None,
    val_fraction: float = 0.2,
    block_tiles: int = 4,
    buffer: int | None = None,
    seed: int = 0,
) -> list[Patch]:
    """Plan the patches of all scenes and split them (see the module docstring).

    Args:
        labels: per scene, uint8 (H, W) labels on the scene grid (0, 1, 255 nodata).
        geos: per scene, its grid.
        splits: per scene, "train" (blocked train/validation split) or "test" (held out).
        tile, stride, min_mine_fraction, background_ratio, max_nodata, max_patches,
        val_fraction, block_tiles, buffer, seed: as in :class:`~coalmine.train.config.TrainConfig`.

    Returns:
        Patches with ``split`` in {"train", "val", "test"}, ordered by scene, row, column.

    Raises:
        InputError: no mine pixel in the training scenes, too few blocks with mines to
            split, or a split left without mine patches.
    """
    stride = stride or tile
    buffer = tile // 2 if buffer is None else buffer
    rng = np.random.default_rng(seed)
    train_c: list[Patch] = []
    test_c: list[Patch] = []
    for i, (lab, geo, split) in enumerate(zip(labels, geos, splits, strict=True)):
        for r, c, m, n in candidate_windows(lab, tile, stride, max_nodata):
            p = Patch(i, r, c, "test" if split == "test" else "train", m, n, _block_of(geo, r, c, tile, block_tiles))
            (test_c if split == "test" else train_c).append(p)
    if not train_c:
        raise InputError(
            f"no {tile}x{tile} patch of the training scenes has at most {max_nodata:.0%} nodata in "
            "its labels; check that the labels cover the scenes, or lower tile / raise max_nodata"
        )
    if sum(p.mine for p in train_c) == 0:
        raise InputError(
            "the training labels contain no mine pixel (value 1) inside the scenes: the label set is "
            "empty; check the label files (mine = 1, background = 0) and that they cover the scenes"
        )
    # Several seeded draws of validation blocks; keep the one whose mine share after the
    # buffer is closest to val_fraction while losing the fewest mine pixels to the buffer.
    total_mine = sum(p.mine for p in train_c)
    best: tuple[float, list[Patch]] | None = None
    for _ in range(SPLIT_TRIALS):
        val_blocks = _assign_blocks(train_c, val_fraction, rng)
        cand = [
            Patch(p.scene, p.row, p.col, "val" if p.block in val_blocks else "train", p.mine, p.labelled, p.block)
            for p in train_c
        ]
        cand = _apply_buffer(cand, geos, tile, buffer)
        m_tr = sum(p.mine for p in cand if p.split == "train")
        m_va = sum(p.mine for p in cand if p.split == "val")
        if m_tr == 0 or m_va == 0:
            continue
        score = abs(m_va / (m_tr + m_va) - val_fraction) + 0.5 * (1.0 - (m_tr + m_va) / total_mine)
        if best is None or score < best[0] - 1e-12:
            best = (score, cand)
    if best is None:
        raise InputError(
            f"no spatially blocked split leaves mine pixels in both splits (block {block_tiles} tiles, "
            f"buffer {buffer} px); lower block_tiles or buffer, or add labelled area"
        )
    split_c = best[1]
    out: list[Patch] = []
    for name, group in (("train", [p for p in split_c if p.split == "train"]), ("val", [p for p in split_c if p.split == "val"])):
        mine, bg = _sample(group, min_mine_fraction, background_ratio, rng)
        if not mine:
            raise InputError(
                f"the {name} split has no patch with at least {min_mine_fraction:.0%} mine pixels after "
                f"the spatial blocking (buffer {buffer} px); lower block_tiles or buffer, or add labelled area"
            )
        out.extend(mine + bg)
    if max_patches is not None and len(out) > max_patches:
        # Cap each split in proportion, keeping at least one mine patch in each.
        total = len(out)
        capped: list[Patch] = []
        for name in ("train", "val"):
            group = [p for p in out if p.split == name]
            k = max(1, int(round(max_patches * len(group) / total)))
            pick = [group[int(i)] for i in rng.permutation(len(group))[:k]]
            if not any(p.is_mine for p in pick):
                pick[0] = next(p for p in group if p.is_mine)
            capped.extend(pick)
        out = capped
    if test_c:
        mine, bg = _sample(test_c, min_mine_fraction, background_ratio, rng)
        out.extend(mine + bg)
    return sorted(out, key=lambda p: (p.scene, p.row, p.col))


# -- extraction and cache ---------------------------------------------------------------------

Reader = Callable[[int, Window], np.ndarray]


@dataclass
class PatchSet:
    """Extracted patches in a cache folder: ``x.npy`` (N, C, T, T) float32 raw with NaN nodata,
    ``y.npy`` (N, T, T) uint8 (255 = nodata, incl. image nodata), ``patches.json`` (plan)."""

    folder: Path
    x: np.ndarray
    y: np.ndarray
    patches: list[Patch]
    meta: dict[str, Any]

    def indices(self, split: str) -> np.ndarray:
        return np.array([i for i, p in enumerate(self.patches) if p.split == split], dtype=np.int64)


COMPLETE = "COMPLETE"


def load_patch_cache(folder: Path) -> PatchSet | None:
    """Open a complete cache folder (memory-mapped), or return None if absent/incomplete."""
    folder = Path(folder)
    if not (folder / COMPLETE).is_file():
        return None
    meta = json.loads((folder / "patches.json").read_text(encoding="utf-8"))
    patches = [Patch(**{**d, "block": tuple(d["block"])}) for d in meta.pop("patches")]
    x = np.load(folder / "x.npy", mmap_mode="r")
    y = np.load(folder / "y.npy", mmap_mode="r")
    return PatchSet(folder, x, y, patches, meta)


def extract_patches(
    plan: Sequence[Patch],
    read: Reader,
    labels: Sequence[np.ndarray],
    folder: Path,
    *,
    tile: int,
    n_bands: int,
    max_nodata: float,
    meta: dict[str, Any] | None = None,
    progress: bool = False,
) -> PatchSet:
    """Read each planned window once and write the patch cache folder.

    Args:
        plan: patches from :func:`plan_patches`.
        read: ``read(scene_index, window) -> float32 (n_bands, tile, tile)`` with NaN nodata.
        labels: per scene, the uint8 label raster on the scene grid.
        folder: cache folder to create (written under a temporary name, renamed when complete).
        tile, n_bands: patch size and band count.
        max_nodata: patches with a larger nodata share (image or label) are dropped here.
        meta: extra JSON-ready information stored in ``patches.json``.
        progress: show a tqdm bar on stderr.

    Returns:
        The :class:`PatchSet` (memory-mapped).

    Raises:
        InputError: a read returned the wrong shape or band count.
    """
    from tqdm import tqdm

    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        n = len(plan)
        x = np.lib.format.open_memmap(tmp / "x_all.npy", mode="w+", dtype=np.float32, shape=(n, n_bands, tile, tile))
        y = np.empty((n, tile, tile), dtype=np.uint8)
        keep = np.zeros(n, dtype=bool)
        for i, p in enumerate(tqdm(plan, desc="patches", unit="patch", disable=not progress, leave=False)):
            img = read(p.scene, p.window(tile))
            if img.shape != (n_bands, tile, tile):
                raise InputError(
                    f"scene {p.scene} returned a block of shape {img.shape} for window {p.window(tile)}, "
                    f"expected ({n_bands}, {tile}, {tile})"
                )
            lab = labels[p.scene][p.row : p.row + tile, p.col : p.col + tile].copy()
            lab[~np.isfinite(img).all(axis=0)] = LABEL_NODATA
            # Test patches are kept whatever their nodata: the test set is what it is.
            if p.split != "test" and (lab == LABEL_NODATA).mean() > max_nodata:
                continue
            if not (lab != LABEL_NODATA).any():
                continue
            x[i] = img
            y[i] = lab
            keep[i] = True
        idx = np.flatnonzero(keep)
        xs = np.lib.format.open_memmap(tmp / "x.npy", mode="w+", dtype=np.float32, shape=(len(idx), n_bands, tile, tile))
        for j, i in enumerate(idx):
            xs[j] = x[i]
        xs.flush()
        del xs, x
        (tmp / "x_all.npy").unlink()
        np.save(tmp / "y.npy", y[idx])
        kept = [plan[int(i)] for i in idx]
        dropped = n - len(kept)
        if dropped:
            log.info("left out %d of %d patches with more than %.0f%% image nodata", dropped, n, 100 * max_nodata)
        doc = dict(meta or {})
        doc.update({"tile": tile, "n_bands": n_bands, "patches": [asdict(p) for p in kept]})
        (tmp / "patches.json").write_text(json.dumps(doc), encoding="utf-8")
        (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
    ps = load_patch_cache(folder)
    assert ps is not None
    return ps


def normalization_stats(x: np.ndarray, indices: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std over the valid pixels (all bands finite) of the given patches.

    Args:
        x: (N, C, H, W) float32 raw patches with NaN nodata (may be a memmap).
        indices: patches to use (the training split only).

    Returns:
        ``(mean, std)`` tuples of C floats; a std of 0 (a constant band) becomes 1.

    Raises:
        InputError: no valid pixel at all.
    """
    c = x.shape[1]
    s = np.zeros(c, np.float64)
    s2 = np.zeros(c, np.float64)
    count = 0
    for i in indices:
        a = np.asarray(x[int(i)], dtype=np.float64).reshape(c, -1)
        ok = np.isfinite(a).all(axis=0)
        v = a[:, ok]
        count += v.shape[1]
        s += v.sum(axis=1)
        s2 += (v * v).sum(axis=1)
    if count == 0:
        raise InputError("the training patches have no valid pixel (every pixel has a nodata band)")
    mean = s / count
    var = np.maximum(s2 / count - mean * mean, 0.0)
    std = np.sqrt(var)
    std[std <= 1e-12] = 1.0
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
