"""``compositing = "input"``: one cloud-free composite per year from all its acquisitions, mapped once.

Instead of mapping every scene and combining the yearly masks, the monitor builds, for each
year, the composite of all the year's Sentinel-2 scenes and Sentinel-1 acquisitions
(:func:`~coalmine.runtime.preprocess.prepare_composite.prepare_composite`) on one grid over the
AOIs' extent -- every acquisition that intersects it contributes, across Sentinel-2 tiles, UTM
zones and Sentinel-1 frames -- and maps it with coal-run.

**The ledger keys a year by the set of its inputs.** A year is one row of the ledger's scene
table (key ``composite:<year>``) whose fingerprint is the SHA-256 over its inputs' paths and
content hashes (each hashed only when its size or mtime changed, remembered in
``input_stats``), the grid and the composite settings. A new acquisition of 2023 changes 2023's
fingerprint and nothing else, so only 2023 is rebuilt. The row goes through the same states as a
scene (pending, running, done, failed) and is completed in one transaction after its folder
has been renamed into place, so a killed run resumes without losing or double counting a year.

**One task per year.** A year is a :class:`~.pipeline.SceneTask` whose runner is
:func:`run_year_composite` (composite, then coal-run on it, into the temporary folder
:func:`~.pipeline.process_scene` swaps into place), so the local and the Dask executors run it
as they run a scene: one year, one task.

**Few clear observations.** The yearly record keeps how many acquisitions the year used and the
share of its mapped area resting on fewer than three clear Sentinel-2 observations; the report
names the years where that share is large.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..raster import NODATA, Grid, open_on_grid, read_mask, write_uint8_cog
from ..scenes import SceneSpec
from .backdrop import write_truecolour
from .config import MonitorConfig, date_from_name
from .layout import MonitorLayout
from .ledger import InputStat, Ledger, fingerprint, plan_row
from .legend import MASK_COLORS
from .models import ModelSet
from .pipeline import SceneTask

log = logging.getLogger("coalmine.monitor")

#: Ledger key prefix of a year's composite.
KEY_PREFIX = "composite:"
#: The runner that composites and maps one year.
YEAR_RUNNER = "coalmine.runtime.monitor.composites:run_year_composite"
#: A year "rests on few clear observations" when more than this share of its mapped area has
#: fewer than ``FEW_OBSERVATIONS`` (3) clear Sentinel-2 observations.
FEW_OBSERVATIONS_SHARE = 0.10
#: The rule name recorded for such years (the ``rule`` column of the years table).
RULE = "input composite"


@dataclass(frozen=True)
class YearInputs:
    """The acquisitions of one year."""

    year: int
    s2: tuple[Path, ...]
    s1: tuple[Path, ...]
    last: dt.date

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}{self.year}"


def year_inputs(cfg: MonitorConfig, specs: list[SceneSpec]) -> dict[int, YearInputs]:
    """The Sentinel-2 scenes of each year, and its Sentinel-1 acquisitions: every scene's partner
    and every file of a ``[[search]]``'s ``s1_folder`` dated in that year."""
    s2: dict[int, list[Path]] = {}
    s1: dict[int, set[Path]] = {}
    last: dict[int, dt.date] = {}
    for sp in specs:
        assert sp.date is not None
        s2.setdefault(sp.year, []).append(sp.path)
        if sp.s1 is not None:
            s1.setdefault(sp.year, set()).add(Path(sp.s1))
        last[sp.year] = max(last.get(sp.year, sp.date), sp.date)
    for se in cfg.searches:
        if se.s1_folder is None or not se.s1_folder.is_dir():
            continue
        for p in se.s1_folder.glob(se.s1_glob):
            d = date_from_name(p.name, se.s1_date_pattern or se.date_pattern)
            if d is not None and d.year in s2 and not p.name.startswith("."):
                s1.setdefault(d.year, set()).add(p.absolute())
    return {y: YearInputs(y, tuple(sorted(s2[y], key=str)), tuple(sorted(s1.get(y, ()), key=str)), last[y])
            for y in sorted(s2)}


