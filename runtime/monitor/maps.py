"""The report's maps: mine outlines and change classes over a true-colour picture of the year,
with the areas of interest outlined and named, a scale bar, a latitude/longitude graticule and
the share of the area actually observed.

Each map is drawn with matplotlib (no pyplot: no GUI, no global state) in the raster's own
coordinates, so every layer lines up by construction:

- the picture of :mod:`.backdrop` (or plain grey where there is none);
- the raster, reduced to the display resolution by *presence* — a display cell is mined when
  any of its pixels is, so a small pit never vanishes between display cells — and drawn as
  outlines with a faint fill, never as opaque paint that hides the ground;
- areas not observed (nodata in more than half of a display cell: clouds, beyond the scene)
  under a hatched veil, so a gap in the mines is never mistaken for land without them;
- AOI outlines with their names (shown literally, whatever characters they hold);
- a scale bar of a round length (metres on projected grids; on a geographic grid from the
  geodesic length of a degree at the map's centre) and a graticule of round degrees whose lines
  are projected point by point (they curve on a UTM grid, as they should).

Hand-written because no maintained library draws a scale bar and a projected graticule on a
plain matplotlib axes without pulling in a map stack (cartopy needs GEOS/PROJ builds and its own
data downloads; matplotlib-scalebar does not do graticules and is another dependency).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window, from_bounds

from ..raster import NODATA
from .backdrop import read_truecolour
from .legend import CHANGE_COLORS, MINED, NEWLY_MINED, NO_LONGER_MINED, STABLE_MINE

#: Outline colours on the picture: bright enough to read over vegetation, soil and water.
MINE_OUTLINE = "#FFB000"
AOI_OUTLINE = "#00E5FF"
#: The map's ground where there is no true-colour picture.
BACKGROUND = "#d9d9d6"
#: Change classes drawn as outlines, with their legend colours.
CHANGE_CLASSES = (NEWLY_MINED, NO_LONGER_MINED, STABLE_MINE)


@dataclass(frozen=True)
class Extent:
    """A map extent in the raster's CRS."""

    left: float
    bottom: float
    right: float
    top: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.top - self.bottom

    def grown(self, share: float) -> Extent:
        """The extent grown by ``share`` of its larger side on every side."""
        m = share * max(self.width, self.height)
        return Extent(self.left - m, self.bottom - m, self.right + m, self.top + m)

    def clipped(self, other: Extent) -> Extent:
        return Extent(max(self.left, other.left), max(self.bottom, other.bottom), min(self.right, other.right),
                      min(self.top, other.top))


@dataclass(frozen=True)
class Layer:
    """What one map shows: the raster, its kind ("mask" or "change") and the picture beneath."""

    raster: Path
    kind: str
    backdrop: Path | None = None


# -- reading the raster at display resolution ----------------------------------------------------


