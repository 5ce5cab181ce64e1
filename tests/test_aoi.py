"""AOIs from vector files written by GDAL itself: formats, CRSs, odd paths, curves, repairs.

Expectations are independent of the reader: areas are the geodesic areas of the polygons as
given (pyproj), or pixel counts of a known mask; the files are written by GDAL (pyogrio).
"""

from __future__ import annotations

import json
import logging
import math
import struct

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from coalmine.runtime.aoi import read_aois
from coalmine.runtime.areas import geodesic_area_ha, mask_areas_ha
from coalmine.runtime.errors import InputError
from factories import box, write_gpkg, write_gpkg_blobs, write_vector
from rasterio.crs import CRS
from rasterio.warp import transform_geom

UTM = CRS.from_epsg(32750)
TR = Affine(10, 0, 300000, 0, -10, 9700000)

def _lonlat_box(c0, r0, c1, r1):
    """A lon/lat polygon around mask pixels cols c0..c1, rows r0..r1 (densified edges)."""
    (x0, y1), (x1, y0) = TR * (c0, r0), TR * (c1, r1)
    return transform_geom(UTM, "EPSG:4326", box(x0, y0, x1, y1, n=40))


#: Two AOIs in lon/lat, over the mined band of the 600 x 600 px mask below.
WEST = _lonlat_box(20, 60, 250, 300)
EAST = _lonlat_box(320, 300, 580, 560)


@pytest.fixture(scope="module")
def mask(tmp_path_factory):
    """A 600 x 600 px UTM 50S mask: a mined diagonal band and some nodata."""
    rows, cols = np.mgrid[0:600, 0:600]
    m = (np.abs(rows - cols) < 150).astype(np.uint8)
    m[:40, :] = 255
    p = tmp_path_factory.mktemp("mask") / "m_mask.tif"
    with rasterio.open(p, "w", driver="GTiff", width=600, height=600, count=1, dtype="uint8", crs=UTM,
                       transform=TR, nodata=255) as ds:
        ds.write(m, 1)
    return p


def _features():
    return [({"name": "West"}, WEST), ({"name": "East"}, EAST)]


def _geojson(path, features, crs_name=None):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": props, "geometry": geom} for props, geom in features]}
    if crs_name:
        fc["crs"] = {"type": "name", "properties": {"name": crs_name}}
    path.write_text(json.dumps(fc))
    return path


def test_geopackage_written_by_gdal_gives_the_hectares_of_the_same_geojson(tmp_path, mask):
    gj = _geojson(tmp_path / "aois.geojson", _features())
    gp = write_gpkg(tmp_path / "aois.gpkg", _features(), epsg=4326)
    a_gj, a_gp = mask_areas_ha(mask, read_aois(gj)), mask_areas_ha(mask, read_aois(gp))
    assert set(a_gj["aois"]) == {"West", "East"} and a_gj["aois"]["West"] > 0 and a_gj["aois"]["East"] > 0
    assert a_gp["aois"] == pytest.approx(a_gj["aois"], rel=1e-12)
    assert a_gp["aoi_pixels"] == a_gj["aoi_pixels"]


@pytest.mark.parametrize("suffix,crs", [
    (".shp", "EPSG:32750"), (".fgb", "EPSG:32750"), (".gpkg", "EPSG:3857"), (".geojson", "EPSG:4326"),
    (".kml", "EPSG:4326"),
])
def test_formats_and_crs_give_the_geodesic_area(tmp_path, suffix, crs):
    geoms = [transform_geom("EPSG:4326", crs, g) for _, g in _features()]
    p = write_vector(tmp_path / f"aois{suffix}", [({"name": n}, g) for n, g in zip(("West", "East"), geoms, strict=True)],
                     crs=crs, driver="KML" if suffix == ".kml" else None)
    aois = {a.name: a for a in read_aois(p)}  # FlatGeobuf stores features in spatial-index order
    assert sorted(aois) == ["East", "West"]
    for name, g4326 in (("West", WEST), ("East", EAST)):
        assert aois[name].crs == CRS.from_user_input(crs)
        back = transform_geom(aois[name].crs, "EPSG:4326", aois[name].geometry)
        assert geodesic_area_ha(back) == pytest.approx(geodesic_area_ha(g4326), rel=1e-6)


def test_geopackage_path_with_hash_question_mark_and_percent(tmp_path, mask):
    folder = tmp_path / "aoi dir"
    folder.mkdir()
    p = write_gpkg(folder / "mines #2 ?v=1 100%.gpkg", _features(), epsg=4326)
    before = sorted(x.name for x in folder.iterdir())
    aois = read_aois(p)
    assert [a.name for a in aois] == ["West", "East"]
    assert sorted(x.name for x in folder.iterdir()) == before  # no stray file (e.g. an empty "mines #2 ")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["aoi dir"]


def _circular_polygon_wkb(cx: float, cy: float, r: float) -> bytes:
    """WKB CurvePolygon (type 10) whose ring is one full CircularString (type 8)."""
    pts = [(cx - r, cy), (cx + r, cy), (cx - r, cy)]
    ring = struct.pack("<BII", 1, 8, len(pts)) + b"".join(struct.pack("<dd", *q) for q in pts)
    return struct.pack("<BII", 1, 10, 1) + ring


