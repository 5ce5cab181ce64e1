"""Areas in hectares on any grid, and mined hectares of a mask per area of interest.

- Projected grids: every pixel has the same area, ``|det(transform)|`` in the CRS's linear
  unit squared, converted to m². (A conformal projection such as UTM is off by its scale
  factor squared, at most ~0.2 % inside a UTM zone; the tests check against geodesic areas
  within 0.5 %.)
- Geographic grids (degrees): pixels shrink towards the poles, so every row has its own
  area. A cell bounded by two parallels and two meridians has the exact ellipsoidal area
  ``a²(1-e²)·Δλ/2 · [g(φ₂) - g(φ₁)]`` with ``g(φ) = sinφ/(1-e²sin²φ) + artanh(e·sinφ)/e``
  (the authalic-latitude formula), evaluated per row with the CRS's own ellipsoid. Degrees
  are never treated as metres (torchgeo #1078).
- Polygon areas (mine polygons, AOIs) use :class:`pyproj.Geod` on EPSG:4326 coordinates.

Example:
    >>> from affine import Affine
    >>> from rasterio.crs import CRS
    >>> float(pixel_areas_ha(CRS.from_epsg(32750), Affine(10, 0, 0, 0, -10, 0), 2, 3)[0, 0])
    0.01
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import bounds as geometry_bounds
from rasterio.windows import Window

from .errors import CRSError, InputError, RasterError

if TYPE_CHECKING:
    from .aoi import Aoi

log = logging.getLogger("coalmine.runtime.areas")

M2_PER_HA = 10_000.0


def _pyproj_crs(crs: Any) -> Any:
    import pyproj

    return pyproj.CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)


def _ellipsoid(crs: Any) -> tuple[float, float]:
    """(semi-major axis in m, first eccentricity squared) of a CRS's ellipsoid."""
    ell = _pyproj_crs(crs).ellipsoid
    if ell is None:
        raise CRSError(f"CRS {crs} has no ellipsoid; cannot compute geodesic areas")
    a = ell.semi_major_metre
    b = ell.semi_minor_metre
    return a, 1.0 - (b * b) / (a * a)


def _authalic_g(phi: np.ndarray, e2: float) -> np.ndarray:
    s = np.sin(phi)
    if e2 == 0.0:
        return 2.0 * s
    e = math.sqrt(e2)
    return s / (1.0 - e2 * s * s) + np.arctanh(e * s) / e


def pixel_areas_ha(
    crs: CRS | str,
    transform: Affine,
    height: int,
    width: int,
    window: Window | None = None,
) -> np.ndarray:
    """Area of each pixel in hectares, one value per row: float64 ``(rows, 1)``.

    The result broadcasts against a ``(rows, cols)`` array. On a projected grid every row
    has the same value; on a geographic grid each row has its geodesic cell area.

    Args:
        crs: the grid's CRS (must be set).
        transform: the grid's affine transform.
        height, width: grid size in pixels.
        window: only the rows of this window (default: the whole grid).

    Returns:
        float64 array of shape ``(window.height, 1)``.

    Raises:
        CRSError: no CRS, or a rotated geographic grid.

    Example:
        >>> from affine import Affine
        >>> a = pixel_areas_ha("EPSG:4326", Affine(0.0001, 0, 115, 0, -0.0001, -2), 4, 4)
        >>> round(float(a[0, 0]) * 1e4, 1)   # m² of a 0.0001° cell near the equator
        123.0
    """
    if crs is None or not str(crs):
        raise CRSError("the raster has no CRS, so pixel areas are unknown; assign one with gdal_edit.py -a_srs")
    crs = CRS.from_user_input(crs)
    if window is None:
        window = Window(0, 0, width, height)
    rows = int(window.height)
    if crs.is_geographic:
        if transform.b != 0 or transform.d != 0:
            raise CRSError("rotated geographic grids are not supported for areas; warp the raster to north-up")
        a, e2 = _ellipsoid(crs)
        r = np.arange(int(window.row_off), int(window.row_off) + rows + 1, dtype=np.float64)
        lat = np.radians(transform.f + transform.e * r)
        g = _authalic_g(lat, e2)
        dlon = math.radians(abs(transform.a))
        area_m2 = np.abs(np.diff(g)) * (a * a * (1.0 - e2) * dlon / 2.0)
        return (area_m2 / M2_PER_HA).reshape(rows, 1)
    if crs.is_projected:
        factor = crs.linear_units_factor[1]
    else:
        # A local (engineering) CRS: rasterio has no unit factor for it; PROJ gives its axes the
        # declared unit (metres when none is declared), and a site grid in feet is not in metres.
        factor = _pyproj_crs(crs).axis_info[0].unit_conversion_factor
    px_m2 = abs(transform.determinant) * factor * factor
    return np.full((rows, 1), px_m2 / M2_PER_HA, dtype=np.float64)


