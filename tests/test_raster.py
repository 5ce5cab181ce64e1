"""The grid value and raster helpers (coalmine.runtime.raster), on small hand-made rasters."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from coalmine.runtime.errors import CRSError, InputNotFoundError, OutputError, RasterError
from coalmine.runtime.raster import (
    Grid,
    check_crs,
    check_exists,
    check_window,
    open_on_grid,
    open_raster,
    read_mask,
    thumbnail,
    to_cog,
    write_uint8_cog,
)
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

UTM = CRS.from_epsg(32750)
T = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 9700000.0)


def write(path, data, transform=T, crs=UTM, nodata=None, **kw):
    prof = {"driver": "GTiff", "dtype": data.dtype.name, "count": 1, "height": data.shape[0],
            "width": data.shape[1], "crs": crs, "transform": transform, "nodata": nodata, **kw}
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data, 1)
    return path


def test_grid_geometry_by_hand(tmp_path):
    g = Grid(UTM, T, 40, 30)
    assert g.res == (10.0, 10.0) and g.full == Window(0, 0, 40, 30)
    assert tuple(g.bounds) == (300000.0, 9699700.0, 300400.0, 9700000.0)
    assert g.key() == "EPSG:32750|(10.0, 0.0, 300000.0, 0.0, -10.0, 9700000.0)|40x30"
    assert g.clip(Window(-5, 25, 20, 10)) == Window(0, 25, 15, 5)
    assert g.clip(Window(50, 0, 5, 5)) == Window(50, 0, 0, 5)  # outside: empty
    assert g.expand(Window(2, 3, 10, 10), 4) == Window(0, 0, 16, 17)
    assert g.expand(Window(30, 20, 10, 10), 4) == Window(26, 16, 14, 14)
    assert Grid.of(write(tmp_path / "g.tif", np.zeros((30, 40), np.uint8))) == g


def test_check_window():
    g = Grid(UTM, T, 40, 30)
    assert check_window(g, Window(1.0, 2.0, 3.0, 4.0)) == Window(1, 2, 3, 4)
    with pytest.raises(ValueError, match="must have whole-pixel offsets and sizes"):
        check_window(g, Window(0.5, 0, 3, 4))
    for bad in (Window(38, 0, 3, 4), Window(0, 0, 0, 4), Window(-1, 0, 3, 4)):
        with pytest.raises(ValueError, match="does not lie inside the 40x30 raster"):
            check_window(g, bad)


def test_opening_refusals(tmp_path):
    with pytest.raises(InputNotFoundError, match=r"--s2 .*nope.tif does not exist; check the path"):
        check_exists(tmp_path / "nope.tif", "--s2")
    assert check_exists(str(tmp_path), "--x") == tmp_path
    with pytest.raises(RasterError, match="is a folder, expected a raster file"):
        open_raster(tmp_path, "--s1")
    (tmp_path / "t.tif").write_text("not a raster")
    with pytest.raises(RasterError, match=r"--s1 .*t.tif is not a raster GDAL can read.*download it again"):
        open_raster(tmp_path / "t.tif", "--s1")


def test_check_crs(tmp_path):
    with open_raster(write(tmp_path / "a.tif", np.zeros((4, 4), np.uint8)), "--x") as ds:
        check_crs(ds, "--x")
    gcps = [GroundControlPoint(0, 0, 115.0, -2.0), GroundControlPoint(0, 4, 115.1, -2.0),
            GroundControlPoint(4, 0, 115.0, -2.1)]
    p = tmp_path / "g.tif"
    with rasterio.open(p, "w", driver="GTiff", dtype="uint8", count=1, width=4, height=4) as ds:
        ds.write(np.zeros((4, 4), np.uint8), 1)
        ds.gcps = (gcps, CRS.from_epsg(4326))
    with open_raster(p, "--s1") as ds:
        check_crs(ds, "--s1")  # ground control points with a CRS are enough
    none = tmp_path / "n.tif"
    with rasterio.open(none, "w", driver="GTiff", dtype="uint8", count=1, width=4, height=4) as ds:
        ds.write(np.zeros((4, 4), np.uint8), 1)
    with open_raster(none, "--s1") as ds, pytest.raises(CRSError, match="n.tif has no coordinate reference system"):
        check_crs(ds, "--s1")


def test_masks_seen_on_another_grid(tmp_path):
    # a 20 m mask (value = 10 * row + col) seen on a 10 m grid shifted by one 10 m pixel
    mask = (10 * np.arange(4)[:, None] + np.arange(5)[None, :]).astype(np.uint8) % 2
    src = write(tmp_path / "m.tif", mask, transform=Affine(20.0, 0, 300000.0, 0, -20.0, 9700000.0), nodata=255)
    grid = Grid(UTM, Affine(10.0, 0, 300010.0, 0, -10.0, 9700000.0), 10, 9)
    with open_on_grid(src, grid) as ds:
        got = read_mask(ds, grid.full)
    # 10 m column j (centre x = 15 + 10 j m from the 20 m origin) falls in 20 m column (15 + 10 j) // 20
    cols = (15 + 10 * np.arange(10)) // 20
    rows = (5 + 10 * np.arange(9)) // 20
    want = np.full((9, 10), 255, np.uint8)
    inside = (rows[:, None] < 4) & (cols[None, :] < 5)
    want[inside] = mask[np.minimum(rows, 3)][:, np.minimum(cols, 4)][inside]
    np.testing.assert_array_equal(got, want)  # outside the mask's footprint: nodata
    same = Grid(UTM, Affine(20.0, 0, 300000.0, 0, -20.0, 9700000.0), 5, 4)
    with open_on_grid(src, same) as ds:
        assert ds.name == str(src)  # the same grid: read as it is
        np.testing.assert_array_equal(read_mask(ds, same.full), mask)
    with pytest.raises(RasterError, match="cannot read mask raster"):
        with open_on_grid(tmp_path / "missing.tif", same):
            pass


def test_read_mask_keeps_only_0_and_1(tmp_path):
    p = write(tmp_path / "m.tif", np.array([[0, 1, 2, 255]], np.uint8))
    with rasterio.open(p) as ds:
        m = read_mask(ds, Window(0, 0, 4, 1))
    assert m.dtype == np.uint8 and m.tolist() == [[0, 1, 255, 255]]
    with rasterio.open(write(tmp_path / "i.tif", np.array([[0, 1, 300]], np.int16))) as ds:
        assert read_mask(ds, Window(0, 0, 3, 1)).tolist() == [[0, 1, 255]]


def test_write_uint8_cog_strip_by_strip(tmp_path):
    grid = Grid(UTM, T, 300, 1100)
    calls = []

    def fill(w):
        calls.append(w)
        r = np.arange(w.row_off, w.row_off + w.height)[:, None]
        return ((r + np.arange(w.width)[None, :]) % 3).astype(np.uint8)

    cmap = {0: (0, 0, 0, 0), 1: (200, 30, 30, 255), 2: (30, 30, 200, 255)}
    out = write_uint8_cog(tmp_path / "c.tif", grid, fill, cmap, description="change", tags={"YEAR": "2024"})
    assert out == tmp_path / "c.tif" and [p.name for p in tmp_path.iterdir()] == ["c.tif"]
    assert [w.row_off for w in calls] == [0, 512, 1024]
    assert cog_validate(out)[0]
    with rasterio.open(out) as ds:
        r = np.arange(1100)[:, None]
        np.testing.assert_array_equal(ds.read(1), ((r + np.arange(300)[None, :]) % 3).astype(np.uint8))
        assert ds.nodata == 255 and ds.crs == UTM and ds.transform == T
        assert ds.colormap(1)[1] == (200, 30, 30, 255) and ds.descriptions == ("change",)
        assert ds.tags()["YEAR"] == "2024" and ds.tags()["OVERVIEW_RESAMPLING"] == "NEAREST"


def test_to_cog_options_and_failure(tmp_path):
    src = write(tmp_path / "s.tif", np.arange(600 * 600, dtype=np.float32).reshape(600, 600))
    to_cog(src, tmp_path / "c.tif", nodata=-1, predictor=3, blocksize=256, bigtiff="IF_SAFER",
           tags={"A": "b"}, overview_resampling="average")
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert ds.block_shapes == [(256, 256)] and ds.nodata == -1 and ds.tags()["A"] == "b"
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3" and ds.overviews(1) == [2, 4]  # 256 px tiles
        assert ds.tags()["OVERVIEW_RESAMPLING"] == "AVERAGE"
        np.testing.assert_array_equal(ds.read(1), np.arange(600 * 600, dtype=np.float32).reshape(600, 600))
    with pytest.raises(OutputError, match=r"cannot write the COG final.tif .*check free disk space"):
        to_cog(src, tmp_path / "no" / "such" / "dir" / "c.tif", nodata=0, name="final.tif")


def test_thumbnail_is_a_nearest_decimation(tmp_path):
    a = (np.arange(400)[:, None] + 0 * np.arange(1000)[None, :]).astype(np.uint16)
    t = thumbnail(write(tmp_path / "a.tif", a), max_px=100)
    assert t.shape == (40, 100)  # 1000 x 400 scaled by 10
    np.testing.assert_array_equal(t[:, 0], np.arange(40) * 10 + 5)  # the centre row of each 10 x 10 cell
    small = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(thumbnail(write(tmp_path / "s.tif", small), max_px=4), small)
