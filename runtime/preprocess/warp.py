"""Reading any raster onto a window of the target grid (the Sentinel-2 10 m grid).

Every input (20 m Sentinel-2 bands, the SCL mask, Sentinel-1 on its own grid or by GCPs) is
brought onto the grid by :func:`read_onto_grid`, which reads only the source window that the
target window needs (plus a margin for the resampling kernel). Inputs on the same grid are
cropped; inputs in the same CRS on another grid are warped with ``rasterio.warp.reproject``
(exact: the transformation is affine); bilinear resampling across a CRS change or from GCPs uses
exact transformations on a lattice fixed to the whole grid (GDAL's warper approximates them per
request). Either way the value of a pixel does not depend on the window it is read in, so
blocks give the same values as a whole-scene read, bit for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from affine import Affine
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.transform import GCPTransformer, array_bounds, from_gcps
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform

from ..raster import Grid, read_checked

#: Source pixels read around the needed source window (bilinear needs 1; rounding and the
#: non-linear CRS change need a little more).
SOURCE_MARGIN = 3


def source_georef(ds: DatasetReader) -> tuple[CRS, Affine | None, list[GroundControlPoint]]:
    """CRS, transform (None when geocoded by GCPs) and GCPs of a dataset."""
    gcps, gcrs = ds.gcps
    if ds.crs is None and gcps:
        return gcrs, None, list(gcps)
    return ds.crs, ds.transform, []


def source_bounds_in(ds: DatasetReader, crs: CRS) -> BoundingBox:
    """Extent of ``ds`` expressed in ``crs`` (GCP rasters: the GCPs' extent)."""
    scrs, st, gcps = source_georef(ds)
    if st is None:
        xs = [g.x for g in gcps]
        ys = [g.y for g in gcps]
        b = (min(xs), min(ys), max(xs), max(ys))
    else:
        b = array_bounds(ds.height, ds.width, st)
    return BoundingBox(*transform_bounds(scrs, crs, *b, densify_pts=21))


def read_onto_grid(
    ds: DatasetReader,
    band: int,
    grid: Grid,
    window: Window,
    resampling: Resampling,
    *,
    option: str,
    src_nodata: float | None = None,
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Read ``band`` of ``ds`` resampled onto ``window`` of ``grid`` as float32 with NaN nodata.

    Only the source pixels under the window (plus :data:`SOURCE_MARGIN`) are read. ``convert``
    maps the float32 source values (nodata already NaN) before warping, e.g. dB -> linear power,
    so the interpolation happens in the right units.

    Args:
        ds: open source dataset (CRS + transform, or GCPs).
        band: 1-based band index.
        grid: the target grid.
        window: target window (inside ``grid``).
        resampling: rasterio resampling method.
        option: the CLI option naming the input, for error messages.
        src_nodata: source nodata value (default: the dataset's).
        convert: optional value transform applied before warping.

    Returns:
        float32 array (window.height, window.width).
    """
    h, w = int(window.height), int(window.width)
    out = np.full((h, w), np.nan, dtype=np.float32)
    dst_t = window_transform(window, grid.transform)
    scrs, st, gcps = source_georef(ds)
    nodata = ds.nodata if src_nodata is None else src_nodata

    # Source window covering the target window.
    b = array_bounds(h, w, dst_t)
    sb = transform_bounds(grid.crs, scrs, *b, densify_pts=21)
    approx = st if st is not None else from_gcps(gcps)
    sw = from_bounds(*sb, transform=approx)
    m = SOURCE_MARGIN if st is not None else SOURCE_MARGIN + int(0.1 * max(sw.width, sw.height)) + 8
    c0 = max(0, int(np.floor(min(sw.col_off, sw.col_off + sw.width))) - m)
    r0 = max(0, int(np.floor(min(sw.row_off, sw.row_off + sw.height))) - m)
    c1 = min(ds.width, int(np.ceil(max(sw.col_off, sw.col_off + sw.width))) + m)
    r1 = min(ds.height, int(np.ceil(max(sw.row_off, sw.row_off + sw.height))) + m)
    if c1 <= c0 or r1 <= r0:
        return out
    src_win = Window(c0, r0, c1 - c0, r1 - r0)
    src = read_checked(ds, option, band, window=src_win).astype(np.float32, copy=False)
    if nodata is not None and not np.isnan(nodata):
        src = np.where(src == np.float32(nodata), np.float32(np.nan), src)
    if convert is not None:
        src = convert(src)
    if st is not None and scrs == grid.crs and _aligned(window_transform(src_win, st), dst_t):
        # Same grid (e.g. 10 m bands, a stack): a plain crop is exact and skips the warper.
        src_t = window_transform(src_win, st)
        ro = int(round((dst_t.f - src_t.f) / st.e))
        co = int(round((dst_t.c - src_t.c) / st.a))
        sub = src[max(ro, 0): max(ro + h, 0), max(co, 0): max(co + w, 0)]
        out[max(-ro, 0): max(-ro, 0) + sub.shape[0], max(-co, 0): max(-co, 0) + sub.shape[1]] = sub
        return out
    if resampling in (Resampling.bilinear, Resampling.nearest) and (st is None or scrs != grid.crs):
        return _other_crs(src, src_win, st, gcps, scrs, grid, window, resampling)
    if resampling == Resampling.bilinear and _axis_aligned(st) and _axis_aligned(grid.transform):
        # Same CRS, other pixel size/origin (the 20 m bands, S1 on a shifted grid): separable
        # bilinear from each pixel's global row/col, several times faster than GDAL's warper.
        T = grid.transform
        cols = np.arange(window.col_off, window.col_off + w, dtype=np.float64) + 0.5
        rows = np.arange(window.row_off, window.row_off + h, dtype=np.float64) + 0.5
        qc = (T.c + T.a * cols - st.c) / st.a - 0.5 - c0
        qr = (T.f + T.e * rows - st.f) / st.e - 0.5 - r0
        return _bilinear_separable(src, qr, qc)
    kw: dict[str, object] = {}
    if st is None:
        kw["gcps"] = [
            GroundControlPoint(row=g.row - r0, col=g.col - c0, x=g.x, y=g.y, z=g.z) for g in gcps
        ]
    else:
        kw["src_transform"] = window_transform(src_win, st)
    reproject(
        src,
        out,
        src_crs=scrs,
        src_nodata=np.nan,
        dst_transform=dst_t,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=resampling,
        **kw,
    )
    return out


def _aligned(a: Affine, b: Affine) -> bool:
    """Same pixel size and an origin offset of whole pixels (no resampling needed)."""
    if not (np.isclose(a.a, b.a) and np.isclose(a.e, b.e) and a.b == 0 == b.b and a.d == 0 == b.d):
        return False
    cx = (b.c - a.c) / a.a
    cy = (b.f - a.f) / a.e
    return bool(abs(cx - round(cx)) < 1e-6 and abs(cy - round(cy)) < 1e-6)


#: Spacing (target pixels) of the global lattice on which exact CRS transformations are computed.
LATTICE = 16


@functools.lru_cache(maxsize=16)
def _transformer(dst: str, src: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(dst), CRS.from_wkt(src), always_xy=True)


def _other_crs(src: np.ndarray, src_win: Window, st: Affine | None,
               gcps: list[GroundControlPoint], scrs: CRS, grid: Grid,
               window: Window, resampling: Resampling = Resampling.bilinear) -> np.ndarray:
    """Bilinear or nearest resampling from a source in another CRS (or geocoded by GCPs), same
    for any window.

    GDAL's warper approximates the CRS transformation per request (error threshold 0.125 px),
    so two windows would disagree in the last digits. Here the exact transformation (pyproj) is
    evaluated on a lattice fixed to the *whole* target grid (every :data:`LATTICE` pixels) and
    interpolated linearly in between (sub-millimetre error for UTM/geographic pairs), so a
    pixel's source position, and thus its value, does not depend on the window. Bilinear:
    neighbours that are NaN or outside the source get no weight; the weights of the others are
    renormalised. Nearest (class rasters such as SCL): the source pixel containing the position.
    """
    h, w = int(window.height), int(window.width)
    r0, c0 = int(window.row_off), int(window.col_off)
    L = LATTICE
    lr0, lc0 = (r0 // L) * L, (c0 // L) * L
    nr = (r0 + h - 1 - lr0) // L + 2
    nc = (c0 + w - 1 - lc0) // L + 2
    rows = lr0 + L * np.arange(nr, dtype=np.float64)
    cols = lc0 + L * np.arange(nc, dtype=np.float64)
    T = grid.transform
    cc, rr = np.meshgrid(cols + 0.5, rows + 0.5)
    x = T.c + T.a * cc + T.b * rr
    y = T.f + T.d * cc + T.e * rr
    if scrs != grid.crs:
        x, y = _transformer(grid.crs.to_wkt(), scrs.to_wkt()).transform(x, y)
    if st is not None:
        inv = ~st
        scol = inv.c + inv.a * x + inv.b * y
        srow = inv.f + inv.d * x + inv.e * y
    else:  # GCP polynomial, evaluated exactly at the lattice nodes
        srow, scol = GCPTransformer(gcps).rowcol(x.ravel(), y.ravel(), op=lambda v: v)
        srow = np.asarray(srow, dtype=np.float64).reshape(x.shape)
        scol = np.asarray(scol, dtype=np.float64).reshape(x.shape)
    scol = scol - 0.5  # pixel-centre coordinates of the source
    srow = srow - 0.5
    # per-pixel lattice cell and fraction (depend on the global row/col only)
    pr = np.arange(r0, r0 + h)
    pc = np.arange(c0, c0 + w)
    ir, fr = (pr - lr0) // L, ((pr - lr0) % L) / L
    ic, fc = (pc - lc0) // L, ((pc - lc0) % L) / L
    fr, fc = fr[:, None], fc[None, :]

    def lerp(a: np.ndarray) -> np.ndarray:
        top = a[ir][:, ic] * (1 - fc) + a[ir][:, ic + 1] * fc
        bot = a[ir + 1][:, ic] * (1 - fc) + a[ir + 1][:, ic + 1] * fc
        return top * (1 - fr) + bot * fr

    qc = lerp(scol) - src_win.col_off
    qr = lerp(srow) - src_win.row_off
    if resampling == Resampling.nearest:
        return _nearest(src, qr, qc)
    return _bilinear(src, qr, qc)


def _nearest(src: np.ndarray, qr: np.ndarray, qc: np.ndarray) -> np.ndarray:
    """The source pixel whose area holds each pixel-centre coordinate (``qr``, ``qc``); NaN
    outside ``src``."""
    sh, sw = src.shape
    i = np.floor(qr + 0.5).astype(np.int64)
    j = np.floor(qc + 0.5).astype(np.int64)
    inside = (i >= 0) & (i < sh) & (j >= 0) & (j < sw)
    out = np.full(qr.shape, np.nan, dtype=np.float32)
    out[inside] = src[i[inside], j[inside]]
    return out


def _axis_aligned(t: Affine | None) -> bool:
    return t is not None and t.b == 0 and t.d == 0


def _bilinear_separable(src: np.ndarray, qr: np.ndarray, qc: np.ndarray) -> np.ndarray:
    """Bilinear sampling at rows ``qr`` (h,) x columns ``qc`` (w,) (pixel-centre coordinates).

    Same rule as :func:`_bilinear` (NaN and outside neighbours get no weight, the others are
    renormalised), computed rows first, then columns, in float32: a few passes over the data.
    The arithmetic for a pixel depends only on its source neighbours and its global position,
    so any window gives the same value.
    """
    sh, sw = src.shape
    good = np.isfinite(src)
    v = np.where(good, src, np.float32(0.0)).astype(np.float32, copy=False)
    g = good.astype(np.float32)

    def axis_weights(q: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        i0 = np.floor(q).astype(np.int64)
        t = (q - i0).astype(np.float32)
        w0 = np.where((i0 >= 0) & (i0 < n), np.float32(1.0) - t, np.float32(0.0))
        w1 = np.where((i0 + 1 >= 0) & (i0 + 1 < n), t, np.float32(0.0))
        return np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1), w0, w1

    r0, r1, wr0, wr1 = axis_weights(qr, sh)
    c0, c1, wc0, wc1 = axis_weights(qc, sw)
    wr0, wr1 = wr0[:, None], wr1[:, None]
    vr = v.take(r0, axis=0) * wr0 + v.take(r1, axis=0) * wr1
    gr = g.take(r0, axis=0) * wr0 + g.take(r1, axis=0) * wr1
    num = vr.take(c0, axis=1) * wc0 + vr.take(c1, axis=1) * wc1
    den = gr.take(c0, axis=1) * wc0 + gr.take(c1, axis=1) * wc1
    inside = ((qr >= -0.5) & (qr <= sh - 0.5))[:, None] & ((qc >= -0.5) & (qc <= sw - 0.5))[None, :]
    out = np.full(num.shape, np.nan, dtype=np.float32)
    has = inside & (den > 0)
    np.divide(num, den, out=out, where=has)
    return out


def _bilinear(src: np.ndarray, qr: np.ndarray, qc: np.ndarray) -> np.ndarray:
    """Sample ``src`` bilinearly at pixel-centre coordinates (``qr``, ``qc``), float32 result.

    ``qr``/``qc`` are (h, w) float64 arrays. Neighbours that are NaN or outside ``src`` get no
    weight; the others' weights are renormalised; a point outside the source (by more than half
    a pixel) is NaN. Values and weights are gathered from flat float32 copies (with the finite
    mask folded into a weight plane), so each neighbour costs two ``take`` calls.
    """
    sh, sw = src.shape
    good = np.isfinite(src)
    v = np.where(good, src, np.float32(0.0)).astype(np.float32, copy=False).ravel()
    g = good.astype(np.float32).ravel()
    inside = (qr >= -0.5) & (qr <= sh - 0.5) & (qc >= -0.5) & (qc <= sw - 0.5)
    i0 = np.floor(qr).astype(np.int64)
    j0 = np.floor(qc).astype(np.int64)
    ty = (qr - i0).astype(np.float32)
    tx = (qc - j0).astype(np.float32)
    num = np.zeros(qr.shape, dtype=np.float32)
    den = np.zeros(qr.shape, dtype=np.float32)
    one = np.float32(1.0)
    for di, wy in ((0, one - ty), (1, ty)):
        ii = i0 + di
        okr = (ii >= 0) & (ii < sh)
        row = np.clip(ii, 0, sh - 1) * sw
        for dj, wx in ((0, one - tx), (1, tx)):
            jj = j0 + dj
            ok = okr & (jj >= 0) & (jj < sw)
            flat = row + np.clip(jj, 0, sw - 1)
            wgt = np.where(ok, wy * wx, np.float32(0.0))
            num += v.take(flat) * wgt
            den += g.take(flat) * wgt
    out = np.full(qr.shape, np.nan, dtype=np.float32)
    np.divide(num, den, out=out, where=inside & (den > 0))
    return out
