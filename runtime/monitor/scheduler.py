"""The coordinator of a monitoring run: lock, plan, process, compose, report.

One run:

1. takes the output folder's lock (a second run exits at once, code 75);
2. lists the configured scenes and compares each with the ledger: new, changed input
   (SHA-256, cheap size+mtime pre-check), other bundle or options, other model files (the
   rule of :mod:`.models`), interrupted earlier (``running``/``pending`` left by a killed
   run), failed with attempts left, or outputs missing → to process; everything else is
   unchanged;
3. hands the scenes to an executor (:class:`~.pipeline.LocalExecutor`, or the Dask
   executor of :mod:`.cluster`) and registers each result in one transaction as it arrives;
4. rebuilds the yearly composites and change maps whose inputs changed (:mod:`.yearly`,
   :mod:`.change`);
5. regenerates the reports from the ledger (:mod:`.reports`) and the QGIS project
   (:mod:`.qgis`).

The stages get the output folder's paths from one :class:`~.layout.MonitorLayout` and the
ledger (:mod:`.ledger`, the only module that speaks SQL); they never import this module, so
the dependencies run one way: scheduler → stages → layout, ledger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import ensure_output_dir
from ..bundle import load_bundle
from ..errors import CoalmineError, ConfigError, OutputError, ServiceUnavailableError, UsageError
from ..fetch.source import fetch_for_monitor
from . import composites
from .change import update_changes
from .config import MonitorConfig, SceneSpec, discover_scenes
from .layout import MonitorLayout
from .ledger import InputStat, Ledger, RunLock, fingerprint, plan_row
from .models import ModelSet, model_set
from .pipeline import (
    DEFAULT_RUNNER,
    Executor,
    LocalExecutor,
    SceneResult,
    SceneTask,
    process_scene,
)
from .qgis import update_qgis
from .reports import write_reports
from .yearly import update_years

log = logging.getLogger("coalmine.monitor")
#: Exit code when the [source] catalogue could not be reached (the scenes already there are mapped).
EXIT_FETCH_FAILED = ServiceUnavailableError.exit_code


@dataclass
class PlanItem:
    """One configured scene and what this run will do with it."""

    spec: SceneSpec
    reason: str
    process: bool
    row: dict[str, Any]


@dataclass
class MonitorSummary:
    """What a run did (also the basis of the one-line status)."""

    processed: int = 0
    unchanged: int = 0
    failed: int = 0
    #: Scenes processed this run that had no valid pixel (recorded "no data"; also in ``processed``).
    no_data: int = 0
    given_up: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    report: Path | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    #: The ``[source]`` fetch of this run (a ``fetch.FetchSummary``), or None.
    fetch: Any = None
    #: What one processed item is: a scene, or a year's composite (compositing = "input").
    unit: str = "scene"

    @property
    def exit_code(self) -> int:
        """0 when every scene is done, 1 when any scene failed (this run or given up), else 69
        when the ``[source]`` catalogue could not be reached (what was there is mapped)."""
        if self.failed or self.given_up:
            return 1
        return EXIT_FETCH_FAILED if self.fetch is not None and self.fetch.unreachable else 0

    def status_line(self) -> str:
        new = self.processed
        line = (f"{new} new {self.unit}{'s' if new != 1 else ''} processed, {self.unchanged} unchanged, "
                f"{self.failed} failed")
        if self.no_data:
            line += f" ({self.no_data} of the processed without a valid pixel: no data)"
        if self.fetch is not None:
            f = self.fetch
            line = (f"{f.unreachable}; mapped what was there: " if f.unreachable else
                    f"{sum(r.kind == 's2' for r in f.fetched)} acquisition(s) fetched, ") + line
        if self.given_up:
            line += f" ({self.given_up} more failed earlier, not retried)"
        if self.report is not None:
            line += f"; report: {self.report}"
        return line


def run_monitor(
    cfg: MonitorConfig,
    *,
    executor: Executor | None = None,
    retry_failed: bool = False,
    dry_run: bool = False,
    runner: Any = DEFAULT_RUNNER,
) -> MonitorSummary:
    """Run the monitor once: process what is new or changed, then rebuild the reports.

    Args:
        cfg: the loaded configuration (:func:`~.config.load_config`).
        executor: where scenes run; default sequentially in this process.
        retry_failed: retry failed scenes even when they used up ``max_attempts``.
        dry_run: only plan and log what would be processed and why; no scene is processed
            and no output or report is written.
        runner: ``module:function`` (or a function) mapping one scene (default ``run_scene``).

    Returns:
        A :class:`MonitorSummary` (counts, report path, exit code).

    Raises:
        LedgerLockedError: another run holds this output folder (exit code 75).
        CoalmineError: bad configuration, bundle or AOIs (nothing processed).

    Example:
        >>> s = run_monitor(load_config("monitor.toml"))   # doctest: +SKIP
        >>> print(s.status_line())                          # doctest: +SKIP
    """
    layout = MonitorLayout(ensure_output_dir(cfg.output, option="'output' in the configuration"), cfg.ledger_path)
    with RunLock(layout.root):
        bundle = load_bundle(cfg.bundle)
        aois = read_config_aois(cfg)  # fail early on bad AOIs
        fetched = None if cfg.fetch is None else fetch_for_monitor(
            cfg.fetch, aois, dry_run=dry_run, aoi_name_field=cfg.aoi_name_field)
        specs = discover_scenes(cfg)
        _clean_partials(layout)
        with Ledger(layout.ledger) as led:
            options = json.dumps(cfg.run, sort_keys=True)
            run_opts = cfg.run_options
            models = model_set(bundle, run_opts.backend, run_opts.precision)
            if cfg.compositing == "input":  # one composite per year, mapped once
                planned, inputs, grid = composites.plan_years(cfg, led, layout, specs, bundle.bundle_id,
                                                              retry_failed, models)
                items = [PlanItem(*p) for p in planned]
                keys = {it.row["key"] for it in items}
            else:
                items = plan(cfg, led, layout, specs, bundle.bundle_id, options, retry_failed, models)
                keys = {s.key for s in specs}
            summary = _summarise(items)
            if cfg.compositing == "input":
                summary.unit = "year composite"
            summary.fetch = fetched
            if dry_run:
                return summary
            run_id = led.start_run()
            todo = [it for it in items if it.process]
            led.mark_pending([it.row for it in todo])
            if cfg.compositing == "input":
                tasks = [composites.year_task(cfg, layout, it, inputs[it.row["year"]], grid) for it in todo]
            else:
                tasks = [_task(cfg, layout, it, runner) for it in todo]
            try:
                _process(led, executor or LocalExecutor(), tasks, run_id, layout, summary, models)
                if cfg.compositing == "input":
                    years = composites.update_composite_years(cfg, led, layout, keys, aois)
                else:
                    years = update_years(cfg, led, layout, keys, aois)
                update_changes(led, layout, years)
                summary.outputs = write_reports(cfg, led, layout, keys, aois)
                summary.outputs["qgis"] = update_qgis(cfg.title, led, layout, cfg.aois, cfg.aoi_name_field, aois)
                summary.report = summary.outputs.get("html")
            except BaseException as exc:
                led.finish_run(run_id, "interrupted", summary.processed, summary.unchanged, summary.failed, _one_line(exc))
                raise
            led.finish_run(
                run_id, "failed" if summary.exit_code else "ok", summary.processed, summary.unchanged,
                summary.failed, summary.status_line(),
            )
            return summary


def _summarise(items: list[PlanItem]) -> MonitorSummary:
    """Count the plan's reasons and log it: the scenes to process at INFO, the others at DEBUG
    (with -v a timer's journal shows what happened to every scene)."""
    summary = MonitorSummary()
    for it in items:
        summary.reasons[it.reason] = summary.reasons.get(it.reason, 0) + 1
        if not it.process:
            if it.reason == "failed earlier":
                summary.given_up += 1
            else:
                summary.unchanged += 1
        log.log(logging.INFO if it.process else logging.DEBUG, "%s %s: %s", it.spec.date.isoformat(),
                it.spec.path.name, it.reason)
    return summary


def _process(
    led: Ledger, executor: Executor, tasks: list[SceneTask], run_id: int, layout: MonitorLayout,
    summary: MonitorSummary, models: ModelSet,
) -> None:
    """Hand the tasks to the executor and register each result in the ledger as it arrives."""

    def claimed() -> Iterator[SceneTask]:
        # Claim lazily: a scene is 'running' in the ledger only once the executor takes it.
        for task in tasks:
            led.claim(task.key, task.token, run_id)
            yield task

    for task, res in executor.run(process_scene, claimed()):
        if isinstance(res, OutputError) and res.disk_full:
            # the disk is full: stop here; the scene is not at fault, so its attempt is given back
            # (best effort: the ledger may not be writable either)
            with contextlib.suppress(OutputError):
                led.unclaim(task.key, task.token)
            raise res
        if isinstance(res, BaseException):
            msg = _one_line(res)
            led.fail(task.key, task.token, msg)
            summary.failed += 1
            summary.failures.append((task.scene, msg))
            log.warning("%s %s: FAILED: %s", task.date, Path(task.scene).name, msg)
        elif _register(led, layout, task, res, models):
            summary.processed += 1
            if res.no_data:
                summary.no_data += 1
                log.warning("%s %s: no data: %s", task.date, Path(task.scene).name, res.message)
            else:
                total = res.areas_ha["total"]
                log.info("%s %s: done in %.1f s, %s mined", task.date, Path(task.scene).name, res.seconds,
                         "no valid pixel" if total is None else f"{total:.2f} ha")


def _register(led: Ledger, layout: MonitorLayout, task: SceneTask, res: SceneResult, models: ModelSet) -> bool:
    """Record a finished scene (one transaction); False when another attempt owns the row."""
    done = res.as_dict()
    done["outputs"] = {"folder": layout.rel(Path(res.out_dir)), **res.outputs}
    done["model"] = models.identify(res.model) if not res.no_data else {}
    return led.complete(task.key, task.token, done)


def plan(
    cfg: MonitorConfig, led: Ledger, layout: MonitorLayout, specs: list[SceneSpec], bundle_id: str, options: str,
    retry_failed: bool, models: ModelSet,
) -> list[PlanItem]:
    """Decide for each configured scene whether this run processes it, and why.

    Hashes are computed only when size, mtime or file count differ from the ledger's record.
    A scene mapped under other model files than ``models`` is processed again (see :mod:`.models`).
    """
    items: list[PlanItem] = []
    refresh: list[tuple[str, InputStat, InputStat | None]] = []
    for spec in specs:
        prev = led.scene(spec.key)
        known = _stat(prev, "") if prev else None
        st = fingerprint(spec.path, known)
        s1st = None
        if spec.s1 is not None:
            s1_known = _stat(prev, "s1_") if prev and prev["s1_path"] == str(spec.s1) else None
            s1st = fingerprint(spec.s1, s1_known)
        row = {
            "key": spec.key, "path": str(spec.path), "s1_path": str(spec.s1) if spec.s1 else None,
            "date": spec.date.isoformat(), "year": spec.year, "size": st.size, "mtime_ns": st.mtime_ns,
            "nfiles": st.nfiles, "sha256": st.sha256, "bundle_id": bundle_id, "options": options,
            "model_state": models.state,
            "s1_size": s1st.size if s1st else None, "s1_mtime_ns": s1st.mtime_ns if s1st else None,
            "s1_nfiles": s1st.nfiles if s1st else None, "s1_sha256": s1st.sha256 if s1st else None,
        }
        if prev is None:
            change = None
        elif prev["sha256"] != st.sha256 or prev["s1_path"] != row["s1_path"] or prev["s1_sha256"] != row["s1_sha256"]:
            change = "input changed"
        else:
            change = "date changed" if prev["date"] != row["date"] else None
        reason, process, row["attempts"] = plan_row(prev, change, bundle_id=bundle_id, options=options,
                                                    models=models, layout=layout, retry_failed=retry_failed,
                                                    max_attempts=cfg.max_attempts)
        if reason == "unchanged" and not st.same_stat(known):
            refresh.append((spec.key, st, s1st))  # same content, touched file
        items.append(PlanItem(spec=spec, reason=reason, process=process, row=row))
    if refresh:  # same content, touched file: remember the new mtime so the next run skips hashing
        led.refresh_input_stats(refresh)
    return items


def read_config_aois(cfg: MonitorConfig) -> list[Any]:
    """The configuration's AOIs, each with a non-empty name from ``aoi_name_field``.

    Raises:
        ConfigError: a feature lacks the name field or has an empty name.
        InputError: the file is not GeoJSON/GeoPackage or holds no polygons.
    """
    from ..aoi import read_aois

    try:
        aois = read_aois(cfg.aois, name_field=cfg.aoi_name_field)
    except UsageError as exc:
        raise ConfigError(
            f"{cfg.source}: AOI file {cfg.aois} has a feature without the name field "
            f"'{cfg.aoi_name_field}'; give every area a name there or set aoi_name_field "
            f"to the attribute that names them ({exc})"
        ) from exc
    for i, a in enumerate(aois):
        if not a.name.strip():
            raise ConfigError(
                f"{cfg.source}: feature {i} of AOI file {cfg.aois} has an empty '{cfg.aoi_name_field}'; "
                "every area of interest needs a name for the report; fill it in or set "
                "aoi_name_field to another attribute"
            )
    return aois


def _task(cfg: MonitorConfig, layout: MonitorLayout, it: PlanItem, runner: Any) -> SceneTask:
    folder = layout.scene_dir(it.row["date"], it.row["path"])
    return SceneTask(
        key=it.row["key"],
        scene=it.row["path"],
        date=it.row["date"],
        bundle=str(cfg.bundle),
        out_dir=str(folder),
        prefix=folder.name.rsplit("_", 1)[0],
        token=uuid.uuid4().hex[:12],
        aois=str(cfg.aois),
        aoi_name_field=cfg.aoi_name_field,
        s1=it.row["s1_path"],
        options=dict(cfg.run),
        runner=runner,
    )


def _stat(row: Any, prefix: str) -> InputStat | None:
    if row[prefix + "sha256"] is None:
        return None
    return InputStat(row[prefix + "size"], row[prefix + "mtime_ns"], row[prefix + "nfiles"], row[prefix + "sha256"])


def _clean_partials(layout: MonitorLayout) -> None:
    """Remove temporary folders/files left by a killed run (we hold the lock: none is live)."""
    for d in layout.work_dirs:
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name.startswith(".") and (".partial" in p.name or ".old-" in p.name):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, CoalmineError):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())