def output_grid(cfg: MonitorConfig) -> Grid:
    """The grid every year is composited on: the AOIs' extent (``[composite]`` crs, res)."""
    from ..preprocess.prepare_composite import aoi_grid

    return aoi_grid(cfg.aois, cfg.composite.get("crs"), float(cfg.composite.get("res", 10.0)))


def settings(cfg: MonitorConfig, grid: Grid) -> dict[str, Any]:
    """What the composite of a year depends on besides its inputs (recorded with the run options)."""
    from ..preprocess.composite import DEFAULT_DILATION

    return {"dilation": int(cfg.composite.get("dilation", DEFAULT_DILATION)), "grid": grid.key()}


def plan_years(cfg: MonitorConfig, led: Ledger, layout: MonitorLayout, specs: list[SceneSpec], bundle_id: str,
               retry_failed: bool, models: ModelSet,
               ) -> tuple[list[tuple[SceneSpec, str, bool, dict[str, Any]]], dict[int, YearInputs], Grid]:
    """Decide for each year whether this run (re)builds its composite, and why (the reasons of a
    scene, with "inputs changed" for a changed set of acquisitions; see ``scheduler.plan``).

    Returns:
        ((spec, reason, process?, ledger row) per year, the inputs of each year, the grid).
    """
    grid = output_grid(cfg)
    years = year_inputs(cfg, specs)
    options = json.dumps({"run": cfg.run, "composite": settings(cfg, grid)}, sort_keys=True)
    paths = sorted({str(p) for y in years.values() for p in (*y.s2, *y.s1)})
    known = led.input_stats(paths)
    stats: dict[str, InputStat] = {p: fingerprint(Path(p), known.get(p)) for p in paths}
    led.save_input_stats({p: st for p, st in stats.items() if known.get(p) != st})
    items = []
    for y, inp in years.items():
        files = [("s2", str(p)) for p in inp.s2] + [("s1", str(p)) for p in inp.s1]
        fp = hashlib.sha256(json.dumps([[k, p, stats[p].sha256] for k, p in files]).encode()).hexdigest()
        prev = led.scene(inp.key)
        stack = layout.composite_dir(y) / f"composite_{y}.tif"
        row = {
            "key": inp.key, "path": str(stack), "s1_path": None, "date": inp.last.isoformat(), "year": y,
            "size": sum(stats[p].size for _, p in files), "mtime_ns": max(stats[p].mtime_ns for _, p in files),
            "nfiles": len(files), "sha256": fp, "bundle_id": bundle_id, "options": options,
            "model_state": models.state,
        }
        change = "inputs changed" if prev is not None and prev["sha256"] != fp else None
        reason, process, row["attempts"] = plan_row(prev, change, bundle_id=bundle_id, options=options,
                                                    models=models, layout=layout, retry_failed=retry_failed,
                                                    max_attempts=cfg.max_attempts)
        spec = SceneSpec(path=stack, date=inp.last)
        items.append((spec, reason, process, row))
        log.debug("%d: %d Sentinel-2 and %d Sentinel-1 acquisitions", y, len(inp.s2), len(inp.s1))
    return items, years, grid


def year_task(cfg: MonitorConfig, layout: MonitorLayout, item: Any, inputs: YearInputs, grid: Grid) -> SceneTask:
    """The task that composites and maps one year (a SceneTask run by :func:`run_year_composite`)."""
    y = inputs.year
    composite = {
        "year": y, "s2": [str(p) for p in inputs.s2], "s1": [str(p) for p in inputs.s1],
        "crs": grid.crs.to_wkt(), "transform": list(grid.transform)[:6], "width": grid.width,
        "height": grid.height, "dilation": settings(cfg, grid)["dilation"],
        "memory": cfg.composite.get("memory"),
    }
    return SceneTask(
        key=inputs.key, scene=item.row["path"], date=item.row["date"], bundle=str(cfg.bundle),
        out_dir=str(layout.composite_dir(y)), prefix=f"composite_{y}", token=uuid.uuid4().hex[:12],
        aois=str(cfg.aois), aoi_name_field=cfg.aoi_name_field, s1=None,
        options={**cfg.run, "composite": composite}, runner=YEAR_RUNNER,
    )


