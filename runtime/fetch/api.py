"""``fetch``: find the Sentinel-2/Sentinel-1 acquisitions over the AOIs in a STAC catalogue and
download only their AOI windows into the layout coal-prepare and coal-monitor read.

What lands in the download folder::

    fetch.sqlite                      the record of fetched STAC items (see record.py)
    s2/<item id>/B02.tif ... B12.tif  one folder per Sentinel-2 acquisition: the nine bands and
    s2/<item id>/SCL.tif              the scene classification, each on its own grid (10/20 m),
    s2/<item id>/item.json            the DN offset in every band's tags, and the STAC item
    s1/<item id>_VV.tif               Sentinel-1 VV windows (RTC / sigma0 COGs) on their own grid
    s1/<item id>.json                 and their STAC items
    s1/<item id>.SAFE/                or (--s1 grd) a GRD product: its XML, manifest, STAC item, and
                                      the window of its VV measurement over the AOIs (see grd.py)

A Sentinel-2 folder is ``coal-prepare --s2``'s input as it is (the offset comes from the band
tags, never from a date guess); the Sentinel-1 file paired with it (nearest date within
``s1_max_days``) is ``--s1``. The window is the part of the AOIs the item covers, grown by a halo
(GLCM window + speckle filter + tile overlap, so mapping the window gives the same pixels over
the AOIs as mapping the whole tile), rounded out to 20 m so the 10 m and 20 m bands cover the
same ground.

The pystac-client search runs inside the functions, so ``import coalmine.runtime`` never needs it.

Example:
    >>> from coalmine.runtime.fetch import FetchRequest, fetch, resolve_catalogue   # doctest: +SKIP
    >>> req = FetchRequest(aois="tapin.gpkg", out="downloads", start=date(2023, 1, 1),
    ...                    end=date(2023, 12, 31), catalogue=resolve_catalogue("earth-search"), s1="none")
    >>> print(fetch(req).status_line())                                              # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import rasterio
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape
from shapely.ops import unary_union

from .._io import atomic_write_text, fsync_path
from .._optional import optional_import
from ..aoi import Aoi, read_aois
from ..bands import S2_BANDS
from ..errors import (
    CoalmineError,
    InputError,
    ServiceUnavailableError,
    UsageError,
)
from ..preprocess.s1grd.radiometry import IPF_AZIMUTH_NOISE
from . import grd
from .catalogs import SCL, VV, Catalogue, asset_key, check_credentials, sign_href
from .download import (
    WINDOW_TAG,
    AssetError,
    FetchedFile,
    FetchOptions,
    all_nodata,
    fetch_pixel_window,
    fetch_window,
    snap_bounds,
    verify_file,
)
from .items import dn_offset, item_cloud, item_datetime
from .record import FetchRecord, FolderLock, ItemRow, now
from .source import default_halo

log = logging.getLogger("coalmine.fetch")

#: SCL classes counted as cloud in a window's cloud share (cloud shadow, cloud medium/high, cirrus).
SCL_CLOUD = (3, 8, 9, 10)
#: S2 windows are rounded out to this many metres, a multiple of the 10 m and 20 m grids.
SNAP_M = 20.0
S2_RES_M = 10.0


@dataclass(frozen=True)
class FetchRequest:
    """What to fetch and where.

    Args:
        aois: AOI file (GeoJSON/GeoPackage) or AOIs already read.
        out: download folder.
        start, end: acquisition dates searched (inclusive).
        catalogue: from :func:`~coalmine.runtime.fetch.catalogs.resolve_catalogue`.
        max_cloud: items with ``eo:cloud_cover`` above this (percent) are skipped.
        s1: "rtc" (sigma0/gamma0 COGs), "grd" (GRD products: a SAFE folder holding the AOI window
            of the VV measurement and its XML) or "none".
        s1_max_days: a Sentinel-1 acquisition pairs with a Sentinel-2 one this many days apart at most.
        halo: 10 m pixels fetched around the AOIs (default :func:`default_halo`).
        since_last_run: search from the end of the last complete run (minus ``lookback_days``,
            for items a catalogue publishes late) instead of ``start``.
        options: retries, backoff, timeout.
        aoi_name_field: attribute naming the AOIs (only used to read the file).
        s1_catalogue: Sentinel-1 from another catalogue (e.g. Sentinel-2 from Earth Search, RTC
            from the Planetary Computer); default: ``catalogue``.
    """

    aois: str | os.PathLike[str] | Sequence[Aoi]
    out: str | os.PathLike[str]
    start: dt.date
    end: dt.date
    catalogue: Catalogue
    max_cloud: float = 80.0
    s1: str = "rtc"
    s1_max_days: int = 12
    halo: int | None = None
    since_last_run: bool = False
    lookback_days: int = 30
    options: FetchOptions = field(default_factory=FetchOptions)
    aoi_name_field: str | None = None
    s1_catalogue: Catalogue | None = None

    @property
    def s1_cat(self) -> Catalogue:
        """Where Sentinel-1 comes from: ``s1_catalogue``, else the Sentinel-2 catalogue."""
        return self.s1_catalogue or self.catalogue


@dataclass
class Planned:
    """One item a search found, and what a fetch does (did) with it."""

    stac_id: str
    kind: str  # "s2" / "s1"
    acquired: dt.datetime
    cloud: float | None
    action: str  # "fetch", "fetched", "known", "empty", "failed", "pair"


@dataclass
class FetchSummary:
    """What a fetch found and did."""

    start: dt.date
    end: dt.date
    catalogue: str
    found: int = 0  # Sentinel-2 items matching AOIs, dates and cloud limit
    known: int = 0  # of those, already in the record
    fetched: list[ItemRow] = field(default_factory=list)
    empty: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    waiting_s1: int = 0  # Sentinel-2 acquisitions still without a Sentinel-1 partner
    unreachable: str | None = None  # the "fetch failed: ..." message when the catalogue failed
    planned: list[Planned] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.fetched)

    @property
    def exit_code(self) -> int:
        """0 done, 1 an item failed (the others are fetched), 69 the catalogue/server failed."""
        if self.unreachable:
            return ServiceUnavailableError.exit_code
        return 1 if self.failed else 0

    def status_line(self) -> str:
        s2 = sum(r.kind == "s2" and r.status == "fetched" for r in self.fetched)
        s1 = sum(r.kind == "s1" and r.status == "fetched" for r in self.fetched)
        parts = [f"{s2} new Sentinel-2 and {s1} new Sentinel-1 acquisition(s) "
                 f"({self.bytes / 1e6:.1f} MB in {self.seconds:.0f} s)",
                 f"{self.known} already fetched", f"{self.empty} without data over the AOIs",
                 f"{len(self.failed)} failed"]
        if self.waiting_s1:
            parts.append(f"{self.waiting_s1} Sentinel-2 acquisition(s) still without Sentinel-1")
        line = ", ".join(parts) + f"; {self.catalogue} searched {self.start}..{self.end}"
        if self.unreachable:
            line = f"{self.unreachable} — {line}"
        return line


def safe_name(stac_id: str) -> str:
    """A file-system-safe folder/file name for a STAC id."""
    s = re.sub(r"[^A-Za-z0-9._-]", "_", stac_id).lstrip(".")
    return s or "item"


# -- geometry ----------------------------------------------------------------------------------
def _aoi_union(aois: Sequence[Aoi]) -> Any:
    geoms = [shape(transform_geom(a.crs, "EPSG:4326", a.geometry)) for a in aois]
    return unary_union([g.buffer(0) for g in geoms])


def _utm_crs(geom: Any) -> CRS:
    c = geom.centroid
    zone = int((c.x + 180.0) // 6.0) % 60 + 1
    return CRS.from_epsg((32600 if c.y >= 0 else 32700) + zone)


def _bounds_in(geom: Any, crs: CRS, grow_m: float) -> BoundingBox:
    g = shape(transform_geom("EPSG:4326", crs, mapping(geom)))
    x0, y0, x1, y1 = g.bounds
    return BoundingBox(x0 - grow_m, y0 - grow_m, x1 + grow_m, y1 + grow_m)


def _item_crs(item: dict[str, Any], key: str | None) -> CRS | None:
    for src in (item.get("assets", {}).get(key or "", {}), item.get("properties", {})):
        if src.get("proj:epsg"):
            return CRS.from_epsg(int(src["proj:epsg"]))
        if src.get("proj:code"):
            return CRS.from_user_input(src["proj:code"])
    return None


def _search_geometry(union: Any) -> dict[str, Any]:
    """The AOIs for the catalogue's ``intersects`` (their convex hull when they have many vertices:
    request bodies stay small; items are then checked against the AOIs themselves)."""
    return mapping(union if _n_coords(union) <= 500 else union.convex_hull)


def _n_coords(g: Any) -> int:
    if hasattr(g, "geoms"):
        return sum(_n_coords(x) for x in g.geoms)
    if hasattr(g, "exterior"):
        return len(g.exterior.coords) + sum(len(r.coords) for r in g.interiors)
    return len(getattr(g, "coords", []))


# -- the catalogue -----------------------------------------------------------------------------
def _unreachable(cat: Catalogue, exc: BaseException) -> CoalmineError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    code = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    m = re.search(r"\b([45]\d\d)\b", msg) if code is None else None
    code = code or (int(m.group(1)) if m else None)
    if code in (401, 403):
        hint = f"check the token in ${cat.token_env}" if cat.token_env else "the catalogue needs credentials (token_env)"
        return UsageError(f"the catalogue {cat.url} refused access (HTTP {code}); {hint}")
    if code in (400, 404, 405):
        return UsageError(f"{cat.url} does not answer as a STAC API (HTTP {code}: {msg[:160]}); check --catalog")
    return ServiceUnavailableError(f"fetch failed: the catalogue {cat.url} cannot be reached ({msg[:200]}); "
                                   "nothing new was fetched — the next run tries again")


def _open_client(cat: Catalogue, opts: FetchOptions) -> Any:
    optional_import("pystac_client", purpose="searching STAC catalogues (coal-fetch, a monitor [source])")
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(total=opts.retries, connect=opts.retries, read=opts.retries, status=opts.retries,
                  backoff_factor=opts.backoff, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=None, raise_on_status=True)
    io = StacApiIO(headers=cat.headers(), timeout=opts.timeout, max_retries=retry)
    try:
        return Client.open(cat.url, stac_io=io)
    except Exception as exc:  # requests, pystac-client and pystac errors alike
        raise _unreachable(cat, exc) from exc


def _search(client: Any, cat: Catalogue, collection: str, geom: dict[str, Any], start: dt.date,
            end: dt.date) -> list[dict[str, Any]]:
    # POST where the API offers it (the AOIs travel in the body), else GET
    methods = {(link.extra_fields.get("method") or "GET").upper() for link in client.get_links("search")}
    method = "POST" if "POST" in methods or not methods else "GET"
    try:
        s = client.search(collections=[collection], intersects=geom, method=method,
                          datetime=f"{start.isoformat()}/{end.isoformat()}", limit=100)
        items = list(s.items_as_dicts())
    except Exception as exc:
        raise _unreachable(cat, exc) from exc
    return sorted(items, key=lambda it: (item_datetime(it), it["id"]))


def _href(cat: Catalogue, href: str) -> Callable[[], str]:
    def get() -> str:
        try:
            return sign_href(cat, href)
        except CoalmineError:
            raise
        except Exception as exc:  # the signing service (requests errors)
            raise ServiceUnavailableError(
                f"fetch failed: could not sign {href} with the Planetary Computer's token service "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); the next run tries again"
            ) from exc
    return get


def _options_for(cat: Catalogue, href: str, opts: FetchOptions) -> FetchOptions:
    if urlparse(href).scheme == "s3":  # requester-pays buckets, in the catalogue's region
        return replace(opts, headers=(), s3_region=grd.s3_region(cat), requester_pays=True)
    if cat.token_env and cat.same_host(href):
        return replace(opts, headers=tuple(cat.headers().items()))
    return opts


# -- one acquisition ---------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def _clean_temporaries(folder: Path) -> None:
    """Remove the hidden temporary files a killed fetch left (never counted, never read)."""
    if folder.is_dir():
        for p in folder.glob(".*.partial*"):
            if p.is_file():
                p.unlink(missing_ok=True)


def _file_info(path: Path) -> FetchedFile | None:
    """The FetchedFile of a verified file already on disk (resume), else None."""
    sha = verify_file(path)
    if sha is None:
        return None
    with rasterio.open(path) as ds:
        w = [int(v) for v in ds.tags().get(WINDOW_TAG, "0,0,0,0").split(",")]
        empty = all_nodata(ds.read(1), ds.nodata)
    return FetchedFile(path.name, path.stat().st_size, sha, (w[0], w[1], w[2], w[3]), empty)


def _window_cloud(scl: Path) -> float | None:
    with rasterio.open(scl) as ds:
        a = ds.read(1)
    valid = a != 0
    if not valid.any():
        return None
    return round(100.0 * float(np.isin(a[valid], SCL_CLOUD).mean()), 2)


class _Fetcher:
    """The per-item work of one fetch run (record, folders, options)."""

    def __init__(self, req: FetchRequest, out: Path, rec: FetchRecord, union: Any, halo: int) -> None:
        self.req, self.out, self.rec, self.union, self.halo = req, out, rec, union, halo
        self.cat = req.catalogue
        self.opts = req.options

    def _fetch(self, cat: Catalogue, href: str, bounds: BoundingBox, crs: CRS, dst: Path, *,
               tags: dict[str, str], description: str, label: str, margin: int) -> FetchedFile | None:
        existing = _file_info(dst) if dst.exists() else None
        if existing is not None:
            log.debug("%s: %s already complete (resumed)", label, dst.name)
            return existing
        return fetch_window(_href(cat, href), bounds, crs, dst, opts=_options_for(cat, href, self.opts),
                            tags=tags, description=description, label=label, margin=margin)

    def s2(self, item: dict[str, Any]) -> ItemRow:
        t0 = time.monotonic()
        iid = item["id"]
        keys = {b: asset_key(self.cat, item, b) for b in (*S2_BANDS, SCL)}
        missing = [b for b in S2_BANDS if keys[b] is None]
        if missing:
            raise AssetError(
                f"STAC item {iid} has no asset for band(s) {', '.join(missing)} (assets: "
                f"{', '.join(sorted(item.get('assets', {})))}); map them to asset keys in [source.assets] "
                "or with --asset BAND=KEY")
        off = dn_offset(item, keys["B02"])
        if off.offset is None:
            log.warning("%s: %s; coal-prepare will guess the DN offset from the date (pass --s2-offset to be sure)",
                        iid, off.why)
        crs = _item_crs(item, keys["B02"]) or _utm_crs(self.union)
        foot = _item_footprint(item)
        target = foot.intersection(self.union) if foot is not None else self.union
        bounds = _bounds_in(target, crs, self.halo * S2_RES_M)
        origin = (0.0, 0.0)
        pt = item.get("assets", {}).get(keys["B02"] or "", {}).get("proj:transform")
        if pt and len(pt) >= 6:
            origin = (float(pt[2]), float(pt[5]))
        bounds = snap_bounds(bounds, origin, SNAP_M)
        name = safe_name(iid)
        final = self.out / "s2" / name
        part = self.out / "s2" / f".{name}.partial"
        if final.exists():  # renamed before a crash but never recorded: adopt only what verifies
            if all(_file_info(final / f"{b}.tif") for b in S2_BANDS):
                shutil.rmtree(part, ignore_errors=True)
                part = final
            else:
                shutil.rmtree(final)
        part.mkdir(parents=True, exist_ok=True)
        _clean_temporaries(part)
        tags = {"PROCESSING_LEVEL": "Level-2A", "PRODUCT_TYPE": "S2MSI2A", "BOA_QUANTIFICATION_VALUE": "10000",
                "STAC_ITEM": iid, "STAC_COLLECTION": self.cat.s2_collection, "STAC_CATALOG": self.cat.url,
                "ACQUISITION_DATETIME": item_datetime(item).isoformat()}
        if off.baseline is not None:
            tags["PROCESSING_BASELINE"] = off.baseline
        if off.offset is not None:
            tags["BOA_ADD_OFFSET"] = f"{off.offset:g}"
            tags["BOA_ADD_OFFSET_SOURCE"] = off.why
        order = ([SCL] if keys[SCL] else []) + list(S2_BANDS)
        files: list[FetchedFile] = []
        for b in order:
            key = keys[b]
            assert key is not None
            label = f"STAC item {iid} asset '{key}' ({b})"
            ff = self._fetch(self.cat, item["assets"][key]["href"], bounds, crs, part / f"{b}.tif",
                             tags={**(tags if b != SCL else {k: v for k, v in tags.items()
                                                              if k.startswith(("STAC_", "ACQ"))}),
                                   "STAC_ASSET": key},
                             description=b, label=label, margin=0 if b == "B02" else 1)
            if ff is None or (not files and ff.all_nodata):
                # the first asset (SCL, else B02) has no data over the AOIs: an orbit-edge tile
                shutil.rmtree(part, ignore_errors=True)
                return self._row(item, "s2", "empty", None, [], t0, off)
            files.append(ff)
        if part != final:
            _write_json(part / "item.json", item)
            os.replace(part, final)
            fsync_path(final.parent)
        elif not (final / "item.json").exists():
            _write_json(final / "item.json", item)
        cloud = _window_cloud(final / "SCL.tif") if keys[SCL] else None
        return self._row(item, "s2", "fetched", f"s2/{name}", files, t0, off, window_cloud=cloud)

    def s1(self, item: dict[str, Any]) -> ItemRow:
        if self.req.s1 == "grd":
            return self.s1_grd(item)
        t0 = time.monotonic()
        iid = item["id"]
        cat = self.req.s1_cat
        key = asset_key(cat, item, VV)
        if key is None:
            raise AssetError(f"STAC item {iid} has no VV asset (assets: {', '.join(sorted(item.get('assets', {})))}); "
                             "map it with VV = \"...\" in [source.assets] or --asset VV=KEY")
        crs = _utm_crs(self.union)
        bounds = _bounds_in(self.union, crs, self.halo * S2_RES_M + SNAP_M)
        name = safe_name(iid)
        dst = self.out / "s1" / f"{name}_VV.tif"
        props = item.get("properties", {})
        tags = {"POLARISATION": "VV", "STAC_ITEM": iid, "STAC_ASSET": key,
                "STAC_COLLECTION": str(item.get("collection", "")), "STAC_CATALOG": cat.url,
                "ACQUISITION_DATETIME": item_datetime(item).isoformat(),
                "ORBIT_STATE": str(props.get("sat:orbit_state", ""))}
        ff = self._fetch(cat, item["assets"][key]["href"], bounds, crs, dst, tags=tags, description="VV",
                         label=f"STAC item {iid} asset '{key}' (VV)", margin=3)
        if ff is None or ff.all_nodata:
            dst.unlink(missing_ok=True)
            return self._row(item, "s1", "empty", None, [], t0, None)
        _write_json(self.out / "s1" / f"{name}.json", item)
        return self._row(item, "s1", "fetched", f"s1/{dst.name}", [ff], t0, None)

    def s1_grd(self, item: dict[str, Any]) -> ItemRow:
        """A GRD product: its XML whole, the window of its VV measurement over the AOIs (grd.py)."""
        t0 = time.monotonic()
        iid = item["id"]
        cat = self.req.s1_cat
        assets = grd.grd_assets(cat, item)
        name = f"{safe_name(iid).removesuffix('.SAFE')}.SAFE"
        final = self.out / "s1" / name
        part = self.out / "s1" / f".{name}.partial"
        if final.exists():  # renamed before a crash but never recorded: adopt only what verifies
            if _grd_complete(final):
                shutil.rmtree(part, ignore_errors=True)
                part = final
            else:
                shutil.rmtree(final)
        for sub in ("", "annotation", "annotation/calibration", "measurement"):
            (part / sub).mkdir(parents=True, exist_ok=True)
            _clean_temporaries(part / sub)
        entries: list[dict[str, Any]] = []
        manifest = self._grd_part(cat, assets, "manifest", part / "manifest.safe")
        ann_path = next(iter(sorted((part / "annotation").glob("s1*-vv-*.xml"))), None)
        ann_xml = self._grd_annotation(cat, assets, ann_path)
        ann = ann_xml[1]
        stem = grd.product_stem(ann_xml[0])
        entries.append(manifest[2])
        entries.append(grd.write_part(part / "annotation" / f"{stem}.xml", ann_xml[0])
                       if ann_path is None else grd.local_part(ann_path))
        for p, rel in (("calibration", f"annotation/calibration/calibration-{stem}.xml"),
                       ("noise", f"annotation/calibration/noise-{stem}.xml")):
            entries.append(self._grd_part(cat, assets, p, part / rel)[2])
        ipf = float(manifest[1])
        crs = _utm_crs(self.union)
        bounds = _bounds_in(self.union, crs, self.halo * S2_RES_M + SNAP_M)
        window = grd.image_window(ann, bounds, crs, full_width=ipf < IPF_AZIMUTH_NOISE)
        label = assets.label("measurement")
        dst = part / "measurement" / f"{stem}.tiff"
        ff = None if window is None else (_file_info(dst) if dst.exists() else None)
        if ff is None and window is not None:
            href = assets.href("measurement")
            tags = {"POLARISATION": "VV", "STAC_ITEM": iid, "STAC_ASSET": assets.parts["measurement"][0],
                    "STAC_COLLECTION": str(item.get("collection", "")), "STAC_CATALOG": cat.url,
                    "ACQUISITION_DATETIME": item_datetime(item).isoformat()}
            ff = fetch_pixel_window(_href(cat, href), window, dst, opts=_options_for(cat, href, self.opts),
                                    tags=tags, description="VV", label=label)
        if ff is None or ff.all_nodata:
            shutil.rmtree(part, ignore_errors=True)
            return self._row(item, "s1", "empty", None, [], t0, None)
        if part != final:
            _write_json(part / "item.json", item)
            os.replace(part, final)
            fsync_path(final.parent)
        elif not (final / "item.json").exists():
            _write_json(final / "item.json", item)
        row = self._row(item, "s1", "fetched", f"s1/{name}", [ff], t0, None)
        return replace(row, files=[*entries, *row.files], bytes=row.bytes + sum(e["bytes"] for e in entries))

    def _grd_part(self, cat: Catalogue, assets: grd.GrdAssets, part: str, dst: Path) -> tuple[bytes, Any, dict[str, Any]]:
        """One whole XML part: kept when already there and valid (a resumed fetch), else downloaded."""
        label = assets.label(part)
        if dst.is_file():
            data = dst.read_bytes()
            try:
                return data, grd.check_part(part, data, label), grd.local_part(dst) or {}
            except AssetError:
                dst.unlink()
        href = assets.href(part)
        data = grd.read_bytes(_href(cat, href), _options_for(cat, href, self.opts), label,
                              s3_region=grd.s3_region(cat))
        parsed = grd.check_part(part, data, label)
        return data, parsed, grd.write_part(dst, data)

    def _grd_annotation(self, cat: Catalogue, assets: grd.GrdAssets, local: Path | None) -> tuple[bytes, Any]:
        """The product annotation: on disk, the ``schema-product-vv`` asset, or the file beside the
        measurement when that asset is another annotation (some catalogues list the RFI one)."""
        label = assets.label("annotation")
        if local is not None:
            data = local.read_bytes()
            try:
                return data, grd.check_part("annotation", data, label)
            except AssetError:
                local.unlink()
        href = assets.href("annotation")
        data = grd.read_bytes(_href(cat, href), _options_for(cat, href, self.opts), label,
                              s3_region=grd.s3_region(cat))
        try:
            return data, grd.check_part("annotation", data, label)
        except AssetError as exc:
            beside = grd.sibling_annotation(assets.href("measurement"))
            if beside == href:
                raise
            log.warning("%s; using the product annotation beside the measurement, %s", exc, beside)
        data = grd.read_bytes(_href(cat, beside), _options_for(cat, beside, self.opts),
                              f"STAC item {assets.item_id}: {beside} (the product annotation beside the "
                              "measurement)", s3_region=grd.s3_region(cat))
        return data, grd.check_part("annotation", data, f"{beside} (beside the measurement of {assets.item_id})")

    def _row(self, item: dict[str, Any], kind: str, status: str, path: str | None, files: list[FetchedFile],
             t0: float, off: Any, window_cloud: float | None = None) -> ItemRow:
        return ItemRow(
            stac_id=item["id"], kind=kind, collection=str(item.get("collection", "")),
            catalogue=(self.cat if kind == "s2" else self.req.s1_cat).name,
            acquired=item_datetime(item).astimezone(dt.timezone.utc).isoformat(), cloud_cover=item_cloud(item),
            window_cloud=window_cloud, status=status, path=path, s1_id=None,
            dn_offset=None if off is None else off.offset, offset_source=None if off is None else off.why,
            baseline=None if off is None else off.baseline,
            files=[{"name": f.name, "bytes": f.bytes, "pixels_sha256": f.pixels_sha256, "window": list(f.window)}
                   for f in files],
            bytes=sum(f.bytes for f in files), seconds=round(time.monotonic() - t0, 3), fetched_at=now())


def _grd_complete(folder: Path) -> bool:
    """A GRD folder renamed into place holds every part, parseable, and a verified measurement."""
    try:
        ann = sorted((folder / "annotation").glob("s1*-vv-*.xml"))
        meas = sorted((folder / "measurement").glob("s1*-vv-*.tiff"))
        if len(ann) != 1 or len(meas) != 1:
            return False
        stem = ann[0].stem
        for part, path in (("manifest", folder / "manifest.safe"), ("annotation", ann[0]),
                           ("calibration", folder / f"annotation/calibration/calibration-{stem}.xml"),
                           ("noise", folder / f"annotation/calibration/noise-{stem}.xml")):
            grd.check_part(part, path.read_bytes(), str(path))
    except (OSError, CoalmineError):
        return False
    return meas[0].stem == stem and verify_file(meas[0]) is not None


def _item_footprint(item: dict[str, Any]) -> Any:
    if item.get("geometry"):
        return shape(item["geometry"]).buffer(0)
    if item.get("bbox"):
        return box(*item["bbox"][:4])
    return None


# -- the run ------------------------------------------------------------------------------------
def _check_request(req: FetchRequest) -> None:
    if req.s1 not in ("rtc", "grd", "none"):
        raise UsageError(f"--s1 '{req.s1}' is not one of rtc, grd, none")
    if req.end < req.start:
        raise UsageError(f"--end {req.end} is before --start {req.start}; give the dates in order")
    if not 0 <= req.max_cloud <= 100:
        raise UsageError(f"--max-cloud {req.max_cloud:g} must be a percentage between 0 and 100")
    if req.s1_max_days < 0:
        raise UsageError(f"--s1-max-days {req.s1_max_days} must be 0 or more")
    if req.halo is not None and req.halo < 0:
        raise UsageError(f"--halo {req.halo} must be 0 or more pixels")
    if req.options.retries < 0 or req.options.timeout <= 0:
        raise UsageError("--retries must be 0 or more and --timeout more than 0 seconds")
    check_credentials(req.catalogue, "none")
    if req.s1 != "none":
        req.s1_cat.s1_collection(req.s1)
        check_credentials(req.s1_cat, req.s1)


def fetch(req: FetchRequest, *, dry_run: bool = False, progress: bool = False) -> FetchSummary:
    """Search the catalogue and download the AOI windows of what is new (see the module docstring).

    Args:
        req: the :class:`FetchRequest`.
        dry_run: search and list what would be fetched (``summary.planned``); write nothing.
        progress: a tqdm bar on stderr.

    Returns:
        A :class:`FetchSummary`. A catalogue or file server that cannot be reached does not raise:
        ``summary.unreachable`` holds the "fetch failed: ..." message (exit code 69), and what was
        fetched before is kept.

    Raises:
        UsageError: bad dates/options, an unknown catalogue, a missing credential.
        InputError: the AOI file cannot be read.
        FetchLockedError: another fetch writes to the same folder (exit 75).
    """
    _check_request(req)
    aois = read_aois(req.aois, req.aoi_name_field) if isinstance(req.aois, (str, os.PathLike)) else list(req.aois)
    union = _aoi_union(aois)
    if union.is_empty:
        raise InputError("the AOIs have no area; give polygons with an area")
    out = Path(req.out)
    halo = default_halo() if req.halo is None else req.halo
    if dry_run:
        return _dry_run(req, out, union)
    t0 = time.monotonic()
    from .._io import ensure_output_dir

    ensure_output_dir(out)
    with FolderLock(out), FetchRecord(out) as rec:
        _clean_temporaries(out / "s1")
        start = req.start
        if req.since_last_run:
            last = rec.last_complete_end(req.catalogue.name)
            if last is not None:
                start = max(req.start, last - dt.timedelta(days=req.lookback_days))
        summary = FetchSummary(start=start, end=req.end, catalogue=req.catalogue.name)
        run_id = rec.start_run(req.catalogue.name, start, req.end)
        fetcher = _Fetcher(req, out, rec, union, halo)
        try:
            _run(req, rec, fetcher, union, start, summary, progress)
        except ServiceUnavailableError as exc:
            summary.unreachable = str(exc)
            rec.finish_run(run_id, "failed", len(summary.fetched), str(exc))
        except BaseException as exc:
            rec.finish_run(run_id, "failed", len(summary.fetched), f"{type(exc).__name__}: {exc}")
            raise
        else:
            rec.finish_run(run_id, "ok" if not summary.failed else "failed", len(summary.fetched),
                           "; ".join(f"{i}: {m}" for i, m in summary.failed))
        summary.waiting_s1 = 0 if req.s1 == "none" else sum(
            r.status == "fetched" and r.s1_id is None for r in rec.items("s2"))
    summary.seconds = time.monotonic() - t0
    return summary


def _wanted(req: FetchRequest, items: list[dict[str, Any]], union: Any) -> list[dict[str, Any]]:
    out = []
    for it in items:
        c = item_cloud(it)
        if c is not None and c > req.max_cloud:
            continue
        fp = _item_footprint(it)
        if fp is not None and not fp.intersects(union):
            continue
        out.append(it)
    return out


def _run(req: FetchRequest, rec: FetchRecord, fetcher: _Fetcher, union: Any, start: dt.date,
         summary: FetchSummary, progress: bool) -> None:
    from tqdm import tqdm

    cat = req.catalogue
    client = _open_client(cat, req.options)
    geom = _search_geometry(union)
    s2_items = _wanted(req, _search(client, cat, cat.s2_collection, geom, start, req.end), union)
    summary.found = len(s2_items)
    todo = [it for it in s2_items if not rec.has(it["id"])]
    summary.known = len(s2_items) - len(todo)
    for it in tqdm(todo, desc="Sentinel-2", unit="item", disable=not progress or not todo):
        row = _fetch_item(fetcher.s2, it, rec, summary)
        if row is None:
            continue
        if row.status == "empty":
            summary.empty += 1
            log.info("%s: no data over the AOIs (recorded, not fetched again)", it["id"])
        else:
            summary.fetched.append(row)
            log.info("fetched %s (%s, cloud %s %%, %.1f MB, %.1f s)", it["id"], row.date,
                     "?" if row.cloud_cover is None else f"{row.cloud_cover:.0f}", row.bytes / 1e6, row.seconds)
    if req.s1 == "none":
        return
    pending = [r for r in rec.items("s2") if r.status == "fetched" and r.s1_id is None]
    if not pending:
        return
    days = dt.timedelta(days=req.s1_max_days)
    lo = min(r.date for r in pending) - days
    hi = max(r.date for r in pending) + days
    s1_cat = req.s1_cat
    s1_client = client if s1_cat is cat else _open_client(s1_cat, req.options)
    s1_items = [it for it in _search(s1_client, s1_cat, s1_cat.s1_collection(req.s1), geom, lo, hi)
                if _s1_usable(it) and (_item_footprint(it) is None or _item_footprint(it).intersects(union))]
    for r in tqdm(pending, desc="Sentinel-1", unit="item", disable=not progress or not pending):
        s1 = _pair(req, rec, fetcher, r, s1_items, union, summary)
        if s1 is not None:
            rec.pair(r.stac_id, s1)


def _fetch_item(fetch_one: Callable[[dict[str, Any]], ItemRow], item: dict[str, Any], rec: FetchRecord,
                summary: FetchSummary) -> ItemRow | None:
    """Fetch one item and record it; an asset the server refuses is logged and counted as failed (None)."""
    try:
        row = fetch_one(item)
    except AssetError as exc:
        log.error("%s", exc)
        summary.failed.append((item["id"], str(exc)))
        return None
    rec.put(row)
    return row


def _s1_usable(item: dict[str, Any]) -> bool:
    """False for a Sentinel-1 item whose properties say it is not IW or has no VV (GRD collections
    also hold EW/SM and HH/HV products): never a candidate, rather than a failed item."""
    p = item.get("properties", {})
    mode = p.get("sar:instrument_mode")
    pols = p.get("sar:polarizations")
    if mode and str(mode).upper() != "IW":
        return False
    return not (isinstance(pols, list) and pols and "VV" not in [str(x).upper() for x in pols])


def _coverage(item: dict[str, Any], union: Any) -> float:
    fp = _item_footprint(item)
    if fp is None or union.area == 0:
        return 1.0
    return float(fp.intersection(union).area / union.area)


def _pair(req: FetchRequest, rec: FetchRecord, fetcher: _Fetcher, s2: ItemRow, s1_items: list[dict[str, Any]],
          union: Any, summary: FetchSummary) -> str | None:
    when = dt.datetime.fromisoformat(s2.acquired)
    limit = dt.timedelta(days=req.s1_max_days)
    cands = [it for it in s1_items if abs(item_datetime(it) - when) <= limit]
    # full coverage of the AOIs first, then the nearest date, then the id (deterministic)
    cands.sort(key=lambda it: (_coverage(it, union) < 0.999, abs(item_datetime(it) - when), it["id"]))
    for it in cands:
        known = rec.get(it["id"])
        if known is not None:
            if known.status == "fetched":
                return it["id"]
            continue
        row = _fetch_item(fetcher.s1, it, rec, summary)
        if row is None:
            continue
        if row.status == "fetched":
            summary.fetched.append(row)
            log.info("fetched %s (Sentinel-1 for %s, %.1f MB)", it["id"], s2.stac_id, row.bytes / 1e6)
            return it["id"]
        summary.empty += 1
    return None


def _dry_run(req: FetchRequest, out: Path, union: Any) -> FetchSummary:
    known: dict[str, ItemRow] = {}
    if (out / "fetch.sqlite").is_file():
        with FetchRecord(out, readonly=True) as rec:
            known = {r.stac_id: r for r in rec.items()}
            start = req.start
            if req.since_last_run:
                last = rec.last_complete_end(req.catalogue.name)
                if last is not None:
                    start = max(req.start, last - dt.timedelta(days=req.lookback_days))
    else:
        start = req.start
    summary = FetchSummary(start=start, end=req.end, catalogue=req.catalogue.name)
    cat = req.catalogue
    try:
        client = _open_client(cat, req.options)
        geom = _search_geometry(union)
        s2_items = _wanted(req, _search(client, cat, cat.s2_collection, geom, start, req.end), union)
        summary.found = len(s2_items)
        new_dates: list[dt.datetime] = []
        for it in s2_items:
            k = known.get(it["id"])
            action = "fetch" if k is None else ("empty" if k.status == "empty" else "fetched")
            summary.known += k is not None
            summary.planned.append(Planned(it["id"], "s2", item_datetime(it), item_cloud(it), action))
            if k is None or (k.status == "fetched" and k.s1_id is None):
                new_dates.append(item_datetime(it))
        if req.s1 != "none" and new_dates:
            days = dt.timedelta(days=req.s1_max_days)
            s1_cat = req.s1_cat
            s1_client = client if s1_cat is cat else _open_client(s1_cat, req.options)
            s1_items = _search(s1_client, s1_cat, s1_cat.s1_collection(req.s1), geom,
                               (min(new_dates) - days).date(), (max(new_dates) + days).date())
            for it in filter(_s1_usable, s1_items):
                if any(abs(item_datetime(it) - d) <= days for d in new_dates):
                    k = known.get(it["id"])
                    summary.planned.append(Planned(it["id"], "s1", item_datetime(it), None,
                                                   "candidate" if k is None else "fetched"))
    except ServiceUnavailableError as exc:
        summary.unreachable = str(exc)
    return summary
