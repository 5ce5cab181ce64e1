"""Sentinel-1 GRD from a STAC catalogue: the AOI window of the VV measurement and its XML, as a SAFE folder.

Catalogues that keep GRD products file by file (Earth Search's and the Planetary Computer's
``sentinel-1-grd``) list each part of a product as an asset of its item:

==========================  ================================================  =================
asset key                   what                                              mapping name
==========================  ================================================  =================
``vv``                      the VV measurement (DN, line/pixel, GCPs; a COG)  ``VV``
``schema-product-vv``       the product annotation (geolocation grid, orbit)  ``VV_ANNOTATION``
``schema-calibration-vv``   the calibration LUTs (``sigmaNought`` ...)        ``VV_CALIBRATION``
``schema-noise-vv``         the thermal noise LUTs                            ``VV_NOISE``
``safe-manifest``           ``manifest.safe`` (the IPF version)               ``MANIFEST``
==========================  ================================================  =================

A fetch of one item:

1. reads the manifest and the three XML files whole (a few MB; each checked by parsing it the
   way the GRD reader does). Some catalogues' ``schema-product-vv`` points at the RFI
   annotation (``annotation/rfi/rfi-…-vv….xml``) instead of the product annotation; then the
   product annotation is taken beside the measurement (``annotation/<measurement stem>.xml``,
   the layout of every SAFE product and of both catalogues' copies), and the log says so;
2. finds the image window: the AOIs' bounds grown by the halo, sampled on a 21 x 21 lattice, are
   mapped to image line/pixel by the same Range-Doppler solution the reader uses (the
   annotation's orbit, timing and slant-to-ground-range polynomials, fitted on its geolocation
   grid), at heights from :data:`HEIGHT_BELOW` m below the lowest to :data:`HEIGHT_ABOVE` m above
   the highest geolocation-grid height over the AOIs -- so that a DEM's terrain correction, which moves a
   pixel in range by its height over tan(incidence), still finds its pixels -- and grown by
   :data:`MARGIN` image pixels (bilinear sampling context). Products before IPF 2.90 keep the
   full width of those lines: their border noise is found by scanning each line from its ends;
3. reads that window of the measurement with HTTP range requests (the retries, timeouts and
   verified atomic write of :mod:`.download`), with the window's offset and the full image size
   in its tags (:data:`~coalmine.runtime.preprocess.s1grd.product.WINDOW_TAG`, ``SIZE_TAG``),
   which the GRD reader uses to map annotation line/pixel numbers onto the partial measurement;
4. lays the parts out as a SAFE folder that ``coal-prepare --s1`` (and the monitor) read like a
   downloaded product::

       s1/<item id>.SAFE/manifest.safe
       s1/<item id>.SAFE/annotation/<stem>.xml
       s1/<item id>.SAFE/annotation/calibration/calibration-<stem>.xml
       s1/<item id>.SAFE/annotation/calibration/noise-<stem>.xml
       s1/<item id>.SAFE/measurement/<stem>.tiff      (the window only)
       s1/<item id>.SAFE/item.json

   ``<stem>`` is the product's own file stem (``s1b-iw-grd-vv-<start>-<stop>-<orbit>-<take>-001``),
   rebuilt from the annotation header, because the catalogues' copies rename the files
   (``iw-vv.tiff``).

Access: ``http(s)://`` assets through requests and GDAL's ``/vsicurl/`` (Planetary Computer URLs
signed first); ``s3://`` assets -- Earth Search's GRD lives in the requester-pays bucket
``sentinel-s1-l1c`` -- through boto3 and GDAL's ``/vsis3/``, both with ``RequestPayer=requester``
and the AWS credentials of the environment or ``~/.aws`` (the requester pays AWS for the bytes
read; the window keeps that small). ``AWS_ENDPOINT_URL_S3`` / ``AWS_S3_ENDPOINT`` point both at
another S3-compatible server.

Written by hand: no library reads a window of a GRD measurement plus its XML into a SAFE layout
(xarray-sentinel and sarsen read whole local or fsspec products; stactools only writes items).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import numpy as np
from pyproj import Transformer
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.windows import Window

from .._io import atomic_write_bytes
from .._optional import optional_import
from ..errors import InputError
from ..preprocess.s1grd.annotation import (
    Annotation,
    parse_annotation,
    parse_calibration,
    parse_noise,
)
from ..preprocess.s1grd.geocoding import GridHeights, RangeDoppler
from ..preprocess.s1grd.orbit import annotation_orbit
from ..preprocess.s1grd.product import manifest_ipf
from .catalogs import GRD_ASSET_NAMES, Catalogue
from .download import AssetError, FetchOptions, wait_before_retry

log = logging.getLogger("coalmine.fetch")

#: Part of a GRD product -> (mapping name, the catalogues' asset key, what it is for messages).
PARTS = {
    "measurement": ("VV", "vv", "the VV measurement"),
    "annotation": ("VV_ANNOTATION", "schema-product-vv", "the VV product annotation XML"),
    "calibration": ("VV_CALIBRATION", "schema-calibration-vv", "the VV calibration XML"),
    "noise": ("VV_NOISE", "schema-noise-vv", "the VV thermal noise XML"),
    "manifest": ("MANIFEST", "safe-manifest", "manifest.safe (the processor version)"),
}
assert tuple(v[0] for v in PARTS.values()) == GRD_ASSET_NAMES
#: Metres below the lowest / above the highest geolocation-grid height searched for the window.
HEIGHT_BELOW = 500.0
HEIGHT_ABOVE = 1500.0
#: Image pixels added around the mapped window (bilinear context, lattice interpolation).
MARGIN = 16
#: Points per side of the lattice over the AOI bounds that is mapped to line/pixel.
LATTICE_N = 21
_SCHEMES = ("http", "https", "s3")


@dataclass(frozen=True)
class GrdAssets:
    """The hrefs of one item's GRD parts (part -> (asset key, href))."""

    item_id: str
    parts: dict[str, tuple[str, str]]

    def href(self, part: str) -> str:
        return self.parts[part][1]

    def label(self, part: str) -> str:
        return f"STAC item {self.item_id} asset '{self.parts[part][0]}' ({PARTS[part][2]})"