def test_curved_geopackage_polygon_is_read_as_its_linear_approximation(tmp_path):
    r = 500.0
    p = write_gpkg_blobs(tmp_path / "curve.gpkg", [_circular_polygon_wkb(302000, 9695000, r)], epsg=32750,
                         geometry_type="CURVEPOLYGON")
    (a,) = read_aois(p)
    assert a.geometry["type"] == "Polygon"
    area = shapely.geometry.shape(a.geometry).area
    assert area == pytest.approx(math.pi * r * r, rel=2e-3)


def test_geopackage_extended_geometry_flag(tmp_path):
    # Flag bit 5 (0x20) marks an extended geometry type; a reader must still parse the WKB after it.
    sq = shapely.to_wkb(shapely.box(300000, 9690000, 300100, 9690100))
    p = write_gpkg_blobs(tmp_path / "ext.gpkg", [sq], epsg=32750, geometry_type="POLYGON", flags=0b100001)
    (a,) = read_aois(p)
    assert shapely.geometry.shape(a.geometry).area == pytest.approx(1e4)


def test_invalid_bow_tie_is_repaired_and_reported(tmp_path, mask, caplog):
    # A bow tie (self-intersecting ring) around two triangles: make_valid keeps both.
    x0, y0, x1, y1 = shapely.bounds(shapely.geometry.shape(WEST))
    bow = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y1], [x1, y0], [x0, y1], [x0, y0]]]}
    p = _geojson(tmp_path / "bow.geojson", [({"name": "bow"}, bow)])
    with caplog.at_level(logging.WARNING, logger="coalmine.runtime.aoi"):
        (a,) = read_aois(p)
    assert "AOI 'bow' (feature 1 of" in a.note and "Self-intersection" in a.note and "shapely.make_valid" in a.note
    assert a.note in caplog.text
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2  # the crossing point of the two diagonals
    left = {"type": "Polygon", "coordinates": [[[x0, y0], [xm, ym], [x0, y1], [x0, y0]]]}
    right = {"type": "Polygon", "coordinates": [[[x1, y1], [xm, ym], [x1, y0], [x1, y1]]]}
    assert geodesic_area_ha(a.geometry) == pytest.approx(geodesic_area_ha(left) + geodesic_area_ha(right), rel=1e-9)
    res = mask_areas_ha(mask, [a])
    assert any("repaired with shapely.make_valid" in w for w in res["warnings"])


def test_polygon_without_area_is_refused(tmp_path):
    flat = {"type": "Polygon", "coordinates": [[[115.2, -2.7], [115.21, -2.7], [115.22, -2.7], [115.2, -2.7]]]}
    p = _geojson(tmp_path / "flat.geojson", [({"name": "flat"}, flat)])
    with pytest.raises(InputError, match=r"AOI 'flat' \(feature 1 of .*\) is not a valid polygon .* and encloses no area"):
        read_aois(p)


def test_shapefile_without_prj_is_refused(tmp_path):
    p = write_vector(tmp_path / "a.shp", [({"name": "x"}, box(3e5, 9.69e6, 3.01e5, 9.691e6))], crs="EPSG:32750")
    p.with_suffix(".prj").unlink()
    with pytest.raises(InputError, match=r"a.shp has no coordinate reference system \(a Shapefile without its .prj\?\)"):
        read_aois(p)


def test_layer_choice_and_unnamed_features(tmp_path):
    p = tmp_path / "two.gpkg"
    write_vector(p, [({"kab": "Tapin"}, WEST)], driver="GPKG", layer="first")
    write_vector(p, [({}, WEST), ({}, EAST)], driver="GPKG", layer="second")
    assert [a.name for a in read_aois(p)] == ["1"]  # the first layer
    assert [a.name for a in read_aois(p, name_field="kab")] == ["Tapin"]
    assert [a.name for a in read_aois(p, layer="second")] == ["1", "2"]  # the GeoPackage fid
    gj = _geojson(tmp_path / "noid.geojson", [({}, WEST), ({}, EAST)])
    assert [a.name for a in read_aois(gj)] == ["aoi_1", "aoi_2"]  # no id in the file


# -- vector output ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 3])
def test_feature_collection_stream_is_json_whatever_the_name(tmp_path, n):
    from coalmine.runtime.outputs import write_feature_collection

    name = 'odd "[0]" name\n\u00e9'
    feats = [{"type": "Feature", "id": i, "properties": {"area_ha": i / 3}, "geometry": WEST} for i in range(n)]
    seen = []

    def one_at_a_time():
        for f in feats:
            seen.append(f["id"])
            yield f

    p = tmp_path / "m.geojson"
    with open(p, "w", encoding="utf-8") as f:
        write_feature_collection(f, one_at_a_time(), name=name)
    doc = json.loads(p.read_text(encoding="utf-8"))
    assert doc == {"type": "FeatureCollection", "name": name, "features": json.loads(json.dumps(feats))}
    assert seen == list(range(n))
    back = read_aois(p) if n else []
    assert len(back) == n  # GDAL reads it back
