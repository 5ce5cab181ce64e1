"""Annual composites: every acquisition of a period -> one cloud-free 23-band stack.

The study trained and mapped on one image per year, built from all the year's acquisitions.
:class:`CompositeSource` computes that image window by window, on any output grid (the first
acquisition's B02 grid, a reference raster's, or the AOIs' extent: acquisitions from several
Sentinel-2 tiles, UTM zones and Sentinel-1 frames each contribute where they have data):

**Sentinel-2.** Each acquisition is masked by its own SCL: the classes a single scene masks
(:data:`~.s2.SCL_MASKED`: no data, saturated, cloud shadow, cloud medium/high, cirrus), with the
clouds and shadows grown by ``dilation`` pixels (:data:`DEFAULT_DILATION`). Its DN become
surface reflectance with its own offset (products on both sides of processing baseline 04.00
mix correctly). An observation is *clear* where its SCL is not masked and both resolution groups
have data (B02 for the 10 m bands, B11 for the 20 m bands: each group shares one footprint).
Every band of the composite is the per-pixel median of the clear observations
(:func:`~.median.clear_median`, numpy's convention); the indices are computed from the
composite bands; a pixel without a clear observation is nodata.

**Sentinel-1.** sigma0 in linear power is averaged over the acquisitions that have data at a
pixel (temporal multi-looking: n acquisitions of ENL 4.4 have 4.4 n looks), then Lee-filtered
with that pixel's number of looks, converted to dB and textured exactly as for one scene.

**Quality.** :meth:`CompositeSource.read_counts` gives, per pixel, the number of clear Sentinel-2
observations and of Sentinel-1 acquisitions used; ``coal-prepare`` writes them beside the stack.

**Memory.** A block holds, per band, one value per acquisition and pixel (the acquisitions that
cover the block and are clear somewhere in it): memory follows ``block² x acquisitions``, and
:func:`block_for_memory` picks the block for a budget. Everything is computed from a pixel's own
observations or a fixed neighbourhood read with a halo, so blocks equal the whole-scene result
bit for bit whatever their size.

Example:
    >>> with CompositeSource(["s2/2023-01", "s2/2023-02"], ["s1/a.tif"]) as src:  # doctest: +SKIP
    ...     x, counts = src.read_with_counts(Window(0, 0, 512, 512))
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..bands import INDEX_SLICE, N_BANDS, S2_BANDS, S2_SLICE
from ..bundle import Preprocessing
from ..errors import CRSError, InputError, UsageError
from ..raster import Grid, check_window
from ..timing import StageTimer
from .acquisitions import Item, Period, date_from_name, expand, input_hash
from .indices import compute_indices
from .median import PowerMean, clear_median, dilate
from .s1 import open_s1
from .s2 import S2Reader, _find_mtd
from .speckle import DEFAULT_ENL
from .stack import SarBands, SceneSource

log = logging.getLogger("coalmine.preprocess")

#: SCL classes that mean "no observation": 0 no data, 1 saturated or defective.
SCL_NODATA = (0, 1)
#: SCL classes grown by the dilation: 3 cloud shadow, 8/9 cloud medium/high probability, 10 cirrus.
SCL_CLOUD = (3, 8, 9, 10)
#: Default growth of clouds and shadows, in output pixels (50 m at 10 m). Sen2Cor classifies
#: each 20 m pixel on its own and under-flags the semi-transparent margins of small convective
#: cumulus -- the usual clouds over lowland South Kalimantan -- and the fringes of their
#: shadows; those margins brighten or darken a median only where few clear views remain, yet
#: they sit right on the pit edges the model outlines. 50 m (Earth Engine's s2cloudless
#: tutorial buffers by the same) removes the margins while a year of 5-day revisits keeps
#: enough clear views; 0 turns it off.
DEFAULT_DILATION = 5
#: Fewer clear observations than this mark a pixel as weakly supported (reports, summaries).
FEW_OBSERVATIONS = 3
#: Quality bands written beside a composite.
COUNT_BANDS = ("s2_clear_observations", "s1_acquisitions")

#: Bytes per block pixel for one acquisition held while a band is composited: two bands held
#: together (B02 and B11 decide validity) + the clear mask + the band read through the warper.
_BYTES_PER_ACQ_PIXEL = 4 + 4 + 1 + 4
#: Bytes per block pixel besides the acquisitions: three 23-band float32 blocks in flight
#: (computed, queued, written), the median's index and gather arrays, Sentinel-1 running sums,
#: Lee statistics and GLCM levels over the halo, counts.
_BYTES_PER_PIXEL = 3 * N_BANDS * 4 + 120
#: Fixed memory besides the blocks: interpreter, GDAL and its 128 MB block cache, per-file state.
_BASE_BYTES = 600 * 1024 * 1024
_BYTES_PER_FILE = 512 * 1024


def block_for_memory(memory_bytes: int, n_s2: int, n_s1: int, *, tile: int = 512,
                     largest: int = 2048) -> int:
    """The largest block (a multiple of ``tile``, at most ``largest``) whose working set fits.

    Args:
        memory_bytes: the budget (``--memory``).
        n_s2, n_s1: numbers of acquisitions.
        tile: the output's tile size (blocks align to it).
        largest: blocks beyond this gain nothing (halo overhead is already < 2 %).

    Raises:
        UsageError: the budget cannot hold one ``tile``-sized block.

    Example:
        >>> block_for_memory(4 << 30, 12, 6), block_for_memory(4 << 30, 70, 30)
        (2048, 1536)
    """
    fixed = _BASE_BYTES + _BYTES_PER_FILE * (10 * n_s2 + n_s1)
    per_px = _BYTES_PER_PIXEL + _BYTES_PER_ACQ_PIXEL * n_s2
    avail = memory_bytes - fixed
    side = int(np.sqrt(max(avail, 0) / per_px)) if avail > 0 else 0
    block = min(largest, side // tile * tile)
    if block < tile:
        need = fixed + per_px * tile * tile
        raise UsageError(f"--memory {memory_bytes / 2**30:.1f} GB cannot hold one {tile} px block of "
                         f"{n_s2} Sentinel-2 acquisitions; give at least --memory "
                         f"{np.ceil(need / 2**30 * 10) / 10:.1f}G")
    return block


@dataclass
class S2Acquisition:
    """One Sentinel-2 acquisition of a composite, read onto the output grid."""

    reader: S2Reader
    date: dt.date | None
    footprint: Window  # where it may have data, in output-grid pixels (clipped)
    files: list[Path] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.reader.path


@dataclass
class S1Acquisition:
    """One Sentinel-1 acquisition of a composite (a calibrated raster or a GRD product)."""

    reader: Any
    path: Path
    date: dt.date | None


def _grid_window(grid: Grid, bounds: Any, crs: Any) -> Window:
    """The window of ``grid`` covered by ``bounds`` (in ``crs``), clipped; may be empty."""
    b = transform_bounds(crs, grid.crs, *bounds, densify_pts=21) if crs != grid.crs else tuple(bounds)
    inv = ~grid.transform
    cols, rows = zip(*(inv * (x, y) for x in (b[0], b[2]) for y in (b[1], b[3])), strict=True)
    c0, c1 = int(np.floor(min(cols))) - 1, int(np.ceil(max(cols))) + 1
    r0, r1 = int(np.floor(min(rows))) - 1, int(np.ceil(max(rows))) + 1
    return grid.clip(Window(c0, r0, c1 - c0, r1 - r0))


def _intersects(a: Window, b: Window) -> bool:
    return (a.col_off < b.col_off + b.width and b.col_off < a.col_off + a.width
            and a.row_off < b.row_off + b.height and b.row_off < a.row_off + a.height)


def _fmt_bounds(b: Any) -> str:
    return f"({b[0]:.0f}, {b[1]:.0f}, {b[2]:.0f}, {b[3]:.0f})"


class CompositeSource(SarBands, SceneSource):
    """The composite of several acquisitions, read window by window as the 23-band stack.

    Args:
        s2: Sentinel-2 L2A acquisitions, folders of them or glob patterns (see
            :func:`~.acquisitions.expand`).
        s1: Sentinel-1 acquisitions (calibrated sigma0 rasters or GRD products), likewise.
        prep: preprocessing (speckle filter, GLCM); default ``Preprocessing()``.
        grid: the output grid; default the B02 grid of the earliest Sentinel-2 acquisition.
        period: keep acquisitions of this period (found ones outside are skipped; named ones
            outside are refused).
        s2_offset: explicit DN offset for every acquisition (default: each one's metadata).
        s1_units: units of calibrated Sentinel-1 rasters ("auto", "linear", "db").
        dilation: growth of clouds and shadows in output pixels (:data:`DEFAULT_DILATION`).
        glcm_threads: threads for the GLCM kernel (None: all cores).
        skip_disjoint: skip acquisitions that miss the grid (with a warning) instead of refusing.
        dem, orbit: DEM and orbit file (or folder) for the Sentinel-1 GRD products among ``s1``.

    Raises:
        UsageError: bad options (dilation, speckle window).
        InputError (and subclasses): an acquisition that cannot be read, a Level-1C product, an
            acquisition outside the period or off the grid, no SCL, no usable acquisition.
    """

    def __init__(self, s2: Sequence[str | os.PathLike[str]], s1: Sequence[str | os.PathLike[str]],
                 prep: Preprocessing | None = None, *, grid: Grid | None = None,
                 period: Period | None = None, s2_offset: float | None = None,
                 s1_units: str | None = None, dilation: int = DEFAULT_DILATION,
                 glcm_threads: int | None = None, skip_disjoint: bool = False,
                 dem: str | os.PathLike[str] | None = None, orbit: str | os.PathLike[str] | None = None) -> None:
        from .. import texture  # the compiled kernel

        self._texture = texture
        prep = prep or Preprocessing()
        prep = replace(prep, glcm=prep.glcm.with_default_edges())
        if prep.s1.speckle_filter not in ("lee", "none"):
            raise UsageError(f"speckle filter {prep.s1.speckle_filter!r} is not one of lee, none")
        if prep.s1.speckle_window < 1 or prep.s1.speckle_window % 2 == 0:
            raise UsageError(f"--speckle-window {prep.s1.speckle_window} must be an odd number >= 1")
        if not isinstance(dilation, int) or isinstance(dilation, bool) or not 0 <= dilation <= 100:
            raise UsageError(f"--dilation {dilation} must be a whole number of pixels from 0 to 100 "
                             f"(default {DEFAULT_DILATION})")
        self.dilation = dilation
        self.period = period
        self.glcm_threads = glcm_threads
        self.timers = StageTimer()
        self.s2: list[S2Acquisition] = []
        self.s1: list[S1Acquisition] = []
        self.skipped: list[str] = []
        try:
            self._open_s2(expand(list(s2), "s2"), prep, s2_offset)
            self.grid = grid or self.s2[0].reader.grid
            self._place_s2(skip_disjoint)
            self._open_s1(expand(list(s1), "s1"), prep, s1_units, skip_disjoint, dem, orbit)
        except BaseException:
            self.close()
            raise
        self.path = self.s2[0].path
        units = sorted({a.reader.units for a in self.s1})
        s1p = replace(prep.s1, units=units[0] if len(units) == 1 else "mixed")
        made = {tuple(sorted(getattr(a.reader, "made", {}).items())) for a in self.s1}
        if len(made) == 1:  # how VV was made, when every acquisition says the same
            s1p = replace(s1p, **dict(next(iter(made))))
        self.preprocessing = replace(prep, s1=s1p)
        self.edges = np.asarray(prep.glcm.edges, dtype=np.float64)
        self._hashes: list[Future[str]] = []
        self._hash_pool: ThreadPoolExecutor | None = None
        log.info("composite of %d Sentinel-2 and %d Sentinel-1 acquisitions%s on a %d x %d px grid "
                 "(%s); clouds and shadows grown by %d px", len(self.s2), len(self.s1),
                 f" of {period}" if period else "", self.grid.width, self.grid.height,
                 self.grid.crs.to_string(), dilation)

    # -- opening ---------------------------------------------------------------------------
    def _keep(self, item: Item, date: dt.date | None, kind: str) -> bool:
        """Whether an acquisition of ``date`` belongs to the period (refusing named ones outside)."""
        if self.period is None:
            return True
        option = f"--{kind}"
        if date is None:
            if kind == "s1":
                log.warning("%s %s: no acquisition date in its name; used although a period is given",
                            option, item.path)
                return True
            raise InputError(f"{option} {item.path}: cannot tell its acquisition date (no date in the "
                             "metadata or the name) to check it against the period "
                             f"{self.period}; rename it with its date (…_20230715T022551…) or drop "
                             "--start/--end")
        if date in self.period:
            return True
        if item.explicit:
            raise InputError(f"{option} {item.path} was acquired on {date.isoformat()}, outside the "
                             f"period {self.period}; remove it or widen --start/--end")
        self.skipped.append(f"{item.path.name} ({date.isoformat()}, outside the period)")
        return False

    def _open_s2(self, items: list[Item], prep: Preprocessing, s2_offset: float | None) -> None:
        for it in items:
            if self.period is not None and not it.explicit:
                d = date_from_name(it.path.name)
                if d is not None and d not in self.period:  # cheap: no need to open it
                    self.skipped.append(f"{it.path.name} ({d.isoformat()}, outside the period)")
                    continue
            _refuse_stack(it.path)
            reader = S2Reader(it.path, prep.s2, s2_offset=s2_offset)
            try:
                md = reader.metadata.date
                date = dt.date(int(md[:4]), int(md[4:6]), int(md[6:8])) if md else date_from_name(it.path.name)
                if not self._keep(it, date, "s2"):
                    reader.close()
                    continue
                if reader.scl_ref is None:
                    raise InputError(
                        f"--s2 {it.path} has no SCL (scene classification) band; a composite "
                        "masks every acquisition's clouds with its own SCL: add the SCL file "
                        "(…_SCL_20m.jp2) to the acquisition or leave the acquisition out")
            except BaseException:
                reader.close()
                raise
            files = [r.path for r in reader.band_refs.values()] + [reader.scl_ref.path]
            mtd = _find_mtd(reader.path)
            if mtd is not None:
                files.append(mtd)
            self.s2.append(S2Acquisition(reader, date, Window(0, 0, 0, 0),
                                         sorted(set(files), key=str)))
        if not self.s2:
            raise InputError("no Sentinel-2 acquisition to composite"
                             + (f" in the period {self.period} (skipped: {'; '.join(self.skipped[:5])}"
                                f"{' …' if len(self.skipped) > 5 else ''})" if self.skipped else "")
                             + "; pass L2A acquisitions with --s2 or widen --start/--end")
        self.s2.sort(key=lambda a: (a.date or dt.date.min, str(a.path)))

    def _place_s2(self, skip_disjoint: bool) -> None:
        kept = []
        for a in self.s2:
            g = a.reader.grid
            fp = _grid_window(self.grid, g.bounds, g.crs)
            if fp.width == 0 or fp.height == 0:
                b = transform_bounds(g.crs, self.grid.crs, *g.bounds, densify_pts=21)
                msg = (f"--s2 {a.path} does not overlap the output grid: its extent "
                       f"{_fmt_bounds(b)} vs the grid's {_fmt_bounds(self.grid.bounds)} (left, "
                       f"bottom, right, top in {self.grid.crs.to_string()})")
                if not skip_disjoint:
                    raise CRSError(msg + "; remove it, or give a grid that covers all acquisitions "
                                   "(--grid-from AOI or --like REF.tif)")
                log.warning("%s; skipped", msg)
                self.skipped.append(f"{a.path.name} (off the grid)")
                a.reader.close()
                continue
            a.footprint = fp
            kept.append(a)
        if not kept:
            raise InputError("none of the Sentinel-2 acquisitions overlaps the output grid; give a "
                             "grid over the acquisitions (--grid-from AOI, --like REF.tif)")
        self.s2 = kept

    def _open_s1(self, items: list[Item], prep: Preprocessing, units: str | None, skip_disjoint: bool,
                 dem: Any, orbit: Any) -> None:
        from .s1grd.product import looks_like_s1_product

        for it in items:
            date = date_from_name(it.path.name)
            if not self._keep(it, date, "s1"):
                continue
            try:
                product = looks_like_s1_product(it.path)  # DEM and orbits apply to GRD products only
                reader = open_s1(it.path, self.grid, prep.s1, units=units, dem=dem if product else None,
                                 orbit=orbit if product else None)
            except CRSError as exc:
                if not skip_disjoint or "does not overlap" not in str(exc):
                    raise
                log.warning("%s; skipped", exc)
                self.skipped.append(f"{it.path.name} (off the grid)")
                continue
            if date is None:
                date = _date_tag(reader)
            self.s1.append(S1Acquisition(reader, it.path, date))
        if not self.s1:
            raise InputError("no Sentinel-1 acquisition to composite"
                             + (f" in the period {self.period}" if self.period else "")
                             + "; pass sigma0 VV rasters or GRD products with --s1")
        self.s1.sort(key=lambda a: (a.date or dt.date.min, str(a.path)))

    # -- what was used -----------------------------------------------------------------------
    def start_hashing(self) -> None:
        """Hash every input in a background thread (the composite meanwhile reads them)."""
        if self._hash_pool is None:
            self._hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coalmine-hash")
            self._hashes = [self._hash_pool.submit(input_hash, a.files) for a in self.s2]
            self._hashes += [self._hash_pool.submit(input_hash, [a.path]) for a in self.s1]

    @property
    def inputs(self) -> dict[str, Any]:
        """Every input with its date, hash (after :meth:`start_hashing`), offset or units; for the
        ``COALMINE_INPUTS`` tag."""
        hashes = [f.result() for f in self._hashes] if self._hashes else [None] * (len(self.s2) + len(self.s1))
        s2 = [{"path": str(a.path), "date": a.date.isoformat() if a.date else None,
               "sha256": h, "form": a.reader.kind, "offset": a.reader.offset.value,
               "offset_source": a.reader.offset.source, "baseline": a.reader.metadata.baseline}
              for a, h in zip(self.s2, hashes[: len(self.s2)], strict=True)]
        s1 = [{"path": str(a.path), "date": a.date.isoformat() if a.date else None, "sha256": h,
               "units": a.reader.units, **getattr(a.reader, "record", {})}
              for a, h in zip(self.s1, hashes[len(self.s2):], strict=True)]
        s1p = self.preprocessing.s1
        lee = s1p.speckle_filter == "lee" and s1p.speckle_window > 1  # as _s1_composite applies it
        return {
            "composite": True,
            "period": [self.period.start.isoformat(), self.period.end.isoformat()] if self.period else None,
            "s2_rule": "per-pixel median of clear observations (numpy convention)",
            "scl_masked": [0, 1, *SCL_CLOUD],
            "dilation_px": self.dilation,
            "s1_rule": "mean of sigma0 linear power, then " + (
                f"Lee filter ({s1p.speckle_window} px) with ENL {DEFAULT_ENL} x acquisitions at the pixel"
                if lee else "no speckle filter"),
            "s1_enl_per_acquisition": DEFAULT_ENL if lee else None,
            "skipped": list(self.skipped),
            "s2": s2,
            "s1": s1,
        }

    # -- reading -----------------------------------------------------------------------------
    def read(self, window: Window) -> np.ndarray:
        return self.read_with_counts(window)[0]

    def read_counts(self, window: Window) -> np.ndarray:
        """uint16 (2, h, w): clear Sentinel-2 observations and Sentinel-1 acquisitions per pixel."""
        return self.read_with_counts(window)[1]

    def read_with_counts(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The 23-band composite of ``window`` and its counts (see :meth:`read_counts`)."""
        w = check_window(self.grid, window)
        out = np.empty((N_BANDS, w.height, w.width), dtype=np.float32)
        counts = np.zeros((2, w.height, w.width), dtype=np.uint16)
        counts[0] = self._s2_composite(w, out[S2_SLICE])
        t = time.perf_counter()
        compute_indices(out[S2_SLICE], out=out[INDEX_SLICE])
        self.timers.lap("indices", t)
        counts[1] = self._s1_composite(w, out)
        t = time.perf_counter()
        bad = (counts[0] == 0) | ~np.isfinite(out.sum(axis=0, dtype=np.float32))
        np.copyto(out, np.float32(np.nan), where=bad[None])
        self.timers.lap("mask", t)
        return out, counts

    def _clear(self, a: S2Acquisition, w: Window) -> np.ndarray:
        """Clear pixels of one acquisition on ``w`` by its SCL, clouds and shadows dilated."""
        region = self.grid.expand(w, self.dilation)
        scl = a.reader.scl_classes(None, region, self.grid)
        ok = ~np.isnan(scl) & ~np.isin(scl, SCL_NODATA)
        cloud = dilate(np.isin(scl, SCL_CLOUD), self.dilation)
        ro, co = w.row_off - region.row_off, w.col_off - region.col_off
        return (ok & ~cloud)[ro: ro + w.height, co: co + w.width]

    def _s2_composite(self, w: Window, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (9, h, w) with the median reflectance; return the clear count (h, w)."""
        t = time.perf_counter()
        active: list[S2Acquisition] = []
        masks: list[np.ndarray] = []
        for a in self.s2:
            if not _intersects(a.footprint, w):
                continue
            c = self._clear(a, w)
            if c.any():  # an acquisition cloudy all over the block costs no band reads
                active.append(a)
                masks.append(c)
        t = self.timers.lap("scl", t)
        if not active:
            out[:] = np.nan
            return np.zeros((w.height, w.width), np.uint16)
        clear = np.stack(masks)
        del masks
        shape = (len(active), w.height, w.width)
        # B02 and B11 stand for the 10 m and 20 m groups: where either lacks data the
        # observation is not clear in any band, so all bands use the same observations.
        first = {b: np.empty(shape, np.float32) for b in ("B02", "B11")}
        for b, arr in first.items():
            for k, a in enumerate(active):
                arr[k] = a.reader.read_band(b, w, self.grid)
            clear &= np.isfinite(arr)
        t = self.timers.lap("read_s2", t)
        count = None
        buf = None
        for i, b in enumerate(S2_BANDS):
            if b in first:
                vals = first.pop(b)
            else:
                t = time.perf_counter()
                vals = buf if buf is not None else np.empty(shape, np.float32)
                for k, a in enumerate(active):
                    vals[k] = a.reader.read_band(b, w, self.grid)
                t = self.timers.lap("read_s2", t)
            t = time.perf_counter()
            out[i], n = clear_median(vals, clear)
            self.timers.lap("median", t)
            if count is None:
                count = n
            buf = vals  # reuse the buffer for the next band
        assert count is not None
        return count

    def _s1_composite(self, w: Window, out: np.ndarray) -> np.ndarray:
        """Fill VV and the GLCM bands of ``out`` from the mean power; return the S1 count (h, w)."""
        prep = self.preprocessing
        t = time.perf_counter()
        region = self.grid.expand(w, prep.halo)
        pm = PowerMean((region.height, region.width))
        for a in self.s1:
            pm.add(a.reader.read_power(region))
        power = pm.mean()
        self.timers.lap("warp_s1", t)
        # the mean of n acquisitions has n times the looks of one
        self._sar_bands(power, DEFAULT_ENL * np.maximum(pm.count, 1).astype(np.float64), w, region, out)
        ro, co = w.row_off - region.row_off, w.col_off - region.col_off
        return pm.count[ro: ro + w.height, co: co + w.width]

    def close(self) -> None:
        if getattr(self, "_hash_pool", None) is not None:
            self._hash_pool.shutdown(wait=True, cancel_futures=True)
            self._hash_pool = None
        for a in self.s2:
            a.reader.close()
        for b in self.s1:
            b.reader.close()


def _refuse_stack(path: Path) -> None:
    """A prepared 23-band stack holds no DN and no SCL: it cannot be composited again."""
    if not path.is_file():
        return
    from ..bands import S1_BAND
    from ..raster import open_raster
    from .stack import is_stack

    with open_raster(path, "--s2") as ds:
        if set(ds.descriptions) == {S1_BAND}:
            raise InputError(f"--s2 {path} is a Sentinel-1 raster (band {S1_BAND}), not a Sentinel-2 "
                             "acquisition; give it with --s1, and name the Sentinel-2 acquisitions on "
                             "their own (their folders, or a quoted pattern such as 'downloads/*_S2')")
        if is_stack(ds):
            raise InputError(f"--s2 {path} is a 23-band stack made by coal-prepare, not a Sentinel-2 "
                             "acquisition; a composite is made from the acquisitions themselves (their "
                             "band files and SCL): pass those instead")


def _date_tag(reader: Any) -> dt.date | None:
    ds = getattr(reader, "ds", None)
    if ds is None:
        return None
    for k, v in ds.tags().items():
        if k.upper() in ("DATE", "ACQUISITION_DATE", "SENSING_DATE"):
            d = date_from_name(v)
            if d is not None:
                return d
    return None
