"""Areas of interest (and other polygon layers) from any vector file GDAL reads.

Files are read with pyogrio (GDAL's vector drivers, bundled in its wheels): GeoJSON,
GeoPackage, Shapefile, FlatGeobuf, KML, GML, FileGDB… in any CRS. GDAL handles what a
hand-written reader gets wrong: GeoPackage extended geometry types, curves (approximated by
line segments), Z/M coordinates (dropped), legacy GeoJSON ``crs`` members. Geometries become
shapely geometries; the first layer is used unless ``layer`` names another.

Only polygonal geometries make areas of interest; points and lines are refused, naming the
feature. An invalid polygon (self-intersecting ring, bow tie) is repaired with
:func:`shapely.make_valid`, which keeps every covered area, and the repair is reported (a log
warning and a note on the AOI that reaches the run summary); one that has no area left after
repair is refused. The AOI name comes from ``name_field`` (or a ``name``/``NAME``/``Name``
property, else the feature id, else ``aoi_<n>``). Names must be unique: two areas of one name
are refused rather than merged or renamed, because the name keys an area's row in the run
summary and in the monitor's ledger, where a silent rename would move figures between areas
when the file's order changes.

Example:
    >>> aois = read_aois("districts.gpkg", name_field="district")  # doctest: +SKIP
    >>> aois[0].name, aois[0].geometry["type"], aois[0].crs          # doctest: +SKIP
    ('Tapin', 'MultiPolygon', CRS.from_epsg(4326))
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.errors import CRSError as _RioCRSError

from .errors import InputError, InputNotFoundError, UsageError

log = logging.getLogger("coalmine.runtime.aoi")

WGS84 = CRS.from_epsg(4326)
_NAME_KEYS = ("name", "NAME", "Name")
FORMATS = "GeoJSON (.geojson), GeoPackage (.gpkg), Shapefile (.shp), FlatGeobuf (.fgb) or KML (.kml)"
#: File suffixes taken as vector files where a raster is also possible (labels).
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".kml", ".kmz", ".gml", ".sqlite", ".gdb")


@dataclass(frozen=True)
class Aoi:
    """One area of interest: a GeoJSON Polygon/MultiPolygon dict in ``crs`` coordinates.

    ``note`` says what was done to the geometry on reading (a repair), empty when nothing.
    """

    name: str
    geometry: dict[str, Any]
    crs: CRS
    note: str = ""


@dataclass(frozen=True)
class VectorFeature:
    """One feature of a vector layer: a 2-D shapely geometry (None when empty), its fields, its id."""

    geometry: Any
    properties: dict[str, Any]
    fid: int | None
    where: str


@dataclass
class VectorLayer:
    """The features of one layer and their CRS."""

    features: list[VectorFeature]
    crs: CRS
    path: Path
    layer: str = ""
    notes: list[str] = field(default_factory=list)


def read_vector(path: str | os.PathLike[str], *, what: str = "AOI file", option: str = "--aoi",
                layer: str | None = None) -> VectorLayer:
    """Read one layer of a vector file with GDAL (pyogrio).

    Args:
        path: the file (any GDAL vector format).
        what: what the file is, for messages ("AOI file", "labels").
        option: the option that named it, for messages.
        layer: layer to read (default: the first).

    Raises:
        InputNotFoundError: the file does not exist.
        InputError: GDAL cannot read it, it has no CRS, or its coordinates do not fit its CRS.
        UsageError: ``layer`` is not in the file.
    """
    import pyogrio
    import pyogrio.raw
    from pyogrio.errors import DataLayerError, DataSourceError, GeometryError

    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{what} {p} does not exist; pass {option} a vector file: {FORMATS}")
    try:
        layers = [str(n) for n, _ in pyogrio.list_layers(p)]
    except DataSourceError as exc:
        raise InputError(f"{what} {p} is not a vector file GDAL can read ({_first_line(exc)}); "
                         f"expected {FORMATS}") from exc
    if layer is not None and layer not in layers:
        raise UsageError(f"layer '{layer}' is not in {what} {p} (it has: {', '.join(layers) or 'no layers'})")
    name = layer if layer is not None else (layers[0] if layers else "")
    try:
        with warnings.catch_warnings():
            # GDAL's notes about renumbered duplicate GeoJSON ids; the ids are not used as keys
            warnings.filterwarnings("ignore", message="Several features with id", category=RuntimeWarning)
            meta, fids, wkb, values = pyogrio.raw.read(p, layer=name or None, force_2d=True, return_fids=True)
    except (DataSourceError, DataLayerError, GeometryError) as exc:
        raise InputError(f"{what} {p} cannot be read ({_first_line(exc)}); expected {FORMATS}") from exc
    if meta["crs"] is None:
        raise InputError(f"{what} {p} has no coordinate reference system (a Shapefile without its .prj?); "
                         "save it with its CRS, e.g. as GeoPackage")
    try:
        crs = CRS.from_user_input(meta["crs"])
    except (_RioCRSError, ValueError, TypeError) as exc:
        raise InputError(f"{what} {p} has an unrecognised CRS {meta['crs']!r}; save it as EPSG:4326 GeoJSON") from exc
    with np.errstate(invalid="ignore"):  # NaN coordinates are refused below, naming the feature
        geoms = shapely.from_wkb(wkb)
    fields = [str(f) for f in meta["fields"]]
    # A FID is the file's own identifier where the format stores one (a GeoPackage's fid column,
    # a GeoJSON feature's integer "id"); GDAL numbers features 0, 1, 2… when the file has none.
    info = pyogrio.read_info(p, layer=name or None)
    has_ids = bool(info.get("fid_column")) or not np.array_equal(fids, np.arange(len(fids)))
    where_layer = f" of layer '{name}'" if len(layers) > 1 or layer is not None else ""
    feats = []
    for i, g in enumerate(geoms):
        if g is not None and not np.isfinite(shapely.get_coordinates(g)).all():
            raise InputError(f"feature {i + 1}{where_layer} of {p} has coordinates that are not numbers (NaN or "
                             "infinity); fix or remove that feature")
        props = {f: _plain(values[k][i]) for k, f in enumerate(fields)}
        feats.append(VectorFeature(
            geometry=None if g is None or g.is_empty else g,
            properties={k: v for k, v in props.items() if v is not None},
            fid=int(fids[i]) if has_ids else None,
            where=f"feature {i + 1}{where_layer} of {p}",
        ))
    out = VectorLayer(feats, crs, p, name)
    _check_lonlat(out, what)
    return out


def _plain(v: Any) -> Any:
    """A field value as a plain Python value (NaN of a missing number -> None)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def _check_lonlat(layer: VectorLayer, what: str) -> None:
    """Refuse projected coordinates in a file whose CRS says degrees (e.g. GeoJSON's default)."""
    if not layer.crs.is_geographic:
        return
    gs = [f.geometry for f in layer.features if f.geometry is not None]
    if not gs:
        return
    x0, y0, x1, y1 = shapely.total_bounds(gs)
    if x0 < -360 or x1 > 360 or y0 < -90 or y1 > 90:
        swapped = -90 <= x0 and x1 <= 90 and -180 <= y0 and y1 <= 180
        hint = " (they fit as latitude/longitude: are the axes swapped?)" if swapped else ""
        raise InputError(
            f"{what} {layer.path}: coordinates such as ({x1:.6g}, {y1:.6g}) are not longitude/latitude{hint}, "
            f"but the file's CRS is {layer.crs.to_string()} (GeoJSON's default); save the file with its "
            "own CRS (e.g. as GeoPackage) or reproject it to EPSG:4326"
        )


