"""The acquisitions of one period: what ``--s2``/``--s1`` name, their dates, and their hashes.

An argument is one acquisition, a folder of acquisitions, or a glob pattern:

* **Sentinel-2**: a SAFE folder (or its zip), a folder of band files, or a multi-band GeoTIFF is one
  acquisition (as for a single scene); any other folder holds acquisitions (its sub-folders and
  raster files, e.g. ``coal-fetch``'s ``s2/<item id>/``); a pattern (``'downloads/s2/*2023*'``)
  matches acquisitions.
* **Sentinel-1**: a raster file or a GRD product (SAFE folder, zip) is one acquisition; any other
  folder holds acquisitions (its raster files, SAFE folders and zips).

With a period (``--start``/``--end``), acquisitions found in a folder or by a pattern are kept
when their date lies in it; one named explicitly outside it is refused (it was meant to be
used, and would not be). Dates come from the name (``20230715T022551``) or, for Sentinel-2, the
product metadata.

A composite records every input with its SHA-256 (:func:`input_hash`): the files it read, in
order, names included.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._io import hash_file
from ..errors import InputNotFoundError, UsageError
from .s2 import RASTER_SUFFIXES, band_of

#: A date and time in a product or file name: 20230715T022551 (Sentinel-1 and -2 names).
_STAMP_RE = re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})T\d{4,6}")
#: A bare date in a file name: 2023-07-15, 20230715.
_DATE_RE = re.compile(r"(?<!\d)(20\d{2})-?(\d{2})-?(\d{2})(?!\d)")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Period:
    """An inclusive date range (``--start``/``--end``)."""

    start: dt.date
    end: dt.date

    def __contains__(self, d: dt.date) -> bool:
        return self.start <= d <= self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    @classmethod
    def of(cls, start: str | dt.date | None, end: str | dt.date | None) -> Period | None:
        """The period from ``--start``/``--end`` (either may be missing: open-ended); None if neither.

        Raises:
            UsageError: a date that is not YYYY-MM-DD, or end before start.
        """
        if start is None and end is None:
            return None
        s = _as_date(start, "--start") if start is not None else dt.date.min
        e = _as_date(end, "--end") if end is not None else dt.date.max
        if e < s:
            raise UsageError(f"--end {e.isoformat()} is before --start {s.isoformat()}; swap them")
        return cls(s, e)


def _as_date(v: str | dt.date, option: str) -> dt.date:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    try:
        return dt.date.fromisoformat(str(v))
    except ValueError as exc:
        raise UsageError(f"{option} {v} is not a date; write it as 2023-01-31") from exc


@dataclass(frozen=True)
class Item:
    """One acquisition path and whether the user named it (``explicit``) or it was found."""

    path: Path
    explicit: bool


def date_from_name(name: str) -> dt.date | None:
    """The acquisition date in a product or file name, or None.

    Example:
        >>> date_from_name("S2B_MSIL2A_20230715T022549_N0509_R046_T50MLA_20230715T045337.SAFE")
        datetime.date(2023, 7, 15)
    """
    for rx in (_STAMP_RE, _DATE_RE):
        for m in rx.finditer(name):
            try:
                return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                continue
    return None


def is_s2_acquisition(path: Path) -> bool:
    """True if ``path`` is one Sentinel-2 acquisition (SAFE, folder of band files, raster file)."""
    if path.is_file():
        return True
    if path.name.upper().endswith(".SAFE") or any((path / n).is_file() for n in ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")):
        return True
    return any(p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and band_of(p.stem)
               for p in path.iterdir())


def _is_s1_acquisition(path: Path) -> bool:
    from .s1grd.product import looks_like_s1_product

    return path.is_file() or looks_like_s1_product(path)


def _children(folder: Path, kind: str) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() or p.suffix.lower() in (*RASTER_SUFFIXES, ".zip"):  # zips: SAFE products
            out.append(p)
    return out


def _looks_like_acquisition(p: Path, kind: str) -> bool:
    """A folder's entry that is an acquisition: a sub-folder that is one, a dated raster file
    (Sentinel-2), or any raster file, zip or product (Sentinel-1)."""
    if kind == "s1":
        return p.is_file() or _is_s1_acquisition(p)
    return is_s2_acquisition(p) if p.is_dir() else date_from_name(p.name) is not None


def expand(args: Sequence[str | Path], kind: str) -> list[Item]:
    """The acquisitions ``--s2``/``--s1`` arguments name (``kind`` "s2" or "s1"), in argument order.

    A folder that is neither an acquisition nor holds any is returned as one acquisition, so
    that its reader says what it lacks.

    Raises:
        InputNotFoundError: a path that does not exist, a pattern that matches nothing.
    """
    option = f"--{kind}"
    is_acq = is_s2_acquisition if kind == "s2" else _is_s1_acquisition
    items: list[Item] = []
    for a in args:
        p = Path(a)
        if not p.exists() and _GLOB_CHARS & set(str(a)):
            matches = [Path(m) for m in sorted(glob.glob(str(a)))
                       if not Path(m).name.startswith(".")]
            if not matches:
                raise InputNotFoundError(f"{option} {a} matches no file or folder; check the pattern")
            items += [Item(m, False) for m in matches]
            continue
        if not p.exists():
            raise InputNotFoundError(f"{option} {p} does not exist; check the path")
        if is_acq(p):
            items.append(Item(p, True))
            continue
        kids = [k for k in _children(p, kind) if _looks_like_acquisition(k, kind)]
        if not kids:  # not a folder of acquisitions either: read it as one, whose reader explains
            items.append(Item(p, True))
            continue
        items += [Item(k, False) for k in kids]
    seen: set[Path] = set()
    unique = []
    for it in items:  # the same acquisition through two arguments counts once
        key = it.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(it)
    return unique


def input_hash(paths: Sequence[Path]) -> str:
    """SHA-256 over the files an input was read from: each file's name and bytes, in order.

    A folder (a GRD SAFE) contributes all its files, sorted, with their relative names.
    """
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update((f.relative_to(p).as_posix() if p.is_dir() else f.name).encode() + b"\0")
            hash_file(h, f)
    return h.hexdigest()
