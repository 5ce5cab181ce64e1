"""Scene sources: a prepared 23-band stack, or raw Sentinel-2 + Sentinel-1 computed on the fly.

:func:`open_scene` returns a :class:`SceneSource` either way; ``read(window)`` gives the
float32 (23, h, w) stack of any window with NaN as nodata. For raw input the halos needed by the
speckle filter and the GLCM are read internally (``Preprocessing.halo``), so a block equals the
same window of a whole-scene computation: that is what lets ``coal-prepare``, ``coal-run`` and
``coal-train`` stream scenes of any size in bounded memory.

A pixel is valid iff all 23 values are finite; where any input is nodata (Sentinel-2 DN 0,
masked SCL class, Sentinel-1 nodata, an index with a zero denominator, a GLCM window without a
pair) all 23 bands are NaN.

Example:
    >>> with open_scene("S2_folder", s1="vv_db.tif") as src:     # doctest: +SKIP
    ...     x = src.read(Window(0, 0, 512, 512))                  # (23, 512, 512)
"""

from __future__ import annotations

import json
import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.windows import Window

from ..bands import (
    BAND_NAMES,
    DERIVED_BANDS,
    GLCM_SLICE,
    INDEX_SLICE,
    N_BANDS,
    S2_SLICE,
    VV_INDEX,
    is_stack_bands,
)
from ..bundle import Preprocessing
from ..errors import BandError, BundleError, InputError, UsageError
from ..options import PreprocessingOptions
from ..raster import Grid, check_crs, check_exists, check_window, open_raster, read_checked
from ..timing import StageTimer
from .indices import compute_indices
from .s1 import open_s1
from .s2 import S2Reader
from .speckle import DEFAULT_ENL, lee_filter, power_to_db

log = logging.getLogger("coalmine.preprocess")

#: GeoTIFF tag holding the Preprocessing (JSON) a stack was made with.
PREPROCESSING_TAG = "COALMINE_PREPROCESSING"
#: Further tags: what was detected/decided for the raw inputs.
INPUTS_TAG = "COALMINE_INPUTS"


