"""TOML training config and command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from coalmine.runtime.errors import ConfigError, InputNotFoundError
from coalmine.train.config import TrainConfig, config_to_dict, load_config, with_overrides


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "train.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_config_file_with_scenes_and_relative_paths(tmp_path) -> None:
    p = _write(tmp_path, """
epochs = 12
tile = 64
threshold = "tune"
lr = 0.0005
cache_dir = "cache"

[[scene]]
scene = "stacks/2019.tif"
labels = "labels/2019.geojson"

[[scene]]
scene = "raw/S2_2020"
s1 = "/data/vv_2020.tif"
labels = "labels/2020.tif"
split = "test"
""")
    cfg = load_config(p)
    assert cfg.epochs == 12 and cfg.tile == 64 and cfg.threshold == "tune" and cfg.lr == 0.0005
    assert cfg.batch_size == TrainConfig().batch_size
    assert cfg.scenes[0].scene == tmp_path / "stacks/2019.tif" and cfg.scenes[0].s1 is None
    assert cfg.scenes[1].s1 == Path("/data/vv_2020.tif") and cfg.scenes[1].split == "test"
    assert cfg.cache_dir == tmp_path / "cache"
    assert config_to_dict(cfg)["scenes"][1]["split"] == "test"
    over = with_overrides(cfg, epochs=3, seed=None)
    assert over.epochs == 3 and over.seed == cfg.seed


def test_unknown_top_level_key_refused_with_its_name(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'epoch'; allowed keys are"):
        load_config(_write(tmp_path, "epoch = 3\n"))


def test_unknown_scene_key_refused_with_its_name(tmp_path) -> None:
    text = '[[scene]]\nscene = "a.tif"\nlabels = "l.tif"\nlabel = "x"\n'
    with pytest.raises(ConfigError, match=r"unknown key 'label' in \[\[scene\]\]"):
        load_config(_write(tmp_path, text))


def test_scene_without_labels_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="lacks 'labels'"):
        load_config(_write(tmp_path, '[[scene]]\nscene = "a.tif"\n'))


def test_wrong_types_and_values_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="'epochs' must be an integer, got '5'"):
        load_config(_write(tmp_path, 'epochs = "5"\n'))
    with pytest.raises(ConfigError, match=r"setting 'tile' = 100 is not a positive multiple of 32 \(.*\); use 96 or 128"):
        load_config(_write(tmp_path, "tile = 100\n"))
    with pytest.raises(ConfigError, match="'threshold' must be a number or \"tune\""):
        load_config(_write(tmp_path, "threshold = true\n"))
    with pytest.raises(ConfigError, match="split 'val' is invalid; use 'train' or 'test'"):
        load_config(_write(tmp_path, '[[scene]]\nscene = "a"\nlabels = "b"\nsplit = "val"\n'))
    with pytest.raises(ConfigError, match="setting 'val_fraction' = 1.0 is invalid"):
        with_overrides(TrainConfig(), val_fraction=1.0)


def test_bad_toml_and_missing_file_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(_write(tmp_path, "epochs = = 3\n"))
    with pytest.raises(InputNotFoundError, match="config file .*nope.toml does not exist"):
        load_config(tmp_path / "nope.toml")
