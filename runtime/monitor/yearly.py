"""Yearly composites: several scene masks of one year → one mask, then hectares per AOI.

The rule is chosen in the configuration (``yearly_rule``); all work per pixel on the
scenes' 0/1 masks, ignoring nodata (clouds, scene edges):

``max_extent`` (default)
    Mined if ANY valid scene of the year shows it mined (the union); valid where any scene
    is valid. The study's yearly figure is the extent mined at some point in the year, and
    one cloudy scene cannot erase a pit another scene saw.
``median``
    Mined where at least half of the valid observations say mined (the median of the 0/1
    values, ties counted as mined). Robust to one false detection among several scenes.
``majority``
    Mined where strictly more than half of the valid observations say mined (ties not mined).
``latest``
    The most recent valid observation of each pixel (state at the end of the year).

With one scene per year every rule gives that scene's mask. The composite is written on
one reference grid (the grid of the earliest processed scene); masks on another grid are
read onto it with nearest-neighbour resampling.

Hectares and the valid share of the composite are measured in total and per AOI; where an AOI
has no valid pixel its hectares are None (no data, never 0 ha). A year whose scenes all had no
valid pixel (``nodata`` in the ledger) is registered without a composite and without hectares.
Each year also records the models (file, SHA-256, precision, backend) its scenes were mapped by,
and gets a true-colour picture of its clearest scene (:mod:`.backdrop`) for the maps.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from ..areas import mask_areas_ha
from ..errors import UsageError
from ..raster import NODATA, Grid, open_on_grid, read_mask, write_uint8_cog
from .backdrop import write_truecolour
from .config import YEARLY_RULES, MonitorConfig
from .layout import MonitorLayout
from .ledger import Ledger, hash_input
from .legend import MASK_COLORS


def combine(masks: np.ndarray, rule: str) -> np.ndarray:
    """Combine a stack of masks (n, rows, cols) uint8 (0/1, 255 nodata) by ``rule``.

    The stack must be in date order (``latest`` takes the last valid value).

    Returns:
        uint8 (rows, cols): 0/1, 255 where no scene is valid.

    Raises:
        UsageError: unknown rule.

    Example:
        >>> m = np.array([[[1, 0, 255]], [[0, 0, 255]]], dtype=np.uint8)
        >>> combine(m, "max_extent").tolist(), combine(m, "majority").tolist()
        ([[1, 0, 255]], [[0, 0, 255]])
    """
    if rule not in YEARLY_RULES:
        raise UsageError(f"yearly rule '{rule}' is unknown; use one of {', '.join(YEARLY_RULES)}")
    valid = masks != NODATA
    nvalid = valid.sum(axis=0)
    nmine = (masks == 1).sum(axis=0)
    if rule == "max_extent":
        mine = nmine > 0
    elif rule == "median":
        mine = 2 * nmine >= nvalid
    elif rule == "majority":
        mine = 2 * nmine > nvalid
    else:  # latest: index of the last valid layer
        last = masks.shape[0] - 1 - np.argmax(valid[::-1], axis=0)
        mine = np.take_along_axis(masks, last[None], axis=0)[0] == 1
    out = np.where(mine, 1, 0).astype(np.uint8)
    out[nvalid == 0] = NODATA
    return out


def write_composite(
    masks: Sequence[str | os.PathLike[str]], rule: str, grid: Grid, target: str | os.PathLike[str]
) -> tuple[Path, float]:
    """Compose the year's scene masks (in date order) on ``grid`` into a COG at ``target``.

    Returns:
        (path, valid_share): the composite and the share of the grid with a valid value.

    Raises:
        UsageError: unknown rule. RasterError: a mask cannot be read.

    Example:
        >>> write_composite(["a_mask.tif", "b_mask.tif"], "max_extent", Grid.of("a_mask.tif"),
        ...                 "2019_mask.tif")   # doctest: +SKIP
    """
    if rule not in YEARLY_RULES:
        raise UsageError(f"yearly rule '{rule}' is unknown; use one of {', '.join(YEARLY_RULES)}")
    valid_px = 0
    with ExitStack() as stack:
        dss = [stack.enter_context(open_on_grid(m, grid)) for m in masks]

        def fill(w: Window) -> np.ndarray:
            nonlocal valid_px
            out = combine(np.stack([read_mask(ds, w) for ds in dss]), rule)
            valid_px += int((out != NODATA).sum())
            return out

        path = write_uint8_cog(
            target, grid, fill, MASK_COLORS, description="mine",
            tags={"COALMINE_YEARLY_RULE": rule, "COALMINE_N_SCENES": str(len(masks))},
        )
    return path, valid_px / float(grid.width * grid.height)


def update_years(
    cfg: MonitorConfig, led: Ledger, layout: MonitorLayout, keys: set[str], aois: list[Any]
) -> list[int]:
    """Rebuild the composites (and their hectares per AOI) of the years whose scenes changed.

    A year's fingerprint covers its done scenes (inputs, bundle, options), the rule, the
    reference grid and the AOI file; a year whose fingerprint and composite file are
    unchanged is left alone. The composite is renamed into place before the one ledger
    transaction that registers it, so a kill at any point is repaired by the next run.

    Args:
        cfg: the configuration (yearly rule, AOI file and name field).
        led: the ledger (done scenes in, years out).
        layout: where the scene masks are and the composites go.
        keys: ledger keys of the scenes in the current configuration.
        aois: the AOIs the hectares are measured in.

    Returns:
        The years that have a composite, ascending.
    """
    done = [r for r in led.scenes("done") if r["key"] in keys]
    empty = [r for r in led.scenes("nodata") if r["key"] in keys]
    if not done:
        _register_empty_years(cfg, led, empty, aois, set())
        return []
    masks = {r["key"]: _mask_path(layout, r) for r in done}
    grid = Grid.of(masks[done[0]["key"]])  # scenes() is ordered by date, path
    aoi_fp = hash_input(cfg.aois) + "|" + str(cfg.aoi_name_field)
    by_year: dict[int, list[Any]] = {}
    for r in done:
        by_year.setdefault(r["year"], []).append(r)
    existing = {r["year"]: r for r in led.years()}
    for year, rows in sorted(by_year.items()):
        fp = hashlib.sha256(
            json.dumps(
                [cfg.yearly_rule, grid.key(), aoi_fp,
                 [[r["key"], r["date"], r["sha256"], r["s1_sha256"], r["bundle_id"], r["options"],
                   r["model_file"], r["model_sha256"]] for r in rows]]
            ).encode()
        ).hexdigest()
        target = layout.yearly_mask(year)
        old = existing.get(year)
        if old is not None and old["fingerprint"] == fp and target.is_file():
            if not layout.truecolour(year).is_file():  # a picture lost since: draw it again
                write_truecolour(clearest(rows)["path"], grid, layout.truecolour(year))
            continue
        path, valid = write_composite([masks[r["key"]] for r in rows], cfg.yearly_rule, grid, target)
        areas = mask_areas_ha(path, aois, scene=f"the {year} composite {layout.rel(target)}")
        # the picture first: the ledger registers the year only once all its files are in place
        layout.truecolour(year).unlink(missing_ok=True)
        write_truecolour(clearest(rows)["path"], grid, layout.truecolour(year))
        led.set_year(year, cfg.yearly_rule, fp, len(rows), layout.rel(target), areas, valid, year_models(rows))
    _register_empty_years(cfg, led, [r for r in empty if r["year"] not in by_year], aois, set(by_year))
    return sorted(by_year)


def clearest(rows: Sequence[Any]) -> Any:
    """The scene of a year with the largest valid share (the latest of equals): the one whose
    true-colour picture is drawn under the year's maps."""
    return max(rows, key=lambda r: (r["valid_share"] if r["valid_share"] is not None else -1.0, r["date"]))


