"""Generated Sentinel-1 GRD products built on the real annotation XML of ../shared/realdata.

The real S1B IW GRDH product there has its annotation, calibration, noise XML and manifest, but a
zeroed measurement. These helpers write a product folder (SAFE, COG-SAFE, zip, or the pre-2.90
layout) whose measurement holds DN computed from a known sigma0 field through the real LUTs,
DN = sqrt(sigma0 * A^2 + N), inside one window of the image (the rest of the full-size raster
is left unwritten: a sparse tiled GeoTIFF of a few MB).

The generator is deliberately independent of the code under test: ground positions of image
pixels come from bilinear interpolation of the annotation's geolocation grid (forward, line/pixel
-> lat/lon), not from Range-Doppler; LUTs are interpolated by a plain per-line loop.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window

SAFE_NAME = "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371"
UTM = "EPSG:32633"


def real_safe(realdata: Path) -> Path:
    return realdata / "s1_grd_safe_xml" / f"{SAFE_NAME}.SAFE"


def _vec(root: ET.Element, path: str, tag: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    lines, px, val = [], [], []
    for v in root.iter(path):
        lines.append(int(v.findtext("line")))
        px.append(np.array(v.findtext("pixel").split(), dtype=float))
        val.append(np.array(v.findtext(tag).split(), dtype=float))
    return np.array(lines), px, val


def _interp_lut(lines, px, val, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Reference bilinear LUT: loop over rows; linear along pixels, then between lines."""
    out = np.empty((rows.size, cols.size))
    for k, r in enumerate(rows):
        j = int(np.clip(np.searchsorted(lines, r, side="right") - 1, 0, len(lines) - 2))
        f = min(max((r - lines[j]) / (lines[j + 1] - lines[j]), 0.0), 1.0)
        a = np.interp(cols, px[j], val[j])
        b = np.interp(cols, px[j + 1], val[j + 1])
        out[k] = a + f * (b - a)
    return out