def run_year_composite(scene: str, bundle: str, out_dir: str | Path, *, composite: dict[str, Any],
                       s1: str | None = None, aoi: str | None = None, aoi_name_field: str | None = None,
                       prefix: str = "composite", progress: bool = False, **options: Any) -> dict[str, Any]:
    """Worker side: composite one year's acquisitions into ``out_dir`` and map the composite.

    Args:
        scene: the composite's final path (names the task; the stack is written into ``out_dir``).
        bundle: the model bundle (its preprocessing makes the composite).
        out_dir: the (temporary) folder for the stack, its quality COG and coal-run's outputs.
        composite: the year, its acquisitions, the grid and the settings (see :func:`year_task`).
        options: the ``[run]`` settings; the input ones (``s2_offset``, ``s1_units``, ``dem``,
            ``orbit``) go to the composite, ``scl`` is refused (every acquisition is masked by its
            own SCL).

    Returns:
        coal-run's summary, with the composite and its quality file among the outputs.
    """
    from affine import Affine
    from rasterio.crs import CRS

    from ..bundle import load_bundle
    from ..errors import ConfigError
    from ..preprocess.prepare_composite import (
        DEFAULT_MEMORY,
        parse_memory,
        prepare_composite,
        quality_path,
    )
    from ..run import run_scene

    if options.get("scl") is not None:
        raise ConfigError("run.scl: with compositing = \"input\" every acquisition is masked by its own SCL; "
                          "remove scl from [run]")
    b = load_bundle(bundle)
    grid = Grid(CRS.from_wkt(composite["crs"]), Affine(*composite["transform"]), int(composite["width"]),
                int(composite["height"]))
    stack = Path(out_dir) / f"{prefix}.tif"
    inputs = {k: options.pop(k) for k in ("s2_offset", "s1_units", "dem", "orbit") if k in options}
    options.pop("scl", None)
    memory = composite.get("memory")
    prepare_composite(composite["s2"], composite["s1"], stack, b.preprocessing, grid=grid,
                      dilation=int(composite["dilation"]), skip_disjoint=True, progress=progress,
                      memory=DEFAULT_MEMORY if memory is None else parse_memory(memory), **inputs)
    summary = run_scene(stack, b, out_dir, aoi=aoi, aoi_name_field=aoi_name_field, prefix=prefix,
                        progress=progress, **options)
    summary["outputs"] = {**summary["outputs"], "composite": str(stack), "quality": str(quality_path(stack))}
    return summary


