"""Every command on a table of hostile inputs, on a full disk, and killed mid-run.

For every row of the table: the exit code the README documents (1 bad data, 2 bad usage),
exactly one line on stderr without a traceback, naming what is wrong, no file left in the
output folder (hidden ones included) and no file written anywhere else. The full-disk tests
mount a small tmpfs in a private mount namespace (``unshare -rm``) and skip with the reason
where the kernel does not allow that.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.runtime.cli.monitor import main as monitor_main
from coalmine.runtime.cli.prepare import main as prepare_main
from coalmine.runtime.cli.run import main as run_main
from factories import (
    DEFAULT_TRANSFORM,
    UTM50S,
    make_stack,
    make_tiny_bundle,
    write_gpkg,
    write_stack,
    write_vector,
)
from pyproj import Transformer

BIN = Path(sys.executable).parent


def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _scene_lonlat(rows=80, cols=96):
    """The test scene's corners in lon/lat (west, south, east, north)."""
    tr = Transformer.from_crs(UTM50S, "EPSG:4326", always_xy=True)
    x0, y1 = DEFAULT_TRANSFORM * (0, 0)
    x1, y0 = DEFAULT_TRANSFORM * (cols, rows)
    (w, e), (s, n) = tr.transform([x0, x1], [y0, y1])
    return w, s, e, n


