"""Every file a command writes gets the mode a plain ``open(path, "w")`` would give it.

Outputs go through temporary files and renames; a temporary file made by ``tempfile.mkstemp``
is 0600, which a colleague, a web server serving the report or a Dask worker under another
account cannot read. Here each command runs under umask 022 on a small generated series
(coal-prepare, coal-train and its evaluate, coal-export with fp16 and int8, coal-run,
coal-monitor) and every file it created must be 0644; the write helpers are also checked
under other umasks, so a hard-coded 0644 would not pass.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from coalmine.runtime import _io
from coalmine.runtime.errors import OutputError
from factories import make_tiny_bundle
from test_monitor_data import synth_config, write_aois

UMASK = 0o022
WANT = 0o666 & ~UMASK


@pytest.fixture(autouse=True)
def _umask():
    old = os.umask(UMASK)
    yield
    os.umask(old)


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _wrong_modes(root: Path, before: dict[str, float] | None = None) -> dict[str, str]:
    """Files under ``root`` created or rewritten since ``before`` whose mode is not WANT."""
    before = before or {}
    out = {}
    for rel, mtime in _files(root).items():
        if before.get(rel) == mtime:
            continue
        mode = stat.S_IMODE((root / rel).stat().st_mode)
        if mode != WANT:
            out[rel] = oct(mode)
    return out


def _invoke(main, args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two generated years (192 px) with labels; the commands below write beside them."""
    from coalmine.train.synth import make_series

    old = os.umask(UMASK)
    try:
        root = tmp_path_factory.mktemp("modes")
        scenes = make_series(root / "series", (2017, 2018), seed=5, size=192)
        return root, scenes
    finally:
        os.umask(old)


def test_coal_prepare_outputs(work):
    from coalmine.runtime.cli.prepare import main

    root, scenes = work
    out = root / "prepare"
    s = scenes[0]
    _invoke(main, ["--s2", s.s2_dir, "--s1", s.s1_path, "-o", out / "plain.tif", "-q"])
    _invoke(main, ["--s2", s.s2_dir, "--s1", s.s1_path, "-o", out / "cog.tif", "--cog",
                   "--timings", out / "t.json", "-q"])
    assert sorted(_files(out)) == ["cog.tif", "plain.tif", "t.json"]
    assert _wrong_modes(out) == {}


@pytest.fixture(scope="module")
def trained(work):
    """coal-train (1 epoch, 64 px tiles) on both years; returns the bundle folder."""
    from coalmine.train.cli import main

    root, scenes = work
    old = os.umask(UMASK)
    try:
        args = ["train", "-o", root / "bundle", "--epochs", "1", "--tile", "64", "--batch-size", "4",
                "--block-tiles", "1", "--device", "cpu", "--patience", "0", "-q"]
        for s in scenes:
            args += ["--scene", s.s2_dir, "--s1", s.s1_path, "--labels", s.label_path]
        _invoke(main, args)
    finally:
        os.umask(old)
    return root / "bundle"


def test_coal_train_outputs(trained):
    names = set(_files(trained))
    assert {"bundle.json", "report.json", "log.csv", "curves.png", "model.pt"} <= names
    assert _wrong_modes(trained) == {}
    work_dir = trained.with_name(trained.name + ".work")
    assert _files(work_dir), "coal-train wrote no work files (checkpoints, patch cache)"
    assert _wrong_modes(work_dir) == {}


def test_coal_train_evaluate_json(trained, work):
    from coalmine.train.cli import main

    root, scenes = work
    s = scenes[1]
    out = root / "evaluate"
    out.mkdir()
    _invoke(main, ["evaluate", "--bundle", trained, "--scene", s.s2_dir, "--s1", s.s1_path,
                   "--labels", s.label_path, "--json", out / "eval.json", "--device", "cpu", "-q"])
    assert sorted(_files(out)) == ["eval.json"]
    assert _wrong_modes(out) == {}


def test_coal_export_outputs(trained):
    import torch
    from coalmine.export.cli import main

    before = _files(trained)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _invoke(main, [trained, "--fp16", "--int8", "--no-engine", "-q"])
    finally:
        torch.set_num_threads(n)
    new = set(_files(trained)) - set(before)
    assert {"model.onnx", "model.fp16.onnx", "model.int8.onnx", "parity_report.json"} <= new
    assert _wrong_modes(trained, before) == {}  # the new files and the rewritten bundle.json


def test_coal_run_outputs(work, tmp_path):
    from coalmine.runtime.cli.run import main

    root, scenes = work
    bundle = make_tiny_bundle(tmp_path / "bundle", kind="linear")
    s = scenes[0]
    write_aois(tmp_path / "aois.geojson")
    out = tmp_path / "run"
    _invoke(main, [s.s2_dir, "--s1", s.s1_path, "-b", bundle.path, "-o", out,
                   "--aoi", tmp_path / "aois.geojson", "--backend", "cpu", "-q"])
    assert {p.rsplit("_", 1)[-1] for p in _files(out)} == {"prob.tif", "mask.tif", "mines.geojson", "summary.json"}
    assert _wrong_modes(out) == {}


