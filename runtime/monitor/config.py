"""The ``coal-monitor`` configuration file (TOML) and scene discovery.

A configuration names the model bundle, the areas of interest, the output folder and the
scenes, either listed one by one with their date or found in folders with the date read
from the file name. Relative paths are relative to the configuration file. Unknown keys
are refused by name, so a typo never silently changes what is monitored.

Example ``monitor.toml``::

    title = "Tapin Regency"            # optional, shown in the report
    bundle = "models/tapin"            # a model bundle folder (coal-train / coal-export)
    aois = "aois/tapin.geojson"        # GeoJSON, GeoPackage, Shapefile… with one polygon per area
    aoi_name_field = "name"            # attribute holding each area's name
    output = "monitor"                 # ledger, per-scene outputs, composites, reports
    yearly_rule = "max_extent"         # max_extent | median | majority | latest

    [run]                              # passed to coal-run for every scene
    backend = "auto"
    threshold = 0.5

    [[scenes]]                         # one explicit scene
    path = "s2/S2A_20160714_T50MKB"    # a stack, a folder of band files or a SAFE folder
    date = 2016-07-14
    s1 = "s1/S1A_20160712_VV.tif"      # Sentinel-1 VV for raw Sentinel-2 input

    [[search]]                         # or every match of a pattern in a folder
    folder = "incoming/s2"
    glob = "S2*_MSIL2A_*"
    date_format = "%Y%m%d"             # strftime-like; or date_regex with (?P<year>..)
    s1_folder = "incoming/s1"          # optional pairing with the nearest Sentinel-1 date
    s1_glob = "S1*_VV.tif"
    s1_max_days = 12

    [cluster]                          # optional: scenes as Dask tasks (see cluster.py)
    scheduler = "tcp://10.0.0.5:8786"  # or "local:4", or a scheduler JSON file
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputNotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

#: Rules that turn several scenes of one year into the yearly mask (see ``yearly.py``).
YEARLY_RULES = ("max_extent", "median", "majority", "latest")

#: Options of ``[run]`` and the type each must have; they are passed to ``run_scene``.
RUN_OPTIONS: dict[str, tuple[type, ...]] = {
    "backend": (str,),
    "precision": (str,),
    "tile": (int,),
    "overlap": (int,),
    "batch_size": (int, str),
    "gpu_mem_gb": (int, float),
    "threshold": (int, float),
    "min_area_ha": (int, float),
}

#: Options of ``[cluster]`` (issue 8: scenes as Dask tasks, see ``cluster.py``) and their types.
CLUSTER_OPTIONS: dict[str, tuple[type, ...]] = {
    "scheduler": (str,),
    "retries": (int,),
    "max_in_flight": (int,),
    "gpu": (bool, str),
    "connect_timeout": (int, float),
    "prepare_on_cpu": (bool,),
}

_TOP_KEYS = {
    "title", "bundle", "aois", "aoi_name_field", "output", "ledger", "yearly_rule",
    "max_attempts", "run", "scenes", "search", "cluster",
}
_SCENE_KEYS = {"path", "date", "s1"}
_SEARCH_KEYS = {
    "folder", "glob", "date_format", "date_regex", "s1_folder", "s1_glob",
    "s1_date_format", "s1_date_regex", "s1_max_days",
}

# strftime directives we can read back out of a file name, as regex pieces.
_DIRECTIVES = {
    "Y": r"(?P<year>\d{4})",
    "y": r"(?P<year2>\d{2})",
    "m": r"(?P<month>\d{2})",
    "d": r"(?P<day>\d{2})",
    "j": r"(?P<doy>\d{3})",
    "H": r"\d{2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
    "%": "%",
}


@dataclass(frozen=True)
class SceneSpec:
    """One scene to monitor: its input path, acquisition date and optional Sentinel-1 file."""

    path: Path
    date: dt.date
    s1: Path | None = None

    @property
    def year(self) -> int:
        return self.date.year

    @property
    def key(self) -> str:
        """Ledger key: the absolute input path (one row per input, whatever its date)."""
        return str(self.path)


@dataclass(frozen=True)
class SearchSpec:
    """A folder pattern: every entry of ``folder`` matching ``glob`` is a scene."""

    folder: Path
    glob: str
    date_pattern: re.Pattern[str]
    s1_folder: Path | None = None
    s1_glob: str = "*"
    s1_date_pattern: re.Pattern[str] | None = None
    s1_max_days: int = 12


@dataclass(frozen=True)
class MonitorConfig:
    """A parsed, validated ``coal-monitor`` configuration (all paths absolute)."""

    source: Path
    bundle: Path
    aois: Path
    output: Path
    aoi_name_field: str | None = "name"
    title: str = "Open-pit coal mine monitoring"
    ledger: Path | None = None
    yearly_rule: str = "max_extent"
    max_attempts: int = 3
    run: dict[str, Any] = field(default_factory=dict)
    scenes: tuple[SceneSpec, ...] = ()
    searches: tuple[SearchSpec, ...] = ()
    #: ``[cluster]`` settings (validated types; ranges checked by ``cluster.DaskExecutor``).
    cluster: dict[str, Any] = field(default_factory=dict)

    @property
    def ledger_path(self) -> Path:
        return self.ledger or self.output / "ledger.sqlite"


def load_config(path: str | os.PathLike[str]) -> MonitorConfig:
    """Read and validate a ``coal-monitor`` TOML file.

    Args:
        path: the configuration file.

    Returns:
        A :class:`MonitorConfig` with absolute paths (relative ones resolved against the
        configuration file's folder).

    Raises:
        InputNotFoundError: the configuration, bundle, AOI file or a listed scene is missing.
        ConfigError: malformed TOML, an unknown key, a missing required key or a bad value.

    Example:
        >>> cfg = load_config("monitor.toml")   # doctest: +SKIP
        >>> cfg.bundle, cfg.yearly_rule          # doctest: +SKIP
    """
    src = Path(path).expanduser().absolute()
    if not src.is_file():
        raise InputNotFoundError(f"configuration file {src} does not exist; pass the path of your monitor TOML file")
    try:
        with open(src, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{src} is not valid TOML ({exc}); fix the syntax at that line") from exc
    base = src.parent
    _refuse_unknown(raw, _TOP_KEYS, src, "")
    for key in ("bundle", "aois", "output"):
        if key not in raw:
            raise ConfigError(f"{src}: the required key '{key}' is missing; add e.g. {key} = \"...\"")

    bundle = _path(raw, "bundle", base, src)
    if not bundle.exists():
        raise InputNotFoundError(f"{src}: bundle folder {bundle} does not exist; set 'bundle' to the folder coal-train wrote")
    aois = _path(raw, "aois", base, src)
    if not aois.is_file():
        raise InputNotFoundError(f"{src}: AOI file {aois} does not exist; set 'aois' to a vector file (GeoJSON, GeoPackage, Shapefile…)")
    output = _path(raw, "output", base, src)

    rule = _typed(raw, "yearly_rule", str, src, "max_extent")
    if rule not in YEARLY_RULES:
        raise ConfigError(f"{src}: yearly_rule '{rule}' is not one of {', '.join(YEARLY_RULES)}")
    max_attempts = _typed(raw, "max_attempts", int, src, 3)
    if max_attempts < 1:
        raise ConfigError(f"{src}: max_attempts must be at least 1, got {max_attempts}")

    run = _options_table(raw, "run", RUN_OPTIONS, src)
    cluster = _options_table(raw, "cluster", CLUSTER_OPTIONS, src)

    scenes = tuple(_scene(i, s, base, src) for i, s in enumerate(_tables(raw, "scenes", src)))
    searches = tuple(_search(i, s, base, src) for i, s in enumerate(_tables(raw, "search", src)))
    if not scenes and not searches:
        raise ConfigError(f"{src}: no scenes; add [[scenes]] entries (path, date) or a [[search]] folder pattern")
    name_field = raw.get("aoi_name_field", "name")
    if not isinstance(name_field, str) or not name_field:
        raise ConfigError(f"{src}: aoi_name_field must be a non-empty string, got {name_field!r}")
    ledger = _path(raw, "ledger", base, src) if "ledger" in raw else None
    return MonitorConfig(
        source=src,
        bundle=bundle,
        aois=aois,
        output=output,
        aoi_name_field=name_field,
        title=_typed(raw, "title", str, src, MonitorConfig.title),
        ledger=ledger,
        yearly_rule=rule,
        max_attempts=max_attempts,
        run=dict(run),
        scenes=scenes,
        searches=searches,
        cluster=dict(cluster),
    )


def discover_scenes(cfg: MonitorConfig) -> list[SceneSpec]:
    """All scenes of a configuration: the explicit ones plus every folder-pattern match.

    Scenes are sorted by date then path. A path listed twice is refused.

    Raises:
        InputNotFoundError: a search folder does not exist.
        ConfigError: a matching file name has no date in the expected format, or a scene
            appears twice.
    """
    found: list[SceneSpec] = list(cfg.scenes)
    for s in cfg.searches:
        if not s.folder.is_dir():
            raise InputNotFoundError(f"{cfg.source}: search folder {s.folder} does not exist; fix search.folder")
        s1_pool: list[tuple[dt.date, Path]] = []
        if s.s1_folder is not None:
            if not s.s1_folder.is_dir():
                raise InputNotFoundError(f"{cfg.source}: s1_folder {s.s1_folder} does not exist; fix search.s1_folder")
            pat = s.s1_date_pattern or s.date_pattern
            for p in sorted(s.s1_folder.glob(s.s1_glob)):
                d = date_from_name(p.name, pat)
                if d is not None:
                    s1_pool.append((d, p.absolute()))
        for p in sorted(s.folder.glob(s.glob)):
            if p.name.startswith("."):
                continue
            d = date_from_name(p.name, s.date_pattern)
            if d is None:
                raise ConfigError(
                    f"{cfg.source}: {p} matches glob '{s.glob}' but its name has no date matching "
                    f"'{s.date_pattern.pattern}'; fix date_format/date_regex or the glob"
                )
            s1 = None
            if s1_pool:
                best = min(s1_pool, key=lambda t: (abs((t[0] - d).days), str(t[1])))
                if abs((best[0] - d).days) <= s.s1_max_days:
                    s1 = best[1]
            found.append(SceneSpec(path=p.absolute(), date=d, s1=s1))
    seen: dict[str, SceneSpec] = {}
    for sc in found:
        if sc.key in seen:
            raise ConfigError(f"{cfg.source}: scene {sc.path} is listed twice; remove one entry")
        seen[sc.key] = sc
    return sorted(found, key=lambda s: (s.date, str(s.path)))


def date_pattern(date_format: str | None = None, date_regex: str | None = None) -> re.Pattern[str]:
    """Compile the pattern that finds a date in a file name.

    ``date_format`` is strftime-like (``%Y %y %m %d %j``, and ``%H %M %S`` matched but ignored);
    ``date_regex`` is a regular expression with named groups ``year`` (required), ``month``,
    ``day`` or ``doy``. Missing month/day mean 1 July (mid-year), so a yearly file still
    falls in its year.

    Raises:
        ConfigError: neither or both given, an unsupported directive, or a regex without ``year``.

    Example:
        >>> date_from_name("S2A_20190714T023551_B02.tif", date_pattern("%Y%m%d"))
        datetime.date(2019, 7, 14)
    """
    if (date_format is None) == (date_regex is None):
        raise ConfigError("give exactly one of date_format (e.g. '%Y%m%d') or date_regex (with (?P<year>...))")
    if date_format is not None:
        parts: list[str] = []
        i = 0
        while i < len(date_format):
            c = date_format[i]
            if c == "%" and i + 1 < len(date_format):
                d = date_format[i + 1]
                if d not in _DIRECTIVES:
                    raise ConfigError(
                        f"date_format '{date_format}': directive %{d} is not supported; "
                        f"use {' '.join('%' + k for k in _DIRECTIVES if k != '%')}"
                    )
                parts.append(_DIRECTIVES[d])
                i += 2
            else:
                parts.append(re.escape(c))
                i += 1
        rx = "".join(parts)
        if "year" not in rx:
            raise ConfigError(f"date_format '{date_format}' has no year (%Y or %y)")
        return re.compile(rx)
    assert date_regex is not None
    try:
        pat = re.compile(date_regex)
    except re.error as exc:
        raise ConfigError(f"date_regex '{date_regex}' is not a valid regular expression ({exc})") from exc
    if "year" not in pat.groupindex:
        raise ConfigError(f"date_regex '{date_regex}' needs a named group (?P<year>\\d{{4}})")
    return pat


def date_from_name(name: str, pattern: re.Pattern[str]) -> dt.date | None:
    """The first valid date ``pattern`` finds in ``name``, or None."""
    for m in pattern.finditer(name):
        g = m.groupdict()
        try:
            year = int(g["year"]) if g.get("year") else 2000 + int(g["year2"])
            if g.get("doy"):
                return dt.date(year, 1, 1) + dt.timedelta(days=int(g["doy"]) - 1)
            month = int(g["month"]) if g.get("month") else 7
            day = int(g["day"]) if g.get("day") else 1
            return dt.date(year, month, day)
        except (ValueError, TypeError, KeyError):
            continue
    return None


# -- helpers -----------------------------------------------------------------------------------


def _options_table(raw: dict[str, Any], name: str, options: dict[str, tuple[type, ...]], src: Any) -> dict[str, Any]:
    """The optional table ``[name]`` with only known keys, each of one of its allowed types.

    A TOML boolean is refused where ``bool`` is not listed (``bool`` is a subclass of ``int``).
    """
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{src}: '{name}' must be a table ([{name}]), got {type(table).__name__}")
    _refuse_unknown(table, set(options), src, f"{name}.")
    for k, v in table.items():
        if (isinstance(v, bool) and bool not in options[k]) or not isinstance(v, options[k]):
            want = " or ".join(t.__name__ for t in options[k])
            raise ConfigError(f"{src}: {name}.{k} must be {want}, got {v!r}")
    return table


def _refuse_unknown(table: dict[str, Any], known: set[str], src: Path, prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{src}: unknown key '{prefix}{unknown[0]}'"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; known keys{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(known))}"
        )


def _typed(raw: dict[str, Any], key: str, typ: type, src: Path, default: Any) -> Any:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, typ):
        raise ConfigError(f"{src}: '{key}' must be {typ.__name__}, got {v!r}")
    return v


def _path(raw: dict[str, Any], key: str, base: Path, src: Path, label: str | None = None) -> Path:
    v = raw[key]
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{src}: '{label or key}' must be a path string, got {v!r}")
    p = Path(os.path.expandvars(v)).expanduser()
    return p if p.is_absolute() else (base / p)


def _tables(raw: dict[str, Any], key: str, src: Path) -> list[dict[str, Any]]:
    v = raw.get(key, [])
    if not isinstance(v, list) or not all(isinstance(t, dict) for t in v):
        raise ConfigError(f"{src}: '{key}' must be an array of tables ([[{key}]])")
    return v


def _scene(i: int, t: dict[str, Any], base: Path, src: Path) -> SceneSpec:
    where = f"scenes[{i}]"
    _refuse_unknown(t, _SCENE_KEYS, src, where + ".")
    for k in ("path", "date"):
        if k not in t:
            raise ConfigError(f"{src}: {where} has no '{k}'; each [[scenes]] needs path and date")
    path = _path(t, "path", base, src, f"{where}.path")
    if not path.exists():
        raise InputNotFoundError(f"{src}: {where}.path {path} does not exist; fix the path or remove the entry")
    d = t["date"]
    if isinstance(d, dt.datetime):
        d = d.date()
    elif isinstance(d, str):
        try:
            d = dt.date.fromisoformat(d)
        except ValueError as exc:
            raise ConfigError(f"{src}: {where}.date '{d}' is not a date; write it as 2019-07-14") from exc
    elif isinstance(d, int) and not isinstance(d, bool) and 1900 < d < 3000:
        d = dt.date(d, 7, 1)  # a bare year: mid-year, documented in date_pattern
    if not isinstance(d, dt.date):
        raise ConfigError(f"{src}: {where}.date {d!r} is not a date; write it as 2019-07-14")
    s1 = None
    if "s1" in t:
        s1 = _path(t, "s1", base, src, f"{where}.s1")
        if not s1.exists():
            raise InputNotFoundError(f"{src}: {where}.s1 {s1} does not exist; fix the Sentinel-1 path")
    return SceneSpec(path=path, date=d, s1=s1)


def _search(i: int, t: dict[str, Any], base: Path, src: Path) -> SearchSpec:
    where = f"search[{i}]"
    _refuse_unknown(t, _SEARCH_KEYS, src, where + ".")
    if "folder" not in t:
        raise ConfigError(f"{src}: {where} has no 'folder'")
    try:
        pat = date_pattern(t.get("date_format"), t.get("date_regex"))
        s1pat = None
        if "s1_date_format" in t or "s1_date_regex" in t:
            s1pat = date_pattern(t.get("s1_date_format"), t.get("s1_date_regex"))
    except ConfigError as exc:
        raise ConfigError(f"{src}: {where}: {exc}") from exc
    s1_folder = _path(t, "s1_folder", base, src, f"{where}.s1_folder") if "s1_folder" in t else None
    max_days = t.get("s1_max_days", 12)
    if isinstance(max_days, bool) or not isinstance(max_days, int) or max_days < 0:
        raise ConfigError(f"{src}: {where}.s1_max_days must be a whole number of days >= 0, got {max_days!r}")
    for k in ("glob", "s1_glob"):
        if k in t and not isinstance(t[k], str):
            raise ConfigError(f"{src}: {where}.{k} must be a string")
    return SearchSpec(
        folder=_path(t, "folder", base, src, f"{where}.folder"),
        glob=t.get("glob", "*"),
        date_pattern=pat,
        s1_folder=s1_folder,
        s1_glob=t.get("s1_glob", "*"),
        s1_date_pattern=s1pat,
        s1_max_days=max_days,
    )