def _ring(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


# -- hostile inputs, one row each --------------------------------------------------------------

def _inside_lonlat(swap=False):
    w, s, e, n = _scene_lonlat()
    cx, cy, d = (w + e) / 2, (s + n) / 2, (e - w) / 8
    g = _ring(cx - d, cy - d, cx + d, cy + d)
    if swap:
        g = {"type": "Polygon", "coordinates": [[[y, x] for x, y in g["coordinates"][0]]]}
    return g


def _make(kind: str, tmp: Path) -> dict[str, Path]:
    """Inputs for one row: the tiny bundle and scene, damaged as ``kind`` says."""
    bundle = make_tiny_bundle(tmp / "bundle", kind="linear", tile=64, overlap=16).path
    scene = write_stack(tmp / "scene.tif", make_stack(80, 96, seed=3))
    made = {"bundle": bundle, "scene": scene}
    if kind == "all_nan":
        write_stack(scene, np.full((23, 80, 96), np.nan, np.float32))
    elif kind == "uint16":
        with rasterio.open(scene) as ds:
            prof, desc, tags = ds.profile, ds.descriptions, ds.tags()
            data = ds.read()
        prof.update(dtype="uint16", nodata=None)
        with rasterio.open(scene, "w", **prof) as ds:
            ds.write(np.clip(data * 1000, 0, 65535).astype(np.uint16))
            ds.descriptions = desc
            ds.update_tags(**tags)
    elif kind in ("rgb", "four_floats", "stack_names_twice", "s2_bands"):
        count, dtype = {"rgb": (3, "uint8"), "four_floats": (4, "float32"), "stack_names_twice": (2, "float32"),
                        "s2_bands": (3, "uint16")}[kind]
        with rasterio.open(scene, "w", driver="GTiff", width=96, height=80, count=count, dtype=dtype, crs=UTM50S,
                           transform=DEFAULT_TRANSFORM) as ds:
            ds.write(np.full((count, 80, 96), 7, dtype))
            if kind == "stack_names_twice":
                ds.descriptions = ("VV", "VV")
            if kind == "s2_bands":
                ds.descriptions = ("B02", "B03", "B04")
    elif kind == "truncated":
        data = scene.read_bytes()
        scene.write_bytes(data[: len(data) // 3])
    elif kind in ("escape", "absolute"):
        j = bundle / "bundle.json"
        d = json.loads(j.read_text())
        d["files"]["onnx"] = "../../x.onnx" if kind == "escape" else "/etc/passwd"
        j.write_text(json.dumps(d))
    elif kind == "huge_tile":
        j = bundle / "bundle.json"
        d = json.loads(j.read_text())
        d["tile"]["size"] = 2**30
        j.write_text(json.dumps(d))
    elif kind == "dup_aoi":
        made["aoi"] = write_vector(tmp / "dup.geojson", [({"name": "A"}, _inside_lonlat()),
                                                         ({"name": "A"}, _inside_lonlat())])
    elif kind == "swapped_lonlat":
        made["aoi"] = write_vector(tmp / "latlon.geojson", [({"name": "pit"}, _inside_lonlat(swap=True))])
    elif kind == "swapped_utm":
        x0, y0 = DEFAULT_TRANSFORM * (20, 60)
        x1, y1 = DEFAULT_TRANSFORM * (60, 20)
        made["aoi"] = write_gpkg(tmp / "northing_first.gpkg", [({"name": "pit"}, _ring(y0, x0, y1, x1))], epsg=32750)
    elif kind == "nan_aoi":  # GDAL reads the NaN that some tools write into GeoJSON
        made["aoi"] = tmp / "nan.geojson"
        made["aoi"].write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
                               '{"name": "x"}, "geometry": {"type": "Polygon", "coordinates": [[[115.2, -2.7], '
                               '[NaN, -2.7], [115.3, -2.6], [115.2, -2.7]]]}}]}')
    elif kind == "missing_aoi":
        made["aoi"] = tmp / "no_such.geojson"
    return made


RUN_ROWS = [
    # (id, kind of damage, extra args, exit code, words the line must hold)
    ("all-nan-scene", "all_nan", [], 1, ["scene.tif", "has no valid pixel"]),
    ("uint16-stack", "uint16", [], 1, ["scene.tif", "uint16"]),
    ("truncated-stack", "truncated", [], 1, ["scene.tif"]),
    # not a stack and not Sentinel-2 either: the advice "pass --s1" would send the user astray
    ("rgb-image", "rgb", [], 1, ["scene.tif", "3 bands (uint8) without band descriptions", "23-band stack"]),
    ("four-float-bands", "four_floats", [], 1, ["4 bands (float32) without band descriptions"]),
    ("stack-names-twice", "stack_names_twice", [], 1, ["named VV, VV", "coal-prepare"]),
    ("sentinel-2-without-s1", "s2_bands", [], 2, ["is raw Sentinel-2 input", "--s1"]),
    ("bundle-file-escapes", "escape", [], 1, ["../../x.onnx"]),
    ("bundle-file-absolute", "absolute", [], 1, ["/etc/passwd", "absolute path"]),
    ("bundle-tile-huge", "huge_tile", [], 1, ["bundle.json: tile size 1073741824 is larger than 4096"]),
    ("threshold-nan", None, ["--threshold", "nan"], 2, ["--threshold nan"]),
    ("min-area-nan", None, ["--min-area", "nan"], 2, ["--min-area nan"]),
    ("tile-huge", None, ["--tile", "1048576"], 2, ["--tile 1048576"]),
    ("prefix-escapes", None, ["--prefix", "../../x"], 2, ["--prefix", "plain name"]),
    ("duplicate-aoi-names", "dup_aoi", [], 1, ["dup.geojson", "both named 'A'"]),
    ("aoi-lat-before-lon", "swapped_lonlat", [], 1, ["latlon.geojson", "swapped"]),
    ("aoi-northing-before-easting", "swapped_utm", [], 1, ["northing_first.gpkg", "swapped"]),
    ("aoi-missing", "missing_aoi", [], 1, ["no_such.geojson"]),
    ("aoi-nan-coordinates", "nan_aoi", [], 1, ["feature 1 of", "nan.geojson", "not numbers"]),
]


@pytest.mark.parametrize("kind,args,code,words", [r[1:] for r in RUN_ROWS], ids=[r[0] for r in RUN_ROWS])
def test_coal_run_hostile_inputs(tmp_path, kind, args, code, words):
    made = _make(kind, tmp_path)
    out = tmp_path / "out"
    before = _files(tmp_path)
    argv = [str(made["scene"]), "-b", str(made["bundle"]), "-o", str(out), "-q", *args]
    if "aoi" in made:
        argv += ["--aoi", str(made["aoi"])]
    r = CliRunner().invoke(run_main, argv)
    assert r.exit_code == code, r.stderr
    line = _one_line(r.stderr)
    assert line.startswith("coal-run: error: ")
    for w in words:
        assert w in line, line
    if kind != "s2_bands":  # the advice for raw Sentinel-2 only
        assert "pass the Sentinel-1 VV raster with --s1" not in line
    assert not out.exists() or not os.listdir(out)
    assert _files(tmp_path) - before - {out} == set()
    assert r.stdout == ""


def _monitor_project(tmp: Path, run: str = "", output: str = "out") -> Path:
    bundle = make_tiny_bundle(tmp / "bundle", kind="linear", tile=64, overlap=16).path
    write_stack(tmp / "incoming" / "S2_20190715_stack.tif", make_stack(64, 64, seed=1))
    write_vector(tmp / "aois.geojson", [({"name": "A"}, _inside_lonlat())])
    cfg = tmp / "monitor.toml"
    run = run or 'backend = "cpu"'
    cfg.write_text(f'bundle = "{bundle}"\naois = "aois.geojson"\noutput = "{output}"\n[run]\n{run}\n'
                   '[[search]]\nfolder = "incoming"\nglob = "S2_*.tif"\ndate_format = "%Y%m%d"\n')
    return cfg


MONITOR_ROWS = [
    ("threshold-1.5", {"run": "threshold = 1.5"}, 2, ["threshold", "1.5"]),
    ("tile-100", {"run": "tile = 100"}, 2, ["tile", "100"]),
    ("backend-gpu", {"run": 'backend = "gpu"'}, 2, ["backend", "gpu"]),
    ("threshold-nan", {"run": "threshold = nan"}, 2, ["threshold", "nan"]),
    ("unset-variable", {"output": "${COALMINE_NO_SUCH_VARIABLE}/out"}, 2, ["COALMINE_NO_SUCH_VARIABLE"]),
]


@pytest.mark.parametrize("edit,code,words", [r[1:] for r in MONITOR_ROWS], ids=[r[0] for r in MONITOR_ROWS])
def test_coal_monitor_hostile_configurations(tmp_path, edit, code, words, monkeypatch):
    monkeypatch.delenv("COALMINE_NO_SUCH_VARIABLE", raising=False)
    cfg = _monitor_project(tmp_path, **edit)
    before = _files(tmp_path)
    r = CliRunner().invoke(monitor_main, [str(cfg)])
    assert r.exit_code == code, r.stderr
    line = _one_line(r.stderr)
    assert line.startswith("coal-monitor: error: ")
    for w in words:
        assert w in line, line
    assert _files(tmp_path) == before  # not even the output folder


class _RunsCode:
    """Unpickling this creates the file ``marker``: the proof that a loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


EXPORT_ROWS = [
    ("model-file-escapes", "escape", 1, ["files.onnx = '../../x.onnx' names a folder"]),
    ("model-file-absolute", "absolute", 1, ["files.onnx = '/etc/passwd' is an absolute path"]),
    ("model-pt-runs-code", "pickle", 1, ["model.pt holds Python objects other than tensors"]),
]


@pytest.mark.parametrize("kind,code,words", [r[1:] for r in EXPORT_ROWS], ids=[r[0] for r in EXPORT_ROWS])
def test_coal_export_hostile_bundles(tmp_path, kind, code, words):
    torch = pytest.importorskip("torch")
    from coalmine.export.cli import main as export_main

    made = _make(kind if kind != "pickle" else "", tmp_path)
    marker = tmp_path / "ran"
    if kind == "pickle":
        torch.save({"spec": {}, "state_dict": _RunsCode(marker)}, made["bundle"] / "model.pt")
        np.savez(made["bundle"] / "val_tiles.npz", x=np.full((1, 23, 64, 64), 0.5, np.float32),
                 y=np.zeros((1, 64, 64), np.uint8))
    before = {p: p.stat().st_mtime_ns for p in _files(tmp_path)}
    r = CliRunner().invoke(export_main, [str(made["bundle"]), "--no-engine", "-q"])
    assert r.exit_code == code, r.stderr
    line = _one_line(r.stderr)
    assert line.startswith("coal-export: error: ")
    for w in words:
        assert w in line, line
    assert {p: p.stat().st_mtime_ns for p in _files(tmp_path)} == before  # nothing written, nothing changed
    assert not marker.exists()


TRAIN_ROWS = [
    ("lr-nan", ["--lr", "nan"], 2, ["--lr nan must be a finite number"]),
    ("lr-inf", ["--lr", "inf"], 2, ["--lr inf must be a finite number"]),
    ("val-fraction-nan", ["--val-fraction", "nan"], 2, ["--val-fraction nan must be a finite number"]),
    ("threshold-1.5", ["--threshold", "1.5"], 2, ["threshold", "1.5", "'tune'"]),
    ("tile-100", ["--tile", "100"], 2, ["tile", "100", "multiple of 32"]),
    ("labels-missing", ["--labels", "{tmp}/no_such_labels.tif"], 1, ["no_such_labels.tif", "does not exist"]),
]


@pytest.mark.parametrize("args,code,words", [r[1:] for r in TRAIN_ROWS], ids=[r[0] for r in TRAIN_ROWS])
def test_coal_train_hostile_options(tmp_path, args, code, words):
    pytest.importorskip("torch")
    from coalmine.train.cli import main as train_main

    scene = write_stack(tmp_path / "scene.tif", make_stack(80, 96, seed=3))
    with rasterio.open(tmp_path / "labels.tif", "w", driver="GTiff", width=96, height=80, count=1, dtype="uint8",
                       crs=UTM50S, transform=DEFAULT_TRANSFORM) as ds:
        ds.write(np.zeros((1, 80, 96), np.uint8))
    args = [a.format(tmp=tmp_path) for a in args]
    labels = [] if "--labels" in args else ["--labels", str(tmp_path / "labels.tif")]
    before = _files(tmp_path)
    r = CliRunner().invoke(train_main, ["--scene", str(scene), *labels, "-o", str(tmp_path / "bundle"),
                                        "--device", "cpu", "-q", *args])
    assert r.exit_code == code, r.stderr
    line = _one_line(r.stderr)
    assert line.startswith("coal-train: error: ") or line.startswith("Error: "), line
    for w in words:
        assert w in line, line
    assert _files(tmp_path) == before  # neither the bundle nor its work folder


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from coalmine.train.synth import make_scene

    return make_scene(tmp_path_factory.mktemp("synth") / "s", 2019, seed=4, size=96)


PREPARE_ROWS = [
    ("s2-offset-nan", ["--s2-offset", "nan"], 2, ["--s2-offset nan"]),
    ("s2-offset-inf", ["--s2-offset", "inf"], 2, ["--s2-offset inf"]),
    ("block-zero", ["--block", "0"], 2, ["--block"]),
    ("timings-is-a-folder", ["--timings", "{tmp}"], 2, ["--timings", "is a folder"]),
    ("s1-is-the-s2", ["--s1", "{s2}"], 1, []),
    ("scl-is-a-stack", ["--scl", "{stack}"], 1, ["--scl", "stack.tif", "has 23 bands", "*_SCL_20m.jp2"]),
]


@pytest.mark.parametrize("args,code,words", [r[1:] for r in PREPARE_ROWS], ids=[r[0] for r in PREPARE_ROWS])
def test_coal_prepare_hostile_inputs(synth, tmp_path, args, code, words):
    out = tmp_path / "out"
    stack = write_stack(tmp_path / "stack.tif", make_stack(32, 32, seed=5))
    fill = {"s2": str(synth.s2_dir), "tmp": str(tmp_path), "stack": str(stack)}
    args = [a.format(**fill) for a in args]
    base = {"--s2": str(synth.s2_dir), "--s1": str(synth.s1_path), "-o": str(out / "s.tif")}
    for k in list(base):
        if k in args:
            base.pop(k)
    argv = [x for kv in base.items() for x in kv] + args
    r = CliRunner().invoke(prepare_main, argv)
    assert r.exit_code == code, r.stderr
    line = _one_line(r.stderr)
    assert line.startswith("coal-prepare: error: ") or line.startswith("Error: "), line
    for w in words:
        assert w in line, line
    assert not out.exists() or not os.listdir(out)


# -- a full disk ---------------------------------------------------------------------------------

def _namespaces_ok() -> str | None:
    if not shutil.which("unshare"):
        return "unshare(1) is not installed"
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"cannot mount a tmpfs in a private namespace: {r.stderr.strip()}"


NO_TMPFS = _namespaces_ok()
needs_tmpfs = pytest.mark.skipif(NO_TMPFS is not None, reason=str(NO_TMPFS))


def _on_small_disk(disk: Path, size: str, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a ``size`` tmpfs mounted on ``disk``, seen by it alone; the
    coalmine commands are on its PATH."""
    disk.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "DISK": str(disk)}
    body = f'mount -t tmpfs -o size={size} tmpfs "$DISK" || exit 99\n' + textwrap.dedent(script)
    return subprocess.run(["unshare", "-rm", "sh", "-c", body], capture_output=True, text=True, env=env,
                          timeout=240)


def _result(stdout: str) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in stdout.splitlines() if "=" in ln and not ln.startswith(" "))


