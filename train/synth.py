"""Synthetic Tapin-like scenes: Sentinel-2 L2A DN bands, Sentinel-1 sigma0 VV and a mine label.

The generator paints a land-cover map near Tapin Regency (South Kalimantan, about 2.9 deg S,
115.2 deg E, UTM zone 50 south) and renders it the way the sensors would deliver it:

* **Sentinel-2 L2A** as a folder of single-band uint16 GeoTIFFs named like a SAFE ``IMG_DATA``
  folder (``T50MLA_<date>_B02_10m.tif`` ...): the 10 m bands at 10 m, the 20 m bands at 20 m
  (2x2 block means, so the reader's resampling path is exercised), DN 0 = nodata, plus a
  20 m ``SCL`` scene classification and a minimal ``MTD_MSIL2A.xml`` with the processing
  baseline. Years from 2022 on are processing baseline 04.00+ and carry the +1000 DN offset
  (``BOA_ADD_OFFSET = -1000``); 2016-2021 have offset 0, like the real archive.
* **Sentinel-1 sigma0 VV** in linear power (float32, NaN nodata) on a *different* grid: by default
  EPSG:32750 at 10 m but with an origin shifted by a fraction of a pixel and a wider extent, so a
  real reprojection is needed; ``s1_crs`` can put it in another CRS altogether (e.g. EPSG:4326, as
  Earth Engine exports are). Gamma speckle with ENL 4.4 (IW GRDH) is applied on the S1 grid.
* **Labels**: uint8 on the Sentinel-2 grid, 1 = open-pit mine (pit, benches, overburden dumps,
  tailing ponds), 0 = anything else, 255 = nodata (where Sentinel-2 has no data).

The landscape is not trivially separable: burned patches and rivers are dark like coal, bare farm
fields look like overburden, settlements are bright in radar like benches, clouds and their
shadows hide parts of the optical image (radar sees through them), and reclaimed mine land turns
to shrub and leaves the mine class. ``make_series`` keeps the landscape and the mines' places fixed
for a seed and lets each mine grow, start late, or shrink under reclamation from year to year.

Only NumPy and rasterio are used (no torch, no scipy). Everything is seeded and deterministic.

Example:
    >>> s = make_scene("/tmp/synth", 2019, seed=1, size=256)      # doctest: +SKIP
    >>> s.s2_dir, s.s1_path, s.label_path, s.mine_pixels          # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine, array_bounds, from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

__all__ = ["SynthScene", "MinePlan", "make_scene", "make_series", "make_acquisitions", "mine_plan", "S2_CRS",
           "CLASSES"]

#: Sentinel-2 tiles over Tapin (MGRS 50M..) use UTM zone 50 south.
S2_CRS = "EPSG:32750"
#: Upper-left corner of the default scene (about 2.9 deg S, 115.2 deg E); a multiple of 60 m so
#: the 10 m and 20 m grids share it, as in real Sentinel-2 tiles.
DEFAULT_ORIGIN = (300000.0, 9680040.0)
#: Equivalent number of looks of Sentinel-1 IW GRDH (gamma speckle shape).
ENL = 4.4
#: Speckle-free sigma0 VV of each class is drawn around these dB values.
_S2_ALL = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
_S2_10M = ("B02", "B03", "B04", "B08")

#: Land-cover classes painted by the generator (index -> name); ``MINE_CLASSES`` are label 1.
CLASSES: tuple[str, ...] = (
    "forest",
    "plantation",
    "shrub",
    "farm_bare",
    "farm_crop",
    "settlement",
    "water",
    "burned",
    "coal_pit",
    "benches",
    "overburden",
    "tailing_pond",
)
_C = {n: i for i, n in enumerate(CLASSES)}
MINE_CLASSES = (_C["coal_pit"], _C["benches"], _C["overburden"], _C["tailing_pond"])

# Surface reflectance (B02 B03 B04 B05 B06 B07 B08 B11 B12) per class, and sigma0 VV in dB
# (mean, per-pixel spread). Plausible values for humid tropical Borneo; deliberately overlapping.
_SPECTRA = np.array(
    [
        [0.020, 0.040, 0.025, 0.070, 0.220, 0.280, 0.310, 0.150, 0.070],  # forest
        [0.030, 0.055, 0.035, 0.090, 0.250, 0.300, 0.340, 0.180, 0.090],  # plantation (oil palm)
        [0.040, 0.070, 0.060, 0.120, 0.250, 0.290, 0.320, 0.220, 0.120],  # shrub / grass
        [0.080, 0.110, 0.150, 0.180, 0.210, 0.230, 0.250, 0.320, 0.260],  # bare farm soil
        [0.040, 0.080, 0.050, 0.110, 0.280, 0.330, 0.360, 0.200, 0.100],  # crop (rice, maize)
        [0.100, 0.120, 0.140, 0.160, 0.180, 0.190, 0.210, 0.240, 0.200],  # settlement
        [0.060, 0.080, 0.070, 0.060, 0.040, 0.030, 0.030, 0.015, 0.010],  # river / pond (turbid)
        [0.040, 0.050, 0.060, 0.080, 0.100, 0.110, 0.120, 0.160, 0.140],  # burned
        [0.040, 0.045, 0.050, 0.055, 0.060, 0.065, 0.070, 0.070, 0.060],  # coal pit
        [0.080, 0.100, 0.120, 0.140, 0.160, 0.170, 0.180, 0.220, 0.190],  # benches
        [0.120, 0.150, 0.190, 0.220, 0.240, 0.260, 0.280, 0.340, 0.300],  # overburden dump
        [0.070, 0.100, 0.100, 0.090, 0.070, 0.060, 0.050, 0.030, 0.020],  # tailing pond
    ],
    dtype=np.float32,
)
_VV_DB = np.array(
    [
        [-7.0, 1.0],  # forest
        [-7.5, 1.0],  # plantation
        [-10.0, 1.5],  # shrub
        [-11.0, 2.0],  # bare farm soil (moisture varies)
        [-9.5, 1.5],  # crop
        [-3.0, 3.0],  # settlement (double bounce)
        [-21.0, 1.5],  # water
        [-12.0, 1.5],  # burned
        [-13.0, 1.5],  # coal pit
        [-7.0, 2.0],  # benches (terrace faces added below)
        [-10.0, 1.5],  # overburden
        [-19.0, 1.5],  # tailing pond
    ],
    dtype=np.float32,
)
_CLOUD = np.array([0.42, 0.43, 0.44, 0.45, 0.46, 0.46, 0.47, 0.38, 0.30], dtype=np.float32)


@dataclass(frozen=True)
class MinePlan:
    """One mine's place, shape and life: radius in pixels per year (0 = not (yet) a mine)."""

    row: float
    col: float
    radii: dict[int, float]
    aspect: float
    angle: float
    dump_dir: float
    pond_dir: float
    seed: int

    def radius(self, year: int) -> float:
        """Radius (pixels of the 10 m grid) in ``year``; the nearest planned year outside the plan."""
        if year in self.radii:
            return self.radii[year]
        ys = sorted(self.radii)
        return self.radii[ys[0]] if year < ys[0] else self.radii[ys[-1]]


