"""The settings of a run and the description of its inputs: one home for defaults and rules.

:class:`RunOptions` holds every coal-run setting besides the paths (scene, bundle, output
folder, Sentinel-1 file, AOI file); :class:`InputOptions` describes raw inputs (Sentinel-2 DN
offset, Sentinel-1 units, SCL cloud mask) and is shared by coal-prepare, coal-run, coal-train
and the monitor configuration. ``coal-run`` builds RunOptions from its command line,
:func:`~coalmine.runtime.run.run_scene` from its keyword arguments and ``coal-monitor`` from the
``[run]`` table of its configuration, so each default and each rule is written here once.

Rules that need no bundle are checked when an instance is made; :meth:`RunOptions.resolve`
fills the bundle's defaults (tile, overlap, threshold) and checks what depends on the model
(the tile divisor, the overlap). A broken rule raises :class:`OptionError`, which names the
command-line option (``--gpu-mem 0 must be ...``); :meth:`OptionError.in_config` names the
key of a configuration file instead (``monitor.toml: run.gpu_mem_gb = 0 must be ...``).

Example:
    >>> opts = RunOptions(backend="cpu", tile=512)
    >>> opts.tile, opts.gpu_mem_gb
    (512, 6.0)
    >>> RunOptions(threshold=1.5)
    Traceback (most recent call last):
    ...
    coalmine.runtime.options.OptionError: --threshold 1.5 must lie strictly between 0 and 1 (e.g. 0.5)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, UsageError

#: Inference backends (``auto`` picks the fastest that works); ``backends`` builds them.
BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "cuda", "cpu")
#: Which ONNX model ONNX Runtime runs; each names a file of the bundle (``backends``).
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "int8")

#: Units of Sentinel-1 values ("auto" tells linear power from dB by the values).
S1_UNITS: tuple[str, ...] = ("auto", "linear", "db")

#: Default block core size (pixels). 23 float32 bands of a 1088^2 read window = 109 MB.
DEFAULT_BLOCK = 1024
#: Smallest block: below it the halo of context outweighs the block.
MIN_BLOCK = 64
#: Smallest default inference tile: 256 px keeps the overlap overhead at (256/224)^2 = 1.3x
#: instead of (128/96)^2 = 1.8x for a 128 px training tile; the network is fully convolutional.
MIN_DEFAULT_TILE = 256
#: Largest tile and block: one 23-band float32 tile of 4096 px takes 1.5 GB, a block of
#: 8192 px with its reader and writer copies about 19 GB, beyond a field workstation.
MAX_TILE = 4096
MAX_BLOCK = 8192


class OptionError(UsageError):
    """A setting breaks its rule. ``str()`` names the command-line option; :meth:`in_config`
    gives the same sentence naming the key of a configuration file."""

    def __init__(self, name: str, value: Any, rule: str, shown: str | None = None) -> None:
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"{CLI_NAMES.get(name, name)} {shown or _show(value)} {rule}")

    def in_config(self, source: Any, table: str) -> ConfigError:
        """The same refusal as a :class:`ConfigError` naming ``source`` and ``table.key``."""
        return ConfigError(f"{source}: {table}.{self.name} = {self.value!r} {self.rule}")


def _show(value: Any) -> str:
    """A value as the user wrote it on the command line: 1000 for 1000.0, text quoted."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value}"


