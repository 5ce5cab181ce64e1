"""GLCM textures of Sentinel-1 VV: quantization and the ten sliding-window features.

The conventions (fixed in ARCHITECTURE.md, section GLCM, and quoted in the README):

* VV in dB is quantized by bin edges: ``level = number of edges <= value``; NaN becomes the
  nodata level 255.
* For every pixel, the co-occurrence matrix of its W x W window pools the offsets (0, d), (d, d),
  (d, 0) and (d, -d), each pair counted in both orders (so the matrix is symmetric), and is
  normalised to sum 1. A pair counts only when both pixels lie inside the window (clipped at the
  raster edge, never padded) and neither is nodata.
* Features, natural log: contrast, dissimilarity, homogeneity, asm, energy, max_prob, entropy,
  glcm_mean, glcm_variance, correlation (:data:`FEATURES`). A window without any valid pair gives
  NaN in all ten; a window whose levels do not vary gives correlation 1.

The sliding-window loop is the compiled :mod:`coalmine.runtime._glcm`; this module checks every
argument and explains refusals.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from coalmine.runtime import _glcm
from coalmine.runtime.bands import GLCM_FEATURES

__all__ = [
    "FEATURES",
    "NODATA",
    "quantize",
    "equal_width_edges",
    "equal_frequency_edges",
    "glcm_features",
    "glcm_block",
    "glcm_halo",
]

#: The ten feature names, in output order (the one home is ``coalmine.runtime.bands``).
FEATURES: tuple[str, ...] = GLCM_FEATURES
if tuple(_glcm.FEATURES) != FEATURES:  # a kernel built from other sources than this module
    raise ImportError(
        f"the compiled GLCM kernel computes {_glcm.FEATURES}, but coalmine.runtime.bands lists "
        f"{FEATURES}; rebuild the extension (pip install -e .) from the same sources"
    )
#: Level given to NaN input by :func:`quantize`, and the default ``nodata`` of the kernel.
NODATA = 255

_MIN_WINDOW, _MAX_WINDOW = _glcm.MIN_WINDOW, _glcm.MAX_WINDOW
_MIN_LEVELS, _MAX_LEVELS = _glcm.MIN_LEVELS, _glcm.MAX_LEVELS
# quantize() works through the input in pieces of this many values, so its float64 temporaries
# stay small however large the raster is.
_QUANTIZE_CHUNK = 1 << 22


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}.")
    return int(value)


def _check_n_levels(n_levels: Any, name: str = "n_levels") -> int:
    n = _check_int(name, n_levels)
    if not _MIN_LEVELS <= n <= _MAX_LEVELS:
        raise ValueError(
            f"{name} must be from {_MIN_LEVELS} to {_MAX_LEVELS} (level 255 is kept for nodata), "
            f"got {n}."
        )
    return n


def _check_edges(edges: Any) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"edges must be a 1-D sequence of thresholds, got {e.ndim} dimensions.")
    if not 1 <= e.size <= _MAX_LEVELS - 1:
        raise ValueError(
            f"edges must hold from 1 to {_MAX_LEVELS - 1} thresholds (n_levels - 1), got {e.size}."
        )
    if not np.all(np.isfinite(e)):
        raise ValueError("edges must be finite numbers; found NaN or infinity.")
    if e.size > 1 and not np.all(np.diff(e) > 0):
        k = int(np.argmax(np.diff(e) <= 0))
        raise ValueError(
            f"edges must be strictly increasing, but edges[{k}] = {e[k]} and "
            f"edges[{k + 1}] = {e[k + 1]}."
        )
    return e


def equal_width_edges(lo: float, hi: float, levels: int) -> np.ndarray:
    """Bin edges splitting ``[lo, hi]`` into ``levels`` bins of equal width.

    Values below ``lo`` fall into level 0 and values at or above ``hi`` into level
    ``levels - 1``, so the range only needs to cover the values that matter.

    Args:
        lo: lower end of the range (dB).
        hi: upper end of the range (dB), greater than ``lo``.
        levels: number of levels, 2 to 255.

    Returns:
        float64 array of the ``levels - 1`` inner edges ``lo + k * (hi - lo) / levels``.

    Raises:
        ValueError: if the range is empty or not finite, or ``levels`` is out of range.
        TypeError: if ``levels`` is not an integer.

    Example:
        >>> equal_width_edges(-25.0, 5.0, 3)
        array([-15.,  -5.])
    """
    n = _check_n_levels(levels, "levels")
    lo_f, hi_f = float(lo), float(hi)
    if not (np.isfinite(lo_f) and np.isfinite(hi_f) and lo_f < hi_f):
        raise ValueError(f"the range must be finite with lo < hi, got lo={lo!r}, hi={hi!r}.")
    step = (hi_f - lo_f) / n
    return lo_f + step * np.arange(1, n, dtype=np.float64)


def equal_frequency_edges(samples: np.ndarray | Sequence[float], levels: int) -> np.ndarray:
    """Bin edges that put about the same number of ``samples`` into every level.

    This is the fixed-per-model form of SNAP's "probabilistic" quantizer: compute the edges once
    from training data and store them in the bundle, so every scene and year is quantized alike.
    NaN and infinite samples are ignored. Where many samples share one value, quantiles coincide;
    such edges are moved up by the smallest float step so the edges stay strictly increasing (the
    levels between them stay empty).

    Args:
        samples: values (dB) of any shape.
        levels: number of levels, 2 to 255.

    Returns:
        float64 array of ``levels - 1`` strictly increasing edges.

    Raises:
        ValueError: if ``samples`` holds no finite value or ``levels`` is out of range.

    Example:
        >>> equal_frequency_edges([1.0, 2.0, 3.0, 4.0], 2)
        array([2.5])
    """
    n = _check_n_levels(levels, "levels")
    s = np.asarray(samples, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("samples holds no finite value; equal-frequency edges need data.")
    edges = np.quantile(s, np.arange(1, n, dtype=np.float64) / n)
    for k in range(1, edges.size):
        if edges[k] <= edges[k - 1]:
            edges[k] = np.nextafter(edges[k - 1], np.inf)
    return edges


def quantize(db: np.ndarray, edges: np.ndarray | Sequence[float]) -> np.ndarray:
    """Quantize values into GLCM levels by bin edges.

    ``level = number of edges <= value``, so a value equal to an edge goes to the upper level;
    NaN becomes :data:`NODATA` (255). With ``L - 1`` edges the levels are ``0 .. L - 1``.

    Args:
        db: real array of any shape (VV in dB).
        edges: ``L - 1`` finite, strictly increasing thresholds (1 to 254 of them).

    Returns:
        uint8 array of the same shape as ``db``.

    Raises:
        TypeError: if ``db`` is not a real-valued array.
        ValueError: if ``edges`` is not a valid 1-D increasing sequence.

    Example:
        >>> quantize(np.array([-30.0, -15.0, 0.0, np.nan]), [-15.0, -5.0])
        array([  0,   1,   2, 255], dtype=uint8)
    """
    e = _check_edges(edges)
    a = np.asarray(db)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"db must be a real-valued array, got dtype {a.dtype}.")
    out = np.empty(a.shape, dtype=np.uint8)
    flat_in = a.reshape(-1)
    flat_out = out.reshape(-1)
    for start in range(0, flat_in.size, _QUANTIZE_CHUNK):
        v = flat_in[start : start + _QUANTIZE_CHUNK].astype(np.float64, copy=False)
        q = np.searchsorted(e, v, side="right").astype(np.uint8)
        q[np.isnan(v)] = NODATA
        flat_out[start : start + _QUANTIZE_CHUNK] = q
    return out


def _check_kernel_args(
    levels: Any, n_levels: Any, window: Any, distance: Any, nodata: Any, threads: Any
) -> tuple[int, int, int, int | None, int | None]:
    if not isinstance(levels, np.ndarray):
        raise TypeError(
            f"levels must be a NumPy array of uint8 levels, got {type(levels).__name__}; "
            "make one with coalmine.runtime.texture.quantize."
        )
    if levels.dtype != np.uint8:
        raise TypeError(
            f"levels must be a uint8 array of quantized levels, got dtype {levels.dtype}; "
            "quantize dB values with coalmine.runtime.texture.quantize first."
        )
    if levels.ndim != 2:
        raise ValueError(
            f"levels must be a 2-D array (rows, cols), got {levels.ndim} dimensions "
            f"with shape {levels.shape}; pass one band at a time."
        )
    n = _check_n_levels(n_levels)
    w = _check_int("window", window)
    if not (_MIN_WINDOW <= w <= _MAX_WINDOW and w % 2 == 1):
        raise ValueError(
            f"window must be an odd number from {_MIN_WINDOW} to {_MAX_WINDOW} "
            f"(the window is centred on the pixel), got {w}."
        )
    d = _check_int("distance", distance)
    if not 1 <= d <= w - 1:
        raise ValueError(
            f"distance must be from 1 to window - 1 = {w - 1} (a pair must fit in the window), "
            f"got {d}."
        )
    nd: int | None = None
    if nodata is not None:
        nd = _check_int("nodata", nodata)
        if not 0 <= nd <= 255:
            raise ValueError(f"nodata must be a uint8 value from 0 to 255 or None, got {nd}.")
    t: int | None = None
    if threads is not None:
        t = _check_int("threads", threads)
        if t < 1:
            raise ValueError(f"threads must be at least 1 (or None for all cores), got {t}.")
    return n, w, d, nd, t


def glcm_features(
    levels: np.ndarray,
    n_levels: int,
    window: int = 9,
    distance: int = 4,
    nodata: int | None = NODATA,
    threads: int | None = None,
) -> np.ndarray:
    """The ten GLCM textures of every pixel, from its ``window x window`` neighbourhood.

    Args:
        levels: 2-D uint8 array of levels ``0 .. n_levels - 1`` (or ``nodata``), e.g. from
            :func:`quantize`. Any strides are accepted; the array is never copied.
        n_levels: number of grey levels L, 2 to 255.
        window: odd window size W, 3 to 31 (SNAP's default 9).
        distance: pair displacement d, 1 to W - 1 (SNAP's default 4).
        nodata: level that marks missing pixels (they form no pair), or None.
        threads: worker threads over row bands; None uses all cores. The result does not depend
            on it (bit for bit).

    Returns:
        float32 array of shape (10, rows, cols), features in :data:`FEATURES` order; NaN where a
        window holds no valid pair.

    Raises:
        TypeError: if ``levels`` is not a uint8 NumPy array or an argument is not an integer.
        ValueError: if ``levels`` is not 2-D, holds a value that is neither a level below
            ``n_levels`` nor ``nodata``, or a parameter is out of range.

    Example:
        >>> vv_db = np.random.default_rng(0).normal(-12, 3, (64, 64))
        >>> lv = quantize(vv_db, equal_width_edges(-25.0, 5.0, 32))
        >>> glcm_features(lv, 32, window=9, distance=4).shape
        (10, 64, 64)
    """
    n, w, d, nd, t = _check_kernel_args(levels, n_levels, window, distance, nodata, threads)
    return _glcm.features(levels, n, w, d, nd, t)


def glcm_halo(window: int = 9, distance: int = 4) -> int:
    """Context pixels a block needs on each side for :func:`glcm_block`: ``window // 2 + distance``.

    (``window // 2`` alone would do for this kernel's convention, where both pixels of a pair lie
    in the window; the project-wide halo adds ``distance`` so every module uses one figure.)
    """
    return _check_int("window", window) // 2 + _check_int("distance", distance)


def _window_tuple(window: Any) -> tuple[int, int, int, int]:
    if all(hasattr(window, a) for a in ("row_off", "col_off", "height", "width")):
        vals = (window.row_off, window.col_off, window.height, window.width)
    elif isinstance(window, Sequence) and not isinstance(window, str) and len(window) == 4:
        vals = tuple(window)
    else:
        raise TypeError(
            "window must be a rasterio.windows.Window or a tuple "
            f"(row_off, col_off, height, width), got {window!r}."
        )
    out = []
    for name, v in zip(("row_off", "col_off", "height", "width"), vals, strict=True):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != int(v):
            raise ValueError(f"window {name} must be a whole number of pixels, got {v!r}.")
        out.append(int(v))
    return out[0], out[1], out[2], out[3]


def glcm_block(
    levels: np.ndarray,
    window: Any,
    n_levels: int,
    window_size: int = 9,
    distance: int = 4,
    nodata: int | None = NODATA,
    threads: int | None = None,
) -> np.ndarray:
    """GLCM textures of one block of a larger raster, exactly as if computed on the whole.

    Only the block plus a halo of :func:`glcm_halo` pixels (clipped at the raster edge) is read,
    so ``levels`` may be a memory map of a large scene. The result is bit-identical to
    ``glcm_features(levels, ...)[:, rows, cols]`` of the block.

    Args:
        levels: 2-D uint8 levels of the whole raster (any strides; not copied).
        window: the block, a :class:`rasterio.windows.Window` or a tuple
            ``(row_off, col_off, height, width)``; it must lie inside the raster.
        n_levels, distance, nodata, threads: as in :func:`glcm_features`.
        window_size: the GLCM window W (``window`` names the block, as in rasterio).

    Returns:
        float32 array of shape (10, height, width).

    Raises:
        TypeError, ValueError: as :func:`glcm_features`, or if the block is not inside the raster.

    Example:
        >>> lv = np.zeros((100, 100), np.uint8)
        >>> glcm_block(lv, (0, 50, 20, 50), 32).shape
        (10, 20, 50)
    """
    n, w, d, nd, t = _check_kernel_args(levels, n_levels, window_size, distance, nodata, threads)
    row_off, col_off, height, width = _window_tuple(window)
    rows, cols = levels.shape
    if (
        row_off < 0
        or col_off < 0
        or height < 0
        or width < 0
        or row_off + height > rows
        or col_off + width > cols
    ):
        raise ValueError(
            f"the block (row_off={row_off}, col_off={col_off}, height={height}, width={width}) "
            f"does not lie inside the {rows} x {cols} raster; clip it to the raster first."
        )
    halo = w // 2 + d
    r0, c0 = max(0, row_off - halo), max(0, col_off - halo)
    r1, c1 = min(rows, row_off + height + halo), min(cols, col_off + width + halo)
    sub = levels[r0:r1, c0:c1]  # a view: nothing outside block + halo is touched
    return _glcm.features(sub, n, w, d, nd, t, (row_off - r0, col_off - c0, height, width))
