"""The ``[source]`` table of a ``coal-monitor`` configuration, and the fetch defaults.

``[source]`` tells the monitor where new scenes come from; each run fetches what is new before
it maps anything::

    [source]
    catalog = "planetary-computer"     # earth-search | planetary-computer | https://... (any STAC API)
    s1_catalog = "planetary-computer"  # optional: Sentinel-1 from another catalogue
    s1 = "rtc"                         # rtc | grd | none
    max_cloud = 80                     # percent of the tile (eo:cloud_cover)
    start = 2023-01-01                 # first acquisition date
    end = 2023-12-31                   # optional: default today
    since_last_run = true              # search from the last complete fetch (minus lookback_days)
    lookback_days = 30                 # catalogues publish some items days late
    s1_max_days = 12                   # Sentinel-1 at most this many days from the Sentinel-2 date
    folder = "downloads"               # default: <output>/downloads
    token_env = "MY_STAC_TOKEN"        # a bearer token in this environment variable (any STAC API)
    collections = { s2 = "sentinel-2-l2a", s1 = "sentinel-1-rtc", grd = "sentinel-1-grd" }  # override the profile's
    [source.assets]                    # band -> asset key, for catalogues without a profile
    B02 = "blue"

Credentials never go into this file: ``token_env`` names a variable; the Planetary Computer's
key is read from ``PC_SDK_SUBSCRIPTION_KEY`` or its SDK's settings file; the AWS credentials for
Earth Search's requester-pays GRD from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or
``~/.aws/credentials``. Unknown keys are refused.

The defaults live here once and ``coal-fetch`` uses the same ones.
"""

from __future__ import annotations

import datetime as dt
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

