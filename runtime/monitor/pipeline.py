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
    #: coal-run settings as the ``[run]`` table gives them (checked by ``RunOptions`` at load).
    options: dict[str, Any] = field(default_factory=dict)
    #: "module:function" (or a module-level function) with run_scene's signature.
    runner: Any = DEFAULT_RUNNER


@dataclass(frozen=True)
class SceneResult:
    """What a worker returns: output file names (relative to the scene folder), hectares
    (``{"total": ha, "aois": {name: ha}}``, None where nothing valid was seen), valid shares,
    nodata share, backend, the model details coal-run reported (``backend.details``), timings
    and seconds. ``no_data`` marks a scene without a single valid pixel (no outputs, no
    hectares; ``message`` says why)."""

    key: str
    token: str
    out_dir: str
    outputs: dict[str, str]
    areas_ha: dict[str, Any]
    nodata_share: float | None
    backend: str | None
    timings: dict[str, float]
    seconds: float
    valid_share: float | None = None
    aoi_valid_share: dict[str, float] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    no_data: bool = False
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "outputs": self.outputs, "areas_ha": self.areas_ha, "nodata_share": self.nodata_share,
            "valid_share": self.valid_share, "aoi_valid_share": self.aoi_valid_share,
            "backend": self.backend, "timings": self.timings, "seconds": self.seconds,
            "no_data": self.no_data, "message": self.message,
        }


def process_scene(task: SceneTask) -> SceneResult:
    """Map one scene and measure its mined hectares per AOI; no ledger access.

    Args:
        task: the scene, bundle, final output folder and run options.

    Returns:
        The :class:`SceneResult`; the outputs are in ``task.out_dir`` when it returns.

    A scene the runner refuses for having no valid pixel at all
    (:class:`~coalmine.runtime.errors.NoValidDataError`) is not a failure: it returns a
    result with ``no_data`` set and no outputs (its folder is emptied), to be recorded as
    ``nodata`` rather than retried.

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
    from .._io import atomic_folder, disk_hint
    from ..errors import NoValidDataError, OutputError

    try:
        with atomic_folder(final, task.token) as tmp:  # replaces the scene's folder when complete
            runner = resolve_runner(task.runner)
            try:
                summary = runner(
                    task.scene, task.bundle, tmp, s1=task.s1, aoi=task.aois, aoi_name_field=task.aoi_name_field,
                    prefix=task.prefix, progress=False, **task.options,
                )
            except NoValidDataError as exc:
                shutil.rmtree(tmp)  # an empty folder replaces the scene's: no outputs of an earlier version stay
                tmp.mkdir()
                return SceneResult(
                    key=task.key, token=task.token, out_dir=str(final), outputs={},
                    areas_ha={"total": None, "aois": {}}, nodata_share=1.0, backend=None, timings={},
                    seconds=time.perf_counter() - t0, valid_share=0.0, no_data=True, message=str(exc),
                )
            outputs = {k: Path(v).name for k, v in summary["outputs"].items() if v}
            if "mask" not in outputs:
                raise RuntimeError(f"runner {task.runner} returned no mask output for {task.scene}")
            areas = summary.get("areas_ha")
            if not (isinstance(areas, dict) and "total" in areas and (not task.aois or "aois" in areas)
                    and isinstance(summary.get("aoi_valid_share"), dict) and "valid_share" in summary):
                # a runner that does not measure AOIs and valid shares: measure them on its mask
                areas = _areas(tmp / outputs["mask"], task)
                summary = {**summary, "valid_share": areas["valid_share"], "aoi_valid_share": areas["aoi_valid_share"]}
            areas = {"total": _float(areas["total"]), "aois": {str(k): _float(v) for k, v in areas.get("aois", {}).items()}}
            if "summary" in outputs:
                _fix_summary_paths(tmp / outputs["summary"], tmp, final)
    except OutputError as exc:
        if not exc.disk_full:
            raise
        # name the output folder the user configured, not the hidden temporary one
        full = OutputError(f"cannot write the outputs of {Path(task.scene).name} into {final.parent} (the disk is "
                           f"full); {disk_hint(final.parent, 'output folder')}")
        full.disk_full = True
        raise full from exc
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
        valid_share=_float(summary.get("valid_share")),
        aoi_valid_share={str(k): float(v) for k, v in (summary.get("aoi_valid_share") or {}).items()},
        model=_details(summary.get("backend")),
    )


def _areas(mask: Path, task: SceneTask) -> dict[str, Any]:
    from ..aoi import read_aois
    from ..areas import mask_areas_ha

    aois = read_aois(task.aois, name_field=task.aoi_name_field) if task.aois else []
    res = mask_areas_ha(mask, aois, scene=task.scene)
    return {"total": res["total"], "aois": dict(res.get("aois", {})), "valid_share": res["valid_share"],
            "aoi_valid_share": dict(res["aoi_valid_share"])}


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


def _details(v: Any) -> dict[str, Any] | None:
    """The model part of coal-run's ``backend.details`` (ONNX ``model`` or TensorRT ``engine``)."""
    d = v.get("details") if isinstance(v, dict) else None
    if not isinstance(d, dict):
        return None
    return {k: d[k] for k in ("model", "engine") if isinstance(d.get(k), str)} or None


def _name(v: Any) -> str | None:
    if isinstance(v, dict):
        return str(v.get("name") or v.get("kind") or v)
    return None if v is None else str(v)


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
