"""coal-prepare refuses bad input with one clear line, the right exit code, and nothing written."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.runtime.cli.prepare import main
from coalmine.runtime.errors import (
    BandError,
    CRSError,
    InputError,
    InputNotFoundError,
    OutputError,
    RasterError,
    UnitsError,
    UsageError,
)
from coalmine.runtime.preprocess import open_scene, prepare_scene
from coalmine.train.synth import make_scene
from rasterio.transform import from_origin


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("bad"), 2019, seed=9, size=96, cloud_cover=0.0)


def _copy_s2(synth, dst, drop=()):
    dst.mkdir()
    for p in synth.s2_dir.iterdir():
        if not any(f"_{b}_" in p.name for b in drop):
            shutil.copy(p, dst / p.name)
    return dst


def _s1_like(synth, path, data=None, **prof):
    with rasterio.open(synth.s1_path) as src:
        profile, a = src.profile, src.read(1)
    if data is not None:
        a = data(a)
    profile.update(dtype=a.dtype.name, **prof)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(a, 1)
    return path


def _run(args):
    r = CliRunner().invoke(main, [*map(str, args), "-q"])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("coal-prepare: error:")]
    return r, (lines[-1] if lines else r.stderr)


def _nothing_written(folder):
    """No output ``s.tif`` and no temporary (partial / tiles) file left in ``folder``."""
    return [p.name for p in folder.iterdir()
            if p.name == "s.tif" or ".partial" in p.name or ".tiles" in p.name] == []


def test_missing_paths(synth, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    r, msg = _run(["--s2", tmp_path / "nope", "--s1", synth.s1_path, "-o", out / "s.tif"])
    assert r.exit_code == 1 and "--s2" in msg and "nope does not exist" in msg
    r, msg = _run(["--s2", synth.s2_dir, "--s1", tmp_path / "vv.tif", "-o", out / "s.tif"])
    assert r.exit_code == 1 and "--s1" in msg and "vv.tif does not exist" in msg
    assert _nothing_written(out)
    with pytest.raises(InputNotFoundError):
        open_scene(tmp_path / "nope", synth.s1_path)


def test_not_a_raster(synth, tmp_path):
    txt = tmp_path / "vv.tif"
    txt.write_text("this is not a GeoTIFF\n")
    with pytest.raises(RasterError, match=r"--s1 .*vv\.tif is not a raster GDAL can read"):
        prepare_scene(synth.s2_dir, txt, tmp_path / "s.tif", progress=False)
    assert _nothing_written(tmp_path)


def test_truncated_geotiff(synth, tmp_path):
    s2 = _copy_s2(synth, tmp_path / "s2")
    victim = next(s2.glob("*_B08_10m.tif"))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o"
    out.mkdir()
    r, msg = _run(["--s2", s2, "--s1", synth.s1_path, "-o", out / "s.tif"])
    assert r.exit_code == 1
    assert "--s2" in msg and "B08_10m.tif" in msg and "truncated" in msg
    assert _nothing_written(out)
    # A COG keeps its header first: it opens, and the damage shows only when pixels are read.
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    cog = tmp_path / "cog.tif"
    cog_translate(str(synth.band_paths["B08"]), str(cog), cog_profiles.get("deflate"), quiet=True)
    victim.write_bytes(cog.read_bytes()[:12000])
    r, msg = _run(["--s2", s2, "--s1", synth.s1_path, "-o", out / "s.tif"])
    assert r.exit_code == 1
    assert "B08_10m.tif cannot be read" in msg and "looks truncated" in msg
    assert _nothing_written(out)


def test_no_crs(synth, tmp_path):
    with rasterio.open(synth.s1_path) as src:
        prof, a = src.profile, src.read(1)
    prof.update(crs=None)
    p = tmp_path / "vv_nocrs.tif"
    with rasterio.open(p, "w", **prof) as dst:
        dst.write(a, 1)
    with pytest.raises(CRSError, match="vv_nocrs.tif has no coordinate reference system.*a_srs"):
        prepare_scene(synth.s2_dir, p, tmp_path / "s.tif", progress=False)
    assert _nothing_written(tmp_path)


def test_band_missing(synth, tmp_path):
    s2 = _copy_s2(synth, tmp_path / "s2", drop=("B11",))
    out = tmp_path / "o"
    out.mkdir()
    r, msg = _run(["--s2", s2, "--s1", synth.s1_path, "-o", out / "s.tif"])
    assert r.exit_code == 1
    assert "lacks band(s) B11" in msg and "found: B02" in msg
    assert _nothing_written(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BandError, match="holds no raster files named after Sentinel-2 bands"):
        open_scene(empty, synth.s1_path)


def test_multiband_without_descriptions(synth, tmp_path):
    with rasterio.open(synth.band_paths["B02"]) as src:
        prof, a = src.profile, src.read(1)
    prof.update(count=9)
    p = tmp_path / "s2.tif"
    with rasterio.open(p, "w", **prof) as dst:
        dst.write(np.stack([a] * 9))
    with pytest.raises(BandError, match="no band descriptions naming them"):
        open_scene(p, synth.s1_path)


def test_s1_not_overlapping(synth, tmp_path):
    far = _s1_like(synth, tmp_path / "vv_far.tif",
                   transform=from_origin(700000.0, 9000000.0, 10.0, 10.0))
    out = tmp_path / "o"
    out.mkdir()
    r, msg = _run(["--s2", synth.s2_dir, "--s1", far, "-o", out / "s.tif"])
    assert r.exit_code == 1
    assert "does not overlap the Sentinel-2 scene" in msg
    assert "S1 extent (700000" in msg and "S2 extent (300000" in msg
    assert _nothing_written(out)


def test_raw_grd_dn_refused(synth, tmp_path):
    dn = _s1_like(synth, tmp_path / "grd_dn.tif",
                  data=lambda a: np.clip(np.sqrt(a) * 800, 1, 65535).astype(np.uint16), nodata=0)
    out = tmp_path / "o"
    out.mkdir()
    r, msg = _run(["--s2", synth.s2_dir, "--s1", dn, "-o", out / "s.tif"])
    assert r.exit_code == 1
    assert "raw GRD" in msg and "digital numbers" in msg and "Calibrate" in msg and "sigma0" in msg
    assert _nothing_written(out)
    # float DN declared as linear sigma0 is refused too
    fdn = _s1_like(synth, tmp_path / "dn_float.tif", data=lambda a: (a * 5000).astype(np.float32))
    with pytest.raises(UnitsError, match="raw GRD digital numbers"):
        prepare_scene(synth.s2_dir, fdn, tmp_path / "s.tif", s1_units="linear", progress=False)
    # dB declared as linear: negative values
    db = _s1_like(synth, tmp_path / "db.tif", data=lambda a: (10 * np.log10(a)).astype(np.float32))
    with pytest.raises(UnitsError, match="declared linear.*negative.*--s1-units db"):
        prepare_scene(synth.s2_dir, db, tmp_path / "s.tif", s1_units="linear", progress=False)
    assert _nothing_written(tmp_path)


def test_all_nodata(synth, tmp_path):
    s2 = _copy_s2(synth, tmp_path / "s2")
    for p in s2.glob("*_B*.tif"):
        with rasterio.open(p, "r+") as ds:
            ds.write(np.zeros((1, ds.height, ds.width), np.uint16))
    out = tmp_path / "o"
    out.mkdir()
    r, msg = _run(["--s2", s2, "--s1", synth.s1_path, "-o", out / "s.tif"])
    assert r.exit_code == 1 and "no valid pixel in the scene" in msg and "DN 0" in msg
    assert _nothing_written(out)
    empty_s1 = _s1_like(synth, tmp_path / "vv_empty.tif",
                        data=lambda a: np.full_like(a, -99.0), nodata=-99.0)
    with pytest.raises(InputError, match=r"vv_empty.tif has no valid pixel \(all nodata = -99\)"):
        prepare_scene(synth.s2_dir, empty_s1, out / "s.tif", progress=False)
    assert _nothing_written(out)


def test_unwritable_output(synth, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    r, msg = _run(["--s2", synth.s2_dir, "--s1", synth.s1_path, "-o", blocker / "s.tif"])
    assert r.exit_code == 1 and "cannot create output folder" in msg and "-o" in msg
    if os.geteuid() != 0:  # root ignores permission bits; the case above covers root too
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="is not writable; choose another -o"):
                prepare_scene(synth.s2_dir, synth.s1_path, ro / "s.tif", progress=False)
        finally:
            ro.chmod(0o700)


def test_unwritable_timings_path_is_refused_naming_the_option(synth, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    r, msg = _run(["--s2", synth.s2_dir, "--s1", synth.s1_path, "-o", tmp_path / "s.tif",
                   "--timings", tmp_path / "file" / "t.json"])
    assert r.exit_code == 1 and "choose another --timings" in msg and str(tmp_path / "file") in msg
    assert (tmp_path / "file").read_text() == "not a folder"


def test_usage_errors(synth, tmp_path):
    r, msg = _run(["--s2", synth.s2_dir, "--s1", synth.s1_path, "-o", tmp_path / "s.tif",
                   "--s2-offset", "1000"])
    assert r.exit_code == 2 and "--s2-offset 1000 is positive" in msg and "-1000" in msg
    r, msg = _run(["--s2", synth.s2_dir, "--s1", synth.s1_path, "-o", tmp_path / "s.tif",
                   "--speckle-window", "4"])
    assert r.exit_code == 2 and "--speckle-window 4 must be an odd number" in msg
    r, msg = _run(["--s2", synth.s2_dir, "--s1", synth.s1_path, "-o", tmp_path / "s.tif",
                   "--block", "8"])
    assert r.exit_code == 2 and "--block 8 is too small" in msg
    with pytest.raises(UsageError, match="pass the Sentinel-1 VV raster with --s1"):
        open_scene(synth.s2_dir)
    assert _nothing_written(tmp_path)


def test_l1c_refused(synth, tmp_path):
    s2 = _copy_s2(synth, tmp_path / "s2")
    (s2 / "MTD_MSIL2A.xml").unlink()
    (s2 / "MTD_MSIL1C.xml").write_text(
        "<Level-1C_User_Product><PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE></Level-1C_User_Product>")
    with pytest.raises(InputError, match="Level-1C product \\(top-of-atmosphere reflectance\\), "
                                         "not Level-2A"):
        open_scene(s2, synth.s1_path)
