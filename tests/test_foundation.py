"""Package foundation: lean runtime import, error hierarchy, band spec, bundle round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from coalmine.runtime import bands, errors
from coalmine.runtime.bundle import (
    Bundle,
    GlcmParams,
    Normalization,
    Preprocessing,
    load_bundle,
)

REPO = Path(__file__).resolve().parents[1]


LEAN_CHECK = """
import importlib, pkgutil, sys
import coalmine.runtime as rt
names = sorted(m.name for m in pkgutil.walk_packages(rt.__path__, "coalmine.runtime."))
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in ("torch", "segmentation_models_pytorch", "torchvision", "timm")
             or m.startswith(("coalmine.train", "coalmine.export")))
print(",".join(names))
print(",".join(bad))
"""


def test_no_runtime_module_imports_torch_train_or_export():
    """Every module of coalmine.runtime, imported in a fresh interpreter, pulls in no torch,
    segmentation-models-pytorch, coalmine.train or coalmine.export."""
    out = subprocess.run([sys.executable, "-c", LEAN_CHECK], capture_output=True, text=True, check=True)
    names, bad = out.stdout.splitlines()
    files = {p.relative_to(REPO / "runtime").with_suffix("") for p in (REPO / "runtime").rglob("*.py")}
    on_disk = {".".join(("coalmine", "runtime", *(f.parts[:-1] if f.name == "__init__" else f.parts)))
               for f in files} - {"coalmine.runtime"}
    assert on_disk <= set(names.split(","))  # every module was imported (and _glcm, compiled)
    assert bad == "", f"coalmine.runtime imported: {bad}"


def test_band_spec_order():
    assert bands.N_BANDS == 23
    assert bands.BAND_NAMES[:9] == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
    assert bands.BAND_NAMES[9:13] == ("NDVI", "NDCI", "BAI", "VV")
    assert bands.BAND_NAMES[13] == "GLCM_contrast" and bands.BAND_NAMES[-1] == "GLCM_correlation"


def test_errors_subclass_builtins_and_exit_codes():
    assert issubclass(errors.BandError, ValueError) and issubclass(errors.BandError, errors.CoalmineError)
    assert issubclass(errors.OutputError, OSError)
    assert issubclass(errors.InputNotFoundError, FileNotFoundError)
    assert errors.UsageError("x").exit_code == 2 and errors.InputError("x").exit_code == 1
    assert issubclass(errors.MissingDependencyError, ImportError)


def _bundle(tmp_path, **kw):
    n = bands.N_BANDS
    b = Bundle(
        path=tmp_path / "b",
        bundle_id="test-1",
        bands=bands.BAND_NAMES,
        preprocessing=Preprocessing(),
        normalization=Normalization(mean=tuple(float(i) for i in range(n)), std=(2.0,) * n),
        **kw,
    )
    b.save()
    return b


def test_bundle_round_trip(tmp_path):
    b = _bundle(tmp_path, threshold=0.4)
    got = load_bundle(b.path)
    assert got.to_dict() == b.to_dict()
    assert got.preprocessing.glcm.halo == 9 // 2 + 4
    assert len(got.preprocessing.glcm.edges) == 31


def test_default_edges_are_equal_width():
    g = GlcmParams(levels=4, db_range=(-20.0, 0.0)).with_default_edges()
    assert g.edges == (-15.0, -10.0, -5.0)


def test_normalization_apply_fills_nodata_with_zero():
    import numpy as np

    norm = Normalization(mean=(1.0, 2.0), std=(2.0, 4.0))
    x = np.array([[[3.0, np.nan]], [[6.0, 2.0]]], dtype=np.float32)
    y = norm.apply(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[:, 0, :], [[1.0, 0.0], [1.0, 0.0]])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="other"), "is not a coalmine bundle"),
        (lambda d: d.update(format_version=99), "format_version 99"),
        (lambda d: d["bands"].pop(), "22 bands listed but the model takes 23"),
        (lambda d: d["normalization"]["std"].__setitem__(0, 0.0), "std values must be finite and > 0"),
        (lambda d: d.update(threshold=1.5), "threshold 1.5 must lie strictly between 0 and 1"),
        (lambda d: d["tile"].update(size=100), "tile size 100 is not a positive multiple of 32"),
        (lambda d: d["bands"].__setitem__(0, "B99"), "unknown band names ['B99']"),
        (lambda d: d.pop("bundle_id"), "is missing or has a bad entry"),
    ],
)
def test_bundle_refusals(tmp_path, mutate, message):
    b = _bundle(tmp_path)
    d = json.loads((b.path / "bundle.json").read_text())
    mutate(d)
    (b.path / "bundle.json").write_text(json.dumps(d))
    with pytest.raises(errors.BundleError, match=None) as ei:
        load_bundle(b.path)
    assert message in str(ei.value)


def test_bundle_missing_folder_and_json(tmp_path):
    with pytest.raises(errors.BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.BundleError, match="has no bundle.json"):
        load_bundle(tmp_path / "empty")
    b = _bundle(tmp_path)
    with pytest.raises(errors.BundleError, match="coal-export"):
        b.file("onnx")


def test_setup_logging_resets_levels_left_by_an_earlier_command():
    import logging

    from coalmine.runtime.cli.options import setup_logging

    child = logging.getLogger("coalmine.runtime.some_stage")
    child.setLevel(logging.WARNING)  # as a command that quiets a stage would
    setup_logging(verbose=0, quiet=False)
    assert child.getEffectiveLevel() == logging.INFO


# -- optional packages ------------------------------------------------------------------------------
def test_optional_table_names_the_extra_that_installs_each_package():
    import re

    import tomllib
    from coalmine.runtime._optional import OPTIONAL

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for module, (dist, extra) in OPTIONAL.items():
        names = [re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in extras[extra]]
        assert dist in names, f"{module}: extra [{extra}] does not install {dist} ({extras[extra]})"


def test_optional_import_names_the_pip_command(monkeypatch):
    from coalmine.runtime._optional import optional_import

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> not installed
    with pytest.raises(errors.MissingDependencyError) as ei:
        optional_import("distributed", purpose="running on a Dask cluster")
    assert str(ei.value) == (
        "running on a Dask cluster needs the Python package 'distributed', which is not installed; "
        'install it with: pip install "coalmine[cluster]"'
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(errors.MissingDependencyError, match=r'pip install "coalmine\[cpu\]" \(or "coalmine\[gpu\]"'):
        optional_import("onnxruntime", purpose="running the model")


def test_optional_import_takes_the_first_layout_that_imports(monkeypatch):
    from coalmine.runtime import _optional

    monkeypatch.setitem(_optional.OPTIONAL, "coalmine_no_such_layout", ("cuda-python", "tensorrt"))
    assert _optional.optional_import("coalmine_no_such_layout", "json", purpose="x") is json


def test_optional_import_of_a_broken_package_says_it_cannot_be_imported(tmp_path, monkeypatch):
    from coalmine.runtime import _optional

    pkg = tmp_path / "coalmine_broken_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import coalmine_missing_shared_lib\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(_optional.OPTIONAL, "coalmine_broken_pkg", ("tensorrt", "tensorrt"))
    with pytest.raises(errors.MissingDependencyError) as ei:
        _optional.optional_import("coalmine_broken_pkg", purpose="the TensorRT backend")
    assert "which cannot be imported (No module named 'coalmine_missing_shared_lib')" in str(ei.value)
    assert 'pip install "coalmine[tensorrt]"' in str(ei.value)
