"""The XML of a Sentinel-1 GRD product, parsed into plain NumPy arrays.

Three files per polarisation (ESA's "Sentinel-1 Product Specification", S1-RS-MDA-52-7441):

* the **product annotation** (``annotation/s1?-iw-grd-vv-*.xml``): image size, first-line time
  and line interval, slant range time of the first sample, orbit state vectors, the geolocation
  grid, the slant-to-ground-range polynomials (``coordinateConversion``), pass direction;
* the **calibration** (``annotation/calibration/calibration-*.xml``): ``sigmaNought``,
  ``betaNought``, ``gamma`` and ``dn`` vectors at given lines, each sampled at given pixels;
* the **noise** (``annotation/calibration/noise-*.xml``): range noise vectors (``noiseRangeLut``,
  or ``noiseLut`` before IPF 2.90) at given lines and pixels, and from IPF 2.90 on azimuth noise
  vectors, one per block of lines and samples (a sub-swath piece).

Times are float64 seconds since the product's first line (``productFirstLineUtcTime``), which is
the line-0 time of the image: ``line = t / azimuth_time_interval``.

The standard library's ElementTree is enough: the files are a few MB, parsed once per product,
and expat does not fetch external entities (nothing in the file can reach outside it).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from ...errors import InputError


def parse_time(text: str) -> np.datetime64:
    """ISO UTC time of the annotation (``2021-12-23T05:11:22.594441``) as datetime64[ns]."""
    return np.datetime64(text.strip().rstrip("Z"), "ns")


def seconds(t: np.datetime64 | np.ndarray, epoch: np.datetime64) -> np.ndarray | float:
    """Seconds from ``epoch`` to ``t`` (float64)."""
    return (np.asarray(t, dtype="datetime64[ns]") - epoch) / np.timedelta64(1, "s")


def _floats(text: str | None) -> np.ndarray:
    return np.array((text or "").split(), dtype=np.float64)


def _ints(text: str | None) -> np.ndarray:
    return np.array((text or "").split(), dtype=np.int64)


@dataclass
class LineVectors:
    """Vectors given at some lines, each sampled at its own pixels (calibration, range noise)."""

    lines: np.ndarray  # (n,) int64, increasing
    pixels: list[np.ndarray]  # n arrays of increasing int64 pixel positions
    values: list[np.ndarray]  # n arrays of float64 values, same lengths as pixels


@dataclass
class AzimuthNoiseBlock:
    """One azimuth noise vector: valid for lines/samples inside its bounds (inclusive)."""

    swath: str
    first_line: int
    last_line: int
    first_sample: int
    last_sample: int
    lines: np.ndarray  # int64
    values: np.ndarray  # float64


@dataclass
class Noise:
    """Thermal noise annotation: range vectors and (IPF >= 2.90) azimuth blocks."""

    range: LineVectors
    azimuth: list[AzimuthNoiseBlock] = field(default_factory=list)


@dataclass
class Calibration:
    """Calibration vectors per LUT name (``sigmaNought``, ``betaNought``, ``gamma``, ``dn``)."""

    luts: dict[str, LineVectors]
    absolute_constant: float = 1.0


@dataclass
class Annotation:
    """What the geocoding and calibration need from the product annotation."""

    mission: str  # S1A / S1B / S1C
    mode: str  # IW, EW, SM, WV
    product_type: str  # GRD, SLC
    polarisation: str
    pass_direction: str  # Ascending / Descending
    epoch: np.datetime64  # productFirstLineUtcTime (line 0)
    last_line_time: float  # seconds after epoch
    lines: int
    samples: int
    azimuth_time_interval: float  # s per line
    range_pixel_spacing: float  # m (ground range)
    azimuth_pixel_spacing: float
    slant_range_time: float  # two-way, of sample 0 (s)
    radar_frequency: float
    incidence_mid_swath: float
    orbit_times: np.ndarray  # (n,) seconds after epoch
    orbit_pos: np.ndarray  # (n, 3) m, Earth-fixed
    orbit_vel: np.ndarray  # (n, 3) m/s
    # geolocation grid, one row per point
    grid_time: np.ndarray  # seconds after epoch
    grid_srt: np.ndarray  # slant range time (two-way, s)
    grid_line: np.ndarray
    grid_pixel: np.ndarray
    grid_lat: np.ndarray
    grid_lon: np.ndarray
    grid_height: np.ndarray
    grid_incidence: np.ndarray
    # slant-to-ground-range polynomials, one per azimuth time
    srgr_times: np.ndarray  # seconds after epoch
    srgr_sr0: np.ndarray  # m
    srgr_coeffs: np.ndarray  # (n, k)
    grsr_gr0: np.ndarray
    grsr_coeffs: np.ndarray


def _root(data: bytes, name: str) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputError(f"Sentinel-1 {name} is not valid XML ({exc}); the product is damaged: "
                         "download it again") from exc


def _text(root: ET.Element, path: str, name: str) -> str:
    el = root.find(path)
    if el is None or el.text is None:
        raise InputError(f"Sentinel-1 {name} lacks <{path.rsplit('/', 1)[-1]}>; the file is not a "
                         "Sentinel-1 Level-1 annotation or it is damaged: download the product again")
    return el.text.strip()


def parse_annotation(data: bytes, name: str) -> Annotation:
    """Parse a product annotation XML (bytes) named ``name`` (for messages)."""
    r = _root(data, name)
    t = lambda p: _text(r, p, name)  # noqa: E731
    epoch = parse_time(t("imageAnnotation/imageInformation/productFirstLineUtcTime"))
    last = seconds(parse_time(t("imageAnnotation/imageInformation/productLastLineUtcTime")), epoch)

    orbits = r.findall("generalAnnotation/orbitList/orbit")
    if len(orbits) < 4:
        raise InputError(f"Sentinel-1 {name} has {len(orbits)} orbit state vectors; at least 4 are "
                         "needed to geocode: the annotation is damaged, download the product again")
    o_t = np.array([seconds(parse_time(_text(o, "time", name)), epoch) for o in orbits])
    o_p = np.array([[float(_text(o, f"position/{a}", name)) for a in "xyz"] for o in orbits])
    o_v = np.array([[float(_text(o, f"velocity/{a}", name)) for a in "xyz"] for o in orbits])

    pts = r.findall("geolocationGrid/geolocationGridPointList/geolocationGridPoint")
    if len(pts) < 4:
        raise InputError(f"Sentinel-1 {name} has no geolocation grid; download the product again")

    def col(tag: str) -> np.ndarray:
        return np.array([float(_text(p, tag, name)) for p in pts])

    g_time = np.array([seconds(parse_time(_text(p, "azimuthTime", name)), epoch) for p in pts])

    convs = r.findall("coordinateConversion/coordinateConversionList/coordinateConversion")
    if convs:
        c_t = np.array([seconds(parse_time(_text(c, "azimuthTime", name)), epoch) for c in convs])
        sr0 = np.array([float(_text(c, "sr0", name)) for c in convs])
        srgr = np.array([_floats(c.findtext("srgrCoefficients")) for c in convs])
        gr0 = np.array([float(_text(c, "gr0", name)) for c in convs])
        grsr = np.array([_floats(c.findtext("grsrCoefficients")) for c in convs])
    else:
        c_t = sr0 = gr0 = np.zeros(0)
        srgr = grsr = np.zeros((0, 1))
    info = "imageAnnotation/imageInformation/"
    return Annotation(
        mission=t("adsHeader/missionId").upper(),
        mode=t("adsHeader/mode").upper(),
        product_type=t("adsHeader/productType").upper(),
        polarisation=t("adsHeader/polarisation").upper(),
        pass_direction=t("generalAnnotation/productInformation/pass"),
        epoch=epoch,
        last_line_time=float(last),
        lines=int(t(info + "numberOfLines")),
        samples=int(t(info + "numberOfSamples")),
        azimuth_time_interval=float(t(info + "azimuthTimeInterval")),
        range_pixel_spacing=float(t(info + "rangePixelSpacing")),
        azimuth_pixel_spacing=float(t(info + "azimuthPixelSpacing")),
        slant_range_time=float(t(info + "slantRangeTime")),
        radar_frequency=float(t("generalAnnotation/productInformation/radarFrequency")),
        incidence_mid_swath=float(t(info + "incidenceAngleMidSwath")),
        orbit_times=o_t, orbit_pos=o_p, orbit_vel=o_v,
        grid_time=g_time, grid_srt=col("slantRangeTime"), grid_line=col("line"),
        grid_pixel=col("pixel"), grid_lat=col("latitude"), grid_lon=col("longitude"),
        grid_height=col("height"), grid_incidence=col("incidenceAngle"),
        srgr_times=c_t, srgr_sr0=sr0, srgr_coeffs=srgr, grsr_gr0=gr0, grsr_coeffs=grsr,
    )


def _line_vectors(vectors: list[ET.Element], tag: str, name: str) -> LineVectors:
    lines, pixels, values = [], [], []
    for v in vectors:
        px = _ints(v.findtext("pixel"))
        val = _floats(v.findtext(tag))
        if px.size == 0 or px.size != val.size:
            raise InputError(f"Sentinel-1 {name}: a <{tag}> vector has {val.size} values for "
                             f"{px.size} pixels; the file is damaged: download the product again")
        lines.append(int(_text(v, "line", name)))
        pixels.append(px)
        values.append(val)
    order = np.argsort(lines, kind="stable")
    return LineVectors(np.asarray(lines, dtype=np.int64)[order], [pixels[i] for i in order],
                       [values[i] for i in order])


def parse_calibration(data: bytes, name: str) -> Calibration:
    """Parse a calibration XML: every LUT present (``sigmaNought``, ``betaNought``, ``gamma``, ``dn``)."""
    r = _root(data, name)
    vecs = r.findall("calibrationVectorList/calibrationVector")
    if not vecs:
        raise InputError(f"Sentinel-1 {name} holds no calibration vectors; the file is damaged: "
                         "download the product again")
    luts = {}
    for tag in ("sigmaNought", "betaNought", "gamma", "dn"):
        if vecs[0].find(tag) is not None:
            luts[tag] = _line_vectors(vecs, tag, name)
    const = r.findtext("calibrationInformation/absoluteCalibrationConstant")
    return Calibration(luts=luts, absolute_constant=float(const) if const else 1.0)


def parse_noise(data: bytes, name: str) -> Noise:
    """Parse a noise XML of either layout (before IPF 2.90: ``noiseVector``/``noiseLut``)."""
    r = _root(data, name)
    vecs = r.findall("noiseRangeVectorList/noiseRangeVector")
    tag = "noiseRangeLut"
    if not vecs:  # IPF < 2.90
        vecs = r.findall("noiseVectorList/noiseVector")
        tag = "noiseLut"
    if not vecs:
        raise InputError(f"Sentinel-1 {name} holds no noise vectors; the file is damaged: "
                         "download the product again")
    blocks = []
    for b in r.findall("noiseAzimuthVectorList/noiseAzimuthVector"):
        lines = _ints(b.findtext("line"))
        vals = _floats(b.findtext("noiseAzimuthLut"))
        if lines.size == 0 or lines.size != vals.size:
            raise InputError(f"Sentinel-1 {name}: an azimuth noise vector has {vals.size} values "
                             f"for {lines.size} lines; download the product again")
        blocks.append(AzimuthNoiseBlock(
            swath=(b.findtext("swath") or "").strip(),
            first_line=int(_text(b, "firstAzimuthLine", name)),
            last_line=int(_text(b, "lastAzimuthLine", name)),
            first_sample=int(_text(b, "firstRangeSample", name)),
            last_sample=int(_text(b, "lastRangeSample", name)),
            lines=lines, values=vals))
    return Noise(range=_line_vectors(vecs, tag, name), azimuth=blocks)
