"""coal-fetch against a local STAC API (tests/stac_fixture.py) serving generated COGs.

No internet: the catalogue, the file server and the Planetary Computer's token service all run on
127.0.0.1. Items have the shapes of Earth Search's and the Planetary Computer's items; the pixels
come from ``coalmine.train.synth.make_scene``, whose own band folder (with ``MTD_MSIL2A.xml``) is
the independent reference for the reflectance of a fetched window.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.runtime.bands import S2_BANDS
from coalmine.runtime.cli.fetch import main as fetch_cli
from coalmine.runtime.errors import ServiceUnavailableError, UsageError
from coalmine.runtime.fetch import (
    CredentialsError,
    FetchLockedError,
    FetchOptions,
    FetchRecord,
    FetchRequest,
    check_credentials,
    default_halo,
    fetch,
    resolve_catalogue,
)
from coalmine.runtime.fetch.catalogs import asset_key, sign_href
from coalmine.runtime.fetch.download import verify_file
from coalmine.runtime.fetch.items import dn_offset
from coalmine.runtime.fetch.record import FolderLock
from coalmine.runtime.preprocess.s2 import S2Reader
from rasterio.windows import Window, from_bounds
from stac_fixture import AOI_PX, StacServer

FAST = FetchOptions(retries=3, backoff=0.01, timeout=5)


@pytest.fixture
def cat_data(stac_catalogue):
    return stac_catalogue


@pytest.fixture
def srv(cat_data):
    s = cat_data["srv"]
    s.faults.clear()
    s.reset_counts()
    s.search_methods = ("GET", "POST")
    s.token = None
    s.items = [cat_data["scene"].pc_item, cat_data["scene"].rtc_item]
    return s


def _req(cat_data, out: Path, srv: StacServer, **kw) -> FetchRequest:
    args = dict(aois=cat_data["aoi"], out=out, start=dt.date(2023, 1, 1), end=dt.date(2023, 12, 31),
                catalogue=resolve_catalogue(srv.url), options=FAST)
    args.update(kw)
    return FetchRequest(**args)


def _reflectance(folder: Path) -> tuple[np.ndarray, S2Reader]:
    r = S2Reader(folder)
    return r.read(Window(0, 0, r.grid.width, r.grid.height)), r


def _reference(synth, reader: S2Reader) -> np.ndarray:
    """The synthetic product's own reflectance (its MTD_MSIL2A.xml offset) over the fetched window."""
    with S2Reader(synth.s2_dir) as ref:
        w = from_bounds(*reader.grid.bounds, transform=ref.grid.transform)
        return ref.read(Window(round(w.col_off), round(w.row_off), reader.grid.width, reader.grid.height))


def _s2_folder(out: Path) -> Path:
    (folder,) = [p for p in (out / "s2").iterdir() if not p.name.startswith(".")]
    return folder


# -- what an item says ------------------------------------------------------------------------
@pytest.mark.parametrize(("props", "raster", "want"), [
    ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}, -0.1, 0.0),
    ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": False}, -0.1, -1000.0),
    ({"s2:processing_baseline": "04.00"}, None, -1000.0),
    ({"s2:processing_baseline": "02.12"}, None, 0.0),
    ({"s2:product_uri": "S2A_MSIL2A_20220301T022551_N0400_R046_T50MLA_20220301T045337.SAFE"}, None, -1000.0),
    ({"s2:product_uri": "S2A_MSIL2A_20210301T022551_N0300_R046_T50MLA_20210301T045337.SAFE"}, None, 0.0),
    ({}, -0.1, -1000.0),
    ({}, None, None),
])
def test_dn_offset_follows_the_catalogue_flag_then_the_baseline(props, raster, want):
    item = {"id": "x", "properties": props, "assets": {"blue": {}}}
    if raster is not None:
        item["assets"]["blue"]["raster:bands"] = [{"scale": 0.0001, "offset": raster}]
    assert dn_offset(item, "blue").offset == want


