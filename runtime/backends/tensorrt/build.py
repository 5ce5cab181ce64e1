"""Build a TensorRT engine from an ONNX file: parse, configure, one profile, serialize, write.

Written against the documented TensorRT 10 / 11 Python API. Networks are strongly typed
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists from 10.0 and is implied on 11), so
the precision comes from the ONNX file: an FP16 engine is built from ``model.fp16.onnx`` and
no builder precision flag is set. The builder gets a workspace limit, one optimisation profile
(batch 1..max at a fixed tile: fixed spatial size keeps memory and tactic choice tight;
TensorRT #3501, #1166) and a timing cache per GPU model, compute capability and TensorRT
version, loaded with mismatches tolerated as NVIDIA's samples do; a cache that cannot be read,
set or saved only makes the build slower.

The plan is written under a hidden temporary name: the caller runs the parity gate on it and
then publishes it (:func:`publish`, which renames it and writes its record) or discards it
(:func:`discard`). Nothing ungated ever carries an engine's name.

Example:
    >>> built = build_engine("b/model.fp16.onnx", "b/engines", tile=256, max_batch=8)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._io import atomic_write_bytes, atomic_write_json, temp_path
from ...errors import BackendError, OutputError
from .identity import (
    ENGINE_SUFFIX,
    Machine,
    engine_key,
    new_record,
    record_of,
    this_machine,
    timing_cache_path,
    trt_module,
)

log = logging.getLogger("coalmine.runtime.backends")


@dataclass
class BuiltEngine:
    """A serialized engine waiting for its gate: ``partial`` is its temporary file."""

    partial: Path
    target: Path
    record: dict[str, Any] = field(default_factory=dict)


def build_engine(
    onnx_path: str | os.PathLike[str],
    engines_dir: str | os.PathLike[str],
    *,
    tile: int,
    max_batch: int,
    onnx_sha256: str,
    workspace_bytes: int = 1 << 30,
    machine: Machine | None = None,
) -> BuiltEngine:
    """Build an engine for ``onnx_path`` into a temporary file in ``engines_dir``.

    Args:
        onnx_path: ONNX model (input ``(N, C, H, W)``, dynamic batch).
        engines_dir: folder for engines, records and timing caches (created).
        tile: tile size (multiple of 32).
        max_batch: largest batch of the profile.
        onnx_sha256: SHA-256 of ``onnx_path`` (part of the engine's key and record).
        workspace_bytes: builder workspace limit (1 GiB suits a 6 GB card).
        machine: this machine (detected when None).

    Returns:
        The built engine, not yet published.

    Raises:
        MissingDependencyError, BackendError (parse, configuration or build failure), OutputError.
    """
    trt = trt_module()
    onnx_path, engines_dir = Path(onnx_path), Path(engines_dir)
    _make_dir(engines_dir)
    machine = machine or this_machine(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    config = _configure(trt, builder, network, onnx_path, tile=tile, max_batch=max_batch,
                        workspace_bytes=workspace_bytes)
    cache_path = timing_cache_path(engines_dir, machine)
    _load_timing_cache(config, cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(
            f"TensorRT could not build an engine from {onnx_path} (tile {tile}, batch {max_batch}); "
            "try a smaller --tile or --max-batch, or use --backend cuda"
        )
    _save_timing_cache(config, cache_path)
    key = engine_key(onnx_path.name, onnx_sha256, machine, tile=tile, max_batch=max_batch)
    target = engines_dir / f"{key}{ENGINE_SUFFIX}"
    partial = _write_plan(plan, target)
    record = new_record(
        engine_file=target.name, onnx_name=onnx_path.name, onnx_sha256=onnx_sha256, machine=machine,
        tile=tile, max_batch=max_batch, workspace_bytes=workspace_bytes,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return BuiltEngine(partial, target, record)


def _make_dir(engines_dir: Path) -> None:
    try:
        engines_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create engine folder {engines_dir} ({exc.strerror}); check the bundle's permissions") from exc


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    """A strongly typed network parsed from the ONNX file (the parser must outlive the build)."""
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    if network is None:
        raise BackendError("TensorRT could not create a network definition; check the GPU driver (nvidia-smi)")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no details"
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errs}; re-export it with coal-export")
    return network, parser


def _configure(trt: Any, builder: Any, network: Any, onnx_path: Path, *, tile: int, max_batch: int,
               workspace_bytes: int) -> Any:
    """Builder configuration: workspace limit and one profile, batch 1..max at ``tile``."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    c = int(inp.shape[1])
    lo, hi = (1, c, tile, tile), (max_batch, c, tile, tile)
    if profile.set_shape(inp.name, lo, hi, hi) is False:
        raise BackendError(f"TensorRT refused the profile {lo}..{hi} for {onnx_path}; use another --tile")
    if config.add_optimization_profile(profile) < 0:
        raise BackendError(f"TensorRT refused the optimisation profile {lo}..{hi} for {onnx_path}; use another --tile")
    return config


def _load_timing_cache(config: Any, path: Path) -> None:
    """Give the builder the saved timing cache; a missing, unreadable or foreign one starts empty."""
    data = b""
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("TensorRT timing cache %s cannot be read (%s); building without it", path, exc.strerror)
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=True):
        return
    if data:
        log.warning("TensorRT did not accept the timing cache %s; building with an empty one", path.name)
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=True):
            return
    log.warning("TensorRT has no timing cache for this build; it only takes longer")


def _save_timing_cache(config: Any, path: Path) -> None:
    """Save the builder's timing cache for the next build; failures are only logged."""
    cache = config.get_timing_cache()
    if cache is None:
        log.warning("TensorRT returned no timing cache; %s was not updated", path.name)
        return
    try:
        atomic_write_bytes(path, memoryview(cache.serialize()), "--bundle")
    except (OSError, TypeError, ValueError) as exc:  # OutputError is an OSError
        log.warning("could not save the TensorRT timing cache %s (%s); the next build takes longer", path, exc)


def _write_plan(plan: Any, target: Path) -> Path:
    """Write the serialized plan to a hidden temporary file beside ``target`` (umask mode)."""
    tmp = temp_path(target, "--bundle")
    try:
        with open(tmp, "wb") as f:
            f.write(memoryview(plan))
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write engine {target.name} ({exc.strerror}); check free disk space") from exc
        raise
    return tmp


def publish(built: BuiltEngine, gate: dict[str, Any]) -> Path:
    """Give a gated engine its name and write its record (with the gate's result) beside it."""
    os.replace(built.partial, built.target)
    atomic_write_json(record_of(built.target), {**built.record, "gate": gate}, "--bundle")
    return built.target


def discard(built: BuiltEngine) -> None:
    """Remove the temporary file of an engine that failed its gate (or whose build was abandoned)."""
    built.partial.unlink(missing_ok=True)
