"""New scenes from STAC catalogues: search, window-only download, and the record of what was fetched.

Modules, one concern each: :mod:`.catalogs` (catalogue profiles, asset keys, credentials,
URL signing), :mod:`.items` (what an item says: date, cloud, the Sentinel-2 DN offset),
:mod:`.download` (one remote COG window into a verified local file, with retries),
:mod:`.record` (the SQLite record of fetched items and the folder lock), :mod:`.api` (the
fetch itself), :mod:`.source` (the ``[source]`` table of a monitor configuration).

pystac-client (``pip install 'coalmine[fetch]'``) is imported only when a search runs, so
importing this package — or ``coalmine.runtime`` — never needs it.

Example:
    >>> from coalmine.runtime.fetch import FetchRequest, fetch, resolve_catalogue   # doctest: +SKIP
    >>> s = fetch(FetchRequest("tapin.gpkg", "downloads", date(2023, 1, 1), date(2023, 12, 31),
    ...                        resolve_catalogue("planetary-computer")))             # doctest: +SKIP
"""

from .api import FetchRequest, FetchSummary, fetch
from .catalogs import PROFILES, Catalogue, CredentialsError, check_credentials, resolve_catalogue
from .download import FetchOptions
from .record import Acquisition, FetchLockedError, FetchRecord, ItemRow, acquisitions, report_rows
from .source import SourceSpec, default_halo, fetch_for_monitor, parse_source, request_from_source

__all__ = [
    "Acquisition", "acquisitions", "fetch_for_monitor", "report_rows",
    "PROFILES", "Catalogue", "CredentialsError", "FetchLockedError", "FetchOptions", "FetchRecord",
    "FetchRequest", "FetchSummary", "ItemRow", "check_credentials", "default_halo", "fetch",
    "SourceSpec", "parse_source", "request_from_source", "resolve_catalogue",
]