def read_aois(path: str | os.PathLike[str], name_field: str | None = None, layer: str | None = None) -> list[Aoi]:
    """Read polygonal areas of interest from a vector file (GeoJSON, GeoPackage, Shapefile…).

    Args:
        path: the file.
        name_field: property holding each AOI's name (default: name/NAME/Name, else the id).
        layer: layer to read (default: the first).

    Returns:
        The AOIs in file order.

    Raises:
        InputNotFoundError: the file does not exist.
        InputError: unreadable, no CRS, no polygon features, a non-polygon feature, a
            polygon with no area even after repair, or two features of one name.
        UsageError: ``name_field`` is missing from a feature, or ``layer`` does not exist.

    Example:
        >>> read_aois("tapin.geojson")[0].name  # doctest: +SKIP
        'Tapin'
    """
    vec = read_vector(path, layer=layer)
    aois = []
    first: dict[str, str] = {}
    for n, f in enumerate(vec.features, start=1):
        name = _name(f.properties, name_field, f.fid, n, vec.path, f.where)
        if name in first:
            raise InputError(
                f"AOI file {vec.path}: {first[name]} and {f.where.split(' of ')[0]} are both named {name!r}; "
                "every area needs its own name (it keys the area's row in the summary and in the monitor's "
                "ledger and reports): rename one, or name the areas by another attribute that is unique "
                "(--aoi-name-field, aoi_name_field in a monitor configuration)")
        first[name] = f.where.split(" of ")[0]
        geom, note = polygonal(f.geometry, f"AOI '{name}' ({f.where})")
        aois.append(Aoi(name, to_geojson(geom), vec.crs, note))
    if not aois:
        raise InputError(f"AOI file {vec.path} holds no polygon features; it needs at least one area of interest")
    return aois


