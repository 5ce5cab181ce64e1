"""Sentinel-1 GRD items on the local STAC API (tests/stac_fixture.py), and Sentinel-2 over them.

A GRD product is generated from the real annotation, calibration and noise XML of
../shared/realdata (tests/grd_factory.py: DN from a known sigma0 field through the real LUTs,
inside one window of the full-size image), then served the way the catalogues keep GRD
products -- one file per asset, renamed as in their buckets (``measurement/iw-vv.tiff``,
``annotation/iw-vv.xml``, ``annotation/calibration/calibration-iw-vv.xml``, ...) -- with items
in the shapes of:

* the Planetary Computer's ``sentinel-1-grd`` (https hrefs on the catalogue's file server; asset
  keys, titles and properties as in its collection's ``item_assets`` and its published items);
* Earth Search's ``sentinel-1-grd`` (items made by stactools-sentinel1: ``s3://sentinel-s1-l1c/GRD/
  <y>/<m>/<d>/IW/DV/<product>/...`` hrefs in a requester-pays bucket, served here path-style; and
  ``schema-product-vv`` pointing at the RFI annotation, as stactools' items of that layout do).

The served measurement carries GCPs from the geolocation grid and speckle (so that it does not
compress to nothing and "bytes fetched << file" means something). A Sentinel-2 L2A tile (nine
bands + SCL as COGs, Earth Search shape, offset applied) lies over the generated window.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from grd_factory import SAFE_NAME, UTM, Geo, make_product, smooth_sigma0
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.windows import Window
from stac_fixture import (
    COG,
    STAC_VERSION,
    StacServer,
    _links,
    earth_search_s2_item,
    raster_info,
    write_cog,
)

#: The image window of the generated product that holds data, centred on ``CENTRE``.
DATA_WINDOW = Window(11550, 7050, 2400, 2400)
#: Image (line, pixel) at the centre of the Sentinel-2 tile and of the AOI.
CENTRE = (8250.0, 12750.0)
S2_SIZE = 512  # 10 m pixels
AOI_SIZE = 40  # 10 m pixels, centred
ITEM_ID = SAFE_NAME.rsplit("_", 1)[0]  # the catalogues drop the product's CRC
S2_WHEN = dt.datetime(2021, 12, 24, 10, 0, 31, tzinfo=dt.timezone.utc)
BUCKET = "sentinel-s1-l1c"


def speckled_sigma0(x: np.ndarray, y: np.ndarray, line: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """The factory's smooth field times 4-look speckle (seeded by position: the same every time)."""
    rng = np.random.default_rng(int(line.flat[0]) * 100_003 + int(pixel.flat[0]))
    return smooth_sigma0(x, y) * rng.gamma(4.0, 0.25, size=np.shape(x))


@dataclass
class GrdWorld:
    """A generated GRD product (the reference), its served copy and items, and S2 over it."""

    product: Path  # the whole product as a SAFE folder (reference for sigma0)
    geo: Geo
    served: dict[str, Path]  # served relative name -> file
    pc_item: dict[str, Any]
    es_item: dict[str, Any]
    s2_item: dict[str, Any]
    s2_grid: Any  # coalmine Grid of the S2 tile
    aoi: Path
    old_ipf: bool


def _footprint(geo: Geo) -> tuple[dict[str, Any], list[float]]:
    la, lo = geo.lat, geo.lon
    ring = [(lo[0, 0], la[0, 0]), (lo[0, -1], la[0, -1]), (lo[-1, -1], la[-1, -1]), (lo[-1, 0], la[-1, 0])]
    ring = [[float(a), float(b)] for a, b in ring]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}, [min(xs), min(ys), max(xs), max(ys)]


def _gcps(geo: Geo) -> list[GroundControlPoint]:
    out = []
    for i, ln in enumerate(geo.lines):
        for j, px in enumerate(geo.pixels):
            out.append(GroundControlPoint(row=float(ln), col=float(px), x=float(geo.lon[i, j]),
                                          y=float(geo.lat[i, j]), z=float(geo.height[i, j]), id=f"{i}_{j}"))
    return out


