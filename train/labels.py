"""Mine labels on a scene's grid: rasters (any grid, nearest) or polygons (rasterised).

Label values: 0 = background, 1 = mine, 255 = nodata (not labelled). A label raster may be
on any grid and CRS: it is reprojected onto the scene grid with nearest-neighbour
resampling; its own nodata value (or 255) marks unlabelled pixels, and scene pixels it does
not cover are nodata. Vector labels (GeoJSON, GeoPackage, Shapefile… any format GDAL reads) are polygons of mines: pixels whose
centre lies in a polygon are 1, every other pixel of the scene is 0 (the polygons are taken
as a complete inventory of the scene). With ``label_field`` each polygon's class comes from
that attribute (0 or 1) instead, e.g. to draw background polygons explicitly.

Example:
    >>> lab = labels_on_grid("mines_2019.gpkg", geo)            # doctest: +SKIP
    >>> lab.dtype, lab.shape == (geo.height, geo.width)         # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from coalmine.runtime.aoi import VECTOR_SUFFIXES, polygonal, read_vector, to_geojson
from coalmine.runtime.errors import CRSError, InputError, InputNotFoundError, RasterError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.features import bounds as geometry_bounds
from rasterio.features import rasterize
from rasterio.transform import array_bounds
from rasterio.warp import reproject, transform_bounds, transform_geom

from .patches import LABEL_NODATA, SceneGeo


def _bounds(geo: SceneGeo) -> tuple[float, float, float, float]:
    # array_bounds returns (west, south, east, north)
    return tuple(float(v) for v in array_bounds(geo.height, geo.width, geo.transform))  # type: ignore[return-value]


def _intersects(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _no_overlap(path: Path, scene_name: str, lb: tuple[float, ...], sb: tuple[float, ...], crs: str) -> InputError:
    fmt = ", ".join(f"{v:.1f}" for v in lb)
    sfmt = ", ".join(f"{v:.1f}" for v in sb)
    return InputError(
        f"labels {path} do not overlap scene {scene_name} (labels cover [{fmt}], the scene [{sfmt}] "
        f"in {crs}); give the labels of this scene's area"
    )


def _check_values(lab: np.ndarray, path: Path) -> None:
    vals = np.unique(lab[lab != LABEL_NODATA])
    bad = [int(v) for v in vals if v not in (0, 1)]
    if bad:
        raise InputError(
            f"labels {path} contain values {bad[:5]}; expected 0 = background, 1 = mine "
            f"(and {LABEL_NODATA} or the file's nodata value for unlabelled pixels)"
        )


def _raster_labels(path: Path, geo: SceneGeo, scene_name: str) -> np.ndarray:
    try:
        src = rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterError(f"labels {path} cannot be read as a raster ({exc}); give a GeoTIFF or polygons") from exc
    with src:
        if src.crs is None:
            raise CRSError(f"label raster {path} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32750)")
        lb = transform_bounds(src.crs, CRS.from_user_input(geo.crs), *src.bounds)
        sb = _bounds(geo)
        if not _intersects(lb, sb):
            raise _no_overlap(path, scene_name, lb, sb, geo.crs)
        data = src.read(1)
        src_nodata = src.nodata
        if data.dtype.kind == "f":
            bad = ~np.isfinite(data)
            data = np.where(bad, LABEL_NODATA, data)
        if src_nodata is not None and src_nodata != LABEL_NODATA and np.isfinite(src_nodata):
            data = np.where(data == src_nodata, LABEL_NODATA, data)
        if data.min() < 0 or data.max() > 255 or (data.dtype.kind == "f" and np.any(data != np.round(data))):
            vals = np.unique(data)[:5].tolist()
            raise InputError(
                f"labels {path} contain values {vals}; expected 0 = background, 1 = mine "
                f"(and {LABEL_NODATA} or the file's nodata value for unlabelled pixels)"
            )
        data = data.astype(np.uint8)
        out = np.full((geo.height, geo.width), LABEL_NODATA, dtype=np.uint8)
        reproject(
            data,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=LABEL_NODATA,
            dst_transform=geo.transform,
            dst_crs=geo.crs,
            dst_nodata=LABEL_NODATA,
            resampling=Resampling.nearest,
        )
    _check_values(out, path)
    if (out == LABEL_NODATA).all():
        raise InputError(
            f"labels {path} do not overlap scene {scene_name}: after reprojection onto the scene grid every "
            "pixel is unlabelled; give the labels of this scene's area"
        )
    return out


def _read_features(path: Path, label_field: str | None) -> tuple[list[tuple[dict[str, Any], int]], CRS]:
    """(geometry, class) pairs of the polygons of a vector file, and its CRS.

    Points and lines are not labels and are skipped; invalid polygons are repaired
    (:func:`coalmine.runtime.aoi.polygonal`).
    """
    vec = read_vector(path, what="labels", option="--labels")
    feats = []
    for f in vec.features:
        if f.geometry is None or f.geometry.geom_type not in ("Polygon", "MultiPolygon"):
            continue
        geom, _ = polygonal(f.geometry, f"label polygon {f.where}")
        if label_field:
            if label_field not in f.properties:
                raise InputError(f"labels {path}: a feature lacks the attribute '{label_field}' named by label_field")
            feats.append((to_geojson(geom), _class_of(f.properties[label_field], path, label_field)))
        else:
            feats.append((to_geojson(geom), 1))
    return feats, vec.crs


def _class_of(value: Any, path: Path, field: str | None) -> int:
    try:
        v = int(float(value))
    except (TypeError, ValueError):
        v = -1
    if v not in (0, 1):
        raise InputError(f"labels {path}: attribute '{field}' has value {value!r}; expected 0 (background) or 1 (mine)")
    return v


def _vector_labels(path: Path, geo: SceneGeo, scene_name: str, label_field: str | None) -> np.ndarray:
    feats, crs = _read_features(path, label_field)
    if not feats:
        raise InputError(
            f"labels {path} contain no polygon: the label set is empty; draw the mines as polygons "
            "(Polygon/MultiPolygon features)"
        )
    dst = CRS.from_user_input(geo.crs)
    shapes = [(transform_geom(crs, dst, g) if crs != dst else g, v) for g, v in feats]
    sb = _bounds(geo)
    per = [geometry_bounds(g) for g, _ in shapes]
    lb = (min(b[0] for b in per), min(b[1] for b in per), max(b[2] for b in per), max(b[3] for b in per))
    if not _intersects(lb, sb):
        raise _no_overlap(path, scene_name, lb, sb, geo.crs)
    # Background first, mine last, so a mine polygon wins where polygons overlap.
    shapes.sort(key=lambda s: s[1])
    return rasterize(
        shapes, out_shape=(geo.height, geo.width), transform=geo.transform, fill=0, dtype="uint8"
    )


def labels_on_grid(
    path: str | Path, geo: SceneGeo, *, scene_name: str = "", label_field: str | None = None
) -> np.ndarray:
    """Labels of one scene on its grid, uint8 (H, W): 0 background, 1 mine, 255 nodata.

    Args:
        path: a label raster (any GDAL format, any grid/CRS) or polygons (a vector file whose suffix
            is one of :data:`coalmine.runtime.aoi.VECTOR_SUFFIXES`).
        geo: the scene grid.
        scene_name: the scene's name for messages.
        label_field: vector attribute with the class (0/1); None = every polygon is a mine.

    Returns:
        The label raster on the scene grid.

    Raises:
        InputNotFoundError: the file does not exist.
        InputError: labels that do not overlap the scene, values other than 0/1, no polygon.
        CRSError: a label raster without CRS, or an unknown CRS.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"label file {p} does not exist; give a label raster or polygons (GeoJSON/GeoPackage/Shapefile)")
    if p.suffix.lower() in VECTOR_SUFFIXES:
        return _vector_labels(p, geo, scene_name or "?", label_field)
    return _raster_labels(p, geo, scene_name or "?")