def _reduce(a: np.ndarray, f: int, op: str) -> np.ndarray:
    """Reduce a 2-D array by an integer factor ``f`` with ``any`` or ``mean`` over f×f cells."""
    if f == 1:
        return a.astype(np.float32) if op == "mean" else a.astype(bool)
    h, w = a.shape
    H, W = -(-h // f), -(-w // f)
    pad = np.zeros((H * f, W * f), dtype=a.dtype)
    pad[:h, :w] = a
    blocks = pad.reshape(H, f, W, f)
    if op == "any":
        return blocks.any(axis=(1, 3))
    counts = np.ones((h, w), dtype=np.float32)
    cnt = np.zeros((H * f, W * f), dtype=np.float32)
    cnt[:h, :w] = counts
    tot = cnt.reshape(H, f, W, f).sum(axis=(1, 3))
    return blocks.astype(np.float32).sum(axis=(1, 3)) / np.maximum(tot, 1)


def read_display(raster: Path, extent: Extent, max_px: int) -> tuple[dict[int, np.ndarray], np.ndarray, Extent]:
    """The raster inside ``extent`` reduced to at most ``max_px`` display cells a side.

    Read in strips of whole display rows, so a full Sentinel-2 tile is never held at once.

    Returns:
        ({class value: presence (bool)}, nodata share per display cell, the extent actually
        covered — snapped to whole raster pixels and clipped to the raster).
    """
    with rasterio.open(raster) as ds:
        full = Extent(*ds.bounds)
        ext = extent.clipped(full)
        win = from_bounds(ext.left, ext.bottom, ext.right, ext.top, transform=ds.transform)
        win = win.round_offsets(op="floor").round_lengths(op="ceil")
        f = max(1, -(-max(int(win.width), int(win.height)) // max_px))
        step = f * max(1, 256 // f)
        classes: dict[int, list[np.ndarray]] = {}
        nodata: list[np.ndarray] = []
        for r in range(0, int(win.height), step):
            h = min(step, int(win.height) - r)
            strip = Window(win.col_off, win.row_off + r, win.width, h)
            a = ds.read(1, window=strip, boundless=True, fill_value=NODATA)
            for v in np.unique(a):
                if v != NODATA and int(v) not in classes:
                    # a class first seen here: earlier strips had none of it
                    classes[int(v)] = [np.zeros((n.shape[0], n.shape[1]), bool) for n in nodata]
            for v, parts in classes.items():
                parts.append(_reduce(a == v, f, "any"))
            nodata.append(_reduce(a == NODATA, f, "mean"))
        x0, y0 = ds.transform * (win.col_off, win.row_off)
        x1, y1 = ds.transform * (win.col_off + win.width, win.row_off + win.height)
    present = {v: np.vstack(parts) for v, parts in classes.items()}
    return present, np.vstack(nodata), Extent(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


# -- scale bar and graticule -----------------------------------------------------------------------


def nice_length(span: float) -> float:
    """The round length (1, 2 or 5 × 10^k) closest below ``span``.

    Example:
        >>> nice_length(3700.0), nice_length(260.0), nice_length(0.9)
        (2000.0, 200.0, 0.5)
    """
    k = math.floor(math.log10(span))
    for m in (5, 2, 1):
        if m * 10**k <= span:
            return float(m * 10**k)
    return float(10 ** (k - 1) * 5)


def _metres_per_unit(crs: Any, extent: Extent) -> float:
    """Metres per map unit at the map's centre (geodesic for degrees)."""
    if crs is not None and crs.is_geographic:
        from pyproj import Geod

        lat = (extent.bottom + extent.top) / 2
        lon = (extent.left + extent.right) / 2
        _, _, d = Geod(ellps="WGS84").inv(lon, lat, lon + 1.0, lat)
        return float(d)
    if crs is not None and crs.is_projected:
        return float(crs.linear_units_factor[1])
    return 1.0


def draw_scale_bar(ax: Any, crs: Any, extent: Extent, fontsize: float = 7.0) -> float:
    """A black-and-white bar of a round length in the lower left corner; returns its metres."""
    from matplotlib.patches import Rectangle
    from matplotlib.patheffects import withStroke

    per_unit = _metres_per_unit(crs, extent)
    metres = nice_length(0.25 * extent.width * per_unit)
    length = metres / per_unit
    x0 = extent.left + 0.05 * extent.width
    y0 = extent.bottom + 0.05 * extent.height
    h = 0.015 * extent.height
    for i in range(2):
        ax.add_patch(Rectangle((x0 + i * length / 2, y0), length / 2, h, facecolor="black" if i == 0 else "white",
                               edgecolor="black", linewidth=0.6, zorder=6))
    label = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    ax.text(x0 + length / 2, y0 + 1.8 * h, label, ha="center", va="bottom", fontsize=fontsize, zorder=6,
            path_effects=[withStroke(linewidth=2.5, foreground="white")])
    return metres


def _nice_degrees(span: float) -> float:
    steps = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
    for s in steps:
        if span / s <= 4 + 1e-9:  # at most four intervals across the map
            return s
    return 10.0


def _fmt_deg(v: float, pos: str, neg: str, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{abs(v):.{decimals}f}°{pos if v >= 0 else neg}"


def draw_graticule(ax: Any, crs: Any, extent: Extent, fontsize: float = 6.5, labels: bool = True) -> float:
    """Meridians and parallels of round degrees, projected into the map; labels on the bottom and
    right edges (the upper left corner holds the title). Returns the spacing in degrees."""
    from matplotlib.patheffects import withStroke
    from pyproj import Transformer

    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    to_map = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    xs = np.linspace(extent.left, extent.right, 9)
    ys = np.linspace(extent.bottom, extent.top, 9)
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = to_ll.transform(gx.ravel(), gy.ravel())
    lon0, lon1, lat0, lat1 = float(np.min(lon)), float(np.max(lon)), float(np.min(lat)), float(np.max(lat))
    step = _nice_degrees(max(lon1 - lon0, lat1 - lat0))
    halo = [withStroke(linewidth=2.0, foreground="white")]
    style = {"color": "white", "linewidth": 0.5, "alpha": 0.7, "zorder": 4}
    dense = np.linspace(0.0, 1.0, 60)
    for lo in np.arange(math.ceil(lon0 / step) * step, lon1 + 1e-12, step):
        x, y = to_map.transform(np.full_like(dense, lo), lat0 + dense * (lat1 - lat0))
        ax.plot(x, y, **style)
        if labels:
            bx, _ = to_map.transform(lo, lat0)
            xb = float(np.interp(extent.bottom, y, x)) if np.all(np.diff(y) > 0) else bx
            if extent.left < xb < extent.right:
                ax.text(xb, extent.bottom + 0.005 * extent.height, _fmt_deg(lo, "E", "W", step), ha="center",
                        va="bottom", fontsize=fontsize, zorder=6, path_effects=halo)
    for la in np.arange(math.ceil(lat0 / step) * step, lat1 + 1e-12, step):
        x, y = to_map.transform(lon0 + dense * (lon1 - lon0), np.full_like(dense, la))
        ax.plot(x, y, **style)
        if labels:
            yl = float(np.interp(extent.right, x, y)) if np.all(np.diff(x) > 0) else float(y[-1])
            if extent.bottom + 0.04 * extent.height < yl < extent.top:
                ax.text(extent.right - 0.005 * extent.width, yl, _fmt_deg(la, "N", "S", step), ha="right",
                        va="bottom", fontsize=fontsize, zorder=6, path_effects=halo)
    return step


# -- the map ---------------------------------------------------------------------------------------


def _outline(ax: Any, present: np.ndarray, ext: Extent, color: str, fill_alpha: float, lw: float) -> None:
    """Outlines (and a faint fill) of the cells where ``present`` is true."""
    if not present.any():
        return
    h, w = present.shape
    xs = ext.left + (np.arange(w) + 0.5) * ext.width / w
    ys = ext.top - (np.arange(h) + 0.5) * ext.height / h
    z = np.pad(present.astype(np.float32), 1)
    dx, dy = ext.width / w, ext.height / h
    xs = np.concatenate([[xs[0] - dx], xs, [xs[-1] + dx]])
    ys = np.concatenate([[ys[0] + dy], ys, [ys[-1] - dy]])
    ax.contourf(xs, ys, z, levels=[0.5, 1.5], colors=[color], alpha=fill_alpha, zorder=3)
    ax.contour(xs, ys, z, levels=[0.5], colors=[color], linewidths=lw, zorder=3)


def _veil(ax: Any, nodata: np.ndarray, ext: Extent) -> None:
    """A hatched grey veil over display cells that are mostly not observed."""
    if not (nodata > 0.5).any():
        return
    rgba = np.zeros(nodata.shape + (4,), dtype=np.float32)
    rgba[nodata > 0.5] = (0.55, 0.55, 0.55, 0.55)
    ax.imshow(rgba, extent=(ext.left, ext.right, ext.bottom, ext.top), interpolation="nearest", zorder=2)
    h, w = nodata.shape
    xs = ext.left + (np.arange(w) + 0.5) * ext.width / w
    ys = ext.top - (np.arange(h) + 0.5) * ext.height / h
    ax.contourf(xs, ys, (nodata > 0.5).astype(np.float32), levels=[0.5, 1.5], colors="none", hatches=["////"],
                zorder=2)


def _draw_aois(ax: Any, aois: Sequence[Any], crs: Any, extent: Extent, fontsize: float, names: bool) -> None:
    from matplotlib.patheffects import withStroke
    from rasterio.warp import transform_geom

    for a in aois:
        try:
            g = transform_geom(a.crs, crs, a.geometry) if a.crs != crs else a.geometry
        except Exception:  # noqa: BLE001 - an AOI that cannot be projected is simply not drawn
            continue
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        tops = []
        for poly in polys:
            ring = np.asarray(poly[0], dtype=np.float64)
            ax.plot(ring[:, 0], ring[:, 1], color=AOI_OUTLINE, lw=1.2, zorder=5)
            tops.append((ring[:, 1].max(), ring[:, 0].min()))
        if names and tops:
            top, left = max(tops)
            x = min(max(left, extent.left), extent.right)
            y = min(top, extent.top)
            ax.text(x, y, a.name, ha="left", va="bottom" if top < extent.top - 0.05 * extent.height else "top",
                    fontsize=fontsize, color="black", zorder=6, clip_on=True,
                    path_effects=[withStroke(linewidth=2.5, foreground=AOI_OUTLINE)])


def draw_map(layer: Layer, aois: Sequence[Any], *, extent: Extent | None = None, width_in: float = 6.0,
             max_px: int = 600, title: str = "", note: str = "", warn: bool = False, names: bool = True,
             small: bool = False) -> bytes:
    """One map as image bytes: JPEG over a true-colour picture, else PNG (see :func:`image_mime`).

    Args:
        layer: the raster (a yearly mask or a change map) and the picture beneath it.
        aois: areas of interest to outline (and name, unless ``names`` is False).
        extent: the part to show (default: the whole raster).
        width_in: figure width in inches (100 dpi).
        max_px: display cells on the longer side.
        title: drawn in the upper left corner; ``note`` below it (orange when ``warn``).
        small: a thumbnail: smaller type, graticule without labels.
    """
    from matplotlib.figure import Figure

    with rasterio.open(layer.raster) as ds:
        crs, full = ds.crs, Extent(*ds.bounds)
    classes, nodata, ext = read_display(layer.raster, extent or full, max_px)
    fig = Figure(figsize=(width_in, width_in * ext.height / max(ext.width, 1e-9)), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    fig.patch.set_facecolor(BACKGROUND)  # where there is no picture (the axes' own patch is hidden)
    pic = read_truecolour(layer.backdrop)
    if pic is not None:
        img, b = pic
        ax.imshow(img, extent=(b.left, b.right, b.bottom, b.top), interpolation="bilinear", zorder=1)
    _veil(ax, nodata, ext)
    lw = 0.8 if small else 1.0
    if layer.kind == "mask":
        _outline(ax, classes.get(MINED, np.zeros((1, 1), bool)), ext, MINE_OUTLINE, 0.18, lw)
    else:
        for code in CHANGE_CLASSES:
            color = "#{:02x}{:02x}{:02x}".format(*CHANGE_COLORS[code][:3])
            if code == STABLE_MINE:
                color = MINE_OUTLINE  # the stable pit in the same colour as on the yearly maps
            _outline(ax, classes.get(code, np.zeros((1, 1), bool)), ext, color, 0.3, lw)
    fs = 7.0 if small else 9.0
    _draw_aois(ax, aois, crs, ext, fs, names)
    draw_graticule(ax, crs, ext, fontsize=fs - 1, labels=not small)
    draw_scale_bar(ax, crs, ext, fontsize=fs)
    if title or note:
        box = {"boxstyle": "round,pad=0.3", "facecolor": "white", "alpha": 0.85, "edgecolor": "#b35806" if warn
               else "none"}
        text = title + (("\n" if title else "") + note if note else "")
        t = ax.text(ext.left + 0.02 * ext.width, ext.top - 0.02 * ext.height, text, ha="left", va="top",
                    fontsize=fs + 1, zorder=7, bbox=box, linespacing=1.3)
        if warn:
            t.set_color("#8c3a00")
    ax.set_xlim(ext.left, ext.right)
    ax.set_ylim(ext.bottom, ext.top)
    ax.set_axis_off()
    buf = io.BytesIO()
    if pic is not None:
        # a photograph compresses five to ten times better as JPEG than as PNG; quality 88 keeps
        # the outlines and labels crisp enough to read
        fig.savefig(buf, format="jpeg", pil_kwargs={"quality": 88})
    else:
        fig.savefig(buf, format="png")
    return buf.getvalue()


def image_mime(data: bytes) -> str:
    """``image/png`` or ``image/jpeg``, from the bytes a map was saved as."""
    return "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"


def aoi_extents(aois: Sequence[Any], crs: Any) -> list[Extent]:
    """Each AOI's bounding box in ``crs``."""
    from rasterio.features import bounds as geometry_bounds
    from rasterio.warp import transform_geom

    out = []
    for a in aois:
        g = transform_geom(a.crs, crs, a.geometry) if a.crs != crs else a.geometry
        out.append(Extent(*geometry_bounds(g)))
    return out


def far_apart(aois: Sequence[Any], crs: Any, full: Extent, share: float = 0.35) -> bool:
    """Whether the AOIs are small on the whole map (the largest spans less than ``share`` of it),
    so that one small map per AOI shows what the overview cannot."""
    if not aois:
        return False
    exts = aoi_extents(aois, crs)
    largest = max(max(e.width, e.height) for e in exts)
    return largest < share * max(full.width, full.height)
