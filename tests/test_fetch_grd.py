"""``coal-fetch --s1 grd`` and a monitor ``[source]`` with ``s1 = "grd"`` on the local STAC API.

The GRD product is generated from the real XML of ../shared/realdata (tests/grd_stac.py) and
served file by file in the catalogues' layouts: Planetary-Computer-shaped items over https,
Earth-Search-shaped items on a requester-pays S3 bucket (path-style, 127.0.0.1). The reference
for every sigma0 check is the whole generated product read by the same GRD reader.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from coalmine.runtime.bundle import Normalization
from coalmine.runtime.cli.fetch import main as fetch_cli
from coalmine.runtime.cli.monitor import main as monitor_cli
from coalmine.runtime.cli.prepare import main as prepare_cli
from coalmine.runtime.cli.run import main as run_cli
from coalmine.runtime.errors import InputError
from coalmine.runtime.fetch import (
    FetchOptions,
    FetchRecord,
    FetchRequest,
    check_credentials,
    fetch,
    resolve_catalogue,
)
from coalmine.runtime.fetch.download import verify_file
from coalmine.runtime.preprocess.s1grd import GrdReader
from coalmine.runtime.preprocess.s1grd.product import SIZE_TAG, WINDOW_TAG
from coalmine.runtime.preprocess.s2 import S2Reader
from factories import make_tiny_bundle
from grd_stac import BUCKET, ITEM_ID, make_grd_world
from rasterio.windows import Window
from stac_fixture import StacServer, standard_collections

pytestmark = pytest.mark.realdata

FAST = FetchOptions(retries=2, backoff=0.01, timeout=5)
SAFE_DIR = f"{ITEM_ID}.SAFE"


@pytest.fixture(scope="module")
def grd_cat(realdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("grdcat")
    srv = StacServer(root / "files").start()
    srv.collections = standard_collections()
    world = make_grd_world(realdata, root, srv)
    old = make_grd_world(realdata, root, srv, old_ipf=True, name="old", data_window=Window(12250, 7750, 1000, 1000))
    yield {"srv": srv, "new": world, "old": old, "root": root}
    srv.stop()


@pytest.fixture
def srv(grd_cat, monkeypatch):
    s = grd_cat["srv"]
    s.faults.clear()
    s.reset_counts()
    s.items = [grd_cat["new"].s2_item, grd_cat["new"].pc_item]
    # the local server is the S3 endpoint too (GDAL and boto3 read these variables)
    host = s.url.split("://", 1)[1]
    for k, v in {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret",
                 "AWS_S3_ENDPOINT": host, "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
                 "AWS_ENDPOINT_URL_S3": s.url, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)
    return s


def _req(world, out: Path, srv: StacServer, **kw) -> FetchRequest:
    args = dict(aois=world.aoi, out=out, start=dt.date(2021, 12, 1), end=dt.date(2021, 12, 31),
                catalogue=resolve_catalogue(srv.url), s1="grd", options=FAST)
    args.update(kw)
    return FetchRequest(**args)


def _folders(out: Path) -> tuple[Path, Path]:
    (s2,) = [p for p in (out / "s2").iterdir() if not p.name.startswith(".")]
    (s1,) = [p for p in (out / "s1").iterdir() if not p.name.startswith(".")]
    return s2, s1


def _measurement(safe: Path) -> Path:
    (m,) = (safe / "measurement").glob("*.tiff")
    return m


def _power(s1: Path | str, grid, **kw) -> np.ndarray:
    r = GrdReader(s1, grid, **kw)
    try:
        return r.read_power(Window(0, 0, grid.width, grid.height))
    finally:
        r.close()


# -- the download ---------------------------------------------------------------------------------
def test_grd_fetch_downloads_the_measurement_window_and_the_xml_into_a_safe_folder(grd_cat, srv, tmp_path):
    w = grd_cat["new"]
    out = tmp_path / "dl"
    s = fetch(_req(w, out, srv))
    assert s.exit_code == 0 and not s.failed and s.waiting_s1 == 0
    s2, safe = _folders(out)
    assert safe.name == SAFE_DIR
    stem = "s1b-iw-grd-vv-20211223t051122-20211223t051147-030148-039993-001"  # the product's own names
    assert sorted(str(p.relative_to(safe)) for p in safe.rglob("*") if p.is_file()) == sorted([
        "item.json", "manifest.safe", f"annotation/{stem}.xml", f"annotation/calibration/calibration-{stem}.xml",
        f"annotation/calibration/noise-{stem}.xml", f"measurement/{stem}.tiff"])
    # the XML came whole, once; the measurement only as a window; VH, RFI, preview never asked for
    sent = {k.split("_grd/", 1)[1]: v for k, v in srv.bytes_sent.items() if "_grd/" in k}
    size = {k: p.stat().st_size for k, p in w.served.items()}
    for rel in ("manifest.safe", "annotation/iw-vv.xml", "annotation/calibration/calibration-iw-vv.xml",
                "annotation/calibration/noise-iw-vv.xml"):
        assert sent[rel] == size[rel]
    assert set(sent) == {"manifest.safe", "annotation/iw-vv.xml", "annotation/calibration/calibration-iw-vv.xml",
                         "annotation/calibration/noise-iw-vv.xml", "measurement/iw-vv.tiff"}
    assert sent["measurement/iw-vv.tiff"] < 0.15 * size["measurement/iw-vv.tiff"]
    assert (safe / "annotation" / f"{stem}.xml").read_bytes() == w.served["annotation/iw-vv.xml"].read_bytes()
    # the window: where it lies in the full image, which the reader needs
    m = _measurement(safe)
    with rasterio.open(m) as ds, rasterio.open(w.served["measurement/iw-vv.tiff"]) as full:
        c, r, ww, hh = (int(v) for v in ds.tags()[WINDOW_TAG].split(","))
        assert ds.tags()[SIZE_TAG] == f"{full.width},{full.height}" and (ww, hh) == (ds.width, ds.height)
        assert ww * hh < 0.001 * full.width * full.height
        np.testing.assert_array_equal(ds.read(1), full.read(1, window=Window(c, r, ww, hh)))
        # the GCPs move with the window, so the file still opens in place in a GIS
        g0, f0 = ds.gcps[0][0], full.gcps[0][0]
        assert (g0.row, g0.col, g0.x, g0.y) == (f0.row - r, f0.col - c, f0.x, f0.y)
    assert verify_file(m) is not None
    # the record: the S2 acquisition paired with the GRD folder, the XML files listed with hashes
    with FetchRecord(out) as rec:
        assert rec.get(w.s2_item["id"]).s1_id == ITEM_ID
        row = rec.get(ITEM_ID)
        assert row.path == f"s1/{SAFE_DIR}" and row.collection == "sentinel-1-grd"
        assert sorted(f["name"] for f in row.files) == sorted([
            "manifest.safe", f"{stem}.xml", f"calibration-{stem}.xml", f"noise-{stem}.xml", f"{stem}.tiff"])
        assert row.bytes == sum(p.stat().st_size for p in safe.rglob("*") if p.is_file() and p.name != "item.json")
    assert json.loads((safe / "item.json").read_text())["id"] == ITEM_ID


def test_sigma0_from_the_fetched_window_equals_the_whole_product(grd_cat, srv, tmp_path):
    w = grd_cat["new"]
    out = tmp_path / "dl"
    fetch(_req(w, out, srv))
    s2, safe = _folders(out)
    grid = S2Reader(s2).grid
    whole, part = _power(w.product, grid), _power(safe, grid)
    assert np.isfinite(part).all()
    np.testing.assert_array_equal(part, whole)
    # block-exact: windows of the fetched product equal the same part of the whole read
    r = GrdReader(safe, grid)
    h, wd = grid.height, grid.width
    for win in (Window(0, 0, wd // 2, h // 3), Window(wd // 2, h // 3, wd - wd // 2, h - h // 3)):
        np.testing.assert_array_equal(r.read_power(win), part[win.row_off:win.row_off + win.height,
                                                              win.col_off:win.col_off + win.width])
    assert "window of the image" in r.record["s1_measurement"]
    r.close()
    # with a DEM 400 m above the geolocation grid's heights, terrain correction moves every pixel
    # (about 50 px in range); the fetched window still holds them all
    base = float(w.geo.terrain(8250.0, 12750.0)) + 400.0
    dem = tmp_path / "dem.tif"
    T = grid.transform
    with rasterio.open(dem, "w", driver="GTiff", width=80, height=80, count=1, dtype="float32", crs=grid.crs,
                       transform=Affine(30, 0, T.c - 600, 0, -30, T.f + 600)) as ds:
        ds.write(np.full((1, 80, 80), base, np.float32))
    whole_dem = _power(w.product, grid, dem=dem, dem_vertical="ellipsoid")
    part_dem = _power(safe, grid, dem=dem, dem_vertical="ellipsoid")
    assert np.isfinite(part_dem).all() and not np.array_equal(part_dem, part)
    np.testing.assert_array_equal(part_dem, whole_dem)


def test_products_before_ipf_2_90_keep_whole_lines_for_the_border_noise_scan(grd_cat, srv, tmp_path):
    w = grd_cat["old"]
    srv.items = [w.s2_item, w.pc_item]
    out = tmp_path / "dl"
    s = fetch(_req(w, out, srv))
    assert s.exit_code == 0
    s2, safe = _folders(out)
    with rasterio.open(_measurement(safe)) as ds:
        c, r, ww, hh = (int(v) for v in ds.tags()[WINDOW_TAG].split(","))
        assert (c, ww) == (0, 26102) and hh < 400  # whole lines, but only those over the AOI
    grid = S2Reader(s2).grid
    whole, part = _power(w.product, grid), _power(safe, grid)
    assert np.isfinite(part).all()
    np.testing.assert_array_equal(part, whole)


def test_earth_search_items_read_from_a_requester_pays_bucket(grd_cat, srv, tmp_path, caplog):
    w = grd_cat["new"]
    srv.items = [w.s2_item, w.es_item]
    out = tmp_path / "dl"
    with caplog.at_level(logging.WARNING, logger="coalmine.fetch"):
        s = fetch(_req(w, out, srv))
    assert s.exit_code == 0, s.failed
    # every GRD byte came from the bucket (boto3 for the XML, GDAL /vsis3/ for the window), and the
    # bucket only answers requests that accept the charge
    grd_paths = {p for _, p, _ in srv.requests if "IW/DV" in p}
    assert grd_paths and all(p.startswith(f"/{BUCKET}/GRD/") for p in grd_paths)
    # its schema-product-vv is the RFI annotation (as stactools writes it): the product annotation
    # beside the measurement is used instead, and the log says so
    assert any("rfi" not in p and p.endswith("annotation/iw-vv.xml") for p in grd_paths)
    assert "using the product annotation beside the measurement" in caplog.text
    s2, safe = _folders(out)
    grid = S2Reader(s2).grid
    np.testing.assert_array_equal(_power(safe, grid), _power(w.product, grid))


def test_an_s3_asset_the_bucket_does_not_have_fails_the_item_naming_it(grd_cat, srv, tmp_path, monkeypatch):
    w = grd_cat["new"]
    srv.items = [w.s2_item, w.es_item]
    srv.requester_pays.discard(BUCKET)
    srv.buckets.pop(BUCKET)  # every key answers 404, as a bucket without the product would
    try:
        s = fetch(_req(w, tmp_path / "dl", srv))
    finally:
        srv.buckets[BUCKET] = grd_cat["root"] / "files" / "s1grd"
        srv.requester_pays.add(BUCKET)
    assert s.exit_code == 1 and len(s.failed) == 1
    item, msg = s.failed[0]
    assert item == ITEM_ID and "asset 'safe-manifest'" in msg and "cannot be read from S3" in msg
    assert not any((tmp_path / "dl" / "s1").glob("*.SAFE"))


# -- resuming -------------------------------------------------------------------------------------
def test_a_failed_measurement_read_resumes_without_fetching_the_xml_again(grd_cat, srv, tmp_path):
    w = grd_cat["new"]
    out = tmp_path / "dl"
    rel = "/files/" + str(w.served["measurement/iw-vv.tiff"].relative_to(grd_cat["root"] / "files"))
    srv.inject(rel, "status", times=10_000, status=503)
    s = fetch(_req(w, out, srv))
    assert s.exit_code == 69 and "measurement" in s.unreachable
    part = out / "s1" / f".{SAFE_DIR}.partial"
    assert (part / "manifest.safe").is_file() and not (out / "s1" / SAFE_DIR).exists()
    srv.faults.clear()
    srv.reset_counts()
    s = fetch(_req(w, out, srv))
    assert s.exit_code == 0 and s.waiting_s1 == 0
    sent = {k.split("_grd/", 1)[1]: v for k, v in srv.bytes_sent.items() if "_grd/" in k}
    assert set(sent) == {"measurement/iw-vv.tiff"}  # the XML parts were kept
    _, safe = _folders(out)
    grid = S2Reader(_folders(out)[0]).grid
    np.testing.assert_array_equal(_power(safe, grid), _power(w.product, grid))
    # renamed but not recorded (killed before the record's commit): adopted without a download
    (out / "fetch.sqlite").unlink()
    srv.reset_counts()
    s = fetch(_req(w, out, srv))
    assert s.exit_code == 0 and srv.file_bytes() == 0 and not srv.bytes_sent


# -- coal-fetch -> coal-prepare -> coal-run, and the monitor ---------------------------------------
def test_fetch_prepare_run_then_a_monitor_source_with_grd(grd_cat, srv, tmp_path):
    w = grd_cat["new"]
    runner = CliRunner()
    downloads = tmp_path / "dl"
    res = runner.invoke(fetch_cli, ["--aoi", str(w.aoi), "--start", "2021-12-01", "--end", "2021-12-31", "-o",
                                    str(downloads), "--catalog", srv.url, "--s1", "grd", "-q"])
    assert res.exit_code == 0, res.output
    s2, safe = (Path(p) for p in res.stdout.split())
    assert s2.parent == downloads / "s2" and safe == downloads / "s1" / SAFE_DIR
    res = runner.invoke(prepare_cli, ["--s2", str(s2), "--s1", str(safe), "-o", str(tmp_path / "stack.tif"), "-q"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "stack.tif") as ds:
        stack = ds.read()
        assert "grd" in ds.tags().get("COALMINE_INPUTS", "").lower()
    assert np.isfinite(stack).all(axis=0).mean() > 0.9
    # coal-prepare on the whole product over the same S2 grid gives the same stack, bit for bit
    # (tolerance 0): the window holds every pixel sigma0, its GLCM texture and the masks depend on
    res = runner.invoke(prepare_cli, ["--s2", str(s2), "--s1", str(w.product), "-o", str(tmp_path / "whole.tif"),
                                      "-q"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "whole.tif") as ds:
        whole = ds.read()
    assert whole.shape == stack.shape and np.isfinite(whole[12:]).all(axis=0).mean() > 0.9  # VV + GLCM
    np.testing.assert_array_equal(stack, whole)
    mean = tuple(float(np.nanmean(b)) for b in stack)
    std = tuple(float(np.nanstd(b)) or 1.0 for b in stack)
    root = tmp_path / "p"
    make_tiny_bundle(root / "bundle", kind="linear", normalization=Normalization(mean=mean, std=std))
    res = runner.invoke(run_cli, [str(tmp_path / "stack.tif"), "-b", str(root / "bundle"), "-o", str(tmp_path / "run"),
                                  "--aoi", str(w.aoi), "--backend", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    (summary,) = (tmp_path / "run").glob("*_summary.json")
    run_ha = json.loads(summary.read_text())["areas_ha"]
    assert run_ha["aois"]["Pit"] is not None
    # the monitor with [source] s1 = "grd": fetches by itself into its own folder, then maps
    shutil.copy(w.aoi, root / "aoi.geojson")
    (root / "monitor.toml").write_text(
        'title = "GRD"\nbundle = "bundle"\naois = "aoi.geojson"\noutput = "out"\n[run]\nbackend = "cpu"\n'
        f'[source]\ncatalog = "{srv.url}"\ns1 = "grd"\nstart = 2021-12-01\nend = 2021-12-31\n')
    res = runner.invoke(monitor_cli, [str(root / "monitor.toml"), "-q"])
    assert res.exit_code == 0, res.output
    assert "1 acquisition(s) fetched, 1 new scene processed" in res.output
    con = sqlite3.connect(root / "out" / "ledger.sqlite")
    (status, s1_path), = con.execute("SELECT status, s1_path FROM scenes").fetchall()
    areas = dict(con.execute("SELECT aoi, hectares FROM scene_areas").fetchall())
    con.close()
    assert status == "done" and Path(s1_path).name == SAFE_DIR
    # the monitor's raw route gives the hectares of the stack route
    assert areas["Pit"] == pytest.approx(run_ha["aois"]["Pit"], abs=1e-9)


def test_dry_run_lists_the_grd_candidate_and_never_an_ew_or_hh_product(grd_cat, srv, tmp_path):
    w = grd_cat["new"]
    ew = copy.deepcopy(w.pc_item)
    ew["id"] = ITEM_ID.replace("_IW_", "_EW_")
    ew["properties"]["sar:instrument_mode"] = "EW"
    hh = copy.deepcopy(w.pc_item)
    hh["id"] = ITEM_ID.replace("1SDV", "1SDH")
    hh["properties"]["sar:polarizations"] = ["HH", "HV"]
    srv.items = [w.s2_item, w.pc_item, ew, hh]  # a GRD collection holds all of them
    s = fetch(_req(w, tmp_path / "dl", srv), dry_run=True)
    assert sorted((p.kind, p.stac_id, p.action) for p in s.planned) == [
        ("s1", ITEM_ID, "candidate"), ("s2", w.s2_item["id"], "fetch")]
    assert srv.file_bytes() == 0 and not (tmp_path / "dl").exists()


# -- refusals -------------------------------------------------------------------------------------
def test_an_item_without_the_noise_xml_fails_naming_the_asset_and_the_fix(grd_cat, srv, tmp_path):
    w = grd_cat["new"]
    item = copy.deepcopy(w.pc_item)
    del item["assets"]["schema-noise-vv"]
    srv.items = [w.s2_item, item]
    res = CliRunner().invoke(fetch_cli, ["--aoi", str(w.aoi), "--start", "2021-12-01", "--end", "2021-12-31", "-o",
                                         str(tmp_path / "dl"), "--catalog", srv.url, "--s1", "grd", "-q"])
    assert res.exit_code == 1
    (line,) = [ln for ln in res.stderr.splitlines() if "failed:" in ln]
    assert f"STAC item {ITEM_ID} has no 'schema-noise-vv' asset" in line
    assert "--asset VV_NOISE=KEY" in line and "--s1 rtc" in line
    assert not any((tmp_path / "dl" / "s1").glob("*.SAFE"))


def test_an_ew_or_hh_product_is_skipped_not_failed_and_an_annotation_that_says_so_is_refused(grd_cat, srv, tmp_path):
    w = grd_cat["new"]
    ew = copy.deepcopy(w.pc_item)
    ew["id"] = ITEM_ID.replace("_IW_", "_EW_")
    ew["properties"]["sar:instrument_mode"] = "EW"
    ew["properties"]["datetime"] = "2021-12-24T05:11:35Z"  # nearer in date: it would be tried first
    srv.items = [w.s2_item, w.pc_item, ew]
    s = fetch(_req(w, tmp_path / "dl", srv))
    assert s.exit_code == 0 and not s.failed
    with FetchRecord(tmp_path / "dl") as rec:
        assert rec.get(w.s2_item["id"]).s1_id == ITEM_ID and not rec.has(ew["id"])
    # an item without sar: properties is judged by its annotation
    from coalmine.runtime.fetch.download import AssetError
    from coalmine.runtime.fetch.grd import check_part

    xml = w.served["annotation/iw-vv.xml"].read_bytes().replace(b"<mode>IW</mode>", b"<mode>EW</mode>", 1)
    with pytest.raises(AssetError, match=r"^x describes EW GRD VV data; coalmine reads IW GRD VV .*: skip the item$"):
        check_part("annotation", xml, "x")


def test_an_asset_that_is_not_the_xml_it_should_be_is_refused(grd_cat, srv, tmp_path):
    w = grd_cat["new"]
    item = copy.deepcopy(w.pc_item)
    a = item["assets"]
    a["schema-calibration-vv"]["href"] = a["schema-noise-vv"]["href"]
    srv.items = [w.s2_item, item]
    s = fetch(_req(w, tmp_path / "dl", srv))
    assert s.exit_code == 1
    (_, msg), = s.failed
    assert f"STAC item {ITEM_ID} asset 'schema-calibration-vv' (the VV calibration XML) is not the VV " \
           "calibration XML: its root element is <noise>" in msg and "--asset VV_CALIBRATION=KEY" in msg


def test_earth_search_grd_without_aws_credentials_names_them(grd_cat, tmp_path, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE",
              "AWS_CONFIG_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    w = grd_cat["new"]
    res = CliRunner().invoke(fetch_cli, ["--aoi", str(w.aoi), "--start", "2021-12-01", "-o", str(tmp_path / "dl"),
                                         "--catalog", "earth-search", "--s1", "grd", "-q"])
    assert res.exit_code == 2
    (line,) = [ln for ln in res.output.splitlines() if ln]
    assert "requester-pays" in line and "AWS_ACCESS_KEY_ID" in line and "~/.aws/credentials" in line
    assert "--s1 none" in line and not (tmp_path / "dl").exists()
    # a profile in the AWS credentials file counts (boto3 and GDAL read it)
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\naws_access_key_id = AKIA\naws_secret_access_key = x\n")
    check_credentials(resolve_catalogue("earth-search"), "grd")
    # and the Planetary Computer's GRD needs nothing
    check_credentials(resolve_catalogue("planetary-computer"), "grd")


def test_the_reader_refuses_a_window_that_does_not_fit_its_annotation(grd_cat, srv, tmp_path):
    w = grd_cat["new"]
    out = tmp_path / "dl"
    fetch(_req(w, out, srv))
    s2, safe = _folders(out)
    with rasterio.open(_measurement(safe), "r+") as ds:
        ds.update_tags(**{SIZE_TAG: "26102,16000"})
    with pytest.raises(InputError, match=r"--s1 .*\.SAFE: the measurement is a \d+ x \d+ px window .* of a "
                                         r"26102 x 16000 image .* annotation describes 26102 x 16705; .* fetch it again"):
        GrdReader(safe, S2Reader(s2).grid)
