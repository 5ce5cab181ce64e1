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

[[scenes]]
path = "stacks/2019.tif"
labels = "labels/2019.geojson"

[[scenes]]
path = "raw/S2_2020"
s1 = "/data/vv_2020.tif"
labels = "labels/2020.tif"
split = "test"
""")
    cfg = load_config(p)
    assert cfg.epochs == 12 and cfg.tile == 64 and cfg.threshold == "tune" and cfg.lr == 0.0005
    assert cfg.batch_size == TrainConfig().batch_size
    assert cfg.scenes[0].path == tmp_path / "stacks/2019.tif" and cfg.scenes[0].s1 is None
    assert cfg.scenes[1].s1 == Path("/data/vv_2020.tif") and cfg.scenes[1].split == "test"
    assert cfg.cache_dir == tmp_path / "cache"
    assert config_to_dict(cfg)["scenes"][1]["split"] == "test"
    over = with_overrides(cfg, epochs=3, seed=None)
    assert over.epochs == 3 and over.seed == cfg.seed


def test_unknown_top_level_key_refused_with_its_name(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"train.toml: unknown key 'epoch'; known keys: .*epochs"):
        load_config(_write(tmp_path, "epoch = 3\n"))


def test_unknown_scene_key_refused_with_its_name(tmp_path) -> None:
    text = '[[scenes]]\npath = "a.tif"\nlabels = "l.tif"\nlabel = "x"\n'
    with pytest.raises(ConfigError, match=r"train.toml: unknown key 'scenes\[0\].label'; known keys in scenes\[0\]"):
        load_config(_write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"unknown key 'scenes\[0\].date'"):  # a monitor key, not a training one
        load_config(_write(tmp_path, '[[scenes]]\npath = "a.tif"\nlabels = "l.tif"\ndate = 2019-07-01\n'))


def test_scene_without_labels_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"scenes\[0\] has no 'labels'; each \[\[scenes\]\] table needs path and labels"):
        load_config(_write(tmp_path, '[[scenes]]\npath = "a.tif"\n'))


def test_old_spelling_is_read_with_a_warning(tmp_path, caplog) -> None:
    old = load_config(_write(tmp_path, '[[scene]]\nscene = "a.tif"\nlabels = "l.tif"\n'))
    assert old.scenes[0].path == tmp_path / "a.tif" and old.scenes[0].labels == tmp_path / "l.tif"
    assert "[[scene]] is the old spelling of [[scenes]]" in caplog.text
    with pytest.raises(ConfigError, match=r"both \[\[scenes\]\] and \[\[scene\]\] are given"):
        load_config(_write(tmp_path, '[[scene]]\nscene = "a"\nlabels = "b"\n[[scenes]]\npath = "c"\nlabels = "d"\n'))


def test_environment_variables_in_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COALMINE_TEST_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("COALMINE_TEST_UNSET", raising=False)
    cfg = load_config(_write(tmp_path, '[[scenes]]\npath = "${COALMINE_TEST_DATA}/s.tif"\nlabels = "l.tif"\n'))
    assert cfg.scenes[0].path == tmp_path / "data" / "s.tif"
    cfg = load_config(_write(tmp_path, 'cache_dir = "$COALMINE_TEST_DATA/cache"\n'))
    assert cfg.cache_dir == tmp_path / "data" / "cache"
    with pytest.raises(ConfigError, match=r"scenes\[0\].path = '\$COALMINE_TEST_UNSET/s.tif' uses the environment "
                                          r"variable \$COALMINE_TEST_UNSET, which is not set"):
        load_config(_write(tmp_path, '[[scenes]]\npath = "$COALMINE_TEST_UNSET/s.tif"\nlabels = "l.tif"\n'))
    assert not (tmp_path / "$COALMINE_TEST_UNSET").exists()


def test_wrong_types_and_values_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="epochs must be a whole number, got '5'"):
        load_config(_write(tmp_path, 'epochs = "5"\n'))
    with pytest.raises(ConfigError, match=r"setting 'tile' = 100 is not a positive multiple of 32 \(.*\); use 96 or 128"):
        load_config(_write(tmp_path, "tile = 100\n"))
    with pytest.raises(ConfigError, match="threshold must be a number or \"tune\""):
        load_config(_write(tmp_path, "threshold = true\n"))
    with pytest.raises(ConfigError, match="split 'val' is invalid; use 'train' or 'test'"):
        load_config(_write(tmp_path, '[[scenes]]\npath = "a"\nlabels = "b"\nsplit = "val"\n'))
    with pytest.raises(ConfigError, match="lr must be a finite number, got nan"):
        load_config(_write(tmp_path, "lr = nan\n"))
    with pytest.raises(ConfigError, match="setting 'val_fraction' = 1.0 is invalid"):
        with_overrides(TrainConfig(), val_fraction=1.0)


def test_bad_toml_and_missing_file_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(_write(tmp_path, "epochs = = 3\n"))
    with pytest.raises(InputNotFoundError, match="config file .*nope.toml does not exist"):
        load_config(tmp_path / "nope.toml")


def test_default_overlap_follows_a_small_tile_and_an_explicit_one_is_checked(tmp_path) -> None:
    # a quarter of the tile, at most 32 px: the study's 128 px tiles keep 32, a 32 px tile gets 8
    assert [with_overrides(TrainConfig(), tile=t).effective_overlap for t in (32, 64, 128, 256)] == [8, 16, 32, 32]
    assert load_config(_write(tmp_path, "tile = 32\noverlap = 0\n")).effective_overlap == 0
    with pytest.raises(ConfigError, match=r"setting 'overlap' = 32 is invalid: use pixels >= 0 and below the tile size 32"):
        load_config(_write(tmp_path, "tile = 32\noverlap = 32\n"))
    with pytest.raises(ConfigError, match="overlap must be a whole number"):
        load_config(_write(tmp_path, "overlap = 1.5\n"))
