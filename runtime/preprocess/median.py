"""Per-pixel kernels of the annual composite: the median of clear observations, cloud dilation,
and the running mean of Sentinel-1 power.

All three work on one block of the output grid and depend only on a pixel's own values (the
median, the mean) or on a fixed neighbourhood read with a halo (the dilation), and add in a fixed
order, so a block equals the same window of a whole-scene run bit for bit.

Why not ``numpy.nanmedian``: it returns the same numbers (the tests hold the two equal) but,
below 600 observations per pixel, goes through masked arrays with several full copies of the
stack; sorting the block in place along the acquisition axis needs no copy, and the memory
budget of ``coal-prepare --memory`` can count on that. Why not ``scipy.ndimage`` for the
dilation: scipy is not a dependency of the lean runtime, and a square structuring element is
two passes of shifted ORs.
"""

from __future__ import annotations

import numpy as np


def clear_median(values: np.ndarray, clear: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Median over axis 0 of the clear, finite values, with numpy's convention.

    For an odd count the middle value; for an even count the mean of the two middle values,
    computed as numpy does (``(lo + hi) / 2`` in the array's precision); NaN where no value is
    clear. This equals ``numpy.nanmedian(numpy.where(clear, values, nan), axis=0)`` exactly.

    Args:
        values: float32 (n, h, w): one band of n acquisitions on one block. **Sorted in place**
            (its contents are destroyed), so no copy of the stack is made.
        clear: bool (n, h, w), True where an observation may be used; None: every finite value.

    Returns:
        (median float32 (h, w), count uint16 (h, w) of the values used).

    Example:
        >>> v = np.array([[[1.0]], [[4.0]], [[2.0]], [[9.0]]], np.float32)
        >>> m, n = clear_median(v, np.array([[[1]], [[1]], [[1]], [[0]]], bool))
        >>> float(m[0, 0]), int(n[0, 0])
        (2.0, 3)
    """
    if values.ndim != 3:
        raise ValueError(f"clear_median expects (n, h, w), got shape {values.shape}")
    if clear is not None:
        np.copyto(values, np.float32(np.nan), where=~clear)
    n = values.shape[0]
    if n == 0:
        h, w = values.shape[1:]
        return np.full((h, w), np.nan, np.float32), np.zeros((h, w), np.uint16)
    values.sort(axis=0)  # NaN sorts last: the clear values come first, ascending
    count = n - np.isnan(values).sum(axis=0, dtype=np.int64)
    lo_i = np.maximum(count - 1, 0) // 2
    hi_i = count // 2  # <= n - 1, as count <= n
    lo = np.take_along_axis(values, lo_i[None], axis=0)[0]
    hi = np.take_along_axis(values, hi_i[None], axis=0)[0]
    med = (lo + hi) / values.dtype.type(2)
    med[count == 0] = np.nan
    return med.astype(np.float32, copy=False), count.astype(np.uint16)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow the True pixels of a 2-D mask by ``radius`` pixels (a (2r+1)² square).

    A pixel becomes True when any pixel within ``radius`` rows and columns is True; the array
    edge is not padded. For a block, read the mask with a halo of ``radius`` pixels and crop.

    Example:
        >>> m = np.zeros((5, 5), bool); m[2, 2] = True
        >>> int(dilate(m, 1).sum())
        9
    """
    if radius < 0:
        raise ValueError(f"dilation radius must be >= 0, got {radius}")
    if radius == 0 or mask.size == 0:
        return mask.copy()
    rows = mask.copy()
    for k in range(1, radius + 1):  # shifts of k >= the width are empty slices
        rows[:, k:] |= mask[:, :-k]
        rows[:, :-k] |= mask[:, k:]
    out = rows.copy()
    for k in range(1, radius + 1):
        out[k:, :] |= rows[:-k, :]
        out[:-k, :] |= rows[k:, :]
    return out


class PowerMean:
    """Running mean of Sentinel-1 sigma0 in linear power over acquisitions (temporal multi-looking).

    Values are added in float64 in the order the acquisitions are given; a pixel's mean uses
    the acquisitions that have data there (``count``).

    Example:
        >>> pm = PowerMean((1, 2))
        >>> pm.add(np.array([[0.01, np.nan]], np.float32)); pm.add(np.array([[0.1, 0.2]], np.float32))
        >>> [round(float(v), 4) for v in pm.mean()[0]], pm.count.tolist()
        ([0.055, 0.2], [[2, 1]])
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.total = np.zeros(shape, np.float64)
        self.count = np.zeros(shape, np.uint16)

    def add(self, power: np.ndarray) -> None:
        ok = np.isfinite(power) & (power > 0)
        self.total += np.where(ok, power, 0.0)
        self.count += ok

    def mean(self) -> np.ndarray:
        """float32 mean power, NaN where no acquisition has data."""
        out = np.full(self.total.shape, np.nan, np.float32)
        has = self.count > 0
        out[has] = (self.total[has] / self.count[has]).astype(np.float32)
        return out
