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
    min_valid_share = 0.5              # below this observed share a year/AOI/scene has no figure
    compositing = "mask"               # "input": one composite per year, mapped once (below)

    [composite]                        # with compositing = "input" (all keys optional)
    dilation = 5                       # growth of SCL clouds and shadows, pixels
    crs = "EPSG:32750"                 # the AOIs' grid: CRS (default: their UTM zone) ...
    res = 10                           # ... and pixel size
    memory = "4G"                      # memory budget of one year's composite

    [run]                              # coal-run's settings for every scene (RunOptions)
    backend = "auto"
    threshold = 0.5
    s2_offset = -1000                  # input settings too: s2_offset, s1_units, scl, dem, orbit
    dem = "dem/copernicus_30m.vrt"     # terrain correction of Sentinel-1 GRD products (any CRS)
    orbit = "orbits"                   # folder of S1?_OPER_AUX_POEORB_*.EOF (the matching one is used)

    [[scenes]]                         # one explicit scene
    path = "s2/S2A_20160714_T50MKB"    # a stack, a folder of band files or a SAFE folder
    date = 2016-07-14
    s1 = "s1/S1A_IW_GRDH_1SDV_20160712T….zip"  # Sentinel-1 for raw Sentinel-2 input: a GRD
                                       # product (SAFE folder, zip, COG-SAFE) or a sigma0 raster

    [[search]]                         # or every match of a pattern in a folder
    folder = "incoming/s2"
    glob = "S2*_MSIL2A_*"
    date_format = "%Y%m%d"             # strftime-like; or date_regex with (?P<year>..)
    s1_folder = "incoming/s1"          # optional pairing with the nearest Sentinel-1 date
    s1_glob = "S1*_VV.tif"
    s1_max_days = 12

    [cluster]                          # optional: scenes as Dask tasks (see cluster.py)
    scheduler = "tcp://10.0.0.5:8786"  # or "local:4", or a scheduler JSON file

    [source]                           # optional: fetch new scenes from a STAC catalogue first
    catalog = "planetary-computer"     # see coalmine.runtime.fetch.source for every key
    start = 2023-01-01
    since_last_run = true
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configfile import expand_path, read_toml, refuse_unknown, tables, typed
from ..errors import ConfigError, ConfigPathError
from ..options import RunOptions
from ..scenes import SceneSpec, scenes_from_tables

#: Rules that turn several scenes of one year into the yearly mask (see ``yearly.py``).
YEARLY_RULES = ("max_extent", "median", "majority", "latest")
#: How a year is made: "mask" maps every scene and combines the masks by ``yearly_rule``;
#: "input" composites all the year's acquisitions into one stack and maps it once
#: (see ``composites.py``).
COMPOSITING = ("mask", "input")
#: Keys of ``[composite]`` (compositing = "input") and their types.
COMPOSITE_OPTIONS: dict[str, tuple[type, ...]] = {
    "dilation": (int,),
    "crs": (str,),
    "res": (int, float),
    "memory": (str, int),
}

#: Settings of coal-run that ``[run]`` may not hold: the monitor sets them for every scene.
MONITOR_SETS_RUN: frozenset[str] = frozenset({"prefix", "progress", "aoi_name_field"})

#: Options of ``[cluster]`` (scenes as Dask tasks, see ``cluster.py``) and their types.
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
    "max_attempts", "run", "scenes", "search", "cluster", "source", "min_valid_share", "compositing",
    "composite",
}
_SCENE_KEYS = ("path", "date", "s1")
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
    #: A figure (a scene, a year, an AOI in either) whose valid share is below this is "no data".
    min_valid_share: float = 0.5
    #: The ``[run]`` table as written (validated by :class:`RunOptions`): passed to
    #: ``run_scene`` for every scene and recorded in the ledger.
    run: dict[str, Any] = field(default_factory=dict)
    scenes: tuple[SceneSpec, ...] = ()
    searches: tuple[SearchSpec, ...] = ()
    #: ``[cluster]`` settings (validated types; ranges checked by ``cluster.DaskExecutor``).
    cluster: dict[str, Any] = field(default_factory=dict)
    #: "mask" (map every scene, combine by ``yearly_rule``) or "input" (one composite per year).
    compositing: str = "mask"
    #: ``[composite]`` settings (dilation, crs, res, memory), checked at load.
    composite: dict[str, Any] = field(default_factory=dict)
    #: ``[source]``: the STAC catalogue new scenes are fetched from (a ``fetch.SourceSpec``
    #: whose ``folder`` is set), or None.
    fetch: Any = None

    @property
    def ledger_path(self) -> Path:
        return self.ledger or self.output / "ledger.sqlite"

    @property
    def run_options(self) -> RunOptions:
        """The ``[run]`` settings with coal-run's defaults for the others."""
        return RunOptions.build(**self.run)