def _rings_area_m2(geod: Any, polygon: Sequence[Sequence[Sequence[float]]]) -> float:
    area = 0.0
    for k, ring in enumerate(polygon):
        if len(ring) < 4:
            continue
        lons = [float(p[0]) for p in ring]
        lats = [float(p[1]) for p in ring]
        a, _ = geod.polygon_area_perimeter(lons, lats)
        area += abs(a) if k == 0 else -abs(a)
    return max(area, 0.0)


def geodesic_area_ha(geometry: dict[str, Any]) -> float:
    """Geodesic area (WGS 84) of a GeoJSON Polygon / MultiPolygon in lon/lat degrees, hectares.

    Holes are subtracted. Edges are geodesics between the vertices (dense vertices, as
    from polygonised rasters, make this match the area of the cells they enclose).

    Example:
        >>> sq = {"type": "Polygon", "coordinates": [[[0, 0], [0.01, 0], [0.01, 0.01], [0, 0.01], [0, 0]]]}
        >>> round(geodesic_area_ha(sq))
        123
    """
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    t = geometry.get("type")
    if t == "Polygon":
        return _rings_area_m2(geod, geometry["coordinates"]) / M2_PER_HA
    if t == "MultiPolygon":
        return sum(_rings_area_m2(geod, p) for p in geometry["coordinates"]) / M2_PER_HA
    raise ValueError(f"geodesic_area_ha needs a Polygon or MultiPolygon, got {t}")


def _unique_names(aois: Sequence[Aoi]) -> list[str]:
    """The AOI names, refusing a name given twice: each name keys its own row, and renaming
    ("A#2") could collide with another area's own name."""
    seen: set[str] = set()
    for a in aois:
        if a.name in seen:
            raise InputError(f"two areas of interest are named {a.name!r}; every area needs its own name "
                             "(it keys the area's row in the summary and the monitor's tables)")
        seen.add(a.name)
    return [a.name for a in aois]


def _pixels_outside(geom: dict[str, Any], tr: Any, width: int, height: int) -> int:
    """How many pixels of the raster's grid the part of ``geom`` outside the raster covers:
    its planar area in the raster's CRS over one pixel's (geographic grids included, whose
    pixels are equal in degrees)."""
    import shapely
    from shapely.geometry import Polygon, shape

    corners = [tr * xy for xy in ((0, 0), (width, 0), (width, height), (0, height))]
    part = shapely.make_valid(shape(geom)).difference(Polygon(corners))
    return int(round(part.area / abs(tr.determinant)))


