"""Patch planning, the spatially blocked split, extraction into the cache, normalisation stats."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from coalmine.runtime.errors import InputError
from coalmine.train.patches import (
    LABEL_NODATA,
    SceneGeo,
    candidate_windows,
    extract_patches,
    load_patch_cache,
    normalization_stats,
    plan_patches,
)

TILE = 32


def _labels(size: int = 512, seed: int = 3, n_blobs: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n_blobs):
        cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(4, 14))]
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    return lab


def _geo(size: int = 512, x0: float = 500000.0, y0: float = 9700000.0) -> SceneGeo:
    return SceneGeo("EPSG:32750", Affine(10, 0, x0, 0, -10, y0), size, size)


def _pixel_gap(a, b) -> int:
    """Chebyshev gap in pixels between two TILE windows on one grid (0 = touching or overlapping)."""
    dr = max(0, max(a.row, b.row) - min(a.row, b.row) - TILE)
    dc = max(0, max(a.col, b.col) - min(a.col, b.col) - TILE)
    return max(dr, dc)


def test_candidate_counts_match_direct_sums() -> None:
    lab = _labels(128)
    lab[:10, :50] = LABEL_NODATA
    got = candidate_windows(lab, TILE, 16, max_nodata=1.0)
    assert len(got) == 7 * 7
    for r, c, m, n in got:
        win = lab[r : r + TILE, c : c + TILE]
        assert m == int((win == 1).sum())
        assert n == int((win != LABEL_NODATA).sum())
    strict = candidate_windows(lab, TILE, 16, max_nodata=0.1)
    assert all(n >= 0.9 * TILE * TILE for *_, n in strict) and len(strict) < len(got)


@pytest.mark.parametrize(("block_tiles", "buffer"), [(2, 0), (2, 16), (4, 40)])
def test_blocked_split_has_no_validation_pixel_near_training(block_tiles: int, buffer: int) -> None:
    lab = _labels()
    plan = plan_patches([lab], [_geo()], ["train"], tile=TILE, block_tiles=block_tiles, buffer=buffer,
                        val_fraction=0.25, background_ratio=1.0, seed=1)
    train = [p for p in plan if p.split == "train"]
    val = [p for p in plan if p.split == "val"]
    assert train and val
    # both splits get mine pixels, in a share not far from the requested one
    mine_val = sum(p.mine for p in val)
    mine_all = sum(p.mine for p in plan)
    assert any(p.is_mine for p in train) and any(p.is_mine for p in val)
    assert 0.1 < mine_val / mine_all < 0.6
    # no overlap, and every validation patch is farther than `buffer` from every training patch
    for v in val:
        for t in train:
            gap = _pixel_gap(v, t)
            overlap = abs(v.row - t.row) < TILE and abs(v.col - t.col) < TILE
            assert not overlap
            if buffer:
                assert gap >= buffer, (v, t, gap)
    # validation patches come in whole blocks: no block is shared by the two splits
    assert not {p.block for p in train} & {p.block for p in val}


def test_split_is_deterministic_for_a_seed_and_changes_with_it() -> None:
    lab = _labels()
    kw = dict(tile=TILE, block_tiles=2, buffer=16)
    a = plan_patches([lab], [_geo()], ["train"], seed=5, **kw)
    b = plan_patches([lab], [_geo()], ["train"], seed=5, **kw)
    c = plan_patches([lab], [_geo()], ["train"], seed=6, **kw)
    assert a == b
    assert [p.split for p in a] != [p.split for p in c] or a != c


def test_same_place_in_two_years_lands_in_the_same_split() -> None:
    # Two years on one grid: a place must not be trained on in one year and validated in another.
    l1, l2 = _labels(seed=3), _labels(seed=4)
    plan = plan_patches([l1, l2], [_geo(), _geo()], ["train", "train"], tile=TILE, block_tiles=2, buffer=0, seed=2)
    where: dict[tuple[int, int], set[str]] = {}
    for p in plan:
        where.setdefault((p.row, p.col), set()).add(p.split)
    assert all(len(s) == 1 for s in where.values())


def test_test_scene_is_held_out_whole() -> None:
    plan = plan_patches([_labels(seed=3), _labels(seed=9)], [_geo(), _geo()], ["train", "test"],
                        tile=TILE, block_tiles=2, seed=0)
    assert {p.split for p in plan if p.scene == 1} == {"test"}
    assert {p.split for p in plan if p.scene == 0} == {"train", "val"}


def test_sampling_keeps_mine_patches_and_limits_background() -> None:
    lab = _labels()
    plan = plan_patches([lab], [_geo()], ["train"], tile=TILE, block_tiles=2, background_ratio=0.5, seed=0)
    for split in ("train", "val"):
        ps = [p for p in plan if p.split == split]
        mine = [p for p in ps if p.mine / p.labelled >= 0.01]
        assert len(ps) - len(mine) <= round(0.5 * len(mine))
    capped = plan_patches([lab], [_geo()], ["train"], tile=TILE, block_tiles=2, max_patches=20, seed=0)
    assert len(capped) <= 21
    assert any(p.split == "val" and p.is_mine for p in capped)


def test_empty_label_set_refused() -> None:
    with pytest.raises(InputError, match="no mine pixel .* the label set is empty"):
        plan_patches([np.zeros((256, 256), np.uint8)], [_geo(256)], ["train"], tile=TILE)


def test_labels_all_nodata_refused() -> None:
    with pytest.raises(InputError, match="check that the labels cover the scenes"):
        plan_patches([np.full((256, 256), LABEL_NODATA, np.uint8)], [_geo(256)], ["train"], tile=TILE)


def test_too_few_blocks_refused() -> None:
    lab = np.zeros((128, 128), np.uint8)
    lab[10:20, 10:20] = 1
    with pytest.raises(InputError, match="1 spatial block.* needs at least 2 .* lower block_tiles"):
        plan_patches([lab], [_geo(128)], ["train"], tile=TILE, block_tiles=4)


def test_extraction_cache_and_stats(tmp_path) -> None:
    lab = _labels(256)
    rng = np.random.default_rng(0)
    img = rng.normal(2.0, 3.0, (4, 256, 256)).astype(np.float32)
    img[:, :, :40] = np.nan  # a nodata strip: patches at column 0 are mostly nodata and dropped
    img[2, 100, 100] = np.nan  # a single invalid pixel -> label nodata
    plan = plan_patches([lab], [_geo(256)], ["train"], tile=TILE, block_tiles=2, buffer=0,
                        background_ratio=5.0, max_nodata=0.3, seed=0)
    calls = []

    def read(i, w):
        calls.append(w)
        return img[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width].copy()

    ps = extract_patches(plan, read, [lab], tmp_path / "c", tile=TILE, n_bands=4, max_nodata=0.3, meta={"k": 1})
    assert len(calls) == len(plan)
    assert all(p.col >= 32 for p in ps.patches) and len(ps.patches) < len(plan)
    for j, p in enumerate(ps.patches):
        np.testing.assert_array_equal(ps.x[j], img[:, p.row : p.row + TILE, p.col : p.col + TILE])
        want = lab[p.row : p.row + TILE, p.col : p.col + TILE].copy()
        want[~np.isfinite(ps.x[j]).all(axis=0)] = LABEL_NODATA
        np.testing.assert_array_equal(ps.y[j], want)
    again = load_patch_cache(tmp_path / "c")
    assert again is not None and again.patches == ps.patches and again.meta["k"] == 1
    assert not list(tmp_path.glob("*.partial-*"))
    tr = ps.indices("train")
    mean, std = normalization_stats(ps.x, tr)
    px = np.concatenate([ps.x[i].reshape(4, -1) for i in tr], axis=1)
    px = px[:, np.isfinite(px).all(axis=0)]
    np.testing.assert_allclose(mean, px.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(std, px.std(axis=1), rtol=1e-4)


def test_wrong_band_count_from_reader_refused(tmp_path) -> None:
    lab = _labels(256)
    plan = plan_patches([lab], [_geo(256)], ["train"], tile=TILE, block_tiles=2, seed=0)
    with pytest.raises(InputError, match=r"expected \(23, 32, 32\)"):
        extract_patches(plan, lambda i, w: np.zeros((3, TILE, TILE), np.float32), [lab], tmp_path / "c",
                        tile=TILE, n_bands=23, max_nodata=0.2)
    assert not (tmp_path / "c").exists() and not list(tmp_path.iterdir())