def test_coal_monitor_outputs(work, tmp_path):
    from coalmine.runtime.cli.monitor import main

    root, _ = work
    (tmp_path / "series").symlink_to(root / "series")
    make_tiny_bundle(tmp_path / "bundle", kind="linear")
    write_aois(tmp_path / "aois.geojson")
    (tmp_path / "monitor.toml").write_text(synth_config())
    _invoke(main, [tmp_path / "monitor.toml", "-q"])
    out = tmp_path / "out"
    names = _files(out)
    for want in ("report.html", "reports/yearly_areas.csv", "reports/chart_total.png",
                 "yearly/mask_2017.tif", "change/change_2017_2018.tif", "ledger.sqlite"):
        assert want in names
    assert any(n.endswith("_summary.json") for n in names)
    assert _wrong_modes(out) == {}


# -- the helpers themselves, under umasks other than 022 ---------------------------------------------
@pytest.mark.parametrize("umask", [0o002, 0o027, 0o077])
def test_write_helpers_follow_the_umask(tmp_path, umask):
    os.umask(umask)
    want = 0o666 & ~umask
    _io.atomic_write_bytes(tmp_path / "a.bin", b"x")
    _io.atomic_write_text(tmp_path / "a.txt", "x")
    _io.atomic_write_json(tmp_path / "a.json", {"x": 1})
    with _io.atomic_output(tmp_path / "sub" / "a.tif") as tmp:
        tmp.write_bytes(b"x")
    keep = _io.temp_path(tmp_path / "b.onnx")
    with _io.atomic_folder(tmp_path / "bundle") as tmp:
        (tmp / "bundle.json").write_text("{}")
    for p in (tmp_path / "a.bin", tmp_path / "a.txt", tmp_path / "a.json", tmp_path / "sub" / "a.tif", keep,
              tmp_path / "bundle" / "bundle.json"):
        assert stat.S_IMODE(p.stat().st_mode) == want, p
    assert stat.S_IMODE((tmp_path / "bundle").stat().st_mode) == 0o777 & ~umask
    with open(tmp_path / "plain", "w") as f:  # the reference: what open() gives
        f.write("x")
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == want


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_sqlite_files_follow_the_umask(tmp_path, umask):
    # SQLite alone creates a database 0644 whatever the umask (and its -wal/-shm files like it).
    from coalmine.runtime.fetch.record import FetchRecord
    from coalmine.runtime.monitor.ledger import Ledger

    os.umask(umask)
    want = 0o666 & ~umask
    led = Ledger(tmp_path / "out" / "ledger.sqlite")
    rec = FetchRecord(tmp_path / "downloads")
    try:
        led.scenes()  # a read keeps the WAL files open beside the database
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert {"ledger.sqlite", "fetch.sqlite", "ledger.sqlite-wal", "fetch.sqlite-wal"} <= {p.name for p in files}
        assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: oct(want) for p in files}
    finally:
        led.close()
        rec.close()
    assert stat.S_IMODE((tmp_path / "out" / "ledger.sqlite").stat().st_mode) == want


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    (tmp_path / "r.json").write_text("old")
    with pytest.raises(ValueError):
        _io.atomic_write_json(tmp_path / "r.json", {"x": float("nan")})
    with pytest.raises(RuntimeError), _io.atomic_output(tmp_path / "r.tif") as tmp:
        tmp.write_bytes(b"half")
        (tmp.parent / (tmp.name + ".aux.xml")).write_text("gdal side file")
        raise RuntimeError("writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert (tmp_path / "r.json").read_text() == "old"


def test_atomic_output_flushes_the_file_before_the_rename_and_its_folder_after(tmp_path, monkeypatch):
    # Durable against a power cut: the new bytes reach the disk before the new name does, and
    # the folder holding the new name is flushed too.
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "sub" / "a.json"
    _io.atomic_write_json(target, {"x": 1})
    assert events == [("fsync", target.stat().st_ino), ("replace", target), ("fsync", target.parent.stat().st_ino)]


def test_atomic_folder_replaces_the_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), _io.atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with _io.atomic_folder(target, tag="a1") as tmp:
        assert tmp.name == ".model.partial-a1" and not list(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no old copy, no partial folder
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_temp_path_that_cannot_be_created_names_the_option(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match=r"cannot write into .*file \(Not a directory\); choose another --bundle"):
        _io.temp_path(tmp_path / "file" / "model.onnx", "--bundle")