def update_composite_years(cfg: MonitorConfig, led: Ledger, layout: MonitorLayout, keys: set[str],
                           aois: list[Any]) -> list[int]:
    """Register each done year's map as that year's composite mask (``yearly/mask_<year>.tif``), its
    hectares, model and what it rests on; a year whose composite had no valid pixel (``nodata``)
    without composite and hectares; years whose record is current are left alone.

    Returns:
        The years that have a composite, ascending.
    """
    from ..areas import mask_areas_ha
    from ..preprocess.prepare_composite import COMPOSITE_TAG

    done = [r for r in led.scenes("done") if r["key"] in keys]
    empty = [r for r in led.scenes("nodata") if r["key"] in keys]
    existing = {r["year"]: r for r in led.years()}
    names = [a.name for a in aois]
    for r in empty:
        fp = hashlib.sha256(json.dumps(["nodata", RULE, r["sha256"], names]).encode()).hexdigest()
        old = existing.get(r["year"])
        if old is None or old["fingerprint"] != fp:
            areas = {"total": None, "aois": dict.fromkeys(names), "aoi_valid_share": dict.fromkeys(names, 0.0)}
            led.set_year(r["year"], RULE, fp, 0, None, areas, 0.0, [], observations={"few": False})
    grid = None
    for r in done:
        outputs = json.loads(r["outputs"])
        folder = layout.path(outputs["folder"])
        fp = hashlib.sha256(json.dumps([RULE, r["sha256"], r["bundle_id"], r["options"], r["finished"],
                                        r["model_file"], r["model_sha256"], names]).encode()).hexdigest()
        target = layout.yearly_mask(r["year"])
        old = existing.get(r["year"])
        picture = layout.truecolour(r["year"])
        if old is not None and old["fingerprint"] == fp and target.is_file():
            if not picture.is_file():  # a picture lost since: draw it again
                _draw_picture(folder, outputs, Grid.of(target), picture)
            continue
        mask = folder / outputs["mask"]
        grid = grid or Grid.of(mask)
        picture.unlink(missing_ok=True)
        _draw_picture(folder, outputs, grid, picture)
        path, valid = _copy_mask(mask, grid, target)
        areas = mask_areas_ha(path, aois)
        obs = _observations(folder, outputs, COMPOSITE_TAG)
        model = [{"file": r["model_file"], "sha256": r["model_sha256"], "precision": r["precision"],
                  "backend": r["backend"], "scenes": 1}]
        led.set_year(r["year"], RULE, fp, int(obs.get("s2_acquisitions") or 0), layout.rel(target), areas, valid,
                     model, observations=obs)
    led.drop_years_except({r["year"] for r in (*done, *empty)})
    return sorted(r["year"] for r in done)


def _draw_picture(folder: Path, outputs: dict[str, str], grid: Grid, target: Path) -> None:
    """The year's true-colour picture behind the report's maps, from its composite's
    B04/B03/B02 (a composite has no clearest scene to draw it from)."""
    if outputs.get("composite") and (folder / outputs["composite"]).is_file():
        write_truecolour(folder / outputs["composite"], grid, target)


def _copy_mask(mask: Path, grid: Grid, target: Path) -> tuple[Path, float]:
    """The year's map as its yearly mask (the COG every year has: 0/1, 255 nodata, colours);
    returns it and its valid share."""
    valid_px = 0
    with open_on_grid(mask, grid) as ds:

        def fill(w: Any) -> Any:
            nonlocal valid_px
            a = read_mask(ds, w)
            valid_px += int((a != NODATA).sum())
            return a

        path = write_uint8_cog(target, grid, fill, MASK_COLORS, description="mine",
                               tags={"COALMINE_YEARLY_RULE": RULE})
    return path, valid_px / float(grid.width * grid.height)


def _observations(folder: Path, outputs: dict[str, str], tag: str) -> dict[str, Any]:
    """What a year rests on: acquisitions, spread of clear observations, share of the mapped area
    on few observations (from the composite's tag and coal-run's summary)."""
    import rasterio

    obs: dict[str, Any] = {}
    if outputs.get("composite") and (folder / outputs["composite"]).is_file():
        with rasterio.open(folder / outputs["composite"]) as ds:
            c = json.loads(ds.tags().get(tag, "{}"))
        obs.update(s2_acquisitions=c.get("s2_acquisitions"), s1_acquisitions=c.get("s1_acquisitions"),
                   clear_observations=c.get("clear_observations"), few_observations=c.get("few_observations"))
    if outputs.get("summary") and (folder / outputs["summary"]).is_file():
        support = json.loads((folder / outputs["summary"]).read_text(encoding="utf-8")).get("observations") or {}
        obs.update(mapped_share_below=support.get("share_below"), mapped_ha_below=support.get("mapped_ha_below"))
    share = obs.get("mapped_share_below")
    obs["few"] = bool(share is not None and share > FEW_OBSERVATIONS_SHARE)
    return obs