@needs_tmpfs
@pytest.mark.parametrize("size", ["4k", "64k", "200k"])
def test_coal_run_on_a_full_disk(tmp_path, size):
    bundle = make_tiny_bundle(tmp_path / "bundle", kind="linear", tile=64, overlap=16).path
    scene = write_stack(tmp_path / "scene.tif", make_stack(256, 256, seed=3))
    r = _on_small_disk(tmp_path / "disk", size, f"""
        coal-run {scene} -b {bundle} -o "$DISK/out" -q >/dev/null 2>"$DISK/../err"
        echo rc=$?
        echo left=$(ls -A "$DISK/out" | tr '\\n' ' ')
    """)
    res = _result(r.stdout)
    assert res["rc"] == "1", (r.stdout, r.stderr)
    line = _one_line((tmp_path / "err").read_text())
    assert line.startswith("coal-run: error: cannot write ") and f"{tmp_path}/disk/out" in line
    assert "free now on the disk holding" in line and "choose another --out" in line
    assert ".coalmine-" not in line.split(";")[0].split("(")[0]  # names the user's file, not a hidden one
    assert res["left"].strip() == ""  # nothing half-written, no hidden leftovers


@needs_tmpfs
@pytest.mark.parametrize("size", ["8k", "256k"])
def test_coal_prepare_on_a_full_disk(synth, tmp_path, size):
    r = _on_small_disk(tmp_path / "disk", size, f"""
        coal-prepare --s2 {synth.s2_dir} --s1 {synth.s1_path} -o "$DISK/out/s.tif" -q {'--cog' if size != '8k' else ''} \
            2>"$DISK/../err"
        echo rc=$?
        echo left=$(ls -A "$DISK/out" | tr '\\n' ' ')
    """)
    res = _result(r.stdout)
    assert res["rc"] == "1", (r.stdout, r.stderr, (tmp_path / "err").read_text())
    line = _one_line((tmp_path / "err").read_text())
    assert line.startswith("coal-prepare: error: cannot write ") and "free now on the disk holding" in line
    assert "choose another -o" in line
    assert res["left"].strip() == ""