def test_profiles_find_every_band_in_items_shaped_like_the_catalogues(cat_data):
    sc = cat_data["scene"]
    es, pc = resolve_catalogue("earth-search"), resolve_catalogue("planetary-computer")
    custom = resolve_catalogue("https://stac.example.org/v1")
    for b in (*S2_BANDS, "SCL"):
        es_key, pc_key = asset_key(es, sc.es_item, b), asset_key(pc, sc.pc_item, b)
        assert sc.es_item["assets"][es_key]["href"].endswith(f"/{b}.tif")
        assert sc.pc_item["assets"][pc_key]["href"].endswith(f"/{b}.tif")
        # a catalogue without a profile: bands found by their eo:bands names, in both item shapes
        assert asset_key(custom, sc.es_item, b) == es_key
        assert asset_key(custom, sc.pc_item, b) == pc_key
    assert asset_key(pc, sc.rtc_item, "VV") == "vv" and asset_key(custom, sc.rtc_item, "VV") == "vv"
    # Earth Search also lists JPEG 2000 copies on s3://: never chosen
    item = copy.deepcopy(sc.es_item)
    item["assets"] = {"blue-jp2": dict(item["assets"]["blue"], href="s3://sentinel-s2-l2a/B02.jp2",
                                       type="image/jp2"), **item["assets"]}
    assert asset_key(custom, item, "B02") == "blue"
    # an explicit mapping wins
    mapped = resolve_catalogue("https://stac.example.org/v1", assets={"B02": "green"})
    assert asset_key(mapped, item, "B02") == "green"


# -- search -----------------------------------------------------------------------------------
def _clone(item, new_id, when, *, cloud=None, shift_deg=0.0):
    it = copy.deepcopy(item)
    it["id"] = new_id
    it["properties"]["datetime"] = when.isoformat().replace("+00:00", "Z")
    if cloud is not None:
        it["properties"]["eo:cloud_cover"] = cloud
    if shift_deg:
        ring = it["geometry"]["coordinates"][0]
        it["geometry"]["coordinates"] = [[[x + shift_deg, y] for x, y in ring]]
        it["bbox"] = [it["bbox"][0] + shift_deg, it["bbox"][1], it["bbox"][2] + shift_deg, it["bbox"][3]]
    return it


def test_search_keeps_items_over_the_aois_in_the_dates_under_the_cloud_limit(cat_data, srv, tmp_path):
    pc = cat_data["scene"].pc_item
    srv.items = [
        pc,
        _clone(pc, "before", dt.datetime(2022, 12, 20, tzinfo=dt.timezone.utc)),
        _clone(pc, "cloudy", dt.datetime(2023, 3, 1, tzinfo=dt.timezone.utc), cloud=95.0),
        _clone(pc, "elsewhere", dt.datetime(2023, 9, 1, tzinfo=dt.timezone.utc), shift_deg=2.0),
        _clone(pc, "august", dt.datetime(2023, 8, 4, tzinfo=dt.timezone.utc), cloud=30.0),
        cat_data["scene"].rtc_item,
    ]
    s = fetch(_req(cat_data, tmp_path / "dl", srv), dry_run=True)
    s2 = [(p.stac_id, p.action) for p in s.planned if p.kind == "s2"]
    assert s2 == [(pc["id"], "fetch"), ("august", "fetch")]
    assert [p.stac_id for p in s.planned if p.kind == "s1"] == [cat_data["scene"].rtc_item["id"]]
    # the catalogue paged its answers (2 items a page) and the client followed the POST next links
    tokens = [t for m, p, t in srv.requests if p == "/search" and m == "POST"]
    assert None in tokens and "next:2" in tokens
    assert srv.file_bytes() == 0 and not (tmp_path / "dl").exists()  # a dry run downloads nothing
    # a narrower date range leaves only August
    s = fetch(_req(cat_data, tmp_path / "dl", srv, start=dt.date(2023, 8, 1)), dry_run=True)
    assert [p.stac_id for p in s.planned if p.kind == "s2"] == ["august"]


def test_a_catalogue_that_offers_only_get_is_searched_and_paged_with_get(cat_data, srv, tmp_path):
    pc = cat_data["scene"].pc_item
    srv.search_methods = ("GET",)
    srv.items = [pc, *(_clone(pc, f"more{i}", dt.datetime(2023, 8, 1 + i, tzinfo=dt.timezone.utc))
                       for i in range(3))]
    s = fetch(_req(cat_data, tmp_path / "dl", srv, s1="none"), dry_run=True)
    assert [p.stac_id for p in s.planned] == [pc["id"], "more0", "more1", "more2"]
    searches = [(m, t) for m, p, t in srv.requests if p == "/search"]
    assert {m for m, _ in searches} == {"GET"} and ("GET", "next:2") in searches


