"""Library entry points of coal-train: :func:`train` (scenes + labels -> bundle) and :func:`evaluate`.

How a training run goes:

1. Every scene is opened with :func:`coalmine.runtime.preprocess.open_scene` (a 23-band stack
   from ``coal-prepare``, or raw Sentinel-2 + Sentinel-1 prepared on the fly) and its labels
   are put on its grid (:mod:`coalmine.train.labels`).
2. Patches are planned and split in space (:mod:`coalmine.train.patches`).
3. **GLCM bin edges.** Stacks carry the preprocessing they were made with (GeoTIFF tag
   ``COALMINE_PREPROCESSING``); those edges are kept, and all stacks must agree. When every
   scene is raw, the edges are computed (``glcm_edges = "equal_frequency"``, the default) as
   equal-frequency quantiles of the VV dB of the **training** patches only, and the scenes are
   then prepared with them; ``"equal_width"`` uses the fixed dB range instead.
4. Patches are read once into a cache keyed by a fingerprint of the input files' contents and
   the patch settings; a later run (or ``--resume``) reuses it.
5. Per-band mean/std over the valid pixels of the training patches only.
6. The loop (:mod:`coalmine.train.loop`) with checkpoints in ``<out>.work/``.
7. The threshold is 0.5, or (``threshold = "tune"``) the value that maximises the validation
   kappa — then the validation figures are optimistic and the report says so; a separate test
   scene gives the unbiased figure.
8. The bundle is assembled in a temporary folder beside ``out`` and renamed when complete.

Example:
    >>> cfg = TrainConfig(scenes=(SceneSpec(Path("s.tif"), Path("mines.gpkg")),), epochs=50)  # doctest: +SKIP
    >>> train(cfg, "models/tapin")                                                             # doctest: +SKIP
    PosixPath('models/tapin')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from coalmine.runtime._io import atomic_folder, atomic_write_json, ensure_output_dir, hash_file
from coalmine.runtime.bands import BAND_NAMES, S1_BAND
from coalmine.runtime.bundle import (
    MODEL_FILES,
    Bundle,
    Normalization,
    Preprocessing,
    load_bundle,
)
from coalmine.runtime.errors import (
    BandError,
    ConfigError,
    InputError,
    InputNotFoundError,
    UsageError,
)
from coalmine.runtime.options import InputOptions
from coalmine.runtime.tiling import tile_size_problem

from .config import SceneSpec, TrainConfig, config_to_dict
from .labels import labels_on_grid
from .metrics import accuracy_report, confusion_matrix
from .patches import (
    LABEL_NODATA,
    PatchSet,
    SceneGeo,
    extract_patches,
    load_patch_cache,
    normalization_stats,
    plan_patches,
)

log = logging.getLogger("coalmine.train")

#: Most VV samples used for equal-frequency GLCM edges (drawn at random, seeded).
EDGE_SAMPLES = 500_000


# -- inputs -----------------------------------------------------------------------------------


def _hash_path(h: Any, p: Path) -> None:
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        h.update(str(f.stat().st_size).encode())
        hash_file(h, f)


def data_fingerprint(scenes: Sequence[SceneSpec]) -> str:
    """sha256 over the contents of every scene, S1, label, DEM and orbit file (names, sizes, bytes).

    Raises:
        InputNotFoundError: a listed file or folder does not exist.
    """
    h = hashlib.sha256()
    for s in scenes:
        for what, p in (("scene", s.path), ("s1", s.s1), ("labels", s.labels), ("dem", s.dem),
                        ("orbit", s.orbit)):
            if p is None:
                continue
            if not Path(p).exists():
                raise InputNotFoundError(f"{what} {p} does not exist; check the path in --{what} or the config")
            h.update(f"{what}:{s.split}:{s.label_field}:".encode())
            _hash_path(h, Path(p))
    return h.hexdigest()


def _check_stack_bands(spec: SceneSpec) -> None:
    """A scene given without S1 must be a 23-band stack: say so before anything else."""
    import rasterio
    from rasterio.errors import RasterioIOError

    p = Path(spec.path)
    if spec.s1 is not None or p.is_dir():
        if spec.s1 is None:
            raise UsageError(
                f"scene {p} is a folder (raw Sentinel-2) but no S1 file was given; pass --s1 with its "
                "Sentinel-1 VV, or give a 23-band stack from coal-prepare"
            )
        return
    try:
        with rasterio.open(p) as ds:
            count = ds.count
    except RasterioIOError as exc:
        raise InputError(f"scene {p} cannot be read as a raster ({exc})") from exc
    if count != len(BAND_NAMES):
        raise BandError(
            f"scene {p} has {count} bands but coal-train needs the {len(BAND_NAMES)}-band stack "
            f"({', '.join(BAND_NAMES[:3])} ... {BAND_NAMES[-1]}); make it with coal-prepare, or give raw "
            "Sentinel-2 input together with --s1"
        )


def _open(spec: SceneSpec, prep: Preprocessing | None, inputs: InputOptions | None = None) -> Any:
    from coalmine.runtime.preprocess import open_scene

    args = (inputs or InputOptions()).reader_args()
    for k in ("dem", "orbit"):  # a [[scenes]] table's own DEM/orbit wins over the run's
        if getattr(spec, k) is not None:
            args[k] = str(getattr(spec, k))
    src = open_scene(spec.path, spec.s1, prep=prep, **args)
    if tuple(src.bands) != BAND_NAMES:
        src.close()
        raise BandError(
            f"scene {spec.path} has bands {list(src.bands)[:4]}...; coal-train needs {len(BAND_NAMES)} bands "
            f"in the order of coalmine.runtime.bands.BAND_NAMES; re-make the stack with coal-prepare"
        )
    return src


def _geo(src: Any) -> SceneGeo:
    return SceneGeo(crs=src.crs.to_string(), transform=src.transform, height=src.height, width=src.width)


def _choose_preprocessing(specs: Sequence[SceneSpec], srcs: Sequence[Any], options: tuple[Preprocessing, str]
                          ) -> tuple[Preprocessing, str]:
    """The preprocessing of the run and where its GLCM edges come from (see module docstring):
    the stacks' when there are stacks, else the one the options ask for."""
    stacks = [(s, src) for s, src in zip(specs, srcs, strict=True) if s.s1 is None]
    for s, src in stacks:
        if src.preprocessing is None:
            raise InputError(
                f"stack {s.path} records no preprocessing (GeoTIFF tag COALMINE_PREPROCESSING), so its "
                "GLCM bin edges are unknown; re-make it with coal-prepare"
            )
    if stacks:
        first_spec, first = stacks[0]
        for s, src in stacks[1:]:
            if src.preprocessing.to_dict() != first.preprocessing.to_dict():
                raise InputError(
                    f"stacks {first_spec.path} and {s.path} were prepared with different preprocessing "
                    "(e.g. GLCM bin edges); re-make them with one coal-prepare setting"
                )
        return first.preprocessing, "stack"
    return options


