"""``coal-fetch``: new Sentinel-2/Sentinel-1 acquisitions over the AOIs from a STAC catalogue.

Downloads only the AOI windows (plus the processing halo) of the needed assets, into the
folders coal-prepare and coal-monitor read. Exit codes:

====  ======================================================================
code  meaning
====  ======================================================================
0     everything found is fetched (or was already)
1     an item could not be used (missing asset, no access); the others are fetched
2     bad options, unknown catalogue, a credential not set
69    the catalogue or its file server cannot be reached (after retries); what
      was fetched is kept and the next run resumes (EX_UNAVAILABLE)
75    another fetch writes to the same folder; nothing done (EX_TEMPFAIL)
130   interrupted (Ctrl-C); the next run resumes
====  ======================================================================
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from ..fetch import source as defaults
from ..fetch.catalogs import DEFAULT_CATALOG, S1_CHOICES
from .options import CONTEXT_SETTINGS, handle_errors, quiet_opt, setup_logging, verbose_opt

PROG = "coal-fetch"


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    from ..errors import UsageError

    out: dict[str, str] = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k.strip() or not val.strip():
            raise UsageError(f"{option} '{v}' must look like NAME=VALUE (e.g. {option} B02=blue)")
        out[k.strip()] = val.strip()
    return out


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--aoi", "aoi", required=True, type=click.Path(path_type=Path),
              help="Areas of interest: GeoJSON or GeoPackage polygons.")
@click.option("--start", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="First acquisition date searched (YYYY-MM-DD).")
@click.option("--end", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Last acquisition date searched (YYYY-MM-DD).  [default: today]")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Download folder (s2/<item>/, s1/<item>_VV.tif or s1/<item>.SAFE/, fetch.sqlite).")
@click.option("--catalog", default=DEFAULT_CATALOG, metavar="NAME|URL",
              help="earth-search, planetary-computer, or the URL of any STAC API.")
@click.option("--s1-catalog", default=None, metavar="NAME|URL",
              help="Sentinel-1 from another catalogue (e.g. --catalog earth-search --s1-catalog "
                   "planetary-computer).  [default: --catalog]")
@click.option("--max-cloud", type=float, default=defaults.DEFAULT_MAX_CLOUD,
              help="Skip items whose eo:cloud_cover (percent of the tile) is above this.")
@click.option("--s1", type=click.Choice(list(S1_CHOICES)), default=defaults.DEFAULT_S1,
              help="Sentinel-1: rtc = sigma0/gamma0 COGs (Planetary Computer: account key); grd = IW GRD "
                   "products: the AOI window of the VV measurement + its XML as a SAFE folder that "
                   "coal-prepare calibrates and geocodes (Earth Search: AWS credentials, requester "
                   "pays; Planetary Computer: none); none = no Sentinel-1.")
@click.option("--s1-max-days", type=int, default=defaults.DEFAULT_S1_MAX_DAYS,
              help="Pair each Sentinel-2 acquisition with Sentinel-1 at most this many days apart.")
@click.option("--halo", type=int, default=defaults.default_halo(),
              help="10 m pixels fetched around the AOIs (GLCM + speckle context + tile overlap).")
@click.option("--aoi-name-field", default=None, help="Attribute naming the AOIs (only read, not needed).")
@click.option("--asset", "assets", multiple=True, metavar="BAND=KEY",
              help="Asset key of a band in this catalogue's items (B02..B12, SCL, VV; for GRD also "
                   "VV_ANNOTATION, VV_CALIBRATION, VV_NOISE, MANIFEST); repeatable. "
                   "Default: the profile's keys, else found by eo:bands name.")
@click.option("--collection", "collections", multiple=True, metavar="KIND=ID",
              help="Collection id to search instead of the profile's: s2=ID, s1=ID (RTC), grd=ID; repeatable.")
@click.option("--token-env", default=None, metavar="VAR",
              help="Environment variable holding a bearer token for the catalogue.")
@click.option("--retries", type=int, default=defaults.DEFAULT_RETRIES, help="Retries of a failing request (with backoff).")
@click.option("--timeout", type=float, default=defaults.DEFAULT_TIMEOUT, help="Seconds before an HTTP request times out.")
@click.option("--dry-run", is_flag=True, default=False, help="Only list what would be fetched.")
@quiet_opt
@verbose_opt
@handle_errors(PROG)
def main(aoi: Path, start: dt.datetime, end: dt.datetime | None, out: Path, catalog: str,
         s1_catalog: str | None, max_cloud: float,
         s1: str, s1_max_days: int, halo: int, aoi_name_field: str | None, assets: tuple[str, ...],
         collections: tuple[str, ...], token_env: str | None, retries: int, timeout: float, dry_run: bool,
         quiet: bool, verbose: int) -> None:
    """Fetch the Sentinel-2 (and Sentinel-1) acquisitions over the AOIs between --start and --end.

    Only the AOI windows are downloaded (HTTP range reads of the COGs). Each Sentinel-2
    acquisition becomes a folder that `coal-prepare --s2` reads; the DN offset is written into
    its bands' tags. Items already fetched (fetch.sqlite) are never fetched again.

    Example: coal-fetch --aoi tapin.gpkg --start 2023-01-01 --end 2023-12-31 --out downloads/
    """
    setup_logging(verbose, quiet)
    from ..fetch import FetchOptions, FetchRequest, fetch, resolve_catalogue

    cols, keys = _pairs(collections, "--collection"), _pairs(assets, "--asset")
    cat = resolve_catalogue(catalog, collections=cols, assets=keys, token_env=token_env)
    s1_cat = None if s1_catalog is None else resolve_catalogue(s1_catalog, collections=cols, assets=keys,
                                                               option="--s1-catalog")
    req = FetchRequest(
        aois=aoi, out=out, start=start.date(), end=(end or dt.datetime.now()).date(), catalogue=cat,
        max_cloud=max_cloud, s1=s1, s1_max_days=s1_max_days, halo=halo, aoi_name_field=aoi_name_field,
        options=FetchOptions(retries=retries, timeout=timeout), s1_catalogue=s1_cat,
    )
    summary = fetch(req, dry_run=dry_run, progress=not quiet)
    if dry_run:
        for p in summary.planned:
            cloud = "" if p.cloud is None else f"{p.cloud:.1f}"
            click.echo(f"{p.action}\t{p.kind}\t{p.acquired:%Y-%m-%d %H:%M}\t{cloud}\t{p.stac_id}")
        if summary.unreachable:
            click.echo(f"{PROG}: {summary.unreachable}", err=True)
            sys.exit(summary.exit_code)
        todo = sum(p.action == "fetch" for p in summary.planned)
        click.echo(f"{PROG}: dry run: {todo} Sentinel-2 acquisition(s) to fetch, {summary.known} already "
                   f"fetched; {cat.name} searched {summary.start}..{summary.end}", err=True)
        sys.exit(0)
    for row in summary.fetched:
        if row.path:
            click.echo(str(Path(out) / row.path))
    for item_id, err in summary.failed:
        click.echo(f"{PROG}: failed: {item_id}: {err}", err=True)
    click.echo(f"{PROG}: {summary.status_line()}", err=True)
    sys.exit(summary.exit_code)


if __name__ == "__main__":
    main()