_KEYS = {"catalog", "s1_catalog", "s1", "max_cloud", "start", "end", "since_last_run", "lookback_days", "s1_max_days",
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
    s1_catalog: str | None = None  # Sentinel-1 from another catalogue (default: ``catalog``)
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


def parse_source(table: Any, base: Path, src: Path) -> SourceSpec:
    """Validate a ``[source]`` table (with the configuration vocabulary of ``runtime.configfile``).

    Args:
        table: the parsed TOML table.
        base: folder relative paths are resolved against (the configuration's).
        src: the configuration file, for messages.

    Raises:
        ConfigError: not a table, an unknown key, a value of the wrong type or range, no ``start``.
    """
    from ..configfile import expand_path, refuse_unknown, typed

    w = "source"
    if not isinstance(table, dict):
        raise ConfigError(f"{src}: source must be a table ([source]), got {type(table).__name__}")
    refuse_unknown(table, _KEYS, src, w)

    def date(key: str) -> dt.date | None:
        v = table.get(key)
        if v is None or isinstance(v, dt.date):
            return v.date() if isinstance(v, dt.datetime) else v
        try:
            return dt.date.fromisoformat(str(v))
        except ValueError:
            raise ConfigError(f"{src}: {w}.{key} {v!r} is not a date; write it as {key} = 2023-01-01") from None

    def strings(key: str) -> Mapping[str, str]:
        v = typed(table, key, dict, src, w, default={})
        if not all(isinstance(x, str) for x in v.values()):
            raise ConfigError(f"{src}: {w}.{key} must be a table of strings, e.g. {key} = {{ B02 = \"blue\" }}")
        return MappingProxyType(dict(v))

    def at_least(key: str, types: Any, default: Any, lo: float) -> Any:
        v = typed(table, key, types, src, w, default=default)
        if v is not None and v < lo:
            raise ConfigError(f"{src}: {w}.{key} must be {lo:g} or more, got {v}")
        return v

    s1 = typed(table, "s1", str, src, w, default=DEFAULT_S1)
    if s1 not in S1_CHOICES:
        raise ConfigError(f"{src}: {w}.s1 '{s1}' is not one of {', '.join(S1_CHOICES)}")
    max_cloud = float(typed(table, "max_cloud", float, src, w, default=DEFAULT_MAX_CLOUD))
    if not 0 <= max_cloud <= 100:
        raise ConfigError(f"{src}: {w}.max_cloud {max_cloud:g} must be a percentage between 0 and 100")
    start, end = date("start"), date("end")
    if start is None:
        raise ConfigError(f"{src}: [source] has no 'start'; add the first acquisition date, e.g. start = 2023-01-01")
    if end is not None and end < start:
        raise ConfigError(f"{src}: {w}.end {end} is before start {start}")
    timeout = float(typed(table, "timeout", float, src, w, default=DEFAULT_TIMEOUT))
    if timeout <= 0:
        raise ConfigError(f"{src}: {w}.timeout must be more than 0 seconds, got {timeout:g}")
    folder = table.get("folder")
    return SourceSpec(
        catalog=typed(table, "catalog", str, src, w, default=DEFAULT_CATALOG),
        s1_catalog=typed(table, "s1_catalog", str, src, w, default=None), s1=s1, max_cloud=max_cloud,
        start=start, end=end, since_last_run=typed(table, "since_last_run", bool, src, w, default=False),
        lookback_days=at_least("lookback_days", int, DEFAULT_LOOKBACK_DAYS, 0),
        s1_max_days=at_least("s1_max_days", int, DEFAULT_S1_MAX_DAYS, 0),
        folder=None if folder is None else expand_path(folder, base, src, f"{w}.folder"),
        token_env=typed(table, "token_env", str, src, w, default=None),
        collections=strings("collections"), assets=strings("assets"), halo=at_least("halo", int, None, 0),
        retries=at_least("retries", int, DEFAULT_RETRIES, 0), timeout=timeout,
    )


def check_source(spec: SourceSpec, src: Path | str) -> None:
    """Refuse at load, naming the file, a ``[source]`` whose catalogue is unknown, whose Sentinel-1
    kind the catalogue lacks, or whose credential is not set.

    Raises:
        ConfigError: one line naming the configuration file and the problem (a variable by name).
    """
    from ..errors import UsageError
    from .catalogs import check_credentials, resolve_catalogue

    try:
        cat = resolve_catalogue(spec.catalog, collections=spec.collections, assets=spec.assets,
                                token_env=spec.token_env, option="source.catalog")
        s1_cat = cat if not spec.s1_catalog else resolve_catalogue(
            spec.s1_catalog, collections=spec.collections, assets=spec.assets, option="source.s1_catalog")
        check_credentials(cat, "none")
        if spec.s1 != "none":
            s1_cat.s1_collection(spec.s1)
            check_credentials(s1_cat, spec.s1)
    except UsageError as exc:
        raise ConfigError(f"{src}: [source] {exc}") from None


def request_from_source(spec: SourceSpec, *, aois: Any, out: Path, aoi_name_field: str | None = None,
                        today: dt.date | None = None) -> Any:
    """The :class:`~coalmine.runtime.fetch.api.FetchRequest` a ``[source]`` table describes."""
    from .api import FetchRequest
    from .catalogs import resolve_catalogue
    from .download import FetchOptions

    cat = resolve_catalogue(spec.catalog, collections=spec.collections, assets=spec.assets,
                            token_env=spec.token_env, option="source.catalog")
    s1_cat = None if not spec.s1_catalog else resolve_catalogue(
        spec.s1_catalog, collections=spec.collections, assets=spec.assets, option="source.s1_catalog")
    return FetchRequest(
        aois=aois, out=spec.folder or out, start=spec.start or dt.date.today(),
        end=spec.end or today or dt.date.today(), catalogue=cat, max_cloud=spec.max_cloud, s1=spec.s1,
        s1_max_days=spec.s1_max_days, halo=spec.halo, since_last_run=spec.since_last_run,
        lookback_days=spec.lookback_days, aoi_name_field=aoi_name_field,
        options=FetchOptions(retries=spec.retries, timeout=spec.timeout), s1_catalogue=s1_cat,
    )


def fetch_for_monitor(spec: SourceSpec, aois: Any, *, dry_run: bool = False, aoi_name_field: str | None = None) -> Any:
    """Run the fetch a monitor's ``[source]`` describes, before the monitor plans its scenes.

    A catalogue that cannot be reached does not raise: the returned summary's ``unreachable``
    says so and the monitor maps what the download folder already holds.
    """
    import logging

    from .api import fetch

    log = logging.getLogger("coalmine.monitor")
    assert spec.folder is not None, "the monitor sets [source] folder (default <output>/downloads)"
    summary = fetch(request_from_source(spec, aois=aois, out=spec.folder, aoi_name_field=aoi_name_field),
                    dry_run=dry_run)
    if dry_run:
        for p in summary.planned:
            if p.action in ("fetch", "candidate"):
                log.info("would fetch %s %s (%s): %s", "Sentinel-2" if p.kind == "s2" else "Sentinel-1",
                         f"{p.acquired:%Y-%m-%d}", "cloud ?" if p.cloud is None else f"cloud {p.cloud:.0f} %",
                         p.stac_id)
    elif summary.unreachable:
        log.error("%s", summary.unreachable)
    else:
        log.info("fetch: %s", summary.status_line())
    return summary
