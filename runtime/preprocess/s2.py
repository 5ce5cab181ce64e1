"""Finding and reading Sentinel-2 L2A bands, and turning DN into surface reflectance.

Three input forms are accepted:

* a **multi-band GeoTIFF** whose band descriptions name the bands (``B02``, ``B2``, ``B8A`` ...);
* a **folder of single-band files** (GeoTIFF or JP2) whose names contain the band
  (``..._B02_10m.jp2``, ``B02.tif``), as in a SAFE ``IMG_DATA`` folder or an STAC/COG download;
  when a band exists at several resolutions the finest is used;
* a **SAFE folder** (``S2?_MSIL2A_*.SAFE``): its ``GRANULE/*/IMG_DATA`` bands and ``MTD_MSIL2A.xml``;
* the SAFE's **zip** as downloaded (``….SAFE.zip`` / ``….zip``), read in place: the band files
  through GDAL's ``/vsizip/``, ``MTD_MSIL2A.xml`` through :mod:`zipfile`; nothing is extracted.

The output grid is the grid of B02 (10 m). Bands on another grid (the 20 m bands) are resampled
onto it when read (``S2Params.resampling``, bilinear by default).

DN -> reflectance is ``(DN + offset) / scale`` with DN 0 = nodata. The offset comes, in this
order, from an explicit ``s2_offset``; else the product metadata (``BOA_ADD_OFFSET`` in
``MTD_MSIL2A.xml`` or in GeoTIFF tags, GDAL band scale/offset, the processing baseline in the
metadata or in the SAFE name ``_N0400_``: -1000 from baseline 04.00 on); else it is guessed from
the acquisition date in the file names (-1000 from 2022-01-25) with a warning. Where an explicit
offset disagrees with the metadata, the explicit one is used and a warning says so. Negative
reflectance (dark water after the offset) is clipped to 0.

Level-1C products (top-of-atmosphere reflectance) are refused: the model is trained on L2A
surface reflectance.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.windows import Window

from ..bands import S2_BANDS
from ..bundle import S2Params
from ..errors import BandError, InputError, UsageError
from ..options import InputOptions
from ..raster import Grid, check_crs, check_exists, open_raster, read_checked
from .warp import read_onto_grid

log = logging.getLogger("coalmine.preprocess")

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
#: Band token in a file name or band description: B02, B2, B8A (not B020, not AB02).
_BAND_RE = re.compile(r"(?:^|[^A-Za-z0-9])B(8A|\d{1,2})(?=$|[^A-Za-z0-9])", re.IGNORECASE)
_SCL_RE = re.compile(r"(?:^|[^A-Za-z0-9])SCL(?=$|[^A-Za-z0-9])", re.IGNORECASE)
_L1C_RE = re.compile(r"(?:^|[^A-Za-z0-9])(MSIL1C|L1C)(?=$|[^A-Za-z0-9])", re.IGNORECASE)
_L2A_RE = re.compile(r"(?:^|[^A-Za-z0-9])(MSIL2A|L2A)(?=$|[^A-Za-z0-9])", re.IGNORECASE)
#: Level-2A band files carry their resolution (``T33UUU_20170216T102101_B02_10m.jp2``); Level-1C
#: ones do not (``..._B02.jp2``).
_L2A_BAND_FILE_RE = re.compile(r"_(?:B(?:\d{2}|8A)|SCL|AOT|WVP|TCI)_(?:10|20|60)m(?=\.[^.]+$|$)", re.IGNORECASE)
#: Where nothing says the processing level, the darkest pixels tell: 1 % of the B02 (blue)
#: values of Level-2A surface reflectance lie below ~0.03 (water, dense forest, shadow), while
#: top-of-atmosphere (Level-1C) blue carries the atmosphere's own path reflectance, ~0.05-0.1,
#: even over the darkest ground. A darkest-1 % B02 at or above this is refused as Level-1C.
TOA_DARK_B02 = 0.06
#: Float bands whose values stay below this are reflectance (0-1), not digital numbers.
MAX_REFLECTANCE = 3.0
_DATE_RE = re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})T\d{4,6}")
_BASELINE_NAME_RE = re.compile(r"_N(\d{2})(\d{2})_")
#: Date from which L2A products carry the -1000 offset (processing baseline 04.00).
OFFSET_START = "20220125"
#: SCL classes masked to nodata: 0 no data, 1 saturated/defective, 3 cloud shadow,
#: 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus.
SCL_MASKED = (0, 1, 3, 8, 9, 10)

# band_id in MTD_MSIL2A.xml BOA_ADD_OFFSET follows the physical band order B01..B12 with B8A.
_MTD_BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                 "B11", "B12")


def _norm_band(token: str) -> str:
    t = token.upper()
    return "B8A" if t == "8A" else f"B{int(t):02d}"


def band_of(name: str) -> str | None:
    """The Sentinel-2 band named in a file name or description (``'..._B8A_20m.jp2'`` -> 'B8A')."""
    m = _BAND_RE.findall(Path(name).name if "/" in name else name)
    return _norm_band(m[-1]) if m else None


@dataclass
class S2Metadata:
    """What the product metadata says (anything unknown is None)."""

    level: str | None = None  # "L2A" / "L1C"
    baseline: str | None = None
    offsets: dict[str, float] = field(default_factory=dict)
    scale: float | None = None
    date: str | None = None  # YYYYMMDD
    source: str = ""
    #: what told the level (empty while unknown)
    level_from: str = ""


@dataclass
class S2Offset:
    """The DN offset per band actually used, and where it came from."""

    offsets: dict[str, float]
    scale: float
    source: str  # "explicit", "metadata: ...", "guess: ..."

    @property
    def value(self) -> float:
        """The common offset (the first band's when they differ)."""
        return self.offsets[S2_BANDS[0]]


@dataclass
class BandRef:
    path: Path
    index: int  # 1-based band in the file


def _raster_files(folder: Path) -> list[Path]:
    files = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in RASTER_SUFFIXES or not p.is_file():
            continue
        parts = {q.upper() for q in p.relative_to(folder).parts}
        if "QI_DATA" in parts or p.name.upper().startswith("MSK_"):
            continue  # detector footprints, quality masks: also named after bands
        files.append(p)
    return files


def _find_mtd(path: Path) -> Path | None:
    start = path if path.is_dir() else path.parent
    for d in [start, *start.parents][:6]:
        for name in ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml"):
            if (d / name).is_file():
                return d / name
    return None


def _parse_mtd(mtd: Path, data: bytes | None = None) -> S2Metadata:
    md = S2Metadata(source=mtd.name, level_from=mtd.name)
    md.level = "L1C" if "L1C" in mtd.name.upper() else "L2A"
    try:
        root = ET.fromstring(data) if data is not None else ET.parse(mtd).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"Sentinel-2 metadata {mtd} cannot be parsed ({exc}); "
                         "remove it or pass --s2-offset explicitly") from exc
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        text = (el.text or "").strip()
        if tag == "PROCESSING_BASELINE" and text:
            md.baseline = text
        elif tag == "PRODUCT_TYPE" and text:
            if "1C" in text.upper():
                md.level = "L1C"
        elif tag == "BOA_ADD_OFFSET" and text:
            bid = int(el.attrib.get("band_id", "0"))
            if 0 <= bid < len(_MTD_BAND_IDS):
                md.offsets[_MTD_BAND_IDS[bid]] = float(text)
        elif tag == "BOA_QUANTIFICATION_VALUE" and text:
            md.scale = float(text)
        elif tag == "PRODUCT_START_TIME" and text:
            md.date = text[:10].replace("-", "")
    return md


