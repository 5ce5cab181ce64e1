"""Blocks, tiles and the blending window for streamed, seam-free inference.

A scene is processed in **blocks** (e.g. 1024 x 1024 px) so that memory depends on the
block size, never on the scene size. Each block is read with a **halo** of context on every
side (clipped at the scene edge) and then covered by overlapping **tiles** of the model's
input size (a multiple of 32). Tile logits are blended with a smooth separable weight
window: a raised-cosine ramp over the overlap and 1 in the tile's core. The ramp never
reaches exactly 0, so at the scene border, where a pixel may be covered by a single tile,
``sum(w * logit) / sum(w)`` is still defined and equals that tile's logit. Blending logits
(not thresholded masks) and normalising by the weight sum makes the result a smooth
partition-of-unity average: no seam where tiles meet.

Only the core of each block (without its halo) is written, so every output pixel is
written exactly once, and a block boundary sees at least ``halo`` pixels of context.

Inference tiles lie on **one grid fixed to the scene** (:func:`scene_tiling`): they start at
multiples of ``tile - overlap`` from the scene's top-left corner, and block cores are whole
multiples of that stride, so the block size only decides which block computes a tile, never
where the tile lies. :class:`TileBlender` computes each tile once, keeps the logits of tiles a
later block still needs, and blends every tile covering a block's core in the row-major order
of their scene origins — so every pixel gets the same tiles, weights and floating-point sums
for any block size, and ``--block`` (a memory setting) cannot change the map.

Example:
    >>> blocks = list(block_grid(3000, 2500, block=1024, halo=32))
    >>> len(blocks), blocks[0].core, blocks[0].read
    (9, Window(col_off=0, row_off=0, width=1024, height=1024), Window(col_off=0, row_off=0, width=1056, height=1056))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from .errors import UsageError

#: Smallest weight a tile pixel gets (at the outermost pixel of the ramp); keeps sums > 0.
_MIN_WEIGHT = 1e-3


@dataclass(frozen=True)
class Block:
    """One unit of streamed work.

    Attributes:
        core: the window of the scene this block writes (no halo).
        read: the window read for it: ``core`` grown by the halo, clipped to the scene, and
            widened (where the scene allows) to at least one tile in each direction.
        index: running number of the block (row-major).
    """

    core: Window
    read: Window
    index: int

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """Row/col slices that cut ``core`` out of an array covering ``read``."""
        r0 = int(self.core.row_off - self.read.row_off)
        c0 = int(self.core.col_off - self.read.col_off)
        return slice(r0, r0 + int(self.core.height)), slice(c0, c0 + int(self.core.width))


def tile_size_problem(tile: int, multiple: int) -> str | None:
    """What is wrong with ``tile`` as the model's input size, or None when nothing is.

    The one place of the rule: a tile is a positive multiple of ``multiple``, the output stride
    of the model's encoder as the bundle records it (``ModelSpec.size_multiple``; 32 for ResNet).
    Callers put the option or file and the value in front and raise their own error class.

    Example:
        >>> tile_size_problem(100, 32)
        "is not a positive multiple of 32 (the model's encoder halves the size 5 times); use 96 or 128"
        >>> tile_size_problem(256, 32) is None
        True
    """
    if tile > 0 and tile % multiple == 0:
        return None
    lo = max(multiple, tile // multiple * multiple)
    halvings = multiple.bit_length() - 1
    why = (f"the model's encoder halves the size {halvings} times" if multiple == 1 << halvings
           else f"the model's encoder output stride is {multiple}")
    return f"is not a positive multiple of {multiple} ({why}); use {lo} or {lo + multiple}"


def overlap_problem(tile: int, overlap: int) -> str | None:
    """What is wrong with ``overlap`` for tiles of ``tile`` pixels, or None: it must lie in
    ``[0, tile / 2]`` so that no pixel is covered by more than two tiles along an axis."""
    if 0 <= overlap <= tile // 2:
        return None
    return f"must be between 0 and half the tile ({tile // 2}); try {min(max(tile // 8, 0), tile // 2)}"


def check_tile(tile: int, overlap: int | None = None, multiple: int = 32, option: str = "--tile") -> int:
    """Validate a tile size and, when given, the overlap of tiles of that size.

    Returns:
        ``tile``.

    Raises:
        UsageError: naming ``option`` or ``--overlap`` (see :func:`tile_size_problem` and
            :func:`overlap_problem`).
    """
    problem = tile_size_problem(tile, multiple)
    if problem:
        raise UsageError(f"{option} {tile} {problem}")
    problem = None if overlap is None else overlap_problem(tile, overlap)
    if problem:
        raise UsageError(f"--overlap {overlap} {problem}")
    return tile


def _axis_span(start: int, length: int, halo: int, total: int, tile: int) -> tuple[int, int]:
    """Grow ``[start, start+length)`` by ``halo`` and to at least ``tile``, clipped to ``total``."""
    lo = max(0, start - halo)
    hi = min(total, start + length + halo)
    if hi - lo < tile:
        # Widen towards whichever side has room, so small edge blocks still see a full tile.
        need = tile - (hi - lo)
        grow_hi = min(need, total - hi)
        hi += grow_hi
        lo = max(0, lo - (need - grow_hi))
    return lo, hi


def block_grid(height: int, width: int, *, block: int | tuple[int, int], halo: int, tile: int = 0) -> Iterator[Block]:
    """Blocks covering a ``height x width`` raster row by row.

    Args:
        height, width: raster size in pixels.
        block: core size of a block (pixels), or its (rows, columns): ``(512, width)`` gives
            full-width strips of 512 rows. The last row/column of blocks may be smaller.
        halo: context added on each side of the core when reading (clipped at the edge).
        tile: inference tile size; a read window is widened to at least this where the
            raster is large enough, so edge blocks are not padded needlessly.

    Yields:
        :class:`Block` in row-major order; the cores tile the raster exactly once.

    Example:
        >>> [b.core.height for b in block_grid(1100, 700, block=(512, 700), halo=0)]
        [512, 512, 76]
    """
    rows, cols = (block, block) if isinstance(block, int) else block
    if rows <= 0 or cols <= 0:
        raise UsageError(f"block size {block} must be positive")
    idx = 0
    for r in range(0, height, rows):
        h = min(rows, height - r)
        r0, r1 = _axis_span(r, h, halo, height, tile)
        for c in range(0, width, cols):
            w = min(cols, width - c)
            c0, c1 = _axis_span(c, w, halo, width, tile)
            yield Block(Window(c, r, w, h), Window(c0, r0, c1 - c0, r1 - r0), idx)
            idx += 1


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles along one axis of ``length`` pixels.

    Tiles step by ``tile - overlap``; the last one is placed flush with the end (so it may
    overlap its neighbour by more than ``overlap``), hence no pixel is missed and no tile
    reaches past the edge. When ``length <= tile`` there is one tile at 0 (the caller pads).

    Example:
        >>> tile_origins(600, 256, 32)
        [0, 224, 344]
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    starts = [i * stride for i in range(n - 1)] + [length - tile]
    return sorted(set(starts))


def weight_window(tile: int, overlap: int) -> np.ndarray:
    """Separable blending weights for one ``tile x tile`` tile, float32, all > 0.

    Along each axis the weight rises as a raised cosine over the first ``overlap`` pixels,
    stays 1 in the core and falls symmetrically over the last ``overlap`` pixels. Sampling
    at pixel centres (``i + 0.5``) and a floor of 1e-3 keep every weight strictly positive.

    Example:
        >>> w = weight_window(64, 16)
        >>> float(w[32, 32]), bool(w.min() > 0), w.shape
        (1.0, True, (64, 64))
    """
    ramp = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        i = np.arange(overlap, dtype=np.float64)
        rise = 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / overlap)
        ramp[:overlap] = rise
        ramp[tile - overlap :] = np.minimum(ramp[tile - overlap :], rise[::-1])
    ramp = np.maximum(ramp, _MIN_WEIGHT)
    return np.outer(ramp, ramp).astype(np.float32)


def tiles_in(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(row, col) origins of all tiles covering a ``height x width`` array (row-major)."""
    return [(r, c) for r in tile_origins(height, tile, overlap) for c in tile_origins(width, tile, overlap)]


