"""The model bundle: ``bundle.json`` plus model files in one directory.

A bundle holds everything needed to turn raw inputs into a prediction without the
training code: band names and order, preprocessing (Sentinel-2 scaling, Sentinel-1
units and speckle filter, GLCM parameters and bin edges), per-band normalisation,
tile size and overlap, decision threshold, class names, model input/output names
and a training summary. ``coal-train`` writes it, ``coal-export`` adds ONNX files
and TensorRT engines, ``coal-run`` and ``coal-monitor`` read it.

Normalisation is applied in exactly one place, :meth:`Normalization.apply`, for
training and inference alike.

Example:
    >>> b = load_bundle("models/tapin")          # doctest: +SKIP
    >>> b.bands[:3], b.threshold, b.file("onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write_json
from .bands import BAND_NAMES
from .errors import BundleError
from .tiling import tile_size_problem

FORMAT_NAME = "coalmine-bundle"
FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"

#: Model file keys and their default names inside a bundle.
MODEL_FILES: dict[str, str] = {
    "pytorch": "model.pt",
    "onnx": "model.onnx",
    "onnx_fp16": "model.fp16.onnx",
    "onnx_int8": "model.int8.onnx",
    # Raw (un-normalised) validation tiles and labels saved by coal-train: the export parity
    # gates and INT8 calibration run on them. Arrays: "x" (N, 23, H, W) float32, "y" (N, H, W) uint8.
    "val_tiles": "val_tiles.npz",
}
ENGINES_DIR = "engines"

#: Default fixed dB range for equal-width GLCM bin edges (covers sigma0 VV over land and water).
DEFAULT_DB_RANGE: tuple[float, float] = (-25.0, 5.0)


@dataclass(frozen=True)
class GlcmParams:
    """GLCM texture parameters (SNAP's defaults: 9x9 window, displacement 4, 32 levels)."""

    window: int = 9
    distance: int = 4
    levels: int = 32
    #: L - 1 increasing dB thresholds; level = number of edges <= value.
    edges: tuple[float, ...] = ()
    #: "equal_width" over ``db_range`` or "equal_frequency" from training data.
    edges_method: str = "equal_width"
    db_range: tuple[float, float] = DEFAULT_DB_RANGE

    @property
    def halo(self) -> int:
        """Pixels of context a block needs on each side to be exact: W//2 + d."""
        return self.window // 2 + self.distance

    def with_default_edges(self) -> GlcmParams:
        """Return a copy whose ``edges`` are filled (equal-width over ``db_range``) if empty."""
        if self.edges:
            return self
        # Imported here: texture imports the compiled kernel, bundle must stay importable first.
        from coalmine.runtime.texture import equal_width_edges

        lo, hi = self.db_range
        edges = tuple(float(e) for e in equal_width_edges(lo, hi, self.levels))
        return replace(self, edges=edges, edges_method="equal_width")


@dataclass(frozen=True)
class S2Params:
    """Sentinel-2 L2A digital numbers -> surface reflectance."""

    #: reflectance = (DN + offset) / scale
    scale: float = 10000.0
    #: "baseline" = -1000 from processing baseline 04.00 (products from 2022-01-25) on, else 0.
    offset_rule: str = "baseline"
    nodata_dn: int = 0
    #: Resampling of the 20 m bands onto the 10 m grid.
    resampling: str = "bilinear"


@dataclass(frozen=True)
class S1Params:
    """Sentinel-1 sigma0 VV handling."""

    #: Units of the input as given to prepare ("auto" detects linear power vs dB).
    units: str = "auto"
    #: "lee" or "none" (for input that is already speckle-filtered).
    speckle_filter: str = "lee"
    speckle_window: int = 5
    resampling: str = "bilinear"
    #: How VV was made: "raster" (a calibrated raster made elsewhere: SNAP, GEE, ASF, ...) or
    #: "grd" (from a GRD product by :mod:`coalmine.runtime.preprocess.s1grd`).
    source: str = "raster"
    #: "sigma0" (the study's band) or "gamma0" (terrain-flattened).
    radiometry: str = "sigma0"
    #: Terrain correction: "dem", "none" (the geolocation grid's heights) or "unknown" (a raster
    #: made elsewhere). Scenes made otherwise than a bundle's training scenes get a warning.
    terrain: str = "unknown"


@dataclass(frozen=True)
class Preprocessing:
    """All preprocessing parameters; training and inference share one instance per bundle."""

    s2: S2Params = field(default_factory=S2Params)
    s1: S1Params = field(default_factory=S1Params)
    glcm: GlcmParams = field(default_factory=lambda: GlcmParams().with_default_edges())

    @property
    def halo(self) -> int:
        """Context (pixels) a block needs for GLCM and the speckle filter together."""
        return self.glcm.halo + self.s1.speckle_window // 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        try:
            glcm = dict(d.get("glcm", {}))
            if "edges" in glcm:
                glcm["edges"] = tuple(float(x) for x in glcm["edges"])
            if "db_range" in glcm:
                glcm["db_range"] = tuple(float(x) for x in glcm["db_range"])
            sections = {"s2": S2Params(**d.get("s2", {})), "s1": S1Params(**d.get("s1", {})),
                        "glcm": GlcmParams(**glcm)}
        except (TypeError, ValueError) as exc:  # unknown keys, edges that are not numbers
            raise BundleError(f"preprocessing section is malformed: {exc}") from exc
        for name, section in sections.items():
            _check_types(section, f"preprocessing.{name}")
        _check_ranges(sections["s2"], sections["s1"], sections["glcm"])
        return cls(s2=sections["s2"], s1=sections["s1"], glcm=sections["glcm"].with_default_edges())


def _check_types(section: Any, where: str) -> None:
    """Refuse a value whose type is not its default's (``"window": "nine"``), naming it; a
    whole number is accepted for a float."""
    default = type(section)()
    for f in fields(section):
        want, got = getattr(default, f.name), getattr(section, f.name)
        ok = isinstance(got, type(want)) and not (isinstance(got, bool) and not isinstance(want, bool))
        if isinstance(want, float):
            ok = isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got)
        if not ok:
            kind = {int: "a whole number", float: "a number", str: "a text", tuple: "a list"}.get(type(want), "valid")
            raise BundleError(f"preprocessing section is malformed: {where}.{f.name} = {got!r} must be {kind} "
                              f"(e.g. {want!r})")