MONITOR_ON_FULL_DISK = """
    cd {root}
    mv incoming/S2_2020* .
    coal-monitor monitor.toml 2>/dev/null; echo first=$?
    mv S2_2020* incoming/
    dd if=/dev/zero of="$DISK/filler" bs=4k 2>/dev/null
    truncate -s -{leave} "$DISK/filler"
    coal-monitor monitor.toml -q 2>"$DISK/../err"; echo full=$?
    echo left=$(ls -A "$DISK/out/scenes" | tr '\\n' ' ')
    rm "$DISK/filler"
    coal-monitor monitor.toml 2>"$DISK/../err2"; echo again=$?
    python -c "import sqlite3; print('rows=' + repr(sqlite3.connect('$DISK/out/ledger.sqlite').execute(
        'SELECT date, status, attempts FROM scenes ORDER BY date').fetchall()))"
"""


@needs_tmpfs
@pytest.mark.parametrize("leave,where", [(0, "lock file"), (64 * 1024, "")])
def test_coal_monitor_on_a_full_disk_keeps_its_history(tmp_path, leave, where):
    """A full disk stops the run with one line; the ledger keeps its history, no scene is counted
    as failed, and once there is space again the next run carries on."""
    root = tmp_path
    write_stack(root / "incoming" / "S2_20200715_stack.tif", make_stack(64, 64, seed=2))
    cfg = _monitor_project(root)
    cfg.write_text(cfg.read_text().replace('output = "out"', f'output = "{root}/disk/out"'))
    r = _on_small_disk(root / "disk", "8m", MONITOR_ON_FULL_DISK.format(root=root, leave=leave))
    res = _result(r.stdout)
    assert res["first"] == "0" and res["full"] == "1", (r.stdout, r.stderr)
    line = _one_line((root / "err").read_text())
    assert line.startswith("coal-monitor: error: cannot write ") and where in line
    assert "free now on the disk holding" in line and "move it aside" not in line
    assert len(res["left"].split()) == 1  # the first scene's folder, nothing half-written beside it
    assert res["again"] == "0", (root / "err2").read_text()
    assert "1 new scene processed, 1 unchanged, 0 failed" in (root / "err2").read_text()
    assert res["rows"] == "[('2019-07-15', 'done', 1), ('2020-07-15', 'done', 1)]"