def pad_to_tile(arr: np.ndarray, tile: int) -> np.ndarray:
    """Pad a (band, row, col) array to at least ``tile`` rows and columns at the bottom/right.

    Uses reflection where the array is large enough (the network then sees plausible
    texture rather than a hard edge) and zeros otherwise (0 is the training mean after
    normalisation). The caller crops the result back to the original size.
    """
    _, h, w = arr.shape
    ph, pw = max(0, tile - h), max(0, tile - w)
    if not ph and not pw:
        return arr
    mode = "reflect" if (ph < h and pw < w) else "constant"
    return np.pad(arr, ((0, 0), (0, ph), (0, pw)), mode=mode)


# -- a tile grid fixed to the scene -----------------------------------------------------------------
Origin = tuple[int, int]


@dataclass(frozen=True)
class TiledBlock:
    """One unit of streamed inference on the scene's tile grid (see :func:`scene_tiling`).

    Attributes:
        core: the window of the scene this block writes (no halo).
        read: the window read for it: ``core`` and the whole of every tile it computes (the
            core plus ``overlap`` pixels on its bottom and right sides, more at the scene's far
            edge where the last tile is flush with it).
        index: running number of the block (row-major).
        tiles: scene (row, col) origins of the tiles this block computes: those whose origin lies
            in ``core``, so each tile of the scene is computed by exactly one block.
        uses: origins of every tile covering a pixel of ``core``, in row-major order (computed
            here or by an earlier block): what is blended into ``core``.
        done: origins of the tiles no later block uses (their logits are dropped after this block).
    """

    core: Window
    read: Window
    index: int
    tiles: tuple[Origin, ...]
    uses: tuple[Origin, ...]
    done: tuple[Origin, ...]

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """Row/col slices that cut ``core`` out of an array covering ``read``."""
        r0 = int(self.core.row_off - self.read.row_off)
        c0 = int(self.core.col_off - self.read.col_off)
        return slice(r0, r0 + int(self.core.height)), slice(c0, c0 + int(self.core.width))