def _with_s1_made(prep: Preprocessing, specs: Sequence[SceneSpec], srcs: Sequence[Any]) -> Preprocessing:
    """Record in the bundle's preprocessing how the training scenes' Sentinel-1 was made
    (source, radiometry, terrain), so that coal-run can warn about scenes made otherwise."""
    keys = ("source", "radiometry", "terrain")
    made = {}
    for s, src in zip(specs, srcs, strict=True):
        p = getattr(src, "preprocessing", None)
        if p is not None:
            made[str(s.path)] = tuple(getattr(p.s1, k) for k in keys)
    kinds = set(made.values())
    if not kinds:
        return prep
    if len(kinds) > 1:
        log.warning("the training scenes' Sentinel-1 was made in different ways (%s); the bundle "
                    "records the terrain correction as unknown",
                    "; ".join(f"{k}: {'/'.join(v)}" for k, v in made.items()))
        first = next(iter(made.values()))
        return replace(prep, s1=replace(prep.s1, source=first[0], radiometry=first[1], terrain="unknown"))
    return replace(prep, s1=replace(prep.s1, **dict(zip(keys, kinds.pop(), strict=True))))


def _equal_frequency_prep(
    prep: Preprocessing, srcs: Sequence[Any], plan: Sequence[Any], tile: int, seed: int
) -> Preprocessing:
    """Equal-frequency GLCM edges from the VV dB of the training patches only."""
    from coalmine.runtime.texture import equal_frequency_edges
    from rasterio.windows import Window

    vv = BAND_NAMES.index(S1_BAND)
    rng = np.random.default_rng([seed, 17])
    train = [p for p in plan if p.split == "train"]
    per = max(1, EDGE_SAMPLES // max(1, len(train)))
    parts = []
    for p in train:
        a = srcs[p.scene].read(Window(p.col, p.row, tile, tile))[vv].ravel()
        a = a[np.isfinite(a)]
        if a.size > per:
            a = rng.choice(a, per, replace=False)
        parts.append(a)
    samples = np.concatenate(parts) if parts else np.empty(0)
    if samples.size == 0:
        raise InputError("the training patches have no valid VV value; check the Sentinel-1 inputs")
    edges = equal_frequency_edges(samples, prep.glcm.levels)
    glcm = replace(prep.glcm, edges=tuple(float(e) for e in edges), edges_method="equal_frequency")
    return replace(prep, glcm=glcm)


def _settings_key(cfg: TrainConfig, fingerprint: str) -> str:
    keys = ("tile", "stride", "min_mine_fraction", "background_ratio", "max_nodata", "max_patches",
            "val_fraction", "block_tiles", "buffer", "glcm_edges", "seed")
    d = {k: getattr(cfg, k) for k in keys}
    # the input and preprocessing settings change the patches too; named only when given, so
    # caches made before they were settings stay valid
    default = TrainConfig()
    d.update({k: getattr(cfg, k) for k in ("s2_offset", "s1_units", "scl", "speckle", "speckle_window", "db_range")
              if getattr(cfg, k) != getattr(default, k)})
    return hashlib.sha256(json.dumps([fingerprint, d], sort_keys=True, default=str).encode()).hexdigest()


def _prepare_patches(cfg: TrainConfig, work: Path, fingerprint: str, progress: bool) -> tuple[PatchSet, float]:
    """Plan, split and extract (or reuse the cache). Returns the patch set and seconds spent."""
    t0 = time.perf_counter()
    key = _settings_key(cfg, fingerprint)
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else work / "cache"
    folder = cache_root / key[:24]
    cached = load_patch_cache(folder)
    if cached is not None:
        log.info("using cached patches in %s", folder)
        return cached, time.perf_counter() - t0
    for s in cfg.scenes:
        _check_stack_bands(s)
    wanted = cfg.preprocessing_options.preprocessing(default_edges="equal_frequency", from_data=True)
    with contextlib.ExitStack() as stack:
        srcs = []
        for s in cfg.scenes:
            src = _open(s, None if s.s1 is None else wanted[0], cfg.inputs)
            stack.callback(src.close)
            srcs.append(src)
        prep, edge_source = _choose_preprocessing(cfg.scenes, srcs, wanted)
        prep = _with_s1_made(prep, cfg.scenes, srcs)
        geos = [_geo(src) for src in srcs]
        labels = [
            labels_on_grid(s.labels, g, scene_name=str(s.path), label_field=s.label_field)
            for s, g in zip(cfg.scenes, geos, strict=True)
        ]
        plan = plan_patches(
            labels, geos, [s.split for s in cfg.scenes], tile=cfg.tile, stride=cfg.stride,
            min_mine_fraction=cfg.min_mine_fraction, background_ratio=cfg.background_ratio,
            max_nodata=cfg.max_nodata, max_patches=cfg.max_patches, val_fraction=cfg.val_fraction,
            block_tiles=cfg.block_tiles, buffer=cfg.buffer, seed=cfg.seed,
        )
        if edge_source == "equal_frequency":
            prep = _equal_frequency_prep(prep, srcs, plan, cfg.tile, cfg.seed)
        if edge_source in ("equal_frequency", "stack"):
            # Re-open the raw scenes with the final edges (from the training VV, or those of the
            # stacks they are trained with): the GLCM bands depend on them. Otherwise the edges
            # are those they were opened with.
            for i, s in enumerate(cfg.scenes):
                if s.s1 is not None:
                    srcs[i] = stack.enter_context(contextlib.closing(_open(s, prep, cfg.inputs)))

        def read(i: int, window: Any) -> np.ndarray:
            return srcs[i].read(window)

        meta = {
            "key": key,
            "fingerprint": fingerprint,
            "preprocessing": prep.to_dict(),
            "edges_source": edge_source,
            "scenes": [str(s.path) for s in cfg.scenes],
        }
        ps = extract_patches(plan, read, labels, folder, tile=cfg.tile, n_bands=len(BAND_NAMES),
                             max_nodata=cfg.max_nodata, meta=meta, progress=progress)
    return ps, time.perf_counter() - t0


# -- training -----------------------------------------------------------------------------------


def _code_version() -> str:
    try:
        from importlib.metadata import version

        return version("coalmine")
    except Exception:  # noqa: BLE001 - metadata may be missing in a source tree
        return "unknown"


def _pick_val_tiles(ps: PatchSet, val_idx: np.ndarray, n: int) -> np.ndarray:
    if n <= 0 or len(val_idx) == 0:
        return np.empty(0, dtype=np.int64)
    if len(val_idx) <= n:
        return np.asarray(val_idx)
    return np.asarray(val_idx)[np.linspace(0, len(val_idx) - 1, n).round().astype(int)]


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    progress: bool = True,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> Path:
    """Train a U-Net-ResNet34 on the config's scenes and write a model bundle at ``out_dir``.

    Args:
        config: the settings and scenes (:class:`TrainConfig`).
        out_dir: the bundle folder to create. Work files (checkpoints, log, patch cache) go to
            ``<out_dir>.work`` beside it; the bundle appears only when complete.
        progress: tqdm bars on stderr.
        resume: continue from the last checkpoint in ``<out_dir>.work``.
        overwrite: replace an existing ``out_dir``.
        on_epoch_end: optional callback ``(epoch, log_row)`` after each checkpoint.

    Returns:
        The bundle folder.

    Raises:
        UsageError: no training scene, ``out_dir`` exists without ``overwrite``, bad resume.
        InputError / BandError / CRSError: unusable scenes or labels (message names the file).
    """
    from .loop import fit
    from .model import build_model, model_spec

    cfg = config.validate()
    out = Path(out_dir)
    work = _check_output(cfg, out, overwrite)
    t_start = time.perf_counter()
    fingerprint = data_fingerprint(cfg.scenes)
    ps, extract_s = _prepare_patches(cfg, work, fingerprint, progress)
    tr, va, te = _split(ps)
    mean, std = normalization_stats(ps.x, tr)
    norm = Normalization(mean=mean, std=std)
    spec = model_spec(len(BAND_NAMES))
    problem = tile_size_problem(cfg.tile, spec.size_multiple)  # the encoder built, not a default
    if problem:
        raise ConfigError(f"setting 'tile' = {cfg.tile} {problem}")
    settings = {k: v for k, v in config_to_dict(cfg).items() if k not in ("cache_dir", "scenes")}
    run_key = hashlib.sha256(json.dumps([ps.meta["key"], settings], sort_keys=True, default=str).encode()).hexdigest()
    fitres = fit(ps.x, ps.y, tr, va, norm, cfg, work, spec=spec, run_key=run_key, resume=resume,
                 progress=progress, on_epoch_end=on_epoch_end)
    model = build_model(spec)
    model.load_state_dict(fitres.state_dict)
    model.eval()
    acc = _accuracy(model, fitres, ps, te, norm, cfg)

    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    bundle_id = f"{out.name}-{created[:10].replace('-', '')}-{run_key[:8]}"
    report = _report(bundle_id, acc, (tr, va, te))
    training = _training_summary(cfg, ps, fingerprint, fitres, acc, report["patches"], settings,
                                 {"patch_extraction_s": extract_s, "t_start": t_start})
    bundle = Bundle(
        path=out, bundle_id=bundle_id, bands=BAND_NAMES, preprocessing=Preprocessing.from_dict(ps.meta["preprocessing"]),
        normalization=norm, model=spec, tile_size=cfg.tile, overlap=cfg.effective_overlap, threshold=acc.threshold,
        training=training, created=created,
    )
    _write_bundle(bundle, model, fitres, report, ps.x, ps.y, _pick_val_tiles(ps, va, cfg.max_val_tiles))
    for f in ("checkpoint.pt", "log.csv"):
        (work / f).unlink(missing_ok=True)
    if cfg.cache_dir is None:
        log.info("patch cache kept in %s (delete it to free space)", work / "cache")
    return out


def _check_output(cfg: TrainConfig, out: Path, overwrite: bool) -> Path:
    """Refuse a run without training scenes or onto an existing bundle; return the work folder."""
    if not any(s.split == "train" for s in cfg.scenes):
        raise UsageError("no training scene given; pass --scene and --labels (or [[scenes]] tables in the config)")
    if out.exists() and not overwrite:
        raise UsageError(f"output folder {out} already exists; pass --overwrite to replace it or choose another --out")
    ensure_output_dir(out.parent if str(out.parent) else Path("."), "--out")
    return out.parent / f"{out.name}.work"


def _split(ps: PatchSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train, validation and test patches; refuses a validation set without mines."""
    tr, va, te = ps.indices("train"), ps.indices("val"), ps.indices("test")
    if len(va) == 0 or not (ps.y[va] == 1).any():
        raise InputError(
            "no validation patch with mine pixels is left after dropping nodata patches; "
            "lower block_tiles, raise val_fraction or max_nodata"
        )
    return tr, va, te


@dataclass(frozen=True)
class _Accuracy:
    threshold: float
    tuned: bool
    validation: dict[str, Any]
    test: dict[str, Any] | None


def _accuracy(model: Any, fitres: Any, ps: PatchSet, te: np.ndarray, norm: Normalization,
              cfg: TrainConfig) -> _Accuracy:
    """The decision threshold (given, or tuned on validation) and the accuracy it gives on the
    validation and test patches."""
    import torch

    from .loop import hist_confusion, predict_logits, tune_threshold

    tuned = cfg.threshold == "tune"
    threshold = tune_threshold(fitres.val_hist) if tuned else float(cfg.threshold)
    val_rep = accuracy_report(hist_confusion(fitres.val_hist, threshold))
    test_rep = None
    if len(te):
        lg = predict_logits(model, ps.x[te], norm, torch.device("cpu"), batch_size=cfg.batch_size)
        cut = float(np.log(threshold / (1.0 - threshold)))  # prob >= t  <=>  logit >= logit(t)
        valid = np.isfinite(ps.x[te]).all(axis=1)
        test_rep = accuracy_report(confusion_matrix((lg >= cut).astype(np.uint8), ps.y[te], valid))
    return _Accuracy(threshold, tuned, val_rep, test_rep)


def _report(bundle_id: str, acc: _Accuracy, split: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, Any]:
    """``report.json``: the accuracy figures and what they were measured on."""
    tr, va, te = split
    return {
        "bundle_id": bundle_id,
        "threshold": acc.threshold,
        "threshold_tuned_on_validation": acc.tuned,
        "note": (
            "pixel accuracy over the validation patches (spatially blocked hold-out)"
            + ("; the threshold was tuned on them, so these figures are optimistic" if acc.tuned else "")
        ),
        "validation": acc.validation,
        "test": acc.test,
        "patches": {"train": int(len(tr)), "val": int(len(va)), "test": int(len(te))},
    }


def _training_summary(cfg: TrainConfig, ps: PatchSet, fingerprint: str, fitres: Any, acc: _Accuracy,
                      patches: dict[str, int], settings: dict[str, Any], times: dict[str, float]) -> dict[str, Any]:
    """The bundle's ``training`` section: inputs, run, figures, versions, timings, settings."""
    import torch

    keys = ("overall_accuracy", "kappa", "iou_mine", "f1_mine")
    return {
        "data_fingerprint": fingerprint,
        "patch_cache_key": ps.meta["key"],
        "edges_source": ps.meta["edges_source"],
        "epochs_run": fitres.epochs_run,
        "epochs_max": cfg.epochs,
        "best_epoch": fitres.best_epoch,
        "stopped_early": fitres.stopped_early,
        "seed": cfg.seed,
        "validation": {k: acc.validation[k] for k in keys},
        "test": None if acc.test is None else {k: acc.test[k] for k in keys},
        "patches": patches,
        "code_version": _code_version(),
        "torch_version": torch.__version__,
        "device": fitres.device,
        "amp": fitres.amp,
        "timings": {
            "patch_extraction_s": round(times["patch_extraction_s"], 2),
            "training_s": round(fitres.train_seconds, 2),
            "total_s": round(time.perf_counter() - times["t_start"], 2),
            "tiles_per_s": round(fitres.tiles_per_second, 3),
        },
        "config": {**settings, "scenes": config_to_dict(cfg)["scenes"]},
    }


def _write_bundle(bundle: Bundle, model: Any, fitres: Any, report: dict[str, Any], x: np.ndarray, y: np.ndarray,
                  val_pick: np.ndarray) -> None:
    """Write the bundle into a temporary folder beside ``bundle.path``, check that the runtime
    loads it, and rename it into place (replacing an older one); nothing is left on failure."""
    from .loop import plot_curves, write_log_csv
    from .model import save_model

    with atomic_folder(bundle.path) as tmp:
        save_model(model, bundle.model, tmp / MODEL_FILES["pytorch"])
        np.savez_compressed(tmp / MODEL_FILES["val_tiles"], x=np.asarray(x[val_pick], dtype=np.float32),
                            y=np.asarray(y[val_pick], dtype=np.uint8))
        atomic_write_json(tmp / "report.json", report)
        write_log_csv(tmp / "log.csv", fitres.history)
        plot_curves(tmp / "curves.png", fitres.history, fitres.best_epoch)
        replace(bundle, path=tmp).save()
        load_bundle(tmp)  # the runtime must accept what we wrote


# -- evaluation ---------------------------------------------------------------------------------


def evaluate(
    bundle: str | os.PathLike[str],
    scenes: Sequence[SceneSpec],
    *,
    device: str = "auto",
    block: int = 1024,
    batch_size: int = 8,
    progress: bool = True,
    inputs: InputOptions | None = None,
) -> dict[str, Any]:
    """Accuracy of a bundle's model over whole scenes with reference labels.

    Each scene is predicted block by block with overlapping tiles blended as at run time
    (:mod:`coalmine.runtime.tiling`), thresholded at the bundle's threshold, and compared with
    the labels on every pixel that is valid in the image and labelled.

    Args:
        bundle: the bundle folder.
        scenes: scenes with labels (stacks, or raw input with ``s1``).
        device: torch device ("auto", "cpu", "cuda").
        block: block size for reading (memory depends on it, not on the scene).
        batch_size: tiles per forward pass.
        progress: tqdm bar on stderr.
        inputs: what raw scenes are (Sentinel-2 offset, Sentinel-1 units, SCL mask).

    Returns:
        ``{"bundle_id", "threshold", "scenes": [{"scene", ...report}], "total": report}``.

    Raises:
        BundleError: unusable bundle; InputError: scene/labels problems; UsageError: no scene.
    """
    import torch
    from coalmine.runtime.preprocess.stack import check_preprocessing
    from coalmine.runtime.tiling import TileBlender, scene_tiling, weight_window
    from tqdm import tqdm

    from .loop import resolve_device
    from .model import load_model

    if not scenes:
        raise UsageError("no scene to evaluate; pass --scene and --labels")
    b = load_bundle(bundle)
    dev = resolve_device(device)
    model = load_model(b, str(dev))
    win = weight_window(b.tile_size, b.overlap)

    def infer(xb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(xb)).to(dev)).float().cpu().numpy()

    logit_t = float(np.log(b.threshold / (1.0 - b.threshold)))
    per_scene = []
    total = np.zeros((2, 2), dtype=np.int64)
    for spec in scenes:
        _check_stack_bands(spec)
        with contextlib.closing(_open(spec, b.preprocessing, inputs)) as src:
            check_preprocessing(src, b)
            geo = _geo(src)
            lab = labels_on_grid(spec.labels, geo, scene_name=str(spec.path), label_field=spec.label_field)
            cm = np.zeros((2, 2), dtype=np.int64)
            # the runtime's tiling: tiles on one grid fixed to the scene, whatever the block size
            blocks = scene_tiling(geo.height, geo.width, tile=b.tile_size, overlap=b.overlap, block=block)
            blender = TileBlender(b.tile_size, b.overlap, win)
            for blk in tqdm(blocks, desc=f"evaluate {Path(spec.path).name}", unit="block", disable=not progress):
                x = src.read(blk.read)
                rs, cs = blk.core_in_read
                valid = np.isfinite(x[:, rs, cs]).all(axis=0)
                logits = blender.block_logits(blk, b.normalization.apply(x), infer, batch_size=batch_size)
                r0, c0 = int(blk.core.row_off), int(blk.core.col_off)
                ref = lab[r0 : r0 + int(blk.core.height), c0 : c0 + int(blk.core.width)]
                cm += confusion_matrix((logits >= logit_t).astype(np.uint8), ref, valid)
        if cm.sum() == 0:
            raise InputError(
                f"scene {spec.path} has no pixel that is both valid and labelled by {spec.labels}; "
                "check that the labels belong to this scene"
            )
        total += cm
        per_scene.append({"scene": str(spec.path), "labels": str(spec.labels), **accuracy_report(cm)})
    return {
        "bundle_id": b.bundle_id,
        "bundle": str(b.path),
        "threshold": b.threshold,
        "label_nodata": LABEL_NODATA,
        "scenes": per_scene,
        "total": accuracy_report(total),
    }


__all__ = ["train", "evaluate", "data_fingerprint"]