#: Limits of the GLCM parameters (the kernel's own) and the names a preprocessing may use.
_RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average")


def _check_ranges(s2: S2Params, s1: S1Params, g: GlcmParams) -> None:
    where = "preprocessing section is malformed: preprocessing"
    problems = []
    if not (3 <= g.window <= 31 and g.window % 2 == 1):
        problems.append(f"glcm.window = {g.window} must be odd, 3 to 31")
    if not 1 <= g.distance < g.window:
        problems.append(f"glcm.distance = {g.distance} must lie between 1 and window - 1")
    if not 2 <= g.levels <= 255:
        problems.append(f"glcm.levels = {g.levels} must lie between 2 and 255")
    if len(g.db_range) != 2 or not all(math.isfinite(float(v)) for v in g.db_range) or not g.db_range[0] < g.db_range[1]:
        problems.append(f"glcm.db_range = {list(g.db_range)} must be two increasing numbers (dB)")
    if not all(math.isfinite(e) for e in g.edges):
        problems.append("glcm.edges must be finite numbers")
    if s1.units not in ("auto", "linear", "db"):
        problems.append(f"s1.units = {s1.units!r} must be auto, linear or db")
    if s1.speckle_filter not in ("lee", "none"):
        problems.append(f"s1.speckle_filter = {s1.speckle_filter!r} must be lee or none")
    if not (1 <= s1.speckle_window <= 31 and s1.speckle_window % 2 == 1):
        problems.append(f"s1.speckle_window = {s1.speckle_window} must be odd, 1 to 31")
    for name, v in (("s2.resampling", s2.resampling), ("s1.resampling", s1.resampling)):
        if v not in _RESAMPLINGS:
            problems.append(f"{name} = {v!r} must be one of {', '.join(_RESAMPLINGS)}")
    if not s2.scale > 0:
        problems.append(f"s2.scale = {s2.scale} must be positive")
    if problems:
        raise BundleError(f"{where}.{problems[0]}")


