"""Test data for the monitor tests (no tests here): mask series with known areas, AOIs,
an "oracle" runner that maps a scene to its known mask, config writers, and the ledger and
report content two runs are compared by.

The grid: 120 x 120 pixels of 10 m (0.01 ha each) in EPSG:32750 near Tapin. AOI "West"
covers columns 0-59, "East" columns 60-119 (given in EPSG:4326, as users do). Each scene
file IS its truth mask; the oracle runner copies it as the predicted mask, so the monitor's
bookkeeping (ledger, composites, changes, reports) is checked against areas counted here
with NumPy, independently of the code under test.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

CRS = "EPSG:32750"
ORIGIN = (300000.0, 9680040.0)
N = 120
PX_HA = 0.01
TRANSFORM = from_origin(ORIGIN[0], ORIGIN[1], 10.0, 10.0)


def mine_mask(year: int, variant: str = "") -> np.ndarray:
    """A known mask for ``year``: a western mine that grows, an eastern one that shrinks."""
    m = np.zeros((N, N), dtype=np.uint8)
    g = year - 2016
    m[10:30 + 4 * g, 10:40 + 3 * g] = 1          # West: grows every year
    e = max(8, 40 - 6 * g)
    m[60:60 + e, 70:70 + e] = 1                  # East: shrinks (reclamation)
    if variant == "b":                           # a second scene of the year: a new pit
        m[100:110, 20:35] = 1
        m[10:14, 10:20] = 0                      # and a cloud-free view shows less here
    if variant == "nodata":
        m[:, 110:] = 255
    if year % 3 == 0:                            # orbit-edge corner without data
        rr, cc = np.mgrid[0:N, 0:N]
        m[(rr + cc) < 20] = 255
    return m


def write_mask(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=N, height=N, count=1, dtype="uint8", crs=CRS,
        transform=TRANSFORM, nodata=255,
    ) as dst:
        dst.write(arr, 1)
    return path


def write_aois(path: Path, names: tuple[str | None, str | None] = ("West", "East")) -> Path:
    """Two AOIs (west/east halves of the grid), in lon/lat."""
    tr = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    feats = []
    for name, (c0, c1) in zip(names, ((0, 60), (60, 120)), strict=True):
        x0, x1 = ORIGIN[0] + c0 * 10.0, ORIGIN[0] + c1 * 10.0
        y1, y0 = ORIGIN[1], ORIGIN[1] - N * 10.0
        ring = [tr.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
        props = {} if name is None else {"name": name}
        feats.append({"type": "Feature", "properties": props,
                      "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def expected_ha(mask: np.ndarray) -> dict[str, float]:
    """Mined hectares counted directly: total and per AOI half."""
    mine = mask == 1
    return {
        "West": float(mine[:, :60].sum()) * PX_HA,
        "East": float(mine[:, 60:].sum()) * PX_HA,
        "total": float(mine.sum()) * PX_HA,
    }


def oracle_run_scene(scene: Any, bundle: Any, out_dir: Any, *, s1: Any = None, aoi: Any = None, aoi_name_field: Any = None,
                     prefix: str | None = None, progress: bool = True, **kw: Any) -> dict[str, Any]:
    """A runner with run_scene's signature whose "prediction" is the scene's own truth mask.

    A scene file whose name contains "broken" raises, like a corrupt input would.
    """
    scene = Path(scene)
    if "broken" in scene.name:
        raise ValueError(f"cannot read {scene}: not a raster")
    out = Path(out_dir) / f"{prefix}_mask.tif"
    shutil.copyfile(scene, out)
    with rasterio.open(out) as ds:
        share = float((ds.read(1) == 255).mean())
    return {"outputs": {"mask": str(out), "prob": None}, "nodata_share": share, "backend": "oracle",
            "timings": {"total": 0.0}}


def make_bundle_dir(root: Path) -> Path:
    """A minimal valid bundle.json (the oracle runner never opens the model)."""
    from coalmine.runtime import bands
    from coalmine.runtime.bundle import Bundle, Normalization, Preprocessing

    b = Bundle(path=root / "bundle", bundle_id="oracle-1", bands=bands.BAND_NAMES,
               preprocessing=Preprocessing(), normalization=Normalization.identity())
    b.save()
    return b.path


def make_mask_project(root: Path, years: range = range(2016, 2020)) -> dict[str, Any]:
    """Scenes (mask files named with their date), AOIs, bundle and a config using a folder search.

    2017 has two scenes (variants "" and "b"); 2018's second scene has a nodata stripe.
    Returns the paths and the per-scene masks.
    """
    scenes = root / "incoming"
    masks: dict[str, np.ndarray] = {}
    for y in years:
        m = mine_mask(y)
        p = write_mask(scenes / f"S2_{y}0715_scene.tif", m)
        masks[p.name] = m
        if y == 2017:
            p = write_mask(scenes / f"S2_{y}0910_scene.tif", mine_mask(y, "b"))
            masks[p.name] = mine_mask(y, "b")
    aois = write_aois(root / "aois.geojson")
    bundle = make_bundle_dir(root)
    cfg = write_config(root / "monitor.toml", extra="")
    return {"root": root, "scenes": scenes, "masks": masks, "aois": aois, "bundle": bundle, "config": cfg}


def write_config(path: Path, extra: str = "", rule: str = "max_extent") -> Path:
    path.write_text(
        'title = "Test region"\n'
        'bundle = "bundle"\naois = "aois.geojson"\noutput = "out"\n'
        f'yearly_rule = "{rule}"\n{extra}\n'
        '[[search]]\nfolder = "incoming"\nglob = "S2_*.tif"\ndate_format = "%Y%m%d"\n'
    )
    return path


def synth_config(cluster: str = "") -> str:
    """monitor.toml for a ``make_series`` folder ``series`` beside ``bundle`` and ``aois.geojson``.

    ``cluster`` is inserted as top-level TOML (e.g. a ``[cluster]`` table) before ``[run]``.
    """
    return f"""\
