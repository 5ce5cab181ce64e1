"""Scheduled yearly monitoring of mined area: ``coal-monitor CONFIG.toml``.

Modules, one concern each, with dependencies that run one way (top to bottom):

- :mod:`.scheduler` — the coordinator: lock, plan, process, compose, report;
- :mod:`.yearly` (composites and their true-colour pictures), :mod:`.change` (change maps),
  :mod:`.reports` (CSV, charts, maps, HTML), :mod:`.qgis` (the QGIS project and the GeoPackage of
  mine polygons), :mod:`.cluster` (the Dask executor) — the stages, which never import each other;
- :mod:`.pipeline` (the pure per-scene work and the local executor), :mod:`.maps` (the report's
  maps);
- :mod:`.layout` (the output folder's paths), :mod:`.ledger` (the SQLite ledger and run lock,
  the only module that speaks SQL), :mod:`.config` (TOML, scene discovery), :mod:`.models`
  (which model files made the numbers), :mod:`.legend` (raster classes and colours),
  :mod:`.backdrop` (true-colour pictures), :mod:`.modelcard` (what the bundle says about its
  model).

Example:
    >>> from coalmine.runtime.monitor import load_config, run_monitor   # doctest: +SKIP
    >>> print(run_monitor(load_config("monitor.toml")).status_line())    # doctest: +SKIP
"""

from .config import MonitorConfig, SceneSpec, discover_scenes, load_config
from .layout import MonitorLayout
from .ledger import EXIT_LOCKED, Ledger, LedgerLockedError, RunLock
from .pipeline import Executor, LocalExecutor, SceneResult, SceneTask, process_scene
from .scheduler import MonitorSummary, plan, run_monitor

__all__ = [
    "EXIT_LOCKED", "Executor", "Ledger", "LedgerLockedError", "LocalExecutor", "MonitorConfig",
    "MonitorLayout", "MonitorSummary", "RunLock", "SceneResult", "SceneSpec", "SceneTask", "discover_scenes",
    "load_config", "plan", "process_scene", "run_monitor",
]
