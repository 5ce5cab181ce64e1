"""Areas of interest from GeoJSON or GeoPackage files.

GeoJSON is read with :mod:`json` (RFC 7946 lon/lat WGS 84 by default; a legacy ``crs``
member such as ``urn:ogc:def:crs:EPSG::32750`` is honoured). GeoPackage is read with the
standard library's :mod:`sqlite3` and a small WKB reader (GeoPackage geometry header +
ISO/extended WKB, 2D/Z/M/ZM), so no GDAL vector driver or extra package is needed. The
first feature table is used unless ``layer`` names another.

Only polygonal geometries make areas of interest; points and lines are refused, naming the
feature. The AOI name comes from ``name_field`` (or a ``name``/``NAME``/``Name`` property,
else the feature id, else ``aoi_<n>``).

Example:
    >>> aois = read_aois("districts.gpkg", name_field="district")  # doctest: +SKIP
    >>> aois[0].name, aois[0].geometry["type"], aois[0].crs          # doctest: +SKIP
    ('Tapin', 'MultiPolygon', CRS.from_epsg(4326))
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterio.crs import CRS
from rasterio.errors import CRSError as _RioCRSError

from .errors import InputError, InputNotFoundError, UsageError

WGS84 = CRS.from_epsg(4326)
_NAME_KEYS = ("name", "NAME", "Name")


@dataclass(frozen=True)
class Aoi:
    """One area of interest: a GeoJSON Polygon/MultiPolygon dict in ``crs`` coordinates."""

    name: str
    geometry: dict[str, Any]
    crs: CRS


def read_aois(path: str | os.PathLike[str], name_field: str | None = None, layer: str | None = None) -> list[Aoi]:
    """Read polygonal areas of interest from a GeoJSON (.geojson/.json) or GeoPackage (.gpkg).

    Args:
        path: the file.
        name_field: property holding each AOI's name (default: name/NAME/Name, else the id).
        layer: GeoPackage table to read (default: the first feature table).

    Returns:
        The AOIs in file order.

    Raises:
        InputNotFoundError: the file does not exist.
        InputError: unreadable, not GeoJSON/GeoPackage, no polygon features, a non-polygon
            feature, or an unknown CRS.
        UsageError: ``name_field`` is missing from a feature, or ``layer`` does not exist.

    Example:
        >>> read_aois("tapin.geojson")[0].name  # doctest: +SKIP
        'Tapin'
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"AOI file {p} does not exist; pass --aoi a GeoJSON or GeoPackage file")
    suffix = p.suffix.lower()
    if suffix == ".gpkg":
        aois = _read_gpkg(p, name_field, layer)
    elif suffix in (".geojson", ".json"):
        aois = _read_geojson(p, name_field)
    else:
        raise InputError(f"AOI file {p} is neither GeoJSON (.geojson, .json) nor GeoPackage (.gpkg)")
    if not aois:
        raise InputError(f"AOI file {p} holds no polygon features; it needs at least one area of interest")
    return aois


def _name(props: dict[str, Any], name_field: str | None, fid: Any, n: int, path: Path) -> str:
    if name_field is not None:
        if name_field not in props:
            raise UsageError(
                f"--aoi-name-field '{name_field}' is not a property of feature {n} in {path} "
                f"(it has: {', '.join(sorted(props)) or 'no properties'})"
            )
        return str(props[name_field])
    for k in _NAME_KEYS:
        if props.get(k) not in (None, ""):
            return str(props[k])
    return str(fid) if fid not in (None, "") else f"aoi_{n}"


def _polygonal(geom: dict[str, Any] | None, where: str) -> dict[str, Any]:
    if not isinstance(geom, dict) or "type" not in geom:
        raise InputError(f"{where} has no geometry; an AOI must be a Polygon or MultiPolygon")
    t = geom["type"]
    if t in ("Polygon", "MultiPolygon"):
        if not geom.get("coordinates"):
            raise InputError(f"{where} has an empty {t}")
        return geom
    if t == "GeometryCollection":
        polys: list[Any] = []
        for g in geom.get("geometries", []):
            g = _polygonal(g, where)
            polys += [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        return {"type": "MultiPolygon", "coordinates": polys}
    raise InputError(f"{where} is a {t}; an AOI must be a Polygon or MultiPolygon (buffer points/lines first)")


def _crs(value: Any, path: Path) -> CRS:
    try:
        return CRS.from_user_input(value)
    except (_RioCRSError, ValueError, TypeError) as exc:
        raise InputError(f"AOI file {path} has an unrecognised CRS {value!r}; save it as EPSG:4326 GeoJSON") from exc


def _read_geojson(p: Path, name_field: str | None) -> list[Aoi]:
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"AOI file {p} is not valid GeoJSON ({exc})") from exc
    if not isinstance(d, dict) or "type" not in d:
        raise InputError(f"AOI file {p} is not GeoJSON: no top-level 'type'")
    crs = WGS84
    legacy = d.get("crs")
    if isinstance(legacy, dict) and isinstance(legacy.get("properties"), dict):
        name = legacy["properties"].get("name")
        if name and "CRS84" not in str(name):
            crs = _crs(name, p)
    if d["type"] == "FeatureCollection":
        feats = d.get("features")
        if not isinstance(feats, list):
            raise InputError(f"AOI file {p} is a FeatureCollection without a 'features' list")
    elif d["type"] == "Feature":
        feats = [d]
    else:
        feats = [{"type": "Feature", "properties": {}, "geometry": d}]
    out = []
    for n, f in enumerate(feats, start=1):
        props = f.get("properties") or {}
        where = f"feature {n} of {p}"
        out.append(Aoi(_name(props, name_field, f.get("id"), n, p), _polygonal(f.get("geometry"), where), crs))
    return out


