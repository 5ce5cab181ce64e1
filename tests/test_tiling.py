"""Blocks, tile grids and the blending window (coalmine.runtime.tiling)."""

from __future__ import annotations

import numpy as np
import pytest
from coalmine.runtime.errors import UsageError
from coalmine.runtime.tiling import (
    TileBlender,
    block_core,
    block_grid,
    check_tile,
    overlap_problem,
    pad_to_tile,
    predict_block,
    scene_tiling,
    tile_origins,
    tile_size_problem,
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
        assert r + b.core.height <= H and c + b.core.width <= W  # (numpy would clip a core past the edge)
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
    with pytest.raises(UsageError, match=r"block size \(10, 0\) must be positive"):
        list(block_grid(10, 10, block=(10, 0), halo=0))


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


def test_predict_block_hands_float32_batches_and_reports_progress():
    x = np.random.default_rng(1).standard_normal((2, 100, 130)).astype(np.float32)
    seen, progress = [], []

    def infer(b):
        seen.append(b.dtype)
        return b[:, :1] * 3

    out = predict_block(x, infer, tile=64, overlap=16, batch_size=4, on_batch=progress.append)
    assert out.dtype == np.float32 and set(seen) == {np.dtype(np.float32)}  # what ONNX Runtime takes
    n = len(tiles_in(100, 130, 64, 16))  # origins 0, 36 (rows) x 0, 48, 66 (columns): 6 tiles
    assert n == 6 and progress == [4, 2]
    np.testing.assert_allclose(out, 3 * x[0], rtol=1e-5, atol=1e-5)


def test_pad_to_tile_pads_only_what_is_short_and_reflects_when_it_can():
    x = np.arange(40 * 50, dtype=np.float32).reshape(1, 40, 50)
    p = pad_to_tile(x, 64)
    assert p.shape == (1, 64, 64)
    np.testing.assert_array_equal(p[:, :40, :50], x)
    # reflection about the last row/column (the edge pixel is not repeated)
    np.testing.assert_array_equal(p[0, 40, :50], x[0, 38])
    np.testing.assert_array_equal(p[0, :40, 50], x[0, :, 48])
    # one direction short only: the other is left alone
    assert pad_to_tile(np.ones((1, 40, 70), np.float32), 64).shape == (1, 64, 70)
    assert pad_to_tile(np.ones((1, 70, 40), np.float32), 64).shape == (1, 70, 64)
    # a side that needs as much padding as it is long cannot be reflected: zeros (the training mean)
    for shape in ((1, 32, 40), (1, 40, 10), (1, 40, 32)):
        q = pad_to_tile(np.ones(shape, np.float32), 64)
        assert q.shape == (1, 64, 64) and q[0, 63, 63] == 0 and q[0, shape[1] - 1, shape[2] - 1] == 1


def test_small_edge_blocks_read_a_full_tile_by_hand():
    # 300 rows in blocks of 128, halo 16, tile 128: the last core (rows 256-300, 44 rows) read
    # with its halo is rows 240-300 (60 rows); the 68 missing rows come from above: 172-300.
    blocks = list(block_grid(300, 100, block=128, halo=16, tile=128))
    last = blocks[-1]
    assert (last.core.row_off, last.core.height) == (256, 44)
    assert (last.read.row_off, last.read.height) == (172, 128)
    # the scene (100 columns) is narrower than a tile: every read spans all of it, no more
    assert all((b.read.col_off, b.read.width) == (0, 100) for b in blocks)
    # blocks of 64 rows, halo 8: the first core (0-64) reads 0-72, and grows downwards to 0-128
    first = next(iter(block_grid(300, 300, block=64, halo=8, tile=128)))
    assert (first.read.row_off, first.read.height, first.read.col_off, first.read.width) == (0, 128, 0, 128)
    # a middle core (64-128) reads 56-136 (80 rows): 48 more, all of them below (room there)
    mid = list(block_grid(300, 300, block=64, halo=8, tile=128))[5]
    assert (mid.core.row_off, mid.read.row_off, mid.read.height) == (64, 56, 128)
    # without a tile size nothing is widened
    assert list(block_grid(300, 100, block=128, halo=16))[-1].read.row_off == 240


def test_block_sizes():
    assert [(b.core.row_off, b.core.col_off) for b in block_grid(2, 2, block=1, halo=0)] == [
        (0, 0), (0, 1), (1, 0), (1, 1)]
    with pytest.raises(UsageError, match="block size 0 must be positive"):
        list(block_grid(10, 10, block=0, halo=0))


def test_weight_window_with_a_one_pixel_overlap():
    # i = 0 only: 0.5 - 0.5 cos(pi * 0.5 / 1) = 0.5 at both ends, 1 elsewhere
    w = weight_window(8, 1)
    np.testing.assert_allclose(w[4], [0.5, 1, 1, 1, 1, 1, 1, 0.5], atol=1e-7)


@pytest.mark.parametrize("tile,overlap,msg", [
    # the nearest multiples of 32 around the given tile, worked out by hand
    (100, 16, "use 96 or 128"),
    (0, 0, "use 32 or 64"),
    (200, 16, "use 192 or 224"),
    # a suggested overlap of tile / 8
    (64, 40, "try 8"),
    (256, 200, "try 32"),
])
def test_check_tile_suggestions(tile, overlap, msg):
    with pytest.raises(UsageError) as e:
        check_tile(tile, overlap)
    assert str(e.value).endswith(msg)


def test_check_tile_accepts_the_limits():
    check_tile(64, 32)  # half the tile is the most overlap there can be
    check_tile(64, 0)
    check_tile(32, 16)


@pytest.mark.parametrize("tile,multiple,msg", [
    # 32 = 2^5: ResNet halves the size 5 times; 100 lies between 3 x 32 and 4 x 32
    (100, 32, "is not a positive multiple of 32 (the model's encoder halves the size 5 times); use 96 or 128"),
    (20, 16, "is not a positive multiple of 16 (the model's encoder halves the size 4 times); use 16 or 32"),
    # 48 is no power of two: its stride is named as such; 100 lies between 2 x 48 and 3 x 48
    (100, 48, "is not a positive multiple of 48 (the model's encoder output stride is 48); use 96 or 144"),
    (-64, 32, "is not a positive multiple of 32 (the model's encoder halves the size 5 times); use 32 or 64"),
])
def test_tile_size_problem_by_hand(tile, multiple, msg):
    assert tile_size_problem(tile, multiple) == msg


def test_tile_size_problem_accepts_every_positive_multiple():
    assert tile_size_problem(1, 1) is None and tile_size_problem(96, 48) is None


def test_overlap_problem_on_small_tiles_by_hand():
    # tile 4: half is 2; tile // 8 = 0, so the suggestion is no overlap at all
    assert overlap_problem(4, 3) == "must be between 0 and half the tile (2); try 0"
    assert overlap_problem(4, 2) is None and overlap_problem(5, 2) is None
    assert overlap_problem(5, 3) == "must be between 0 and half the tile (2); try 0"
    assert check_tile(64) == 64 and check_tile(64, None) == 64  # no overlap given: only the tile checked


def _touches(origin: int, tile: int, start: int, stop: int) -> bool:
    return origin < stop and origin + tile > start


@pytest.mark.parametrize("ov", [16, 0])
@pytest.mark.parametrize("block", [1, 60, 96, 200, 1000])
def test_scene_tiling_plan_by_its_rules(block, ov):
    # without overlap a tile can end exactly where a block's core starts: it is not used there
    H, W, tile = 150, 203, 64
    blocks = scene_tiling(H, W, tile=tile, overlap=ov, block=block)
    rows, cols = tile_origins(H, tile, ov), tile_origins(W, tile, ov)
    core = block_core(block, tile, ov)
    assert core % (tile - ov) == 0 and core >= tile - ov
    computed = [t for b in blocks for t in b.tiles]
    assert sorted(computed) == [(r, c) for r in rows for c in cols]  # every tile once
    last_use = {}
    for i, b in enumerate(blocks):
        assert b.index == i
        r0, c0, h, w = int(b.core.row_off), int(b.core.col_off), int(b.core.height), int(b.core.width)
        assert all(r0 <= r < r0 + h and c0 <= c < c0 + w for r, c in b.tiles)
        # exactly the tiles that touch the core, in row-major order: none computed for nothing
        assert list(b.uses) == [(r, c) for r in rows for c in cols
                                if _touches(r, tile, r0, r0 + h) and _touches(c, tile, c0, c0 + w)]
        for t in b.uses:
            last_use[t] = i
    for i, b in enumerate(blocks):
        assert sorted(b.done) == sorted(t for t, j in last_use.items() if j == i)


def test_block_core_and_scene_tiling_block_limits():
    # whole multiples of the stride 48, at least one
    assert [block_core(b, 64, 16) for b in (1, 10, 24, 72, 73, 1000)] == [48, 48, 48, 96, 96, 1008]
    assert len(scene_tiling(100, 100, tile=64, overlap=16, block=1)) == 9  # cores of 48: 3 x 3
    with pytest.raises(UsageError, match="block size 0 must be positive"):
        scene_tiling(100, 100, tile=64, overlap=16, block=0)


@pytest.mark.parametrize("block", [1, 96, 200])
def test_blocks_blend_to_the_whole_scene_bit_for_bit_and_drop_every_tile(block):
    # A model that looks at its whole tile (logit = a pixel's band 0 + its tile's mean of band 1):
    # a tile read from the wrong place, or blended into the wrong pixels, changes the map.
    H, W, tile, ov = 150, 203, 64, 16
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, H, W)).astype(np.float32)

    def infer(b):
        return (b[:, :1] + b[:, 1:2].mean(axis=(2, 3), keepdims=True)).astype(np.float32)

    whole = predict_block(x, infer, tile=tile, overlap=ov, batch_size=4)
    blender = TileBlender(tile, ov)
    out = np.full((H, W), np.nan, np.float32)
    for b in scene_tiling(H, W, tile=tile, overlap=ov, block=block):
        rd, core = b.read, b.core
        xb = x[:, int(rd.row_off): int(rd.row_off + rd.height), int(rd.col_off): int(rd.col_off + rd.width)]
        out[int(core.row_off): int(core.row_off + core.height),
            int(core.col_off): int(core.col_off + core.width)] = blender.block_logits(b, xb, infer, batch_size=3)
    np.testing.assert_array_equal(out, whole)
    assert blender.kept == {}  # each tile's logits dropped after the last block that uses it
