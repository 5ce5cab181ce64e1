"""Lee speckle filter for Sentinel-1 sigma0 in linear power.

The filter is the classic local-statistics Lee filter (Lee 1980): with the local mean ``m`` and
variance ``v`` in a ``w x w`` window and the speckle's squared coefficient of variation
``cu2 = 1 / ENL``, the signal variance is ``vx = (v - m^2 cu2) / (1 + cu2)`` and the output is
``m + k (x - m)`` with ``k = clip(vx / v, 0, 1)``: flat areas get the local mean, edges and
point targets keep their value. It runs in linear power (the multiplicative speckle model
holds there); dB conversion comes afterwards.

The window statistics are plain sums of shifted arrays, added in the same order for every pixel,
so a block read with a halo of ``w // 2`` gives bit-identical values to the whole raster. NaN
(nodata) pixels are left out of the statistics and stay NaN; the window is clipped at the array
edge (nothing is padded).
"""

from __future__ import annotations

import numpy as np

#: Equivalent number of looks of Sentinel-1 IW GRDH products (ESA product specification).
DEFAULT_ENL = 4.4


def box_sum(a: np.ndarray, size: int) -> np.ndarray:
    """Sum over a ``size x size`` window centred on each pixel (clipped at the edges).

    Args:
        a: 2-D float array without NaN.
        size: odd window size >= 1.

    Returns:
        array of the same shape and dtype.
    """
    r = size // 2
    h, w = a.shape
    rows = np.zeros_like(a)
    for k in range(-r, r + 1):  # same order for every pixel -> exact under tiling
        if k < 0:
            rows[:, -k:] += a[:, : w + k]
        elif k > 0:
            rows[:, : w - k] += a[:, k:]
        else:
            rows += a
    out = np.zeros_like(a)
    for k in range(-r, r + 1):
        if k < 0:
            out[-k:, :] += rows[: h + k, :]
        elif k > 0:
            out[: h - k, :] += rows[k:, :]
        else:
            out += rows
    return out


def lee_filter(power: np.ndarray, window: int = 5, enl: float | np.ndarray = DEFAULT_ENL) -> np.ndarray:
    """Lee-filter a 2-D sigma0 image in linear power.

    Args:
        power: 2-D array of sigma0 in linear power; NaN = nodata.
        window: odd window size (e.g. 5 for 5x5); 1 returns a copy.
        enl: equivalent number of looks of the input (4.4 for S1 IW GRDH); an array of the
            image's shape gives each pixel its own (a temporal mean of n acquisitions has n
            times the looks of one).

    Returns:
        float32 array, NaN where the input is NaN.

    Raises:
        ValueError: ``window`` is even or < 1, ``enl`` <= 0, or ``power`` is not 2-D.

    Example:
        >>> lee_filter(np.ones((4, 4), np.float32), 3)[0, 0]
        1.0
    """
    if power.ndim != 2:
        raise ValueError(f"lee_filter expects a 2-D array, got shape {power.shape}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the speckle window must be an odd number >= 1, got {window}")
    enl_a = np.asarray(enl, dtype=np.float64)
    if not np.all(enl_a > 0):
        raise ValueError(f"ENL must be > 0, got {enl if enl_a.ndim == 0 else enl_a.min()}")
    if window == 1:
        return power.astype(np.float32, copy=True)
    # float32 is enough: sigma0 spans a few decades and a window holds at most a few hundred
    # values; the variance is clipped at 0 against rounding.
    x = power.astype(np.float32, copy=False)
    valid = np.isfinite(x)
    x0 = np.where(valid, x, np.float32(0.0))
    n = box_sum(valid.astype(np.float32), window)
    s1 = box_sum(x0, window)
    s2 = box_sum(x0 * x0, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_n = np.float32(1.0) / n
        m = s1 * inv_n
        v = np.maximum(s2 * inv_n - m * m, np.float32(0.0))
        cu2 = (1.0 / enl_a).astype(np.float32)
        vx = (v - m * m * cu2) / (np.float32(1.0) + cu2)
        k = np.clip(np.where(v > 0, vx / v, np.float32(0.0)), 0.0, 1.0).astype(np.float32)
    out = m + k * (x0 - m)
    out[~valid] = np.nan
    return out.astype(np.float32, copy=False)


def power_to_db(power: np.ndarray) -> np.ndarray:
    """10 log10 of linear power as float32; values <= 0 or NaN become NaN (nodata)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(power.astype(np.float32))
    db[~(power > 0)] = np.nan
    return db.astype(np.float32, copy=False)


def db_to_power(db: np.ndarray) -> np.ndarray:
    """Linear power from dB as float32 (NaN stays NaN)."""
    return np.power(np.float32(10.0), db.astype(np.float32) / np.float32(10.0)).astype(np.float32)