def year_models(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The distinct models (file, SHA-256, precision, backend) of a year's scenes, with counts."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        k = (r["model_file"], r["model_sha256"], r["precision"], r["backend"])
        entry = out.setdefault(k, {"file": k[0], "sha256": k[1], "precision": k[2], "backend": k[3], "scenes": 0})
        entry["scenes"] += 1
    return list(out.values())


def _register_empty_years(
    cfg: MonitorConfig, led: Ledger, empty: list[Any], aois: list[Any], keep: set[int]
) -> None:
    """Register years whose every scene had no valid pixel: no composite, no hectares; drop the
    years that no longer have a scene."""
    by_year: dict[int, list[Any]] = {}
    for r in empty:
        by_year.setdefault(r["year"], []).append(r)
    existing = {r["year"]: r for r in led.years()}
    names = [a.name for a in aois]
    for year, rows in sorted(by_year.items()):
        fp = hashlib.sha256(json.dumps(["nodata", names, sorted(r["key"] for r in rows)]).encode()).hexdigest()
        old = existing.get(year)
        if old is None or old["fingerprint"] != fp:
            areas = {"total": None, "aois": dict.fromkeys(names), "aoi_valid_share": dict.fromkeys(names, 0.0)}
            led.set_year(year, cfg.yearly_rule, fp, len(rows), None, areas, 0.0, [])
    led.drop_years_except(keep | set(by_year))


def _mask_path(layout: MonitorLayout, row: Any) -> Path:
    outputs = json.loads(row["outputs"])
    return layout.path(outputs["folder"]) / outputs["mask"]
