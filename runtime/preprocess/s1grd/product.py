"""Finding the parts of a Sentinel-1 GRD product: SAFE folder, its zip, or the COG-SAFE variant.

A product is given as it was downloaded:

* a **SAFE folder** ``S1A_IW_GRDH_1SDV_<start>_<stop>_<orbit>_<take>_<crc>.SAFE`` (or its
  ``manifest.safe``);
* its **zip** (``….zip`` or ``….SAFE.zip``), read in place -- XML through :mod:`zipfile`, the
  measurement through GDAL's ``/vsizip/`` -- never extracted;
* the Copernicus Data Space **COG** variant (``…_COG.SAFE``, measurements ``…-cog.tiff``), folder or
  zip: same annotation, tiled measurement.

What is used, for the VV polarisation: the product annotation, the calibration and noise XML of
``annotation/calibration/``, the measurement TIFF, and the IPF version from ``manifest.safe``.
Refused, each with the file named and what to do: SLC, RAW and OCN products, modes other than IW
(EW/WV/SM: the model was trained on IW 10 m GRD), products without VV, a missing calibration or
noise file, a damaged or truncated zip.

A product fetched from a STAC catalogue (``coal-fetch --s1 grd``) is a SAFE folder whose
measurement holds only a window of the image, around the areas of interest: its GeoTIFF tags
:data:`WINDOW_TAG` (``col_off,row_off,width,height`` in the full image) and :data:`SIZE_TAG`
(``width,height`` of the full image) say where; the reader maps annotation line/pixel numbers
through them and treats the rest of the image as no data.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ...errors import InputError, InputNotFoundError

#: S1A_IW_GRDH_1SDV_..., S1B_EW_GRDM_1SDH_..., S1A_IW_SLC__1SDV_..., S1A_IW_RAW__0SDV_...
NAME_RE = re.compile(
    r"^(?P<mission>S1[A-D])_(?P<mode>IW|EW|WV|S[1-6]|EN|N[1-6]|Z[1-6I])_"
    r"(?P<type>GRD|SLC|RAW|OCN|ETA)(?P<res>[HMF_])_(?P<level>\d)(?P<cls>[SA])(?P<pol>SH|SV|DH|DV|HH|HV|VV|VH)_",
    re.IGNORECASE,
)
#: Measurement tag of a fetched window: where it lies in the full image, ``col_off,row_off,width,height``.
WINDOW_TAG = "COALMINE_SOURCE_WINDOW"
#: Measurement tag of a fetched window: the full image's ``width,height`` (numberOfSamples, numberOfLines).
SIZE_TAG = "COALMINE_SOURCE_SIZE"
_IPF_RE = re.compile(rb'name="Sentinel-1 IPF"\s+version="(\d+)\.(\d+)"')


def manifest_ipf(manifest: bytes) -> float | None:
    """The Sentinel-1 IPF version a ``manifest.safe`` names (e.g. 3.4), or None."""
    m = _IPF_RE.search(manifest)
    return float(f"{int(m.group(1))}.{m.group(2).decode()}") if m else None


def product_name_of(path: Path) -> str | None:
    """The SAFE product name a path stands for (folder, zip, manifest.safe), or None."""
    p = path.parent if path.name.lower() == "manifest.safe" else path
    name = p.name
    for suf in (".zip", ".ZIP", ".SAFE", ".safe"):
        if name.endswith(suf):
            name = name[: -len(suf)]
    for suf in (".SAFE", ".safe"):
        if name.endswith(suf):
            name = name[: -len(suf)]
    return name if NAME_RE.match(name) else None


def looks_like_s1_product(path: str | Path) -> bool:
    """True if ``path`` is a Sentinel-1 SAFE folder, its zip or its manifest (by name or content).

    Rasters are never products, even when named after one (``S1A_IW_GRDH_…_VV.tif`` exports).
    A path that does not exist counts as a product when its name is one (so that the GRD
    reader, not the raster reader, says it is missing).
    """
    p = Path(path)
    if p.is_file() and p.suffix.lower() not in (".zip", ".safe"):
        return False  # a raster (even one named after its product, as many exports are)
    if product_name_of(p) is not None:
        return True
    if p.is_dir() and (p / "manifest.safe").is_file():
        return (p / "annotation").is_dir() and any((p / "measurement").glob("s1*"))
    if p.is_file() and p.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
        return any(PurePosixPath(n).name.lower().startswith("s1") and "/measurement/" in n
                   for n in names)
    return False


@dataclass
class GrdProduct:
    """The located parts of one product (VV)."""

    path: Path  # as given
    name: str  # SAFE name without suffixes
    form: str  # "SAFE folder", "SAFE zip", "COG-SAFE folder", "COG-SAFE zip"
    ipf: float
    mission: str
    mode: str
    resolution: str  # H / M / F
    annotation_name: str
    annotation: bytes
    calibration_name: str
    calibration: bytes
    noise_name: str
    noise: bytes
    measurement: str  # GDAL path (a /vsizip/ path for a zip)


class _Folder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        return [str(p.relative_to(self.root)).replace("\\", "/")
                for p in self.root.rglob("*") if p.is_file()]

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def gdal_path(self, rel: str) -> str:
        return str(self.root / rel)


class _Zip:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(
                f"--s1 {path} is not a readable zip ({exc}); the download is truncated or damaged: "
                "download the product again (its size should match the catalogue's)"
            ) from exc
        tops = {n.split("/", 1)[0] for n in self.zf.namelist() if "/" in n}
        safes = [t for t in tops if t.upper().endswith(".SAFE")]
        self.prefix = (safes[0] + "/") if len(safes) == 1 else ""

    def names(self) -> list[str]:
        n = len(self.prefix)
        return [x[n:] for x in self.zf.namelist() if x.startswith(self.prefix) and not x.endswith("/")]

    def read(self, rel: str) -> bytes:
        try:
            return self.zf.read(self.prefix + rel)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise InputError(f"--s1 {self.path}: {rel} cannot be read from the zip ({exc}); the "
                             "download is damaged: download the product again") from exc

    def gdal_path(self, rel: str) -> str:
        return f"/vsizip/{self.path.resolve()}/{self.prefix}{rel}"


def _pick(names: list[str], pattern: re.Pattern[str]) -> list[str]:
    return sorted(n for n in names if pattern.search(n))


def open_product(path: str | Path, option: str = "--s1") -> GrdProduct:
    """Locate the VV parts of a GRD product (folder, zip, manifest.safe; SAFE or COG-SAFE).

    Raises:
        InputNotFoundError: the path does not exist.
        InputError: not a usable IW GRD product (SLC/RAW/OCN, EW/WV/SM, no VV, missing XML,
            damaged zip), with the file named and what to do.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{option} {p} does not exist; check the path")
    src: _Folder | _Zip
    if p.is_file() and p.name.lower() == "manifest.safe":
        p = p.parent
    if p.is_dir():
        src, kind = _Folder(p), "folder"
    elif p.suffix.lower() == ".zip":
        src, kind = _Zip(p), "zip"
    else:
        raise InputError(f"{option} {p} is neither a SAFE folder nor a zip of one")
    name = product_name_of(p) or (src.prefix.rstrip("/").removesuffix(".SAFE")
                                  if isinstance(src, _Zip) else p.name)
    m = NAME_RE.match(name)
    if m:
        ptype, mode = m["type"].upper(), m["mode"].upper()
        if ptype == "SLC":
            raise InputError(f"{option} {p} is a Single Look Complex (SLC) product; coalmine reads "
                             "Ground Range Detected products: download the GRD (…_IW_GRDH_…) of the "
                             "same acquisition")
        if ptype in ("RAW", "OCN", "ETA"):
            what = {"RAW": "a Level-0 RAW product (unfocused echoes)",
                    "OCN": "a Level-2 OCN product (ocean wind/wave/current, no backscatter image)",
                    "ETA": "an auxiliary ETA product"}[ptype]
            raise InputError(f"{option} {p} is {what}; coalmine needs the Level-1 GRD "
                             "(…_IW_GRDH_1S…) of the same acquisition")
        if mode != "IW":
            raise InputError(f"{option} {p} was acquired in {mode} mode; coalmine supports "
                             "Interferometric Wide swath (IW) GRD products, as the study used "
                             "(10 m pixels, VV): use an IW GRDH acquisition of the area")
        if m["pol"].upper() in ("SH", "DH", "HH", "HV"):
            raise InputError(f"{option} {p} holds {m['pol'].upper()} polarisation (HH/HV) and no VV; "
                             "the model was trained on VV backscatter: use an acquisition with VV "
                             "(…_1SDV_ or …_1SSV_; over land IW mode is VV+VH almost everywhere)")
    names = src.names()
    if "manifest.safe" not in names:
        raise InputError(f"{option} {p} has no manifest.safe; it is not a complete SAFE product: "
                         "download the product again (or give the .SAFE folder itself)")
    ipf = manifest_ipf(src.read("manifest.safe")) or 0.0

    ann = _pick(names, re.compile(r"^annotation/s1[a-d]-[a-z0-9]+-(grd|slc)-vv-[^/]*\.xml$", re.I))
    meas = _pick(names, re.compile(r"^measurement/s1[a-d]-[a-z0-9]+-(grd|slc)-vv-[^/]*\.tiff?$", re.I))
    if not ann and not meas:
        pols = sorted({x.split("-")[3].upper() for x in names
                       if re.match(r"^measurement/s1[a-d]-[a-z0-9]+-\w+-(hh|hv|vh|vv)-", x, re.I)})
        raise InputError(f"{option} {p} has no VV measurement (polarisations: "
                         f"{', '.join(pols) or 'none found'}); the model was trained on VV "
                         "backscatter: use an acquisition with VV")
    if not meas:
        raise InputError(f"{option} {p} lacks its VV measurement (measurement/…-vv-….tiff); the "
                         "product is incomplete: download it again")
    if not ann:
        raise InputError(f"{option} {p} lacks the VV product annotation (annotation/…-vv-….xml); "
                         "the product is incomplete: download it again")
    stem = PurePosixPath(ann[0]).stem
    cal_name = f"annotation/calibration/calibration-{stem}.xml"
    noise_name = f"annotation/calibration/noise-{stem}.xml"
    for need, what in ((cal_name, "calibration"), (noise_name, "noise")):
        if need not in names:
            raise InputError(f"{option} {p} lacks its {what} file {need}; it is needed for "
                             f"{'calibration to sigma0' if what == 'calibration' else 'thermal noise removal'}"
                             ": the product is incomplete, download it again")
    cog = name.upper().endswith("_COG") or meas[0].lower().endswith("-cog.tiff")
    return GrdProduct(
        path=Path(path), name=name,
        form=f"{'COG-SAFE' if cog else 'SAFE'} {kind}",
        ipf=ipf,
        mission=(m["mission"].upper() if m else stem[:3].upper()),
        mode=(m["mode"].upper() if m else stem.split("-")[1].upper()),
        resolution=(m["res"].upper() if m else "?"),
        annotation_name=ann[0], annotation=src.read(ann[0]),
        calibration_name=cal_name, calibration=src.read(cal_name),
        noise_name=noise_name, noise=src.read(noise_name),
        measurement=src.gdal_path(meas[0]),
    )