def _name(props: dict[str, Any], name_field: str | None, fid: int | None, n: int, path: Path, where: str) -> str:
    if name_field is not None:
        if name_field not in props:
            raise UsageError(
                f"--aoi-name-field '{name_field}' is not a property of {where} "
                f"(it has: {', '.join(sorted(props)) or 'no properties'})"
            )
        return str(props[name_field])
    for k in _NAME_KEYS:
        if props.get(k) not in (None, ""):
            return str(props[k])
    return str(fid) if fid is not None else f"aoi_{n}"


def polygonal(geom: Any, where: str) -> tuple[Any, str]:
    """The Polygon/MultiPolygon of a feature, repaired when invalid, and a note on the repair.

    Raises:
        InputError: no geometry, a point or line (also inside a collection), or no area.
    """
    if geom is None:
        raise InputError(f"{where} has no geometry; an AOI must be a Polygon or MultiPolygon")
    parts = shapely.get_parts(geom) if geom.geom_type == "GeometryCollection" else [geom]
    for part in parts:
        if part.geom_type not in ("Polygon", "MultiPolygon"):
            raise InputError(f"{where} is a {part.geom_type}; an AOI must be a Polygon or MultiPolygon "
                             "(buffer points/lines first)")
    if geom.geom_type == "GeometryCollection":
        geom = shapely.MultiPolygon([q for part in parts for q in shapely.get_parts(part)])
    if geom.is_valid:
        return geom, ""
    reason = shapely.is_valid_reason(geom)
    fixed = shapely.make_valid(geom)
    polys = [q for q in shapely.get_parts(fixed) if q.geom_type in ("Polygon", "MultiPolygon")]
    polys = [q for p in polys for q in shapely.get_parts(p)]
    if not polys or sum(q.area for q in polys) == 0:
        raise InputError(f"{where} is not a valid polygon ({reason}) and encloses no area; draw it again")
    fixed = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    note = f"{where} was not a valid polygon ({reason}); repaired with shapely.make_valid"
    log.warning("%s", note)
    return fixed, note


def to_geojson(geom: Any) -> dict[str, Any]:
    """A GeoJSON-like dict (lists of float pairs) of a shapely Polygon or MultiPolygon."""
    def rings(poly: Any) -> list[list[list[float]]]:
        return [shapely.get_coordinates(r).tolist() for r in (poly.exterior, *poly.interiors)]

    if geom.geom_type == "Polygon":
        return {"type": "Polygon", "coordinates": rings(geom)}
    return {"type": "MultiPolygon", "coordinates": [rings(p) for p in geom.geoms]}


def _first_line(exc: BaseException) -> str:
    """GDAL's message, first sentence, without the quoted path it repeats."""
    s = str(exc).strip().splitlines()
    msg = s[0].split(";")[0] if s else type(exc).__name__
    return re.sub(r"^'[^']*' ", "", msg).rstrip(".")