class SceneSource(ABC):
    """A scene on the Sentinel-2 10 m grid that can be read window by window as the 23-band stack.

    Attributes: ``crs``, ``transform``, ``width``, ``height``, ``bands`` (names in read order), ``res``,
    ``bounds``, ``preprocessing`` (the Preprocessing used or recorded; None for a stack without
    the tag), ``path``.
    """

    path: Path
    grid: Grid
    bands: tuple[str, ...] = BAND_NAMES
    preprocessing: Preprocessing | None

    @property
    def crs(self) -> CRS:
        return self.grid.crs

    @property
    def transform(self) -> Any:
        return self.grid.transform

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def res(self) -> tuple[float, float]:
        return self.grid.res

    @property
    def bounds(self) -> BoundingBox:
        return self.grid.bounds

    @abstractmethod
    def read(self, window: Window) -> np.ndarray:
        """The float32 (len(bands), h, w) stack of ``window`` (inside the scene), NaN = nodata."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open files."""

    def __enter__(self) -> SceneSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StackSource(SceneSource):
    """A stack written by ``coal-prepare``, recognised by its band descriptions (:func:`is_stack`).

    ``bands`` are the file's own band names, in its order; a bundle picks the bands it needs.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.ds = open_raster(self.path, "scene")
        try:
            check_crs(self.ds, "scene")
            if not is_stack(self.ds):
                raise BandError(f"scene {self.path} is not a coalmine stack (its band descriptions "
                                "are not distinct band names of coalmine.runtime.bands); prepare it "
                                "with coal-prepare")
            self.bands = tuple(self.ds.descriptions)
            _check_float_bands(self.ds, self.path, self.bands)
            self.grid = Grid(self.ds.crs, self.ds.transform, self.ds.width, self.ds.height)
            self.preprocessing = _read_prep_tag(self.ds)
            try:  # what coal-prepare recorded about the raw inputs (S1 processing included)
                self.inputs = json.loads(self.ds.tags().get(INPUTS_TAG) or "null")
            except json.JSONDecodeError:
                self.inputs = None
        except BaseException:
            self.ds.close()
            raise

    def read(self, window: Window) -> np.ndarray:
        w = check_window(self.grid, window)
        a = read_checked(self.ds, "scene", list(range(1, len(self.bands) + 1)), window=w)
        a = a.astype(np.float32, copy=False)
        nd = self.ds.nodata
        if nd is not None and not np.isnan(nd):
            a[a == nd] = np.nan
        a[:, ~np.isfinite(a).all(axis=0)] = np.nan
        return a

    def close(self) -> None:
        self.ds.close()


def _check_float_bands(ds: Any, path: Path, bands: tuple[str, ...]) -> None:
    """Refuse a stack band that is not floating point: a stack holds reflectance (0-1), indices,
    VV in dB and textures with NaN as nodata, which integers cannot carry (a uint16 "stack" of
    scaled values would be read as values thousands of times too large, or as all nodata)."""
    for i, (name, dtype) in enumerate(zip(bands, ds.dtypes, strict=True), start=1):
        if np.dtype(dtype).kind != "f":
            raise BandError(
                f"scene {path} band {i} ({name}) is {dtype}; a coalmine stack holds float32 values "
                "(reflectance 0-1, indices, VV in dB, GLCM textures) with NaN as nodata, not scaled "
                "integers: prepare the stack from the raw inputs with coal-prepare")


class SarBands:
    """The Sentinel-1 half of a prepared block, shared by the sources that prepare one (a raw
    scene, a composite): they hold ``preprocessing``, ``timers``, ``edges``, ``glcm_threads``
    and the texture module as ``_texture``."""

    preprocessing: Preprocessing
    timers: StageTimer
    edges: np.ndarray
    glcm_threads: int
    _texture: Any

    def _sar_bands(self, power: np.ndarray, enl: float | np.ndarray, w: Window, region: Window,
                   out: np.ndarray) -> None:
        """Fill VV and the GLCM bands of ``out`` (block ``w``) from sigma0 power over ``region``
        (``w`` plus the halo): Lee filter with ``enl`` looks, dB, quantised texture."""
        prep = self.preprocessing
        t = time.perf_counter()
        if prep.s1.speckle_filter == "lee" and prep.s1.speckle_window > 1:
            power = lee_filter(power, prep.s1.speckle_window, enl)
        vv = power_to_db(power)
        t = self.timers.lap("speckle", t)
        ro, co = w.row_off - region.row_off, w.col_off - region.col_off
        out[VV_INDEX] = vv[ro: ro + w.height, co: co + w.width]
        g = prep.glcm
        levels = self._texture.quantize(vv, self.edges)
        out[GLCM_SLICE] = self._texture.glcm_block(levels, (ro, co, w.height, w.width), g.levels,
                                                   window_size=g.window, distance=g.distance,
                                                   nodata=self._texture.NODATA,
                                                   threads=self.glcm_threads)
        self.timers.lap("glcm", t)


class RawSource(SarBands, SceneSource):
    """Raw Sentinel-2 L2A + Sentinel-1 VV, computed into the stack window by window.

    Args:
        s2: Sentinel-2 input (multi-band GeoTIFF, folder, SAFE).
        s1: Sentinel-1 VV: a GRD product (SAFE folder, zip, COG-SAFE) or a sigma0 raster.
        prep: preprocessing parameters (default: ``Preprocessing()``).
        s2_offset: explicit S2 DN offset (overrides the metadata).
        s1_units: "auto", "linear" or "db" (overrides ``prep.s1.units``).
        scl: Sentinel-2 SCL raster, or "auto" to use the one in the S2 folder; None for no mask.
        glcm_threads: threads for the GLCM kernel (None: all cores).
        dem: DEM for terrain correction of a GRD product.
        orbit: orbit file (or folder of them) for a GRD product.
    """

    def __init__(self, s2: str | os.PathLike[str], s1: str | os.PathLike[str],
                 prep: Preprocessing | None = None, *, s2_offset: float | None = None,
                 s1_units: str | None = None, scl: str | os.PathLike[str] | None = None,
                 glcm_threads: int | None = None, dem: str | os.PathLike[str] | None = None,
                 orbit: str | os.PathLike[str] | None = None) -> None:
        from .. import texture  # the compiled kernel; imported here so stacks read without it

        self._texture = texture
        prep = prep or Preprocessing()
        prep = replace(prep, glcm=prep.glcm.with_default_edges())
        # the rules of --speckle/--speckle-window, also for a bundle's preprocessing
        PreprocessingOptions(speckle=prep.s1.speckle_filter, speckle_window=prep.s1.speckle_window)
        self.path = Path(s2)
        self.timers = StageTimer()
        self.glcm_threads = glcm_threads
        self.s2 = S2Reader(s2, prep.s2, s2_offset=s2_offset, scl_given=scl is not None and str(scl) != "auto")
        try:
            self.grid = self.s2.grid
            self.scl = None
            if scl is not None:
                self.scl = None if str(scl) == "auto" else self.s2.open_scl(scl)
                if str(scl) == "auto" and self.s2.scl_ref is None:
                    raise UsageError(f"--scl auto: no SCL file found in {self.s2.path}; pass --scl PATH")
            self.use_scl = scl is not None
            self.s1 = open_s1(s1, self.grid, prep.s1, units=s1_units, dem=dem, orbit=orbit)
        except BaseException:
            self.s2.close()
            raise
        # Record what was actually used: the detected S1 units, how VV was made.
        self.preprocessing = replace(prep, s1=replace(prep.s1, units=self.s1.units, **self.s1.made))
        self.edges = np.asarray(prep.glcm.edges, dtype=np.float64)
        self.inputs = {
            "s2": str(self.s2.path),
            "s2_form": self.s2.kind,
            "s2_offset": self.s2.offset.value,
            "s2_offset_source": self.s2.offset.source,
            "s2_scale": self.s2.offset.scale,
            "s2_baseline": self.s2.metadata.baseline,
            "s2_level": f"{self.s2.metadata.level} ({self.s2.metadata.level_from})",
            "s1": str(self.s1.ds.name),
            "s1_units": self.s1.units,
            "scl": None if not self.use_scl else str(self.scl.path if self.scl else "auto"),
            **self.s1.record,
        }

    def read(self, window: Window) -> np.ndarray:
        w = check_window(self.grid, window)
        prep = self.preprocessing
        T = self.timers
        t = time.perf_counter()
        out = np.empty((N_BANDS, w.height, w.width), dtype=np.float32)
        refl = self.s2.read(w, out=out[S2_SLICE])
        t = T.lap("read_s2", t)
        s2_bad = np.isnan(refl[0])  # S2Reader marks a pixel NaN in all 9 bands
        if self.use_scl:
            s2_bad |= self.s2.scl_invalid(self.scl, w)
            t = T.lap("read_s2", t)
        compute_indices(refl, out=out[INDEX_SLICE])
        t = T.lap("indices", t)

        # S1 over the block + halo, so the speckle filter and the GLCM see the same context
        # as in a whole-scene run.
        region = self.grid.expand(w, prep.halo)
        power = self.s1.read_power(region)
        t = T.lap("warp_s1", t)
        self._sar_bands(power, DEFAULT_ENL, w, region, out)
        t = time.perf_counter()
        # any band NaN (or inf) -> the sum is not finite: one pass instead of 23 isfinite maps
        bad = s2_bad | ~np.isfinite(out.sum(axis=0, dtype=np.float32))
        np.copyto(out, np.float32(np.nan), where=bad[None])
        T.lap("mask", t)
        return out

    def close(self) -> None:
        self.s2.close()
        self.s1.close()


#: Edges closer than this (dB) count as equal: JSON keeps float64 exactly, so only a stack made
#: from other numbers differs by more.
EDGE_ATOL_DB = 1e-6


def check_preprocessing(source: Any, bundle: Any) -> list[str]:
    """Refuse a scene prepared with other GLCM or speckle parameters than ``bundle``'s.

    The one check that coal-run and ``coal-train evaluate`` apply. Raw input is opened with the
    bundle's preprocessing and always passes; a stack is compared by the preprocessing it
    records (``COALMINE_PREPROCESSING`` tag): GLCM window, distance, levels and bin edges, and
    the speckle filter (with its window when one is applied).

    Args:
        source: a :class:`SceneSource` (or anything with ``preprocessing`` and ``path``).
        bundle: the :class:`~coalmine.runtime.bundle.Bundle` whose model will read the scene.

    Returns:
        Warnings (also logged): the stack records no preprocessing, so nothing could be checked;
        or its Sentinel-1 VV was made otherwise than the bundle's training scenes (sigma0 vs gamma0,
        DEM vs none).

    Raises:
        InputError: naming the differing parameters, the bundle, and how to make a matching stack.
    """
    used = getattr(source, "preprocessing", None)
    where = getattr(source, "path", None) or "the scene"
    if used is None:
        msg = (f"{where} records no preprocessing parameters (no {PREPROCESSING_TAG} tag); "
               "cannot check its GLCM edges against the bundle")
        log.warning(msg)
        return [msg]
    want, got = bundle.preprocessing, used
    diffs = [f"GLCM {k} {getattr(got.glcm, k)} (bundle: {getattr(want.glcm, k)})"
             for k in ("window", "distance", "levels") if getattr(want.glcm, k) != getattr(got.glcm, k)]
    if len(want.glcm.edges) != len(got.glcm.edges) or not np.allclose(
        want.glcm.edges, got.glcm.edges, rtol=0, atol=EDGE_ATOL_DB
    ):
        diffs.append(f"GLCM bin edges {_short(got.glcm.edges)} (bundle: {_short(want.glcm.edges)})")
    if _speckle(got.s1) != _speckle(want.s1):
        diffs.append(f"speckle filter {'/'.join(map(str, _speckle(got.s1)))} "
                     f"(bundle: {'/'.join(map(str, _speckle(want.s1)))})")
    warnings = []
    from .s1grd.provenance import s1_differences

    for d in s1_differences(got.s1, want.s1):
        msg = f"{where}: {d} (bundle {bundle.path}); its VV values may differ from what the model learned"
        log.warning(msg)
        warnings.append(msg)
    if diffs:
        raise InputError(
            f"{where} was prepared with {'; '.join(diffs)}, which differ from bundle {bundle.path}; "
            f"prepare it again with coal-prepare --glcm-edges {bundle.path} (the bundle's whole "
            "preprocessing), or give the raw Sentinel-2 input with --s1 instead of the stack"
        )
    return warnings


def _speckle(s1: Any) -> tuple[str, ...]:
    """The speckle filtering that shapes VV: the window only matters when a filter runs."""
    if s1.speckle_filter == "none" or s1.speckle_window <= 1:
        return ("none",)
    return (str(s1.speckle_filter), str(s1.speckle_window))


def _short(edges: Any) -> str:
    e = list(edges)
    if len(e) <= 4:
        return "[" + ", ".join(f"{x:g}" for x in e) + "]"
    return f"[{e[0]:g}, {e[1]:g}, ..., {e[-1]:g}] ({len(e)} edges)"


def is_stack(ds: Any) -> bool:
    """True if an open dataset is a prepared stack: see :func:`coalmine.runtime.bands.is_stack_bands`."""
    return is_stack_bands(tuple(ds.descriptions))


def _read_prep_tag(ds: Any) -> Preprocessing | None:
    raw = ds.tags().get(PREPROCESSING_TAG)
    if not raw:
        return None
    try:
        return Preprocessing.from_dict(json.loads(raw))
    except (json.JSONDecodeError, BundleError) as exc:
        raise InputError(f"scene {ds.name} has a damaged {PREPROCESSING_TAG} tag ({exc}); "
                         "prepare it again with coal-prepare") from exc


def _neither_stack_nor_s2(ds: Any, path: Path) -> None:
    """Refuse a file that is neither a stack nor Sentinel-2 bands (an RGB image, a stack whose
    band names were lost or repeated), which would otherwise be sent to "pass --s1".

    Raises:
        BandError: naming the file, what its bands are and what was expected.
    """
    from .s2 import band_of

    names = [d for d in ds.descriptions if d]
    if any(band_of(d) for d in names) and not any(d in DERIVED_BANDS for d in names):
        return  # raw Sentinel-2: the caller asks for --s1
    dtypes = sorted(set(ds.dtypes))
    if not names:
        what = f"{ds.count} bands ({', '.join(dtypes)}) without band descriptions"
    else:
        shown = ", ".join(str(d) for d in ds.descriptions[:6]) + (", ..." if ds.count > 6 else "")
        what = f"{ds.count} bands ({', '.join(dtypes)}) named {shown}"
    raise BandError(f"scene {path} is neither a coalmine stack nor Sentinel-2 input: it has {what}; expected the "
                    f"{N_BANDS}-band stack coal-prepare writes (float32 bands named {', '.join(BAND_NAMES[:3])}, "
                    "... each once) or raw Sentinel-2 bands named B02, B03, ... with --s1")


def open_scene(
    scene: str | os.PathLike[str],
    s1: str | os.PathLike[str] | None = None,
    prep: Preprocessing | None = None,
    *,
    s2_offset: float | None = None,
    s1_units: str | None = None,
    scl: str | os.PathLike[str] | None = None,
    glcm_threads: int | None = None,
    dem: str | os.PathLike[str] | None = None,
    orbit: str | os.PathLike[str] | None = None,
) -> SceneSource:
    """Open a prepared stack or raw Sentinel-2 (+ Sentinel-1) input as a :class:`SceneSource`.

    Args:
        scene: a 23-band stack from coal-prepare (then ``s1`` must be None), or raw Sentinel-2
            input: a multi-band GeoTIFF with band descriptions, a folder of band files, a SAFE;
            or a folder of such acquisitions, read as their composite
            (:class:`~.composite.CompositeSource`, with ``s1`` a Sentinel-1 file or a folder of them).
        s1: Sentinel-1 VV sigma0 raster (required for raw input).
        prep: preprocessing for raw input (default ``Preprocessing()``); ignored for a stack
            (:func:`check_preprocessing` compares).
        s2_offset, s1_units, scl, glcm_threads, dem, orbit: see :class:`RawSource` (dem and orbit
            are ignored for a stack).

    Returns:
        A :class:`StackSource` or :class:`RawSource` (close it, or use it as a context manager).

    Raises:
        InputNotFoundError: a path does not exist.
        UsageError: ``s1`` given with a stack, or missing for raw input.
        RasterError, CRSError, BandError, UnitsError, InputError: unusable inputs.

    Example:
        >>> with open_scene("scene.tif") as src:                   # doctest: +SKIP
        ...     src.bands[12], src.read(Window(0, 0, 64, 64)).shape
        ('VV', (23, 64, 64))
    """
    p = check_exists(scene, "scene")
    if p.is_file():
        ds = open_raster(p, "scene")
        try:
            stack = is_stack(ds)
            if not stack and s1 is None:
                _neither_stack_nor_s2(ds, p)
        finally:
            ds.close()
        if stack:
            if s1 is not None:
                raise UsageError(f"scene {p} is already a 23-band stack made by coal-prepare; "
                                 "do not pass --s1 with it (it is only for raw Sentinel-2 input)")
            return StackSource(p)
    if s1 is None:
        raise UsageError(f"scene {p} is raw Sentinel-2 input (not a 23-band stack); pass the "
                         "Sentinel-1 VV raster with --s1, or prepare a stack with coal-prepare")
    from .acquisitions import is_s2_acquisition

    if p.is_dir() and not is_s2_acquisition(p):  # a folder of acquisitions: their composite
        from .composite import CompositeSource

        if scl is not None and str(scl) != "auto":
            raise UsageError(f"--scl {scl}: scene {p} holds several acquisitions, each masked by its "
                             "own SCL in the composite; drop --scl")
        return CompositeSource([p], [s1], prep, s2_offset=s2_offset, s1_units=s1_units,
                               glcm_threads=glcm_threads, dem=dem, orbit=orbit)
    return RawSource(p, s1, prep, s2_offset=s2_offset, s1_units=s1_units, scl=scl,
                     glcm_threads=glcm_threads, dem=dem, orbit=orbit)