def load_config(path: str | os.PathLike[str]) -> MonitorConfig:
    """Read and validate a ``coal-monitor`` TOML file.

    Args:
        path: the configuration file.

    Returns:
        A :class:`MonitorConfig` with absolute paths (relative ones resolved against the
        configuration file's folder).

    Raises:
        InputNotFoundError: the configuration file is missing.
        ConfigPathError: the bundle, AOI file or a listed scene is missing (exit code 2).
        ConfigError: malformed TOML, an unknown key, a missing required key or a bad value.

    Example:
        >>> cfg = load_config("monitor.toml")   # doctest: +SKIP
        >>> cfg.bundle, cfg.yearly_rule          # doctest: +SKIP
    """
    raw, src = read_toml(path, "configuration file")
    base = src.parent
    refuse_unknown(raw, _TOP_KEYS, src)
    for key in ("bundle", "aois", "output"):
        if key not in raw:
            raise ConfigError(f"{src}: the required key '{key}' is missing; add e.g. {key} = \"...\"")

    bundle = _path(raw, "bundle", base, src)
    if not bundle.exists():
        raise ConfigPathError(f"{src}: bundle folder {bundle} does not exist; set 'bundle' to the folder coal-train wrote")
    aois = _path(raw, "aois", base, src)
    if not aois.is_file():
        raise ConfigPathError(f"{src}: AOI file {aois} does not exist; set 'aois' to a vector file (GeoJSON, GeoPackage, Shapefile…)")
    output = _path(raw, "output", base, src)

    rule = typed(raw, "yearly_rule", str, src, default="max_extent")
    if rule not in YEARLY_RULES:
        raise ConfigError(f"{src}: yearly_rule '{rule}' is not one of {', '.join(YEARLY_RULES)}")
    max_attempts = typed(raw, "max_attempts", int, src, default=3)
    if max_attempts < 1:
        raise ConfigError(f"{src}: max_attempts must be at least 1, got {max_attempts}")

    min_valid = float(typed(raw, "min_valid_share", float, src, default=MonitorConfig.min_valid_share))
    if not 0.0 < min_valid <= 1.0:
        raise ConfigError(f"{src}: min_valid_share must lie in (0, 1] (the share of an area that must be "
                          f"observed for its hectares to count), got {min_valid}")

    run = _run_table(raw, src, bundle)
    cluster = _options_table(raw, "cluster", CLUSTER_OPTIONS, src)
    compositing, composite = _compositing(raw, src)

    scenes = scenes_from_tables(tables(raw, "scenes", src), base, src, keys=_SCENE_KEYS,
                                required=("path", "date"), must_exist=True)
    searches = tuple(_search(i, s, base, src) for i, s in enumerate(tables(raw, "search", src)))
    fetch = _source(raw, base, src, output)
    if not scenes and not searches and fetch is None:
        raise ConfigError(f"{src}: no scenes; add [[scenes]] entries (path, date), a [[search]] folder "
                          "pattern or a [source] catalogue")
    name_field = typed(raw, "aoi_name_field", str, src, default="name")
    if not name_field:
        raise ConfigError(f"{src}: aoi_name_field must be a non-empty string, got {name_field!r}")
    ledger = _path(raw, "ledger", base, src) if "ledger" in raw else None
    return MonitorConfig(
        source=src,
        bundle=bundle,
        aois=aois,
        output=output,
        aoi_name_field=name_field,
        title=typed(raw, "title", str, src, default=MonitorConfig.title),
        ledger=ledger,
        yearly_rule=rule,
        max_attempts=max_attempts,
        min_valid_share=min_valid,
        run=dict(run),
        scenes=scenes,
        searches=searches,
        cluster=dict(cluster),
        compositing=compositing,
        composite=composite,
        fetch=fetch,
    )


def _source(raw: dict[str, Any], base: Path, src: Path, output: Path) -> Any:
    """``[source]`` (see ``coalmine.runtime.fetch.source``), its folder defaulting to <output>/downloads."""
    if "source" not in raw:
        return None
    from dataclasses import replace

    from ..fetch.source import check_source, parse_source

    spec = parse_source(raw["source"], base, src)
    check_source(spec, src)
    if spec.s1 == "none":
        raise ConfigError(f"{src}: source.s1 = \"none\": every monitored scene needs Sentinel-1 VV; "
                          "use s1 = \"rtc\" (a catalogue with Sentinel-1 RTC, e.g. planetary-computer)")
    return replace(spec, folder=spec.folder or output / "downloads")