@dataclass
class Geo:
    """The annotation's geolocation grid as a forward model (line, pixel) -> lon/lat, UTM."""

    lines: np.ndarray
    pixels: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    inc: np.ndarray
    height: np.ndarray

    @classmethod
    def read(cls, ann: Path) -> Geo:
        r = ET.parse(ann).getroot()
        pts = list(r.iter("geolocationGridPoint"))
        g = {k: np.array([float(p.findtext(k)) for p in pts])
             for k in ("line", "pixel", "latitude", "longitude", "incidenceAngle", "height")}
        lines, pixels = np.unique(g["line"]), np.unique(g["pixel"])
        shape = (lines.size, pixels.size)
        return cls(lines, pixels, g["latitude"].reshape(shape), g["longitude"].reshape(shape),
                   g["incidenceAngle"].reshape(shape), g["height"].reshape(shape))

    def _bil(self, v: np.ndarray, ln: np.ndarray, p: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(self.lines, ln, side="right") - 1, 0, self.lines.size - 2)
        j = np.clip(np.searchsorted(self.pixels, p, side="right") - 1, 0, self.pixels.size - 2)
        fl = (ln - self.lines[i]) / (self.lines[i + 1] - self.lines[i])
        fp = (p - self.pixels[j]) / (self.pixels[j + 1] - self.pixels[j])
        top = v[i, j] * (1 - fp) + v[i, j + 1] * fp
        bot = v[i + 1, j] * (1 - fp) + v[i + 1, j + 1] * fp
        return top * (1 - fl) + bot * fl

    def utm(self, ln: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
        x, y = t.transform(self._bil(self.lon, ln, p), self._bil(self.lat, ln, p))
        return np.asarray(x), np.asarray(y)

    def incidence(self, ln: float, p: float) -> float:
        return float(self._bil(self.inc, np.array([ln]), np.array([p]))[0])

    def terrain(self, ln, p):  # noqa: ANN001, ANN201
        """The processor's terrain height (m, ellipsoidal) at image (line, pixel)."""
        return self._bil(self.height, np.asarray(ln, float), np.asarray(p, float))

    def incidence_at(self, ln, p):  # noqa: ANN001, ANN201
        return self._bil(self.inc, np.asarray(ln, float), np.asarray(p, float))


def smooth_sigma0(x: np.ndarray, y: np.ndarray, *_: np.ndarray) -> np.ndarray:
    """A known sigma0 field on the ground: -12 +- 6 dB, varying over kilometres.

    Fields get the UTM x, y that an image pixel sees on the processor's terrain surface and the
    pixel's line and pixel numbers.
    """
    db = -12.0 + 6.0 * np.sin(2 * np.pi * x / 3000.0) * np.cos(2 * np.pi * y / 4000.0)
    return 10.0 ** (db / 10.0)


@dataclass
class Made:
    path: Path  # the product as given to coalmine (folder or zip)
    window: Window  # image window holding data
    geo: Geo
    ipf: float


def make_product(realdata: Path, out: Path, window: Window, *, field=smooth_sigma0,
                 layout: str = "safe", zip_it: bool = False, old_ipf: bool = False,
                 border: tuple[int, int] | None = None, seed: int = 0,
                 drop: tuple[str, ...] = ()) -> Made:
    """Write a product whose measurement holds ``field`` (sigma0 of UTM x, y) in ``window``.

    Args:
        layout: "safe" or "cog" (Copernicus Data Space ``_COG.SAFE`` with ``-cog.tiff``).
        zip_it: also zip it (the zip is returned; the folder is removed).
        old_ipf: rewrite manifest and noise XML in the pre-2.90 layout (range noise only).
        border: (zero, noisy) sample counts at the window's left edge: ``zero`` samples of DN 0
            then ``noisy`` samples of low DN (border noise); only with ``old_ipf``.
        drop: relative paths to leave out (to test refusals).
    """
    src = real_safe(realdata)
    suffix = "_COG" if layout == "cog" else ""
    safe = out / f"{SAFE_NAME}{suffix}.SAFE"
    if safe.exists():
        shutil.rmtree(safe)
    (safe / "annotation" / "calibration").mkdir(parents=True)
    (safe / "measurement").mkdir()
    ann_src = next((src / "annotation").glob("s1b-*.xml"))
    stem = ann_src.stem
    files = {
        f"annotation/{stem}.xml": ann_src.read_bytes(),
        f"annotation/calibration/calibration-{stem}.xml":
            (src / "annotation/calibration" / f"calibration-{stem}.xml").read_bytes(),
        f"annotation/calibration/noise-{stem}.xml":
            (src / "annotation/calibration" / f"noise-{stem}.xml").read_bytes(),
        "manifest.safe": (src / "manifest.safe").read_bytes(),
    }
    ipf = 3.40
    if old_ipf:
        ipf = 2.80
        files["manifest.safe"] = files["manifest.safe"].replace(b'version="003.40"', b'version="002.80"')
        nz = files[f"annotation/calibration/noise-{stem}.xml"].decode()
        nz = re.sub(r"<noiseAzimuthVectorList.*?</noiseAzimuthVectorList>", "", nz, flags=re.S)
        nz = nz.replace("noiseRangeVectorList", "noiseVectorList").replace(
            "noiseRangeVector", "noiseVector").replace("noiseRangeLut", "noiseLut")
        files[f"annotation/calibration/noise-{stem}.xml"] = nz.encode()
    for rel, data in files.items():
        if rel not in drop:
            (safe / rel).write_bytes(data)

    # DN of the window from the known field, through the real LUTs
    root_ann = safe / f"annotation/{stem}.xml"
    geo = Geo.read(root_ann if root_ann.exists() else ann_src)
    rows = np.arange(window.row_off, window.row_off + window.height, dtype=float)
    cols = np.arange(window.col_off, window.col_off + window.width, dtype=float)
    cal_root = ET.fromstring(files[f"annotation/calibration/calibration-{stem}.xml"])
    A = _interp_lut(*_vec(cal_root, "calibrationVector", "sigmaNought"), rows, cols)
    noise_root = ET.fromstring(files[f"annotation/calibration/noise-{stem}.xml"])
    if old_ipf:
        N = _interp_lut(*_vec(noise_root, "noiseVector", "noiseLut"), rows, cols)
    else:
        N = _interp_lut(*_vec(noise_root, "noiseRangeVector", "noiseRangeLut"), rows, cols)
        az = np.zeros_like(N)
        for b in noise_root.iter("noiseAzimuthVector"):
            fl, ll = int(b.findtext("firstAzimuthLine")), int(b.findtext("lastAzimuthLine"))
            fs, ls = int(b.findtext("firstRangeSample")), int(b.findtext("lastRangeSample"))
            bl = np.array(b.findtext("line").split(), dtype=float)
            bv = np.array(b.findtext("noiseAzimuthLut").split(), dtype=float)
            for k, r in enumerate(rows):
                if fl <= r <= ll:
                    sel = (cols >= fs) & (cols <= ls)
                    az[k, sel] = np.interp(r, bl, bv)
        N = N * az
    L, P = np.meshgrid(rows, cols, indexing="ij")
    x, y = geo.utm(L, P)
    s0 = field(x, y, L, P)
    dn = np.sqrt(s0 * A * A + N)
    dn = np.clip(np.rint(dn), 1, 65534).astype(np.uint16)
    if border is not None:
        zero, noisy = border
        rng = np.random.default_rng(seed)
        dn[:, :zero] = 0
        dn[:, zero:zero + noisy] = rng.integers(1, 9, size=(dn.shape[0], noisy))

    meas_name = f"measurement/{stem}{'-cog' if layout == 'cog' else ''}.tiff"
    if meas_name not in drop:
        lines = int(ET.parse(ann_src).getroot().findtext(".//numberOfLines"))
        samples = int(ET.parse(ann_src).getroot().findtext(".//numberOfSamples"))
        with rasterio.open(safe / meas_name, "w", driver="GTiff", width=samples, height=lines,
                           count=1, dtype="uint16", tiled=True, blockxsize=256, blockysize=256,
                           compress="deflate", SPARSE_OK="TRUE",
                           transform=Affine.identity()) as ds:
            ds.write(dn, 1, window=window)
    made = Made(safe, window, geo, ipf)
    if zip_it:
        z = out / f"{safe.name}.zip" if layout == "cog" else out / f"{SAFE_NAME}.zip"
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(safe.rglob("*")):
                if f.is_file():
                    zf.write(f, f"{safe.name}/{f.relative_to(safe).as_posix()}")
        shutil.rmtree(safe)
        made.path = z
    return made


def s2_grid_over(geo: Geo, line: float, pixel: float, size: int, res: float = 10.0):
    """A UTM 33N grid of ``size`` x ``size`` px at ``res`` m centred on image (line, pixel)."""
    from coalmine.runtime.raster import Grid
    from rasterio.crs import CRS

    x, y = geo.utm(np.array([line]), np.array([pixel]))
    x0 = np.floor(x[0] / res) * res - size * res / 2
    y0 = np.floor(y[0] / res) * res + size * res / 2
    return Grid(CRS.from_string(UTM), Affine(res, 0, x0, 0, -res, y0), size, size)


S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")


def write_s2(path: Path, grid, seed: int = 0) -> Path:  # noqa: ANN001
    """A Sentinel-2 L2A multi-band GeoTIFF (band descriptions, BOA_ADD_OFFSET 0) on ``grid``."""
    rng = np.random.default_rng(seed)
    h, w = grid.height, grid.width
    yy, xx = np.mgrid[0:h, 0:w]
    base = 1200 + 600 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=len(S2_BANDS),
                       dtype="uint16", crs=grid.crs, transform=grid.transform, nodata=0) as ds:
        for i, b in enumerate(S2_BANDS, start=1):
            a = base * (0.6 + 0.1 * i) + rng.normal(0, 30, size=(h, w))
            ds.write(np.clip(a, 1, 10000).astype("uint16"), i)
            ds.set_band_description(i, b)
        ds.update_tags(BOA_ADD_OFFSET="0", PROCESSING_BASELINE="05.09", PRODUCT_TYPE="S2MSI2A")
    return path