def block_core(block: int, tile: int, overlap: int) -> int:
    """The block core size used for ``block``: the nearest whole multiple of the tile stride
    ``tile - overlap`` (at least one), so block borders fall on the scene's tile grid.

    Example:
        >>> block_core(1024, 256, 32), block_core(64, 256, 32)
        (1120, 224)
    """
    stride = tile - overlap
    return max(1, round(block / stride)) * stride


def _axis_blocks(length: int, tile: int, overlap: int, core: int) -> list[tuple[int, int, int, list[int], list[int]]]:
    """Along one axis, per block: (core start, core stop, read stop, tiles it computes, tiles it uses)."""
    origins = tile_origins(length, tile, overlap)
    out = []
    for a in range(0, length, core):
        b = min(a + core, length)
        own = [o for o in origins if a <= o < b]
        use = [o for o in origins if o < b and o + tile > a]
        stop = min(length, max([b] + [o + tile for o in own]))
        out.append((a, b, stop, own, use))
    return out


def scene_tiling(height: int, width: int, *, tile: int, overlap: int, block: int) -> list[TiledBlock]:
    """Blocks of about ``block`` px over a ``height x width`` scene whose tiles lie on one grid
    fixed to the scene.

    Tiles start at multiples of ``tile - overlap`` from the scene's top-left corner, the last one
    flush with the far edge (:func:`tile_origins`; one padded tile where the scene is smaller than
    a tile), whatever ``block`` is. Block cores are :func:`block_core` pixels, whole multiples of
    that stride, so each block reads its core plus ``overlap`` pixels below and to the right.

    Returns:
        :class:`TiledBlock` in row-major order; the cores cover the scene exactly once and every
        tile is computed by exactly one block.

    Example:
        >>> blocks = scene_tiling(1000, 1000, tile=256, overlap=32, block=448)
        >>> len(blocks), blocks[0].core, blocks[0].read, blocks[0].tiles
        (9, Window(col_off=0, row_off=0, width=448, height=448), Window(col_off=0, row_off=0, width=480, height=480), ((0, 0), (0, 224), (224, 0), (224, 224)))
    """
    if block <= 0:
        raise UsageError(f"block size {block} must be positive")
    core = block_core(block, tile, overlap)
    rows = _axis_blocks(height, tile, overlap, core)
    cols = _axis_blocks(width, tile, overlap, core)
    made: list[tuple[Window, Window, tuple[Origin, ...], tuple[Origin, ...]]] = []
    last_use: dict[Origin, int] = {}
    for r0, r1, rstop, rown, ruse in rows:
        for c0, c1, cstop, cown, cuse in cols:
            uses = tuple((r, c) for r in ruse for c in cuse)
            for t in uses:
                last_use[t] = len(made)
            made.append((Window(c0, r0, c1 - c0, r1 - r0), Window(c0, r0, cstop - c0, rstop - r0),
                         tuple((r, c) for r in rown for c in cown), uses))
    done: dict[int, list[Origin]] = {}
    for t, i in last_use.items():
        done.setdefault(i, []).append(t)
    return [TiledBlock(core_w, read_w, i, own, uses, tuple(done.get(i, ())))
            for i, (core_w, read_w, own, uses) in enumerate(made)]