# -- GeoPackage ------------------------------------------------------------------------------
_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def _gpkg_geometry(blob: bytes) -> dict[str, Any] | None:
    """GeoJSON-like dict from a GeoPackage geometry blob (header + WKB); None if empty."""
    if blob is None:
        return None
    b = bytes(blob)
    if b[:2] != b"GP":
        raise ValueError("not a GeoPackage geometry blob (no 'GP' magic)")
    flags = b[3]
    env = _ENVELOPE_BYTES.get((flags >> 1) & 0x7)
    if env is None:
        raise ValueError(f"bad envelope indicator in flags {flags:#x}")
    if flags & 0x10:  # empty geometry
        return None
    geom, _ = _wkb(b, 8 + env)
    return geom


def _wkb(b: bytes, pos: int) -> tuple[dict[str, Any], int]:
    """Parse one WKB geometry at ``pos``; return (GeoJSON-like dict, next position)."""
    bo = "<" if b[pos] == 1 else ">"
    (code,) = struct.unpack_from(bo + "I", b, pos + 1)
    pos += 5
    has_z = bool(code & 0x80000000)
    has_m = bool(code & 0x40000000)
    if code & 0x20000000:  # EWKB SRID follows
        pos += 4
    code &= 0x0FFFFFFF
    base, dim = code % 1000, code // 1000
    has_z = has_z or dim in (1, 3)
    has_m = has_m or dim in (2, 3)
    nd = 2 + has_z + has_m

    def points(pos: int) -> tuple[list[list[float]], int]:
        (n,) = struct.unpack_from(bo + "I", b, pos)
        vals = struct.unpack_from(bo + "d" * (n * nd), b, pos + 4)
        return [[vals[i * nd], vals[i * nd + 1]] for i in range(n)], pos + 4 + 8 * n * nd

    def count(pos: int) -> tuple[int, int]:
        return struct.unpack_from(bo + "I", b, pos)[0], pos + 4

    if base == 1:
        vals = struct.unpack_from(bo + "d" * nd, b, pos)
        return {"type": "Point", "coordinates": [vals[0], vals[1]]}, pos + 8 * nd
    if base == 2:
        pts, pos = points(pos)
        return {"type": "LineString", "coordinates": pts}, pos
    if base == 3:
        n, pos = count(pos)
        rings = []
        for _ in range(n):
            ring, pos = points(pos)
            rings.append(ring)
        return {"type": "Polygon", "coordinates": rings}, pos
    if base in (4, 5, 6, 7):
        n, pos = count(pos)
        parts = []
        for _ in range(n):
            g, pos = _wkb(b, pos)
            parts.append(g)
        if base == 7:
            return {"type": "GeometryCollection", "geometries": parts}, pos
        kind = {4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon"}[base]
        return {"type": kind, "coordinates": [g["coordinates"] for g in parts]}, pos
    raise ValueError(f"unsupported WKB geometry type {code}")


def _read_gpkg(p: Path, name_field: str | None, layer: str | None) -> list[Aoi]:
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise InputError(f"AOI file {p} cannot be opened as a GeoPackage ({exc})") from exc
    try:
        try:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM gpkg_contents WHERE data_type = 'features' ORDER BY rowid")]
        except sqlite3.DatabaseError as exc:
            raise InputError(f"AOI file {p} is not a GeoPackage ({exc}); save the AOIs as .gpkg or .geojson") from exc
        if not tables:
            raise InputError(f"GeoPackage {p} has no feature table")
        table = layer or tables[0]
        if table not in tables:
            raise UsageError(f"layer '{table}' is not in GeoPackage {p} (it has: {', '.join(tables)})")
        row = con.execute(
            "SELECT column_name, srs_id FROM gpkg_geometry_columns WHERE table_name = ?", (table,)
        ).fetchone()
        if row is None:
            raise InputError(f"GeoPackage {p} table '{table}' is not registered in gpkg_geometry_columns")
        geom_col, srs_id = row
        srs = con.execute(
            "SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys WHERE srs_id = ?",
            (srs_id,),
        ).fetchone()
        if srs is None:
            raise InputError(f"GeoPackage {p} uses srs_id {srs_id}, which gpkg_spatial_ref_sys does not define")
        org, org_id, wkt = srs
        if str(org).upper() == "EPSG" and int(org_id) > 0:
            crs = _crs(f"EPSG:{int(org_id)}", p)
        else:
            crs = _crs(wkt, p)
        cur = con.execute(f'SELECT * FROM "{table.replace(chr(34), chr(34) * 2)}"')
        cols = [c[0] for c in cur.description]
        pk = next((r[1] for r in con.execute(f'PRAGMA table_info("{table}")') if r[5]), None)
        out = []
        for n, values in enumerate(cur, start=1):
            rec = dict(zip(cols, values, strict=True))
            where = f"feature {n} of layer '{table}' in {p}"
            try:
                geom = _gpkg_geometry(rec.pop(geom_col))
            except (ValueError, struct.error, IndexError) as exc:
                raise InputError(f"{where} has an unreadable geometry ({exc})") from exc
            fid = rec.pop(pk) if pk in rec else None
            out.append(Aoi(_name(rec, name_field, fid, n, p), _polygonal(geom, where), crs))
        return out
    except sqlite3.DatabaseError as exc:
        raise InputError(f"AOI file {p} is not a readable GeoPackage ({exc})") from exc
    finally:
        con.close()