def _serve_measurement(src: Path, dst: Path, geo: Geo, window: Window) -> None:
    """A tiled copy of the generated measurement (data window only, sparse elsewhere), with GCPs."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src) as s:
        dn = s.read(1, window=window)
        w, h = s.width, s.height
    with rasterio.open(dst, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint16", tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", SPARSE_OK="TRUE",
                       gcps=_gcps(geo), crs=CRS.from_epsg(4326)) as d:
        d.write(dn, 1, window=window)


def _grd_props(geo_item: dict[str, Any], ann_pass: str, when: dt.datetime, platform: str) -> dict[str, Any]:
    end = when + dt.timedelta(seconds=25)
    return {
        "sar:frequency_band": "C", "sar:center_frequency": 5.405, "sar:observation_direction": "right",
        "sar:instrument_mode": "IW", "sar:polarizations": ["VV", "VH"], "sar:product_type": "GRD",
        "sar:resolution_range": 20, "sar:resolution_azimuth": 22, "sar:pixel_spacing_range": 10,
        "sar:pixel_spacing_azimuth": 10, "sar:looks_range": 5, "sar:looks_azimuth": 1,
        "sar:looks_equivalent_number": 4.4, "sat:platform_international_designator": "2016-025A",
        "sat:orbit_state": ann_pass.lower(), "sat:absolute_orbit": 30148, "sat:relative_orbit": 117,
        "platform": platform, "constellation": "Sentinel-1" if platform.isupper() else "sentinel-1",
        "s1:instrument_configuration_ID": "6", "s1:datatake_id": "235923", "s1:product_timeliness": "Fast-24h",
        "s1:processing_level": "1", "s1:resolution": "high", "s1:orbit_source": "RESORB",
        "s1:slice_number": "11", "s1:total_slices": "19", "s1:shape": [26102, 16705],
        "s1:product_identifier": SAFE_NAME, "s1:processing_datetime": "2021-12-23T06:45:13.000000Z",
        "start_datetime": when.isoformat().replace("+00:00", "Z"),
        "end_datetime": end.isoformat().replace("+00:00", "Z"),
        "datetime": (when + dt.timedelta(seconds=12.5)).isoformat().replace("+00:00", "Z"),
        **geo_item,
    }


def _xml_asset(href: str, title: str) -> dict[str, Any]:
    return {"href": href, "type": "application/xml", "title": title, "roles": ["metadata"]}


def grd_items(base_https: str, base_s3: str, geo: Geo, ann_pass: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same product as a Planetary-Computer-shaped and an Earth-Search-shaped item."""
    geom, bbox = _footprint(geo)
    when = dt.datetime(2021, 12, 23, 5, 11, 22, 594441, tzinfo=dt.timezone.utc)

    def assets(base: str, product_schema: str) -> dict[str, Any]:
        a = {
            "safe-manifest": _xml_asset(f"{base}/manifest.safe", "Manifest File"),
            "schema-product-vv": _xml_asset(f"{base}/{product_schema}", "Product Schema"),
            "schema-calibration-vv": _xml_asset(f"{base}/annotation/calibration/calibration-iw-vv.xml",
                                                "Calibration Schema"),
            "schema-noise-vv": _xml_asset(f"{base}/annotation/calibration/noise-iw-vv.xml", "Noise Schema"),
            "schema-product-vh": _xml_asset(f"{base}/annotation/iw-vh.xml", "Product Schema"),
            "schema-calibration-vh": _xml_asset(f"{base}/annotation/calibration/calibration-iw-vh.xml",
                                                "Calibration Schema"),
            "schema-noise-vh": _xml_asset(f"{base}/annotation/calibration/noise-iw-vh.xml", "Noise Schema"),
            "thumbnail": {"href": f"{base}/preview/quick-look.png", "type": "image/png", "title": "Preview Image",
                          "roles": ["thumbnail"]},
            "vv": {"href": f"{base}/measurement/iw-vv.tiff", "type": COG, "roles": ["data"],
                   "title": "VV: vertical transmit, vertical receive"},
            "vh": {"href": f"{base}/measurement/iw-vh.tiff", "type": COG, "roles": ["data"],
                   "title": "VH: vertical transmit, horizontal receive"},
        }
        return a

    pc = {"type": "Feature", "stac_version": STAC_VERSION, "id": ITEM_ID,
          "properties": _grd_props({}, ann_pass, when, "SENTINEL-1B"), "geometry": geom, "bbox": bbox,
          "links": _links(base_https.split("/files/")[0], "sentinel-1-grd", ITEM_ID),
          "assets": assets(base_https, "annotation/iw-vv.xml"), "collection": "sentinel-1-grd",
          "stac_extensions": ["https://stac-extensions.github.io/sar/v1.0.0/schema.json",
                              "https://stac-extensions.github.io/sat/v1.0.0/schema.json"]}
    es_props = _grd_props({"proj:epsg": 4326, "proj:bbox": bbox, "proj:shape": [16705, 26102],
                           "proj:centroid": {"lat": float(np.mean(geo.lat)), "lon": float(np.mean(geo.lon))}},
                          ann_pass, when, "sentinel-1b")
    es = {"type": "Feature", "stac_version": STAC_VERSION, "id": ITEM_ID, "properties": es_props,
          "geometry": geom, "bbox": bbox, "links": _links(base_https.split("/files/")[0], "sentinel-1-grd", ITEM_ID),
          # stactools' items of the bucket layout point schema-product at the RFI annotation
          "assets": assets(base_s3, "annotation/rfi/rfi-iw-vv.xml"), "collection": "sentinel-1-grd",
          "stac_extensions": ["https://stac-extensions.github.io/sar/v1.0.0/schema.json",
                              "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
                              "https://stac-extensions.github.io/projection/v1.1.0/schema.json"]}
    return pc, es