WRITE_A_CHART = """
import sys
from pathlib import Path
from coalmine.runtime._io import atomic_write_bytes
from coalmine.runtime.errors import OutputError
try:
    atomic_write_bytes(Path(sys.argv[1]) / "chart_total.png", b"x" * 200_000, "output folder")
except OutputError as exc:
    print(f"disk_full={exc.disk_full}")
    print(f"msg={exc}")
"""


@needs_tmpfs
def test_a_report_file_on_a_full_disk_names_itself(tmp_path):
    """Charts, tables and pages are written with Python's own file objects, whose ENOSPC has no
    file name: the refusal names the file the user would have got."""
    r = _on_small_disk(tmp_path / "disk", "64k", f"""
        {sys.executable} -c '{WRITE_A_CHART}' "$DISK"
        echo left=$(ls -A "$DISK" | tr '\\n' ' ')
    """)
    res = _result(r.stdout)
    assert res.get("disk_full") == "True", (r.stdout, r.stderr)
    assert res["msg"].startswith(f"cannot write {tmp_path}/disk/chart_total.png (No space left on device); ")
    assert "free now on the disk holding" in res["msg"] and "choose another output folder" in res["msg"]
    assert res["left"].strip() == ""


def test_an_output_name_taken_by_a_folder_is_named(tmp_path):
    from coalmine.runtime._io import atomic_write_text
    from coalmine.runtime.errors import OutputError

    (tmp_path / "report.html").mkdir()
    with pytest.raises(OutputError, match=r"report.html is a folder, where a file is to be written; move it or "
                                          r"choose another output folder$"):
        atomic_write_text(tmp_path / "report.html", "x", "output folder")
    assert os.listdir(tmp_path) == ["report.html"]  # no hidden temporary file left


