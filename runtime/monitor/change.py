"""Change rasters between two yearly composites (on the same grid).

Each pixel gets a change class (:mod:`.legend`: stable non-mine, newly mined, no longer mined,
stable mine, nodata where either year has none), written as a COG with a colour table so QGIS
shows it ready-styled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from ..areas import pixel_areas_ha
from ..raster import NODATA, Grid, open_on_grid, read_mask, write_uint8_cog
from .layout import MonitorLayout
from .ledger import Ledger
from .legend import CHANGE_COLORS, CLASS_NAMES


def classify(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Change class per pixel from two uint8 masks (0/1, 255 nodata).

    Example:
        >>> classify(np.array([0, 0, 1, 1, 255], np.uint8), np.array([0, 1, 0, 1, 1], np.uint8)).tolist()
        [0, 1, 2, 3, 255]
    """
    out = (before.astype(np.uint8) * 2 + after.astype(np.uint8)).astype(np.uint8)
    # 0*2+0=0 stable non-mine, 0*2+1=1 newly mined, 1*2+0=2 no longer mined, 1*2+1=3 stable mine
    out[(before == NODATA) | (after == NODATA)] = NODATA
    return out


def write_change(
    before: str | os.PathLike[str], after: str | os.PathLike[str], grid: Grid, target: str | os.PathLike[str]
) -> tuple[Path, dict[str, Any]]:
    """Write the change COG between two composites and return it with its statistics.

    Returns:
        (path, stats): stats has ``pixels`` {class name: count} and ``hectares`` {class name: ha}
        (cell areas from :func:`coalmine.runtime.areas.pixel_areas_ha`, geodesic on
        geographic grids).

    Example:
        >>> p, s = write_change("2018_mask.tif", "2019_mask.tif", grid, "change_2018_2019.tif")  # doctest: +SKIP
        >>> s["hectares"]["newly mined"]                                                        # doctest: +SKIP
    """
    counts = dict.fromkeys(CLASS_NAMES, 0)
    hectares = dict.fromkeys(CLASS_NAMES, 0.0)
    with open_on_grid(before, grid) as b, open_on_grid(after, grid) as a:

        def fill(w: Window) -> np.ndarray:
            out = classify(read_mask(b, w), read_mask(a, w))
            cell = np.broadcast_to(
                np.asarray(pixel_areas_ha(grid.crs, grid.transform, grid.height, grid.width, window=w), dtype=np.float64),
                out.shape,
            )
            for code in CLASS_NAMES:
                sel = out == code
                counts[code] += int(sel.sum())
                hectares[code] += float(cell[sel].sum())
            return out

        path = write_uint8_cog(target, grid, fill, CHANGE_COLORS, description="change")
    stats = {
        "pixels": {CLASS_NAMES[k]: v for k, v in counts.items()},
        "hectares": {CLASS_NAMES[k]: round(v, 6) for k, v in hectares.items()},
    }
    return path, stats


def update_changes(led: Ledger, layout: MonitorLayout, years: list[int]) -> list[tuple[int, int]]:
    """Rebuild the change map of each pair of consecutive years whose composites changed.

    Returns:
        The (from_year, to_year) pairs that have a change map.
    """
    rows = {r["year"]: r for r in led.years()}
    existing = {(r["from_year"], r["to_year"]): r for r in led.changes()}
    pairs = list(zip(years, years[1:], strict=False))
    for y0, y1 in pairs:
        fp = rows[y0]["fingerprint"] + "|" + rows[y1]["fingerprint"]
        target = layout.change_map(y0, y1)
        old = existing.get((y0, y1))
        if old is not None and old["fingerprint"] == fp and target.is_file():
            continue
        a, b = layout.path(rows[y0]["composite"]), layout.path(rows[y1]["composite"])
        _, stats = write_change(a, b, Grid.of(a), target)
        led.set_change(y0, y1, fp, layout.rel(target), stats)
    led.drop_changes_except(set(pairs))
    return pairs
