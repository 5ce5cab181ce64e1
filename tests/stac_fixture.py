"""A local STAC API and COG file server on 127.0.0.1, for the coal-fetch tests and benchmark.

Nothing here reaches the internet. One ``ThreadingHTTPServer`` serves:

* the STAC API: ``GET /`` (landing page), ``/conformance``, ``/collections``,
  ``/collections/{id}``, and ``GET``/``POST /search`` (``collections``, ``ids``, ``bbox``,
  ``intersects``, ``datetime``, ``limit``; pages linked by ``next`` links carrying a token,
  as GET query strings or POST bodies, like the public catalogues);
* files under ``/files/`` with HTTP range requests (``HEAD``, ``GET``, ``206 Partial Content``),
  counting the body bytes sent per file, so a test can prove that only a window was read;
* the same for S3 buckets addressed path-style (``/<bucket>/<key>``, as GDAL's ``/vsis3/`` and
  boto3 ask an S3-compatible endpoint), a bucket marked requester-pays answering 403
  ``AccessDenied`` to a request without ``x-amz-request-payer: requester``, as AWS does.

Faults for the robustness tests are queued per path prefix: an HTTP status (``500``), a delay
longer than the client's timeout, or a truncated body (the full ``Content-Length`` is announced,
half the bytes are sent, then the connection is closed).

Items are built by :func:`earth_search_s2_item`, :func:`planetary_s2_item` and
:func:`planetary_rtc_item` in the shapes of the public catalogues' items (asset keys, ``proj:``
and ``raster:`` fields, processing-baseline and offset properties, taken from items published by
Earth Search and the Planetary Computer), with our own values. :func:`make_catalogue` turns
synthetic scenes (``coalmine.train.synth.make_scene``) into served COGs and items.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import numpy as np
import rasterio
from rasterio.warp import transform_geom
from shapely.geometry import box as shp_box
from shapely.geometry import mapping, shape

STAC_VERSION = "1.0.0"
CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]

#: Earth Search (element84, v1) asset keys of the Sentinel-2 L2A bands.
EARTH_SEARCH_KEYS = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B11": "swir16", "B12": "swir22", "SCL": "scl",
}
_COMMON = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge",
           "B06": "rededge", "B07": "rededge", "B08": "nir", "B8A": "nir08", "B09": "nir09",
           "B11": "swir16", "B12": "swir22"}
_WAVELENGTH = {"B01": 0.443, "B02": 0.49, "B03": 0.56, "B04": 0.665, "B05": 0.704, "B06": 0.74,
               "B07": 0.783, "B08": 0.842, "B8A": 0.865, "B09": 0.945, "B11": 1.61, "B12": 2.19}
COG = "image/tiff; application=geotiff; profile=cloud-optimized"


# -- the server ------------------------------------------------------------------------------
@dataclass
class Fault:
    """A failure to inject into the next ``times`` requests whose path starts with ``prefix``."""

    prefix: str
    kind: str  # "status" | "delay" | "truncate" | "reset"
    times: int = 1
    status: int = 500
    seconds: float = 0.0


@dataclass
class StacServer:
    """The running server: its URL, the items it serves, byte counts and the fault queue."""

    root: Path  # folder served under /files/
    items: list[dict[str, Any]] = field(default_factory=list)
    collections: dict[str, dict[str, Any]] = field(default_factory=dict)
    page_size: int = 2
    search_methods: tuple[str, ...] = ("GET", "POST")  # what the landing page advertises
    token: str | None = None  # when set, every request needs "Authorization: Bearer <token>"
    latency: float = 0.0  # seconds before each file response (a distant server)
    rate: float | None = None  # bytes per second per connection for file bodies (a slow link)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    buckets: dict[str, Path] = field(default_factory=dict)  # S3 bucket name -> folder served
    requester_pays: set[str] = field(default_factory=set)  # buckets that need x-amz-request-payer
    _httpd: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def file_url(self, rel: str) -> str:
        return f"{self.url}/files/{rel}"

    def start(self) -> StacServer:
        srv = self

        class Handler(_Handler):
            server_state = srv

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def inject(self, prefix: str, kind: str, times: int = 1, **kw: Any) -> None:
        with self._lock:
            self.faults.append(Fault(prefix, kind, times, **kw))

    def reset_counts(self) -> None:
        with self._lock:
            self.bytes_sent.clear()
            self.requests.clear()

    def file_bytes(self, prefix: str = "/files/") -> int:
        with self._lock:
            return sum(v for k, v in self.bytes_sent.items() if k.startswith(prefix))

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if path.startswith(f.prefix) and f.times > 0:
                    f.times -= 1
                    return f
        return None

    # -- STAC responses --------------------------------------------------------------------
    def landing(self) -> dict[str, Any]:
        u = self.url
        return {
            "type": "Catalog", "id": "coalmine-test", "stac_version": STAC_VERSION,
            "description": "Local STAC API for the coalmine tests", "conformsTo": CONFORMANCE,
            "links": [
                {"rel": "self", "type": "application/json", "href": f"{u}/"},
                {"rel": "root", "type": "application/json", "href": f"{u}/"},
                {"rel": "conformance", "type": "application/json", "href": f"{u}/conformance"},
                {"rel": "data", "type": "application/json", "href": f"{u}/collections"},
            ] + [{"rel": "search", "type": "application/geo+json", "href": f"{u}/search", "method": m}
                 for m in self.search_methods] + [{"rel": "child", "type": "application/json", "href": f"{u}/collections/{c}"}
                 for c in self.collections],
        }

    def collection(self, cid: str) -> dict[str, Any]:
        c = dict(self.collections[cid])
        c["links"] = [{"rel": "self", "href": f"{self.url}/collections/{cid}"},
                      {"rel": "root", "href": f"{self.url}/"},
                      {"rel": "items", "href": f"{self.url}/collections/{cid}/items"}]
        return c

    def search(self, params: dict[str, Any], method: str, query: dict[str, str] | None = None) -> dict[str, Any]:
        """One page of a search; ``query`` is a GET request's own query string (for its next link)."""
        hits = [it for it in self.items if _matches(it, params)]
        hits.sort(key=lambda it: (it["properties"]["datetime"], it["id"]))
        limit = int(params.get("limit") or self.page_size)
        limit = min(limit, self.page_size)  # small pages, so every search pages
        start = int(str(params.get("token") or "next:0").split(":")[-1])
        page = hits[start:start + limit]
        links: list[dict[str, Any]] = [{"rel": "root", "href": f"{self.url}/"}]
        if start + limit < len(hits):
            token = f"next:{start + limit}"
            if method == "GET":
                q = {k: v for k, v in (query or {}).items() if k != "token"}
                q["token"] = token
                links.append({"rel": "next", "type": "application/geo+json", "method": "GET",
                              "href": f"{self.url}/search?{urlencode(q)}"})
            else:
                body = {k: v for k, v in params.items() if k != "token"}
                body["token"] = token
                links.append({"rel": "next", "type": "application/geo+json", "method": "POST",
                              "href": f"{self.url}/search", "body": body, "merge": False})
        return {"type": "FeatureCollection", "features": page, "links": links,
                "numberMatched": len(hits), "numberReturned": len(page)}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up on purpose (timeouts, faults) are not errors here