# -- killed runs leave nothing behind ------------------------------------------------------------

HOLD_A_WORK_FOLDER = """
import sys, time
from coalmine.runtime._io import WorkFolder
w = WorkFolder(sys.argv[1], what="run")
(w.path / "scene_prob.stage.tif").write_bytes(b"x" * 1000)
print(w.path, flush=True)
time.sleep(60)
"""


def _hold(out: Path) -> tuple[subprocess.Popen, Path]:
    p = subprocess.Popen([sys.executable, "-c", HOLD_A_WORK_FOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    return p, Path(p.stdout.readline().strip())


def test_the_next_run_removes_what_a_killed_run_left(tmp_path):
    out = tmp_path / "out"
    live, live_dir = _hold(out)
    dead, dead_dir = _hold(out)
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        assert dead_dir.is_dir()  # SIGKILL runs no cleanup
        bundle = make_tiny_bundle(tmp_path / "bundle", kind="linear", tile=64, overlap=16).path
        scene = write_stack(tmp_path / "scene.tif", make_stack(80, 96, seed=3))
        r = CliRunner().invoke(run_main, [str(scene), "-b", str(bundle), "-o", str(out), "-q"])
        assert r.exit_code == 0, r.stderr
        assert not dead_dir.exists()  # the killed run's folder is gone
        assert live_dir.is_dir()  # a running one is left alone
        assert sorted(os.listdir(out)) == sorted(["scene_prob.tif", "scene_mask.tif", "scene_mines.geojson",
                                                  "scene_summary.json", live_dir.name])
    finally:
        live.kill()
        live.wait()


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    """A service manager stops coal-run with SIGTERM: exit 143, one line, nothing left behind."""
    bundle = make_tiny_bundle(tmp_path / "bundle", kind="linear", tile=64, overlap=16).path
    data = np.random.default_rng(3).random((23, 1024, 1024), dtype=np.float32)  # long enough to be caught
    scene = write_stack(tmp_path / "scene.tif", data)
    out = tmp_path / "out"
    p = subprocess.Popen([str(BIN / "coal-run"), str(scene), "-b", str(bundle), "-o", str(out), "-q",
                          "--block", "256"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while not (out.is_dir() and any(p.name.startswith(".coalmine-run.") for p in out.iterdir())):
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert _one_line(err) == "coal-run: terminated (SIGTERM); partial outputs were removed"
    assert os.listdir(out) == []


# -- messages name the real cause and the user's own file ----------------------------------------

def test_no_overlap_warning_names_the_scene_not_a_temporary_file(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle", kind="linear", tile=64, overlap=16).path
    scene = write_stack(tmp_path / "scene.tif", make_stack(80, 96, seed=3))
    w, s, e, n = _scene_lonlat()
    far = write_vector(tmp_path / "far.geojson", [({"name": "far"}, _ring(w + 1, s, e + 1, n))])
    out = tmp_path / "out"
    r = CliRunner().invoke(run_main, [str(scene), "-b", str(bundle), "-o", str(out), "-q", "--aoi", str(far)])
    assert r.exit_code == 0, r.stderr
    summary = json.loads((out / "scene_summary.json").read_text())
    msg = next(m for m in summary["warnings"] if "does not overlap" in m)
    assert f"does not overlap the scene {scene};" in msg and ".coalmine-" not in msg
    assert summary["areas_ha"]["aois"]["far"] is None


def test_an_unexpected_exception_is_one_line_with_a_bug_note(monkeypatch, tmp_path):
    import coalmine.runtime.run as run_module

    def broken(*a, **k):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(run_module, "run_scene", broken)
    bundle = make_tiny_bundle(tmp_path / "bundle", kind="linear", tile=64, overlap=16).path
    scene = write_stack(tmp_path / "scene.tif", make_stack(80, 96, seed=3))
    r = CliRunner().invoke(run_main, [str(scene), "-b", str(bundle), "-o", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 1
    assert _one_line(r.stderr) == ("coal-run: error: unexpected ZeroDivisionError: division by zero (a bug: "
                                   "rerun with -v and report the traceback)")
