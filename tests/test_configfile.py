"""One TOML loader and one vocabulary for the coal-monitor and coal-train configurations."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner
from coalmine.runtime.cli.monitor import main as monitor_main
from coalmine.runtime.configfile import expand_path, typed
from coalmine.runtime.errors import ConfigError
from coalmine.runtime.monitor import load_config as load_monitor
from coalmine.runtime.scenes import SceneSpec
from coalmine.train.config import load_config as load_train
from test_monitor_data import make_mask_project


def test_both_configurations_read_the_same_scenes_table(tmp_path):
    p = make_mask_project(tmp_path)
    scene = sorted(p["scenes"].iterdir())[0]
    table = f'[[scenes]]\npath = "{scene}"\ns1 = "{scene}"\n'
    mon = tmp_path / "m.toml"
    mon.write_text('bundle = "bundle"\naois = "aois.geojson"\noutput = "out"\n' + table + "date = 2016-07-15\n")
    tr = tmp_path / "t.toml"
    tr.write_text(table + 'labels = "l.tif"\n')
    m, t = load_monitor(mon).scenes[0], load_train(tr).scenes[0]
    assert type(m) is type(t) is SceneSpec
    assert m.path == t.path == scene and m.s1 == t.s1 == scene
    assert m.date == dt.date(2016, 7, 15) and t.labels == tmp_path / "l.tif"


def test_unset_environment_variable_is_refused_by_name(tmp_path, monkeypatch):
    make_mask_project(tmp_path)
    monkeypatch.delenv("COALMINE_NOT_SET", raising=False)
    cfg = tmp_path / "m.toml"
    cfg.write_text('bundle = "bundle"\naois = "aois.geojson"\noutput = "$COALMINE_NOT_SET/out"\n'
                   '[[search]]\nfolder = "incoming"\ndate_format = "%Y%m%d"\n')
    with pytest.raises(ConfigError) as e:
        load_monitor(cfg)
    assert str(e.value) == (f"{cfg}: output = '$COALMINE_NOT_SET/out' uses the environment variable "
                            "$COALMINE_NOT_SET, which is not set; set it before running, or write the path out")
    r = CliRunner().invoke(monitor_main, [str(cfg), "-q"])
    assert r.exit_code == 2 and r.stderr.strip() == f"coal-monitor: error: {e.value}"
    assert not (tmp_path / "$COALMINE_NOT_SET").exists()
    monkeypatch.setenv("COALMINE_NOT_SET", str(tmp_path / "elsewhere"))
    assert load_monitor(cfg).output == tmp_path / "elsewhere" / "out"


def test_expand_path_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("COALMINE_X", "/data")
    monkeypatch.setenv("HOME", str(tmp_path))
    src = tmp_path / "c.toml"
    assert str(expand_path("${COALMINE_X}/a", tmp_path, src, "k")) == "/data/a"
    assert expand_path("$COALMINE_X/a", tmp_path, src, "k").as_posix() == "/data/a"
    assert expand_path("~/a", tmp_path / "x", src, "k") == tmp_path / "a"
    assert expand_path("rel/a", tmp_path, src, "k") == tmp_path / "rel" / "a"
    with pytest.raises(ConfigError, match="k must be a path string, got 3"):
        expand_path(3, tmp_path, src, "k")


@pytest.mark.parametrize("value,types,msg", [
    (True, int, "t.k must be a whole number, got True"),
    ("5", (int, float), "t.k must be a whole number or a number, got '5'"),
    (5, str, "t.k must be a string, got 5"),
])
def test_wrong_types_are_refused_naming_the_key_and_file(tmp_path, value, types, msg):
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'c.toml'}: {msg}$"):
        typed({"k": value}, "k", types, tmp_path / "c.toml", "t")
    assert typed({"k": 3}, "k", float, tmp_path) == 3