@dataclass(frozen=True)
class SynthScene:
    """Paths and facts of one generated scene (all rasters georeferenced)."""

    s2_dir: Path
    s1_path: Path
    label_path: Path
    scl_path: Path
    year: int
    crs: CRS
    transform: Affine
    width: int
    height: int
    s1_crs: CRS
    s1_transform: Affine
    #: Number of label-1 pixels (10 m) in the scene.
    mine_pixels: int
    #: Sentinel-2 BOA_ADD_OFFSET of this product (-1000 from baseline 04.00, else 0).
    boa_add_offset: int
    processing_baseline: str
    date: str
    #: Share of S2 pixels under (thick or thin) cloud, for information.
    cloud_share: float = 0.0
    band_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def mine_area_ha(self) -> float:
        """Mined area in hectares (10 m pixels are 0.01 ha)."""
        return self.mine_pixels * abs(self.transform.a * self.transform.e) / 10000.0


def processing_baseline(year: int) -> str:
    """A plausible Sentinel-2 L2A processing baseline for products of ``year``."""
    table = {2016: "02.04", 2017: "02.05", 2018: "02.09", 2019: "02.12", 2020: "02.14", 2021: "03.01"}
    if year >= 2022:
        return "04.00" if year == 2022 else "05.09"
    return table.get(year, "02.04")


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation weights mapping ``n_in`` control points onto ``n_out`` samples."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    t = pos - i0
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), i0] = 1.0 - t
    m[np.arange(n_out), i0 + 1] = t
    return m


