"""Reports regenerated from the ledger after every run: CSV tables, PNG charts, one HTML file.

Files (under the output folder):

- ``reports/yearly_areas.csv`` — one row per year: hectares per AOI and the total mapped area;
- ``reports/changes.csv`` — year-over-year change per AOI and total: ha before/after, change
  in ha and in % (empty % when the earlier year had 0 ha);
- ``reports/change_maps.csv`` — hectares newly mined / no longer mined / stable per year pair;
- ``reports/scenes.csv`` — every scene with its status, hectares, time and error;
- ``reports/chart_aois.png`` (area per AOI per year, like the study's figures 7–8) and
  ``reports/chart_total.png`` (total per year with the year-over-year change);
- ``report.html`` — a single self-contained page (tables, charts and map previews inline as
  base64 ``data:`` URIs, no script, no external resource) that opens offline in any browser.

Every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._io import atomic_output
from ..raster import thumbnail
from .config import MonitorConfig
from .layout import REPORTS_DIR, MonitorLayout
from .ledger import Ledger
from .legend import CHANGE_COLORS, CLASS_NAMES, MASK_COLORS

TOTAL = "Total mapped area"

# Colour cycle of the charts (colour-blind safe, Okabe–Ito).
_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def yearly_table(
    led: Any, order: list[str] | None = None
) -> tuple[list[int], list[str], dict[int, dict[str, float]]]:
    """Years, AOI names (in ``order``, e.g. the AOI file's, then any others) and
    ``{year: {aoi | TOTAL: ha}}`` from the ledger."""
    years_rows = led.years()
    areas = led.year_areas()
    present = {n for row in areas.values() for n in row}
    names: list[str] = [n for n in dict.fromkeys(order or []) if n in present]
    table: dict[int, dict[str, float]] = {}
    for r in years_rows:
        y = r["year"]
        row = dict(areas.get(y, {}))
        for n in row:
            if n not in names:
                names.append(n)
        row[TOTAL] = float(r["total_ha"])
        table[y] = row
    return [r["year"] for r in years_rows], names, table


def change_rows(years: list[int], names: list[str], table: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """Year-over-year change per area (AOIs and total) between consecutive years.

    ``change_pct`` is None when the earlier year had no mined area (a percentage of 0 is undefined).

    Example:
        >>> change_rows([2018, 2019], ["A"], {2018: {"A": 10.0, TOTAL: 10.0}, 2019: {"A": 14.0, TOTAL: 14.0}})[0]
        {'area': 'A', 'from_year': 2018, 'to_year': 2019, 'from_ha': 10.0, 'to_ha': 14.0, 'change_ha': 4.0, 'change_pct': 40.0}
    """
    out = []
    for y0, y1 in zip(years, years[1:], strict=False):
        for n in [*names, TOTAL]:
            a, b = table[y0].get(n, 0.0), table[y1].get(n, 0.0)
            out.append({
                "area": n, "from_year": y0, "to_year": y1, "from_ha": a, "to_ha": b,
                "change_ha": b - a, "change_pct": (100.0 * (b - a) / a) if a > 0 else None,
            })
    return out


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
    years, names, table = yearly_table(led, [a.name for a in aois])
    changes = change_rows(years, names, table)
    scenes = [r for r in led.scenes() if r["key"] in keys]
    change_maps = led.changes()
    paths = layout.report_files()
    _csv(paths["yearly_csv"], ["year", *names, TOTAL.lower().replace(" ", "_")],
         [[y, *(_r(table[y].get(n, 0.0)) for n in names), _r(table[y][TOTAL])] for y in years])
    _csv(paths["changes_csv"], ["area", "from_year", "to_year", "from_ha", "to_ha", "change_ha", "change_pct"],
         [[c["area"], c["from_year"], c["to_year"], _r(c["from_ha"]), _r(c["to_ha"]), _r(c["change_ha"]),
           "" if c["change_pct"] is None else round(c["change_pct"], 2)] for c in changes])
    cm_rows = []
    for r in change_maps:
        ha = json.loads(r["stats"])["hectares"]
        cm_rows.append([r["from_year"], r["to_year"], *(_r(ha[CLASS_NAMES[k]]) for k in sorted(CLASS_NAMES)), r["raster"]])
    _csv(paths["change_maps_csv"],
         ["from_year", "to_year", *(CLASS_NAMES[k].replace(" ", "_") + "_ha" for k in sorted(CLASS_NAMES)), "raster"],
         cm_rows)
    _csv(paths["scenes_csv"],
         ["date", "scene", "s1", "status", "mined_ha", "nodata_share", "seconds", "attempts", "bundle_id", "sha256", "error"],
         [[r["date"], r["path"], r["s1_path"] or "", r["status"], "" if r["total_ha"] is None else _r(r["total_ha"]),
           "" if r["nodata_share"] is None else round(r["nodata_share"], 4),
           "" if r["seconds"] is None else round(r["seconds"], 2), r["attempts"], r["bundle_id"], r["sha256"],
           r["error"] or ""] for r in scenes])
    charts = _charts(years, names, table, paths["chart_aois"], paths["chart_total"])
    previews = _previews(layout, led, aois)
    page = render_html(cfg, years, names, table, changes, scenes, change_maps, charts, previews, led)
    with atomic_output(paths["html"]) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return paths


# -- files -------------------------------------------------------------------------------------


def _r(v: float) -> float:
    return round(float(v), 4)


def _csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)


def _charts(
    years: list[int], names: list[str], table: dict[int, dict[str, float]], p_aois: Path, p_total: Path
) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False})
    # Area per AOI per year: grouped bars, one group per year (the study's figures 7–8).
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    n = max(1, len(names))
    width = 0.8 / n
    x = np.arange(len(years))
    for i, name in enumerate(names):
        vals = [table[y].get(name, 0.0) for y in years]
        ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=name, color=_PALETTE[i % len(_PALETTE)])
    ax.set_xticks(x, [str(y) for y in years])
    ax.set_ylabel("mined area (ha)")
    ax.set_title("Mined area per area of interest and year")
    ax.grid(axis="y", alpha=0.3)
    if names:
        ax.legend(frameon=False, fontsize=8, ncol=min(4, n), loc="upper left", bbox_to_anchor=(0, -0.12))
    fig.tight_layout()
    out["aois"] = _save(fig, p_aois)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=110)
    tot = [table[y][TOTAL] for y in years]
    bars = ax.bar([str(y) for y in years], tot, color="#5C3A21", width=0.6)
    for i, b in enumerate(bars):
        label = f"{tot[i]:,.1f} ha"
        if i > 0 and tot[i - 1] > 0:
            label += f"\n{100 * (tot[i] - tot[i - 1]) / tot[i - 1]:+.1f} %"
        ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("mined area (ha)")
    ax.set_title("Total mined area per year (whole mapped extent)")
    ax.margins(y=0.25)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out["total"] = _save(fig, p_total)
    plt.close(fig)
    return out


def _save(fig: Any, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return data


def _previews(layout: MonitorLayout, led: Ledger, aois: list[Any]) -> dict[str, list[tuple[str, bytes]]]:
    """Small PNG previews of the yearly composites and change maps, AOI outlines drawn on."""
    res: dict[str, list[tuple[str, bytes]]] = {"years": [], "changes": []}
    for r in led.years():
        p = layout.path(r["composite"])
        if p.is_file():
            res["years"].append((str(r["year"]), _preview_png(p, MASK_COLORS, aois)))
    for r in led.changes():
        p = layout.path(r["raster"])
        if p.is_file():
            res["changes"].append((f"{r['from_year']} → {r['to_year']}", _preview_png(p, CHANGE_COLORS, aois)))
    return res


def _preview_png(path: Path, colors: dict[int, tuple[int, int, int, int]], aois: list[Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from rasterio.warp import transform_geom

    arr = thumbnail(path)
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[:] = (255, 255, 255, 0)
    for k, c in colors.items():
        lut[k] = c
    rgba = lut[arr]
    with rasterio.open(path) as ds:
        b, crs = ds.bounds, ds.crs
    fig = plt.figure(figsize=(2.6, 2.6 * arr.shape[0] / max(1, arr.shape[1])), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(rgba, extent=(b.left, b.right, b.bottom, b.top), interpolation="nearest")
    for a in aois:
        try:
            g = transform_geom(a.crs, crs, a.geometry) if a.crs != crs else a.geometry
        except Exception:  # an AOI that cannot be projected is simply not drawn
            continue
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        for poly in polys:
            ring = np.asarray(poly[0])
            ax.plot(ring[:, 0], ring[:, 1], color="#0072B2", lw=1.0)
    ax.set_xlim(b.left, b.right)
    ax.set_ylim(b.bottom, b.top)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# -- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font-family:"Segoe UI",Helvetica,Arial,sans-serif;color:#222;margin:0;background:#f4f2ee}
main{max-width:1080px;margin:0 auto;padding:24px 32px 48px;background:#fff}
header{border-bottom:3px solid #5c3a21;margin-bottom:16px}
h1{font-size:26px;margin:8px 0 4px}
.sub{color:#666;margin:0 0 12px;font-size:14px}
h2{font-size:19px;margin:30px 0 8px;color:#5c3a21}
p.note{color:#555;font-size:13px;margin:4px 0 10px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:14px 0}
.card{flex:1 1 180px;border:1px solid #ddd;border-radius:6px;padding:10px 14px;background:#faf9f7}
.card .k{font-size:12px;color:#666;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:24px;font-weight:600;margin-top:2px}
.card .s{font-size:13px;color:#555}
.up{color:#b2182b}.down{color:#1a7837}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px;width:100%}
th,td{border-bottom:1px solid #e3e0da;padding:5px 8px;text-align:right}
th{background:#efebe4;font-weight:600}
th:first-child,td:first-child{text-align:left}
tr.total td{font-weight:600;border-top:2px solid #bbb}
td small{color:inherit;opacity:.85}
td.failed{color:#b2182b;font-weight:600}td.done{color:#1a7837}
img.chart{max-width:100%;display:block;margin:6px 0}
.maps{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;text-align:center;font-size:12px;color:#444}
figure img{border:1px solid #ccc;width:240px;height:auto;display:block}
.legend{font-size:12px;color:#444;margin:4px 0 10px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px -2px 12px;border:1px solid #999}
footer{margin-top:36px;font-size:12px;color:#777;border-top:1px solid #ddd;padding-top:10px}
td.err{text-align:left;color:#b2182b;max-width:360px}
@media print{body{background:#fff}main{padding:0}}
"""


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt_ha(v: float | None) -> str:
    return "–" if v is None else f"{v:,.1f}"


def _fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1f} %"


