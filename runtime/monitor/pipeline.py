"""Per-scene work of the monitor, and the executors that run it.

:func:`process_scene` is a pure function of its :class:`SceneTask`: it reads the inputs,
runs ``coalmine.runtime.run.run_scene`` into a temporary folder beside the final one,
measures hectares per AOI on the mask, swaps the folder into place and returns a
:class:`SceneResult`. It never touches the ledger, so it can run in this process
(:class:`LocalExecutor`) or on a distributed worker (the Dask executor of ``cluster.py``, with the same
``run`` method); the coordinator alone registers results. Tasks and results are plain,
picklable data.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

#: The function that maps one scene; tests and a configuration may name another "module:function".
DEFAULT_RUNNER = "coalmine.runtime.run:run_scene"


@dataclass(frozen=True)
class SceneTask:
    """Everything a worker needs to process one scene (paths on storage it can read/write).

    ``token`` identifies this attempt: the temporary folder carries it, and the coordinator
    accepts the result only for the attempt it registered.
    """

    key: str
    scene: str
    date: str
    bundle: str
    out_dir: str
    prefix: str
    token: str
    aois: str | None = None
    aoi_name_field: str | None = None
    s1: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: "module:function" (or a module-level function) with run_scene's signature.
    runner: Any = DEFAULT_RUNNER


@dataclass(frozen=True)
class SceneResult:
    """What a worker returns: output file names (relative to the scene folder), hectares
    (``{"total": ha, "aois": {name: ha}}``), nodata share, backend, timings and seconds."""

    key: str
    token: str
    out_dir: str
    outputs: dict[str, str]
    areas_ha: dict[str, Any]
    nodata_share: float | None
    backend: str | None
    timings: dict[str, float]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "outputs": self.outputs, "areas_ha": self.areas_ha, "nodata_share": self.nodata_share,
            "backend": self.backend, "timings": self.timings, "seconds": self.seconds,
        }


def process_scene(task: SceneTask) -> SceneResult:
    """Map one scene and measure its mined hectares per AOI; no ledger access.

    Args:
        task: the scene, bundle, final output folder and run options.

    Returns:
        The :class:`SceneResult`; the outputs are in ``task.out_dir`` when it returns.

    Raises:
        CoalmineError (or any error of the runner): the scene failed; no partial output
        is left (the temporary folder is removed).

    Example:
        >>> r = process_scene(SceneTask(key="s", scene="scene.tif", date="2019-07-14",
        ...     bundle="model", out_dir="out/scenes/2019-07-14_scene", prefix="scene",
        ...     token="a1"))   # doctest: +SKIP
        >>> r.areas_ha["total"]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    final = Path(task.out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{task.token}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        runner = resolve_runner(task.runner)
        summary = runner(
            task.scene, task.bundle, tmp, s1=task.s1, aoi=task.aois, aoi_name_field=task.aoi_name_field,
            prefix=task.prefix, progress=False, **task.options,
        )
        outputs = {k: Path(v).name for k, v in summary["outputs"].items() if v}
        if "mask" not in outputs:
            raise RuntimeError(f"runner {task.runner} returned no mask output for {task.scene}")
        areas = summary.get("areas_ha")
        if not (isinstance(areas, dict) and "total" in areas and (not task.aois or "aois" in areas)):
            areas = _areas(tmp / outputs["mask"], task)  # a runner that does not measure AOIs
        areas = {"total": float(areas["total"]), "aois": {str(k): float(v) for k, v in areas.get("aois", {}).items()}}
        if "summary" in outputs:
            _fix_summary_paths(tmp / outputs["summary"], tmp, final)
        swap_into_place(tmp, final, task.token)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SceneResult(
        key=task.key,
        token=task.token,
        out_dir=str(final),
        outputs=outputs,
        areas_ha=areas,
        nodata_share=_float(summary.get("nodata_share")),
        backend=summary.get("backend") if isinstance(summary.get("backend"), str) else _name(summary.get("backend")),
        timings={k: float(v) for k, v in (summary.get("timings") or {}).items() if isinstance(v, (int, float))},
        seconds=time.perf_counter() - t0,
    )


def _areas(mask: Path, task: SceneTask) -> dict[str, Any]:
    from ..aoi import read_aois
    from ..areas import mask_areas_ha

    aois = read_aois(task.aois, name_field=task.aoi_name_field) if task.aois else []
    res = mask_areas_ha(mask, aois)
    return {"total": float(res["total"]), "aois": {str(k): float(v) for k, v in res.get("aois", {}).items()}}


def _fix_summary_paths(path: Path, tmp: Path, final: Path) -> None:
    """Point the runner's summary JSON at the final folder instead of the temporary one."""
    from .._io import atomic_write_json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    outs = data.get("outputs")
    if isinstance(outs, dict):
        data["outputs"] = {k: (str(final / Path(v).name) if isinstance(v, str) and str(tmp) in v else v)
                           for k, v in outs.items()}
        atomic_write_json(path, data)


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) else None


def _name(v: Any) -> str | None:
    if isinstance(v, dict):
        return str(v.get("name") or v.get("kind") or v)
    return None if v is None else str(v)


def swap_into_place(tmp: Path, final: Path, token: str) -> None:
    """Replace ``final`` by the complete folder ``tmp`` (two renames; the old copy is removed).

    A kill between the renames leaves no ``final`` folder, which is harmless: the ledger has
    not registered this attempt, so the scene is processed again.
    """
    old = final.parent / f".{final.name}.old-{token}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def resolve_runner(spec: Any) -> Callable[..., dict[str, Any]]:
    """Import ``module:function`` (a callable is returned as is)."""
    if callable(spec):
        return spec
    mod, _, fn = str(spec).partition(":")
    return getattr(importlib.import_module(mod), fn)


# -- executors ----------------------------------------------------------------------------------


class Executor(Protocol):
    """Runs :func:`process_scene` over tasks; yields each task with its result or exception.

    ``tasks`` is a lazy iterable: the coordinator marks a scene ``running`` in the ledger
    when the executor pulls it, so a sequential executor should pull one at a time.
    """

    def run(
        self, fn: Callable[[SceneTask], SceneResult], tasks: Iterable[SceneTask]
    ) -> Iterator[tuple[SceneTask, SceneResult | BaseException]]: ...


class LocalExecutor:
    """Sequential, in this process (the default; the runner itself uses all cores)."""

    name = "local"

    def run(
        self, fn: Callable[[SceneTask], SceneResult], tasks: Iterable[SceneTask]
    ) -> Iterator[tuple[SceneTask, SceneResult | BaseException]]:
        for task in tasks:
            try:
                yield task, fn(task)
            except Exception as exc:  # one scene's failure must not stop the others
                yield task, exc
