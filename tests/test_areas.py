"""Pixel and polygon areas in hectares, AOI reading and mined hectares per AOI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.aoi import Aoi, read_aois
from coalmine.runtime.areas import geodesic_area_ha, mask_areas_ha, pixel_areas_ha
from coalmine.runtime.errors import (
    CRSError,
    InputError,
    InputNotFoundError,
    RasterError,
    UsageError,
)
from factories import box, write_gpkg
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.warp import transform_geom

GEOD = Geod(ellps="WGS84")


def geod_ha(geom4326):
    """Independent reference: pyproj geodesic area of a (densified) lon/lat polygon."""
    ring = geom4326["coordinates"][0]
    a, _ = GEOD.polygon_area_perimeter([p[0] for p in ring], [p[1] for p in ring])
    return abs(a) / 1e4


def write_mask(path, mask, crs, transform):
    with rasterio.open(path, "w", driver="GTiff", dtype="uint8", count=1, height=mask.shape[0],
                       width=mask.shape[1], crs=crs, transform=transform, nodata=255) as ds:
        ds.write(mask, 1)
    return path


def test_projected_pixel_area_is_constant():
    a = pixel_areas_ha(CRS.from_epsg(32750), Affine(10, 0, 300000, 0, -10, 9700000), 5, 7)
    assert a.shape == (5, 1)
    np.testing.assert_array_equal(a, 0.01)
    # A CRS in US survey feet: the linear unit is converted, not assumed to be metres.
    ft = pixel_areas_ha(CRS.from_epsg(2263), Affine(10, 0, 0, 0, -10, 0), 1, 1)
    assert ft[0, 0] == pytest.approx(100 * 0.3048006096**2 / 1e4, rel=1e-6)


@pytest.mark.parametrize("lat0", [-2.5, 45.0, 70.0])
def test_geographic_cell_areas_match_geodesic_polygons(lat0):
    res = 0.01
    tr = Affine(res, 0, 115.0, 0, -res, lat0)
    a = pixel_areas_ha("EPSG:4326", tr, 50, 10, window=rasterio.windows.Window(0, 10, 10, 40))
    assert a.shape == (40, 1)
    for k in (0, 39):
        top = lat0 - res * (10 + k)
        cell = box(115.0, top - res, 115.0 + res, top, n=200)  # dense edges follow the parallels
        assert a[k, 0] == pytest.approx(geod_ha(cell), rel=1e-4)
    # Cells shrink towards the pole: row 0 is nearer the pole in the north, farther in the south.
    assert (a[0, 0] < a[-1, 0]) if lat0 > 0 else (a[0, 0] > a[-1, 0])


def test_rotated_geographic_grid_refused():
    msg = r"^rotated geographic grids are not supported for areas; warp the raster to north-up$"
    for tr in (Affine(0.01, 0.001, 0, 0.001, -0.01, 0), Affine(0.01, 0.001, 0, 0, -0.01, 0),
               Affine(0.01, 0, 0, 0.001, -0.01, 0)):  # rotated, or sheared along one axis only
        with pytest.raises(CRSError, match=msg):
            pixel_areas_ha("EPSG:4326", tr, 2, 2)


def test_pixel_areas_need_a_crs():
    msg = r"^the raster has no CRS, so pixel areas are unknown; assign one with gdal_edit\.py -a_srs$"
    for crs in (None, ""):
        with pytest.raises(CRSError, match=msg):
            pixel_areas_ha(crs, Affine(10, 0, 0, 0, -10, 0), 1, 1)


def test_local_crs_pixel_areas_in_its_own_unit():
    # a site grid in metres: 10 m x 10 m = 0.01 ha; in US survey feet: (10 x 0.3048006096 m)² = 0.000929 ha
    metre = 'LOCAL_CS["site",UNIT["metre",1]]'
    foot = 'LOCAL_CS["site",UNIT["US survey foot",0.304800609601219]]'
    assert pixel_areas_ha(metre, Affine(10, 0, 0, 0, -10, 0), 2, 2)[1, 0] == pytest.approx(0.01, rel=1e-12)
    assert pixel_areas_ha(foot, Affine(10, 0, 0, 0, -10, 0), 1, 1)[0, 0] == pytest.approx(
        100 * 0.3048006096**2 / 1e4, rel=1e-9)


def test_geodesic_area_with_hole():
    outer = box(115.0, -3.0, 115.1, -2.9, n=50)
    hole = box(115.02, -2.98, 115.04, -2.96, n=50)
    poly = {"type": "Polygon", "coordinates": [outer["coordinates"][0], hole["coordinates"][0][::-1]]}
    assert geodesic_area_ha(poly) == pytest.approx(geod_ha(outer) - geod_ha(hole), rel=1e-9)
    multi = {"type": "MultiPolygon", "coordinates": [outer["coordinates"], hole["coordinates"]]}
    assert geodesic_area_ha(multi) == pytest.approx(geod_ha(outer) + geod_ha(hole), rel=1e-9)


@pytest.mark.parametrize("grid", ["utm", "geographic"])
def test_mask_areas_against_geodesic_aoi_area(tmp_path, grid):
    # All-mine mask; an AOI inside it: mined ha in the AOI must equal its geodesic area.
    if grid == "utm":
        crs, tr, shape = CRS.from_epsg(32750), Affine(10, 0, 300000, 0, -10, 9700000), (400, 500)
    else:
        crs, tr, shape = CRS.from_epsg(4326), Affine(1e-4, 0, 115.0, 0, -1e-4, -2.70), (400, 500)
    mask = np.ones(shape, np.uint8)
    mask[:, :7] = 255  # some nodata
    p = write_mask(tmp_path / "m.tif", mask, crs, tr)
    x0, y1 = tr @ (40, 30)
    x1, y0 = tr @ (460, 370)
    aoi_native = box(x0, y0, x1, y1, n=100)
    aoi_4326 = transform_geom(crs, "EPSG:4326", aoi_native) if grid == "utm" else aoi_native
    aoi_3857 = transform_geom("EPSG:4326", "EPSG:3857", aoi_4326)
    res = mask_areas_ha(p, [Aoi("a", aoi_4326, CRS.from_epsg(4326)), Aoi("b", aoi_3857, CRS.from_epsg(3857))])
    ref = geod_ha(aoi_4326)
    assert res["aois"]["a"] == pytest.approx(ref, rel=0.005)
    assert res["aois"]["b"] == pytest.approx(ref, rel=0.005)  # any CRS, reprojected
    # Total: mine pixels x pixel area, and against the scene footprint's geodesic area.
    px = pixel_areas_ha(crs, tr, *shape)
    assert res["pixels"]["mine"] == (mask == 1).sum()
    assert res["total"] == pytest.approx(float(((mask == 1).sum(axis=1) * px[:, 0]).sum()), rel=1e-12)
    fx0, fy1 = tr @ (7, 0)
    fx1, fy0 = tr @ shape[::-1]
    foot = box(fx0, fy0, fx1, fy1, n=200)
    foot = transform_geom(crs, "EPSG:4326", foot) if grid == "utm" else foot
    assert res["total"] == pytest.approx(geod_ha(foot), rel=0.005)
    assert res["pixels"]["nodata"] == 7 * shape[0]


def test_aoi_outside_scene_has_no_data_with_warning(tmp_path, caplog):
    tr = Affine(10, 0, 300000, 0, -10, 9700000)
    p = write_mask(tmp_path / "m.tif", np.ones((50, 50), np.uint8), CRS.from_epsg(32750), tr)
    far = Aoi("far", box(10.0, 50.0, 10.1, 50.1), CRS.from_epsg(4326))
    res = mask_areas_ha(p, [far])
    assert res["aois"] == {"far": None} and res["aoi_valid_share"] == {"far": 0.0}  # no data, never 0 ha
    assert any("AOI 'far' does not overlap the scene" in w for w in res["warnings"])
    assert "does not overlap" in caplog.text


def test_an_aoi_much_larger_than_the_scene_counts_its_outside_as_no_data(tmp_path):
    # A 100 km square around an 800 m x 1 km scene: the scene's 8000 pixels are the only
    # observed part of the AOI's 10^8 pixels of 100 m2; its hectares are those of the scene
    tr = Affine(10, 0, 300000, 0, -10, 9700000)
    mask = np.zeros((100, 80), np.uint8)
    mask[10:30, 5:25] = 1  # 400 mine pixels = 4 ha
    p = write_mask(tmp_path / "m.tif", mask, CRS.from_epsg(32750), tr)
    cx, cy = 300000 + 400, 9700000 - 500
    big = Aoi("province", box(cx - 50000, cy - 50000, cx + 50000, cy + 50000), CRS.from_epsg(32750))
    res = mask_areas_ha(p, [big])
    assert res["aois"]["province"] == pytest.approx(4.0)
    assert res["aoi_valid_share"]["province"] == pytest.approx(8000 / 1e8, rel=1e-6)
    # and half of an AOI out of the scene is half its pixels, with the outside part by its area
    half = Aoi("half", box(300000 + 400, 9700000 - 1000, 300000 + 1200, 9700000), CRS.from_epsg(32750))
    assert mask_areas_ha(p, [half])["aoi_valid_share"]["half"] == pytest.approx(0.5)


def test_two_aois_of_one_name_are_refused_not_renamed(tmp_path):
    # "A", "A", "A#2": renaming the second "A" to "A#2" would merge it with the third area's row
    tr = Affine(10, 0, 300000, 0, -10, 9700000)
    p = write_mask(tmp_path / "m.tif", np.ones((50, 50), np.uint8), CRS.from_epsg(32750), tr)
    sq = box(300100, 9699600, 300300, 9699800)
    aois = [Aoi(n, sq, CRS.from_epsg(32750)) for n in ("A", "A", "A#2")]
    with pytest.raises(InputError, match="two areas of interest are named 'A'; every area needs its own name"):
        mask_areas_ha(p, aois)
    res = mask_areas_ha(p, [Aoi(n, sq, CRS.from_epsg(32750)) for n in ("A", "A#2")])
    assert res["aois"] == {"A": pytest.approx(4.0), "A#2": pytest.approx(4.0)}


def test_strips_give_the_same_result(tmp_path):
    rng = np.random.default_rng(3)
    m = (rng.random((333, 101)) > 0.6).astype(np.uint8)
    p = write_mask(tmp_path / "m.tif", m, "EPSG:4326", Affine(1e-3, 0, 100, 0, -1e-3, 10))
    a = Aoi("x", box(100.01, 9.8, 100.09, 9.95, n=20), CRS.from_epsg(4326))
    one = mask_areas_ha(p, [a], strip_rows=1000)
    many = mask_areas_ha(p, [a], strip_rows=7)
    assert one["total"] == pytest.approx(many["total"], rel=1e-12)
    assert one["aois"]["x"] == pytest.approx(many["aois"]["x"], rel=1e-12)
    assert one["aoi_pixels"] == many["aoi_pixels"] and one["aoi_pixels"]["x"] > 0
    # the counts add up over 48 strips (333 rows / 7), as in one read
    n_mine = int((m == 1).sum())
    for res in (one, many):
        assert res["pixels"] == {"mine": n_mine, "valid": 333 * 101, "nodata": 0}
        assert res["valid_share"] == 1.0


def test_pixel_counts_and_shares_over_strips_by_hand(tmp_path):
    # 5 rows x 4 columns, read 2 rows at a time: 6 mine, 11 not mine, 3 nodata
    m = np.array([[1, 0, 255, 1],
                  [0, 0, 0, 0],
                  [1, 1, 0, 255],
                  [0, 0, 0, 0],
                  [1, 255, 0, 1]], np.uint8)
    p = write_mask(tmp_path / "m.tif", m, CRS.from_epsg(32750), Affine(10, 0, 300000, 0, -10, 9700000))
    res = mask_areas_ha(p, strip_rows=2)
    assert res["pixels"] == {"mine": 6, "valid": 17, "nodata": 3}
    assert res["total"] == pytest.approx(0.06, rel=1e-12)  # 6 pixels of 100 m²
    assert res["valid_share"] == pytest.approx(17 / 20, rel=1e-12)
    assert res["warnings"] == [] and res["aois"] == {}


def test_sphere_cell_area_by_hand():
    # On a sphere of radius R the band between two parallels has area R² Δλ (sin φ2 - sin φ1):
    # 6371000² x (π/180) x sin 1° = 1,236,368.399 ha for the cell 0..1° N, 0..1° E.
    sphere = "+proj=longlat +R=6371000 +no_defs"
    a = pixel_areas_ha(sphere, Affine(1, 0, 0, 0, -1, 1), 1, 1)
    assert a[0, 0] == pytest.approx(1_236_368.399, rel=1e-9)
    # 59..60° N: 6371000² x (π/180) x (sin 60° - sin 59°) = 627,528.288 ha
    a = pixel_areas_ha(sphere, Affine(1, 0, 0, 0, -1, 60), 1, 1)
    assert a[0, 0] == pytest.approx(627_528.288, rel=1e-9)


def test_ellipsoid_parameters_and_a_crs_without_one():
    from coalmine.runtime.areas import _ellipsoid

    a, e2 = _ellipsoid("EPSG:4326")  # WGS 84: a = 6378137 m, f = 1/298.257223563, e² = f (2 - f)
    assert a == 6378137.0 and e2 == pytest.approx(0.00669437999014, rel=1e-10)
    assert _ellipsoid(CRS.from_epsg(4326)) == (a, e2)
    assert _ellipsoid("+proj=longlat +R=6371000 +no_defs") == (6371000.0, 0.0)
    local = 'LOCAL_CS["site grid",UNIT["metre",1]]'
    with pytest.raises(CRSError, match=r'CRS LOCAL_CS\["site grid".* has no ellipsoid; cannot compute geodesic areas'):
        _ellipsoid(local)


def test_polygon_rings_by_hand():
    # A right triangle of 0.01° legs at the equator: half of a 1113.19 m x 1105.74 m cell, 61.545 ha
    tri = {"type": "Polygon", "coordinates": [[[0, 0], [0.01, 0], [0, 0.01], [0, 0]]]}
    assert geodesic_area_ha(tri) == pytest.approx(61.545, rel=1e-4)
    # Holes: a degenerate one (3 points, no area) is skipped and the rings after it still count:
    # 1113.195 m x 1105.74 m = 123.0914 ha less a 0.002° hole (222.639 m x 221.148 m = 4.9237 ha)
    outer = box(0, 0, 0.01, 0.01)["coordinates"][0]
    hole = box(0.004, 0.004, 0.006, 0.006)["coordinates"][0][::-1]
    poly = {"type": "Polygon", "coordinates": [outer, [[0.001, 0.001], [0.002, 0.001], [0.001, 0.001]], hole]}
    assert geodesic_area_ha(poly) == pytest.approx(123.0914 - 4.9237, rel=2e-5)
    # a 0.5 m x 0.5 m square keeps its 0.25 m² (it is not rounded up or away)
    dx, dy = 0.5 / 111319.49, 0.5 / 110574.27  # m per degree of longitude / latitude at the equator
    tiny = box(0, 0, dx, dy)
    assert geodesic_area_ha(tiny) == pytest.approx(0.25 / 1e4, rel=1e-4)
    # a hole larger than its polygon leaves nothing, never a negative area
    big_hole = {"type": "Polygon", "coordinates": [hole, outer[::-1]]}
    assert geodesic_area_ha(big_hole) == 0.0
    with pytest.raises(ValueError, match="geodesic_area_ha needs a Polygon or MultiPolygon, got LineString"):
        geodesic_area_ha({"type": "LineString", "coordinates": [[0, 0], [1, 1]]})


def test_unreadable_mask_is_refused(tmp_path):
    (tmp_path / "m.tif").write_text("not a raster")
    with pytest.raises(RasterError, match=r"cannot read mask .*m\.tif \("):
        mask_areas_ha(tmp_path / "m.tif")


# -- reading AOIs -----------------------------------------------------------------------------
def test_read_geojson_feature_collection_names_and_crs(tmp_path):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Tapin", "district": "T"}, "geometry": box(115, -3, 115.1, -2.9)},
        {"type": "Feature", "id": 7, "properties": {}, "geometry": {
            "type": "GeometryCollection", "geometries": [box(115, -3, 115.1, -2.9), box(116, -3, 116.1, -2.9)]}},
    ]}
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps(fc))
    aois = read_aois(p)
    assert [a.name for a in aois] == ["Tapin", "7"]
    assert aois[0].crs == CRS.from_epsg(4326)
    assert aois[1].geometry["type"] == "MultiPolygon" and len(aois[1].geometry["coordinates"]) == 2
    with pytest.raises(UsageError, match="--aoi-name-field 'district' is not a property of feature 2"):
        read_aois(p, name_field="district")
    legacy = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32750"}},
              "features": [{"type": "Feature", "properties": {"name": "u"}, "geometry": box(3e5, 9.69e6, 3.1e5, 9.7e6)}]}
    p.write_text(json.dumps(legacy))
    assert read_aois(p)[0].crs == CRS.from_epsg(32750)


def test_read_geopackage(tmp_path):
    g1 = box(300000, 9690000, 301000, 9691000)
    g2 = {"type": "MultiPolygon", "coordinates": [box(302000, 9690000, 303000, 9691000)["coordinates"]]}
    p = write_gpkg(tmp_path / "a.gpkg", [({"name": "pit A", "kab": "Tapin"}, g1), ({"name": "pit B", "kab": "Banjar"}, g2)],
                   epsg=32750)
    aois = read_aois(p)
    assert [a.name for a in aois] == ["pit A", "pit B"]
    assert aois[0].crs == CRS.from_epsg(32750)
    assert aois[0].geometry["coordinates"] == [[list(map(float, c)) for c in g1["coordinates"][0]]]
    assert aois[1].geometry["type"] == "MultiPolygon"
    assert [a.name for a in read_aois(p, name_field="kab")] == ["Tapin", "Banjar"]
    with pytest.raises(UsageError, match=r"layer 'nope' is not in AOI file .*a.gpkg \(it has: aois\)"):
        read_aois(p, layer="nope")


def test_point_layer_refused_naming_the_feature(realdata):
    pts = realdata / "tapin_mines" / "tapin_gcmt_points.geojson"
    with pytest.raises(InputError, match="feature 1 of .* is a Point; an AOI must be a Polygon"):
        read_aois(pts)


NOT_VECTOR = "is not a vector file GDAL can read \\(not recognized as being in a supported file format\\); expected GeoJSON"


@pytest.mark.parametrize("name,content,exc,msg", [
    ("missing.geojson", None, InputNotFoundError, "AOI file .*missing.geojson does not exist; pass --aoi a vector file"),
    ("bad.geojson", "{not json", InputError, NOT_VECTOR),
    ("empty.geojson", '{"type": "FeatureCollection", "features": []}', InputError, "holds no polygon features"),
    ("line.geojson", json.dumps({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}), InputError,
     "is a LineString; an AOI must be a Polygon or MultiPolygon"),
    ("a.shp", "x", InputError, NOT_VECTOR),
    ("fake.gpkg", "this is not sqlite", InputError, NOT_VECTOR),
    ("utm.geojson", json.dumps({"type": "Polygon", "coordinates": [[[3e5, 9.69e6], [3.1e5, 9.69e6], [3.1e5, 9.7e6], [3e5, 9.69e6]]]}),
     InputError, r"coordinates such as \(310000, 9.7e\+06\) are not longitude/latitude, but the file's CRS is EPSG:4326"),
])
def test_bad_aoi_files_refused(tmp_path, name, content, exc, msg):
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(exc, match=msg):
        read_aois(p)


@pytest.mark.parametrize("name,cols,rows,inside,valid", [
    ("top", (2, 5), (-3, 2), 15, 6),  # 3 columns x 5 rows of centres, the 3 rows above the raster nodata
    ("left", (-4, 1), (3, 5), 10, 2),  # 5 columns x 2 rows, 4 columns left of the raster
    ("right column", (9, 12), (4, 6), 6, 2),  # only the last column (9) inside, 10 and 11 beyond
    ("bottom row", (4, 6), (9, 11), 4, 2),  # only the last row (9) inside
    ("corner", (-1, 1), (-1, 1), 4, 1),  # only pixel (0, 0) inside
])
def test_aoi_over_one_edge_of_the_raster_by_hand(tmp_path, name, cols, rows, inside, valid):
    # 10 x 10 all-mine mask of 10 m pixels; an AOI (in pixel units below, in the mask's CRS) whose
    # pixel centres partly lie off the raster: those count as nodata, the rest as mined hectares.
    tr = Affine(10, 0, 300000, 0, -10, 9700000)
    p = write_mask(tmp_path / "m.tif", np.ones((10, 10), np.uint8), CRS.from_epsg(32750), tr)
    (x0, y1), (x1, y0) = tr * (cols[0], rows[0]), tr * (cols[1], rows[1])
    res = mask_areas_ha(p, [Aoi(name, box(x0, y0, x1, y1), CRS.from_epsg(32750))], strip_rows=1)
    assert res["aois"][name] == pytest.approx(valid * 0.01, rel=1e-12)  # 100 m² = 0.01 ha a pixel
    assert res["aoi_pixels"][name] == valid
    assert res["aoi_valid_share"][name] == pytest.approx(valid / inside, rel=1e-12)
    assert res["warnings"] == []


def test_aoi_between_pixel_centres_has_no_data_with_a_warning(tmp_path):
    # a 3 m x 3 m AOI inside one 10 m pixel, away from its centre: no pixel is in it, so no data
    tr = Affine(10, 0, 300000, 0, -10, 9700000)
    p = write_mask(tmp_path / "m.tif", np.ones((10, 10), np.uint8), CRS.from_epsg(32750), tr)
    (x0, y1), (x1, y0) = tr * (3.1, 3.1), tr * (3.4, 3.4)
    res = mask_areas_ha(p, [Aoi("tiny", box(x0, y0, x1, y1), CRS.from_epsg(32750))])
    assert res["aois"] == {"tiny": None} and res["aoi_pixels"] == {"tiny": 0}
    assert res["aoi_valid_share"] == {"tiny": 0.0}
    assert res["warnings"] == [f"AOI 'tiny' lies within the bounds of the scene {p} but covers no pixel centre"]
    assert res["total"] == pytest.approx(1.0, rel=1e-12)  # 100 pixels of 0.01 ha
