"""Trust: what a bundle, checkpoint or input file says cannot reach outside its folder, run code
or slip a wrong number into a map; each refusal is one line naming the file and the fix.

One test (or a few) per defect found by probing with hostile input; each fails on the code
before its fix. The table-driven run of every command over hostile inputs is in
``test_hostile_inputs.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from coalmine.runtime.bundle import load_bundle, plain_name_problem
from coalmine.runtime.cli.run import main as run_main
from coalmine.runtime.errors import BundleError
from factories import make_stack, make_tiny_bundle, write_stack


@pytest.fixture
def bundle(tmp_path):
    return make_tiny_bundle(tmp_path / "bundle", kind="linear", tile=64, overlap=16)


@pytest.fixture
def scene(tmp_path):
    return write_stack(tmp_path / "scene.tif", make_stack(80, 96, seed=3))


def _edit_bundle(path: Path, **changes) -> Path:
    """Change entries of bundle.json: ``files__onnx="x"`` sets ``d["files"]["onnx"]``."""
    j = path / "bundle.json"
    d = json.loads(j.read_text())
    for k, v in changes.items():
        node = d
        *parents, last = k.split("__")
        for p in parents:
            node = node[p]
        node[last] = v
    j.write_text(json.dumps(d))
    return path


def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# -- bundle files stay inside the bundle folder ---------------------------------------------------

@pytest.mark.parametrize("name,why", [
    ("/etc/passwd", "is an absolute path"),
    ("../../x.onnx", "names a folder"),
    ("sub/model.onnx", "names a folder"),
    ("..", "is not a file name"),
    ("", "is not a file name"),
])
def test_bundle_file_entries_must_be_plain_names(bundle, name, why):
    _edit_bundle(bundle.path, files__onnx=name)
    with pytest.raises(BundleError, match=f"files.onnx = {name!r} {why}.*plain file name"):
        load_bundle(bundle.path)


def test_a_symlink_leaving_the_bundle_is_refused(bundle, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes((bundle.path / "model.onnx").read_bytes())
    (bundle.path / "model.onnx").unlink()
    (bundle.path / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="symbolic link to .*elsewhere.onnx, outside the bundle folder"):
        load_bundle(bundle.path)
    # a link that stays inside the folder is fine
    (bundle.path / "model.onnx").unlink()
    (bundle.path / "real.onnx").write_bytes(outside.read_bytes())
    (bundle.path / "model.onnx").symlink_to("real.onnx")
    assert load_bundle(bundle.path).file("onnx").name == "model.onnx"


def test_coal_run_never_opens_a_file_outside_the_bundle(bundle, scene, tmp_path):
    _edit_bundle(bundle.path, files__onnx="/etc/passwd")
    out = tmp_path / "out"
    r = CliRunner().invoke(run_main, [str(scene), "-b", str(bundle.path), "-o", str(out), "-q"])
    assert r.exit_code == 1
    line = _one_line(r.stderr)
    assert "files.onnx = '/etc/passwd' is an absolute path" in line and "bundle.json" in line
    assert not out.exists() or not os.listdir(out)


def test_coal_export_never_writes_outside_the_bundle(bundle, tmp_path):
    from coalmine.export.cli import main as export_main

    _edit_bundle(bundle.path, files__onnx="../escaped.onnx")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = CliRunner().invoke(export_main, [str(bundle.path), "--no-engine", "-q"])
    assert r.exit_code == 1
    assert "files.onnx = '../escaped.onnx' names a folder" in _one_line(r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_plain_name_problem():
    assert plain_name_problem("model.int8.onnx") is None
    assert plain_name_problem("a\\b") and plain_name_problem(3) and plain_name_problem("x\0y")


# -- a bundle's preprocessing is checked by type and range -----------------------------------------

@pytest.mark.parametrize("key,value,msg", [
    ("window", "nine", r"glcm.window = 'nine' must be a whole number \(e.g. 9\)"),
    ("window", 8, r"glcm.window = 8 must be odd, 3 to 31"),
    ("distance", 0, r"glcm.distance = 0 must lie between 1 and window - 1"),
    ("levels", 1000, r"glcm.levels = 1000 must lie between 2 and 255"),
    ("edges_method", 3, r"glcm.edges_method = 3 must be a text"),
])
def test_bundle_glcm_parameters_are_checked_at_load(bundle, key, value, msg):
    _edit_bundle(bundle.path, **{f"preprocessing__glcm__{key}": value})
    with pytest.raises(BundleError, match=msg):
        load_bundle(bundle.path)


def test_bundle_with_a_text_window_gives_one_line_on_raw_input(bundle, tmp_path):
    from coalmine.train.synth import make_scene

    sc = make_scene(tmp_path / "raw", 2019, seed=2, size=64)
    _edit_bundle(bundle.path, preprocessing__glcm__window="nine")
    r = CliRunner().invoke(run_main, [str(sc.s2_dir), "--s1", str(sc.s1_path), "-b", str(bundle.path),
                                      "-o", str(tmp_path / "out"), "-q"])
    assert r.exit_code == 1
    assert "preprocessing.glcm.window = 'nine' must be a whole number" in _one_line(r.stderr)


# -- Sentinel-1 units: both contradictions are refused ----------------------------------------------

def test_linear_data_declared_db_is_refused_like_the_reverse(tmp_path):
    from coalmine.train.synth import make_scene

    sc = make_scene(tmp_path / "raw", 2019, seed=2, size=64)     # its Sentinel-1 is linear power
    b = make_tiny_bundle(tmp_path / "bundle", kind="linear", tile=64, overlap=16)
    out = tmp_path / "out"
    r = CliRunner().invoke(run_main, [str(sc.s2_dir), "--s1", str(sc.s1_path), "-b", str(b.path),
                                      "-o", str(out), "-q", "--s1-units", "db"])
    assert r.exit_code == 1
    line = _one_line(r.stderr)
    assert "was declared dB" in line and "linear power, not dB" in line and "--s1-units linear" in line
    assert not out.exists() or not os.listdir(out)


# -- AOI names: every area keeps its own row --------------------------------------------------------

def _square(x0, y0, d=0.001):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x0 + d, y0], [x0 + d, y0 + d], [x0, y0 + d], [x0, y0]]]}


def test_duplicate_aoi_names_are_refused_naming_both_features(tmp_path):
    from coalmine.runtime.aoi import read_aois
    from coalmine.runtime.errors import InputError
    from factories import write_vector

    p = write_vector(tmp_path / "a.geojson", [({"name": "A"}, _square(115.0, -2.9)),
                                              ({"name": "A#2"}, _square(115.01, -2.9)),
                                              ({"name": "A"}, _square(115.02, -2.9))])
    with pytest.raises(InputError, match=r"feature 1 and feature 3 are both named 'A'; every area needs its own "
                                         r"name .* \(--aoi-name-field"):
        read_aois(p)
    # unique under another attribute: accepted, one area per feature
    q = write_vector(tmp_path / "b.geojson", [({"name": "A", "code": "a1"}, _square(115.0, -2.9)),
                                              ({"name": "A", "code": "a2"}, _square(115.01, -2.9))])
    assert [a.name for a in read_aois(q, name_field="code")] == ["a1", "a2"]


def test_coal_run_refuses_duplicate_aoi_names_before_mapping(bundle, scene, tmp_path):
    from factories import write_vector

    p = write_vector(tmp_path / "dup.geojson", [({"name": "A"}, _square(115.0, -2.9)),
                                                ({"name": "A"}, _square(115.01, -2.9))])
    out = tmp_path / "out"
    r = CliRunner().invoke(run_main, [str(scene), "-b", str(bundle.path), "-o", str(out), "--aoi", str(p), "-q"])
    assert r.exit_code == 1
    assert "are both named 'A'" in _one_line(r.stderr) and "dup.geojson" in r.stderr
    assert not out.exists() or not os.listdir(out)


# -- exit codes: a path the monitor configuration names that does not exist is a configuration error -

@pytest.mark.parametrize("missing,msg", [
    ("bundle", "bundle folder"), ("aois", "AOI file"), ("scene", "scenes[0].path"),
])
def test_monitor_config_naming_a_missing_file_exits_2(bundle, scene, tmp_path, missing, msg):
    from coalmine.runtime.cli.monitor import main as monitor_main
    from factories import write_vector

    aois = write_vector(tmp_path / "aois.geojson", [({"name": "A"}, _square(115.0, -2.9))])
    paths = {"bundle": bundle.path, "aois": aois, "scene": scene}
    paths[missing] = tmp_path / "gone"
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(f'bundle = "{paths["bundle"]}"\naois = "{paths["aois"]}"\noutput = "{tmp_path / "out"}"\n'
                   f'[[scenes]]\npath = "{paths["scene"]}"\ndate = 2020-07-01\n')
    r = CliRunner().invoke(monitor_main, [str(cfg)])
    assert r.exit_code == 2
    line = _one_line(r.stderr)
    assert msg in line and "does not exist" in line and str(cfg) in line
    assert not (tmp_path / "out").exists()


# -- --block is a memory setting: it cannot change the map ------------------------------------------

def test_block_size_does_not_change_a_single_pixel(tmp_path):
    import rasterio
    from coalmine.runtime.run import run_scene

    # a 3x3 + dilated 5x5 model with zero padding at tile borders: where a tile lies shows in its
    # logits, so tiles placed relative to the block would change pixels when the block changes
    b = make_tiny_bundle(tmp_path / "b", kind="conv", tile=64, overlap=16, bias=0.3)
    sc = write_stack(tmp_path / "s.tif", make_stack(530, 610, seed=5, scale=5.0, nodata=(10, 40, 100, 150)))
    maps = {}
    for block in (256, 512, 1024):
        s = run_scene(sc, b, tmp_path / f"o{block}", tile=64, block=block, progress=False, backend="cpu")
        with rasterio.open(tmp_path / f"o{block}" / "s_prob.tif") as p, \
                rasterio.open(tmp_path / f"o{block}" / "s_mask.tif") as m:
            maps[block] = (p.read(1), m.read(1), s["areas_ha"]["total"], s["tiling"])
    assert maps[256][3]["blocks"] > maps[512][3]["blocks"] > maps[1024][3]["blocks"]
    for block in (256, 512):
        np.testing.assert_array_equal(maps[block][0], maps[1024][0])
        np.testing.assert_array_equal(maps[block][1], maps[1024][1])
        assert maps[block][2] == maps[1024][2]
    # every tile of the scene is computed once, whatever the blocks
    assert maps[256][3]["tiles"] == maps[512][3]["tiles"] == maps[1024][3]["tiles"]


def test_tile_blender_gives_the_same_logits_for_any_blocks():
    from coalmine.runtime.tiling import TileBlender, scene_tiling

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 333, 277)).astype(np.float32)

    def infer(batch):  # a position-dependent "model": each tile's logit is its band sum times a ramp
        ramp = np.linspace(0.5, 1.5, batch.shape[-1], dtype=np.float32)
        return (batch.sum(axis=1, keepdims=True) * ramp).astype(np.float32)

    results = []
    for block in (40, 64, 100, 200, 1000):
        blender, out, computed = TileBlender(64, 16), np.full((333, 277), np.nan, np.float32), []
        for b in scene_tiling(333, 277, tile=64, overlap=16, block=block):
            r0, c0 = b.read.row_off, b.read.col_off
            xr = x[:, r0: r0 + b.read.height, c0: c0 + b.read.width]
            out[b.core.row_off: b.core.row_off + b.core.height,
                b.core.col_off: b.core.col_off + b.core.width] = blender.block_logits(b, xr, infer, batch_size=3)
            computed += b.tiles
        assert not blender.kept  # every kept tile was dropped after its last use
        assert len(computed) == len(set(computed))  # each tile once
        results.append(out)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# -- Sentinel-2 processing level and band types ----------------------------------------------------

@pytest.fixture
def synth(tmp_path):
    from coalmine.train.synth import make_scene

    return make_scene(tmp_path / "synth", 2019, seed=4, size=96)


def _prepare(args):
    from coalmine.runtime.cli.prepare import main as prepare_main

    return CliRunner().invoke(prepare_main, [str(a) for a in args])


def _bare_s2(synth, dest: Path, *, scl: bool = False, resolution_names: bool = False) -> Path:
    """The synthetic L2A bands without MTD_MSIL2A.xml and tags (and without SCL unless asked),
    named without the resolution suffix of Level-2A band files unless asked: nothing names the
    level."""
    import re

    import rasterio

    dest.mkdir()
    for p in synth.s2_dir.iterdir():
        if p.suffix == ".tif" and (scl or "SCL" not in p.name):
            with rasterio.open(p) as ds:
                prof, a = ds.profile, ds.read()
            name = p.name if resolution_names else re.sub(r"_(10|20|60)m\.tif$", ".tif", p.name)
            with rasterio.open(dest / name, "w", **prof) as out:
                out.write(a)
    return dest


def test_level_1c_in_a_neutral_folder_is_refused_by_its_values(realdata, synth, tmp_path):
    # the real L1C tile, in a folder whose name says nothing: no metadata, no SCL, no B10
    folder = tmp_path / "T33UUU_20170216"
    folder.mkdir()
    for p in (realdata / "s2_l1c_T33UUU").glob("*.jp2"):
        (folder / p.name).symlink_to(p)
    out = tmp_path / "o"
    r = _prepare(["--s2", folder, "--s1", synth.s1_path, "-o", out / "s.tif"])
    assert r.exit_code == 1
    line = _one_line(r.stderr)
    assert "does not say its processing level" in line and "top-of-atmosphere reflectance (Level-1C)" in line
    assert "99 % of B02 lies above 0.1" in line and "MTD_MSIL2A.xml or SCL band" in line
    assert not out.exists() or not os.listdir(out)


def test_level_2a_without_metadata_is_told_by_scl_or_its_dark_pixels(synth, tmp_path):
    from coalmine.runtime.preprocess.s2 import S2Reader

    with S2Reader(_bare_s2(synth, tmp_path / "a", scl=True)) as r:
        assert r.metadata.level == "L2A" and "SCL band" in r.metadata.level_from
    with S2Reader(_bare_s2(synth, tmp_path / "b")) as r:  # water and forest: surface reflectance
        assert r.metadata.level == "L2A" and r.metadata.level_from.startswith("darkest 1 % of B02 below 0.0")
    # band files named B02_10m, as only Level-2A products name them
    with S2Reader(_bare_s2(synth, tmp_path / "n", resolution_names=True)) as r:
        assert r.metadata.level == "L2A" and r.metadata.level_from.startswith("band file names with a resolution")
    # a B10 band (cirrus) exists in Level-1C only
    c = _bare_s2(synth, tmp_path / "c")
    b02 = next(c.glob("*_B02.tif"))
    (c / b02.name.replace("B02", "B10")).write_bytes(b02.read_bytes())
    from coalmine.runtime.errors import InputError
    with pytest.raises(InputError, match="Level-1C product .*as a B10 band"):
        S2Reader(c)


def test_a_uint16_stack_is_refused_naming_the_band(bundle, tmp_path):
    import rasterio
    from factories import write_stack as ws

    p = ws(tmp_path / "s.tif", make_stack(64, 64, seed=1))
    with rasterio.open(p) as ds:
        prof, data, names, tags = ds.profile, ds.read(), ds.descriptions, ds.tags()
    prof.update(dtype="uint16", nodata=0)
    u16 = tmp_path / "u16.tif"
    with rasterio.open(u16, "w", **prof) as ds:
        ds.write((data * 10000).astype("uint16"))
        for i, n in enumerate(names, start=1):
            ds.set_band_description(i, n)
        ds.update_tags(**tags)
    out = tmp_path / "out"
    r = CliRunner().invoke(run_main, [str(u16), "-b", str(bundle.path), "-o", str(out), "-q"])
    assert r.exit_code == 1
    line = _one_line(r.stderr)
    assert "band 1 (B02) is uint16" in line and "float32" in line and "coal-prepare" in line
    assert not out.exists() or not os.listdir(out)


@pytest.mark.parametrize("dtype,scale,msg", [
    ("float32", 1e-4, "is float32 with values of reflectance (99 % below 0."),
    ("uint8", 255 / 10000, "is uint8, an 8-bit image"),
])
def test_an_s2_band_that_is_not_digital_numbers_is_refused(synth, tmp_path, dtype, scale, msg):
    import shutil

    import rasterio

    s2 = tmp_path / "s2"
    shutil.copytree(synth.s2_dir, s2)
    b05 = next(s2.glob("*_B05_*.tif"))
    with rasterio.open(b05) as ds:
        a, prof = ds.read(1), ds.profile
    prof.update(dtype=dtype, nodata=None)
    with rasterio.open(b05, "w", **prof) as ds:
        ds.write(np.clip(a * scale, 0, 255 if dtype == "uint8" else None).astype(dtype), 1)
    out = tmp_path / "o"
    r = _prepare(["--s2", s2, "--s1", synth.s1_path, "-o", out / "s.tif"])
    assert r.exit_code == 1
    line = _one_line(r.stderr)
    assert f"--s2 band B05 ({b05.name})" in line and msg in line and "digital numbers" in line
    assert not out.exists() or not os.listdir(out)


# -- nothing loaded from a bundle or checkpoint runs code ------------------------------------------

class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: the proof a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_torch_file(path: Path, marker: Path, payload_key: str = "state_dict") -> Path:
    torch = pytest.importorskip("torch")
    torch.save({"spec": {}, payload_key: _RunsCode(marker), "run_key": "k"}, path)
    return path


def test_a_malicious_checkpoint_is_refused_before_anything_runs(tmp_path):
    pytest.importorskip("torch")
    from coalmine.runtime.errors import UsageError
    from coalmine.train.config import TrainConfig
    from coalmine.train.loop import CHECKPOINT, fit

    marker = tmp_path / "ran"
    work = tmp_path / "work"
    work.mkdir()
    _malicious_torch_file(work / CHECKPOINT, marker, "model")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (4, 23, 32, 32)).astype(np.float32)
    y = (rng.random((4, 32, 32)) > 0.7).astype(np.uint8)
    from coalmine.runtime.bundle import Normalization
    norm = Normalization((0.0,) * 23, (1.0,) * 23)
    cfg = TrainConfig(epochs=1, batch_size=2, tile=32, device="cpu", seed=0)
    with pytest.raises(UsageError) as e:
        fit(x, y, np.arange(2), np.arange(2, 4), norm, cfg, work, run_key="k", resume=True, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "checkpoint" in msg and "holds Python objects other than tensors" in msg
    assert "(it calls io.open)" in msg and "run without --resume" in msg
    assert not marker.exists()


def test_coal_export_refuses_a_malicious_model_file_in_one_line(bundle, tmp_path):
    pytest.importorskip("torch")
    from coalmine.export.cli import main as export_main

    marker = tmp_path / "ran"
    np.savez(bundle.path / "val_tiles.npz", x=np.full((1, 23, 64, 64), 0.5, np.float32), y=np.zeros((1, 64, 64), np.uint8))
    _malicious_torch_file(bundle.path / "model.pt", marker)
    r = CliRunner().invoke(export_main, [str(bundle.path), "--no-engine", "-q"])
    assert r.exit_code == 1
    line = _one_line(r.stderr)
    assert "model file" in line and "model.pt holds Python objects other than tensors" in line
    assert not marker.exists()


@pytest.mark.parametrize("content,msg", [
    (b"\x80\x04K\x01.", "is not a PyTorch file or is damaged"),   # a bare pickle of the number 1
    (b"PK\x03\x04 truncated", "is not a PyTorch file or is damaged"),
])
def test_a_damaged_model_file_is_one_line(bundle, tmp_path, content, msg):
    pytest.importorskip("torch")
    from coalmine.train.model import load_model

    (bundle.path / "model.pt").write_bytes(content)
    with pytest.raises(BundleError) as e:
        load_model(load_bundle(bundle.path))
    assert msg in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["pickled", "truncated"])
def test_validation_tiles_are_read_without_pickle(bundle, tmp_path, kind):
    from coalmine.runtime.backends.gate import load_val_tiles

    p = bundle.path / "val_tiles.npz"
    if kind == "pickled":
        marker = tmp_path / "ran"
        np.savez(p, x=np.array([_RunsCode(marker)], dtype=object), y=np.zeros((1, 4, 4), np.uint8))
    else:
        np.savez(p, x=np.zeros((1, 23, 64, 64), np.float32), y=np.zeros((1, 64, 64), np.uint8))
        p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(BundleError) as e:
        load_val_tiles(load_bundle(bundle.path))
    assert "cannot be read as validation tiles" in str(e.value) and "\n" not in str(e.value)
    if kind == "pickled":
        assert not marker.exists()


def test_no_loader_in_the_tree_unpickles(tmp_path):
    """The audit, kept: every torch.load reads weights only, every np.load refuses pickles, and no
    module calls pickle.load(s) or eval/exec (test and benchmark helpers aside)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    found = []
    for folder in ("runtime", "train", "export"):
        for py in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
                kw = {k.arg: k.value for k in node.keywords}
                where = f"{py.relative_to(root)}:{node.lineno}"
                if owner == "torch" and name == "load":
                    ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                    found += [] if ok else [f"{where} torch.load without weights_only=True"]
                if owner == "np" and name == "load":
                    bad = isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is True
                    found += [f"{where} np.load(allow_pickle=True)"] if bad else []
                if owner in ("pickle", "cloudpickle", "dill") and name in ("load", "loads"):
                    found.append(f"{where} {owner}.{name}")
                if isinstance(f, ast.Name) and f.id in ("eval", "exec"):
                    found.append(f"{where} {f.id}")
    assert found == []