def _s2_tile(root: Path, server: StacServer, geo: Geo) -> tuple[dict[str, Any], Any]:
    """Nine S2 bands + SCL as COGs (10/20 m) on a UTM 33N tile centred on ``CENTRE``; its ES item."""
    from coalmine.runtime.raster import Grid

    x, y = geo.utm(np.array([CENTRE[0]]), np.array([CENTRE[1]]))
    x0 = np.floor(x[0] / 20.0) * 20.0 - S2_SIZE * 5.0
    y0 = np.floor(y[0] / 20.0) * 20.0 + S2_SIZE * 5.0
    grid = Grid(CRS.from_string(UTM), Affine(10, 0, x0, 0, -10, y0), S2_SIZE, S2_SIZE)
    rng = np.random.default_rng(5)
    rasters = {}
    for i, b in enumerate(("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12", "SCL")):
        res = 10 if b in ("B02", "B03", "B04", "B08") else 20
        n = S2_SIZE * 10 // res
        yy, xx = np.mgrid[0:n, 0:n] * (res / 10.0)
        if b == "SCL":
            a = np.full((n, n), 4, np.uint8)
            a[: n // 8, : n // 8] = 9  # a cloudy corner
        else:
            a = (1500 + 700 * np.sin(xx / 19.0) * np.cos(yy / 27.0) * (0.7 + 0.06 * i)
                 + rng.normal(0, 40, (n, n))).clip(1, 10000).astype(np.uint16)
        rel = f"s2grd/S2B_33TUG_20211224_0_L2A/{b}.tif"
        tmp = root / "s2src" / f"{b}.tif"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(tmp, "w", driver="GTiff", width=n, height=n, count=1, dtype=a.dtype, crs=grid.crs,
                           transform=Affine(res, 0, x0, 0, -res, y0), nodata=0) as ds:
            ds.write(a, 1)
        write_cog(tmp, server.root / rel)
        rasters[b] = raster_info(server.root / rel, server.file_url(rel))
    item = earth_search_s2_item(server.url, "S2B_33TUG_20211224_0_L2A", S2_WHEN, rasters, baseline="03.01",
                                offset_applied=True, cloud=3.0, tile="33TUG")
    return item, grid


def aoi_over(path: Path, grid: Any, size: int = AOI_SIZE) -> Path:
    import json

    from rasterio.warp import transform_geom

    T = grid.transform
    c = r = (grid.width - size) // 2
    x0, y0 = T.c + c * 10.0, T.f - r * 10.0
    ring = [[x0, y0], [x0 + size * 10, y0], [x0 + size * 10, y0 - size * 10], [x0, y0 - size * 10], [x0, y0]]
    g = transform_geom(grid.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Pit"}, "geometry": g}]}))
    return path


def make_grd_world(realdata: Path, root: Path, server: StacServer, *, old_ipf: bool = False,
                   name: str = "grd", data_window: Window = DATA_WINDOW) -> GrdWorld:
    """Generate the product, serve it (https and s3, requester pays) and build the items."""
    made = make_product(realdata, root / f"{name}_made", data_window, field=speckled_sigma0, old_ipf=old_ipf,
                        border=(4, 12) if old_ipf else None)
    safe = made.path
    stem = next((safe / "annotation").glob("s1*.xml")).stem
    real = next(iter((realdata / "s1_grd_safe_xml").glob("*.SAFE")))
    layout = {
        "manifest.safe": safe / "manifest.safe",
        "annotation/iw-vv.xml": safe / "annotation" / f"{stem}.xml",
        "annotation/rfi/rfi-iw-vv.xml": real / "annotation" / "rfi" / f"rfi-{stem}.xml",
        "annotation/calibration/calibration-iw-vv.xml": safe / "annotation/calibration" / f"calibration-{stem}.xml",
        "annotation/calibration/noise-iw-vv.xml": safe / "annotation/calibration" / f"noise-{stem}.xml",
    }
    prefix = f"GRD/2021/12/23/IW/DV/{SAFE_NAME}_{name}"
    https_root = server.root / "s1grd" / prefix
    served: dict[str, Path] = {}
    for rel, src in layout.items():
        (https_root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, https_root / rel)
        served[rel] = https_root / rel
    _serve_measurement(safe / "measurement" / f"{stem}.tiff", https_root / "measurement/iw-vv.tiff", made.geo,
                       data_window)
    served["measurement/iw-vv.tiff"] = https_root / "measurement/iw-vv.tiff"
    # the bucket is the same folder, addressed as s3://sentinel-s1-l1c/<prefix>/...
    server.buckets[BUCKET] = server.root / "s1grd"
    server.requester_pays.add(BUCKET)
    from coalmine.runtime.preprocess.s1grd.annotation import parse_annotation

    ann_pass = parse_annotation(layout["annotation/iw-vv.xml"].read_bytes(), "x").pass_direction
    pc, es = grd_items(server.file_url(f"s1grd/{prefix}"), f"s3://{BUCKET}/{prefix}", made.geo, ann_pass)
    s2_item, grid = _s2_tile(root / name, server, made.geo)
    return GrdWorld(product=safe, geo=made.geo, served=served, pc_item=pc, es_item=es, s2_item=s2_item,
                    s2_grid=grid, aoi=aoi_over(root / f"{name}_aoi.geojson", grid), old_ipf=old_ipf)