def _metadata_from_tags(ds: DatasetReader) -> S2Metadata:
    tags = {k.upper(): v for k, v in ds.tags().items()}
    md = S2Metadata(source=f"tags of {Path(ds.name).name}")
    if "PROCESSING_BASELINE" in tags:
        md.baseline = tags["PROCESSING_BASELINE"]
    if "BOA_ADD_OFFSET" in tags:
        md.offsets = {b: float(tags["BOA_ADD_OFFSET"]) for b in S2_BANDS}
        if tags.get("BOA_ADD_OFFSET_SOURCE"):  # why the writer (e.g. coal-fetch) chose it
            md.source += f" ({tags['BOA_ADD_OFFSET_SOURCE']})"
    if "BOA_QUANTIFICATION_VALUE" in tags:
        md.scale = float(tags["BOA_QUANTIFICATION_VALUE"])
    level = (tags.get("PROCESSING_LEVEL", "") + tags.get("PRODUCT_TYPE", "")).upper()
    if "1C" in level:
        md.level, md.level_from = "L1C", f"PROCESSING_LEVEL/PRODUCT_TYPE tag of {Path(ds.name).name}"
    elif "2A" in level:
        md.level, md.level_from = "L2A", f"PROCESSING_LEVEL/PRODUCT_TYPE tag of {Path(ds.name).name}"
    elif "BOA_ADD_OFFSET" in tags:  # bottom-of-atmosphere offsets exist in Level-2A only
        md.level, md.level_from = "L2A", f"BOA_ADD_OFFSET tag of {Path(ds.name).name}"
    scale, off = ds.scales[0], ds.offsets[0]
    if (scale not in (0.0, 1.0) or off != 0.0) and not md.offsets:
        # GDAL band scale/offset: reflectance = DN * scale + offset
        md.scale = 1.0 / scale
        md.offsets = {b: off / scale for b in S2_BANDS}
        md.source = f"band scale/offset of {Path(ds.name).name}"
    return md


