"""One scene of a configuration: its input, Sentinel-1 file, date, labels — and the
``[[scenes]]`` tables both coal-monitor and coal-train configurations list them in.

A ``[[scenes]]`` table has the keys:

========== ===================================================================================
path        a stack from coal-prepare, or raw Sentinel-2 (folder of band files, multi-band
            GeoTIFF, SAFE folder)
s1          the Sentinel-1 VV that goes with raw Sentinel-2: a GRD product as downloaded (SAFE
            folder, zip, COG-SAFE) or a sigma0 raster
dem         a DEM for terrain correction of a GRD ``s1`` (any CRS)
orbit       an orbit file (.EOF), or a folder of them, for a GRD ``s1``
date        acquisition date (``2019-07-14``; a bare year means 1 July) — coal-monitor
labels      reference labels (raster on any grid, or mine polygons) — coal-train
split       "train" (default) or "test" (held out, only evaluated) — coal-train
label_field attribute of vector labels holding the class (0/1) — coal-train
========== ===================================================================================

Each configuration says which keys it takes and which it requires; others are refused by name.

Example:
    >>> s = SceneSpec(Path("s2/S2A_20190714"), date=dt.date(2019, 7, 14))
    >>> s.year, s.split
    (2019, 'train')
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configfile import expand_path, refuse_unknown
from .errors import ConfigError, ConfigPathError

#: ``split`` values: trained on (with a blocked validation hold-out) or held out as a test scene.
SPLITS = ("train", "test")
#: Every key a ``[[scenes]]`` table may hold.
SCENE_KEYS = ("path", "s1", "date", "labels", "split", "label_field", "dem", "orbit")


@dataclass(frozen=True)
class SceneSpec:
    """One scene: its input and what a command needs to know about it.

    Attributes:
        path: the stack or raw Sentinel-2 input.
        labels: reference labels (training and evaluation).
        s1: Sentinel-1 VV for raw Sentinel-2 input (a GRD product or a sigma0 raster); None for
            a stack.
        split: "train" or "test" (training only).
        label_field: attribute of vector labels holding the class; None: every polygon is mine.
        date: acquisition date (monitoring).
        dem: DEM for terrain correction of a GRD ``s1``; None: the product's own heights (or,
            in coal-monitor, ``[run] dem``).
        orbit: orbit file or folder of them for a GRD ``s1``.
    """

    path: Path
    labels: Path | None = None
    s1: Path | None = None
    split: str = "train"
    label_field: str | None = None
    date: dt.date | None = None
    dem: Path | None = None
    orbit: Path | None = None

    @property
    def year(self) -> int:
        if self.date is None:
            raise ValueError(f"scene {self.path} has no date")
        return self.date.year

    @property
    def key(self) -> str:
        """Ledger key: the absolute input path (one row per input, whatever its date)."""
        return str(self.path)


def scenes_from_tables(entries: list[dict[str, Any]], base: Path, src: Path, *, keys: tuple[str, ...],
                       required: tuple[str, ...], must_exist: bool = False,
                       old_keys: dict[str, str] | None = None) -> tuple[SceneSpec, ...]:
    """Parse ``[[scenes]]`` tables.

    Args:
        entries: the tables (see :func:`coalmine.runtime.configfile.tables`).
        base: the folder relative paths are resolved against.
        src: the configuration file (named in messages).
        keys: the keys this configuration takes (a subset of :data:`SCENE_KEYS`).
        required: the keys each table must have.
        must_exist: refuse a ``path``/``s1``/``labels`` that does not exist.
        old_keys: old spellings read as the new key (``{"scene": "path"}``).

    Raises:
        ConfigError: an unknown or missing key, a wrong type or value (naming ``scenes[i].key``).
        ConfigPathError: with ``must_exist``, a path that does not exist (exit code 2).
    """
    out = []
    for i, t in enumerate(entries):
        where = f"scenes[{i}]"
        t = dict(t)
        for old, new in (old_keys or {}).items():
            if old in t:
                if new in t:
                    raise ConfigError(f"{src}: {where} has both '{old}' and '{new}'; write only '{new}'")
                t[new] = t.pop(old)
        refuse_unknown(t, keys, src, where)
        for k in required:
            if k not in t:
                raise ConfigError(f"{src}: {where} has no '{k}'; each [[scenes]] table needs "
                                  f"{' and '.join(required)}")
        paths = {}
        for k in ("path", "s1", "labels", "dem", "orbit"):
            if k in t:
                paths[k] = expand_path(t[k], base, src, f"{where}.{k}")
                if must_exist and not paths[k].exists():
                    raise ConfigPathError(f"{src}: {where}.{k} {paths[k]} does not exist; fix the path "
                                             "or remove the entry")
        for k in ("split", "label_field"):
            if k in t and not isinstance(t[k], str):
                raise ConfigError(f"{src}: {where}.{k} must be a string, got {t[k]!r}")
        split = t.get("split", "train")
        if split not in SPLITS:
            raise ConfigError(f"{src}: {where}.split {split!r} is invalid; use 'train' or 'test'")
        out.append(SceneSpec(path=paths["path"], labels=paths.get("labels"), s1=paths.get("s1"), split=split,
                             label_field=t.get("label_field"),
                             date=_date(t["date"], src, where) if "date" in t else None,
                             dem=paths.get("dem"), orbit=paths.get("orbit")))
    return tuple(out)


def _date(d: Any, src: Path, where: str) -> dt.date:
    if isinstance(d, dt.datetime):
        return d.date()
    if isinstance(d, dt.date):
        return d
    if isinstance(d, str):
        try:
            return dt.date.fromisoformat(d)
        except ValueError as exc:
            raise ConfigError(f"{src}: {where}.date '{d}' is not a date; write it as 2019-07-14") from exc
    if isinstance(d, int) and not isinstance(d, bool) and 1900 < d < 3000:
        return dt.date(d, 7, 1)  # a bare year: mid-year, so it falls in its year
    raise ConfigError(f"{src}: {where}.date {d!r} is not a date; write it as 2019-07-14")