def grd_assets(cat: Catalogue, item: dict[str, Any]) -> GrdAssets:
    """The five GRD parts of ``item``: by the profile's/user's mapping, else the catalogues' keys.

    Raises:
        AssetError: a part is missing, naming the item, the asset and the fix.
    """
    assets = item.get("assets", {})
    lower = {k.lower(): k for k in assets}
    parts: dict[str, tuple[str, str]] = {}
    for part, (name, key, what) in PARTS.items():
        k = cat.assets.get(name) or lower.get(key)
        href = str(assets.get(k or "", {}).get("href", ""))
        if not k or urlparse(href).scheme not in _SCHEMES:
            raise AssetError(
                f"STAC item {item['id']} has no '{cat.assets.get(name) or key}' asset with an http(s) or "
                f"s3 URL ({what}; assets: {', '.join(sorted(assets)) or 'none'}); it cannot be fetched as "
                f"a GRD product: map the asset with --asset {name}=KEY ([source.assets]), or use --s1 rtc")
        parts[part] = (k, href)
    return GrdAssets(item["id"], parts)


def sibling_annotation(measurement_href: str) -> str:
    """The product annotation beside a measurement: ``…/measurement/X.tiff`` -> ``…/annotation/X.xml``."""
    u = urlparse(measurement_href)
    p = PurePosixPath(u.path)
    stem = re.sub(r"-cog$", "", p.stem)
    return u._replace(path=str(p.parent.parent / "annotation" / f"{stem}.xml")).geturl()


