"""Blocks, tile grids and the blending window (coalmine.runtime.tiling)."""

from __future__ import annotations

import numpy as np
import pytest
from coalmine.runtime.errors import UsageError
from coalmine.runtime.tiling import (
    block_grid,
    check_tile,
    pad_to_tile,
    predict_block,
    tile_origins,
    tiles_in,
    weight_window,
)


@pytest.mark.parametrize("length,tile,overlap", [(600, 256, 32), (256, 256, 32), (257, 256, 32),
                                                 (1000, 128, 0), (100, 256, 64), (481, 96, 48)])
def test_tile_origins_cover_every_pixel_within_bounds(length, tile, overlap):
    starts = tile_origins(length, tile, overlap)
    cover = np.zeros(max(length, tile), int)
    for s in starts:
        cover[s : s + tile] += 1
    assert cover[:length].min() >= 1
    assert starts[0] == 0
    if length > tile:
        assert starts[-1] == length - tile  # flush with the edge, never past it
        steps = np.diff(starts)
        assert steps.max() <= tile - overlap and steps.min() > 0


def test_weight_window_shape_and_values():
    w = weight_window(64, 16)
    assert w.dtype == np.float32 and w.shape == (64, 64)
    assert w.min() > 0  # sums always normalise, even at the scene border
    np.testing.assert_array_equal(w[16:48, 16:48], 1.0)
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    ramp = w[32, :16]
    assert np.all(np.diff(ramp) > 0) and ramp[0] < 0.01
    # Two ramps that overlap by exactly `overlap` sum to ~1 (raised cosine partition of unity).
    np.testing.assert_allclose(w[32, 48:] + w[32, :16], 1.0, atol=2e-3)
    assert weight_window(64, 0).min() == 1.0


def test_block_cores_partition_the_raster_and_reads_contain_cores():
    H, W = 700, 530
    cover = np.zeros((H, W), int)
    blocks = list(block_grid(H, W, block=256, halo=24, tile=128))
    for b in blocks:
        r, c = int(b.core.row_off), int(b.core.col_off)
        cover[r : r + int(b.core.height), c : c + int(b.core.width)] += 1
        rd = b.read
        assert rd.row_off >= 0 and rd.col_off >= 0
        assert rd.row_off + rd.height <= H and rd.col_off + rd.width <= W
        assert rd.row_off <= b.core.row_off and rd.row_off + rd.height >= b.core.row_off + b.core.height
        assert rd.height >= 128 and rd.width >= 128  # widened to a full tile
        rs, cs = b.core_in_read
        assert rs.stop - rs.start == b.core.height and cs.stop - cs.start == b.core.width
    np.testing.assert_array_equal(cover, 1)
    assert [b.index for b in blocks] == list(range(len(blocks)))


def test_rectangular_blocks_give_full_width_strips():
    # (rows, columns) blocks: the COG writer walks a grid in full-width strips this way.
    blocks = list(block_grid(1100, 700, block=(512, 700), halo=0))
    assert [(int(b.core.row_off), int(b.core.height)) for b in blocks] == [(0, 512), (512, 512), (1024, 76)]
    assert all(b.core.col_off == 0 and b.core.width == 700 and b.read == b.core for b in blocks)
    with pytest.raises(UsageError, match="must be positive"):
        list(block_grid(10, 10, block=(0, 10), halo=0))


def test_predict_block_normalises_weights_everywhere():
    # A pointwise "model" (logit = 2 * band 0): blending must reproduce it exactly at every
    # pixel, including edges, corners, the flush last tile and the padded margin.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 150, 203)).astype(np.float32)
    calls = []

    def infer(b):
        calls.append(b.shape)
        return 2 * b[:, :1]

    out = predict_block(x, infer, tile=64, overlap=16, batch_size=5)
    np.testing.assert_allclose(out, 2 * x[0], rtol=1e-5, atol=1e-5)
    assert all(s[1:] == (3, 64, 64) and s[0] <= 5 for s in calls)
    assert sum(s[0] for s in calls) == len(tiles_in(150, 203, 64, 16))


def test_predict_block_smaller_than_one_tile_is_padded_and_cropped():
    x = np.arange(2 * 20 * 30, dtype=np.float32).reshape(2, 20, 30)
    out = predict_block(x, lambda b: b[:, 1:2] - 1, tile=64, overlap=16, batch_size=4)
    assert out.shape == (20, 30)
    np.testing.assert_allclose(out, x[1] - 1, rtol=1e-6)


def test_pad_to_tile_modes():
    x = np.ones((1, 40, 50), np.float32)
    assert pad_to_tile(x, 64).shape == (1, 64, 64)
    assert pad_to_tile(np.ones((1, 10, 10), np.float32), 64)[0, 63, 63] == 0  # too small to reflect
    assert pad_to_tile(x, 32) is x


@pytest.mark.parametrize("tile,overlap,msg", [
    (100, 16, "--tile 100 is not a positive multiple of 32"),
    (0, 0, "--tile 0 is not a positive multiple of 32"),
    (64, 40, "--overlap 40 must be between 0 and half the tile (32)"),
    (64, -1, "--overlap -1 must be between 0"),
])
def test_check_tile_refusals(tile, overlap, msg):
    with pytest.raises(UsageError) as e:
        check_tile(tile, overlap)
    assert msg in str(e.value)


def test_weight_window_is_a_raised_cosine_sampled_at_pixel_centres():
    # The ramp, by hand: w_i = 0.5 - 0.5 cos(pi (i + 0.5) / overlap) for i < overlap, mirrored at
    # the far end, 1 in between, floored at 1e-3; the 2-D window is the outer product.
    tile, overlap = 64, 16
    w = weight_window(tile, overlap)
    i = np.arange(overlap)
    rise = 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / overlap)
    ramp = np.concatenate([rise, np.ones(tile - 2 * overlap), rise[::-1]])
    np.testing.assert_allclose(w, np.outer(ramp, ramp), rtol=1e-6)
    # three values worked out on paper: (1 - cos(pi/32)) / 2, (1 - cos(7.5 pi/16)) / 2, (1 + cos(pi/32)) / 2
    np.testing.assert_allclose(w[32, [0, 7, 15]], [0.0024076, 0.4509914, 0.9975924], atol=1e-7)
    assert w[0, 0] == pytest.approx(0.0024076**2, rel=1e-4)
    # a linear ramp would give (i + 0.5) / 16 = 0.03125 at i = 0 and 0.46875 at i = 7
    # where the cosine starts below the floor it is clamped: overlap 64 gives 1.5e-4 -> 1e-3
    w64 = weight_window(256, 64)
    assert w64[128, 0] == pytest.approx(1e-3) and w64[128, 255] == pytest.approx(1e-3)
    assert w64[128, 1] == pytest.approx(0.5 - 0.5 * np.cos(np.pi * 1.5 / 64), rel=1e-6)  # 1.36e-3
    # overlap = tile / 2 (the most check_tile allows): no core, the two ramps meet in the middle
    r32 = np.concatenate([rise, rise[::-1]])
    np.testing.assert_allclose(weight_window(32, 16), np.outer(r32, r32), rtol=1e-6)