def _parse_time(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def _matches(item: dict[str, Any], p: dict[str, Any]) -> bool:
    cols = p.get("collections")
    if cols and item.get("collection") not in cols:
        return False
    ids = p.get("ids")
    if ids and item["id"] not in ids:
        return False
    geom = shape(item["geometry"])
    if p.get("bbox"):
        if not geom.intersects(shp_box(*[float(v) for v in p["bbox"]][:4])):
            return False
    if p.get("intersects"):
        if not geom.intersects(shape(p["intersects"])):
            return False
    if p.get("datetime"):
        t = _parse_time(item["properties"]["datetime"])
        parts = str(p["datetime"]).split("/")
        if len(parts) == 1:
            if t != _parse_time(parts[0]):
                return False
        else:
            lo, hi = parts
            if lo not in ("", "..") and t < _parse_time(lo):
                return False
            if hi not in ("", "..") and t > _parse_time(hi):
                return False
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: StacServer

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    # -- plumbing ----------------------------------------------------------------------------
    def _json(self, obj: Any, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fault(self, path: str) -> bool:
        token = self.server_state.token
        if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
            body = b'{"code": "Unauthorized"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True
        f = self.server_state._take_fault(path)
        if f is None:
            return False
        if f.kind == "delay":
            time.sleep(f.seconds)
            return False
        if f.kind == "status":
            body = b'{"code": "InternalServerError"}'
            self.send_response(f.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True
        if f.kind == "reset":  # the connection drops before any answer (a network cut)
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        # "truncate" applies to file bodies only; a HEAD has none
        return f.kind == "truncate" and self.command == "GET" and self._serve_file(path, truncate=True)

    def _bucket(self, path: str) -> str | None:
        name = path.lstrip("/").split("/", 1)[0]
        return name if name in self.server_state.buckets else None

    def _s3_denied(self, bucket: str) -> bool:
        if bucket in self.server_state.requester_pays and \
                (self.headers.get("x-amz-request-payer") or "").lower() != "requester":
            body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return True
        return False

    def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
        path = urlparse(self.path).path
        if self._fault(path):
            return
        if (b := self._bucket(path)) is not None:
            if not self._s3_denied(b):
                self._serve_file(path, head=True)
        elif path.startswith("/files/"):
            self._serve_file(path, head=True)
        else:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        u = urlparse(self.path)
        if self._fault(u.path):
            return
        st = self.server_state
        if (b := self._bucket(u.path)) is not None:
            if not self._s3_denied(b):
                self._serve_file(u.path)
        elif u.path.startswith("/files/"):
            self._serve_file(u.path)
        elif u.path in ("", "/"):
            self._json(st.landing())
        elif u.path == "/conformance":
            self._json({"conformsTo": CONFORMANCE})
        elif u.path == "/collections":
            self._json({"collections": [st.collection(c) for c in st.collections],
                        "links": [{"rel": "root", "href": f"{st.url}/"}]})
        elif m := re.fullmatch(r"/collections/([^/]+)", u.path):
            if m.group(1) in st.collections:
                self._json(st.collection(m.group(1)))
            else:
                self._json({"code": "NotFound"}, 404)
        elif m := re.fullmatch(r"/api/sas/v1/token/([^/]+)/([^/]+)", u.path):
            # the Planetary Computer's SAS token service, as its SDK calls it
            expiry = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._json({"msft:expiry": expiry,
                        "token": f"st=2023-01-01&se={expiry[:10]}&sp=rl&sr=c&sig=test-{m.group(1)}-{m.group(2)}"})
        elif u.path == "/search":
            q = {k: v[0] for k, v in parse_qs(u.query).items()}
            params: dict[str, Any] = dict(q)
            for k in ("collections", "ids"):
                if k in q:
                    params[k] = q[k].split(",")
            if "bbox" in q:
                params["bbox"] = [float(v) for v in q["bbox"].split(",")]
            if "intersects" in q:
                params["intersects"] = json.loads(q["intersects"])
            with st._lock:
                st.requests.append(("GET", "/search", params.get("token")))
            self._json(st.search(params, "GET", q))
        else:
            self._json({"code": "NotFound", "description": u.path}, 404)

    def do_POST(self) -> None:  # noqa: N802
        u = urlparse(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        if self._fault(u.path):
            return
        if u.path == "/search":
            with self.server_state._lock:
                self.server_state.requests.append(("POST", "/search", body.get("token")))
            self._json(self.server_state.search(body, "POST"))
        else:
            self._json({"code": "NotFound"}, 404)

    def _serve_file(self, path: str, head: bool = False, truncate: bool = False) -> bool:
        st = self.server_state
        bucket = self._bucket(path)
        root = st.root if bucket is None else st.buckets[bucket]
        f = (root / (path[len("/files/"):] if bucket is None else path.lstrip("/").split("/", 1)[1])).resolve()
        if root.resolve() not in f.parents or not f.is_file():
            self._json({"code": "NotFound"}, 404)
            return True
        size = f.stat().st_size
        rng = self.headers.get("Range")
        with st._lock:
            st.requests.append(("HEAD" if head else "GET", path, rng))
        start, end, status = 0, size - 1, 200
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m:  # several ranges in one request: not used by GDAL's /vsicurl/
                self._json({"code": "RangeNotSatisfiable"}, 416)
                return True
            a, b = m.groups()
            if a == "":
                start, end = max(0, size - int(b)), size - 1
            else:
                start, end = int(a), min(int(b) if b else size - 1, size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return True
        with open(f, "rb") as fh:
            fh.seek(start)
            data = fh.read(length)
        if truncate:
            data = data[: len(data) // 2]
        if st.latency:
            time.sleep(st.latency)
        if st.rate:
            t0, chunk = time.monotonic(), 1 << 16
            for i in range(0, len(data), chunk):
                self.wfile.write(data[i:i + chunk])
                ahead = (i + chunk) / st.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        else:
            self.wfile.write(data)
        with st._lock:
            st.bytes_sent[path] = st.bytes_sent.get(path, 0) + len(data)
        if truncate:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
        return True


# -- items in the shapes of the public catalogues --------------------------------------------
@dataclass(frozen=True)
class Raster:
    """A served COG: its URL and grid (for the ``proj:`` fields)."""

    href: str
    epsg: int
    shape: tuple[int, int]
    transform: tuple[float, ...]
    res: float
    dtype: str


def raster_info(path: Path, href: str) -> Raster:
    with rasterio.open(path) as ds:
        t = ds.transform
        return Raster(href, ds.crs.to_epsg(), (ds.height, ds.width), (t.a, t.b, t.c, t.d, t.e, t.f),
                      abs(t.a), ds.dtypes[0])


def _footprint(r: Raster) -> tuple[dict[str, Any], list[float]]:
    a, _, c, _, e, f = r.transform
    h, w = r.shape
    poly = shp_box(c, f + e * h, c + a * w, f)
    g = transform_geom(f"EPSG:{r.epsg}", "EPSG:4326", mapping(poly.segmentize(a * w / 8)))
    gs = shape(g)
    return mapping(gs), list(gs.bounds)


def _links(base: str, collection: str, item_id: str) -> list[dict[str, str]]:
    return [{"rel": "self", "type": "application/geo+json",
             "href": f"{base}/collections/{collection}/items/{item_id}"},
            {"rel": "parent", "type": "application/json", "href": f"{base}/collections/{collection}"},
            {"rel": "collection", "type": "application/json", "href": f"{base}/collections/{collection}"},
            {"rel": "root", "type": "application/json", "href": f"{base}/"}]


def earth_search_s2_item(base: str, item_id: str, when: dt.datetime, bands: dict[str, Raster], *,
                         baseline: str, offset_applied: bool, cloud: float, tile: str = "50MLA",
                         platform: str = "sentinel-2b") -> dict[str, Any]:
    """An item shaped like Earth Search v1 ``sentinel-2-l2a`` (common-name asset keys, ``raster:bands``
    scale 0.0001 / offset -0.1 from baseline 04.00 on, ``earthsearch:boa_offset_applied``)."""
    geom, bbox = _footprint(bands["B02"])
    new = float(baseline) >= 4.0
    assets: dict[str, Any] = {}
    for b, r in bands.items():
        key = EARTH_SEARCH_KEYS[b]
        a: dict[str, Any] = {"href": r.href, "type": COG, "gsd": int(r.res),
                             "proj:shape": list(r.shape), "proj:transform": list(r.transform)}
        if b == "SCL":
            a.update(title="Scene classification map (SCL)", roles=["data"], **{"raster:bands": [
                {"nodata": 0, "data_type": "uint8", "spatial_resolution": int(r.res)}]})
        else:
            a.update(title=f"{b} - {int(r.res)}m", roles=["data", "reflectance"],
                     **{"eo:bands": [{"name": b, "common_name": _COMMON[b],
                                      "center_wavelength": _WAVELENGTH[b]}],
                        "raster:bands": [{"nodata": 0, "data_type": "uint16",
                                          "spatial_resolution": int(r.res), "scale": 0.0001,
                                          "offset": -0.1 if new else 0}]})
        assets[key] = a
    assets["thumbnail"] = {"href": f"{base}/files/missing/preview.jpg", "type": "image/jpeg",
                           "roles": ["thumbnail"]}
    assets["granule_metadata"] = {"href": f"{base}/files/missing/granule_metadata.xml",
                                  "type": "application/xml", "roles": ["metadata"]}
    stamp = when.strftime("%Y%m%dT%H%M%S")
    props = {
        "created": when.isoformat().replace("+00:00", "Z"), "platform": platform,
        "constellation": "sentinel-2", "instruments": ["msi"], "eo:cloud_cover": cloud,
        "proj:epsg": bands["B02"].epsg, "mgrs:utm_zone": int(tile[:2]), "mgrs:latitude_band": tile[2],
        "mgrs:grid_square": tile[3:], "grid:code": f"MGRS-{tile}",
        "s2:product_type": "S2MSI2A", "s2:processing_baseline": baseline,
        "s2:product_uri": f"S2B_MSIL2A_{stamp}_N{baseline.replace('.', '')}_R046_T{tile}_{stamp}.SAFE",
        "s2:nodata_pixel_percentage": 0.0,
        "datetime": when.isoformat().replace("+00:00", "Z"),
        "earthsearch:s3_path": f"s3://sentinel-cogs/sentinel-s2-l2a-cogs/{item_id}",
        "earthsearch:boa_offset_applied": offset_applied,
        "processing:software": {"sentinel2-to-stac": "2025.03.06"},
    }
    return {"type": "Feature", "stac_version": STAC_VERSION,
            "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
            "id": item_id, "bbox": bbox, "geometry": geom, "properties": props,
            "links": _links(base, "sentinel-2-l2a", item_id), "assets": assets,
            "collection": "sentinel-2-l2a"}


def planetary_s2_item(base: str, item_id: str, when: dt.datetime, bands: dict[str, Raster], *,
                      baseline: str, cloud: float, tile: str = "50MLA") -> dict[str, Any]:
    """An item shaped like the Planetary Computer's ``sentinel-2-l2a`` (band-name asset keys,
    ``proj:bbox/shape/transform`` per asset, no ``raster:bands``; pixels keep the BOA offset)."""
    geom, bbox = _footprint(bands["B02"])
    assets: dict[str, Any] = {}
    for b, r in bands.items():
        a0, _, c, _, e, f = r.transform
        h, w = r.shape
        a: dict[str, Any] = {"href": r.href, "proj:bbox": [c, f + e * h, c + a0 * w, f],
                             "proj:shape": list(r.shape), "proj:transform": list(r.transform),
                             "gsd": float(r.res), "type": COG, "roles": ["data"]}
        if b == "SCL":
            a["title"] = "Scene classfication map (SCL)"
        else:
            a["title"] = f"Band {b[1:].lstrip('0')} - {int(r.res)}m"
            a["eo:bands"] = [{"name": b, "common_name": _COMMON[b], "center_wavelength": _WAVELENGTH[b]}]
        assets[b] = a
    assets["product-metadata"] = {"href": f"{base}/files/missing/MTD_MSIL2A.xml",
                                  "type": "application/xml", "roles": ["metadata"]}
    props = {
        "datetime": when.isoformat().replace("+00:00", ".000000Z"), "platform": "Sentinel-2B",
        "proj:epsg": bands["B02"].epsg, "instruments": ["msi"], "s2:mgrs_tile": tile,
        "constellation": "Sentinel 2", "eo:cloud_cover": cloud,
        "s2:product_uri": f"{item_id.replace('_R046', '_N' + baseline.replace('.', '') + '_R046')}.SAFE",
        "s2:product_type": "S2MSI2A", "sat:orbit_state": "descending", "sat:relative_orbit": 46,
        "s2:processing_baseline": baseline,
    }
    return {"id": item_id, "bbox": bbox, "type": "Feature", "links": _links(base, "sentinel-2-l2a", item_id),
            "assets": assets, "geometry": geom, "collection": "sentinel-2-l2a", "properties": props,
            "stac_extensions": ["https://stac-extensions.github.io/eo/v1.0.0/schema.json",
                                "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
                                "https://stac-extensions.github.io/projection/v1.0.0/schema.json"],
            "stac_version": STAC_VERSION}


def planetary_rtc_item(base: str, item_id: str, when: dt.datetime, vv: Raster) -> dict[str, Any]:
    """An item shaped like the Planetary Computer's ``sentinel-1-rtc`` (``vv``/``vh`` float32
    gamma-naught COGs, nodata -32768, ``sar:`` and ``sat:`` properties)."""
    geom, bbox = _footprint(vv)
    asset = {"href": vv.href, "type": COG, "roles": ["data"],
             "title": "VV: vertical transmit, vertical receive",
             "proj:shape": list(vv.shape), "proj:transform": list(vv.transform),
             "raster:bands": [{"nodata": -32768, "data_type": "float32", "spatial_resolution": 10}]}
    props = {
        "sar:frequency_band": "C", "sar:center_frequency": 5.405, "sar:observation_direction": "right",
        "sar:instrument_mode": "IW", "sar:polarizations": ["VV", "VH"], "sar:product_type": "GRD",
        "sar:resolution_range": 20, "sar:resolution_azimuth": 22, "sar:pixel_spacing_range": 10,
        "sar:pixel_spacing_azimuth": 10, "sar:looks_range": 5, "sar:looks_azimuth": 1,
        "sar:looks_equivalent_number": 4.4, "sat:orbit_state": "ascending", "sat:relative_orbit": 171,
        "platform": "SENTINEL-1A", "constellation": "Sentinel-1", "proj:epsg": vv.epsg,
        "s1:processing_level": "1", "s1:product_timeliness": "Fast-24h", "s1:resolution": "high",
        "datetime": when.isoformat().replace("+00:00", "Z"),
        "start_datetime": when.isoformat().replace("+00:00", "Z"),
        "end_datetime": (when + dt.timedelta(seconds=25)).isoformat().replace("+00:00", "Z"),
    }
    return {"type": "Feature", "stac_version": STAC_VERSION, "id": item_id, "properties": props,
            "geometry": geom, "bbox": bbox, "links": _links(base, "sentinel-1-rtc", item_id),
            "assets": {"vv": asset, "vh": dict(asset, title="VH: vertical transmit, horizontal receive")},
            "collection": "sentinel-1-rtc",
            "stac_extensions": ["https://stac-extensions.github.io/sar/v1.0.0/schema.json",
                                "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
                                "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"]}


def collection_doc(cid: str, title: str) -> dict[str, Any]:
    return {"type": "Collection", "id": cid, "stac_version": STAC_VERSION, "title": title,
            "description": title, "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [["2015-06-27T00:00:00Z", None]]}}}


# -- synthetic scenes as served COGs ---------------------------------------------------------
def write_cog(src: Path | np.ndarray, dst: Path, *, like: Path | None = None, blocksize: int = 128,
              nodata: float | int | None = None, dtype: str | None = None) -> Path:
    """Write a COG (DEFLATE, ``blocksize`` tiles, overviews) from a raster file or an array on ``like``'s grid."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    ref = src if isinstance(src, Path) else like
    assert ref is not None
    with rasterio.open(ref) as ds:
        profile = {"driver": "COG", "count": 1, "height": ds.height, "width": ds.width, "crs": ds.crs,
                   "transform": ds.transform, "compress": "deflate", "blocksize": blocksize,
                   "nodata": ds.nodata if nodata is None else nodata}
        arr = ds.read(1) if isinstance(src, Path) else src
    profile["dtype"] = dtype or arr.dtype.name
    with rasterio.open(dst, "w", **profile) as out:
        out.write(arr.astype(profile["dtype"]), 1)
    return dst


S2_SERVED = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12", "SCL")


@dataclass
class Scene:
    """One synthetic acquisition served three ways, and what a test needs to check it."""

    synth: Any  # coalmine.train.synth.SynthScene
    when: dt.datetime
    pc_item: dict[str, Any]
    es_item: dict[str, Any]
    rtc_item: dict[str, Any]
    files: dict[str, Path]  # served relative name -> local path


def serve_scene(server: StacServer, synth: Any, when: dt.datetime, *, blocksize: int = 128,
                cloud: float = 12.5, tile: str = "50MLA") -> Scene:
    """COGs of a ``make_scene`` output under ``server.root`` and its three items (not yet served).

    The Planetary-Computer-style item serves the product's DN (BOA offset still in the pixels
    from baseline 04.00 on); the Earth-Search-style item serves DN with the offset already
    applied (``earthsearch:boa_offset_applied: true``), as Earth Search does; the RTC item
    serves the synthetic sigma0 VV as float32 with nodata -32768.
    """
    ymd = when.strftime("%Y%m%d")
    stamp = when.strftime("%Y%m%dT%H%M%S")
    pc_id = f"S2B_MSIL2A_{stamp}_R046_T{tile}_{ymd}T101010"
    es_id = f"S2B_{tile}_{ymd}_0_L2A"
    s1_when = when - dt.timedelta(days=2)
    s1_stamp = s1_when.strftime("%Y%m%dT%H%M%S")
    s1_end = (s1_when + dt.timedelta(seconds=25)).strftime("%Y%m%dT%H%M%S")
    rtc_id = f"S1A_IW_GRDH_1SDV_{s1_stamp}_{s1_end}_049411_05F123_rtc"
    files: dict[str, Path] = {}
    pc_r: dict[str, Raster] = {}
    es_r: dict[str, Raster] = {}
    offset = int(synth.boa_add_offset)
    for b in S2_SERVED:
        if b == "SCL":
            src = synth.scl_path
        elif b == "B01":  # served but never needed: proves only the needed assets are read
            src = synth.band_paths["B02"]
        else:
            src = synth.band_paths[b]
        rel_pc = f"pc/{pc_id}/{b}.tif"
        rel_es = f"es/{es_id}/{b}.tif"
        write_cog(src, server.root / rel_pc, blocksize=blocksize)
        with rasterio.open(src) as ds:
            dn = ds.read(1)
        if b != "SCL" and offset:
            # Earth Search harmonises: DN_served = DN + offset where DN > 0 (clipped at 1).
            dn = np.where(dn > 0, np.clip(dn.astype(np.int32) + offset, 1, 65535), 0).astype(np.uint16)
        write_cog(dn, server.root / rel_es, like=src, blocksize=blocksize)
        files[rel_pc], files[rel_es] = server.root / rel_pc, server.root / rel_es
        pc_r[b] = raster_info(server.root / rel_pc, server.file_url(rel_pc))
        es_r[b] = raster_info(server.root / rel_es, server.file_url(rel_es))
    with rasterio.open(synth.s1_path) as ds:
        vv = ds.read(1)
    vv = np.where(np.isfinite(vv), vv, -32768.0).astype(np.float32)
    rel_vv = f"rtc/{rtc_id}/iw-vv.rtc.tiff"
    write_cog(vv, server.root / rel_vv, like=synth.s1_path, blocksize=blocksize, nodata=-32768.0)
    files[rel_vv] = server.root / rel_vv
    baseline = synth.processing_baseline
    base = server.url
    vv_r = raster_info(server.root / rel_vv, server.file_url(rel_vv))
    return Scene(
        synth=synth, when=when, files=files,
        pc_item=planetary_s2_item(base, pc_id, when, pc_r, baseline=baseline, cloud=cloud, tile=tile),
        es_item=earth_search_s2_item(base, es_id, when, es_r, baseline=baseline, offset_applied=True,
                                     cloud=cloud, tile=tile),
        rtc_item=planetary_rtc_item(base, rtc_id, s1_when, vv_r),
    )


def standard_collections() -> dict[str, dict[str, Any]]:
    return {"sentinel-2-l2a": collection_doc("sentinel-2-l2a", "Sentinel-2 Level-2A"),
            "sentinel-1-rtc": collection_doc("sentinel-1-rtc", "Sentinel 1 Radiometrically Terrain Corrected (RTC)"),
            "sentinel-1-grd": collection_doc("sentinel-1-grd", "Sentinel-1 Level-1C Ground Range Detected (GRD)")}


#: The AOI square of :func:`make_catalogue`: column, row and size in 10 m pixels of the tile.
AOI_PX = (500, 500, 60)
WHEN = dt.datetime(2023, 7, 15, 2, 25, 51, tzinfo=dt.timezone.utc)


def aoi_geojson(path: Path, synth: Any, px: tuple[int, int, int] = AOI_PX, name: str = "Pit") -> Path:
    """A GeoJSON square AOI (lon/lat) at ``px`` = (col, row, size) of a synthetic tile's 10 m grid."""
    c, r, n = px
    x0, y0 = synth.transform.c + c * 10.0, synth.transform.f - r * 10.0
    ring = [[x0, y0], [x0 + n * 10, y0], [x0 + n * 10, y0 - n * 10], [x0, y0 - n * 10], [x0, y0]]
    g = transform_geom(synth.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": name}, "geometry": g}]}))
    return path


def make_catalogue(root: Path) -> dict[str, Any]:
    """A running server with one synthetic 2023 tile (1024 px, 10 m) served three ways, and an AOI.

    Returns ``{"srv", "scene", "synth", "aoi", "root"}``; the caller stops ``srv``.
    """
    from coalmine.train.synth import make_scene

    srv = StacServer(root / "files").start()
    srv.collections = standard_collections()
    synth = make_scene(root / "synth", 2023, seed=1, size=1024)
    scene = serve_scene(srv, synth, WHEN)
    return {"srv": srv, "scene": scene, "synth": synth, "aoi": aoi_geojson(root / "aoi.geojson", synth),
            "root": root}
