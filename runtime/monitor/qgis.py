"""The QGIS project of a monitoring folder: ``coalmine.qgs`` beside the report, ready to open.

Analysts check and edit mining maps in QGIS; loading and styling a dozen rasters by hand each
time the monitor runs is where mistakes creep in. After every run the monitor writes:

- ``mines.gpkg`` — one GeoPackage layer ``mines`` with the mine polygons of every yearly
  composite (the mined pixels traced by GDAL's polygoniser, in the composite's CRS), with the
  fields ``year``, ``date_start`` / ``date_end`` (1 January of the year and of the next; QGIS's
  temporal controller plays the series with them), ``area_ha`` (geodesic), ``valid_share`` (of the
  whole extent that year) and ``model`` (file and precision). Rebuilt only when a year changed.
- ``coalmine.qgs`` — a QGIS project (format of QGIS 3.22, read by every later version) whose
  layers use paths **relative to the project file**, so the folder can be moved or shared as a
  whole: the mine polygons (outlined like the report's maps), the areas of interest with their
  names as labels, the change maps and yearly masks with the report's colours (paletted
  renderers; "stable non-mine" and "not mined" transparent), and the true-colour pictures of each
  year. Rasters carry a fixed temporal range (their year), the polygons their date fields, so the
  temporal controller shows one year at a time; without it the newest year is switched on.

The project XML is written by hand with :mod:`xml.etree.ElementTree`: no maintained library
writes QGIS projects without QGIS itself, and the monitor must not need QGIS. Only the elements
QGIS needs are written; QGIS fills in its defaults for the rest when it opens the file (tested
with QGIS's own Python bindings where they are installed: every layer must load valid).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from .._io import atomic_output, atomic_write_text
from ..errors import OutputError
from ..raster import Grid
from .layout import MonitorLayout
from .legend import (
    CHANGE_COLORS,
    CLASS_NAMES,
    MASK_COLORS,
    MINED,
    NEWLY_MINED,
    NO_LONGER_MINED,
    STABLE_MINE,
)

log = logging.getLogger("coalmine.monitor")

#: The QGIS version whose project format is written (the oldest supported: 3.22 LTR).
QGIS_VERSION = "3.22.0-Białowieża"
MINES_LAYER = "mines"
#: Outline colours, as on the report's maps.
MINE_OUTLINE = "255,176,0,255"
AOI_OUTLINE = "0,229,255,255"


# -- the GeoPackage of mine polygons -----------------------------------------------------------------


def _polygons(mask: Path) -> tuple[list[Any], Any]:
    """Shapely polygons of the mined pixels (value 1) of a composite, and its CRS."""
    import shapely
    from rasterio.features import shapes

    with rasterio.open(mask) as ds:
        a = ds.read(1)
        tr, crs = ds.transform, ds.crs
    mined = a == MINED
    geoms = [shapely.geometry.shape(g) for g, _ in shapes(mined.astype(np.uint8), mask=mined, transform=tr,
                                                          connectivity=4)]
    return geoms, crs


def _area_ha(geom: Any, crs: Any) -> float:
    import shapely
    from rasterio.warp import transform_geom

    from ..areas import geodesic_area_ha

    ll = transform_geom(crs, "EPSG:4326", shapely.geometry.mapping(geom))
    return geodesic_area_ha(ll)


def write_mines_gpkg(target: Path, years: Sequence[dict[str, Any]], fingerprint: str = "") -> Path:
    """Write the mine polygons of every year into one GeoPackage layer (atomically).

    Args:
        target: the GeoPackage to write.
        years: per year ``{"year", "composite" (path), "valid_share", "model"}``; years without a
            composite are left out.
        fingerprint: recorded in the layer's metadata, so an unchanged series is not rewritten.

    Returns:
        ``target``.
    """
    import pyogrio.raw
    import shapely

    geoms: list[Any] = []
    cols: dict[str, list[Any]] = {"year": [], "date_start": [], "date_end": [], "area_ha": [], "valid_share": [],
                                  "model": []}
    crs = None
    for y in years:
        if y.get("composite") is None or not Path(y["composite"]).is_file():
            continue
        polys, crs_y = _polygons(Path(y["composite"]))
        crs = crs or crs_y
        for g in polys:
            geoms.append(shapely.MultiPolygon([g]))
            cols["year"].append(int(y["year"]))
            cols["date_start"].append(np.datetime64(f"{y['year']}-01-01"))
            cols["date_end"].append(np.datetime64(f"{y['year'] + 1}-01-01"))
            cols["area_ha"].append(round(_area_ha(g, crs_y), 6))
            cols["valid_share"].append(np.nan if y.get("valid_share") is None else float(y["valid_share"]))
            cols["model"].append(str(y.get("model") or ""))
    data = [
        np.asarray(cols["year"], dtype=np.int32),
        np.asarray(cols["date_start"], dtype="datetime64[D]"),
        np.asarray(cols["date_end"], dtype="datetime64[D]"),
        np.asarray(cols["area_ha"], dtype=np.float64),
        np.asarray(cols["valid_share"], dtype=np.float64),
        np.asarray(cols["model"], dtype=object),
    ]
    wkb = np.asarray(shapely.to_wkb(np.asarray(geoms, dtype=object)) if geoms else [], dtype=object)
    with atomic_output(target) as tmp:
        tmp.unlink()  # GDAL creates the GeoPackage itself (the temporary name keeps the .gpkg suffix)
        try:
            pyogrio.raw.write(
                str(tmp), wkb, data, list(cols), layer=MINES_LAYER, driver="GPKG", geometry_type="MultiPolygon",
                crs=(crs.to_wkt() if crs is not None else "EPSG:4326"),
                # GeoPackage 1.2: what the GDAL of QGIS 3.22 (Debian 12: GDAL 3.6) reads without warnings
                dataset_options={"VERSION": "1.2"}, layer_metadata={"coalmine_fingerprint": fingerprint},
            )
        except Exception as exc:  # noqa: BLE001 - GDAL raises several types; all mean "not written"
            raise OutputError(f"cannot write the mine polygons {target} ({' '.join(str(exc).split())}); "
                              "check free disk space and permissions of the output folder") from exc
    return target


# -- the project ---------------------------------------------------------------------------------------


def _crs_element(parent: ET.Element, tag: str, crs: Any) -> None:
    srs = ET.SubElement(ET.SubElement(parent, tag), "spatialrefsys")
    ET.SubElement(srs, "wkt").text = crs.to_wkt() if crs is not None else ""
    epsg = crs.to_epsg() if crs is not None else None
    ET.SubElement(srs, "authid").text = f"EPSG:{epsg}" if epsg else ""


def _opt_map(parent: ET.Element, values: dict[str, str]) -> None:
    opt = ET.SubElement(parent, "Option", type="Map")
    for k, v in values.items():
        ET.SubElement(opt, "Option", type="QString", name=k, value=v)
    for k, v in values.items():
        ET.SubElement(parent, "prop", k=k, v=v)


def _fill_symbol(parent: ET.Element, fill: str, outline: str, width: str) -> None:
    symbols = ET.SubElement(parent, "symbols")
    sym = ET.SubElement(symbols, "symbol", type="fill", name="0", alpha="1", clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(sym, "layer", {"class": "SimpleFill", "pass": "0", "locked": "0", "enabled": "1"})
    _opt_map(layer, {"color": fill, "outline_color": outline, "outline_width": width, "outline_width_unit": "MM",
                     "outline_style": "solid", "style": "solid", "joinstyle": "bevel"})


def _rgba(c: tuple[int, int, int, int], alpha: int | None = None) -> tuple[str, str]:
    return "#{:02x}{:02x}{:02x}".format(*c[:3]), str(c[3] if alpha is None else alpha)


class _Project:
    """A QGIS project being assembled: layers, their tree and the project CRS."""

    def __init__(self, title: str, crs: Any, extent: tuple[float, float, float, float] | None) -> None:
        self.root = ET.Element("qgis", projectname=title, version=QGIS_VERSION)
        ET.SubElement(self.root, "title").text = title
        _crs_element(self.root, "projectCrs", crs)
        self.tree = ET.SubElement(self.root, "layer-tree-group")
        self.layers = ET.SubElement(self.root, "projectlayers")
        self.crs = crs
        props = ET.SubElement(self.root, "properties")
        paths = ET.SubElement(props, "Paths")
        ET.SubElement(paths, "Absolute", type="bool").text = "false"
        # without this flag QGIS ignores <projectCrs> (a relic of projects without reprojection)
        ET.SubElement(ET.SubElement(props, "SpatialRefSys"), "ProjectionsEnabled", type="int").text = "1"
        if extent is not None:
            view = ET.SubElement(self.root, "ProjectViewSettings", UseProjectScales="0", rotation="0")
            ext = ET.SubElement(view, "DefaultViewExtent", xmin=repr(extent[0]), ymin=repr(extent[1]),
                                xmax=repr(extent[2]), ymax=repr(extent[3]))
            srs = ET.SubElement(ext, "spatialrefsys")
            ET.SubElement(srs, "wkt").text = crs.to_wkt() if crs is not None else ""
        self.temporal = ET.SubElement(self.root, "ProjectTimeSettings", timeStepUnit="y", timeStep="1",
                                      frameRate="1", cumulativeTemporalRange="0")

    def group(self, name: str, checked: bool = True, expanded: bool = True) -> ET.Element:
        return ET.SubElement(self.tree, "layer-tree-group", name=name, checked="Qt::Checked" if checked
                             else "Qt::Unchecked", expanded="1" if expanded else "0")

    def layer(self, group: ET.Element, *, lid: str, name: str, kind: str, source: str, provider: str,
              crs: Any, checked: bool, temporal: tuple[int, int] | None = None, **attrs: str) -> ET.Element:
        lid = "coalmine_" + lid  # QGIS keeps a layer id only when it is longer than 10 characters
        ET.SubElement(group, "layer-tree-layer", id=lid, name=name, source=source, providerKey=provider,
                      checked="Qt::Checked" if checked else "Qt::Unchecked", expanded="0")
        ml = ET.SubElement(self.layers, "maplayer", type=kind, **attrs)
        ET.SubElement(ml, "id").text = lid
        ET.SubElement(ml, "datasource").text = source
        ET.SubElement(ml, "layername").text = name
        _crs_element(ml, "srs", crs)
        prov = ET.SubElement(ml, "provider")
        prov.text = provider
        if provider == "ogr":
            prov.set("encoding", "UTF-8")
        if temporal is not None and kind == "raster":
            t = ET.SubElement(ml, "temporal", mode="0", fetchMode="0", enabled="1")
            fr = ET.SubElement(t, "fixedRange")
            ET.SubElement(fr, "start").text = f"{temporal[0]}-01-01T00:00:00Z"
            ET.SubElement(fr, "end").text = f"{temporal[1]}-01-01T00:00:00Z"
        return ml

    def paletted(self, ml: ET.Element, entries: Iterable[tuple[int, tuple[int, int, int, int], str]]) -> None:
        pipe = ET.SubElement(ml, "pipe")
        ren = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1",
                            nodataColor="")
        pal = ET.SubElement(ren, "colorPalette")
        for value, color, label in entries:
            hexc, alpha = _rgba(color)
            ET.SubElement(pal, "paletteEntry", value=str(value), color=hexc, alpha=alpha, label=label)
        ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
        ET.SubElement(ml, "blendMode").text = "0"

    def rgb(self, ml: ET.Element) -> None:
        pipe = ET.SubElement(ml, "pipe")
        ren = ET.SubElement(pipe, "rasterrenderer", type="multibandcolor", redBand="1", greenBand="2",
                            blueBand="3", opacity="1", alphaBand="-1", nodataColor="")
        for c in ("red", "green", "blue"):
            ce = ET.SubElement(ren, f"{c}ContrastEnhancement")
            ET.SubElement(ce, "minValue").text = "1"
            ET.SubElement(ce, "maxValue").text = "255"
            ET.SubElement(ce, "algorithm").text = "StretchToMinimumMaximum"
        ET.SubElement(pipe, "rasterresampler", maxOversampling="2", zoomedInResampler="bilinear",
                      zoomedOutResampler="bilinear")
        ET.SubElement(ml, "blendMode").text = "0"

    def write(self, target: Path) -> Path:
        ET.indent(self.root)
        text = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(self.root, "unicode")
        atomic_write_text(target, text + "\n")
        return target


def _layer_of(vector: Path) -> str:
    """``|layername=…`` naming the layer coalmine reads (the first) when the file has several."""
    try:
        import pyogrio

        layers = [str(n) for n, _ in pyogrio.list_layers(vector)]
    except Exception:  # noqa: BLE001 - the AOI file was read before; QGIS will say what is wrong
        return ""
    return f"|layername={layers[0]}" if len(layers) > 1 else ""


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to the project folder, as QGIS writes it (``./x`` or ``../x``)."""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive (Windows): only an absolute path can name it
        return Path(path).as_posix()
    rel = Path(rel).as_posix()
    return rel if rel.startswith("../") else "./" + rel


