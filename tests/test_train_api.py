"""coal-train end to end on the synthetic Tapin-like series (``coalmine.train.synth``): bundle, accuracy, evaluate, refusals.

The series (seed 3, 512 x 512 px, 10 m) has mines among dark burned land, rivers, bare fields and
bright settlements, with clouds; two years are trained on (blocked train/validation split) and the
third year is a held-out test scene. A short CPU run (5 epochs, 64 px tiles) must reach a kappa
above 0.4 on validation, on the held-out year's patches, and on the whole held-out scene via
``evaluate`` (chance is 0; the study reports 0.91 after 200 epochs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner
from coalmine.runtime.bands import BAND_NAMES
from coalmine.runtime.bundle import load_bundle
from coalmine.runtime.errors import BandError, InputError, UsageError
from coalmine.train.api import evaluate, train
from coalmine.train.cli import main
from coalmine.train.config import SceneSpec, TrainConfig
from coalmine.train.patches import load_patch_cache, normalization_stats
from coalmine.train.synth import make_series

KAPPA_BOUND = 0.4


def _cfg(scenes, **kw) -> TrainConfig:
    base = dict(
        scenes=tuple(scenes), tile=64, block_tiles=2, epochs=5, batch_size=4, lr=2e-3, warmup_epochs=1,
        patience=0, device="cpu", overlap=16, max_val_tiles=8, seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return make_series(root, (2017, 2018, 2019), seed=3, size=512)


@pytest.fixture(scope="module")
def trained(series, tmp_path_factory):
    """Trained through the CLI (CliRunner) from a TOML config: 2017-2018 train, 2019 test."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    lines = ["tile = 64", "block_tiles = 2", "epochs = 5", "batch_size = 4", "lr = 0.002", "warmup_epochs = 1",
             "patience = 0", 'device = "cpu"', "overlap = 16", "max_val_tiles = 8", "seed = 0"]
    for s in series:
        lines += ["[[scenes]]", f'path = "{s.s2_dir}"', f's1 = "{s.s1_path}"', f'labels = "{s.label_path}"']
        if s.year == 2019:
            lines.append('split = "test"')
    cfg = root / "train.toml"
    cfg.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(main, [str(cfg), "--out", str(root / "bundle"), "-q"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(root / "bundle")
    return root / "bundle"


def test_bundle_is_complete_and_loads(trained) -> None:
    b = load_bundle(trained)
    assert b.bands == BAND_NAMES and b.tile_size == 64 and b.overlap == 16 and b.threshold == 0.5
    for f in ("model.pt", "val_tiles.npz", "report.json", "curves.png", "log.csv", "bundle.json"):
        assert (trained / f).is_file(), f
    assert not list(trained.parent.glob(".bundle.partial-*"))
    assert not (trained.parent / "bundle.work" / "checkpoint.pt").exists()
    t = b.training
    assert len(t["data_fingerprint"]) == 64 and t["seed"] == 0 and t["epochs_run"] == 5
    assert t["edges_source"] == "equal_frequency" and b.preprocessing.glcm.edges_method == "equal_frequency"
    edges = np.asarray(b.preprocessing.glcm.edges)
    assert edges.size == b.preprocessing.glcm.levels - 1 and np.all(np.diff(edges) > 0)
    assert t["timings"]["tiles_per_s"] > 0 and t["code_version"]
    log_rows = (trained / "log.csv").read_text().splitlines()
    assert len(log_rows) == 6 and log_rows[0].startswith("epoch,")
    with np.load(trained / "val_tiles.npz") as z:
        x, y = z["x"], z["y"]
    assert x.dtype == np.float32 and x.shape[1:] == (23, 64, 64) and 1 <= x.shape[0] <= 8
    assert y.dtype == np.uint8 and y.shape == (x.shape[0], 64, 64) and (y == 1).any()
    # validation tiles are raw (un-normalised): reflectance bands lie in [0, 1.x], VV in dB
    assert np.nanmax(x[:, 0]) < 2.0 and np.nanmin(x[:, 12]) < -3.0


def test_normalisation_comes_from_training_patches_only(trained) -> None:
    b = load_bundle(trained)
    cache = next((trained.parent / "bundle.work" / "cache").iterdir())
    ps = load_patch_cache(cache)
    assert ps is not None
    mean, std = normalization_stats(ps.x, ps.indices("train"))
    np.testing.assert_allclose(b.normalization.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(b.normalization.std, std, rtol=1e-6)
    val_mean, _ = normalization_stats(ps.x, ps.indices("val"))
    assert not np.allclose(val_mean, mean)


def test_short_training_beats_chance_clearly(trained) -> None:
    rep = json.loads((trained / "report.json").read_text())
    assert rep["validation"]["kappa"] > KAPPA_BOUND, rep["validation"]
    # the held-out year, never seen in training
    assert rep["test"]["kappa"] > KAPPA_BOUND, rep["test"]
    assert rep["patches"]["train"] > rep["patches"]["val"] > 0 and rep["patches"]["test"] > 0


def test_evaluate_whole_held_out_scene_through_the_cli(trained, series, tmp_path) -> None:
    s = series[-1]
    out = tmp_path / "eval.json"
    r = CliRunner().invoke(main, ["evaluate", "--bundle", str(trained), "--scene", str(s.s2_dir), "--s1",
                                  str(s.s1_path), "--labels", str(s.label_path), "--json", str(out), "-q",
                                  "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "producer acc." in r.stdout and "kappa" in r.stdout and "mine (coal)" in r.stdout
    rep = json.loads(out.read_text())
    tot = rep["total"]
    assert tot["kappa"] > KAPPA_BOUND, tot
    assert f"kappa {tot['kappa']:.3f}" in r.stdout
    with rasterio.open(s.label_path) as ds:
        lab = ds.read(1)
    # every labelled pixel is counted except where the image has nodata (clouds, edges)
    assert 0.5 * (lab != 255).sum() < tot["pixels"] <= (lab != 255).sum()
    assert np.asarray(tot["confusion_matrix"]).sum() == tot["pixels"]


def test_evaluate_and_coal_run_refuse_a_stack_with_other_speckle_filtering_alike(trained, tmp_path) -> None:
    # One check for both commands: a stack made without the bundle's speckle filter is refused
    # by evaluate as by coal-run, with the same message.
    from dataclasses import replace

    from coalmine.runtime.run import run_scene
    from factories import make_stack, write_stack

    b = load_bundle(trained)
    prep = replace(b.preprocessing, s1=replace(b.preprocessing.s1, speckle_filter="none"))
    stack = write_stack(tmp_path / "nolee.tif", make_stack(64, 64), preprocessing=prep)
    with pytest.raises(InputError) as e_eval:
        evaluate(trained, [SceneSpec(stack, tmp_path / "labels.tif")], device="cpu", progress=False)
    with pytest.raises(InputError) as e_run:
        run_scene(stack, trained, tmp_path / "o", progress=False)
    assert str(e_eval.value) == str(e_run.value)
    assert "speckle filter none (bundle: lee/5)" in str(e_eval.value)
    assert "coal-prepare --glcm-edges" in str(e_eval.value)


def test_evaluate_without_scenes_refused(trained) -> None:
    with pytest.raises(UsageError, match="no scene to evaluate"):
        evaluate(trained, [], progress=False)


def test_interrupted_run_resumes_to_the_same_bundle(series, tmp_path) -> None:
    torch.set_num_threads(1)
    specs = [SceneSpec(s.s2_dir, s.label_path, s.s1_path) for s in series[:1]]
    cfg = _cfg(specs, epochs=2, max_patches=10, cache_dir=tmp_path / "cache")
    full = train(cfg, tmp_path / "full", progress=False)

    class Stop(Exception):
        pass

    def stop(epoch, row):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "b", progress=False, on_epoch_end=stop)
    assert not (tmp_path / "b").exists() and (tmp_path / "b.work" / "checkpoint.pt").is_file()
    assert not list(tmp_path.glob(".b.partial-*"))
    resumed = train(cfg, tmp_path / "b", progress=False, resume=True)
    a = torch.load(full / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = (json.loads((p / "report.json").read_text()) for p in (full, resumed))
    assert ra["validation"] == rb["validation"]
    rows = [[ln.split(",")[:-1] for ln in (p / "log.csv").read_text().splitlines()] for p in (full, resumed)]
    assert len(rows[0]) == 3 and rows[0] == rows[1]  # header + 2 epochs; all but the seconds column


def test_output_exists_refused(trained) -> None:
    with pytest.raises(UsageError, match="already exists; pass --overwrite"):
        train(_cfg([SceneSpec(Path("a.tif"), Path("b.tif"))]), trained, progress=False)


def _write(path: Path, arr: np.ndarray, like: Path, **kw) -> Path:
    with rasterio.open(like) as ds:
        prof = dict(driver="GTiff", height=arr.shape[-2], width=arr.shape[-1], count=1 if arr.ndim == 2 else arr.shape[0],
                    dtype=arr.dtype.name, crs=ds.crs, transform=kw.pop("transform", ds.transform))
    prof.update(kw)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(arr if arr.ndim == 3 else arr[None])
    return path


def test_labels_not_overlapping_scene_refused(series, tmp_path) -> None:
    s = series[0]
    with rasterio.open(s.label_path) as ds:
        lab, t = ds.read(1), ds.transform
    shifted = Affine(t.a, t.b, t.c + 200_000, t.d, t.e, t.f)
    bad = _write(tmp_path / "far.tif", lab, s.label_path, transform=shifted, nodata=255)
    with pytest.raises(InputError, match=r"labels .*far.tif do not overlap scene .*; give the labels of this scene's area"):
        train(_cfg([SceneSpec(s.s2_dir, bad, s.s1_path)]), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_empty_label_set_refused(series, tmp_path) -> None:
    s = series[0]
    with rasterio.open(s.label_path) as ds:
        lab = ds.read(1)
    empty = _write(tmp_path / "empty.tif", np.where(lab == 255, 255, 0).astype(np.uint8), s.label_path, nodata=255)
    with pytest.raises(InputError, match="contain no mine pixel .* the label set is empty"):
        train(_cfg([SceneSpec(s.s2_dir, empty, s.s1_path)]), tmp_path / "o", progress=False)
    gj = tmp_path / "none.geojson"
    gj.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InputError, match="contain no polygon: the label set is empty"):
        train(_cfg([SceneSpec(s.s2_dir, gj, s.s1_path)]), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_wrong_band_count_refused(series, tmp_path) -> None:
    s = series[0]
    five = _write(tmp_path / "five.tif", np.zeros((5, 64, 64), np.float32), s.label_path)
    with pytest.raises(BandError, match=r"five.tif has 5 bands but coal-train needs the 23-band stack"):
        train(_cfg([SceneSpec(five, s.label_path)]), tmp_path / "o", progress=False)


def test_cli_unknown_config_key_refused(tmp_path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text("epochs = 3\nlearning_rate = 0.1\n")
    r = CliRunner().invoke(main, [str(cfg), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "unknown key 'learning_rate'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_subprocess_refuses_mismatched_options(tmp_path) -> None:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run(
        [sys.executable, "-m", "coalmine.train.cli", "--scene", "a.tif", "--scene", "b.tif", "--labels", "l.tif",
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        "coal-train: error: 2 --scene but 1 --labels given; give one labels file per scene, in the same order"
    )
    r = subprocess.run([sys.executable, "-m", "coalmine.train.cli", "--help"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0 and "evaluate" in r.stdout and "train" in r.stdout


def test_raw_scenes_trained_with_stacks_use_the_stacks_glcm_edges(series, tmp_path) -> None:
    from dataclasses import replace

    from coalmine.runtime.bundle import Preprocessing
    from coalmine.runtime.preprocess import open_scene, prepare_scene
    from coalmine.train.api import _prepare_patches, data_fingerprint
    from rasterio.windows import Window

    prep = Preprocessing()
    prep = replace(prep, glcm=replace(prep.glcm, edges=(), db_range=(-20.0, 0.0)).with_default_edges())
    assert prep.glcm.edges != Preprocessing().glcm.edges
    a, b = series[0], series[1]
    stack = prepare_scene(a.s2_dir, a.s1_path, tmp_path / "a.tif", prep, progress=False)
    specs = (SceneSpec(stack, a.label_path), SceneSpec(b.s2_dir, b.label_path, b.s1_path, "test"))
    cfg = _cfg(specs, max_patches=6)
    ps, _ = _prepare_patches(cfg, tmp_path / "work", data_fingerprint(specs), False)
    assert ps.meta["edges_source"] == "stack"
    assert Preprocessing.from_dict(ps.meta["preprocessing"]).glcm.edges == prep.glcm.edges
    j = int(ps.indices("test")[0])
    p = ps.patches[j]
    w = Window(p.col, p.row, 64, 64)
    with open_scene(b.s2_dir, b.s1_path, prep=prep) as src:
        want = src.read(w)
    with open_scene(b.s2_dir, b.s1_path, prep=Preprocessing()) as src:
        other = src.read(w)
    np.testing.assert_array_equal(ps.x[j], want)
    assert not np.allclose(ps.x[j][13:], other[13:], equal_nan=True)  # GLCM bands depend on the edges