def test_sentinel1_can_come_from_another_catalogue(cat_data, srv, tmp_path):
    sc = cat_data["scene"]
    srv.items = [sc.es_item]  # Sentinel-2 from one catalogue (Earth Search shape) ...
    other = StacServer(srv.root).start()  # ... Sentinel-1 RTC from another
    other.collections, other.items = srv.collections, [sc.rtc_item]
    try:
        s = fetch(_req(cat_data, tmp_path / "dl", srv, s1_catalogue=resolve_catalogue(other.url)))
    finally:
        other.stop()
    assert s.exit_code == 0 and s.waiting_s1 == 0
    with FetchRecord(tmp_path / "dl") as rec:
        assert rec.get(sc.es_item["id"]).s1_id == sc.rtc_item["id"]
        assert rec.get(sc.es_item["id"]).catalogue == srv.url
        assert rec.get(sc.rtc_item["id"]).catalogue == other.url


# -- download ---------------------------------------------------------------------------------
def test_only_the_aoi_window_is_downloaded_into_the_layout_coal_prepare_reads(cat_data, srv, tmp_path):
    out = tmp_path / "dl"
    s = fetch(_req(cat_data, out, srv))
    assert s.exit_code == 0 and not s.failed and s.waiting_s1 == 0
    folder = _s2_folder(out)
    assert folder.name == cat_data["scene"].pc_item["id"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*(f"{b}.tif" for b in S2_BANDS), "SCL.tif",
                                                               "item.json"])
    # bytes: the S2 window + halo is a few percent of the tile; the unneeded B01 asset is never read
    sc = cat_data["scene"]
    sent = {k.split("/")[-1]: v for k, v in srv.bytes_sent.items() if "/pc/" in k}
    sizes = {p.name: p.stat().st_size for rel, p in sc.files.items() if rel.startswith("pc/")}
    assert "B01.tif" not in sent
    assert sum(sent.values()) < 0.15 * sum(v for k, v in sizes.items() if k != "B01.tif")
    assert sent["B02.tif"] < 0.10 * sizes["B02.tif"]
    # the window covers the AOI plus the halo on each side, on the 10 m grid
    n = AOI_PX[2] + 2 * default_halo()
    refl, reader = _reflectance(folder)
    assert (reader.grid.width, reader.grid.height) == (n, n)
    np.testing.assert_array_equal(refl, _reference(cat_data["synth"], reader))
    # Sentinel-1: its own grid, covering the S2 window
    (vv,) = (out / "s1").glob("*_VV.tif")
    with rasterio.open(vv) as ds:
        b = reader.grid.bounds
        assert ds.bounds.left <= b.left and ds.bounds.right >= b.right
        assert ds.bounds.bottom <= b.bottom and ds.bounds.top >= b.top
        assert ds.nodata == -32768.0 and ds.dtypes[0] == "float32"
    # the record, by STAC id
    with FetchRecord(out) as rec:
        row = rec.get(sc.pc_item["id"])
        assert row.status == "fetched" and row.s1_id == sc.rtc_item["id"]
        assert row.cloud_cover == pytest.approx(12.5) and row.window_cloud is not None
        assert rec.get(sc.rtc_item["id"]).path == f"s1/{vv.name}"
    for f in [*folder.glob("*.tif"), vv]:
        assert verify_file(f) is not None


def test_both_offset_conventions_give_the_products_reflectance(cat_data, srv, tmp_path):
    sc = cat_data["scene"]
    srv.items = [sc.pc_item]
    fetch(_req(cat_data, tmp_path / "pc", srv, s1="none"))
    srv.items = [sc.es_item]
    fetch(_req(cat_data, tmp_path / "es", srv, s1="none"))
    pc_dir, es_dir = _s2_folder(tmp_path / "pc"), _s2_folder(tmp_path / "es")
    with rasterio.open(pc_dir / "B04.tif") as a, rasterio.open(es_dir / "B04.tif") as b:
        pc_dn, es_dn = a.read(1).astype(int), b.read(1).astype(int)
        assert a.tags()["BOA_ADD_OFFSET"] == "-1000" and b.tags()["BOA_ADD_OFFSET"] == "0"
        assert "earthsearch:boa_offset_applied" in b.tags()["BOA_ADD_OFFSET_SOURCE"]
    valid = (pc_dn > 1000) & (es_dn > 0)
    assert valid.mean() > 0.9 and np.all(pc_dn[valid] - es_dn[valid] == 1000)  # the pixels differ ...
    pc_refl, reader = _reflectance(pc_dir)
    es_refl, _ = _reflectance(es_dir)
    # ... the tags say how, and coal-prepare records why; nothing is guessed
    assert reader.offset.source.startswith("metadata") and "processing baseline 05.09" in reader.offset.source
    ref = _reference(cat_data["synth"], reader)
    np.testing.assert_array_equal(pc_refl, ref)
    np.testing.assert_array_equal(es_refl, ref)


