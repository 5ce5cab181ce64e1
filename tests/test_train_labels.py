"""Labels on the scene grid: rasters on other grids (nearest), polygons (rasterised), refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.errors import CRSError, InputError, InputNotFoundError
from coalmine.train.labels import labels_on_grid
from coalmine.train.patches import LABEL_NODATA, SceneGeo
from rasterio.warp import transform_geom

CRS = "EPSG:32750"
X0, Y0 = 300000.0, 9680040.0
GEO = SceneGeo(CRS, Affine(10, 0, X0, 0, -10, Y0), 64, 64)


def _raster(path, arr, transform, crs=CRS, nodata=None):
    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[0], width=arr.shape[1], count=1,
                       dtype=arr.dtype.name, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(arr, 1)
    return path


def test_coarser_raster_is_resampled_nearest(tmp_path) -> None:
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 2, (40, 40)).astype(np.uint8)
    coarse[0, :] = 7  # the file's nodata value
    # 20 m grid starting 40 m west/north of the scene: covers it with a margin
    p = _raster(tmp_path / "l.tif", coarse, Affine(20, 0, X0 - 40, 0, -20, Y0 + 40), nodata=7)
    lab = labels_on_grid(p, GEO)
    assert lab.shape == (64, 64) and lab.dtype == np.uint8
    # scene pixel (r, c) centre -> coarse pixel ((r*10+5+40)//20, ...)
    for r, c in [(0, 0), (5, 17), (33, 2), (63, 63)]:
        want = coarse[(r * 10 + 5 + 40) // 20, (c * 10 + 5 + 40) // 20]
        assert lab[r, c] == (LABEL_NODATA if want == 7 else want)
    assert set(np.unique(lab)) <= {0, 1}  # row 0 of the coarse grid lies outside the scene


def test_partial_cover_leaves_nodata(tmp_path) -> None:
    p = _raster(tmp_path / "l.tif", np.ones((32, 32), np.uint8), GEO.transform)
    lab = labels_on_grid(p, GEO)
    assert (lab[:32, :32] == 1).all() and (lab[32:, :] == LABEL_NODATA).all()


def test_polygons_in_wgs84_are_rasterised_on_the_scene_grid(tmp_path) -> None:
    # a mine square over scene pixels rows 10..19, cols 20..39 (UTM), stored in EPSG:4326
    x0, x1 = X0 + 200, X0 + 400
    y1, y0 = Y0 - 100, Y0 - 200
    utm = {"type": "Polygon", "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]}
    geom = transform_geom(CRS, "EPSG:4326", utm, precision=-1)
    p = tmp_path / "mines.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"cls": 1}, "geometry": geom},
        {"type": "Feature", "properties": {"cls": 1}, "geometry": {"type": "Point", "coordinates": [115, -3]}},
    ]}))
    lab = labels_on_grid(p, GEO)
    assert (lab[11:19, 21:39] == 1).all()
    assert lab[:9].max() == 0 and lab[21:].max() == 0 and lab[:, :19].max() == 0
    assert abs(int(lab.sum()) - 200) <= 40  # 10 x 20 px, up to a pixel row/col at the edges
    assert labels_on_grid(p, GEO, label_field="cls").sum() == lab.sum()


def test_label_field_zero_marks_background(tmp_path) -> None:
    sq = lambda a, b: {"type": "Polygon", "coordinates": [[(a, b), (a + 300, b), (a + 300, b - 300), (a, b - 300), (a, b)]]}  # noqa: E731
    p = tmp_path / "m.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": CRS}},
                             "features": [{"type": "Feature", "properties": {"k": 1}, "geometry": sq(X0, Y0)},
                                          {"type": "Feature", "properties": {"k": 0}, "geometry": sq(X0 + 100, Y0 - 100)}]}))
    lab = labels_on_grid(p, GEO, label_field="k")
    assert lab[2, 2] == 1 and lab[15, 15] == 1 and lab[20, 20] == 1  # mine wins where polygons overlap
    bad = tmp_path / "bad.geojson"
    bad.write_text(p.read_text().replace('"k": 0', '"k": 5'))
    with pytest.raises(InputError, match="attribute 'k' has value 5; expected 0 \\(background\\) or 1 \\(mine\\)"):
        labels_on_grid(bad, GEO, label_field="k")


def test_refusals(tmp_path) -> None:
    with pytest.raises(InputNotFoundError, match="label file .*nope.tif does not exist"):
        labels_on_grid(tmp_path / "nope.tif", GEO)
    far = _raster(tmp_path / "far.tif", np.ones((8, 8), np.uint8), Affine(10, 0, X0 + 1e5, 0, -10, Y0))
    with pytest.raises(InputError, match="labels .*far.tif do not overlap scene s.tif"):
        labels_on_grid(far, GEO, scene_name="s.tif")
    twos = _raster(tmp_path / "twos.tif", np.full((64, 64), 2, np.uint8), GEO.transform)
    with pytest.raises(InputError, match=r"contain values \[2\]; expected 0 = background, 1 = mine"):
        labels_on_grid(twos, GEO)
    nocrs = _raster(tmp_path / "nocrs.tif", np.ones((8, 8), np.uint8), GEO.transform, crs=None)
    with pytest.raises(CRSError, match="has no CRS; assign one"):
        labels_on_grid(nocrs, GEO)
    far_poly = tmp_path / "far.geojson"
    far_poly.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[(10, 50), (11, 50), (11, 51), (10, 50)]]}}))
    with pytest.raises(InputError, match="do not overlap scene"):
        labels_on_grid(far_poly, GEO)


def test_geopackage_polygons_with_label_field(tmp_path) -> None:
    from factories import write_gpkg

    def sq(a, b, n):
        return {"type": "Polygon", "coordinates": [[(a, b), (a + n, b), (a + n, b - n), (a, b - n), (a, b)]]}

    p = write_gpkg(tmp_path / "mines.gpkg", [({"cls": 1}, sq(X0, Y0, 200)), ({"cls": 0}, sq(X0 + 300, Y0, 100))],
                   epsg=32750)
    lab = labels_on_grid(p, GEO)
    assert lab[:20, :20].all() and lab[:10, 30:40].all() and int(lab.sum()) == 400 + 100
    lab = labels_on_grid(p, GEO, label_field="cls")
    assert lab[:20, :20].all() and lab[:10, 30:40].max() == 0 and int(lab.sum()) == 400
