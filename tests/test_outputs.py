"""The files of one run (coalmine.runtime.outputs.OutputSet): their format, the mine polygons of a
hand-made mask, and what a failed write says."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import rasterio
from coalmine.runtime.errors import OutputError
from coalmine.runtime.outputs import OutputSet
from factories import DEFAULT_TRANSFORM, UTM50S
from pyproj import Geod, Transformer
from rasterio.windows import Window

H, W = 40, 60
TO_LL = Transformer.from_crs("EPSG:32750", "EPSG:4326", always_xy=True)


def _mask() -> np.ndarray:
    """0 background, 1 mine, 255 nodata: nodata strips above, between and below the mines,
    so whatever order the polygonizer emits regions in, a nodata region comes before a mine."""
    m = np.zeros((H, W), np.uint8)
    m[0:2, :] = 255
    m[5:8, 10:14] = 1  # 3 x 4 px = 12 px = 0.12 ha nominal
    m[20, :] = 255
    m[25, 40] = 1  # one pixel, 0.01 ha nominal
    m[30:33, 50:52] = 1  # 3 x 2 px
    m[38:, :] = 255
    return m


def _write_mask(path, m):
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=1, dtype="uint8",
                       crs=UTM50S, transform=DEFAULT_TRANSFORM, nodata=255) as ds:
        ds.write(m, 1)
    return path


def _square_ll(r0, r1, c0, c1):
    xs, ys = zip(*(DEFAULT_TRANSFORM * (c, r) for r, c in ((r0, c0), (r0, c1), (r1, c1), (r1, c0))), strict=True)
    return TO_LL.transform(xs, ys)


def test_run_files_are_one_band_uint8_cogs_on_the_input_grid(tmp_path):
    q = (np.arange(H * W).reshape(H, W) % 251).astype(np.uint8)
    m = (q >= 125).astype(np.uint8)
    m[q == 250] = 255
    with OutputSet(tmp_path / "o", "scene", UTM50S, DEFAULT_TRANSFORM, W, H, tags={"K": "v"}) as outs:
        # the run's hidden work folder, named for the kind of run it belongs to
        assert [p.name.split(".")[1] for p in (tmp_path / "o").iterdir()] == ["coalmine-run"]
        outs.write(Window(0, 0, W, 24), q[:24], m[:24])
        outs.write(Window(0, 24, W, H - 24), q[24:], m[24:])
        outs.finish_rasters()
        outs.write_mines()
        outs.write_summary({"k": 1})
        final = outs.commit()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "scene_mask.tif", "scene_mines.geojson", "scene_prob.tif", "scene_summary.json"]
    for key, want in (("prob", q), ("mask", m)):
        with rasterio.open(final[key]) as ds:
            assert (ds.count, ds.dtypes, ds.nodata) == (1, ("uint8",), 255)
            assert ds.crs == UTM50S and ds.transform == DEFAULT_TRANSFORM and ds.shape == (H, W)
            assert ds.tags()["K"] == "v" and ds.profile["tiled"]
            np.testing.assert_array_equal(ds.read(1), want)


def test_mine_polygons_of_a_hand_made_mask(tmp_path):
    mask = _write_mask(tmp_path / "m.tif", _mask())
    with OutputSet(tmp_path / "o", "x", UTM50S, DEFAULT_TRANSFORM, W, H) as outs:
        counts = outs.write_mines(mask)  # default: no minimum mapping unit, every polygon kept
        feats = json.loads(outs.tmp["mines"].read_text())["features"]
        outs.abort()
    geod = Geod(ellps="WGS84")
    want = {}
    for r0, r1, c0, c1 in ((5, 8, 10, 14), (25, 26, 40, 41), (30, 33, 50, 52)):
        lons, lats = _square_ll(r0, r1, c0, c1)
        want[(r0, c0)] = (lons, lats)
    assert counts["polygons"] == 3 and counts["dropped_below_mmu"] == 0
    assert len(feats) == 3
    got_total = 0.0
    for f in feats:
        ring = np.array(f["geometry"]["coordinates"][0])
        # which square: the one whose north-west corner this ring holds
        key = next(k for k, (lons, lats) in want.items()
                   if np.isclose(ring[:, 0].min(), min(lons), atol=2e-7) and np.isclose(ring[:, 1].max(), max(lats), atol=2e-7))
        lons, lats = want.pop(key)
        np.testing.assert_allclose([ring[:, 0].max(), ring[:, 1].min()], [max(lons), min(lats)], atol=2e-7)
        # the area of the ring as written (coordinates rounded to 1e-7 degrees), to 4 decimals
        ha = abs(geod.polygon_area_perimeter(ring[:, 0], ring[:, 1])[0]) / 1e4
        assert f["properties"]["area_ha"] == round(ha, 4)
        got_total += f["properties"]["area_ha"]
    assert want == {}
    assert counts["area_ha"] == pytest.approx(got_total, abs=2e-4)
    assert counts["area_ha"] == pytest.approx(0.12 + 0.01 + 0.06, rel=1e-3)  # nominal areas, UTM scale < 0.1 %


def test_minimum_mapping_unit_keeps_a_polygon_of_exactly_that_area(tmp_path):
    m = np.zeros((H, W), np.uint8)
    m[25, 40] = 1
    mask = _write_mask(tmp_path / "m.tif", m)
    with OutputSet(tmp_path / "o", "x", UTM50S, DEFAULT_TRANSFORM, W, H) as outs:
        first = outs.write_mines(mask)
        assert first["area_ha"] == pytest.approx(0.01, rel=1e-3)
        exact = first["area_ha"]
        assert outs.write_mines(mask, min_area_ha=exact)["polygons"] == 1  # "below" the unit only
        above = outs.write_mines(mask, min_area_ha=exact * (1 + 1e-9))
        assert (above["polygons"], above["dropped_below_mmu"], above["area_ha"]) == (0, 1, 0.0)
        outs.abort()


class _Broken:
    """A staging raster whose writes and close fail as on a full disk."""

    closed = False

    def write(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        raise OSError(errno.ENOSPC, "No space left on device")


def _free_space_message(what: str) -> str:
    return rf"cannot write {what} \(No space left on device\); .* free now on the disk holding .*o .*choose another --out"


def test_failed_writes_name_the_file_the_cause_and_the_free_space(tmp_path):
    with OutputSet(tmp_path / "o", "x", UTM50S, DEFAULT_TRANSFORM, W, H) as outs:
        outs._ds["prob"].close()
        outs._ds["prob"] = _Broken()
        with pytest.raises(OutputError, match=_free_space_message(r"the maps of x into .*o")):
            outs.write(Window(0, 0, W, H), np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8))
        with pytest.raises(OutputError, match=_free_space_message(r"the maps of x into .*o")):
            outs.finish_rasters()
        outs.abort()
    missing = tmp_path / "gone"  # the work folder removed under the run: no such file, not a full disk
    with OutputSet(tmp_path / "o", "x", UTM50S, DEFAULT_TRANSFORM, W, H) as outs:
        outs.tmp = {k: missing / v.name for k, v in outs.tmp.items()}
        hint = r"\(No such file or directory\); check free disk space and permissions, or choose another --out$"
        with pytest.raises(OutputError, match=r"cannot write x_summary\.json " + hint):
            outs.write_summary({"k": 1})
        with pytest.raises(OutputError, match=r"cannot write x_mines\.geojson " + hint):
            outs.write_mines(_write_mask(tmp_path / "m.tif", _mask()))
        outs.abort()