def product_stem(ann_xml: bytes) -> str:
    """The SAFE file stem of the VV image, from the annotation header (``s1b-iw-grd-vv-…-001``)."""
    h = ET.fromstring(ann_xml).find("adsHeader")
    assert h is not None  # parse_annotation checked the file

    def t(tag: str) -> str:
        return (h.findtext(tag) or "").strip()

    def stamp(s: str) -> str:
        return re.sub(r"[-:]", "", s.split(".")[0]).lower()

    take = t("missionDataTakeId")
    take = f"{int(take):06x}" if take.isdigit() else take.lower()
    orbit = t("absoluteOrbitNumber")
    orbit = f"{int(orbit):06d}" if orbit.isdigit() else orbit
    return (f"{t('missionId').lower()}-{t('mode').lower()}-grd-vv-{stamp(t('startTime'))}-"
            f"{stamp(t('stopTime'))}-{orbit}-{take}-{t('imageNumber') or '001'}")


# -- the window ----------------------------------------------------------------------------------
def image_window(ann: Annotation, bounds: BoundingBox, crs: CRS, *, full_width: bool) -> Window | None:
    """The image window (line/pixel) that covers ``bounds`` (in ``crs``) at any plausible height.

    Returns None when the bounds fall outside the image.
    """
    xs = np.linspace(bounds.left, bounds.right, LATTICE_N)
    ys = np.linspace(bounds.bottom, bounds.top, LATTICE_N)
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(gx.ravel(), gy.ravel())
    lon, lat = np.asarray(lon), np.asarray(lat)
    rd = RangeDoppler(ann, annotation_orbit(ann))
    # the geolocation grid's heights where the lattice falls (found at height 0, then refined once)
    gh = GridHeights(ann)
    h = np.zeros(lon.shape)
    for _ in range(2):
        h = gh(*rd.line_pixel_geodetic(lon, lat, h))
    h = h[np.isfinite(h)]
    if h.size == 0:
        return None
    lo = float(h.min()) - HEIGHT_BELOW
    hi = float(h.max()) + HEIGHT_ABOVE
    lines, pixels = [], []
    for h in (lo, 0.5 * (lo + hi), hi):
        ln, px = rd.line_pixel_geodetic(lon, lat, np.full(lon.shape, h))
        lines.append(ln)
        pixels.append(px)
    ln, px = np.concatenate(lines), np.concatenate(pixels)
    ok = np.isfinite(ln) & np.isfinite(px)
    if not ok.any():
        return None
    r0 = max(0, math.floor(float(ln[ok].min())) - MARGIN)
    r1 = min(ann.lines, math.ceil(float(ln[ok].max())) + MARGIN + 1)
    c0 = max(0, math.floor(float(px[ok].min())) - MARGIN)
    c1 = min(ann.samples, math.ceil(float(px[ok].max())) + MARGIN + 1)
    if r1 <= r0 or c1 <= c0:
        return None
    if full_width:
        c0, c1 = 0, ann.samples
    return Window(c0, r0, c1 - c0, r1 - r0)


# -- whole small files ---------------------------------------------------------------------------
def _client_error(code: int) -> bool:
    return 400 <= code < 500 and code not in (408, 429)


def read_bytes(url: Callable[[], str], opts: FetchOptions, label: str, *, s3_region: str | None = None) -> bytes:
    """The whole content of a small asset, with the retries and backoff of :mod:`.download`.

    Raises:
        AssetError: HTTP 4xx (other than 408/429) or an S3 access/missing-key error.
        ServiceUnavailableError: the server kept failing after ``opts.retries`` retries.
    """
    failures = 0
    while True:
        href = url()
        try:
            if urlparse(href).scheme == "s3":
                return _s3_get(href, opts, label, s3_region)
            return _http_get(href, opts, label)
        except _Retry as exc:
            failures += 1
            wait_before_retry(failures, opts, label, str(exc))


class _Retry(Exception):
    """A failure worth asking again (5xx, 408/429, timeout, cut or short transfer)."""