def mask_areas_ha(
    mask_path: str | os.PathLike[str],
    aois: Sequence[Aoi] = (),
    *,
    strip_rows: int = 512,
    scene: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Mined hectares of a 0/1 mask (255 nodata), in total and inside each AOI, with the share
    of each that was actually observed.

    The mask is read in strips of ``strip_rows`` rows, so memory does not grow with the
    scene. An AOI is reprojected to the mask's CRS and rasterised per strip over its own
    bounding window (a pixel belongs to an AOI when its centre lies inside). The part of an
    AOI outside the raster counts as nodata, so an AOI half outside the scene has a valid
    share of at most 0.5 and an AOI that misses the scene has none.

    **No valid pixel is no data, never 0 ha**: where an AOI (or the whole mask) has no valid
    pixel, its hectares are ``None``. A figure resting on few valid pixels is still given,
    with its valid share beside it; callers decide below which share it is not shown (the
    monitor's ``min_valid_share``).

    Args:
        mask_path: a uint8 mask GeoTIFF (``*_mask.tif``).
        aois: areas of interest (:func:`coalmine.runtime.aoi.read_aois`).
        strip_rows: rows per read.
        scene: the scene the mask was made from, named in warnings (default: the mask file,
            which may be a temporary one the user never sees).

    Returns:
        ``{"total": ha | None, "aois": {name: ha | None}, "valid_share": share,
        "aoi_valid_share": {name: share}, "pixels": {"mine": n, "valid": n, "nodata": n},
        "aoi_pixels": {name: n}, "warnings": [...]}`` where a share is the valid pixels over
        all pixels (of the raster, or whose centre lies in the AOI).

    Raises:
        RasterError: the mask cannot be read.
        InputError: two AOIs have one name.

    Example:
        >>> mask_areas_ha("out/scene_mask.tif", read_aois("districts.gpkg"))  # doctest: +SKIP
        {'total': 812.4, 'aois': {'Tapin': 640.2, ...}, 'aoi_valid_share': {'Tapin': 0.97, ...}, ...}
    """
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom
    from rasterio.windows import from_bounds
    from rasterio.windows import transform as window_transform

    names = _unique_names(aois)
    try:
        ds = rasterio.open(mask_path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"cannot read mask {mask_path} ({exc})") from exc
    with ds:
        H, W, tr, crs = ds.height, ds.width, ds.transform, ds.crs
        total = 0.0
        mine = valid = 0
        for r in range(0, H, strip_rows):
            win = Window(0, r, W, min(strip_rows, H - r))
            m = ds.read(1, window=win)
            per_row = (m == 1).sum(axis=1)
            total += float(per_row @ pixel_areas_ha(crs, tr, H, W, win)[:, 0])
            mine += int(per_row.sum())
            valid += int((m != 255).sum())
        result: dict[str, Any] = {
            "total": total if valid else None,
            "aois": {},
            "valid_share": valid / float(H * W) if H * W else 0.0,
            "aoi_valid_share": {},
            "pixels": {"mine": mine, "valid": valid, "nodata": H * W - valid},
            "aoi_pixels": {},
            "warnings": [],
        }
        full = Window(0, 0, W, H)
        result["warnings"] += [a.note for a in aois if a.note]  # e.g. a repaired geometry
        for name, aoi in zip(names, aois, strict=True):
            geom = transform_geom(aoi.crs, crs, aoi.geometry) if aoi.crs != crs else aoi.geometry
            area = 0.0
            count = n_inside = n_valid = 0
            try:
                win = from_bounds(*geometry_bounds(geom), transform=tr)
                win = win.round_offsets(op="floor").round_lengths(op="ceil")
                win = Window(win.col_off, win.row_off, win.width + 1, win.height + 1)
                overlap = win.intersection(full)
            except rasterio.errors.WindowError:
                overlap = None
            if overlap is None or overlap.width <= 0 or overlap.height <= 0:
                msg = f"AOI '{name}' does not overlap the scene {scene or mask_path}; it has no data there"
                log.warning(msg)
                result["warnings"].append(msg)
            else:
                # Pixels of the AOI inside the raster are counted by rasterising it over the
                # overlap only; its part outside the raster is nodata, counted from its area in
                # pixels (rasterising that part too would cost time and memory in proportion to
                # the AOI, which may be a province around one small scene).
                c0, w = int(overlap.col_off), int(overlap.width)
                r_start, r_stop = int(overlap.row_off), int(overlap.row_off + overlap.height)
                for r in range(r_start, r_stop, strip_rows):
                    sw = Window(c0, r, w, min(strip_rows, r_stop - r))
                    m = ds.read(1, window=sw)
                    inside = geometry_mask([geom], out_shape=m.shape, transform=window_transform(sw, tr),
                                           invert=True, all_touched=False)
                    per_row = ((m == 1) & inside).sum(axis=1)
                    area += float(per_row @ pixel_areas_ha(crs, tr, H, W, sw)[:, 0])
                    count += int(per_row.sum())
                    n_inside += int(inside.sum())
                    n_valid += int((inside & (m != 255)).sum())
                if win != overlap:
                    n_inside += _pixels_outside(geom, tr, W, H)
                if not n_inside:
                    msg = (f"AOI '{name}' lies within the bounds of the scene {scene or mask_path} but covers "
                           "no pixel centre")
                    log.warning(msg)
                    result["warnings"].append(msg)
            result["aois"][name] = area if n_valid else None
            result["aoi_pixels"][name] = count
            result["aoi_valid_share"][name] = n_valid / n_inside if n_inside else 0.0
    return result
