"""Reports regenerated from the ledger after every run: CSV tables, PNG charts, one HTML file.

Files (paths from :class:`~.layout.MonitorLayout`):

- ``reports/yearly_areas.csv`` — one row per year: hectares per AOI and the total mapped area
  (an empty cell where the figure is no data);
- ``reports/yearly_details.csv`` — one row per year and area: hectares, valid share, coverage
  (full / partial / no data), scenes and the model file(s) behind the year;
- ``reports/changes.csv`` — year-over-year change per AOI and total: ha before/after, change
  in ha and in % (empty % when the earlier year had 0 ha, empty change against no data);
- ``reports/change_maps.csv`` — hectares newly mined / no longer mined / stable per year pair;
- ``reports/scenes.csv`` — every scene with its status, hectares, valid share, model, time, error;
- ``reports/fetched.csv`` — with a ``[source]``: every item fetched from the catalogue (date,
  kind, STAC id, cloud cover of the tile and of the fetched window, status, Sentinel-1 partner);
- ``reports/chart_aois.png`` (area per AOI per year, like the study's figures 7–8) and
  ``reports/chart_total.png`` (total per year with the year-over-year change);
- ``report.html`` — a single self-contained page (tables, charts, maps and the model card inline,
  images as base64 ``data:`` URIs, no script, no external resource) that opens offline.

The steps, each a function: :func:`collect` reads the ledger into a :class:`ReportData`
(figures below ``min_valid_share`` become None: no data); :func:`write_tables`,
:func:`draw_charts` and :func:`draw_maps` (:mod:`.maps`, over the pictures of :mod:`.backdrop`)
write the CSVs and draw the PNGs; :func:`html_context` turns all of it, with the model card of
:mod:`.modelcard`, into the values the page shows, and :func:`render_html` renders them with the
Jinja2 template ``templates/report.html.j2`` (package data) with autoescaping on, so a name from
the user (title, AOI, scene file, error) is shown as text whatever characters it holds. Names
reach the charts and maps as literal text too (matplotlib's math mode is off: ``$x^2$`` stays
``$x^2$``).

Every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import importlib.resources
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from .. import __version__
from .._io import atomic_write_bytes, atomic_write_text
from ..bundle import load_bundle
from ..fetch.record import report_rows
from ..tables import write_csv
from .config import MonitorConfig
from .layout import FETCHED_CSV, REPORTS_DIR, MonitorLayout
from .ledger import Ledger
from .legend import (
    CHANGE_COLORS,
    CLASS_NAMES,
    NEWLY_MINED,
    NO_LONGER_MINED,
    RGBA,
    STABLE_MINE,
)
from .maps import (
    AOI_OUTLINE,
    MINE_OUTLINE,
    Extent,
    Layer,
    aoi_extents,
    draw_map,
    far_apart,
    image_mime,
)
from .modelcard import ModelCard, read_model_card

TOTAL = "Total mapped area"

RULE_TEXT = {
    "max_extent": "maximum extent: a pixel counts as mined in a year if any valid scene of that year shows it mined",
    "median": "median: mined where at least half of the year's valid observations show a mine",
    "majority": "majority: mined where more than half of the year's valid observations show a mine",
    "latest": "latest: the most recent valid observation of each pixel in the year",
    "input": "one composite per year: the median of every acquisition's clear observations, mapped once",
}

# Colour cycle of the charts (colour-blind safe, Okabe–Ito).
_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
#: Drawing settings of every chart and preview; names are drawn as plain text, never as math.
_RC = {"font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "text.parse_math": False}

#: The change classes the report's change table shows, in its column order.
_CHANGE_COLUMNS = (NEWLY_MINED, NO_LONGER_MINED, STABLE_MINE)


# -- what the report shows ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeMap:
    """One change raster as the ledger records it."""

    from_year: int
    to_year: int
    hectares: dict[str, float]
    raster: str


#: A figure whose valid share is below this (but at least ``min_valid_share``) is shown
#: marked as resting on partial coverage.
PARTIAL_COVERAGE = 0.9


@dataclass(frozen=True)
class ReportData:
    """Everything the reports show, read from the ledger once.

    ``table`` is ``{year: {aoi | TOTAL: ha or None}}`` — None where the figure is **no data**:
    nothing valid was observed, or less than ``min_valid_share`` of the area (never 0 ha);
    ``shares`` the valid share behind each figure; ``names`` the AOI names in the AOI file's
    order (then any others the ledger holds); ``composites`` the relative path of each year's
    composite (None for a year without a valid scene); ``models`` the models (file, SHA-256,
    precision, backend, scene count) behind each year; ``scenes`` the ledger rows of the
    configured scenes.
    """

    years: list[int]
    names: list[str]
    table: dict[int, dict[str, float | None]]
    composites: dict[int, str | None]
    changes: list[dict[str, Any]]
    change_maps: list[ChangeMap]
    scenes: list[Any]
    shares: dict[int, dict[str, float | None]] = field(default_factory=dict)
    models: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    n_scenes: dict[int, int] = field(default_factory=dict)
    min_valid_share: float = 0.5
    #: compositing = "input": per year, what its composite rests on (see ``composites.py``).
    observations: dict[int, dict[str, Any]] = field(default_factory=dict)

    def coverage(self, year: int, name: str) -> str:
        """``"full"``, ``"partial"`` (shown, marked) or ``"none"`` (no figure) for one cell."""
        if self.table.get(year, {}).get(name) is None:
            return "none"
        share = self.shares.get(year, {}).get(name)
        return "partial" if share is not None and share < PARTIAL_COVERAGE else "full"


def collect(led: Ledger, keys: set[str], aoi_order: list[str], min_valid_share: float = 0.5) -> ReportData:
    """Read the report's figures from the ledger (``keys``: the configured scenes); figures
    resting on less than ``min_valid_share`` of their area become None (no data)."""
    years, names, table, shares = yearly_table(led, aoi_order, min_valid_share)
    rows = led.years()
    return ReportData(
        years=years,
        names=names,
        table=table,
        composites={r["year"]: r["composite"] for r in rows},
        changes=change_rows(years, names, table),
        change_maps=[
            ChangeMap(r["from_year"], r["to_year"], json.loads(r["stats"])["hectares"], r["raster"])
            for r in led.changes()
        ],
        scenes=[r for r in led.scenes() if r["key"] in keys],
        shares=shares,
        models={r["year"]: json.loads(r["models"] or "[]") for r in rows},
        n_scenes={r["year"]: r["n_scenes"] for r in rows},
        min_valid_share=min_valid_share,
        observations={r["year"]: json.loads(r["observations"]) for r in rows if r["observations"]},
    )


def yearly_table(
    led: Ledger, order: list[str] | None = None, min_valid_share: float = 0.5,
) -> tuple[list[int], list[str], dict[int, dict[str, float | None]], dict[int, dict[str, float | None]]]:
    """Years, AOI names (in ``order``, e.g. the AOI file's, then any others),
    ``{year: {aoi | TOTAL: ha or None}}`` and the valid share of each, from the ledger.

    A figure is None (no data) where the ledger has none (no valid pixel) or its valid share
    is below ``min_valid_share``.
    """
    years_rows = led.years()
    areas = led.year_areas()
    area_shares = led.year_area_shares()
    present = {n for row in areas.values() for n in row}
    names: list[str] = [n for n in dict.fromkeys(order or []) if n in present]
    table: dict[int, dict[str, float | None]] = {}
    shares: dict[int, dict[str, float | None]] = {}
    for r in years_rows:
        y = r["year"]
        row: dict[str, float | None] = dict(areas.get(y, {}))
        share: dict[str, float | None] = dict(area_shares.get(y, {}))
        for n in row:
            if n not in names:
                names.append(n)
        row[TOTAL] = r["total_ha"]
        share[TOTAL] = r["valid_share"]
        table[y] = {n: _shown(v, share.get(n), min_valid_share) for n, v in row.items()}
        shares[y] = share
    return [r["year"] for r in years_rows], names, table, shares


def _shown(ha: float | None, share: float | None, min_share: float) -> float | None:
    """A hectare figure as the report may show it: None when it rests on too little."""
    if ha is None or (share is not None and share < min_share):
        return None
    return float(ha)


def change_rows(
    years: list[int], names: list[str], table: dict[int, dict[str, float | None]]
) -> list[dict[str, Any]]:
    """Year-over-year change per area (AOIs and total) between consecutive years.

    A change involving a no-data figure (None) is None in ha and %; ``change_pct`` is also None
    when the earlier year had no mined area (a percentage of 0 is undefined).

    Example:
        >>> change_rows([2018, 2019], ["A"], {2018: {"A": 10.0, TOTAL: 10.0}, 2019: {"A": 14.0, TOTAL: 14.0}})[0]
        {'area': 'A', 'from_year': 2018, 'to_year': 2019, 'from_ha': 10.0, 'to_ha': 14.0, 'change_ha': 4.0, 'change_pct': 40.0}
    """
    out = []
    for y0, y1 in zip(years, years[1:], strict=False):
        for n in [*names, TOTAL]:
            a, b = table[y0].get(n), table[y1].get(n)
            known = a is not None and b is not None
            out.append({
                "area": n, "from_year": y0, "to_year": y1, "from_ha": a, "to_ha": b,
                "change_ha": b - a if known else None, "change_pct": _pct(a, b) if known else None,
            })
    return out


def _pct(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    return 100.0 * (after - before) / before if before > 0 else None


# -- the steps ---------------------------------------------------------------------------------


def write_reports(
    cfg: MonitorConfig, led: Ledger, layout: MonitorLayout, keys: set[str], aois: list[Any]
) -> dict[str, Path]:
    """Regenerate every report from the ledger.

    Args:
        cfg: the configuration (title, rule, paths).
        led: the ledger.
        layout: the output folder's paths.
        keys: ledger keys of the scenes in the current configuration.
        aois: the AOIs (outlines on the map previews).

    Returns:
        ``{"yearly_csv", "changes_csv", "change_maps_csv", "scenes_csv", "chart_aois",
        "chart_total", "html": path}``.
    """
    layout.reports.mkdir(parents=True, exist_ok=True)
    files = layout.report_files()
    data = collect(led, keys, [a.name for a in aois], cfg.min_valid_share)
    write_tables(data, files)
    charts = draw_charts(data, files["chart_aois"], files["chart_total"])
    maps = draw_maps(data, layout, aois)
    card = read_model_card(load_bundle(cfg.bundle))
    fetched = None
    if cfg.fetch is not None:
        fetched = report_rows(cfg.fetch.folder)
        files["fetched_csv"] = layout.reports / FETCHED_CSV
        write_fetched(fetched[0], files["fetched_csv"])
    page = render_html(html_context(cfg, led.path, data, charts, maps, fetched=fetched, card=card,
                                    qgis=layout.qgis_project.name))
    atomic_write_text(files["html"], page)
    return files


def write_fetched(rows: list[dict[str, Any]], path: Path) -> None:
    """``fetched.csv``: the acquisitions the ``[source]`` fetched, with their cloud cover."""
    write_csv(path, ["date", "kind", "stac_id", "cloud_cover_pct", "window_cloud_pct", "status", "s1_id", "megabytes"],
              [[r["date"], r["kind"], r["stac_id"], _opt(r["cloud_cover"], 2), _opt(r["window_cloud"], 2),
                r["status"], r["s1_id"], round(r["megabytes"], 3)] for r in rows])


def write_tables(data: ReportData, files: dict[str, Path]) -> None:
    """The CSV tables (hectares rounded to 4 decimals, i.e. 1 m²); a no-data figure is an empty
    cell, never 0."""
    years, names, table = data.years, data.names, data.table
    write_csv(files["yearly_csv"], ["year", *names, TOTAL.lower().replace(" ", "_")],
              [[y, *(_opt(table[y].get(n), 4) for n in names), _opt(table[y].get(TOTAL), 4)] for y in years])
    write_csv(files["yearly_details_csv"],
              ["year", "area", "hectares", "valid_share", "coverage", "scenes", "models"],
              [[y, n, _opt(table[y].get(n), 4), _opt(data.shares.get(y, {}).get(n), 4),
                _COVERAGE_WORDS[data.coverage(y, n)], data.n_scenes.get(y), models_text(data.models.get(y, []))]
               for y in years for n in [*names, TOTAL]])
    write_csv(files["changes_csv"], ["area", "from_year", "to_year", "from_ha", "to_ha", "change_ha", "change_pct"],
              [[c["area"], c["from_year"], c["to_year"], _opt(c["from_ha"], 4), _opt(c["to_ha"], 4),
                _opt(c["change_ha"], 4), _opt(c["change_pct"], 2)] for c in data.changes])
    classes = sorted(CLASS_NAMES)
    write_csv(files["change_maps_csv"],
              ["from_year", "to_year", *(CLASS_NAMES[k].replace(" ", "_") + "_ha" for k in classes), "raster"],
              [[m.from_year, m.to_year, *(_opt(m.hectares[CLASS_NAMES[k]], 4) for k in classes), m.raster]
               for m in data.change_maps])
    write_csv(files["scenes_csv"],
              ["date", "scene", "s1", "status", "mined_ha", "valid_share", "nodata_share", "seconds", "attempts",
               "bundle_id", "backend", "model_file", "model_sha256", "precision", "sha256", "error"],
              [[r["date"], r["path"], r["s1_path"], scene_status(r, data.min_valid_share),
                _opt(scene_ha(r, data.min_valid_share), 4), _opt(r["valid_share"], 4), _opt(r["nodata_share"], 4),
                _opt(r["seconds"], 2), r["attempts"], r["bundle_id"], r["backend"], r["model_file"],
                r["model_sha256"], r["precision"], r["sha256"], r["error"]] for r in data.scenes])


_COVERAGE_WORDS = {"full": "full", "partial": "partial", "none": "no data"}


def scene_status(row: Any, min_valid_share: float) -> str:
    """A scene's status as the reports show it: ``no data`` for a scene without a valid pixel
    or with less than ``min_valid_share`` of it valid."""
    if row["status"] == "nodata":
        return "no data"
    if row["status"] == "done" and row["valid_share"] is not None and row["valid_share"] < min_valid_share:
        return "no data"
    return str(row["status"])


def scene_ha(row: Any, min_valid_share: float) -> float | None:
    """A scene's mined hectares as the reports show them (None where it is no data)."""
    if scene_status(row, min_valid_share) != "done":
        return None
    return None if row["total_ha"] is None else float(row["total_ha"])


def models_text(models: list[dict[str, Any]]) -> str:
    """``model.int8.onnx (int8)``; several, with their scene counts, separated by ``; ``."""
    if not models:
        return ""
    parts = []
    for m in models:
        name = m.get("file") or "unrecorded model"
        prec = f" ({m['precision']})" if m.get("precision") else ""
        parts.append(name + prec + (f" × {m['scenes']} scenes" if len(models) > 1 else ""))
    return "; ".join(parts)


def _opt(v: float | None, digits: int) -> float | None:
    return None if v is None else round(float(v), digits)


def draw_charts(data: ReportData, p_aois: Path, p_total: Path) -> dict[str, bytes]:
    """The two bar charts as PNG files; returns their bytes (``aois``, ``total``) for the page."""
    return {"aois": _save(chart_aois(data), p_aois), "total": _save(chart_total(data), p_total)}


def _styled(draw: Callable[..., Any]) -> Callable[..., Any]:
    """Run a drawing function under the report's matplotlib settings (:data:`_RC`); matplotlib
    reads them when each artist is made, and they are restored afterwards."""

    @functools.wraps(draw)
    def styled(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context(_RC):
            return draw(*args, **kwargs)

    return styled


def _figure(**kw: Any) -> Any:
    """A matplotlib Figure without pyplot: no global figure registry, no GUI backend."""
    from matplotlib.figure import Figure

    return Figure(**kw)


@_styled
def chart_aois(data: ReportData) -> Any:
    """Area per AOI per year: grouped bars, one group per year (the study's figures 7–8)."""
    years, names = data.years, data.names
    fig = _figure(figsize=(9, 4.2), dpi=110)
    ax = fig.subplots()
    n = max(1, len(names))
    width = 0.8 / n
    x = np.arange(len(years))
    for i, name in enumerate(names):
        xs = x - 0.4 + width * (i + 0.5)
        vals = [data.table[y].get(name) for y in years]
        ax.bar(xs, [np.nan if v is None else v for v in vals], width, label=name, color=_PALETTE[i % len(_PALETTE)])
        for xi, v in zip(xs, vals, strict=True):
            if v is None:  # no data: a mark at the base, never a bar of 0
                ax.annotate("n/d", (xi, 0), ha="center", va="bottom", fontsize=7, color="#777", rotation=90)
    ax.set_xticks(x, [str(y) for y in years])
    ax.set_ylabel("mined area (ha)")
    ax.set_title("Mined area per area of interest and year")
    ax.grid(axis="y", alpha=0.3)
    if names:
        ax.legend(frameon=False, fontsize=8, ncol=min(4, n), loc="upper left", bbox_to_anchor=(0, -0.12))
    fig.tight_layout()
    return fig


@_styled
def chart_total(data: ReportData) -> Any:
    """Total per year, each bar labelled with its hectares and the change from the year before."""
    fig = _figure(figsize=(9, 3.6), dpi=110)
    ax = fig.subplots()
    tot = [data.table[y].get(TOTAL) for y in data.years]
    bars = ax.bar([str(y) for y in data.years], [np.nan if v is None else v for v in tot], color="#5C3A21",
                  width=0.6)
    for i, b in enumerate(bars):
        if tot[i] is None:
            ax.annotate("no data", (b.get_x() + b.get_width() / 2, 0), ha="center", va="bottom", fontsize=8,
                        color="#777")
            continue
        label = f"{tot[i]:,.1f} ha"
        if data.coverage(data.years[i], TOTAL) == "partial":
            label += f"\n({_floor_pct(data.shares[data.years[i]][TOTAL] or 0)} % observed)"
        pct = _pct(tot[i - 1], tot[i]) if i > 0 else None
        if pct is not None:
            label += f"\n{pct:+.1f} %"
        ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("mined area (ha)")
    ax.set_title("Total mined area per year (whole mapped extent)")
    ax.margins(y=0.25)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _save(fig: Any, path: Path) -> bytes:
    data = _png(fig)
    atomic_write_bytes(path, data)
    return data


@dataclass(frozen=True)
class MapFigure:
    """One drawn map: its caption, image (PNG or JPEG), a coverage note and whether it warns."""

    caption: str
    png: bytes
    note: str = ""
    warn: bool = False


def draw_maps(data: ReportData, layout: MonitorLayout, aois: list[Any]) -> dict[str, Any]:
    """The report's maps (:mod:`.maps`): each year's mine outlines and each change map over the
    year's true-colour picture, and — where the AOIs are small on the whole map — one small map
    per AOI and year.

    Returns:
        ``{"years": [MapFigure], "changes": [MapFigure], "aoi_grid": {"years": [...], "rows":
        [{"name", "where", "cells": [MapFigure | None]}]} or None}``; a raster missing on disk has
        no map.
    """
    import rasterio
    from rasterio.crs import CRS

    res: dict[str, Any] = {"years": [], "changes": [], "aoi_grid": None}
    rasters = {y: layout.path(rel) for y, rel in data.composites.items() if rel is not None}
    rasters = {y: p for y, p in rasters.items() if p.is_file()}
    for year, path in rasters.items():
        note, warn = _map_note(data, year, TOTAL)
        png = _draw(Layer(path, "mask", _backdrop(layout, year)), aois, title=str(year), note=note, warn=warn)
        res["years"].append(MapFigure(str(year), png, note, warn))
    for m in data.change_maps:
        p = layout.path(m.raster)
        if p.is_file():
            png = _draw(Layer(p, "change", _backdrop(layout, m.to_year)), aois, title=f"{m.from_year} → {m.to_year}",
                        note=f"over the picture of {m.to_year}")
            res["changes"].append(MapFigure(f"{m.from_year} → {m.to_year}", png))
    if not rasters or not aois:
        return res
    first = next(iter(rasters.values()))
    with rasterio.open(first) as ds:
        crs, full = ds.crs, Extent(*ds.bounds)
    if not far_apart(aois, crs, full):
        return res
    years = [y for y in data.years if y in rasters]
    rows = []
    for aoi, ext in zip(aois, aoi_extents(aois, crs), strict=True):
        cells = []
        for y in years:
            note, warn = _map_note(data, y, aoi.name)
            png = _draw(Layer(rasters[y], "mask", _backdrop(layout, y)), aois, extent=ext.grown(0.15),
                        width_in=2.0, max_px=240, title=str(y), warn=warn, names=False, small=True)
            cells.append(MapFigure(str(y), png, note, warn))
        lon, lat = _centre_lonlat(ext, crs if crs is not None else CRS.from_epsg(4326))
        rows.append({"name": aoi.name, "where": f"{abs(lat):.3f}° {'N' if lat >= 0 else 'S'}, "
                                                f"{abs(lon):.3f}° {'E' if lon >= 0 else 'W'}", "cells": cells})
    res["aoi_grid"] = {"years": years, "rows": rows}
    return res


def _backdrop(layout: MonitorLayout, year: int) -> Path | None:
    p = layout.truecolour(year)
    return p if p.is_file() else None


def _map_note(data: ReportData, year: int, name: str) -> tuple[str, bool]:
    """The coverage line drawn on a map: scenes, observed share; a warning below full coverage."""
    share = data.shares.get(year, {}).get(name)
    n = data.n_scenes.get(year, 0)
    scenes = f"{n} scene{'s' if n != 1 else ''}" if name == TOTAL else ""
    seen = "" if share is None else f"{_floor_pct(share)} % observed"
    cov = data.coverage(year, name)
    if cov == "none":
        return ", ".join(x for x in (scenes, seen, "no data") if x), True
    return ", ".join(x for x in (scenes, seen) if x), cov == "partial"


@_styled
def _draw(layer: Layer, aois: list[Any], **kw: Any) -> bytes:
    return draw_map(layer, aois, **kw)


def _centre_lonlat(ext: Extent, crs: Any) -> tuple[float, float]:
    from pyproj import Transformer

    x, y = (ext.left + ext.right) / 2, (ext.bottom + ext.top) / 2
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    return float(lon), float(lat)


# -- HTML --------------------------------------------------------------------------------------


def html_context(
    cfg: MonitorConfig, ledger_path: Path, data: ReportData, charts: dict[str, bytes],
    maps: dict[str, Any], now: dt.datetime | None = None,
    fetched: tuple[list[dict[str, Any]], dict[str, Any] | None] | None = None,
    card: ModelCard | None = None, qgis: str = "",
) -> dict[str, Any]:
    """The values the page shows, plain data for the template (numbers are formatted there).

    Args:
        now: the time stamp shown as "generated" (default: now, UTC).
        fetched: with a ``[source]``: the fetched items and the last fetch run (``fetch.report_rows``).
    """
    scenes = data.scenes
    n_done = sum(1 for s in scenes if s["status"] in ("done", "nodata"))
    n_failed = sum(1 for s in scenes if s["status"] == "failed")
    years = data.years
    return {
        "title": cfg.title,
        "generated": f"{now or dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}",
        "span": f"{years[0]}–{years[-1]}" if years else "no years yet",
        "n_done": n_done,
        "cards": _cards(data, n_done, n_failed),
        "rule_text": RULE_TEXT["input" if cfg.compositing == "input" else cfg.yearly_rule],
        "observations": _observation_rows(data),
        "total_label": TOTAL,
        "years": years,
        "area_rows": [{"name": n, "cells": [_cell(data, y, n) for y in years]} for n in data.names],
        "total_cells": [_cell(data, y, TOTAL) for y in years],
        "year_scenes": [data.n_scenes.get(y, 0) for y in years],
        "year_models": [models_text(data.models.get(y, [])) or "–" for y in years],
        "mixed_models": _mixed_models(data),
        "min_valid_share": data.min_valid_share,
        "partial_coverage": PARTIAL_COVERAGE,
        "charts": {k: _data_uri(png) for k, png in charts.items()},
        "change_areas": [*data.names, TOTAL],
        "change_rows": _change_table(data),
        "change_classes": [CLASS_NAMES[k] for k in _CHANGE_COLUMNS],
        "change_maps": [
            {"from_year": m.from_year, "to_year": m.to_year, "raster": m.raster,
             "cells": [m.hectares[CLASS_NAMES[k]] for k in _CHANGE_COLUMNS]}
            for m in data.change_maps
        ],
        "change_legend": [*(_outline_item(_hex(CHANGE_COLORS[k]), CLASS_NAMES[k]) for k in (NEWLY_MINED, NO_LONGER_MINED)),
                          _outline_item(MINE_OUTLINE, CLASS_NAMES[STABLE_MINE]), *_context_items()],
        "map_legend": [_outline_item(MINE_OUTLINE, "mined (outline)"), *_context_items()],
        "change_maps_drawn": [_map_ctx(f) for f in maps["changes"]],
        "year_maps": [_map_ctx(f) for f in maps["years"]],
        "aoi_grid": None if maps.get("aoi_grid") is None else {
            "years": maps["aoi_grid"]["years"],
            "rows": [{"name": r["name"], "where": r["where"], "cells": [_map_ctx(c) for c in r["cells"]]}
                     for r in maps["aoi_grid"]["rows"]]},
        "card": _card_ctx(card, data),
        "qgis": qgis,
        "scenes": [
            {"date": s["date"], "name": Path(s["path"]).name, "status": scene_status(s, data.min_valid_share),
             "ha": scene_ha(s, data.min_valid_share), "valid": s["valid_share"],
             "model": models_text([{"file": s["model_file"], "precision": s["precision"]}]) if s["model_file"] else "",
             "seconds": s["seconds"], "error": s["error"] or ""}
            for s in scenes
        ],
        "bundles": ", ".join(sorted({s["bundle_id"] for s in scenes if s["bundle_id"]})) or "–",
        "rule": cfg.yearly_rule,
        "aoi_file": Path(cfg.aois).name,
        "ledger": str(ledger_path),
        "version": __version__,
        "reports_dir": REPORTS_DIR,
        "fetched": None if fetched is None else fetched[0],
        "last_fetch": None if fetched is None else fetched[1],
    }


def _observation_rows(data: ReportData) -> list[dict[str, Any]]:
    """Per composited year: acquisitions used and the share of the mapped area on few clear views."""
    return [{"year": y, "s2": o.get("s2_acquisitions"), "s1": o.get("s1_acquisitions"),
             "share": o.get("mapped_share_below"), "few": bool(o.get("few"))}
            for y, o in sorted(data.observations.items())]


def _cards(data: ReportData, n_done: int, n_failed: int) -> list[dict[str, str]]:
    """The key figures at the top: latest year, change from the year before and from the first
    (a change against a no-data year is not given)."""
    if not data.years:
        return []
    years, table = data.years, data.table
    last = years[-1]
    now_ha = table[last].get(TOTAL)
    cards = [_card(f"Mined area {last}", "no data" if now_ha is None else f"{now_ha:,.1f} ha", "",
                   _coverage_note(data, last, TOTAL) or "whole mapped extent")]
    refs = [(years[-2], f"Change {years[-2]} → {last}"), (years[0], f"Change since {years[0]}")] if len(years) > 1 else []
    for ref, label in refs:
        before = table[ref].get(TOTAL)
        if before is None or now_ha is None:
            cards.append(_card(label, "–", "", f"no data in {ref if before is None else last}"))
            continue
        d = now_ha - before
        cards.append(_card(label, f"{d:+,.1f} ha", _tone(d), _fmt_pct(_pct(before, now_ha))))
    cards.append(_card("Scenes", f"{n_done} done", "up" if n_failed else "",
                       f"{n_failed} failed" if n_failed else "none failed"))
    return cards


def _map_ctx(f: MapFigure) -> dict[str, Any]:
    return {"caption": f.caption, "uri": _data_uri(f.png, image_mime(f.png)), "note": f.note, "warn": f.warn}


def _card_ctx(card: ModelCard | None, data: ReportData) -> dict[str, Any] | None:
    """The model card as the template shows it (see :mod:`.modelcard`)."""
    if card is None:
        return None
    t = {k: ("–" if v is None else v) for k, v in card.training.items()}
    splits = {"validation": "Validation split (spatially blocked hold-out)", "test": "Test split (held out whole)"}
    return {
        "bundle_id": card.bundle_id, "created": card.created[:10] or "–", "threshold": card.threshold,
        "fingerprint": str(t.get("data_fingerprint") or "–"),
        "epochs": f"{t.get('epochs_run', '–')} of {t.get('epochs_max', '–')} (best: {t.get('best_epoch', '–')})"
                  + (", stopped early" if card.training.get("stopped_early") is True else ""),
        "device": t.get("device") or "–", "seed": t.get("seed"), "code": t.get("code_version") or "–",
        "patches": ", ".join(f"{k} {v}" for k, v in (card.training.get("patches") or {}).items()) or "–",
        "scenes": card.scenes,
        "tables": [{"title": splits.get(a.split, a.split), "rows": a.rows, "columns": a.column_totals,
                    "producers": a.producers, "total": a.total, "oa": a.overall_accuracy, "kappa": a.kappa,
                    "iou": a.iou_mine, "f1": a.f1_mine} for a in card.accuracy],
        "gates": [{"artefact": g.artefact, "reference": g.reference, "passed": g.passed,
                   "agreement": g.mask_agreement, "min_agreement": g.min_mask_agreement,
                   "iou_drop": g.iou_drop_points, "max_iou_drop": g.max_iou_drop_points} for g in card.gates],
        "exported": card.exported[:10],
        "years": [{"year": y, "models": models_text(data.models.get(y, [])) or "–"} for y in data.years],
        "notes": card.notes,
    }


def _card(label: str, value: str, tone: str, sub: str) -> dict[str, str]:
    return {"label": label, "value": value, "tone": tone, "sub": sub}


def _change_table(data: ReportData) -> list[dict[str, Any]]:
    """Rows of the year-over-year table: one per pair of years, one cell per area."""
    by = {(c["area"], c["from_year"]): c for c in data.changes}
    return [
        {"from_year": a, "to_year": b,
         "cells": [{"ha": c["change_ha"], "pct": c["change_pct"], "tone": _tone(c["change_ha"])}
                   for c in (by[(n, a)] for n in [*data.names, TOTAL])]}
        for a, b in zip(data.years, data.years[1:], strict=False)
    ]


def _cell(data: ReportData, year: int, name: str) -> dict[str, Any]:
    """One figure of the yearly table: its value, coverage class and a note for the tooltip."""
    return {"ha": data.table[year].get(name), "coverage": data.coverage(year, name),
            "note": _coverage_note(data, year, name)}


def _coverage_note(data: ReportData, year: int, name: str) -> str:
    share = data.shares.get(year, {}).get(name)
    seen = "nothing" if not share else f"{_floor_pct(share)} %"
    cov = data.coverage(year, name)
    if cov == "none":
        return f"no data: {seen} of the area observed (below {100 * data.min_valid_share:.0f} %)"
    if cov == "partial":
        return f"only {seen} of the area observed: the figure may be too low"
    return ""


def _mixed_models(data: ReportData) -> str:
    """A warning when the series' figures come from more than one model file, else ''."""
    used = {(m.get("file"), m.get("sha256")) for y in data.years for m in data.models.get(y, [])}
    if len(used) <= 1:
        return ""
    names = sorted({f or "an unrecorded model" for f, _ in used})
    return (f"The yearly figures come from {len(used)} different model files ({', '.join(names)}); figures "
            "made by different models are not strictly comparable. Re-run coal-monitor after exporting: "
            "it re-maps every scene with the model files the bundle holds now.")


def _tone(delta: float | None) -> str:
    """CSS class of a change: more mined land is "up" (red), less is "down" (green)."""
    if delta is None:
        return ""
    return "up" if delta > 0 else "down" if delta < 0 else ""


def _outline_item(color: str, label: str) -> dict[str, str]:
    return {"kind": "outline", "style": f"border-color:{color}", "label": label}


def _context_items() -> list[dict[str, str]]:
    return [_outline_item(AOI_OUTLINE, "area of interest"), {"kind": "veil", "style": "", "label": "not observed"}]


def _hex(c: RGBA) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c[:3])


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _fmt_ha(v: float | None) -> str:
    return "–" if v is None else f"{v:,.1f}"


def _fmt_share(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def _fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1f} %"


def _fmt_signed_ha(v: float | None) -> str:
    return "no data" if v is None else f"{v:+,.1f} ha"


def _floor_pct(share: float) -> int:
    """A share as whole percent, rounded down: 89.8 % shows as 89 %, never as the 90 % it missed."""
    return int(math.floor(100 * share + 1e-9))


def _fmt_share(v: float | None) -> str:
    return "–" if v is None else f"{_floor_pct(v)} %"


def _fmt_seconds(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f} s"


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    """The page template, read from the package with importlib.resources (works from a wheel,
    a zip or a source tree); autoescaping on, and an undefined name is an error."""
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(ha=_fmt_ha, pct=_fmt_pct, signed_ha=_fmt_signed_ha, seconds=_fmt_seconds, share=_fmt_share)
    source = importlib.resources.files(__package__).joinpath("templates", "report.html.j2").read_text("utf-8")
    return env.from_string(source)


def render_html(context: dict[str, Any]) -> str:
    """The self-contained HTML report (no script, no external resource) from :func:`html_context`."""
    return _template().render(context)