def _http_get(url: str, opts: FetchOptions, label: str) -> bytes:
    requests = optional_import("requests", purpose="downloading catalogue assets")
    try:
        r = requests.get(url, timeout=opts.timeout, headers=dict(opts.headers))
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise _Retry(f"HTTP {r.status_code}")
        if _client_error(r.status_code):
            raise AssetError(f"{label} cannot be read (HTTP {r.status_code}); the catalogue lists an asset its "
                             "server does not give: check access, or skip the item")
        body = r.content
    except requests.RequestException as exc:  # connection cut, timeout, short chunked body
        raise _Retry(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    size = r.headers.get("Content-Length")
    if size and not r.headers.get("Content-Encoding") and int(size) != len(body):
        raise _Retry(f"transfer cut short ({len(body)} of {size} bytes)")
    return bytes(body)


_S3_CLIENT_ERRORS = {"AccessDenied", "NoSuchKey", "NoSuchBucket", "InvalidAccessKeyId",
                     "SignatureDoesNotMatch", "403", "404", "InvalidObjectState"}


def s3_region(cat: Catalogue) -> str:
    return cat.s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _s3_get(href: str, opts: FetchOptions, label: str, region: str | None) -> bytes:
    boto3 = optional_import("boto3", purpose="reading S3 assets (Earth Search's Sentinel-1 GRD)")
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    u = urlparse(href)
    client = boto3.client("s3", region_name=region or "us-east-1", config=Config(
        retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=min(opts.timeout, 15.0),
        read_timeout=opts.timeout))
    try:
        obj = client.get_object(Bucket=u.netloc, Key=u.path.lstrip("/"), RequestPayer="requester")
        body = obj["Body"].read()
    except NoCredentialsError as exc:
        raise AssetError(f"{label} is in a requester-pays S3 bucket and no AWS credentials were found; set "
                         "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile in ~/.aws/credentials)") from exc
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _S3_CLIENT_ERRORS or _client_error(status):
            raise AssetError(f"{label} cannot be read from S3 ({code or status}: {exc}); check the AWS "
                             "credentials (the bucket is requester-pays), or skip the item") from exc
        raise _Retry(f"S3 {code or status}") from exc
    except BotoCoreError as exc:  # connection, timeout, short body
        raise _Retry(str(exc)) from exc
    if int(obj.get("ContentLength", len(body))) != len(body):
        raise _Retry(f"transfer cut short ({len(body)} of {obj['ContentLength']} bytes)")
    return bytes(body)


# -- checking what arrived ------------------------------------------------------------------------
def check_part(part: str, data: bytes, label: str) -> Any:
    """Parse ``data`` as the GRD ``part`` it should be; returns the parsed object (or IPF for the manifest).

    Raises:
        AssetError: not that kind of file, naming the asset.
    """
    try:
        if part == "manifest":
            ipf = manifest_ipf(data)
            if ipf is None:
                raise InputError("it names no Sentinel-1 IPF version")
            return ipf
        root = ET.fromstring(data).tag
        want = {"annotation": "product", "calibration": "calibration", "noise": "noise"}[part]
        if root != want:
            raise InputError(f"its root element is <{root}>, not <{want}>")
        parsed = {"annotation": parse_annotation, "calibration": parse_calibration,
                  "noise": parse_noise}[part](data, label)
        if part == "annotation" and (parsed.product_type, parsed.mode, parsed.polarisation) != ("GRD", "IW", "VV"):
            raise AssetError(f"{label} describes {parsed.mode} {parsed.product_type} {parsed.polarisation} data; "
                             "coalmine reads IW GRD VV (the model was trained on it): skip the item")
        return parsed
    except ET.ParseError as exc:
        raise AssetError(f"{label} is not valid XML ({exc}); the catalogue serves a damaged file: skip the item "
                         "or fetch it later") from None
    except AssetError:
        raise
    except InputError as exc:
        raise AssetError(f"{label} is not {PARTS[part][2]}: {exc}; skip the item or map the right asset with "
                         f"--asset {PARTS[part][0]}=KEY") from None


def write_part(path: Path, data: bytes) -> dict[str, Any]:
    """Write a whole file atomically (umask mode); its record entry (name, bytes, SHA-256)."""
    atomic_write_bytes(path, data)
    return {"name": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def local_part(path: Path) -> dict[str, Any] | None:
    """The record entry of a part already on disk (a resumed fetch), None if absent."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    return {"name": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
