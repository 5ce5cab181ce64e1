"""The grid value and raster helpers (coalmine.runtime.raster), on small hand-made rasters."""

from __future__ import annotations

import logging

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
    gdal_writes_checked,
    open_on_grid,
    open_raster,
    read_checked,
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


@pytest.mark.parametrize("bounds,res,origin,size", [
    ((300005, 9699985, 300031, 9700000), 10, (300000, 9700000), (4, 2)),  # edges out to the 10 m lattice
    ((300000, 9699980, 300030, 9700000), 10, (300000, 9700000), (3, 2)),  # already on it: nothing added
    ((-25, -35, 15, 3), 20, (-40, 20), (3, 3)),  # negative coordinates floor/ceil outwards too
    ((0, 0, 30.00002, 20), 10, (0, 20), (4, 2)),  # 2e-6 px past a pixel edge is a pixel more
    ((0, 0, 30.000004, 20), 10, (0, 20), (3, 2)),  # float noise below 1e-6 px is not
    ((0, -0.00002, 30, 20), 10, (0, 20), (3, 3)),  # the same below the bottom edge
    ((0, -0.000004, 30, 20), 10, (0, 20), (3, 2)),
    ((12, 7, 12, 7), 10, (10, 10), (1, 1)),  # a point: one pixel
])
def test_grid_covering_by_hand(bounds, res, origin, size):
    g = Grid.covering(UTM, bounds, res)
    assert g.crs == UTM and g.transform == Affine(res, 0.0, origin[0], 0.0, -res, origin[1])
    assert (g.width, g.height) == size
    b = g.bounds  # it covers the bounds
    assert b.left <= bounds[0] and b.bottom <= bounds[1] + 1e-5 and b.right >= bounds[2] - 1e-5 and b.top >= bounds[3]


def test_grid_key_and_clip_edge_cases():
    assert Grid(None, T, 4, 3).key() == "None|(10.0, 0.0, 300000.0, 0.0, -10.0, 9700000.0)|4x3"
    # transforms equal to 9 decimals are the same grid (4e-10 rounds away)
    assert Grid(UTM, Affine(10.0 + 4e-10, 0.0, 300000.0, 0.0, -10.0, 9700000.0), 4, 3).key() == Grid(UTM, T, 4, 3).key()
    assert Grid(UTM, T, 40, 30).clip(Window(0, 35, 5, 5)) == Window(0, 35, 5, 0)  # below: empty
    g = Grid(UTM, T, 40, 30)
    assert check_window(g, Window(39, 29, 1, 1)) == Window(39, 29, 1, 1)  # one pixel, in the corner
    with pytest.raises(ValueError, match=r"does not lie inside the 40x30 raster"):
        check_window(g, Window(0, 0, 3, 0))