def test_an_item_already_fetched_is_not_fetched_again(cat_data, srv, tmp_path):
    out = tmp_path / "dl"
    first = fetch(_req(cat_data, out, srv))
    assert len(first.fetched) == 2
    srv.reset_counts()
    again = fetch(_req(cat_data, out, srv))
    assert again.fetched == [] and again.known == 1 and again.exit_code == 0
    assert srv.file_bytes() == 0
    assert "1 already fetched" in again.status_line()


def test_files_renamed_but_not_recorded_are_adopted_without_downloading(cat_data, srv, tmp_path):
    out = tmp_path / "dl"
    fetch(_req(cat_data, out, srv))
    before = _pixels(out)
    (out / "fetch.sqlite").unlink()  # as if killed between the rename and the record's commit
    srv.reset_counts()
    s = fetch(_req(cat_data, out, srv))
    assert s.exit_code == 0 and len(s.fetched) == 2 and srv.file_bytes() == 0
    assert _pixels(out) == before


def _pixels(out: Path) -> dict[str, str]:
    folder = _s2_folder(out)
    return {p.name: verify_file(p) for p in sorted(folder.glob("*.tif"))}


def test_retries_on_500s_timeouts_and_truncated_transfers(cat_data, srv, tmp_path):
    sc = cat_data["scene"]
    srv.items = [sc.pc_item]
    clean = tmp_path / "clean"
    fetch(_req(cat_data, clean, srv, s1="none"))
    base = f"/files/pc/{sc.pc_item['id']}"
    srv.reset_counts()
    srv.inject("/search", "status", times=2, status=503)
    srv.inject(f"{base}/B03.tif", "status", times=3, status=500)
    srv.inject(f"{base}/B05.tif", "truncate", times=2)
    srv.inject(f"{base}/B08.tif", "delay", times=1, seconds=2.5)
    out = tmp_path / "faulty"
    s = fetch(_req(cat_data, out, srv, s1="none", options=FetchOptions(retries=3, backoff=0.01, timeout=1)))
    assert s.exit_code == 0 and len(s.fetched) == 1
    assert all(f.times == 0 for f in srv.faults)  # every fault was met ...
    assert _pixels(out) == _pixels(clean)  # ... and the files are exactly those of a clean fetch


def test_a_server_that_keeps_failing_exits_69_and_the_next_run_resumes(cat_data, srv, tmp_path):
    sc = cat_data["scene"]
    srv.items = [sc.pc_item]
    base = f"/files/pc/{sc.pc_item['id']}"
    srv.inject(f"{base}/B07.tif", "status", times=10_000, status=502)
    out = tmp_path / "dl"
    s = fetch(_req(cat_data, out, srv, s1="none", options=FetchOptions(retries=2, backoff=0.01, timeout=5)))
    assert s.exit_code == ServiceUnavailableError.exit_code == 69
    assert s.unreachable.startswith("fetch failed:") and "B07" in s.unreachable
    assert not (out / "s2" / sc.pc_item["id"]).exists()  # nothing half-fetched counts ...
    part = out / "s2" / f".{sc.pc_item['id']}.partial"
    done_before = sorted(p.name for p in part.glob("B*.tif"))
    assert "B02.tif" in done_before and "B07.tif" not in done_before
    with FetchRecord(out) as rec:
        assert not rec.has(sc.pc_item["id"]) and rec.last_run()["status"] == "failed"
    srv.faults.clear()
    srv.reset_counts()
    s = fetch(_req(cat_data, out, srv, s1="none"))
    assert s.exit_code == 0 and len(s.fetched) == 1
    # ... and the bands completed before were kept, not downloaded again
    assert all(srv.bytes_sent.get(f"{base}/{b}", 0) == 0 for b in done_before)
    assert srv.bytes_sent[f"{base}/B07.tif"] > 0 and not part.exists()