@dataclass(frozen=True)
class Normalization:
    """Per-band mean/std from the training data."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, stack: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Normalise a (band, row, col) or (batch, band, row, col) float array.

        Returns float32 ``(x - mean) / std`` with NaN (nodata) replaced by 0, the
        training mean. This is the only place normalisation happens.
        """
        nb = len(self.mean)
        axis = stack.ndim - 3
        if stack.shape[axis] != nb:
            raise BundleError(
                f"normalisation has {nb} bands but the input has {stack.shape[axis]}; "
                "the stack does not match the bundle's band list"
            )
        shape = [1] * stack.ndim
        shape[axis] = nb
        mean = np.asarray(self.mean, dtype=np.float32).reshape(shape)
        inv = (1.0 / np.asarray(self.std, dtype=np.float32)).reshape(shape)
        if out is None:
            out = np.empty(stack.shape, dtype=np.float32)
        np.subtract(stack, mean, out=out, casting="unsafe")
        np.multiply(out, inv, out=out)
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return out

    @classmethod
    def identity(cls, n: int = len(BAND_NAMES)) -> Normalization:
        return cls(mean=(0.0,) * n, std=(1.0,) * n)


@dataclass(frozen=True)
class ModelSpec:
    """What the network is and how to call it."""

    architecture: str = "Unet"
    encoder: str = "resnet34"
    in_channels: int = len(BAND_NAMES)
    classes: int = 1
    input_name: str = "input"
    output_name: str = "logits"
    #: Inputs must be a multiple of this in height and width: the encoder's output stride (ResNet:
    #: 32), recorded by coal-train from the encoder it built; the tile rule is in ``tiling``.
    size_multiple: int = 32


@dataclass
class Bundle:
    """A loaded model bundle. ``path`` is the bundle directory."""

    path: Path
    bundle_id: str
    bands: tuple[str, ...]
    preprocessing: Preprocessing
    normalization: Normalization
    model: ModelSpec = field(default_factory=ModelSpec)
    tile_size: int = 128
    overlap: int = 32
    threshold: float = 0.5
    class_names: tuple[str, ...] = ("background", "mine")
    files: dict[str, str] = field(default_factory=lambda: dict(MODEL_FILES))
    training: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION
    #: The TensorRT engine profile coal-export recorded: ``{"tile": 256, "max_batch": 8}``
    #: (empty until exported). coal-run's default tile and any engine it builds follow it.
    engine_profile: dict[str, int] = field(default_factory=dict)

    # -- files -------------------------------------------------------------------------------
    def file(self, key: str, must_exist: bool = True) -> Path:
        """Path of a model file by key ("pytorch", "onnx", "onnx_fp16", "onnx_int8").

        The entry is a plain file name (checked at load) and the path it gives must stay inside
        the bundle folder also after following symbolic links, so nothing a bundle names is
        read or written elsewhere.

        Raises:
            BundleError: the key is unknown, the entry leads outside the bundle folder, or the
                file is missing and ``must_exist``.
        """
        if key not in self.files:
            raise BundleError(
                f"bundle {self.path} has no entry '{key}' in bundle.json 'files' "
                f"(known: {', '.join(sorted(self.files))})"
            )
        p = inside_folder(self.path, self.files[key], f"{self.path / BUNDLE_JSON}: files.{key}")
        if must_exist and not p.is_file():
            hint = {
                "pytorch": "train it with coal-train",
                "onnx": "run: coal-export " + str(self.path),
                "onnx_fp16": "run: coal-export --fp16 " + str(self.path),
                "onnx_int8": "run: coal-export --int8 " + str(self.path),
            }.get(key, "re-create the bundle")
            raise BundleError(f"bundle {self.path} lacks its {key} model file {p.name}; {hint}")
        return p

    def has(self, key: str) -> bool:
        return key in self.files and self.file(key, must_exist=False).is_file()

    @property
    def engines_dir(self) -> Path:
        return self.path / ENGINES_DIR

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "bundle_id": self.bundle_id,
            "created": self.created,
            "bands": list(self.bands),
            "preprocessing": self.preprocessing.to_dict(),
            "normalization": {"mean": list(self.normalization.mean), "std": list(self.normalization.std)},
            "tile": {"size": self.tile_size, "overlap": self.overlap},
            "threshold": self.threshold,
            "classes": list(self.class_names),
            "model": asdict(self.model),
            "files": dict(self.files),
            "training": self.training,
            **({"engine_profile": dict(self.engine_profile)} if self.engine_profile else {}),
        }

    def save(self) -> Path:
        """Write ``bundle.json`` atomically (temp file + rename) and return its path."""
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / BUNDLE_JSON
        atomic_write_json(target, self.to_dict())
        return target


