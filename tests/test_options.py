"""RunOptions and InputOptions: one home for coal-run's defaults and rules, used alike by the
command line, ``run_scene`` and the monitor's ``[run]`` table."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from coalmine.runtime.cli.monitor import main as monitor_main
from coalmine.runtime.cli.run import main as run_main
from coalmine.runtime.errors import ConfigError, UsageError
from coalmine.runtime.monitor import load_config
from coalmine.runtime.options import (
    ALL_KEYS,
    CLI_NAMES,
    MAX_TILE,
    PREPROCESSING_KEYS,
    InputOptions,
    OptionError,
    RunOptions,
)
from coalmine.runtime.run import run_scene
from factories import make_stack, make_tiny_bundle, write_stack
from test_monitor_data import make_mask_project, write_config


@pytest.fixture
def bundle(tmp_path):
    return make_tiny_bundle(tmp_path / "bundle", kind="linear", bias=0.1, tile=64, overlap=16)


@pytest.fixture
def scene(tmp_path):
    return write_stack(tmp_path / "scene.tif", make_stack(64, 64, seed=1))


# -- one set of defaults ----------------------------------------------------------------------

def test_coal_run_help_defaults_are_the_dataclass_defaults():
    d = RunOptions()
    params = {p.name: p for p in run_main.params}
    assert params["backend"].default == d.backend and params["precision"].default == d.precision
    assert params["gpu_mem"].default == d.gpu_mem_gb and params["min_area"].default == d.min_area_ha
    assert params["block"].default == d.block and params["batch_size"].default == str(d.batch_size)
    assert params["s1_units"].default == InputOptions().s1_units and params["s2_offset"].default is None
    # every setting has its command-line option, and the option exists
    opts = {o for p in run_main.params for o in getattr(p, "opts", ())}
    assert set(CLI_NAMES) == (ALL_KEYS | PREPROCESSING_KEYS) - {"progress"}  # progress is --quiet's opposite
    assert {CLI_NAMES[k] for k in ALL_KEYS - {"progress"}} <= opts


# -- rules: checked when made, the message names the option ------------------------------------

@pytest.mark.parametrize("kw,msg", [
    ({"threshold": 1.5}, "--threshold 1.5 must lie strictly between 0 and 1"),
    ({"threshold": 0.0}, "--threshold 0 must lie strictly between 0 and 1"),
    ({"batch_size": 0}, "--batch-size 0 must be a positive integer or 'auto'"),
    ({"batch_size": "lots"}, "--batch-size 'lots' must be a positive integer or 'auto'"),
    ({"gpu_mem_gb": 0}, "--gpu-mem 0 must be a positive number of GiB"),
    ({"min_area_ha": -1}, "--min-area -1 must be >= 0 hectares"),
    ({"block": 10}, "--block 10 is too small; use at least 64"),
    ({"block": 10**6}, "--block 1000000 is too large; use at most 8192"),
    ({"tile": 1048576}, f"--tile 1048576 must lie between 1 and {MAX_TILE} pixels"),
    ({"tile": 0}, f"--tile 0 must lie between 1 and {MAX_TILE} pixels"),
    ({"overlap": -3}, "--overlap -3 must be >= 0 pixels"),
    ({"threads": 0}, "--threads 0 must be at least 1"),
    ({"backend": "gpu"}, "--backend 'gpu' is not one of auto, tensorrt, cuda, cpu"),
    ({"precision": "fp8"}, "--precision 'fp8' is not one of auto, fp32, fp16, int8"),
    ({"prefix": "../../x"}, "--prefix '../../x' must be a plain name without a folder"),
    ({"prefix": "a/b"}, "--prefix 'a/b' must be a plain name without a folder"),
    ({"prefix": ".."}, "--prefix '..' must be a non-empty file name prefix"),
    ({"tile": 64.0}, "--tile 64.0 must be a whole number"),
    ({"tile": True}, "--tile True must be a whole number"),
    ({"s2_offset": 1000.0}, "--s2-offset 1000 is positive"),
    ({"s1_units": "dB"}, "--s1-units 'dB' is not one of auto, linear, db"),
])
def test_bad_settings_are_refused_naming_the_option(kw, msg):
    with pytest.raises(OptionError) as e:
        RunOptions.build(**kw)
    assert str(e.value).startswith(msg), str(e.value)
    assert isinstance(e.value, UsageError) and e.value.exit_code == 2


@pytest.mark.parametrize("name", ["gpu_mem_gb", "threshold", "min_area_ha", "s2_offset"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_for_every_number(name, bad):
    with pytest.raises(OptionError, match=f"^{CLI_NAMES[name]} (nan|inf|-inf) must be a finite number$"):
        RunOptions.build(**{name: bad})


@pytest.mark.parametrize("name", ["tile", "overlap", "batch_size", "block", "threads"])
def test_whole_number_settings_refuse_nan(name):
    with pytest.raises(OptionError, match=f"^{CLI_NAMES[name]} nan must be"):
        RunOptions.build(**{name: math.nan})


def test_bundle_rules_come_from_the_model():
    o = RunOptions()
    r = o.resolve(tile_size=128, overlap=32, threshold=0.4, size_multiple=32)
    assert (r.tile, r.overlap, r.threshold) == (256, 32, 0.4)
    assert RunOptions(tile=96).resolve(128, 32, 0.4, 32).tile == 96
    with pytest.raises(OptionError, match=r"^--tile 96 is not a positive multiple of 64 .*; use 64 or 128$"):
        RunOptions(tile=96).resolve(128, 32, 0.4, 64)
    with pytest.raises(OptionError, match=r"^--overlap 40 must be between 0 and half the tile \(32\)"):
        RunOptions(tile=64, overlap=40).resolve(128, 32, 0.4, 32)


def test_unknown_setting_is_a_type_error():
    with pytest.raises(TypeError, match="unknown run setting"):
        RunOptions.build(tresh=0.3)


def test_given_and_flat_round_trip():
    o = RunOptions.build(tile=512, s2_offset=-1000, backend="cpu")
    assert o.given() == {"tile": 512, "s2_offset": -1000, "backend": "cpu"}
    assert RunOptions.build(**o.given()) == o


# -- the command line and run_scene build the same options ---------------------------------------

@pytest.mark.parametrize("args,msg", [
    (["--s2-offset", "nan"], "coal-run: error: --s2-offset nan must be a finite number"),
    (["--min-area", "nan"], "coal-run: error: --min-area nan must be a finite number"),
    (["--gpu-mem", "inf"], "coal-run: error: --gpu-mem inf must be a finite number"),
    (["--tile", "1048576"], "coal-run: error: --tile 1048576 must lie between 1 and 4096 pixels"),
    (["--prefix", "../../x"], "coal-run: error: --prefix '../../x' must be a plain name without a folder"),
])
def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, bundle, scene, args, msg):
    out = tmp_path / "o" / "deep"
    r = CliRunner().invoke(run_main, [str(scene), "-b", str(bundle.path), "-o", str(out), "-q", *args])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0] and r.stderr.startswith(msg), r.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "x").exists()
    with pytest.raises(OptionError) as e:  # run_scene refuses the same value with the same words
        run_scene(scene, bundle.path, out, progress=False,
                  **{k: v for k, v in _settings(args).items()})
    assert f"coal-run: error: {e.value}" == r.stderr.strip()


def _settings(args: list[str]) -> dict:
    name = {v: k for k, v in CLI_NAMES.items()}[args[0]]
    value: object = args[1]
    if name in ("s2_offset", "min_area_ha", "gpu_mem_gb"):
        value = float(args[1])
    elif name == "tile":
        value = int(args[1])
    return {name: value}


# -- raw input: the input settings reach the scene reader ----------------------------------------

def test_s2_offset_reaches_the_raw_scene_reader(tmp_path):
    from coalmine.runtime.preprocess import prepare_scene
    from coalmine.train.synth import make_scene

    sc = make_scene(tmp_path / "synth", 2019, seed=5, size=64)
    b = make_tiny_bundle(tmp_path / "b", kind="linear", tile=64, overlap=16)
    stack = prepare_scene(sc.s2_dir, sc.s1_path, tmp_path / "st.tif", b.preprocessing, s2_offset=-1000,
                          progress=False)
    run_scene(sc.s2_dir, b, tmp_path / "raw", s1=sc.s1_path, s2_offset=-1000, progress=False, prefix="x")
    run_scene(stack, b, tmp_path / "stk", progress=False, prefix="x")
    run_scene(sc.s2_dir, b, tmp_path / "dflt", s1=sc.s1_path, progress=False, prefix="x")
    probs = {}
    for k in ("raw", "stk", "dflt"):
        with rasterio.open(tmp_path / k / "x_prob.tif") as ds:
            probs[k] = ds.read(1).astype(int)
    assert np.abs(probs["raw"] - probs["stk"]).max() <= 1
    assert (probs["raw"] != probs["dflt"]).mean() > 0.2  # the offset moved the reflectances


# -- the monitor's [run] table: refused at load, naming the key and the file ----------------------

@pytest.mark.parametrize("run,msg", [
    ("threshold = 1.5", "run.threshold = 1.5 must lie strictly between 0 and 1"),
    ("tile = 100", "run.tile = 100 is not a positive multiple of 32"),
    ('backend = "gpu"', "run.backend = 'gpu' is not one of auto, tensorrt, cuda, cpu"),
    ("s2_offset = nan", "run.s2_offset = nan must be a finite number"),
    ("gpu_mem_gb = inf", "run.gpu_mem_gb = inf must be a finite number"),
    ('batch_size = "8"', "run.batch_size = '8' must be a positive integer or 'auto'"),
    ("overlap = 400", "run.overlap = 400 must be between 0 and half the tile"),
    ('prefix = "x"', "unknown key 'run.prefix'"),
    ('treshold = 0.4', "unknown key 'run.treshold'"),
])
def test_monitor_run_table_is_checked_at_load(tmp_path, run, msg):
    p = make_mask_project(tmp_path)
    cfg = write_config(tmp_path / "bad.toml", extra=f"[run]\n{run}\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert str(e.value).startswith(f"{cfg}: {msg}"), str(e.value)
    r = CliRunner().invoke(monitor_main, [str(cfg), "-q"])
    assert r.exit_code == 2 and r.stderr.strip() == f"coal-monitor: error: {e.value}"
    assert not (p["root"] / "out").exists()


def test_monitor_run_table_reaches_the_runner(tmp_path):
    from coalmine.runtime.monitor import run_monitor

    make_mask_project(tmp_path)
    cfg = load_config(write_config(tmp_path / "m.toml", extra='[run]\ns2_offset = -1000\ns1_units = "db"\n'))
    seen = []

    def runner(scene, bundle, out_dir, **kw):
        from test_monitor_data import oracle_run_scene

        seen.append({k: kw[k] for k in ("s2_offset", "s1_units")})
        RunOptions.build(**{k: v for k, v in kw.items() if k in ALL_KEYS})  # run_scene would accept them
        return oracle_run_scene(scene, bundle, out_dir, **kw)

    run_monitor(cfg, runner=runner)
    assert seen and all(s == {"s2_offset": -1000, "s1_units": "db"} for s in seen)
    assert cfg.run_options.inputs == InputOptions(s2_offset=-1000, s1_units="db")


def test_prefix_is_a_plain_file_name(tmp_path, bundle, scene):
    with pytest.raises(OptionError):
        run_scene(scene, bundle, tmp_path / "o", prefix=os.path.join("..", "evil"), progress=False)
    assert not (tmp_path / "evil_mask.tif").exists() and not (tmp_path / "o").exists()


# -- the input options: one declaration, offered alike by every command that reads raw scenes ------

def _declared(cmd, names):
    return {p.name: (tuple(p.opts), p.type.to_info_dict(), p.default, p.help) for p in cmd.params if p.name in names}


def test_input_options_are_one_declaration_offered_alike():
    from coalmine.runtime.cli.prepare import main as prepare_main
    from coalmine.runtime.monitor.config import MONITOR_SETS_RUN
    from coalmine.runtime.options import INPUT_KEYS, PREPROCESSING_KEYS
    from coalmine.train.cli import main as train_main
    from coalmine.train.config import TrainConfig

    train_cmd, evaluate_cmd = train_main.commands["train"], train_main.commands["evaluate"]
    inputs = [_declared(c, INPUT_KEYS) for c in (prepare_main, run_main, train_cmd, evaluate_cmd)]
    assert len(inputs[0]) == len(INPUT_KEYS) and all(d == inputs[0] for d in inputs)
    prep = [_declared(c, PREPROCESSING_KEYS) for c in (prepare_main, train_cmd)]
    assert len(prep[0]) == len(PREPROCESSING_KEYS) and prep[0] == prep[1]
    # the configurations take the same names: the monitor's [run] table and the trainer's settings
    assert INPUT_KEYS <= ALL_KEYS - MONITOR_SETS_RUN
    assert INPUT_KEYS | PREPROCESSING_KEYS <= {f for f in TrainConfig.__dataclass_fields__}


def test_coal_train_reads_raw_scenes_with_the_given_s2_offset(tmp_path, caplog):
    # Raw training scenes without a processing baseline: the offset guess is warned about unless
    # --s2-offset says it, and the given offset is what the patches are made with.
    from coalmine.runtime.preprocess import open_scene
    from coalmine.train.api import _prepare_patches, data_fingerprint
    from coalmine.train.config import SceneSpec, TrainConfig
    from coalmine.train.synth import make_scene
    from rasterio.windows import Window

    sc = make_scene(tmp_path / "synth", 2019, seed=5, size=256)
    for md in sc.s2_dir.glob("MTD_*.xml"):
        md.unlink()
    for band in sc.s2_dir.glob("*_B*.tif"):  # the same pixels without their BOA_ADD_OFFSET tags
        with rasterio.open(band) as ds:
            data, profile = ds.read(), ds.profile
        band.unlink()
        with rasterio.open(band, "w", **profile) as ds:
            ds.write(data)
    specs = (SceneSpec(sc.s2_dir, sc.label_path, sc.s1_path),)
    base = dict(scenes=specs, tile=64, block_tiles=1, buffer=0, max_patches=4, glcm_edges="equal_width")
    with caplog.at_level("WARNING", logger="coalmine"):
        guessed, _ = _prepare_patches(TrainConfig(**base), tmp_path / "w1", data_fingerprint(specs), False)
    assert "pass --s2-offset to be sure" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="coalmine"):
        given, _ = _prepare_patches(TrainConfig(**base, s2_offset=-1000), tmp_path / "w2",
                                    data_fingerprint(specs), False)
    assert "--s2-offset" not in caplog.text
    p = given.patches[0]
    with open_scene(sc.s2_dir, sc.s1_path, s2_offset=-1000) as src:
        want = src.read(Window(p.col, p.row, 64, 64))
    np.testing.assert_array_equal(given.x[0], want)
    assert not np.allclose(guessed.x[0][:9], want[:9], equal_nan=True)  # the 2019 guess was offset 0


@pytest.mark.parametrize("kw,msg", [
    ({"speckle_window": 4}, "--speckle-window 4 must be an odd number >= 1"),
    ({"speckle_window": 33}, "--speckle-window 33 must be an odd number >= 1 (at most 31)"),
    ({"speckle": "frost"}, "--speckle 'frost' is not one of lee, none"),
    ({"db_range": (5.0, -25.0)}, "--db-range 5 -25 must have its low end below its high end"),
    ({"db_range": (math.nan, 5.0)}, "--db-range nan must be a finite number"),
    ({"db_range": (-25.0, 5.0), "glcm_edges": "edges.json"},
     "--db-range -25 5 is for equal-width edges: give either --glcm-edges or --db-range, not both"),
])
def test_preprocessing_options_refusals(kw, msg):
    from coalmine.runtime.options import PreprocessingOptions

    with pytest.raises(OptionError) as e:
        PreprocessingOptions(**kw)
    assert str(e.value).startswith(msg), str(e.value)


def test_equal_frequency_edges_need_training_data(tmp_path):
    from coalmine.runtime.cli.prepare import main as prepare_main
    from coalmine.runtime.options import PreprocessingOptions

    prep, how = PreprocessingOptions(speckle="none").preprocessing("equal_frequency", from_data=True)
    assert how == "equal_frequency" and prep.glcm.edges == () and prep.s1.speckle_filter == "none"
    r = CliRunner().invoke(prepare_main, ["--s2", str(tmp_path), "--s1", str(tmp_path), "-o",
                                          str(tmp_path / "o.tif"), "--glcm-edges", "equal_frequency"])
    assert r.exit_code == 2 and r.stderr.startswith(
        "coal-prepare: error: --glcm-edges 'equal_frequency' needs training data: coal-train computes")