class TileBlender:
    """Infers the tiles of each block of a :func:`scene_tiling` and blends every tile covering its core.

    Call :meth:`block_logits` for the blocks in their order. Logits of tiles a later block still
    needs are kept — at most about one row of tiles across the scene plus one column (13 MB for a
    10980 px wide scene at tile 256) — and dropped after their last use. Each pixel's weighted
    logits are summed in the row-major order of the tiles' scene origins, the order a single
    whole-scene block would use, so the result is the same bit for bit for any block size.

    Args:
        tile, overlap: tile size and overlap in pixels.
        window: the weight window (default ``weight_window(tile, overlap)``).
    """

    def __init__(self, tile: int, overlap: int, window: np.ndarray | None = None) -> None:
        self.tile = tile
        self.window = weight_window(tile, overlap) if window is None else window
        self.kept: dict[Origin, np.ndarray] = {}

    def block_logits(self, b: TiledBlock, x: np.ndarray, infer: Callable[[np.ndarray], np.ndarray], *,
                     batch_size: int, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Blended logits of block ``b``'s core.

        Args:
            b: the block.
            x: normalised float32 (band, row, col) array covering ``b.read`` (NaN replaced).
            infer: the backend call, float32 (N, C, tile, tile) -> logits (N, 1, tile, tile).
            batch_size: tiles per ``infer`` call.
            on_batch: called with the number of tiles after each batch (progress).

        Returns:
            float32 (core height, core width): ``sum(w * logit) / sum(w)`` over the tiles covering
            each pixel.
        """
        t = self.tile
        ro, co = int(b.read.row_off), int(b.read.col_off)
        if b.tiles:
            buf = np.empty((min(batch_size, len(b.tiles)), x.shape[0], t, t), dtype=np.float32)
            for k in range(0, len(b.tiles), batch_size):
                chunk = b.tiles[k: k + batch_size]
                for i, (r, c) in enumerate(chunk):
                    part = x[:, r - ro: r - ro + t, c - co: c - co + t]
                    buf[i] = part if part.shape[1:] == (t, t) else pad_to_tile(part, t)
                logits = infer(buf[: len(chunk)])
                for i, origin in enumerate(chunk):
                    self.kept[origin] = np.array(logits[i, 0], dtype=np.float32)
                if on_batch is not None:
                    on_batch(len(chunk))
        return self._blend(b)

    def _blend(self, b: TiledBlock) -> np.ndarray:
        t, win = self.tile, self.window
        cr, cc, h, w = int(b.core.row_off), int(b.core.col_off), int(b.core.height), int(b.core.width)
        acc = np.zeros((h, w), dtype=np.float32)
        wsum = np.zeros((h, w), dtype=np.float32)
        for r, c in b.uses:
            lg = self.kept[(r, c)]
            r0, r1, c0, c1 = max(r, cr), min(r + t, cr + h), max(c, cc), min(c + t, cc + w)
            wt = win[r0 - r: r1 - r, c0 - c: c1 - c]
            acc[r0 - cr: r1 - cr, c0 - cc: c1 - cc] += wt * lg[r0 - r: r1 - r, c0 - c: c1 - c]
            wsum[r0 - cr: r1 - cr, c0 - cc: c1 - cc] += wt
        for origin in b.done:
            self.kept.pop(origin, None)
        np.divide(acc, wsum, out=acc)
        return acc


def tiles_of(blocks: Sequence[TiledBlock]) -> int:
    """How many tiles the blocks compute together (each tile of the scene once)."""
    return sum(len(b.tiles) for b in blocks)


def predict_block(
    x: np.ndarray,
    infer: Callable[[np.ndarray], np.ndarray],
    *,
    tile: int,
    overlap: int,
    batch_size: int,
    window: np.ndarray | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Blended logits of a whole normalised array as one block (its own tile grid).

    Args:
        x: normalised float32 (band, row, col) array (NaN already replaced).
        infer: the backend call, float32 (N, C, tile, tile) -> logits (N, 1, tile, tile).
        tile, overlap: tile size and overlap in pixels.
        batch_size: tiles per ``infer`` call.
        window: the weight window (``weight_window(tile, overlap)``), to reuse across calls.
        on_batch: called with the number of tiles after each batch (progress).

    Returns:
        float32 (row, col) logits of the same size as ``x``: ``sum(w * logit) / sum(w)``.
    """
    _, h, w = x.shape
    (only,) = scene_tiling(h, w, tile=tile, overlap=overlap, block=max(h, w) + tile)
    return TileBlender(tile, overlap, window).block_logits(only, x, infer, batch_size=batch_size,
                                                           on_batch=on_batch)
