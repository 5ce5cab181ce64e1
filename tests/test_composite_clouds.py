"""A clouded year composited: no gap where any acquisition saw the ground, and the mined area a
model maps on the composite follows the labels, where the single most clouded acquisition does not.

The model is a per-pixel logistic regression over the 23 normalised bands, fitted (Newton's
method, NumPy) on a cloud-free generated scene of another landscape and year, and exported as a
1x1 convolution in ONNX: small enough for a test, and a real model coal-run runs like any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from coalmine.runtime.bundle import Normalization
from coalmine.runtime.preprocess import prepare_scene
from coalmine.runtime.preprocess.prepare_composite import prepare_composite
from coalmine.runtime.preprocess.s2 import SCL_MASKED
from coalmine.runtime.run import run_scene
from coalmine.train.synth import make_acquisitions, make_scene
from factories import make_tiny_bundle

SIZE = 192
N_ACQ = 8
DILATION = 1
#: The composite's mapped area lies within this share of the labelled area.
COMPOSITE_TOLERANCE = 0.10
#: The most clouded single acquisition maps less than this share of the labelled area.
WORST_AT_MOST = 0.40


def _logistic_bundle(root: Path) -> Path:
    scene = make_scene(root / "train", 2020, seed=11, size=SIZE, cloud_cover=0.0)
    stack = prepare_scene(scene.s2_dir, scene.s1_path, root / "train.tif", progress=False)
    with rasterio.open(stack) as ds, rasterio.open(scene.label_path) as lab:
        x, y = ds.read(), lab.read(1)
    ok = np.isfinite(x).all(axis=0) & (y != 255)
    X = x[:, ok].T.astype(np.float64)
    Y = (y[ok] == 1).astype(np.float64)
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-6
    Z = np.hstack([(X - mean) / std, np.ones((len(X), 1))])
    weight = np.where(Y == 1, 0.5 / Y.mean(), 0.5 / (1 - Y.mean()))  # balanced classes
    w = np.zeros(Z.shape[1])
    for _ in range(25):  # Newton steps with a small ridge
        p = 1 / (1 + np.exp(-Z @ w))
        grad = Z.T @ ((p - Y) * weight) + 1e-3 * w
        hess = (Z * (p * (1 - p) * weight)[:, None]).T @ Z + 1e-3 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(w[:-1].astype(np.float32).reshape(1, -1, 1, 1), "w"),
             numpy_helper.from_array(np.array([w[-1]], np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["logits"])], "logistic",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 23, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, "H", "W"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(root / "logistic.onnx"))
    make_tiny_bundle(root / "bundle", onnx_file=root / "logistic.onnx", tile=64, overlap=0,
                     normalization=Normalization(tuple(map(float, mean)), tuple(map(float, std))))
    return root / "bundle"


@pytest.fixture(scope="module")
def clouded_year(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("clouds")
    acq = make_acquisitions(root / "acq", 2021, N_ACQ, seed=5, size=SIZE, cloud_cover=(0.3, 0.7))
    comp = prepare_composite([a.s2_dir for a in acq], [a.s1_path for a in acq], root / "comp.tif",
                             dilation=DILATION, progress=False)
    return {"root": root, "acq": acq, "comp": comp}


def _dilated_clear(scl_path: Path) -> np.ndarray:
    """Clear 10 m pixels of one acquisition: its 20 m SCL, clouds and shadows grown by DILATION
    (an independent path: nearest upsampling by repetition, scipy's binary dilation)."""
    from scipy.ndimage import binary_dilation

    with rasterio.open(scl_path) as ds:
        scl = ds.read(1).repeat(2, axis=0).repeat(2, axis=1)
    cloud = binary_dilation(np.isin(scl, (3, 8, 9, 10)), np.ones((2 * DILATION + 1,) * 2, bool))
    return ~cloud & ~np.isin(scl, SCL_MASKED)


def test_no_gap_where_any_acquisition_was_clear(clouded_year: dict) -> None:
    clear = np.stack([_dilated_clear(a.scl_path) for a in clouded_year["acq"]])
    with rasterio.open(clouded_year["comp"]) as ds:
        valid = np.isfinite(ds.read()).all(axis=0)
    assert clear.any(axis=0).mean() > 0.9
    assert np.array_equal(valid, clear.any(axis=0))  # valid exactly where some acquisition was clear
    worst = max(clouded_year["acq"], key=lambda a: a.cloud_share)
    assert clear.any(axis=0).mean() > 2 * _dilated_clear(worst.scl_path).mean()


def test_composite_maps_the_labelled_area_where_the_cloudiest_acquisition_cannot(clouded_year: dict) -> None:
    root = clouded_year["root"]
    bundle = _logistic_bundle(root)
    acq = clouded_year["acq"]
    with rasterio.open(acq[0].label_path) as ds:
        labelled = float((ds.read(1) == 1).sum()) * 0.01  # 10 m pixels: 0.01 ha
    summary = run_scene(clouded_year["comp"], bundle, root / "run_comp", progress=False)
    comp = summary["areas_ha"]["total"]
    worst = max(acq, key=lambda a: a.cloud_share)
    single = prepare_scene(worst.s2_dir, worst.s1_path, root / "worst.tif", scl="auto", progress=False)
    one_summary = run_scene(single, bundle, root / "run_worst", progress=False)
    one = one_summary["areas_ha"]["total"]
    assert "observations" not in one_summary  # a single scene has no composite quality

    # the summary's share of the mapped area on fewer than 3 clear observations, recomputed
    with rasterio.open(summary["outputs"]["mask"]) as m, rasterio.open(root / "comp_quality.tif") as q:
        mine, clear = m.read(1) == 1, q.read(1)
    obs = summary["observations"]
    assert obs["mapped_ha"] == pytest.approx(comp, abs=1e-6)
    assert obs["share_below"] == pytest.approx(float((clear[mine] < 3).mean()), abs=1e-6)
    assert 0 < obs["share_below"] < 1
    assert abs(comp - labelled) <= COMPOSITE_TOLERANCE * labelled, (comp, labelled)
    assert one <= WORST_AT_MOST * labelled, (one, labelled)
    assert abs(comp - labelled) < abs(one - labelled)