title = "Synthetic Tapin"
bundle = "bundle"
aois = "aois.geojson"
output = "out"
{cluster}
[run]
backend = "cpu"

[[search]]
folder = "series"
glob = "synth_*_S2"
date_regex = 'synth_(?P<year>\\d{{4}})_S2'
s1_folder = "series"
s1_glob = "synth_*_S1_VV*.tif"
s1_date_regex = 'synth_(?P<year>\\d{{4}})_S1'
"""


def ledger_state(root: Path) -> tuple[list[Any], ...]:
    """Ledger content of ``root/out`` that must not depend on where, how or in how many runs the
    scenes were processed (no timings, tokens, attempts, output folder names)."""
    con = sqlite3.connect(root / "out" / "ledger.sqlite")
    rel = str(root)  # keys are absolute input paths: compare them below the project root
    scenes = [
        (k.replace(rel, ""), st, sha, s1sha, round(ha, 6) if ha is not None else None, err,
         sorted((k2, v) for k2, v in json.loads(outs or "{}").items() if k2 != "folder"))
        for k, st, sha, s1sha, ha, err, outs in con.execute(
            "SELECT key, status, sha256, s1_sha256, total_ha, error, outputs FROM scenes ORDER BY key")
    ]
    areas = [(k.replace(rel, ""), a, round(h, 6)) for k, a, h in con.execute(
        "SELECT key, aoi, hectares FROM scene_areas ORDER BY key, aoi")]
    years = con.execute("SELECT year, n_scenes, round(total_ha, 6) FROM years ORDER BY year").fetchall()
    yareas = con.execute("SELECT year, aoi, round(hectares, 6) FROM year_areas ORDER BY year, aoi").fetchall()
    changes = con.execute("SELECT from_year, to_year, stats FROM changes ORDER BY from_year").fetchall()
    con.close()
    return scenes, areas, years, yareas, changes


def report_tables(root: Path, names: tuple[str, ...] = ("yearly_areas.csv", "changes.csv")) -> dict[str, str]:
    """The text of report CSVs under ``root/out/reports``."""
    return {n: (root / "out" / "reports" / n).read_text() for n in names}