def test_catalogue_down_is_exit_69_with_one_line(cat_data, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = CliRunner().invoke(fetch_cli, ["--aoi", str(cat_data["aoi"]), "--start", "2023-01-01", "--end",
                                         "2023-12-31", "-o", str(tmp_path / "dl"), "--catalog",
                                         f"http://127.0.0.1:{port}", "--s1", "none", "--retries", "1",
                                         "--timeout", "2", "-q"])
    assert res.exit_code == 69, res.output
    lines = [ln for ln in res.output.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("coal-fetch: fetch failed: the catalogue http://127.0.0.1")


def test_a_second_fetch_on_the_same_folder_exits_75(cat_data, srv, tmp_path):
    out = tmp_path / "dl"
    with FolderLock(out):
        with pytest.raises(FetchLockedError) as e:
            fetch(_req(cat_data, out, srv, s1="none"))
    assert e.value.exit_code == 75 and "another fetch" in str(e.value)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_get_the_umask_mode(cat_data, srv, tmp_path, umask):
    old = os.umask(umask)
    try:
        fetch(_req(cat_data, tmp_path / "dl", srv))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "dl").rglob("*") if p.is_file() and p.name != ".coal-fetch.lock"]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~umask}


# -- refusals ---------------------------------------------------------------------------------
def _cli(cat_data, tmp_path, *extra: str):
    return CliRunner().invoke(fetch_cli, ["--aoi", str(cat_data["aoi"]), "--start", "2023-01-01", "--end",
                                          "2023-12-31", "-o", str(tmp_path / "dl"), "-q", *extra])


def _one_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln]
    assert len(lines) == 1, res.output
    return lines[0]


def test_unknown_catalogue_is_refused_naming_the_option(cat_data, tmp_path):
    res = _cli(cat_data, tmp_path, "--catalog", "earthsearch")
    assert res.exit_code == 2
    line = _one_line(res)
    assert "--catalog 'earthsearch'" in line and "earth-search" in line and "URL" in line
    assert not (tmp_path / "dl").exists()


def test_a_url_that_is_not_a_stac_api_is_refused(cat_data, srv, tmp_path):
    res = _cli(cat_data, tmp_path, "--catalog", f"{srv.url}/not-an-api", "--s1", "none")
    assert res.exit_code == 2
    line = _one_line(res)
    assert "does not answer as a STAC API (HTTP 404" in line and "--catalog" in line