class S2Reader:
    """Sentinel-2 L2A bands of one product, read as reflectance on the B02 (10 m) grid.

    Args:
        path: multi-band GeoTIFF, folder of single-band files, or SAFE folder.
        params: S2 parameters (scale, resampling) from the Preprocessing.
        s2_offset: explicit DN offset (e.g. -1000) overriding the metadata.
        allow_l1c: read Level-1C products anyway (tests of JP2 reading; never for the model).

    Raises:
        InputNotFoundError, RasterError, CRSError, BandError, InputError (L1C), UsageError.

    Example:
        >>> with S2Reader("S2A_MSIL2A_..SAFE") as s2:          # doctest: +SKIP
        ...     refl = s2.read(Window(0, 0, 512, 512))        # (9, 512, 512) float32
    """

    def __init__(self, path: str | Path, params: S2Params | None = None, *,
                 s2_offset: float | None = None, allow_l1c: bool = False, scl_given: bool = False) -> None:
        self.path = check_exists(path, "--s2")
        self.params = params or S2Params()
        self._datasets: dict[Path, DatasetReader] = {}
        self._zip: zipfile.ZipFile | None = None
        self._warnings: list[tuple[str, tuple[object, ...]]] = []
        try:
            self.kind, self.band_refs, self.scl_ref = self._discover()
            self.metadata = self._metadata()
            ref = self._ds(self.band_refs["B02"].path)
            check_crs(ref, "--s2")
            if ref.crs is None:
                raise BandError(f"--s2 band B02 in {ref.name} is geocoded by GCPs only; "
                                "Sentinel-2 bands must be on a map grid (CRS + geotransform)")
            self.grid = Grid(ref.crs, ref.transform, ref.width, ref.height)
            for b, r in self.band_refs.items():
                ds = self._ds(r.path)
                check_crs(ds, "--s2")
                if ds.crs != self.grid.crs:
                    raise BandError(f"--s2 band {b} ({r.path.name}) is in {ds.crs}, B02 in "
                                    f"{self.grid.crs}; all Sentinel-2 bands must share one CRS")
            self.offset = self._resolve_offset(s2_offset)
            self._check_digital_numbers()
            if self.metadata.level is None:
                self._decide_level(scl_given)
            if self.metadata.level == "L1C" and not allow_l1c:
                raise InputError(
                    f"--s2 {self.path} is a Sentinel-2 Level-1C product (top-of-atmosphere reflectance), "
                    f"not Level-2A (surface reflectance, which the model expects), as {self.metadata.level_from} "
                    "tells; use the L2A product of the same date or process this one with Sen2Cor"
                )
        except BaseException:
            self.close()
            raise
        for msg, args in self._warnings:
            log.warning(msg, *args)

    # -- discovery -------------------------------------------------------------------------------
    def _ds(self, p: Path, option: str = "--s2") -> DatasetReader:
        """The open dataset of ``p`` (opened once); ``option`` names it in errors (``--s2``, ``--scl``)."""
        if p not in self._datasets:
            if str(p).startswith("/vsizip/"):
                import rasterio
                from rasterio.errors import RasterioIOError

                try:
                    self._datasets[p] = rasterio.open(str(p))
                except RasterioIOError as exc:
                    raise InputError(f"--s2 {self.path}: {p.name} cannot be read from the zip "
                                     f"({exc}); the download is damaged: download it again") from exc
            else:
                self._datasets[p] = open_raster(p, option)
        return self._datasets[p]

    def _zip_members(self) -> list[str]:
        """Members of a zipped SAFE (``self._zip``), refusing a damaged zip."""
        try:
            self._zip = zipfile.ZipFile(self.path)
            return [n for n in self._zip.namelist() if not n.endswith("/")]
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"--s2 {self.path} is not a readable zip ({exc}); the download is "
                             "truncated or damaged: download the product again") from exc

    def _discover(self) -> tuple[str, dict[str, BandRef], BandRef | None]:
        p = self.path
        if p.is_file() and p.suffix.lower() == ".zip":
            return self._discover_files(self._zip_files(), "safe zip")
        if p.is_file():
            ds = self._ds(p)
            if ds.count == 1:
                raise BandError(
                    f"--s2 {p} is a single-band raster; pass the folder that holds all the "
                    f"Sentinel-2 band files ({' '.join(S2_BANDS)}) or a multi-band GeoTIFF"
                )
            found: dict[str, BandRef] = {}
            scl = None
            for i, d in enumerate(ds.descriptions, start=1):
                if not d:
                    continue
                if _SCL_RE.search(d):
                    scl = BandRef(p, i)
                b = band_of(d)
                if b and b not in found:
                    found[b] = BandRef(p, i)
            if not found:
                raise BandError(
                    f"--s2 {p} has {ds.count} bands but no band descriptions naming them "
                    "(B02, B03, ...); set the descriptions (e.g. gdal_edit.py or rasterio "
                    "set_band_description) or pass a folder of single-band files"
                )
            self._check_complete(found)
            return "multiband", found, scl
        files = _raster_files(p)
        kind = "safe" if p.name.upper().endswith(".SAFE") or _find_mtd(p) == p / "MTD_MSIL2A.xml" \
            else "folder"
        return self._discover_files(files, kind)

    def _zip_files(self) -> list[Path]:
        """The band files of a zipped SAFE as GDAL ``/vsizip/`` paths (QI_DATA and MSK_ left out)."""
        root = self.path.resolve()
        out = []
        for n in self._zip_members():
            q = Path(n)
            if q.suffix.lower() not in RASTER_SUFFIXES:
                continue
            if "QI_DATA" in {x.upper() for x in q.parts} or q.name.upper().startswith("MSK_"):
                continue
            out.append(Path(f"/vsizip/{{{root}}}/{n}"))
        return out

    def _discover_files(self, files: list[Path], kind: str) -> tuple[str, dict[str, BandRef], BandRef | None]:
        p = self.path
        cands: dict[str, list[Path]] = {}
        scl_files: list[Path] = []
        for f in files:
            if _SCL_RE.search(f.stem):
                scl_files.append(f)
                continue
            b = band_of(f.stem)
            if b:
                cands.setdefault(b, []).append(f)
        if not cands:
            raise BandError(
                f"--s2 folder {p} holds no raster files named after Sentinel-2 bands "
                f"(expected names containing {', '.join(S2_BANDS)}, e.g. T50MLA_..._B02_10m.jp2)"
            )
        chosen = {b: BandRef(self._finest(fs), 1) for b, fs in cands.items()}
        self._check_complete(chosen)
        scl = BandRef(self._finest(scl_files), 1) if scl_files else None
        return kind, chosen, scl

    def _finest(self, files: list[Path]) -> Path:
        if len(files) == 1:
            return files[0]
        return min(files, key=lambda f: (self._ds(f).res[0], str(f)))

    def _check_complete(self, found: dict[str, BandRef]) -> None:
        missing = [b for b in S2_BANDS if b not in found]
        if missing:
            have = ", ".join(sorted(found)) or "none"
            raise BandError(
                f"--s2 {self.path} lacks band(s) {', '.join(missing)} (found: {have}); the stack "
                f"needs {' '.join(S2_BANDS)}: add the missing band file(s)"
            )

    # -- metadata and offset ---------------------------------------------------------------------
    def _metadata(self) -> S2Metadata:
        names = [str(self.path)] + [str(r.path) for r in self.band_refs.values()]
        if self._zip is not None:
            names = [n for n in self._zip.namelist() if Path(n).name in ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")]
            mtd_name = min(names, key=len) if names else None
            md = (_parse_mtd(Path(mtd_name), self._zip.read(mtd_name)) if mtd_name
                  else _metadata_from_tags(self._ds(self.band_refs["B02"].path)))
            return self._metadata_from_names(md, [str(self.path)] + [str(r.path) for r in self.band_refs.values()])
        mtd = _find_mtd(self.path)
        md = _parse_mtd(mtd) if mtd else _metadata_from_tags(self._ds(self.band_refs["B02"].path))
        return self._metadata_from_names(md, names)

    def _metadata_from_names(self, md: S2Metadata, names: list[str]) -> S2Metadata:
        if md.level is None and any(_L1C_RE.search(n) for n in names):
            md.level, md.level_from = "L1C", "file names"
            md.source = md.source or "file names"
        own = [Path(n).name for n in names]  # the product's own names, not the folders above it
        if md.level is None and any(_L2A_RE.search(n) for n in own):
            md.level, md.level_from = "L2A", "file names"
        if md.level is None and any(_L2A_BAND_FILE_RE.search(n) for n in own):
            md.level, md.level_from = "L2A", "band file names with a resolution (_B02_10m: Level-2A naming)"
        if md.baseline is None:
            for n in names:
                m = _BASELINE_NAME_RE.search(Path(n).name)
                if m and "MSIL2A" in n.upper():
                    md.baseline = f"{m.group(1)}.{m.group(2)}"
                    md.source = f"product name {Path(n).name}"
                    break
        if md.date is None:
            for n in names:
                m = _DATE_RE.search(Path(n).name)
                if m:
                    md.date = "".join(m.groups())
                    break
        return md

    def _warn(self, msg: str, *args: object) -> None:
        """A warning about the offset, logged once the input is accepted (a refused input gets
        its one line only)."""
        self._warnings.append((msg, args))

    def _resolve_offset(self, explicit: float | None) -> S2Offset:
        md = self.metadata
        scale = md.scale or self.params.scale
        meta: dict[str, float] | None = None
        why = ""
        if md.offsets:
            meta = {b: md.offsets.get(b, md.offsets.get("B02", 0.0)) for b in S2_BANDS}
            why = f"metadata: BOA_ADD_OFFSET from {md.source}"
        elif md.baseline is not None:
            try:
                base = float(md.baseline)
            except ValueError:
                base = None
            if base is not None:
                v = -1000.0 if base >= 4.0 else 0.0
                meta = dict.fromkeys(S2_BANDS, v)
                why = f"metadata: processing baseline {md.baseline} ({md.source})"
        if explicit is not None:
            InputOptions(s2_offset=explicit)  # refuses NaN and positive offsets (options.py)
            if meta is not None and any(v != explicit for v in meta.values()):
                self._warn("--s2-offset %g overrides the product's own offset (%s says %g)",
                            explicit, why, meta["B02"])
            return S2Offset(dict.fromkeys(S2_BANDS, float(explicit)), scale, "explicit --s2-offset")
        if meta is not None:
            return S2Offset(meta, scale, why)
        if md.date is not None:
            v = -1000.0 if md.date >= OFFSET_START else 0.0
            self._warn(
                "no Sentinel-2 processing baseline found for %s; guessed offset %g from the "
                "acquisition date %s (baseline 04.00 started 2022-01-25); pass --s2-offset to be sure",
                self.path, v, md.date)
            return S2Offset(dict.fromkeys(S2_BANDS, v), scale, f"guess: date {md.date}")
        self._warn("no Sentinel-2 processing baseline or date found for %s; assuming offset 0 "
                    "(products before 2022-01-25); pass --s2-offset -1000 for newer products",
                    self.path)
        return S2Offset(dict.fromkeys(S2_BANDS, 0.0), scale, "guess: no metadata")

    # -- what the values say -----------------------------------------------------------------------
    def _sample(self, band: str, size: int = 512) -> np.ndarray:
        """Valid values (not nodata DN, finite) of a band, read decimated (overviews where present)."""
        r = self.band_refs[band]
        ds = self._ds(r.path)
        a = read_checked(ds, "--s2", r.index, out_shape=(min(size, ds.height), min(size, ds.width)))
        v = a.ravel().astype(np.float64)
        keep = np.isfinite(v) & (v != self.params.nodata_dn)
        if ds.nodata is not None and not np.isnan(ds.nodata):
            keep &= v != ds.nodata
        return v[keep]

    def _check_digital_numbers(self) -> None:
        """Refuse a band that is not Level-2A digital numbers: an 8-bit image (a visual product)
        or floats of reflectance (0-1), e.g. one band converted by another tool beside DN bands,
        which ``(DN + offset) / 10000`` would turn into values near zero."""
        for b in S2_BANDS:
            r = self.band_refs[b]
            ds = self._ds(r.path)
            dtype = np.dtype(ds.dtypes[r.index - 1])
            what = f"--s2 band {b} ({r.path.name}{'' if ds.count == 1 else f', band {r.index}'})"
            expected = ("Sentinel-2 Level-2A bands are digital numbers as delivered: integers (uint16), "
                        "reflectance x 10000 (+1000 from processing baseline 04.00)")
            if dtype.kind in "iu" and dtype.itemsize == 1:
                raise BandError(f"{what} is {dtype}, an 8-bit image (a visual product such as TCI?); {expected}: "
                                "give the band files of the L2A product")
            if dtype.kind == "f" and ds.scales[r.index - 1] in (0.0, 1.0):
                v = self._sample(b)
                if v.size and float(np.percentile(v, 99)) < MAX_REFLECTANCE:
                    raise BandError(
                        f"{what} is {dtype} with values of reflectance (99 % below "
                        f"{float(np.percentile(v, 99)):.3g}), not digital numbers; {expected}: give the "
                        "band as delivered, or multiply it by 10000 and remove the offset, like the others")
            elif dtype.kind not in "iuf":
                raise BandError(f"{what} is {dtype}; {expected}")

    def _decide_level(self, scl_given: bool) -> None:
        """Tell Level-2A from Level-1C where neither the metadata nor the names say it.

        An SCL band (scene classification, made by Level-2A processing only) means L2A; a B10 band
        (cirrus, which Level-2A products drop) means L1C; otherwise the darkest pixels decide
        (:data:`TOA_DARK_B02`). Refuses input that looks like top-of-atmosphere reflectance.
        """
        md = self.metadata
        if self.scl_ref is not None or scl_given:
            md.level, md.level_from = "L2A", "an SCL band (made by Level-2A processing only)"
            return
        if "B10" in self.band_refs:
            md.level, md.level_from = "L1C", "a B10 band (Level-2A products have none)"
            return
        v = self._sample("B02")
        if v.size == 0:
            return  # no valid pixel: refused later as such
        dark = float(np.percentile((v + self.offset.offsets["B02"]) / self.offset.scale, 1))
        if dark >= TOA_DARK_B02:
            raise InputError(
                f"--s2 {self.path} does not say its processing level (no MTD_MSIL2A.xml, no PROCESSING_LEVEL "
                "or BOA_ADD_OFFSET tag, no SCL band, no L2A in its names) and its darkest pixels look like "
                f"top-of-atmosphere reflectance (Level-1C): 99 % of B02 lies above {dark:.3f}, while the darkest "
                "surface reflectance (Level-2A) of water and forest lies below 0.03; use the Level-2A product, or if "
                "this is Level-2A, put its MTD_MSIL2A.xml or SCL band beside the bands (or pass --scl)")
        md.level = "L2A"
        md.level_from = f"darkest 1 % of B02 below {dark:.3f}: surface reflectance"
        log.info("Sentinel-2 %s: processing level not recorded; taken as Level-2A (%s)", self.path, md.level_from)

    # -- reading ---------------------------------------------------------------------------------
    def read(self, window: Window, out: np.ndarray | None = None) -> np.ndarray:
        """Reflectance of the 9 bands on ``window`` of the B02 grid: float32 (9, h, w), NaN nodata.

        ``out``, if given, is a float32 (9, h, w) array to fill (e.g. a slice of the stack).
        """
        if out is None:
            out = np.empty((len(S2_BANDS), int(window.height), int(window.width)), np.float32)
        for i, b in enumerate(S2_BANDS):
            out[i] = self.read_band(b, window)
        np.copyto(out, np.float32(np.nan), where=np.isnan(out.sum(axis=0))[None])
        return out

    def read_band(self, band: str, window: Window, grid: Grid | None = None) -> np.ndarray:
        """Reflectance of one band on ``window`` of ``grid`` (default: the B02 grid).

        float32 (h, w), NaN where this band has no data (not masked across bands as in
        :meth:`read`). Any grid works (another tile's, another UTM zone's): the band is
        resampled onto it with ``params.resampling``.
        """
        r = self.band_refs[band]
        dn = read_onto_grid(self._ds(r.path), r.index, grid or self.grid, window,
                            Resampling[self.params.resampling], option="--s2",
                            src_nodata=self.params.nodata_dn)
        refl = (dn + np.float32(self.offset.offsets[band])) / np.float32(self.offset.scale)
        np.maximum(refl, 0.0, out=refl)  # NaN stays NaN
        return refl

    def scl_classes(self, scl: BandRef | None, window: Window, grid: Grid | None = None) -> np.ndarray:
        """SCL classes on ``window`` of ``grid`` (default: the B02 grid), nearest neighbour;
        float32 with NaN outside the SCL raster."""
        ref = scl or self.scl_ref
        if ref is None:
            raise UsageError(f"--scl auto: no SCL file found in {self.path}; pass --scl PATH")
        ds = self._ds(ref.path)
        return read_onto_grid(ds, ref.index, grid or self.grid, window, Resampling.nearest,
                              option="--scl", src_nodata=-1)

    def scl_invalid(self, scl: BandRef | None, window: Window) -> np.ndarray:
        """Boolean mask of pixels whose SCL class is masked (:data:`SCL_MASKED`)."""
        v = self.scl_classes(scl, window)
        return np.isnan(v) | np.isin(v, SCL_MASKED)

    def open_scl(self, path: str | Path) -> BandRef:
        """Open an SCL raster given by path and check it covers the grid's CRS."""
        p = check_exists(path, "--scl")
        ds = self._ds(p, "--scl")
        if ds.count != 1:
            raise BandError(
                f"--scl {p} has {ds.count} bands; the scene classification is one band of classes 0-11 "
                "(the Level-2A product's *_SCL_20m.jp2): give that file, or --scl auto to find it beside the bands")
        check_crs(ds, "--scl")
        return BandRef(p, 1)

    def close(self) -> None:
        for ds in self._datasets.values():
            ds.close()
        self._datasets.clear()
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> S2Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