def _smooth(rng: np.random.Generator, shape: tuple[int, int], cells: float) -> np.ndarray:
    """Smooth random field (about unit variance) with features ``shape/cells`` pixels across."""
    h, w = shape
    nh = max(3, int(round(cells * h / max(h, w))) + 2)
    nw = max(3, int(round(cells * w / max(h, w))) + 2)
    low = rng.standard_normal((nh, nw)).astype(np.float32)
    f = _interp_matrix(h, nh) @ low @ _interp_matrix(w, nw).T
    # a finer octave breaks up the bilinear facets
    nh2, nw2 = 2 * nh, 2 * nw
    low2 = rng.standard_normal((nh2, nw2)).astype(np.float32)
    f += 0.4 * (_interp_matrix(h, nh2) @ low2 @ _interp_matrix(w, nw2).T)
    f /= float(f.std()) + 1e-6
    return f


def mine_plan(seed: int, size: int, years: Iterable[int] = range(2016, 2022)) -> list[MinePlan]:
    """Places and yearly radii of the mines of a scene of ``size`` pixels, fixed by ``seed``.

    Most mines grow; some open late; some shrink from a peak year on (reclamation).
    """
    years = sorted(years)
    rng = np.random.default_rng([seed, 7919])
    # Coal mines cluster along the strike of the seams: centres scatter around a line.
    n = max(2, int(round(size * size / 180.0**2)))
    strike = float(rng.uniform(0, np.pi))
    mid_r, mid_c = rng.uniform(0.35, 0.65, size=2) * size
    plans: list[MinePlan] = []
    for k in range(n):
        t = float(rng.uniform(-0.45, 0.45) * size)
        jitter = float(rng.normal(0.0, 0.12) * size)
        row = float(np.clip(mid_r + t * np.sin(strike) + jitter * np.cos(strike), 0.05 * size, 0.95 * size))
        col = float(np.clip(mid_c + t * np.cos(strike) - jitter * np.sin(strike), 0.05 * size, 0.95 * size))
        r0 = float(rng.uniform(14.0, 38.0))
        kind = ("grow", "shrink")[k] if k < 2 else str(rng.choice(["grow", "grow", "late", "shrink"]))
        radii: dict[int, float] = {}
        start = years[0] + (int(rng.integers(1, 3)) if kind == "late" else 0)
        peak = years[len(years) // 2] if kind == "shrink" else years[-1] + 1
        growth = float(rng.uniform(0.08, 0.2))
        for y in range(years[0], max(years[-1], 2030) + 1):
            if y < start:
                r = 0.0
            elif y <= peak:
                r = r0 * (1.0 + growth * (y - start))
            else:
                r = r0 * (1.0 + growth * (peak - start)) * max(0.35, 1.0 - 0.2 * (y - peak))
            radii[y] = r
        plans.append(
            MinePlan(
                row=row,
                col=col,
                radii=radii,
                aspect=float(rng.uniform(0.55, 1.0)),
                angle=float(rng.uniform(0, np.pi)),
                dump_dir=float(rng.uniform(-np.pi, np.pi)),
                pond_dir=float(rng.uniform(-np.pi, np.pi)),
                seed=int(rng.integers(0, 2**31)),
            )
        )
    return plans


def _landscape(seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Year-independent land cover (class index map) and a soil-moisture field."""
    rng = np.random.default_rng([seed, 1])
    cls = np.full((h, w), _C["shrub"], dtype=np.uint8)
    f1 = _smooth(rng, (h, w), 5)
    f2 = _smooth(rng, (h, w), 9)
    cls[f1 > 0.35] = _C["forest"]
    cls[(f1 > -0.3) & (f1 <= 0.35) & (f2 > -0.2)] = _C["plantation"]
    # farm fields: rectangles with their own state (bare, crop, shrub)
    farm = f1 < -0.45
    fs = 24
    state = rng.choice(np.array([_C["farm_bare"], _C["farm_crop"], _C["shrub"]], dtype=np.uint8),
                       size=(h // fs + 2, w // fs + 2), p=[0.45, 0.4, 0.15])
    jitter_r = rng.integers(0, fs)
    jitter_c = rng.integers(0, fs)
    rr = (np.arange(h)[:, None] + jitter_r) // fs
    cc = (np.arange(w)[None, :] + jitter_c) // (fs + 8)
    fields = state[rr, cc]
    cls[farm] = fields[farm]
    # burned patches: dark like coal in the optical bands
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(max(1, (h * w) // 120000)):
        r0, c0, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, 22)
        blob = np.hypot(yy - r0, xx - c0) / rad + 0.35 * f2 < 1.0
        cls[blob] = _C["burned"]
    # settlements: clusters of small buildings
    for _ in range(max(1, (h * w) // 90000)):
        r0, c0, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(15, 35)
        zone = np.hypot(yy - r0, xx - c0) < rad
        bmask = np.zeros((h, w), dtype=bool)
        for _b in range(int(rad * 1.2)):
            br = int(r0 + rng.uniform(-rad, rad))
            bc = int(c0 + rng.uniform(-rad, rad))
            bh, bw = rng.integers(2, 6, size=2)
            bmask[max(0, br): max(0, br + bh), max(0, bc): max(0, bc + bw)] = True
        cls[zone & bmask] = _C["settlement"]
    # a meandering river and some ponds
    cols = np.arange(w, dtype=np.float32)
    center = (rng.uniform(0.3, 0.7) * h + rng.uniform(0.05, 0.12) * h
              * np.sin(2 * np.pi * cols / rng.uniform(0.6, 1.2) / w + rng.uniform(0, 6.28))
              + 6.0 * _smooth(rng, (1, w), 6)[0])
    half = rng.uniform(2.0, 4.5) * (1.0 + 0.25 * _smooth(rng, (1, w), 4)[0])
    cls[np.abs(yy - center[None, :]) < half[None, :]] = _C["water"]
    for _ in range(max(2, (h * w) // 50000)):
        r0, c0, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2.5, 7)
        cls[np.hypot(yy - r0, xx - c0) < rad] = _C["water"]
    moisture = _smooth(rng, (h, w), 4)
    return cls, moisture


def _paint_mines(cls: np.ndarray, plans: list[MinePlan], year: int, row0: int,
                 col0: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint the mines of ``year`` over ``cls``; returns the class map and a terrace-phase field.

    ``row0``/``col0`` place the plan's coordinates (relative to the S2 grid) in this array.
    """
    h, w = cls.shape
    terrace = np.zeros((h, w), dtype=np.float32)
    for p in plans:
        r = p.radius(year)
        if r <= 0:
            continue
        ext = int(r * 2.0) + 4
        # the outline's wobble belongs to the mine (not the year): a growing pit keeps its form
        span = int(max(p.radii.values()) * 2.0) + 8
        wob = _smooth(np.random.default_rng(p.seed), (2 * span, 2 * span), 5)
        r_lo, r_hi = max(0, int(p.row) + row0 - ext), min(h, int(p.row) + row0 + ext)
        c_lo, c_hi = max(0, int(p.col) + col0 - ext), min(w, int(p.col) + col0 + ext)
        if r_lo >= r_hi or c_lo >= c_hi:
            continue
        yy, xx = np.mgrid[r_lo:r_hi, c_lo:c_hi].astype(np.float32)
        dy, dx = yy - (p.row + row0), xx - (p.col + col0)
        ca, sa = np.cos(p.angle), np.sin(p.angle)
        u = (dx * ca + dy * sa) / r
        v = (-dx * sa + dy * ca) / (r * p.aspect)
        oy = (yy.astype(int) - row0 - int(p.row) + span).clip(0, 2 * span - 1)
        ox = (xx.astype(int) - col0 - int(p.col) + span).clip(0, 2 * span - 1)
        d = np.hypot(u, v) * (1.0 + 0.18 * wob[oy, ox])
        ang = np.arctan2(dy, dx)
        sub = cls[r_lo:r_hi, c_lo:c_hi]
        ter = terrace[r_lo:r_hi, c_lo:c_hi]
        in_dump_sector = np.cos(ang - p.dump_dir) > 0.45
        sub[(d >= 1.0) & (d < 1.45) & in_dump_sector] = _C["overburden"]
        sub[(d < 1.0)] = _C["benches"]
        sub[(d < 1.0) & (d >= 0.8) & in_dump_sector] = _C["overburden"]
        sub[d < 0.42] = _C["coal_pit"]
        # terraces: concentric benches about 3 px apart (faces bright in radar, floors dark)
        bench = (d >= 0.42) & (d < 1.0)
        ter[bench] = np.sin(2 * np.pi * d[bench] * r / 3.2)
        pond_d = np.hypot(dx - 0.55 * r * np.cos(p.pond_dir), dy - 0.55 * r * np.sin(p.pond_dir))
        sub[(pond_d < 0.22 * r) & (d < 1.0)] = _C["tailing_pond"]
        # reclaimed ring: land that was mined at the peak and is now shrub again (label 0)
        rmax = max(p.radii.values())
        if r < rmax - 0.5:
            rec = (d >= 1.0) & (d * r < rmax * (1.0 + 0.18 * wob[oy, ox])) & ~in_dump_sector
            sub[rec] = _C["shrub"]
    return cls, terrace


def _write(path: Path, arr: np.ndarray, crs: CRS, transform: Affine, nodata: float | int | None,
           tags: dict[str, str] | None = None, desc: str | None = None) -> None:
    profile = {
        "driver": "GTiff",
        "height": arr.shape[0],
        "width": arr.shape[1],
        "count": 1,
        "dtype": arr.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if arr.shape[0] >= 256 and arr.shape[1] >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)
        if tags:
            dst.update_tags(**tags)
        if desc:
            dst.set_band_description(1, desc)


def _mtd_xml(date: str, baseline: str, offset: int) -> str:
    offsets = ""
    if offset:
        items = "".join(
            f'<BOA_ADD_OFFSET band_id="{i}">{offset}</BOA_ADD_OFFSET>' for i in range(13)
        )
        offsets = f"<BOA_ADD_OFFSET_VALUES_LIST>{items}</BOA_ADD_OFFSET_VALUES_LIST>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/'
        'User_Product_Level-2A.xsd">\n'
        "<n1:General_Info><Product_Info>"
        f"<PRODUCT_START_TIME>{date}T02:25:51.024Z</PRODUCT_START_TIME>"
        "<PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL><PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>"
        f"<PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>"
        "</Product_Info><Product_Image_Characteristics><QUANTIFICATION_VALUES_LIST>"
        '<BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>'
        f"</QUANTIFICATION_VALUES_LIST>{offsets}</Product_Image_Characteristics>"
        "</n1:General_Info>\n</n1:Level-2A_User_Product>\n"
    )


def make_scene(
    out_dir: str | os.PathLike[str],
    year: int,
    *,
    seed: int,
    size: int = 512,
    plans: list[MinePlan] | None = None,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    s1_crs: str | CRS = S2_CRS,
    s1_res: float = 10.0,
    s1_shift: tuple[float, float] = (3.7, -6.2),
    cloud_cover: float = 0.06,
    nodata_corner: bool | None = None,
    prefix: str | None = None,
    date: str | None = None,
) -> SynthScene:
    """Generate one scene into ``out_dir`` and return its paths and facts.

    Args:
        out_dir: folder to write into (created); the S2 bands go into ``<out_dir>/<prefix>_S2``.
        year: acquisition year; decides mine extents and the S2 processing baseline/offset.
        seed: fixes the landscape and the mines; clouds, noise and speckle also use ``year``.
        size: scene width and height in 10 m pixels (even; 512 takes well under a second).
        plans: mines to paint (default: ``mine_plan(seed, size)``).
        origin: upper-left corner of the S2 grid in EPSG:32750 metres (multiple of 20 m).
        s1_crs: CRS of the Sentinel-1 raster (another UTM zone or EPSG:4326 also work).
        s1_res: S1 pixel size in metres (or degrees for a geographic ``s1_crs``; default 10 m,
            or about 10 m in degrees when geographic).
        s1_shift: offset (x, y metres) of the S1 grid origin against the S2 grid (same CRS only).
        cloud_cover: approximate share of the scene under cloud (0 for none).
        nodata_corner: blank an orbit-edge corner of S2 to DN 0 (default: every third year).
        prefix: file-name prefix (default ``synth_<year>``).
        date: acquisition date ``YYYY-MM-DD`` (default mid-July of ``year``); each date gets its
            own clouds, noise and speckle, so several dates of one year form a series to composite.

    Returns:
        A :class:`SynthScene`.

    Raises:
        ValueError: ``size`` is odd or smaller than 64.

    Example:
        >>> make_scene("/tmp/s", 2022, seed=3, size=128).boa_add_offset   # doctest: +SKIP
        -1000
    """
    if size < 64 or size % 2:
        raise ValueError(f"size must be an even number of pixels >= 64, got {size}")
    out = Path(out_dir)
    prefix = prefix or f"synth_{year}"
    s2_dir = out / f"{prefix}_S2"
    s2_dir.mkdir(parents=True, exist_ok=True)
    plans = mine_plan(seed, size) if plans is None else plans
    crs = CRS.from_string(S2_CRS)
    x0, y0 = origin
    transform = from_origin(x0, y0, 10.0, 10.0)
    margin = 24  # extra 10 m context so the S1 raster covers the S2 grid with real content
    H = W = size + 2 * margin
    ext_transform = from_origin(x0 - margin * 10.0, y0 + margin * 10.0, 10.0, 10.0)

    cls, moisture = _landscape(seed, H, W)
    cls, terrace = _paint_mines(cls, plans, year, margin, margin)
    # drawn from in this order: S2, then S1; another date of the year, other clouds and speckle
    rng = np.random.default_rng([seed, year, 2] if date is None else [seed, year, 2, int(date.replace("-", ""))])

    sl = (slice(margin, margin + size), slice(margin, margin + size))
    c = cls[sl]
    refl, clouds = _s2_reflectance(rng, c, moisture[sl], cloud_cover)
    if nodata_corner is None:
        nodata_corner = year % 3 == 0
    s2 = _write_s2(s2_dir, refl, year, origin, crs, nodata_corner, date or f"{year}-07-15")
    scl_path = _write_scl(s2, c, clouds, crs)
    truth_lin = _vv_truth_linear(rng, cls, moisture, terrace)
    s1_path, s1_crs, s1_t = _write_s1(out / f"{prefix}_S1_VV_sigma0_linear.tif", rng, truth_lin, ext_transform,
                                      crs, CRS.from_user_input(s1_crs), s1_res, s1_shift, s2.date)

    # --- label on the S2 grid
    label = np.isin(c, MINE_CLASSES).astype(np.uint8)
    label[s2.nodata] = 255
    label_path = out / f"{prefix}_label.tif"
    _write(label_path, label, crs, transform, 255, {"CLASSES": "0=background,1=mine"}, "mine")

    return SynthScene(
        s2_dir=s2_dir,
        s1_path=s1_path,
        label_path=label_path,
        scl_path=scl_path,
        year=year,
        crs=crs,
        transform=transform,
        width=size,
        height=size,
        s1_crs=s1_crs,
        s1_transform=s1_t,
        mine_pixels=int((label == 1).sum()),
        boa_add_offset=s2.offset,
        processing_baseline=s2.baseline,
        date=s2.date,
        cloud_share=clouds.share,
        band_paths=s2.band_paths,
    )


@dataclass
class _Clouds:
    """Cloud opacity and shadow (None without clouds) and the share of cloudy pixels."""

    alpha: np.ndarray | None = None
    shadow: np.ndarray | None = None
    share: float = 0.0


def _s2_reflectance(rng: np.random.Generator, c: np.ndarray, moisture: np.ndarray,
                    cloud_cover: float) -> tuple[np.ndarray, _Clouds]:
    """BOA reflectance (9, size, size) of the classes ``c``: spectra, tone, noise, clouds and shadows."""
    size = c.shape[0]
    tone = 1.0 + 0.07 * _smooth(rng, (size, size), 12)
    refl = _SPECTRA[c].transpose(2, 0, 1) * tone[None]
    refl[:, c == _C["farm_bare"]] *= (1.0 - 0.12 * moisture[c == _C["farm_bare"]])[None]
    refl += rng.normal(0.0, 0.004, size=refl.shape).astype(np.float32)
    clouds = _Clouds()
    if cloud_cover > 0:
        cf = _smooth(rng, (size, size), 7)
        thr = np.quantile(cf, 1.0 - cloud_cover)
        alpha = np.clip((cf - thr) / 0.6 + 0.15, 0.0, 1.0) * (cf > thr - 0.09)
        alpha = alpha.astype(np.float32)
        shadow = np.roll(alpha, (9, -12), axis=(0, 1)) * 0.55
        refl *= (1.0 - shadow)[None]
        refl = refl * (1.0 - alpha)[None] + _CLOUD[:, None, None] * alpha[None]
        clouds = _Clouds(alpha, shadow, float((alpha > 0.05).mean()))
    return np.clip(refl, 0.0005, 1.5), clouds


@dataclass
class _S2Product:
    """What :func:`_write_s2` wrote and the facts later steps need."""

    folder: Path
    band_paths: dict[str, Path]
    nodata: np.ndarray
    nodata20: np.ndarray
    transform20: Affine
    tags: dict[str, str]
    stamp: str
    date: str
    baseline: str
    offset: int


def _write_s2(s2_dir: Path, refl: np.ndarray, year: int, origin: tuple[float, float], crs: CRS,
              nodata_corner: bool, date: str) -> _S2Product:
    """Write the L2A band files (10 m bands, 20 m bands as 2x2 means) and MTD_MSIL2A.xml.

    DN = reflectance * 10000 - BOA_ADD_OFFSET (-1000 from processing baseline 04.00); DN 0 is
    nodata (the orbit-edge corner, and a 20 m pixel when any of its four 10 m pixels is).
    """
    size = refl.shape[1]
    x0, y0 = origin
    baseline = processing_baseline(year)
    offset = -1000 if float(baseline) >= 4.0 else 0
    dn10 = np.rint(refl * 10000.0 - offset).clip(1, 65535).astype(np.uint16)
    nodata = np.zeros((size, size), dtype=bool)
    if nodata_corner:
        rr, cc = np.mgrid[0:size, 0:size]
        nodata = rr + cc < size // 3
    dn10[:, nodata] = 0
    r20 = refl.reshape(9, size // 2, 2, size // 2, 2).mean(axis=(2, 4))
    nd20 = nodata.reshape(size // 2, 2, size // 2, 2).any(axis=(1, 3))
    dn20 = np.rint(r20 * 10000.0 - offset).clip(1, 65535).astype(np.uint16)
    dn20[:, nd20] = 0
    transform = from_origin(x0, y0, 10.0, 10.0)
    t20 = from_origin(x0, y0, 20.0, 20.0)
    stamp = f"{date.replace('-', '')}T022551"
    tags = {"PROCESSING_BASELINE": baseline, "BOA_ADD_OFFSET": str(offset),
            "BOA_QUANTIFICATION_VALUE": "10000", "PRODUCT_TYPE": "S2MSI2A", "DATE": date}
    band_paths: dict[str, Path] = {}
    for i, b in enumerate(_S2_ALL):
        is10 = b in _S2_10M
        p = s2_dir / f"T50MLA_{stamp}_{b}_{'10m' if is10 else '20m'}.tif"
        _write(p, dn10[i] if is10 else dn20[i], crs, transform if is10 else t20, 0, tags, b)
        band_paths[b] = p
    (s2_dir / "MTD_MSIL2A.xml").write_text(_mtd_xml(date, baseline, offset), encoding="utf-8")
    return _S2Product(s2_dir, band_paths, nodata, nd20, t20, tags, stamp, date, baseline, offset)


def _write_scl(s2: _S2Product, c: np.ndarray, clouds: _Clouds, crs: CRS) -> Path:
    """The 20 m scene classification: 0 nodata, 3 cloud shadow, 4 vegetation, 5 not vegetated,
    6 water, 8/9 cloud (medium/high probability)."""
    scl_cls = c[::2, ::2]
    veg = np.isin(scl_cls, [_C["forest"], _C["plantation"], _C["shrub"], _C["farm_crop"]])
    scl = np.where(veg, 4, 5).astype(np.uint8)
    scl[np.isin(scl_cls, [_C["water"], _C["tailing_pond"]])] = 6
    if clouds.alpha is not None and clouds.shadow is not None:
        a20 = clouds.alpha[::2, ::2]
        scl[clouds.shadow[::2, ::2] > 0.2] = 3
        scl[a20 > 0.05] = 8
        scl[a20 > 0.5] = 9
    scl[s2.nodata20] = 0
    path = s2.folder / f"T50MLA_{s2.stamp}_SCL_20m.tif"
    _write(path, scl, crs, s2.transform20, 0, s2.tags, "SCL")
    return path


def _vv_truth_linear(rng: np.random.Generator, cls: np.ndarray, moisture: np.ndarray,
                     terrace: np.ndarray) -> np.ndarray:
    """Speckle-free VV sigma0 (linear power) of the classes on the extended 10 m grid: class
    means and texture, soil moisture on bare fields, bench terraces, plantation rows, bright
    settlement scatterers."""
    H, W = cls.shape
    mu, sd = _VV_DB[cls, 0], _VV_DB[cls, 1]
    vv_db = mu + sd * _smooth(rng, (H, W), 30)
    vv_db += np.where(cls == _C["farm_bare"], 2.5 * moisture, 0.0).astype(np.float32)
    vv_db += np.where(cls == _C["benches"], 5.0 * terrace, 0.0).astype(np.float32)
    pl = cls == _C["plantation"]
    rows_pattern = (np.add.outer(np.arange(H), np.arange(W)) % 9 < 3).astype(np.float32)
    vv_db[pl] += 1.5 * rows_pattern[pl]
    st = cls == _C["settlement"]
    vv_db[st] += rng.exponential(3.0, size=int(st.sum())).astype(np.float32)
    return np.power(10.0, vv_db / 10.0).astype(np.float32)


def _write_s1(path: Path, rng: np.random.Generator, truth_lin: np.ndarray, ext_transform: Affine, crs: CRS,
              s1_crs: CRS, s1_res: float, s1_shift: tuple[float, float], date: str) -> tuple[Path, CRS, Affine]:
    """Warp the VV truth onto the Sentinel-1 grid (bilinear), add gamma speckle (mean 1, ENL
    looks) and write it; returns (path, S1 CRS, S1 transform)."""
    H, W = truth_lin.shape
    left, bottom, right, top = array_bounds(H, W, ext_transform)
    inset = 6 * 10.0  # the S1 raster lies inside the extended grid (no empty edge) but covers S2
    left, bottom, right, top = left + inset, bottom + inset, right - inset, top - inset
    if s1_crs == crs:
        s1_t = from_origin(left + s1_shift[0], top + s1_shift[1], s1_res, s1_res)
        s1_w = int((right - left - s1_shift[0]) // s1_res)
        s1_h = int((top - bottom + s1_shift[1]) // s1_res)
    else:
        res = s1_res if not s1_crs.is_geographic else s1_res / 111320.0
        s1_t, s1_w, s1_h = calculate_default_transform(crs, s1_crs, W, H, left, bottom, right, top,
                                                       resolution=res)
    s1 = np.full((s1_h, s1_w), np.nan, dtype=np.float32)
    reproject(truth_lin, s1, src_transform=ext_transform, src_crs=crs, dst_transform=s1_t,
              dst_crs=s1_crs, src_nodata=None, dst_nodata=np.nan, resampling=Resampling.bilinear)
    s1 *= rng.gamma(ENL, 1.0 / ENL, size=s1.shape).astype(np.float32)
    _write(path, s1, s1_crs, s1_t, float("nan"), {"UNITS": "linear", "POLARISATION": "VV", "DATE": date}, "VV")
    return path, s1_crs, s1_t


def make_series(
    out_dir: str | os.PathLike[str],
    years: Iterable[int] = range(2016, 2022),
    *,
    seed: int,
    size: int = 512,
    **kwargs: object,
) -> list[SynthScene]:
    """Generate one scene per year over the same landscape; mines grow, open late or shrink.

    Args:
        out_dir: folder for all scenes (each year gets its own file prefix ``synth_<year>``).
        years: acquisition years, e.g. ``range(2016, 2022)``.
        seed: fixes landscape and mine plan; the same seed gives the same series.
        size: scene size in 10 m pixels.
        **kwargs: passed to :func:`make_scene` (``cloud_cover``, ``s1_crs`` ...).

    Returns:
        The scenes in year order.

    Example:
        >>> [s.mine_pixels for s in make_series("/tmp/s", range(2016, 2019), seed=1, size=128)]  # doctest: +SKIP
    """
    years = sorted(years)
    plans = mine_plan(seed, size, years)
    return [make_scene(out_dir, y, seed=seed, size=size, plans=plans, **kwargs) for y in years]  # type: ignore[arg-type]


def make_acquisitions(
    out_dir: str | os.PathLike[str],
    year: int,
    n: int,
    *,
    seed: int,
    size: int = 512,
    cloud_cover: tuple[float, float] = (0.2, 0.6),
    plans: list[MinePlan] | None = None,
    **kwargs: object,
) -> list[SynthScene]:
    """Generate ``n`` acquisitions of one year over the same landscape and mines, clouds moving.

    The dates are spread evenly over the year (as a revisit series); each acquisition draws its
    own cloud cover from ``cloud_cover`` (seeded) and its own clouds, shadows, noise and speckle,
    so a pixel hidden in one acquisition is usually clear in another -- the input of an annual
    composite. Files are prefixed ``synth_<date>``.

    Args:
        out_dir: folder for all acquisitions.
        year: the year (mines as in ``make_series`` for that year).
        n: number of acquisitions (1..365).
        seed: fixes landscape, mines, dates' cloud covers.
        size: scene size in 10 m pixels.
        cloud_cover: (low, high) share of each acquisition under cloud.
        plans: mines to paint (default ``mine_plan(seed, size)``).
        **kwargs: passed to :func:`make_scene`.

    Returns:
        The acquisitions in date order.

    Example:
        >>> [a.date for a in make_acquisitions("/tmp/a", 2021, 3, seed=1, size=128)]  # doctest: +SKIP
        ['2021-01-01', '2021-05-02', '2021-08-31']
    """
    import datetime as dt

    if not 1 <= n <= 365:
        raise ValueError(f"n must be 1..365 acquisitions, got {n}")
    plans = mine_plan(seed, size) if plans is None else plans
    rng = np.random.default_rng([seed, year, 7])
    covers = rng.uniform(cloud_cover[0], cloud_cover[1], size=n)
    step = 365 // n
    out = []
    for k in range(n):
        d = (dt.date(year, 1, 1) + dt.timedelta(days=k * step)).isoformat()
        out.append(make_scene(out_dir, year, seed=seed, size=size, plans=plans, date=d,
                              prefix=f"synth_{d}", cloud_cover=float(covers[k]), **kwargs))  # type: ignore[arg-type]
    return out