def test_missing_planetary_computer_key_names_the_variable(cat_data, tmp_path, monkeypatch):
    monkeypatch.delenv("PC_SDK_SUBSCRIPTION_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.planetarycomputer/settings.env either
    res = _cli(cat_data, tmp_path, "--catalog", "planetary-computer", "--s1", "rtc")
    assert res.exit_code == 2
    line = _one_line(res)
    assert "PC_SDK_SUBSCRIPTION_KEY" in line and "--s1 none" in line
    # the SDK's own settings file counts as set
    (tmp_path / ".planetarycomputer").mkdir()
    (tmp_path / ".planetarycomputer" / "settings.env").write_text("PC_SDK_SUBSCRIPTION_KEY=abc123\n")
    check_credentials(resolve_catalogue("planetary-computer"), "rtc")


def test_missing_token_variable_is_named(cat_data, srv, tmp_path, monkeypatch):
    monkeypatch.delenv("COALMINE_TEST_TOKEN", raising=False)
    res = _cli(cat_data, tmp_path, "--catalog", srv.url, "--token-env", "COALMINE_TEST_TOKEN")
    assert res.exit_code == 2 and "COALMINE_TEST_TOKEN" in _one_line(res)
    with pytest.raises(CredentialsError):
        check_credentials(resolve_catalogue(srv.url, token_env="COALMINE_TEST_TOKEN"), "none")


def test_a_token_from_the_environment_reaches_the_catalogue_and_its_own_files(cat_data, srv, tmp_path,
                                                                               monkeypatch):
    srv.items = [cat_data["scene"].pc_item]
    srv.token = "s3cret"
    try:
        monkeypatch.setenv("COALMINE_TEST_TOKEN", "s3cret")
        cat = resolve_catalogue(srv.url, token_env="COALMINE_TEST_TOKEN")
        s = fetch(_req(cat_data, tmp_path / "dl", srv, catalogue=cat, s1="none"))
        assert s.exit_code == 0 and len(s.fetched) == 1 and srv.file_bytes() > 0  # GDAL sent it too
        monkeypatch.setenv("COALMINE_TEST_TOKEN", "wrong")
        with pytest.raises(UsageError, match=r"refused access \(HTTP 401\); check the token in \$COALMINE_TEST_TOKEN"):
            fetch(_req(cat_data, tmp_path / "dl2", srv, catalogue=cat, s1="none"))
    finally:
        srv.token = None


def test_a_catalogue_without_the_sentinel1_kind_is_refused(cat_data, tmp_path):
    res = _cli(cat_data, tmp_path, "--catalog", "earth-search", "--s1", "rtc")
    assert res.exit_code == 2
    assert "no Sentinel-1 RTC collection" in _one_line(res)


def test_bad_asset_mapping_is_refused(cat_data, tmp_path):
    res = _cli(cat_data, tmp_path, "--catalog", "earth-search", "--s1", "none", "--asset", "B99=blue")
    assert res.exit_code == 2 and "B99" in _one_line(res)
    with pytest.raises(UsageError, match="NAME=VALUE"):
        from coalmine.runtime.cli.fetch import _pairs

        _pairs(("B02",), "--asset")


# -- signing ----------------------------------------------------------------------------------
def test_planetary_computer_urls_are_signed_through_its_token_service(srv, monkeypatch):
    import planetary_computer
    from planetary_computer import sas, settings

    monkeypatch.setenv("PC_SDK_SAS_URL", f"{srv.url}/api/sas/v1/token")
    settings.Settings.get.cache_clear()
    sas.TOKEN_CACHE.clear()
    try:
        cat = resolve_catalogue("planetary-computer")
        href = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/50/M/LA/B02_10m.tif"
        signed = sign_href(cat, href)
        assert signed.startswith(href + "?") and "sig=test-sentinel2l2a01-sentinel2-l2" in signed
        assert sign_href(resolve_catalogue("earth-search"), href) == href  # no signing elsewhere
        assert planetary_computer.sign(srv.url + "/files/x.tif") == srv.url + "/files/x.tif"
    finally:
        settings.Settings.get.cache_clear()
        sas.TOKEN_CACHE.clear()


def test_importing_the_runtime_and_the_command_needs_no_stac_client():
    code = ("import sys, coalmine.runtime, coalmine.runtime.fetch, coalmine.runtime.cli.fetch; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pystac_client', 'pystac', "
            "'planetary_computer')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr


def test_without_pystac_client_the_message_gives_the_pip_command(cat_data, srv, tmp_path, monkeypatch):
    from coalmine.runtime.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "pystac_client", None)  # import pystac_client -> not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "coalmine\[fetch\]"'):
        fetch(_req(cat_data, tmp_path / "dl", srv, s1="none"))


# -- a killed fetch -----------------------------------------------------------------------------
def test_a_fetch_killed_mid_download_resumes_and_matches_a_clean_one(cat_data, srv, tmp_path):
    sc = cat_data["scene"]
    srv.items = [sc.pc_item]
    clean = tmp_path / "clean"
    fetch(_req(cat_data, clean, srv, s1="none"))
    base = f"/files/pc/{sc.pc_item['id']}"
    srv.inject(f"{base}/B", "delay", times=10_000, seconds=0.3)  # slow bands: time to kill mid-way
    out = tmp_path / "dl"
    cmd = [sys.executable, "-m", "coalmine.runtime.cli.fetch", "--aoi", str(cat_data["aoi"]), "--start",
           "2023-01-01", "--end", "2023-12-31", "-o", str(out), "--catalog", srv.url, "--s1", "none", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = out / "s2" / f".{sc.pc_item['id']}.partial"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(list(part.glob("B*.tif"))) < 3:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = sorted(p.name for p in part.glob("B*.tif"))
    assert 3 <= len(kept) < len(S2_BANDS)
    assert not (out / "s2" / sc.pc_item["id"]).exists()
    con = sqlite3.connect(out / "fetch.sqlite")
    assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    con.close()
    srv.faults.clear()
    srv.reset_counts()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out / "s2" / sc.pc_item["id"])
    assert all(srv.bytes_sent.get(f"{base}/{b}", 0) == 0 for b in kept)  # finished bands were kept
    assert sorted(p.name for p in _s2_folder(out).iterdir()) == sorted(p.name for p in _s2_folder(clean).iterdir())
    assert _pixels(out) == _pixels(clean)
