"""Reading only a window of a remote COG into a local GeoTIFF, robustly.

GDAL's ``/vsicurl/`` (through rasterio) reads a Cloud-Optimised GeoTIFF with HTTP range
requests: the header, then only the internal tiles under the window — a 10 x 10 km area of a
110 x 110 km Sentinel-2 tile is about 1 % of the file. Each asset is read on its own grid and
resolution (10 m, 20 m bands, SCL, Sentinel-1), over the bounds asked for, rounded outwards to
whole pixels.

Robustness (written by hand: no library wraps GDAL reads in retries and atomic writes):

* **retries with backoff**: a read that fails (HTTP 5xx/429, timeout, a connection cut, a
  truncated body — GDAL reports each as an error, never as zeros) is retried up to ``retries``
  times, waiting ``backoff``, 2 x ``backoff``, ... seconds; the strips already written are kept
  and the read resumes at the failed strip. GDAL caches what it learnt about a URL (including a
  failure) until the file is closed, which ``CPL_VSIL_CURL_NON_CACHED`` limits to one open, so a
  retry really asks the server again. HTTP 4xx other than 408/429 (missing asset, no access) is
  not retried.
* **timeouts**: ``GDAL_HTTP_TIMEOUT`` / ``GDAL_HTTP_CONNECTTIMEOUT``.
* **a partial file never counts**: pixels are written under a hidden temporary name beside the
  target (the project's one atomic writer), with the SHA-256 of the pixels as they arrived in a
  ``COALMINE_PIXEL_SHA256`` tag; the file is read back and its pixels hashed again, and only a
  file whose pixels match is fsynced and renamed to its name. A file with its final name can be checked again at any time
  (:func:`verify_file`), which is how an interrupted fetch adopts work it finished.

Files are created with the umask's mode, like every output.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from .._io import atomic_output
from ..errors import InputError, OutputError, ServiceUnavailableError
from ..preprocess.s1grd.product import SIZE_TAG, WINDOW_TAG

log = logging.getLogger("coalmine.fetch")

#: Tag holding the SHA-256 of a fetched file's pixels (row-major, native dtype).
PIXEL_TAG = "COALMINE_PIXEL_SHA256"
# WINDOW_TAG (where the window lies in the remote asset: ``col_off,row_off,width,height``) and,
# for a pixel window, SIZE_TAG (the remote raster's ``width,height``) are the names the GRD
# reader reads (preprocess.s1grd.product).
#: Rows read per request batch; bounds memory for large windows.
STRIP_ROWS = 1024


@dataclass(frozen=True)
class FetchOptions:
    """Network behaviour of a fetch."""

    retries: int = 4
    backoff: float = 2.0  # seconds before the first retry; doubled each time
    timeout: float = 30.0  # seconds per HTTP request
    headers: tuple[tuple[str, str], ...] = ()  # sent with asset requests (same host only)
    s3_region: str | None = None  # AWS region of s3:// assets
    requester_pays: bool = False  # s3:// assets in a requester-pays bucket


@dataclass(frozen=True)
class FetchedFile:
    """A verified local file: name, size, pixel hash, and the window it holds of the remote asset."""

    name: str
    bytes: int
    pixels_sha256: str
    window: tuple[int, int, int, int]  # col_off, row_off, width, height on the asset's grid
    all_nodata: bool


class AssetError(InputError):
    """An asset cannot be used (missing, no access, not a raster): not worth retrying (exit 1)."""


def gdal_env(opts: FetchOptions) -> dict[str, Any]:
    """GDAL configuration for range reads with our own retries."""
    env: dict[str, Any] = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing beside each COG
        "GDAL_HTTP_TIMEOUT": str(max(1, math.ceil(opts.timeout))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, math.ceil(min(opts.timeout, 15.0)))),
        "GDAL_HTTP_MAX_RETRY": "0",  # retries are ours (counted, logged, with backoff)
        "CPL_VSIL_CURL_NON_CACHED": "/vsicurl/:/vsis3/",  # forget a URL's state when its file closes
        "GDAL_HTTP_MULTIRANGE": "YES",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    }
    if opts.headers:
        env["GDAL_HTTP_HEADERS"] = "\r\n".join(f"{k}: {v}" for k, v in opts.headers)
    if opts.s3_region:
        env["AWS_REGION"] = opts.s3_region
    if opts.requester_pays:
        env["AWS_REQUEST_PAYER"] = "requester"
    return env


def _message(exc: BaseException) -> str:
    parts = []
    e: BaseException | None = exc
    while e is not None and len(parts) < 4:
        s = str(e).strip()
        if s and "previous exception" not in s:
            parts.append(s.splitlines()[0])
        e = e.__cause__ or e.__context__
    return "; ".join(parts) or type(exc).__name__


def _is_client_error(msg: str) -> bool:
    """HTTP 4xx other than 408 (timeout) and 429 (slow down), or a non-raster answer."""
    for code in ("400", "401", "403", "404", "410"):
        if f"HTTP response code: {code}" in msg:
            return True
    return "not recognized as a supported file format" in msg or "not a supported file format" in msg


def snap_bounds(b: BoundingBox, origin: tuple[float, float], step: float) -> BoundingBox:
    """``b`` grown outwards to multiples of ``step`` from ``origin`` (so 10, 20 and 60 m grids agree)."""
    ox, oy = origin
    return BoundingBox(ox + math.floor((b.left - ox) / step + 1e-9) * step,
                       oy + math.floor((b.bottom - oy) / step + 1e-9) * step,
                       ox + math.ceil((b.right - ox) / step - 1e-9) * step,
                       oy + math.ceil((b.top - oy) / step - 1e-9) * step)


def window_for(ds: Any, bounds: BoundingBox) -> Window | None:
    """The whole-pixel window of ``ds`` covering ``bounds`` (in ``ds.crs``), clipped; None if outside."""
    inv = ~ds.transform
    xs, ys = zip(*(inv * (x, y) for x in (bounds.left, bounds.right) for y in (bounds.bottom, bounds.top)),
                 strict=True)

    def lo(v: float) -> int:
        return round(v) if abs(v - round(v)) < 1e-6 else math.floor(v)

    def hi(v: float) -> int:
        return round(v) if abs(v - round(v)) < 1e-6 else math.ceil(v)

    c0, c1 = max(0, lo(min(xs))), min(ds.width, hi(max(xs)))
    r0, r1 = max(0, lo(min(ys))), min(ds.height, hi(max(ys)))
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def _profile(ds: Any, win: Window, description: str) -> dict[str, Any]:
    dtype = ds.dtypes[0]
    p: dict[str, Any] = {
        "driver": "GTiff", "count": 1, "dtype": dtype, "width": int(win.width),
        "height": int(win.height), "nodata": ds.nodata, "compress": "deflate",
        "predictor": 3 if np.dtype(dtype).kind == "f" else 2, "bigtiff": "IF_SAFER",
    }
    gcps, gcp_crs = ds.gcps
    if ds.crs is None and gcps:  # a radar image located by GCPs: keep them, moved with the window
        p["gcps"] = [GroundControlPoint(row=g.row - win.row_off, col=g.col - win.col_off, x=g.x, y=g.y,
                                        z=g.z, id=g.id, info=g.info) for g in gcps]
        p["crs"] = gcp_crs
    else:
        p.update(crs=ds.crs, transform=ds.window_transform(win))
    if win.width >= 256 and win.height >= 256:
        p.update(tiled=True, blockxsize=256, blockysize=256)
    return p


def _asset_window(src: Any, bounds: BoundingBox, bounds_crs: CRS, margin: int, label: str) -> Window | None:
    if src.crs is None:
        raise AssetError(f"{label} has no CRS; it cannot be placed on a map")
    b = bounds
    if CRS.from_user_input(src.crs) != CRS.from_user_input(bounds_crs):
        b = BoundingBox(*transform_bounds(bounds_crs, src.crs, *bounds, densify_pts=21))
    if margin:
        rx, ry = abs(src.transform.a), abs(src.transform.e)
        b = BoundingBox(b.left - margin * rx, b.bottom - margin * ry, b.right + margin * rx, b.top + margin * ry)
    return window_for(src, b)


def _write_strip(out: Any, a: np.ndarray, row: int, tmp: Path) -> None:
    try:
        out.write(a, 1, window=Window(0, row, a.shape[1], a.shape[0]))
    except RasterioError as exc:  # a local write error is not a network error: no retry
        raise OutputError(f"cannot write {tmp} ({_message(exc)}); check free space and permissions") from exc


def _strips(height: int) -> list[tuple[int, int]]:
    return [(r, min(STRIP_ROWS, height - r)) for r in range(0, height, STRIP_ROWS)]


def all_nodata(a: np.ndarray, nodata: float | None) -> bool:
    """True when no pixel of ``a`` is valid (nodata, NaN, or 0 where no nodata is set)."""
    if nodata is None:
        return not np.any(a)
    if isinstance(nodata, float) and math.isnan(nodata):
        return bool(np.isnan(a).all())
    valid = a != a.dtype.type(nodata)
    if np.dtype(a.dtype).kind == "f":
        valid &= ~np.isnan(a)
    return not bool(valid.any())


class _NoOverlap(Exception):
    """The bounds miss the raster: nothing to write."""


def fetch_window(href: Callable[[], str], bounds: BoundingBox, bounds_crs: CRS, dst: Path, *,
                 opts: FetchOptions, tags: dict[str, str] | None = None, description: str = "",
                 label: str = "", margin: int = 0) -> FetchedFile | None:
    return _fetch(href, lambda src: _asset_window(src, bounds, bounds_crs, margin, label), dst,
                  opts=opts, tags=tags, description=description, label=label)


def fetch_pixel_window(href: Callable[[], str], window: Window, dst: Path, *, opts: FetchOptions,
                       tags: dict[str, str] | None = None, description: str = "",
                       label: str = "") -> FetchedFile | None:
    """Download ``window`` (pixel coordinates of the remote raster) into ``dst``, as :func:`fetch_window`.

    For rasters without a map grid (a radar image in line/pixel, located by GCPs): the GCPs are
    kept, shifted with the window, and the tag :data:`SIZE_TAG` records the remote raster's
    ``width,height`` beside :data:`WINDOW_TAG`. Returns None when the window misses the raster.
    """
    size: list[int] = []

    def locate(src: Any) -> Window | None:
        size[:] = [src.width, src.height]
        c0, r0 = max(0, int(window.col_off)), max(0, int(window.row_off))
        c1 = min(src.width, int(window.col_off + window.width))
        r1 = min(src.height, int(window.row_off + window.height))
        return Window(c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None

    return _fetch(href, locate, dst, opts=opts, tags=tags, description=description, label=label,
                  extra_tags=lambda: {SIZE_TAG: ",".join(str(v) for v in size)})


def _fetch(href: Callable[[], str], locate: Callable[[Any], Window | None], dst: Path, *,
           opts: FetchOptions, tags: dict[str, str] | None, description: str, label: str,
           extra_tags: Callable[[], dict[str, str]] | None = None) -> FetchedFile | None:
    """Download the window of a remote raster that covers ``bounds`` into ``dst`` (verified, atomic).

    Args:
        href: returns the URL to open (called again on each attempt, so signed URLs stay fresh).
        bounds: area to cover, in ``bounds_crs``; transformed to the asset's CRS when it differs.
        dst: the final file; written under a hidden temporary name beside it (the project's
            :func:`~coalmine.runtime._io.atomic_output`) and renamed only when verified.
        opts: retries, backoff, timeout, headers.
        tags: GeoTIFF tags to write (metadata beside the pixels).
        description: band description (e.g. ``B02``).
        label: how to name the asset in messages (e.g. ``item X asset blue``).
        margin: extra pixels of the asset's own grid around the window (resampling context).

    Returns:
        The :class:`FetchedFile`, or None when ``bounds`` do not overlap the raster.

    Raises:
        ServiceUnavailableError: the server kept failing after ``opts.retries`` retries (exit 69).
        AssetError: the asset is missing, forbidden or not a raster (exit 1).
        OutputError: the local file cannot be written or does not read back identically.
    """
    state: dict[str, Any] = {"src": None, "out": None}
    try:
        with rasterio.Env(**gdal_env(opts)), atomic_output(dst) as tmp:
            win, digest, empty = _download(href, locate, tmp, state, opts=opts, description=description,
                                           label=label)
            out = state["out"]
            if description:
                out.set_band_description(1, description)
            out.update_tags(**(tags or {}), **(extra_tags() if extra_tags else {}), **{
                PIXEL_TAG: digest,
                WINDOW_TAG: ",".join(str(int(v)) for v in (win.col_off, win.row_off, win.width, win.height))})
            out.close()
            state["out"] = None
            if verify_file(tmp) != digest:
                raise OutputError(f"{tmp} does not read back as written (disk full or failing?); "
                                  f"free space in {dst.parent} and fetch again")
    except _NoOverlap:
        return None
    finally:
        for k in ("src", "out"):
            if state[k] is not None:
                state[k].close()
    return FetchedFile(dst.name, dst.stat().st_size, digest,
                       (int(win.col_off), int(win.row_off), int(win.width), int(win.height)), empty)


def _download(href: Callable[[], str], locate: Callable[[Any], Window | None], tmp: Path, state: dict[str, Any],
              *, opts: FetchOptions, description: str, label: str) -> tuple[Window, str, bool]:
    """Read the window strip by strip into ``tmp``, retrying failed reads from the failed strip on."""
    failures = 0
    win: Window | None = None
    done = 0
    digest = hashlib.sha256()
    empty = True
    while True:
        try:
            if state["src"] is None:
                state["src"] = rasterio.open(href())
            src = state["src"]
            if win is None:
                win = locate(src)
                if win is None:
                    raise _NoOverlap
            for r, n in _strips(int(win.height))[done:]:
                a = src.read(1, window=Window(win.col_off, win.row_off + r, win.width, n))
                if state["out"] is None:
                    state["out"] = rasterio.open(tmp, "w", **_profile(src, win, description))
                _write_strip(state["out"], a, r, tmp)
                digest.update(np.ascontiguousarray(a).tobytes())
                empty = empty and all_nodata(a, src.nodata)
                done += 1
            return win, digest.hexdigest(), empty
        except RasterioError as exc:
            msg = _message(exc)
            if state["src"] is not None:
                state["src"].close()
                state["src"] = None
            if _is_client_error(msg):
                raise AssetError(f"{label} cannot be read ({msg}); the catalogue lists an asset its "
                                 "server does not give: check access, or skip the item") from exc
            failures += 1
            wait_before_retry(failures, opts, label, msg)


def wait_before_retry(failures: int, opts: FetchOptions, label: str, reason: str) -> None:
    """Sleep the exponential backoff after the ``failures``-th failed read of ``label``.

    Raises:
        ServiceUnavailableError: ``failures`` exceeds ``opts.retries``; what was fetched is kept.
    """
    if failures > opts.retries:
        raise ServiceUnavailableError(
            f"fetch failed: {label} could not be read after {opts.retries} retries ({reason}); "
            "what was fetched is kept and the next run resumes")
    wait = opts.backoff * 2 ** (failures - 1)
    log.warning("%s: %s; retry %d/%d in %.1f s", label, reason, failures, opts.retries, wait)
    time.sleep(wait)


def verify_file(path: Path) -> str | None:
    """SHA-256 of a fetched file's pixels if they match its ``COALMINE_PIXEL_SHA256`` tag, else None.

    A missing, truncated or unreadable file, or one without the tag, gives None.
    """
    try:
        with rasterio.open(path) as ds:
            want = ds.tags().get(PIXEL_TAG)
            if not want:
                return None
            h = hashlib.sha256()
            for r, n in _strips(ds.height):
                h.update(np.ascontiguousarray(ds.read(1, window=Window(0, r, ds.width, n))).tobytes())
            got = h.hexdigest()
    except (RasterioError, OSError):
        return None
    return got if got == want else None