def discover_scenes(cfg: MonitorConfig) -> list[SceneSpec]:
    """All scenes of a configuration: the explicit ones plus every folder-pattern match.

    Scenes are sorted by date then path. A path listed twice is refused.

    Raises:
        ConfigPathError: a search folder does not exist.
        ConfigError: a matching file name has no date in the expected format, or a scene
            appears twice.
    """
    found: list[SceneSpec] = list(cfg.scenes)
    if cfg.fetch is not None:  # fetched acquisitions with their Sentinel-1 partner
        from ..fetch.record import acquisitions

        found += [SceneSpec(path=a.s2, date=a.date, s1=a.s1) for a in acquisitions(cfg.fetch.folder) if a.s1]
    for s in cfg.searches:
        if not s.folder.is_dir():
            raise ConfigPathError(f"{cfg.source}: search folder {s.folder} does not exist; fix search.folder")
        s1_pool: list[tuple[dt.date, Path]] = []
        if s.s1_folder is not None:
            if not s.s1_folder.is_dir():
                raise ConfigPathError(f"{cfg.source}: s1_folder {s.s1_folder} does not exist; fix search.s1_folder")
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


def _run_table(raw: dict[str, Any], src: Path, bundle: Path) -> dict[str, Any]:
    """``[run]``, checked by the rules of :class:`RunOptions` at load: those that need no
    bundle, then (when the bundle loads; a broken one is refused when the run starts) the tile
    divisor and overlap of its model. Raises ConfigError naming the file and ``run.key``."""
    from ..bundle import load_bundle
    from ..errors import BundleError
    from ..options import OptionError

    table = raw.get("run", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{src}: 'run' must be a table ([run]), got {type(table).__name__}")
    table = dict(table)
    for key in ("dem", "orbit"):  # paths, relative to the configuration file like all others
        v = table.get(key)
        if isinstance(v, str) and v and not Path(v).expanduser().is_absolute():
            table[key] = str(src.parent / Path(v).expanduser())
    opts = RunOptions.from_table(table, src, "run", exclude=MONITOR_SETS_RUN)
    try:
        b = load_bundle(bundle)
    except BundleError:
        return dict(table)
    try:
        opts.resolve(b.tile_size, b.overlap, b.threshold, b.model.size_multiple,
                     engine_tile=b.engine_profile.get("tile"))
    except OptionError as exc:
        raise exc.in_config(src, "run") from None
    return dict(table)


def _compositing(raw: dict[str, Any], src: Path) -> tuple[str, dict[str, Any]]:
    """``compositing`` and the ``[composite]`` table, checked (values by the composite's own rules)."""
    from ..errors import UsageError

    mode = typed(raw, "compositing", str, src, default="mask")
    if mode not in COMPOSITING:
        raise ConfigError(f"{src}: compositing '{mode}' is not one of {', '.join(COMPOSITING)}")
    table = _options_table(raw, "composite", COMPOSITE_OPTIONS, src)
    if mode == "mask" and table:
        raise ConfigError(f"{src}: [composite] applies to compositing = \"input\"; set that or remove [composite]")
    if mode == "input" and "yearly_rule" in raw:
        raise ConfigError(f"{src}: yearly_rule combines scene masks (compositing = \"mask\"); with compositing = "
                          "\"input\" each year is one composite mapped once: remove yearly_rule")
    if mode == "input":
        from ..preprocess.prepare_composite import parse_memory

        try:
            d = table.get("dilation", 0)
            if not 0 <= d <= 100:
                raise UsageError(f"composite.dilation = {d} must be a whole number of pixels from 0 to 100")
            if not table.get("res", 10) > 0:
                raise UsageError(f"composite.res = {table['res']} must be a positive pixel size")
            if "memory" in table:
                parse_memory(table["memory"])
            if "crs" in table:
                from rasterio.crs import CRS
                from rasterio.errors import CRSError

                try:
                    CRS.from_user_input(table["crs"])
                except CRSError as exc:
                    raise UsageError(f"composite.crs = {table['crs']!r} is not a coordinate reference system; "
                                     "write e.g. \"EPSG:32750\"") from exc
        except UsageError as exc:
            raise ConfigError(f"{src}: {exc}") from exc
    return mode, dict(table)


def _options_table(raw: dict[str, Any], name: str, options: dict[str, tuple[type, ...]], src: Any) -> dict[str, Any]:
    """The optional table ``[name]`` with only known keys, each of one of its allowed types.

    A TOML boolean is refused where ``bool`` is not listed (``bool`` is a subclass of ``int``).
    """
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{src}: '{name}' must be a table ([{name}]), got {type(table).__name__}")
    refuse_unknown(table, options, src, name)
    for k in table:
        typed(table, k, options[k], src, name)
    return table


def _path(raw: dict[str, Any], key: str, base: Path, src: Path, label: str | None = None) -> Path:
    return expand_path(raw[key], base, src, label or key)


def _search(i: int, t: dict[str, Any], base: Path, src: Path) -> SearchSpec:
    where = f"search[{i}]"
    refuse_unknown(t, _SEARCH_KEYS, src, where)
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