def _number(name: str, value: Any, *, integer: bool = False) -> None:
    """Refuse booleans, non-numbers and NaN/infinity."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise OptionError(name, value, "must be " + ("a whole number" if integer else "a number"),
                          shown=repr(value))
    if not integer and not math.isfinite(value):
        raise OptionError(name, value, "must be a finite number")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise OptionError(name, value, f"is not one of {', '.join(choices)}")


@dataclass(frozen=True)
class InputOptions:
    """What raw inputs are, where the files do not say it themselves.

    Attributes:
        s2_offset: Sentinel-2 DN offset (``BOA_ADD_OFFSET``, e.g. -1000), overriding the
            product metadata; None: from the metadata, else guessed from the date.
        s1_units: units of the Sentinel-1 values: "auto", "linear" or "db".
        scl: a Sentinel-2 SCL raster masking cloud, shadow, cirrus and no-data pixels, or
            "auto" for the SCL file beside the Sentinel-2 bands; None: no mask.
        dem: a DEM raster for terrain correction of a Sentinel-1 GRD product; None: the
            product's geolocation-grid heights.
        orbit: a Sentinel-1 orbit file (``.EOF``), or a folder of them (the one covering the
            acquisition is used), for a GRD product; None: the annotation's state vectors.
    """

    s2_offset: float | None = None
    s1_units: str = "auto"
    scl: str | None = None
    dem: str | None = None
    orbit: str | None = None

    def __post_init__(self) -> None:
        if self.s2_offset is not None:
            _number("s2_offset", self.s2_offset)
            if self.s2_offset > 0:
                raise OptionError(
                    "s2_offset", self.s2_offset,
                    "is positive; it is the BOA_ADD_OFFSET added to DN (reflectance = (DN + offset) "
                    "/ 10000): use -1000 for processing baseline 04.00 and later, 0 before")
        _choice("s1_units", self.s1_units, S1_UNITS)
        if self.scl is not None and (not isinstance(self.scl, (str, os.PathLike)) or not str(self.scl)):
            raise OptionError("scl", self.scl, "must be a path or 'auto'")
        for name in ("dem", "orbit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (str, os.PathLike)) or not str(v)):
                raise OptionError(name, v, "must be a path")

    def reader_args(self) -> dict[str, Any]:
        """Keyword arguments of ``open_scene``/``prepare_scene``/``RawSource`` for these inputs."""
        return {"s2_offset": self.s2_offset, "s1_units": self.s1_units,
                "scl": None if self.scl is None else str(self.scl),
                "dem": None if self.dem is None else str(self.dem),
                "orbit": None if self.orbit is None else str(self.orbit)}


#: Speckle filters: Lee (in linear power) or none, for input that is already filtered.
SPECKLE_FILTERS: tuple[str, ...] = ("lee", "none")
#: GLCM bin edge methods (a file or bundle may be given instead).
EDGE_METHODS: tuple[str, ...] = ("equal_width", "equal_frequency")
#: Largest speckle window: beyond it the filter blurs the pits it should keep.
MAX_SPECKLE_WINDOW = 31


@dataclass(frozen=True)
class PreprocessingOptions:
    """How a stack is computed from raw inputs: the choice of coal-prepare and coal-train.

    coal-run and coal-monitor take these from the bundle (the model was trained on them);
    :meth:`preprocessing` turns them into the :class:`~coalmine.runtime.bundle.Preprocessing`
    recorded in stacks and bundles.

    Attributes:
        speckle: "lee" or "none"; None: Lee, or the given bundle's filter.
        speckle_window: odd Lee window in pixels; None: 5, or the given bundle's.
        glcm_edges: "equal_width" (over ``db_range``), "equal_frequency" (coal-train: quantiles
            of the training VV), or a model bundle (folder or bundle.json: its whole
            preprocessing) or a JSON/text file of increasing dB thresholds; None: the
            command's default.
        db_range: the dB range of equal-width edges; None: -25 to 5.
    """

    speckle: str | None = None
    speckle_window: int | None = None
    glcm_edges: str | None = None
    db_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.speckle is not None:
            _choice("speckle", self.speckle, SPECKLE_FILTERS)
        if self.speckle_window is not None:
            _number("speckle_window", self.speckle_window, integer=True)
            if not (1 <= self.speckle_window <= MAX_SPECKLE_WINDOW and self.speckle_window % 2 == 1):
                raise OptionError("speckle_window", self.speckle_window,
                                  f"must be an odd number >= 1 (at most {MAX_SPECKLE_WINDOW}), e.g. 5")
        if self.glcm_edges is not None and (not isinstance(self.glcm_edges, (str, os.PathLike))
                                            or not str(self.glcm_edges)):
            raise OptionError("glcm_edges", self.glcm_edges,
                              f"must be {' or '.join(EDGE_METHODS)}, a bundle or a file of edges")
        if self.db_range is not None:
            lo_hi = tuple(self.db_range)
            if len(lo_hi) != 2:
                raise OptionError("db_range", self.db_range, "must be two numbers, LOW HIGH (dB)")
            for v in lo_hi:
                _number("db_range", v)
            if not lo_hi[0] < lo_hi[1]:
                raise OptionError("db_range", self.db_range, "must have its low end below its high end",
                                  shown=" ".join(f"{v:g}" for v in lo_hi))
            if self.glcm_edges not in (None, "equal_width"):
                raise OptionError("db_range", self.db_range,
                                  "is for equal-width edges: give either --glcm-edges or --db-range, not both",
                                  shown=" ".join(f"{v:g}" for v in lo_hi))

    def preprocessing(self, default_edges: str = "equal_width", *, from_data: bool = False) -> tuple[Any, str]:
        """The Preprocessing these options ask for, and where its GLCM edges come from.

        Args:
            default_edges: the method when ``glcm_edges`` is None.
            from_data: the caller computes "equal_frequency" edges from its data (coal-train);
                elsewhere that method is refused.

        Returns:
            ``(preprocessing, edges)`` with ``edges`` one of "equal_width" (filled in),
            "equal_frequency" (the caller computes them from data), "given" (a file of
            edges) or "bundle" (a bundle's whole preprocessing; the speckle options given
            here still win).

        Raises:
            OptionError / InputNotFoundError / BundleError: a bad file or bundle.
        """
        from .bundle import GlcmParams, Preprocessing, S1Params

        method = str(self.glcm_edges) if self.glcm_edges is not None else default_edges
        s1 = {k: v for k, v in (("speckle_filter", self.speckle), ("speckle_window", self.speckle_window))
              if v is not None}
        if method == "equal_frequency" and not from_data:
            raise OptionError("glcm_edges", method, "needs training data: coal-train computes those edges; "
                              "give equal_width, a bundle or a file of edges here")
        if method in EDGE_METHODS:
            glcm = GlcmParams(db_range=tuple(self.db_range)) if self.db_range else GlcmParams()
            if method == "equal_width":
                glcm = glcm.with_default_edges()
            return Preprocessing(s1=S1Params(**s1), glcm=glcm), method
        glcm_or_prep = edges_from_file(Path(method))
        if isinstance(glcm_or_prep, GlcmParams):
            return Preprocessing(s1=S1Params(**s1), glcm=glcm_or_prep), "given"
        return replace(glcm_or_prep, s1=replace(glcm_or_prep.s1, **s1)), "bundle"


def edges_from_file(path: Path) -> Any:
    """GLCM edges from ``--glcm-edges PATH``: a bundle (folder or bundle.json) gives its whole
    Preprocessing, a JSON list (or ``{"edges": [...]}``) or a text list of dB values gives
    GlcmParams with those edges.

    Raises:
        InputNotFoundError: the path does not exist.
        OptionError: the file holds no strictly increasing list of numbers.
        BundleError: a bundle that cannot be read.
    """
    import json

    from .bundle import BUNDLE_JSON, GlcmParams, load_bundle
    from .errors import InputNotFoundError

    if not path.exists():
        raise InputNotFoundError(f"--glcm-edges {path} does not exist; give {' or '.join(EDGE_METHODS)}, a "
                                 "bundle folder, its bundle.json, or a JSON/text file of bin edges")
    if path.is_dir() or path.name == BUNDLE_JSON:
        return load_bundle(path).preprocessing
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = text.replace(",", " ").split()
    if isinstance(data, dict):
        data = data.get("edges", data.get("preprocessing", {}).get("glcm", {}).get("edges"))
    try:
        edges = tuple(float(x) for x in data)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise OptionError("glcm_edges", str(path), "does not hold a list of numbers (bin edges in dB); "
                          "write them as a JSON list or one per line", shown=str(path)) from None
    if len(edges) < 1 or not all(math.isfinite(e) for e in edges) or any(
            a >= b for a, b in zip(edges, edges[1:], strict=False)):
        raise OptionError("glcm_edges", str(path), f"holds {len(edges)} edges; they must be finite and "
                          "strictly increasing", shown=str(path))
    return GlcmParams(levels=len(edges) + 1, edges=edges, edges_method="given", db_range=(edges[0], edges[-1]))


#: The option each setting has on the command line (the name in messages).
CLI_NAMES: dict[str, str] = {
    "backend": "--backend", "precision": "--precision", "tile": "--tile", "overlap": "--overlap",
    "batch_size": "--batch-size", "gpu_mem_gb": "--gpu-mem", "threshold": "--threshold",
    "min_area_ha": "--min-area", "block": "--block", "threads": "--threads", "prefix": "--prefix",
    "aoi_name_field": "--aoi-name-field", "s2_offset": "--s2-offset", "s1_units": "--s1-units",
    "scl": "--scl", "dem": "--dem", "orbit": "--orbit", "speckle": "--speckle",
    "speckle_window": "--speckle-window", "glcm_edges": "--glcm-edges", "db_range": "--db-range",
}


@dataclass(frozen=True)
class RunOptions:
    """Every setting of a coal-run run, with its default; checked when made.

    Attributes:
        backend: "auto", "tensorrt", "cuda" or "cpu".
        precision: the ONNX model ONNX Runtime runs: "auto" (the bundle's INT8 model on the
            CPU / FP16 model on CUDA when present, else FP32), "fp32", "fp16" or "int8".
        tile: inference tile in pixels, a multiple of the model's size divisor; None:
            ``max(bundle tile, 256)``.
        overlap: tile overlap in pixels, at most half the tile; None: the bundle's.
        batch_size: tiles per backend call, or "auto" (fits the GPU budget; 4 on the CPU).
        gpu_mem_gb: GPU memory budget in GiB.
        threshold: decision threshold in (0, 1); None: the bundle's.
        min_area_ha: minimum mapping unit of the mine polygons, in hectares.
        block: block core size in pixels; memory is bounded by it, never by the scene.
        threads: CPU threads for ONNX Runtime; None: all cores.
        prefix: output file prefix; None: the scene's file stem. A plain name (no folder).
        aoi_name_field: the AOI attribute holding each area's name; None: ``name``.
        progress: show a progress bar on stderr.
        inputs: what raw inputs are (:class:`InputOptions`).
    """

    backend: str = "auto"
    precision: str = "auto"
    tile: int | None = None
    overlap: int | None = None
    batch_size: int | str = "auto"
    gpu_mem_gb: float = 6.0
    threshold: float | None = None
    min_area_ha: float = 0.0
    block: int = DEFAULT_BLOCK
    threads: int | None = None
    prefix: str | None = None
    aoi_name_field: str | None = None
    progress: bool = True
    inputs: InputOptions = field(default_factory=InputOptions)

    def __post_init__(self) -> None:
        _choice("backend", self.backend, BACKENDS)
        _choice("precision", self.precision, PRECISIONS)
        if self.tile is not None:
            _number("tile", self.tile, integer=True)
            if not 0 < self.tile <= MAX_TILE:
                raise OptionError("tile", self.tile, f"must lie between 1 and {MAX_TILE} pixels (e.g. 512)")
        if self.overlap is not None:
            _number("overlap", self.overlap, integer=True)
            if self.overlap < 0:
                raise OptionError("overlap", self.overlap, "must be >= 0 pixels")
        if self.batch_size != "auto" and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                          or self.batch_size < 1):
            raise OptionError("batch_size", self.batch_size, "must be a positive integer or 'auto'")
        _number("gpu_mem_gb", self.gpu_mem_gb)
        if not self.gpu_mem_gb > 0:
            raise OptionError("gpu_mem_gb", self.gpu_mem_gb, "must be a positive number of GiB (e.g. 6)")
        if self.threshold is not None:
            _number("threshold", self.threshold)
            if not 0.0 < self.threshold < 1.0:
                raise OptionError("threshold", self.threshold, "must lie strictly between 0 and 1 (e.g. 0.5)")
        _number("min_area_ha", self.min_area_ha)
        if self.min_area_ha < 0:
            raise OptionError("min_area_ha", self.min_area_ha, "must be >= 0 hectares")
        _number("block", self.block, integer=True)
        if self.block < MIN_BLOCK:
            raise OptionError("block", self.block,
                              f"is too small; use at least {MIN_BLOCK} (default {DEFAULT_BLOCK})")
        if self.block > MAX_BLOCK:
            raise OptionError("block", self.block,
                              f"is too large; use at most {MAX_BLOCK} (default {DEFAULT_BLOCK})")
        if self.threads is not None:
            _number("threads", self.threads, integer=True)
            if self.threads < 1:
                raise OptionError("threads", self.threads, "must be at least 1")
        if self.prefix is not None:
            if not isinstance(self.prefix, str) or not self.prefix.strip() or self.prefix in (".", ".."):
                raise OptionError("prefix", self.prefix, "must be a non-empty file name prefix")
            if "/" in self.prefix or os.sep in self.prefix or (os.altsep and os.altsep in self.prefix):
                raise OptionError("prefix", self.prefix,
                                  "must be a plain name without a folder; choose the folder with --out")
        if self.aoi_name_field is not None and (not isinstance(self.aoi_name_field, str)
                                                or not self.aoi_name_field):
            raise OptionError("aoi_name_field", self.aoi_name_field, "must be a non-empty attribute name")
        if not isinstance(self.progress, bool):
            raise OptionError("progress", self.progress, "must be true or false")
        if not isinstance(self.inputs, InputOptions):
            raise TypeError(f"inputs must be InputOptions, got {type(self.inputs).__name__}")

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def build(cls, options: RunOptions | None = None, **settings: Any) -> RunOptions:
        """``options`` (or the defaults) with ``settings`` applied: any field, and the input
        fields ``s2_offset``, ``s1_units``, ``scl`` by name.

        Raises:
            OptionError: a value breaks its rule.
            TypeError: an unknown setting name (a programming error, as for any function).
        """
        base = options or cls()
        inputs = {k: settings.pop(k) for k in INPUT_KEYS if k in settings}
        unknown = sorted(set(settings) - RUN_KEYS)
        if unknown:
            raise TypeError(f"unknown run setting(s) {', '.join(unknown)}; known: {', '.join(sorted(ALL_KEYS))}")
        if inputs:
            settings["inputs"] = replace(base.inputs, **inputs)
        return replace(base, **settings) if settings else base

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: Any, name: str = "run",
                   exclude: frozenset[str] = frozenset()) -> RunOptions:
        """Build from a configuration table (TOML ``[run]``), refusing unknown keys and bad values.

        Args:
            table: the parsed table.
            source: the configuration file (named in messages).
            name: the table's name (named in messages).
            exclude: keys the table may not hold (set elsewhere in that configuration).

        Raises:
            ConfigError: naming the file and ``name.key``.
        """
        from .configfile import refuse_unknown

        refuse_unknown(dict(table), ALL_KEYS - exclude, source, name)
        try:
            return cls.build(**dict(table))
        except OptionError as exc:
            raise exc.in_config(source, name) from None

    def given(self) -> dict[str, Any]:
        """The settings that differ from the defaults, flat (input fields by name): what a
        configuration would have to say to build these options."""
        default = RunOptions()
        out = {k: v for k, v in self.flat().items() if v != default.flat()[k]}
        return out

    def flat(self) -> dict[str, Any]:
        """Every setting as ``{name: value}``, input fields by name (JSON-ready)."""
        d = asdict(self)
        d.update(d.pop("inputs"))
        return d

    # -- the bundle's part ------------------------------------------------------------------
    def resolve(self, tile_size: int, overlap: int, threshold: float, size_multiple: int,
                engine_tile: int | None = None) -> RunOptions:
        """These options with the bundle's defaults filled in and the model's rules checked.

        Args:
            tile_size, overlap, threshold: the bundle's training tile, overlap and threshold.
            size_multiple: the model's input-size divisor (``bundle.model.size_multiple``).
            engine_tile: the tile of the engine profile coal-export recorded in the bundle
                (``bundle.engine_profile``): the default tile when given, so the run finds the
                gated engine.

        Raises:
            OptionError: the tile is not a multiple of ``size_multiple`` or the overlap is not
                within ``[0, tile / 2]``.
        """
        from .tiling import overlap_problem, tile_size_problem

        tile = self.tile if self.tile is not None else (engine_tile or max(tile_size, MIN_DEFAULT_TILE))
        ov = self.overlap if self.overlap is not None else overlap
        problem = tile_size_problem(tile, size_multiple)
        if problem:
            raise OptionError("tile", tile, problem)
        problem = overlap_problem(tile, ov)
        if problem:
            raise OptionError("overlap", ov, problem)
        return replace(self, tile=tile, overlap=ov,
                       threshold=self.threshold if self.threshold is not None else threshold)


#: Setting names: those of RunOptions itself, those of its inputs, and both; the preprocessing's.
PREPROCESSING_KEYS: frozenset[str] = frozenset(f.name for f in fields(PreprocessingOptions))
INPUT_KEYS: frozenset[str] = frozenset(f.name for f in fields(InputOptions))
RUN_KEYS: frozenset[str] = frozenset(f.name for f in fields(RunOptions)) - {"inputs"}
ALL_KEYS: frozenset[str] = RUN_KEYS | INPUT_KEYS
