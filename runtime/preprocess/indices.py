"""Normalised-difference indices (NDVI, NDCI, BAI) from Sentinel-2 reflectance.

The formulas live in :data:`coalmine.runtime.bands.INDICES` (name -> (a, b) meaning
``(a - b) / (a + b)``); this module only evaluates them. A zero denominator gives NaN
(nodata), never inf.
"""

from __future__ import annotations

import numpy as np

from ..bands import INDICES, S2_BANDS


def normalized_difference(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``(a - b) / (a + b)`` as float32, NaN where ``a + b == 0`` or an input is NaN.

    Args:
        a, b: arrays of the same shape.
        out: optional float32 array to write into (returned).

    Example:
        >>> normalized_difference(np.array([3.0, 0.0]), np.array([1.0, 0.0])).tolist()
        [0.5, nan]
    """
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    den = a + b
    if out is None:
        out = np.empty(np.broadcast(a, b).shape, dtype=np.float32)
    out.fill(np.nan)
    np.divide(a - b, den, out=out, where=den != 0)
    return out


def compute_indices(refl: np.ndarray, bands: tuple[str, ...] = S2_BANDS,
                    out: np.ndarray | None = None) -> np.ndarray:
    """All indices of :data:`INDICES`, in order, from a (band, row, col) reflectance array.

    Args:
        refl: float32 (len(bands), h, w) reflectance.
        bands: names of ``refl``'s bands.
        out: optional float32 (len(INDICES), h, w) array to fill (e.g. a slice of the stack).

    Returns:
        float32 (len(INDICES), h, w).
    """
    pos = {b: i for i, b in enumerate(bands)}
    if out is None:
        out = np.empty((len(INDICES), *refl.shape[1:]), dtype=np.float32)
    for k, (a, b) in enumerate(INDICES.values()):
        normalized_difference(refl[pos[a]], refl[pos[b]], out=out[k])
    return out
