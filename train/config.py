"""Training configuration: a TOML file and/or command-line options -> :class:`TrainConfig`.

A config file has top-level training settings and one ``[[scenes]]`` table per scene (the
same tables as coal-monitor's, :mod:`coalmine.runtime.scenes`)::

    epochs = 200
    tile = 128
    seed = 0

    [[scenes]]
    path = "stacks/tapin_2019.tif"        # a 23-band stack from coal-prepare
    labels = "labels/mines_2019.gpkg"     # raster (any grid) or polygons (GeoJSON/GeoPackage)

    [[scenes]]
    path = "$DATA/S2_2020/"               # raw Sentinel-2 (folder, multi-band GeoTIFF or SAFE) ...
    s1 = "raw/S1A_IW_GRDH_1SDV_2020….zip"  # ... with its Sentinel-1: a GRD product or a sigma0 raster
    dem = "dem/copernicus_30m.vrt"        # optional: terrain correction of a GRD product
    labels = "labels/mines_2020.tif"
    split = "test"                        # optional: a held-out test scene, never trained on

The file is read as coal-monitor's is (:mod:`coalmine.runtime.configfile`): relative paths
are resolved against its folder, ``~`` and environment variables are expanded (an unset one is
refused), and unknown keys and wrong types are refused naming the key and the file. Files
written before the two configurations shared one vocabulary say ``[[scene]]`` and
``scene = ...``: they are read the same, with a warning naming the new spelling. Command-line
options override the file's values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from coalmine.runtime.bundle import ModelSpec
from coalmine.runtime.configfile import expand_path, read_toml, refuse_unknown, tables, typed
from coalmine.runtime.errors import ConfigError
from coalmine.runtime.options import EDGE_METHODS, InputOptions, OptionError, PreprocessingOptions
from coalmine.runtime.scenes import SPLITS, SceneSpec, scenes_from_tables
from coalmine.runtime.tiling import tile_size_problem

#: The keys of a training ``[[scenes]]`` table; ``scene`` is the old spelling of ``path``.
SCENE_KEYS = ("path", "s1", "labels", "split", "label_field", "dem", "orbit")


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting, with the defaults ``coal-train`` uses.

    Example:
        >>> cfg = TrainConfig(scenes=(SceneSpec(Path("s.tif"), Path("l.tif")),), epochs=5)
        >>> cfg.tile, cfg.batch_size
        (128, 8)
    """

    scenes: tuple[SceneSpec, ...] = ()
    # -- patches -------------------------------------------------------------------------------
    #: Patch (training tile) size in pixels; a multiple of 32 (the study: 128).
    tile: int = 128
    #: Step between candidate patches; = tile gives non-overlapping patches.
    stride: int | None = None
    #: A patch counts as a mine patch when at least this share of its labelled pixels is mine.
    min_mine_fraction: float = 0.01
    #: Patches without mine kept per mine patch (sampled at random, seeded).
    background_ratio: float = 0.5
    #: Patches with more than this share of nodata (image or label) are left out.
    max_nodata: float = 0.2
    #: Upper bound on patches taken from the train scenes (None: all).
    max_patches: int | None = None
    # -- spatially blocked split ---------------------------------------------------------------
    #: Share of spatial blocks (weighted by mine pixels) that go to validation.
    val_fraction: float = 0.2
    #: Block edge length in tiles: the split assigns k x k-tile blocks, not single patches.
    block_tiles: int = 4
    #: Training patches closer than this (pixels) to a validation patch are dropped.
    buffer: int | None = None
    # -- raw inputs: what they are and how the stack is computed (coalmine.runtime.options) -------
    #: Sentinel-2 DN offset of raw scenes (None: from the metadata, else guessed from the date).
    s2_offset: float | None = InputOptions.s2_offset
    #: Units of the Sentinel-1 values: "auto", "linear" or "db".
    s1_units: str = InputOptions.s1_units
    #: Sentinel-2 SCL raster (or "auto") masking clouds of raw scenes; None: no mask.
    scl: str | None = InputOptions.scl
    #: DEM and orbit file/folder for the raw scenes' Sentinel-1 GRD products (a [[scenes]]
    #: table's own ``dem``/``orbit`` wins); None: the products' own heights and state vectors.
    dem: str | None = InputOptions.dem
    orbit: str | None = InputOptions.orbit
    #: Speckle filter ("lee", "none") and Lee window; None: lee, 5.
    speckle: str | None = PreprocessingOptions.speckle
    speckle_window: int | None = PreprocessingOptions.speckle_window
    #: GLCM bin edges: "equal_frequency" (from the training VV dB), "equal_width" (over
    #: ``db_range``), or a bundle / file of edges (see ``PreprocessingOptions``).
    glcm_edges: str = "equal_frequency"
    #: dB range of equal-width edges (None: -25 to 5).
    db_range: tuple[float, float] | None = PreprocessingOptions.db_range
    # -- optimisation --------------------------------------------------------------------------
    epochs: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    #: Early stopping: epochs without a better validation kappa before stopping (0: never).
    patience: int = 30
    dice_weight: float = 1.0
    seed: int = 0
    #: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    #: Mixed precision on CUDA (ignored on CPU).
    amp: bool = True
    #: Decision threshold: a number in (0, 1), or "tune" (maximise validation kappa).
    threshold: float | str = 0.5
    #: Optional local ResNet-34 encoder weights (.pth); nothing is downloaded.
    encoder_weights: Path | None = None
    # -- outputs -------------------------------------------------------------------------------
    #: Recommended overlap for inference tiles, stored in the bundle (None: a quarter of the
    #: tile, at most 32 px; see ``effective_overlap``).
    overlap: int | None = None
    #: Validation tiles saved raw in the bundle for export parity/calibration (at most).
    max_val_tiles: int = 32
    #: Patch cache folder (None: <out>.work/cache beside the output).
    cache_dir: Path | None = None

    @property
    def effective_stride(self) -> int:
        return self.stride or self.tile

    @property
    def effective_overlap(self) -> int:
        """The overlap stored in the bundle: the setting, or a quarter of the tile up to 32 px
        (32 for the study's 128 px tiles, 8 for 32 px tiles)."""
        return self.overlap if self.overlap is not None else min(32, self.tile // 4)

    @property
    def inputs(self) -> InputOptions:
        """What the raw scenes are (checked by InputOptions' rules)."""
        return InputOptions(s2_offset=self.s2_offset, s1_units=self.s1_units, scl=self.scl,
                            dem=self.dem, orbit=self.orbit)

    @property
    def preprocessing_options(self) -> PreprocessingOptions:
        """How the stacks of raw scenes are computed (checked by PreprocessingOptions' rules)."""
        return PreprocessingOptions(speckle=self.speckle, speckle_window=self.speckle_window,
                                    glcm_edges=self.glcm_edges, db_range=self.db_range)

    @property
    def effective_buffer(self) -> int:
        return self.tile // 2 if self.buffer is None else self.buffer

    def validate(self) -> TrainConfig:
        """Check value ranges; return self.

        Raises:
            ConfigError: naming the setting, its value and what is allowed.
        """

        def bad(key: str, want: str) -> ConfigError:
            return ConfigError(f"setting '{key}' = {getattr(self, key)!r} is invalid: {want}")

        problem = tile_size_problem(self.tile, ModelSpec().size_multiple)
        if problem:
            raise ConfigError(f"setting 'tile' = {self.tile} {problem}")
        if self.stride is not None and self.stride <= 0:
            raise bad("stride", "use a positive number of pixels")
        for k in ("min_mine_fraction", "max_nodata"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise bad(k, "use a share between 0 and 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise bad("val_fraction", "use a share strictly between 0 and 1, e.g. 0.2")
        if self.background_ratio < 0:
            raise bad("background_ratio", "use a number >= 0")
        if self.block_tiles < 1:
            raise bad("block_tiles", "use an integer >= 1")
        if self.buffer is not None and self.buffer < 0:
            raise bad("buffer", "use a number of pixels >= 0")
        if self.max_patches is not None and self.max_patches < 2:
            raise bad("max_patches", "use at least 2 (or leave it out)")
        try:
            _ = (self.inputs, self.preprocessing_options)  # their rules run when they are made
        except OptionError as exc:
            raise ConfigError(f"setting '{exc.name}' = {exc.value!r} {exc.rule}") from None
        for k in ("epochs", "batch_size"):
            if getattr(self, k) < 1:
                raise bad(k, "use an integer >= 1")
        for k in ("warmup_epochs", "patience", "max_val_tiles"):
            if getattr(self, k) < 0:
                raise bad(k, "use an integer >= 0")
        if self.lr <= 0 or self.weight_decay < 0 or self.dice_weight < 0:
            raise ConfigError(
                f"settings lr={self.lr}, weight_decay={self.weight_decay}, dice_weight={self.dice_weight} "
                "are invalid: lr must be > 0, the others >= 0"
            )
        if isinstance(self.threshold, str):
            if self.threshold != "tune":
                raise bad("threshold", "use a number between 0 and 1 or 'tune'")
        elif not 0.0 < float(self.threshold) < 1.0:
            raise bad("threshold", "use a number strictly between 0 and 1 or 'tune'")
        if not 0 <= self.effective_overlap < self.tile:
            raise bad("overlap", f"use pixels >= 0 and below the tile size {self.tile}")
        for s in self.scenes:
            if s.split not in SPLITS:
                raise ConfigError(f"scene {s.path}: split {s.split!r} is invalid; use 'train' or 'test'")
            if s.labels is None:
                raise ConfigError(f"scene {s.path} has no labels; give each training scene its labels")
        return self


_SCALAR_KEYS = {f.name for f in fields(TrainConfig)} - {"scenes"}
_PATH_KEYS = {"encoder_weights", "cache_dir"}


#: Settings whose default is None but whose values are whole numbers, numbers or strings.
_OPTIONAL_INTS = {"stride", "overlap", "buffer", "max_patches", "speckle_window"}
_OPTIONAL_FLOATS = {"s2_offset"}
_OPTIONAL_STRS = {"scl", "speckle", "dem", "orbit"}


def _coerce(key: str, value: Any, where: Any) -> Any:
    """Type-check one scalar setting against the dataclass default's type (NaN/inf refused)."""
    default = TrainConfig.__dataclass_fields__[key].default
    if key in _PATH_KEYS:
        if isinstance(value, Path):
            return value
        typed({key: value}, key, str, where)
        return Path(value)
    if key == "db_range":
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
            raise ConfigError(f"{where}: db_range must be two numbers [LOW, HIGH] in dB, got {value!r}")
        return (float(value[0]), float(value[1]))
    if key == "threshold":
        if value == "tune":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: threshold must be a number or \"tune\", got {value!r}")
        kind: type = float
    elif isinstance(default, bool):
        kind = bool
    elif isinstance(default, float) or key in _OPTIONAL_FLOATS:
        kind = float
    elif isinstance(default, int) or key in _OPTIONAL_INTS:
        kind = int
    elif isinstance(default, str) or key in _OPTIONAL_STRS:
        kind = str
    else:
        return value
    typed({key: value}, key, kind, where)
    if kind is float:
        if not math.isfinite(value):
            if where == "option":  # a command-line option: named as the user typed it
                raise ConfigError(f"--{key.replace('_', '-')} {value!r} must be a finite number")
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        return float(value)
    return value


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML training config (see the module docstring for the layout).

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: bad TOML, an unknown key (named), or a value of the wrong type.
    """
    data, src = read_toml(path, "config file")
    return config_from_dict(data, base=src.parent, where=src)


def config_from_dict(data: dict[str, Any], base: Path = Path("."), where: Any = "config") -> TrainConfig:
    """Build a validated :class:`TrainConfig` from parsed TOML (``scenes`` = list of tables).

    Raises:
        ConfigError: an unknown key (named) or a bad value.
    """
    data = dict(data)
    entries = tables(data, "scenes", where, old="scene")
    data.pop("scenes", None)
    data.pop("scene", None)
    refuse_unknown(data, _SCALAR_KEYS | {"scenes"}, where)
    kwargs: dict[str, Any] = {k: (expand_path(v, base, where, k) if k in _PATH_KEYS else _coerce(k, v, where))
                              for k, v in data.items()}
    for k in ("glcm_edges", "scl", "dem", "orbit"):  # a file named in the config is relative to it
        v = kwargs.get(k)
        if isinstance(v, str) and v not in (*EDGE_METHODS, "auto"):
            kwargs[k] = str(expand_path(v, base, where, k))
    kwargs["scenes"] = scenes_from_tables(entries, base, where, keys=SCENE_KEYS, required=("path", "labels"),
                                          old_keys={"scene": "path"})
    return TrainConfig(**kwargs).validate()


def with_overrides(cfg: TrainConfig, **overrides: Any) -> TrainConfig:
    """Return ``cfg`` with the non-None ``overrides`` applied (command-line options), validated.

    Raises:
        ConfigError: an unknown setting name or a bad value.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(clean) - _SCALAR_KEYS - {"scenes"})
    if unknown:
        raise ConfigError(f"unknown training setting '{unknown[0]}'")
    clean = {k: (v if k == "scenes" else _coerce(k, v, "option")) for k, v in clean.items()}
    return replace(cfg, **clean).validate()


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """JSON-ready dict of the settings (paths as strings) for the bundle's training summary."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.name == "scenes":
            out["scenes"] = [
                {k: (str(x) if isinstance(x, Path) else x) for k, x in vars(s).items() if k != "date"} for s in v
            ]
        elif isinstance(v, Path):
            out[f.name] = str(v)
        else:
            out[f.name] = v
    return out


__all__ = [
    "SceneSpec",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "with_overrides",
]