def write_project(
    target: Path, *, title: str, layout: MonitorLayout, years: Sequence[dict[str, Any]],
    changes: Sequence[tuple[int, int, str]], aoi_file: Path, aoi_name_field: str | None, aoi_crs: Any,
    mines: Path | None,
) -> Path:
    """Write ``coalmine.qgs``.

    Args:
        target: the project file (its folder is the base of the relative paths).
        title: the project title.
        layout: the output folder's paths.
        years: per year ``{"year", "composite" (relative path or None), "truecolour" (path or None)}``.
        changes: ``(from_year, to_year, raster relative path)``.
        aoi_file, aoi_name_field, aoi_crs: the areas of interest and the field naming them.
        mines: the GeoPackage of mine polygons (None: none written yet).
    """
    base = target.parent
    rasters = [layout.path(y["composite"]) for y in years if y.get("composite")]
    grid = Grid.of(rasters[-1]) if rasters else None
    crs = grid.crs if grid is not None else aoi_crs
    extent = tuple(grid.bounds) if grid is not None else None
    prj = _Project(title, crs, extent)  # type: ignore[arg-type]
    newest = max((y["year"] for y in years if y.get("composite")), default=None)
    if mines is not None:
        g = prj.group("Mine outlines, all years (temporal controller: one year at a time)")
        ml = prj.layer(g, lid="mines", name="mine outlines", kind="vector", source=f"{_rel(mines, base)}|layername="
                       f"{MINES_LAYER}", provider="ogr", crs=crs, checked=True, geometry="Polygon",
                       wkbType="MultiPolygon")
        t = ET.SubElement(ml, "temporal", enabled="1", mode="2", startField="date_start", endField="date_end",
                          limitMode="0", accumulate="0", durationField="", durationUnit="min", fixedDuration="0",
                          startExpression="", endExpression="")
        fr = ET.SubElement(t, "fixedRange")
        ET.SubElement(fr, "start")
        ET.SubElement(fr, "end")
        ren = ET.SubElement(ml, "renderer-v2", type="singleSymbol", symbollevels="0", forceraster="0",
                            enableorderby="0")
        _fill_symbol(ren, "255,176,0,40", MINE_OUTLINE, "0.5")
    g = prj.group("Areas of interest")
    ml = prj.layer(g, lid="aois", name="areas of interest", kind="vector", source=_rel(aoi_file, base) + _layer_of(aoi_file),
                   provider="ogr", crs=aoi_crs, checked=True, geometry="Polygon", labelsEnabled="1")
    ren = ET.SubElement(ml, "renderer-v2", type="singleSymbol", symbollevels="0", forceraster="0", enableorderby="0")
    _fill_symbol(ren, "0,0,0,0", AOI_OUTLINE, "0.6")
    if aoi_name_field:
        lab = ET.SubElement(ml, "labeling", type="simple")
        st = ET.SubElement(lab, "settings", calloutType="simple")
        ts = ET.SubElement(st, "text-style", fieldName=aoi_name_field, isExpression="0", fontSize="10",
                           fontSizeUnit="Point", textColor="0,0,0,255", textOpacity="1", fontFamily="Sans Serif",
                           fontWeight="75")
        ET.SubElement(ts, "text-buffer", bufferDraw="1", bufferSize="1", bufferSizeUnits="MM",
                      bufferColor="0,229,255,255", bufferOpacity="1")
        ET.SubElement(st, "placement", placement="1")
    g = prj.group("Change maps")
    change_entries = [(k, CHANGE_COLORS[k], CLASS_NAMES[k]) for k in (NEWLY_MINED, NO_LONGER_MINED, STABLE_MINE)]
    for y0, y1, rel in sorted(changes, reverse=True):
        ml = prj.layer(g, lid=f"change_{y0}_{y1}", name=f"change {y0} → {y1}", kind="raster",
                       source=_rel(layout.path(rel), base), provider="gdal", crs=crs, checked=y1 == newest,
                       temporal=(y1, y1 + 1))
        prj.paletted(ml, change_entries)
    g = prj.group("Yearly mine masks", checked=False)
    for y in sorted(years, key=lambda r: -r["year"]):
        if not y.get("composite"):
            continue
        ml = prj.layer(g, lid=f"mask_{y['year']}", name=f"mined {y['year']}", kind="raster",
                       source=_rel(layout.path(y["composite"]), base), provider="gdal", crs=crs,
                       checked=y["year"] == newest, temporal=(y["year"], y["year"] + 1))
        prj.paletted(ml, [(MINED, MASK_COLORS[MINED][:3] + (170,), "mined")])
    g = prj.group("True colour (Sentinel-2 B04/B03/B02, clearest scene or composite of the year)")
    for y in sorted(years, key=lambda r: -r["year"]):
        if not y.get("truecolour") or not Path(y["truecolour"]).is_file():
            continue
        ml = prj.layer(g, lid=f"truecolour_{y['year']}", name=f"true colour {y['year']}", kind="raster",
                       source=_rel(Path(y["truecolour"]), base), provider="gdal", crs=crs,
                       checked=y["year"] == newest, temporal=(y["year"], y["year"] + 1))
        prj.rgb(ml)
    return prj.write(target)


