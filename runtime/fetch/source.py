"""The ``[source]`` table of a ``coal-monitor`` configuration, and the fetch defaults.

``[source]`` tells the monitor where new scenes come from; each run fetches what is new before
it maps anything::

    [source]
    catalog = "planetary-computer"     # earth-search | planetary-computer | https://... (any STAC API)
    s1 = "rtc"                         # rtc | none   (grd: not yet)
    max_cloud = 80                     # percent of the tile (eo:cloud_cover)
    start = 2023-01-01                 # first acquisition date
    end = 2023-12-31                   # optional: default today
    since_last_run = true              # search from the last complete fetch (minus lookback_days)
    lookback_days = 30                 # catalogues publish some items days late
    s1_max_days = 12                   # Sentinel-1 at most this many days from the Sentinel-2 date
    folder = "downloads"               # default: <output>/downloads
    token_env = "MY_STAC_TOKEN"        # a bearer token in this environment variable (any STAC API)
    collections = { s2 = "sentinel-2-l2a", s1 = "sentinel-1-rtc" }   # override the profile's
    [source.assets]                    # band -> asset key, for catalogues without a profile
    B02 = "blue"

Credentials never go into this file: ``token_env`` names a variable; the Planetary Computer's
key is read from ``PC_SDK_SUBSCRIPTION_KEY`` or its SDK's settings file. Unknown keys are refused.

The defaults live here once and ``coal-fetch`` uses the same ones.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError
from .catalogs import DEFAULT_CATALOG, S1_CHOICES

DEFAULT_MAX_CLOUD = 80.0
DEFAULT_S1 = "rtc"
DEFAULT_S1_MAX_DAYS = 12
DEFAULT_LOOKBACK_DAYS = 30
DEFAULT_RETRIES = 4
DEFAULT_TIMEOUT = 30.0

_KEYS = {"catalog", "s1", "max_cloud", "start", "end", "since_last_run", "lookback_days", "s1_max_days",
         "folder", "token_env", "collections", "assets", "halo", "retries", "timeout"}


def default_halo() -> int:
    """10 m pixels fetched around the AOIs: the GLCM and speckle-filter context of the default
    preprocessing plus the default tile overlap, so the AOI pixels come out as in a whole-tile run."""
    from ..bundle import Bundle, GlcmParams, Preprocessing

    return Preprocessing(glcm=GlcmParams()).halo + int(Bundle.overlap)


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``[source]`` table (paths absolute)."""

    catalog: str = DEFAULT_CATALOG
    s1: str = DEFAULT_S1
    max_cloud: float = DEFAULT_MAX_CLOUD
    start: dt.date | None = None
    end: dt.date | None = None
    since_last_run: bool = False
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    s1_max_days: int = DEFAULT_S1_MAX_DAYS
    folder: Path | None = None
    token_env: str | None = None
    collections: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    assets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    halo: int | None = None
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT


def parse_source(table: Any, base: Path, src: Path | str) -> SourceSpec:
    """Validate a ``[source]`` table.

    Args:
        table: the parsed TOML table.
        base: folder relative paths are resolved against (the configuration's).
        src: the configuration file, for messages.

    Raises:
        ConfigError: not a table, an unknown key, a value of the wrong type or range, no ``start``.
    """
    where = f"{src}: source"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table ([source]), got {type(table).__name__}")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; known keys in source: {', '.join(sorted(_KEYS))}")

    def typed(key: str, types: tuple[type, ...], default: Any) -> Any:
        v = table.get(key, default)
        if v is default:
            return v
        if isinstance(v, bool) and bool not in types or not isinstance(v, types):
            want = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{where}.{key} must be {want}, got {v!r}")
        return v

    def date(key: str) -> dt.date | None:
        v = table.get(key)
        if v is None:
            return None
        if isinstance(v, dt.datetime):
            return v.date()
        if isinstance(v, dt.date):
            return v
        if isinstance(v, str):
            try:
                return dt.date.fromisoformat(v)
            except ValueError:
                pass
        raise ConfigError(f"{where}.{key} {v!r} is not a date; write it as {key} = 2023-01-01")

    def table_of_str(key: str) -> Mapping[str, str]:
        v = table.get(key, {})
        if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            raise ConfigError(f"{where}.{key} must be a table of strings, e.g. {key} = {{ B02 = \"blue\" }}")
        return MappingProxyType(dict(v))

    s1 = typed("s1", (str,), DEFAULT_S1)
    if s1 not in S1_CHOICES:
        raise ConfigError(f"{where}.s1 '{s1}' is not one of {', '.join(S1_CHOICES)}")
    max_cloud = float(typed("max_cloud", (int, float), DEFAULT_MAX_CLOUD))
    if not 0 <= max_cloud <= 100:
        raise ConfigError(f"{where}.max_cloud {max_cloud:g} must be a percentage between 0 and 100")
    start, end = date("start"), date("end")
    if start is None:
        raise ConfigError(f"{where} has no 'start'; add the first acquisition date, e.g. start = 2023-01-01")
    if end is not None and end < start:
        raise ConfigError(f"{where}.end {end} is before start {start}")
    ints = {}
    for k, d, lo in (("lookback_days", DEFAULT_LOOKBACK_DAYS, 0), ("s1_max_days", DEFAULT_S1_MAX_DAYS, 0),
                     ("retries", DEFAULT_RETRIES, 0), ("halo", None, 0)):
        v = typed(k, (int,), d)
        if v is not None and v < lo:
            raise ConfigError(f"{where}.{k} must be {lo} or more, got {v}")
        ints[k] = v
    timeout = float(typed("timeout", (int, float), DEFAULT_TIMEOUT))
    if timeout <= 0:
        raise ConfigError(f"{where}.timeout must be more than 0 seconds, got {timeout:g}")
    folder = typed("folder", (str,), None)
    if folder is not None:
        p = Path(os.path.expandvars(folder)).expanduser()
        folder = p if p.is_absolute() else base / p
    token_env = typed("token_env", (str,), None)
    return SourceSpec(
        catalog=typed("catalog", (str,), DEFAULT_CATALOG), s1=s1, max_cloud=max_cloud, start=start, end=end,
        since_last_run=typed("since_last_run", (bool,), False), lookback_days=ints["lookback_days"],
        s1_max_days=ints["s1_max_days"], folder=folder, token_env=token_env,
        collections=table_of_str("collections"), assets=table_of_str("assets"), halo=ints["halo"],
        retries=ints["retries"], timeout=timeout,
    )


def request_from_source(spec: SourceSpec, *, aois: Any, out: Path, aoi_name_field: str | None = None,
                        today: dt.date | None = None) -> Any:
    """The :class:`~coalmine.runtime.fetch.api.FetchRequest` a ``[source]`` table describes."""
    from .api import FetchRequest
    from .catalogs import resolve_catalogue
    from .download import FetchOptions

    cat = resolve_catalogue(spec.catalog, collections=spec.collections, assets=spec.assets,
                            token_env=spec.token_env, option="source.catalog")
    return FetchRequest(
        aois=aois, out=spec.folder or out, start=spec.start or dt.date.today(),
        end=spec.end or today or dt.date.today(), catalogue=cat, max_cloud=spec.max_cloud, s1=spec.s1,
        s1_max_days=spec.s1_max_days, halo=spec.halo, since_last_run=spec.since_last_run,
        lookback_days=spec.lookback_days, aoi_name_field=aoi_name_field,
        options=FetchOptions(retries=spec.retries, timeout=spec.timeout),
    )
