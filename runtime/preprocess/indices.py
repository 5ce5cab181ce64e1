"""Normalised-difference indices (NDVI, NDCI, BAI) from Sentinel-2 reflectance.

The formulas live in :data:`coalmine.runtime.bands.INDICES` (name -> (a, b) meaning
``(a - b) / (a + b)``); this module only evaluates them. A zero denominator gives NaN
(nodata), never inf.
"""

from __future__ import annotations

import numpy as np

from ..bands import INDICES, S2_BANDS


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` as float32, NaN where ``a + b == 0`` or an input is NaN.

    Example:
        >>> normalized_difference(np.array([3.0, 0.0]), np.array([1.0, 0.0])).tolist()
        [0.5, nan]
    """
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    den = a + b
    out = np.full(np.broadcast(a, b).shape, np.nan, dtype=np.float32)
    ok = den != 0
    np.divide(a - b, den, out=out, where=ok)
    return out


def compute_indices(refl: np.ndarray, bands: tuple[str, ...] = S2_BANDS) -> np.ndarray:
    """All indices of :data:`INDICES`, in order, from a (band, row, col) reflectance array.

    Args:
        refl: float32 (len(bands), h, w) reflectance.
        bands: names of ``refl``'s bands.

    Returns:
        float32 (len(INDICES), h, w).
    """
    pos = {b: i for i, b in enumerate(bands)}
    return np.stack([normalized_difference(refl[pos[a]], refl[pos[b]]) for a, b in INDICES.values()])