def _legend(colors: dict[int, tuple[int, int, int, int]], labels: dict[int, str]) -> str:
    return '<div class="legend">' + "".join(
        f'<span style="background:rgb{colors[k][:3]}"></span>{html.escape(labels[k])}' for k in labels
    ) + "</div>"


def render_html(
    cfg: Any, years: list[int], names: list[str], table: dict[int, dict[str, float]],
    changes: list[dict[str, Any]], scenes: list[Any], change_maps: list[Any],
    charts: dict[str, bytes], previews: dict[str, list[tuple[str, bytes]]], led: Any,
) -> str:
    """The self-contained HTML report (no script, no external resource)."""
    e = html.escape
    rule_text = {
        "max_extent": "maximum extent: a pixel counts as mined in a year if any valid scene of that year shows it mined",
        "median": "median: mined where at least half of the year's valid observations show a mine",
        "majority": "majority: mined where more than half of the year's valid observations show a mine",
        "latest": "latest: the most recent valid observation of each pixel in the year",
    }[cfg.yearly_rule]
    n_done = sum(1 for s in scenes if s["status"] == "done")
    n_failed = sum(1 for s in scenes if s["status"] == "failed")
    bundle_ids = sorted({s["bundle_id"] for s in scenes if s["bundle_id"]})
    parts: list[str] = []
    parts.append(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(cfg.title)} — mined area report</title><style>{_CSS}</style></head><body><main>"
    )
    span = f"{years[0]}–{years[-1]}" if years else "no years yet"
    parts.append(
        f"<header><h1>{e(cfg.title)}</h1><p class=\"sub\">Open-pit coal mining: mined area per year, {span}. "
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from {n_done} processed scene"
        f"{'s' if n_done != 1 else ''}.</p></header>"
    )
    # key figures
    if years:
        last = years[-1]
        cards = [("Mined area " + str(last), f"{table[last][TOTAL]:,.1f} ha", "", "whole mapped extent")]
        if len(years) > 1:
            prev = years[-2]
            d = table[last][TOTAL] - table[prev][TOTAL]
            pct = (100 * d / table[prev][TOTAL]) if table[prev][TOTAL] > 0 else None
            cls = "up" if d > 0 else "down" if d < 0 else ""
            cards.append((f"Change {prev} → {last}", f"{d:+,.1f} ha", cls, _fmt_pct(pct)))
            first = years[0]
            d0 = table[last][TOTAL] - table[first][TOTAL]
            p0 = (100 * d0 / table[first][TOTAL]) if table[first][TOTAL] > 0 else None
            cards.append((f"Change since {first}", f"{d0:+,.1f} ha", "up" if d0 > 0 else "down" if d0 < 0 else "",
                          _fmt_pct(p0)))
        cards.append(("Scenes", f"{n_done} done", "up" if n_failed else "",
                      f"{n_failed} failed" if n_failed else "none failed"))
        parts.append('<div class="cards">' + "".join(
            f'<div class="card"><div class="k">{e(k)}</div><div class="v {c}">{e(v)}</div>'
            f'<div class="s">{e(sub)}</div></div>' for k, v, c, sub in cards
        ) + "</div>")
    else:
        parts.append("<p>No scene has been processed successfully yet, so there are no yearly figures.</p>")

    # yearly table: areas as rows, years as columns (how the study's tables read)
    if years:
        parts.append("<h2>Mined area per year (hectares)</h2>")
        parts.append(f'<p class="note">Yearly rule: {e(rule_text)}. {e(TOTAL)} covers the whole '
                     "mapped extent, including land outside the areas of interest.</p>")
        head = "".join(f"<th>{y}</th>" for y in years)
        rows = []
        for n in names:
            rows.append(f"<tr><td>{e(n)}</td>" + "".join(f"<td>{_fmt_ha(table[y].get(n, 0.0))}</td>" for y in years) + "</tr>")
        rows.append(f'<tr class="total"><td>{e(TOTAL)}</td>' + "".join(
            f"<td>{_fmt_ha(table[y][TOTAL])}</td>" for y in years) + "</tr>")
        parts.append(f"<table><thead><tr><th>Area</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        parts.append(f'<img class="chart" alt="Mined area per AOI and year" src="{_b64(charts["aois"])}">')
        parts.append(f'<img class="chart" alt="Total mined area per year" src="{_b64(charts["total"])}">')

    if changes:
        parts.append("<h2>Year-over-year change</h2>")
        pairs = list(zip(years, years[1:], strict=False))
        areas = [*names, TOTAL]
        head = "".join(f"<th>{e(n)}</th>" for n in areas)
        by = {(c["area"], c["from_year"]): c for c in changes}
        rows = []
        for a, b in pairs:
            cells = []
            for n in areas:
                c = by[(n, a)]
                cls = "up" if c["change_ha"] > 0 else "down" if c["change_ha"] < 0 else ""
                cells.append(f'<td class="{cls}">{c["change_ha"]:+,.1f} ha<br><small>{_fmt_pct(c["change_pct"])}</small></td>')
            rows.append(f"<tr><td>{a} → {b}</td>{''.join(cells)}</tr>")
        parts.append(f"<table><thead><tr><th>Years</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        parts.append('<p class="note">Change in hectares and, below it, in percent of the earlier year '
                     "(“–” where the earlier year had no mined area). Red: more mined land, green: less.</p>")

    if change_maps:
        parts.append("<h2>Where the change happened</h2>")
        head = "".join(f"<th>{e(CLASS_NAMES[k])} (ha)</th>" for k in (1, 2, 3))
        rows = []
        for r in change_maps:
            ha = json.loads(r["stats"])["hectares"]
            rows.append(f"<tr><td>{r['from_year']} → {r['to_year']}</td>" + "".join(
                f"<td>{_fmt_ha(ha[CLASS_NAMES[k]])}</td>" for k in (1, 2, 3)) + f"<td>{e(r['raster'])}</td></tr>")
        parts.append(f"<table><thead><tr><th>Years</th>{head}<th>Change raster (COG)</th></tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table>")
        parts.append(_legend(CHANGE_COLORS, {k: CLASS_NAMES[k] for k in (1, 2, 3, 0)}))
        parts.append('<div class="maps">' + "".join(
            f'<figure><img alt="change {e(t)}" src="{_b64(png)}"><figcaption>{e(t)}</figcaption></figure>'
            for t, png in previews["changes"]) + "</div>")
    if previews["years"]:
        parts.append("<h2>Yearly mine maps</h2>")
        parts.append(_legend(MASK_COLORS, {1: "mined", 0: "not mined"})
                     + '<p class="note">Blue outlines: areas of interest.</p>')
        parts.append('<div class="maps">' + "".join(
            f'<figure><img alt="mine map {e(t)}" src="{_b64(png)}"><figcaption>{e(t)}</figcaption></figure>'
            for t, png in previews["years"]) + "</div>")

    parts.append("<h2>Scenes</h2>")
    rows = []
    for s in scenes:
        st = s["status"]
        secs = "–" if s["seconds"] is None else f"{s['seconds']:.1f} s"
        rows.append(
            f"<tr><td>{e(s['date'])}</td><td style=\"text-align:left\">{e(Path(s['path']).name)}</td>"
            f'<td class="{st}">{e(st)}</td><td>{_fmt_ha(s["total_ha"])}</td>'
            f"<td>{secs}</td>"
            f"<td class=\"err\">{e(s['error'] or '')}</td></tr>"
        )
    parts.append("<table><thead><tr><th>Date</th><th style=\"text-align:left\">Scene</th><th>Status</th>"
                 f"<th>Mined (ha)</th><th>Time</th><th style=\"text-align:left\">Error</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    parts.append(
        f"<footer>Model bundle: {e(', '.join(bundle_ids) or '–')} · yearly rule: {e(cfg.yearly_rule)} · "
        f"areas of interest: {e(os.path.basename(str(cfg.aois)))} · ledger: {e(str(led.path))} · "
        f"coalmine {e(__version__)}. Tables as CSV in {REPORTS_DIR}/. "
        "Contains modified Copernicus Sentinel data where real scenes are used.</footer>"
    )
    parts.append("</main></body></html>\n")
    return "".join(parts)