def plain_name_problem(name: Any) -> str | None:
    """What keeps ``name`` from being a plain file name inside one folder, or None.

    A plain name is a non-empty string without a folder part: no ``/`` or ``\\``, not
    absolute, not ``.`` or ``..``, no NUL byte.

    Example:
        >>> plain_name_problem("model.onnx") is None, plain_name_problem("../x.onnx")
        (True, 'names a folder (it holds a path separator)')
    """
    if not isinstance(name, str) or not name:
        return "is not a file name"
    if os.path.isabs(name):
        return "is an absolute path"
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        return "names a folder (it holds a path separator)"
    if name in (".", "..") or "\0" in name:
        return "is not a file name"
    return None


def inside_folder(folder: Path, name: str, where: str) -> Path:
    """``folder / name`` after checking that it stays inside ``folder``, links followed.

    Raises:
        BundleError: ``name`` is not a plain file name, or a symbolic link leads outside.
    """
    problem = plain_name_problem(name)
    if problem:
        raise BundleError(f"{where} = {name!r} {problem}; a bundle names only files inside its own folder: "
                          "write the plain file name (e.g. \"model.onnx\")")
    p = folder / name
    if p.is_symlink() or p.exists():
        real, home = p.resolve(), folder.resolve()
        if home not in real.parents:
            raise BundleError(f"{where} = {name!r} is a symbolic link to {real}, outside the bundle folder "
                              f"{folder}; a bundle reads and writes only its own files: copy the file in")
    return p


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Load and validate a bundle directory (or its ``bundle.json``).

    Raises:
        BundleError: missing directory or bundle.json, wrong format or version, a band list
            that is not the 23-band spec length of the normalisation, or bad values.
    """
    p = Path(path)
    if p.is_file() and p.name == BUNDLE_JSON:
        p = p.parent
    jpath = p / BUNDLE_JSON
    if not p.exists():
        raise BundleError(f"bundle folder {p} does not exist; pass --bundle the folder coal-train wrote")
    if not jpath.is_file():
        raise BundleError(f"{p} is not a model bundle: it has no {BUNDLE_JSON}; pass --bundle the folder coal-train wrote")
    try:
        d = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{jpath} is not valid JSON ({exc}); re-create the bundle with coal-train") from exc
    if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
        raise BundleError(f"{jpath} is not a coalmine bundle (its 'format' is not '{FORMAT_NAME}')")
    ver = d.get("format_version")
    if ver != FORMAT_VERSION:
        raise BundleError(
            f"{jpath} has format_version {ver!r}, this coalmine reads version {FORMAT_VERSION}; "
            "use the coalmine version that wrote it or re-export the bundle"
        )
    try:
        bands = tuple(str(b) for b in d["bands"])
        norm = d["normalization"]
        normalization = Normalization(
            mean=tuple(float(x) for x in norm["mean"]), std=tuple(float(x) for x in norm["std"])
        )
        model = ModelSpec(**d.get("model", {}))
        tile = d.get("tile", {})
        bundle = Bundle(
            path=p,
            bundle_id=str(d["bundle_id"]),
            bands=bands,
            preprocessing=Preprocessing.from_dict(d.get("preprocessing", {})),
            normalization=normalization,
            model=model,
            tile_size=int(tile.get("size", 128)),
            overlap=int(tile.get("overlap", 32)),
            threshold=float(d.get("threshold", 0.5)),
            class_names=tuple(d.get("classes", ("background", "mine"))),
            files={**MODEL_FILES, **_files(d.get("files", {}), jpath)},
            training=dict(d.get("training", {})),
            created=str(d.get("created", "")),
            format_version=int(ver),
            engine_profile={str(k): int(v) for k, v in (d.get("engine_profile") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BundleError):
            raise BundleError(f"{jpath}: {exc}; fix the entry or re-create the bundle with coal-train") from None
        raise BundleError(f"{jpath} is missing or has a bad entry: {exc!r}; re-create the bundle with coal-train") from exc
    _validate(bundle, jpath)
    return bundle


def _files(entries: Any, jpath: Path) -> dict[str, str]:
    """The ``files`` section: every entry a plain file name inside the bundle folder."""
    if not isinstance(entries, dict):
        raise BundleError(f"{jpath}: 'files' must map model keys to file names; re-create the bundle")
    for key, name in entries.items():
        inside_folder(jpath.parent, name, f"files.{key}")
    return {str(k): str(v) for k, v in entries.items()}


def _validate(b: Bundle, jpath: Path) -> None:
    if len(b.bands) != b.model.in_channels:
        raise BundleError(
            f"{jpath}: {len(b.bands)} bands listed but the model takes {b.model.in_channels} input channels"
        )
    if len(b.normalization.mean) != len(b.bands) or len(b.normalization.std) != len(b.bands):
        raise BundleError(f"{jpath}: normalisation mean/std must have one value per band ({len(b.bands)})")
    if any((not math.isfinite(s)) or s <= 0 for s in b.normalization.std):
        raise BundleError(f"{jpath}: normalisation std values must be finite and > 0")
    if any(not math.isfinite(m) for m in b.normalization.mean):
        raise BundleError(f"{jpath}: normalisation mean values must be finite")
    unknown = [x for x in b.bands if x not in BAND_NAMES]
    if unknown:
        raise BundleError(f"{jpath}: unknown band names {unknown}; known bands are {list(BAND_NAMES)}")
    if not 0.0 < b.threshold < 1.0:
        raise BundleError(f"{jpath}: threshold {b.threshold} must lie strictly between 0 and 1")
    problem = tile_size_problem(b.tile_size, b.model.size_multiple)
    if problem:
        raise BundleError(f"{jpath}: tile size {b.tile_size} {problem}")
    from .options import MAX_TILE

    if b.tile_size > MAX_TILE:  # else coal-run would blame a --tile the user never gave
        raise BundleError(f"{jpath}: tile size {b.tile_size} is larger than {MAX_TILE} pixels, more than a run can "
                          "hold in memory; re-create the bundle with coal-train")
    if not 0 <= b.overlap < b.tile_size:
        raise BundleError(f"{jpath}: overlap {b.overlap} must be >= 0 and smaller than the tile size {b.tile_size}")
    prof = b.engine_profile
    if prof and (set(prof) != {"tile", "max_batch"} or prof["max_batch"] < 1
                 or tile_size_problem(prof["tile"], b.model.size_multiple) or prof["tile"] > MAX_TILE):
        raise BundleError(
            f"{jpath}: engine_profile {prof} must give a \"tile\" that is a multiple of {b.model.size_multiple} "
            "and a \"max_batch\" of at least 1; re-run coal-export"
        )
    g = b.preprocessing.glcm
    if len(g.edges) != g.levels - 1 or any(a >= c for a, c in zip(g.edges, g.edges[1:], strict=False)):
        raise BundleError(f"{jpath}: GLCM edges must be {g.levels - 1} strictly increasing values")