def update_qgis(title: str, led: Any, layout: MonitorLayout, aoi_file: Path, aoi_name_field: str | None,
                aois: Sequence[Any]) -> Path:
    """Bring ``mines.gpkg`` (when a year changed) and ``coalmine.qgs`` up to date from the ledger.

    Returns:
        The project file.
    """
    import hashlib
    import json

    rows = led.years()
    years = [{"year": r["year"], "composite": r["composite"], "valid_share": r["valid_share"],
              "model": _models_text(json.loads(r["models"] or "[]")),
              "truecolour": layout.truecolour(r["year"]) if layout.truecolour(r["year"]).is_file() else None}
             for r in rows]
    fp = hashlib.sha256(json.dumps([[r["year"], r["fingerprint"]] for r in rows]).encode()).hexdigest()
    if _gpkg_fingerprint(layout.mines) != fp:
        write_mines_gpkg(layout.mines, [{**y, "composite": layout.path(y["composite"]) if y["composite"] else None}
                                        for y in years], fingerprint=fp)
    changes = [(r["from_year"], r["to_year"], r["raster"]) for r in led.changes()]
    aoi_crs = aois[0].crs if aois else None
    return write_project(layout.qgis_project, title=title, layout=layout, years=years, changes=changes,
                         aoi_file=aoi_file, aoi_name_field=aoi_name_field, aoi_crs=aoi_crs, mines=layout.mines)


def _gpkg_fingerprint(path: Path) -> str | None:
    """The fingerprint recorded in ``mines.gpkg`` (None when absent or unreadable)."""
    if not path.is_file():
        return None
    try:
        import pyogrio

        meta = pyogrio.read_info(str(path), layer=MINES_LAYER).get("layer_metadata") or {}
    except Exception:  # noqa: BLE001 - an unreadable file is rewritten
        return None
    return meta.get("coalmine_fingerprint")


def _models_text(models: list[dict[str, Any]]) -> str:
    return "; ".join(f"{m.get('file') or 'unrecorded'} ({m.get('precision') or '?'})" for m in models)