def test_reading_names_the_file_and_gdal_s_reason(tmp_path):
    with pytest.raises(InputNotFoundError, match=r"^--s2 .*nope\.tif does not exist"):
        open_raster(tmp_path / "nope.tif", "--s2")
    (tmp_path / "t.tif").write_text("not a raster")
    with pytest.raises(RasterError, match=r"not recognized as being in a supported file format"):
        open_raster(tmp_path / "t.tif", "--s1")
    two = tmp_path / "two.tif"
    with rasterio.open(two, "w", driver="GTiff", dtype="uint8", count=2, width=4, height=2, crs=UTM, transform=T) as ds:
        ds.write(np.stack([np.full((2, 4), 1, np.uint8), np.full((2, 4), 2, np.uint8)]))
    with rasterio.open(two) as ds:
        assert read_checked(ds, "--x").tolist() == [[1] * 4] * 2  # band 1 by default
        assert read_checked(ds, "--x", 2, out_shape=(1, 2)).tolist() == [[2, 2]]  # rasterio's arguments pass through
    # a COG cut short: it opens (its header comes first) but its tiles cannot be read
    src = write(tmp_path / "s.tif", np.random.default_rng(0).integers(0, 255, (512, 512), dtype=np.uint8))
    to_cog(src, tmp_path / "c.tif", nodata=0)
    data = (tmp_path / "c.tif").read_bytes()
    (tmp_path / "c.tif").write_bytes(data[: len(data) // 2])
    with rasterio.open(tmp_path / "c.tif") as ds, pytest.raises(RasterError) as e:
        read_checked(ds, "--s2")
    msg = str(e.value)
    assert msg.startswith(f"--s2 {tmp_path / 'c.tif'} cannot be read (")
    assert msg.endswith("); the file looks truncated or damaged: copy or download it again")
    reason = msg.split("cannot be read (", 1)[1].rsplit(");", 1)[0]
    assert reason and reason != "None" and "\n" not in reason


def test_ground_control_points_need_their_crs(tmp_path):
    write(tmp_path / "a.tif", np.zeros((4, 4), np.uint8), transform=Affine.identity(), crs=None)
    # GDAL keeps ground control points without a CRS (a VRT can hold them): not georeferenced
    (tmp_path / "g.vrt").write_text(
        '<VRTDataset rasterXSize="4" rasterYSize="4"><GCPList>'
        '<GCP Id="1" Pixel="0" Line="0" X="115.0" Y="-2.0"/><GCP Id="2" Pixel="4" Line="0" X="115.1" Y="-2.0"/>'
        '<GCP Id="3" Pixel="0" Line="4" X="115.0" Y="-2.1"/></GCPList>'
        '<VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="1">a.tif'
        '</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    with open_raster(tmp_path / "g.vrt", "--s1") as ds:
        assert len(ds.gcps[0]) == 3 and ds.gcps[1] is None
        with pytest.raises(CRSError, match=r"^--s1 .*g\.vrt has no coordinate reference system \(no CRS and no ground "
                           r"control points\); export it georeferenced \(e\.g\. GeoTIFF with its UTM CRS\) or assign "
                           r"one with gdal_edit\.py -a_srs EPSG:xxxxx$"):
            check_crs(ds, "--s1")


def test_gdal_write_errors_signalled_but_not_raised_become_one_output_error(tmp_path):
    err = logging.getLogger("rasterio._err")
    with pytest.raises(OutputError, match=r"^cannot write out\.tif \(TIFFAppendToStrip:Write error at scanline 3\); "
                       r".*choose another -o$"):
        with gdal_writes_checked(tmp_path, "out.tif", "-o"):
            err.debug("GDAL signalled an error: err_no=%r, msg=%r", 1, "TIFFAppendToStrip:Write error at scanline 3")
    with gdal_writes_checked(tmp_path, "out.tif", "-o"):  # other complaints are not write failures
        err.debug("GDAL signalled an error: err_no=%r, msg=%r", 1, "TIFFReadDirectory: unknown tag 42")
    # a strip writer whose GDAL write fails names its file and the output folder
    grid = Grid(UTM, T, 8, 4)

    def fill(w):
        err.error("GDAL signalled an error: err_no=%r, msg=%r", 3, "_tiffWriteProc:No space left on device")
        return np.zeros((int(w.height), int(w.width)), np.uint8)

    with pytest.raises(OutputError, match=r"^cannot write .*w\.tif \(_tiffWriteProc:No space left on device\); "
                       r".*choose another output folder$"):
        write_uint8_cog(tmp_path / "w.tif", grid, fill, {0: (0, 0, 0, 0)})
    assert list(tmp_path.iterdir()) == []


def test_read_mask_reads_its_window(tmp_path):
    p = write(tmp_path / "m.tif", np.array([[0, 1, 1, 0], [1, 0, 7, 1]], np.uint8))
    with rasterio.open(p) as ds:
        assert read_mask(ds, Window(1, 1, 3, 1)).tolist() == [[0, 255, 1]]


def test_cog_colour_table_band_tags_bigtiff_and_no_description(tmp_path):
    src = write(tmp_path / "s.tif", np.arange(64, dtype=np.uint8).reshape(8, 8))
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(1, UNITS="class")
    to_cog(src, tmp_path / "c.tif", nodata=255, colormap={1: (10, 20, 30, 255)}, forward_band_tags=True, bigtiff="YES")
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert ds.colormap(1)[1] == (10, 20, 30, 255) and ds.tags(1)["UNITS"] == "class"
    assert (tmp_path / "c.tif").read_bytes()[:4] == b"II+\x00"  # BigTIFF
    to_cog(src, tmp_path / "d.tif", nodata=255)
    with rasterio.open(tmp_path / "d.tif") as ds:
        assert "UNITS" not in ds.tags(1)  # band tags only when asked for
    assert (tmp_path / "d.tif").read_bytes()[:4] == b"II*\x00"  # classic TIFF
    out = write_uint8_cog(tmp_path / "u.tif", Grid(UTM, T, 8, 8), lambda w: np.ones((int(w.height), int(w.width)), np.uint8),
                          {1: (1, 2, 3, 255)})
    with rasterio.open(out) as ds:
        assert ds.descriptions == (None,) and ds.colormap(1)[1] == (1, 2, 3, 255)


@pytest.mark.parametrize("shape,max_px,want", [
    ((360, 720), None, (180, 360)),  # the default: 360 px on the long side
    ((10, 700), 360, (5, 360)),  # under twice the size is still decimated
    ((5, 3600), 360, (1, 360)),  # at least one row
    ((3600, 5), 360, (360, 1)),  # at least one column
    ((100, 360), 360, (100, 360)),  # exactly the size: as it is
])
def test_thumbnail_sizes(tmp_path, shape, max_px, want):
    p = write(tmp_path / "a.tif", np.zeros(shape, np.uint8))
    assert (thumbnail(p) if max_px is None else thumbnail(p, max_px=max_px)).shape == want


def test_first_line_takes_gdal_s_own_words_from_the_cause():
    from coalmine.runtime.raster import _first_line
    from rasterio.errors import RasterioIOError

    cause = OSError("TIFFReadEncodedTile: Read error at row 512\nmore detail")
    exc = RasterioIOError("Read or write failed. See previous exception for details.")
    exc.__cause__ = cause
    assert _first_line(exc) == "TIFFReadEncodedTile: Read error at row 512"
    alone = RasterioIOError("Read or write failed. See previous exception for details.")
    assert _first_line(alone) == "Read or write failed. See previous exception for details."
    other = RasterioIOError("t.tif: not recognized")
    other.__cause__ = cause  # no "previous exception": its own words
    assert _first_line(other) == "t.tif: not recognized"
    assert _first_line(RasterioIOError("  ")) == "RasterioIOError"  # no words at all: its kind
