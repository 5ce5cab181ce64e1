"""Sentinel-1 orbit: state vectors from the annotation or a precise orbit file, interpolated.

The product annotation carries about 16 state vectors (position and velocity, Earth-fixed, every
10 s) around the acquisition; a precise orbit file (``S1?_OPER_AUX_POEORB_*.EOF``, or the
restituted ``RESORB``) carries a day of them, about 5 cm accurate instead of about a metre. Either
way the vectors within :data:`MARGIN_S` of the acquisition are fitted with one polynomial per
axis in time (degree :data:`DEGREE`, as sarsen does), whose derivatives give velocity and
acceleration for the zero-Doppler iteration. Over the ~100 s a product spans the fit's residual
is millimetres.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError, InputNotFoundError
from .annotation import Annotation, parse_time, seconds

#: Polynomial degree of the orbit fit.
DEGREE = 5
#: State vectors used: those within this many seconds of the first/last line.
MARGIN_S = 60.0


@dataclass
class Orbit:
    """A polynomial orbit: position, velocity and acceleration at any time (s after the epoch).

    Args:
        times: (n,) seconds after the product epoch.
        positions: (n, 3) Earth-fixed metres.
        source: where the vectors came from (recorded in the stack's tags).
    """

    times: np.ndarray
    positions: np.ndarray
    source: str

    def __post_init__(self) -> None:
        n = self.times.size
        if n < 4:
            raise InputError(f"orbit ({self.source}) has {n} state vectors around the acquisition; "
                             "at least 4 are needed")
        self.t_mid = float(self.times.mean())
        self.t_scale = float(max(np.ptp(self.times) / 2, 1.0))
        u = (self.times - self.t_mid) / self.t_scale
        deg = min(DEGREE, n - 1)
        self.coef = np.polynomial.polynomial.polyfit(u, self.positions, deg)  # (deg+1, 3)
        self.dcoef = np.polynomial.polynomial.polyder(self.coef) / self.t_scale
        self.ddcoef = np.polynomial.polynomial.polyder(self.dcoef) / self.t_scale
        fit = np.polynomial.polynomial.polyval(u, self.coef).T
        self.residual_m = float(np.abs(fit - self.positions).max())

    def state(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, velocity, acceleration at times ``t`` (any shape): each ``t.shape + (3,)``."""
        u = (np.asarray(t, dtype=np.float64) - self.t_mid) / self.t_scale
        pv = np.polynomial.polynomial.polyval
        return (np.moveaxis(pv(u, self.coef), 0, -1), np.moveaxis(pv(u, self.dcoef), 0, -1),
                np.moveaxis(pv(u, self.ddcoef), 0, -1))


def _window(ann: Annotation, times: np.ndarray) -> np.ndarray:
    return (times >= -MARGIN_S) & (times <= ann.last_line_time + MARGIN_S)


def annotation_orbit(ann: Annotation) -> Orbit:
    """The orbit from the state vectors in the product annotation."""
    keep = _window(ann, ann.orbit_times)
    if keep.sum() < 4:
        keep = np.ones_like(keep)
    return Orbit(ann.orbit_times[keep], ann.orbit_pos[keep], "annotation state vectors")


_MISSION_RE = re.compile(r"Sentinel-1([ABCD])", re.IGNORECASE)
_EOF_RE = re.compile(r"^(S1[A-D])_OPER_AUX_(POEORB|RESORB)_\w+?_V(\d{8}T\d{6})_(\d{8}T\d{6})\.EOF$",
                     re.IGNORECASE)


def find_eof(folder: Path, ann: Annotation) -> Path:
    """The orbit file in ``folder`` for the product: its satellite, validity covering the
    acquisition (by the file name's ``_V<start>_<stop>``), precise (POEORB) before restituted.

    Raises:
        InputError: no such file in the folder.
    """
    first = ann.epoch
    last = ann.epoch + np.timedelta64(int(ann.last_line_time * 1e9), "ns")
    best: tuple[int, str, Path] | None = None
    for f in folder.iterdir():
        m = _EOF_RE.match(f.name)
        if not m or m.group(1).upper() != ann.mission:
            continue
        start = np.datetime64(_iso(m.group(3)), "ns")
        stop = np.datetime64(_iso(m.group(4)), "ns")
        if start <= first and stop >= last:
            rank = (0 if m.group(2).upper() == "POEORB" else 1, f.name)
            if best is None or rank < best[:2]:
                best = (*rank, f)
    if best is None:
        raise InputError(f"--orbit {folder} holds no {ann.mission} orbit file (…_AUX_POEORB_… or "
                         f"…_AUX_RESORB_….EOF) whose validity covers the acquisition at "
                         f"{np.datetime64(first, 's')} UTC; add it, or give the file itself")
    return best[2]


def _iso(s: str) -> str:
    return f"{s[:4]}-{s[4:6]}-{s[6:8]}T{s[9:11]}:{s[11:13]}:{s[13:15]}"


def read_eof(path: str | Path, ann: Annotation) -> Orbit:
    """The orbit from a precise/restituted orbit file (``*.EOF``) covering the acquisition.

    Raises:
        InputNotFoundError: the file does not exist.
        InputError: not an orbit file, another satellite, or it does not cover the acquisition.
    """
    p = Path(path)
    if p.is_dir():
        p = find_eof(p, ann)
    if not p.is_file():
        raise InputNotFoundError(f"--orbit {p} does not exist; give a Sentinel-1 orbit file "
                                 "(S1?_OPER_AUX_POEORB_*.EOF) or a folder of them")
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"--orbit {p} is not an orbit file (XML: {exc}); give the "
                         "S1?_OPER_AUX_POEORB_*.EOF of the acquisition day, unzipped") from exc
    osvs = root.findall(".//List_of_OSVs/OSV")
    if not osvs:
        raise InputError(f"--orbit {p} holds no <OSV> state vectors; it is not a Sentinel-1 "
                         "orbit file (S1?_OPER_AUX_POEORB_*.EOF)")
    mission = root.findtext(".//Fixed_Header/Mission") or ""
    m = _MISSION_RE.search(mission)
    if m and f"S1{m.group(1).upper()}" != ann.mission:
        raise InputError(f"--orbit {p} is for {mission.strip()} but the product was acquired by "
                         f"{ann.mission}; give the {ann.mission} orbit file of that day")
    t, pos = [], []
    for k, o in enumerate(osvs):  # a vector lacking its time or a coordinate is left out
        try:
            utc = (o.findtext("UTC") or "").strip().removeprefix("UTC=")
            t.append(seconds(parse_time(utc), ann.epoch) if utc else np.nan)
            pos.append([float(o.findtext(a) or "nan") for a in ("X", "Y", "Z")])
        except ValueError as exc:
            raise InputError(f"--orbit {p}: state vector {k + 1} cannot be read ({exc}); the file "
                             "is damaged: download it again") from exc
    times = np.asarray(t, dtype=np.float64)
    positions = np.asarray(pos, dtype=np.float64)
    usable = np.isfinite(times) & np.isfinite(positions).all(axis=1)
    keep = _window(ann, times) & usable
    covers = usable.any() and times[usable].min() <= 0 and times[usable].max() >= ann.last_line_time
    if not covers or keep.sum() < 4:
        first = np.datetime64(ann.epoch, "s")
        raise InputError(f"--orbit {p} does not cover the acquisition ({first} UTC, "
                         f"{ann.last_line_time:.0f} s long); give the orbit file whose validity "
                         "period contains it")
    kind = "precise" if "POEORB" in p.name.upper() else "restituted" if "RESORB" in p.name.upper() else "orbit"
    return Orbit(times[keep], positions[keep], f"{kind} orbit file {p.name}")
