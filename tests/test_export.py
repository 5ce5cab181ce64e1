"""coal-export: ONNX fp32/fp16/int8 with parity gates, engine records, the engine gate with a fake TensorRT, CLI and refusals.

One briefly fitted U-Net-ResNet34 bundle (``tests/toy_bundle.py``: 20 optimiser steps on
generated 23-band tiles, mixed mask with ~15 % mine and pixels near the threshold) is made
once per session; tests that write into a bundle work on a copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from coalmine.export import api
from coalmine.export import engine as export_engine
from coalmine.export.api import export_bundle, parse_size
from coalmine.export.cli import main
from coalmine.export.fp16 import FP16_MAX, HEADROOM, convert_fp16, risky_nodes
from coalmine.export.onnx_export import SOURCE_KEY, export_onnx, read_metadata
from coalmine.export.parity import (
    FP16_TOLERANCES,
    ParityError,
    Tolerances,
    compare,
)
from coalmine.runtime.backends import Backend
from coalmine.runtime.bundle import load_bundle
from coalmine.runtime.errors import BackendError, BundleError, UsageError
from toy_bundle import make_toy_bundle


@pytest.fixture(autouse=True)
def _restore_logging():
    """coal-export's CLI points the 'coalmine' logger at the CliRunner's stderr; undo that."""
    lg = logging.getLogger("coalmine")
    saved = (lg.handlers[:], lg.propagate, lg.level)
    yield
    lg.handlers[:], lg.propagate, lg.level = saved[0], saved[1], saved[2]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on the shared 2-core machine two contending threads are 5x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def toy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_bundle(tmp_path_factory.mktemp("toy") / "bundle", n_val=8, tile=64, steps=20)


@pytest.fixture
def bundle_dir(toy_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(toy_bundle, dst)
    return dst


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".partial" in p.name or p.name.startswith(".int8-"))


class _ScaledInput:
    """A model wrapper with a wrong input scale: the kind of mistake the gate must catch."""

    def __init__(self, model, scale: float) -> None:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, x):
                return self.inner(x * scale)

        self.module = Wrapped().eval()


# -- the gated exports -----------------------------------------------------------------------
def test_fp32_fp16_int8_exports_pass_parity(
    bundle_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fabricated engine record: an engine built from an older model.onnx must be reported stale.
    engines = bundle_dir / "engines"
    engines.mkdir()
    (engines / "old.engine").write_bytes(b"plan")
    (engines / "old.json").write_text(json.dumps({
        "file": "old.engine", "onnx": "model.onnx", "onnx_sha256": "0" * 64, "gpu_name": "RTX 2060",
        "compute_capability": "7.5", "tensorrt_version": "10.13.0", "tensorrt_build": "cu12", "tile": 64,
        "max_batch": 8, "gate": {"passed": True}}))
    caplog.set_level(logging.INFO, logger="coalmine")
    monkeypatch.setattr(export_engine, "tensorrt_status", lambda: (False, "no TensorRT (test)"))
    res = export_bundle(bundle_dir, fp16=True, int8=True, engine=False, progress=True)

    b = load_bundle(bundle_dir)
    for key in ("onnx", "onnx_fp16", "onnx_int8"):
        assert b.has(key), key
        assert res["reports"][key]["passed"], res["reports"][key]
    assert b.files["parity_report"] == "parity_report.json"
    saved = json.loads((bundle_dir / "parity_report.json").read_text())
    assert set(saved["reports"]) == {"onnx", "onnx_fp16", "onnx_int8"}
    assert _leftovers(bundle_dir) == []

    # The gate is meaningful: a mixed mask that follows the labels, not a constant map.
    r32 = res["reports"]["onnx"]
    assert 0.5 < r32["reference_iou"] < 1.0
    assert r32["logit_tolerance_used"] <= 1.0 and r32["mask_agreement"] >= 0.999
    assert r32["max_abs_logit"] <= 1e-3 * (1 + 20)  # toy logits stay within about ±20
    assert [64, 64] in [s[2:] for s in r32["shapes"]]
    assert any(s[2:] != [64, 64] for s in r32["shapes"]), "no check at a second shape"
    assert res["reports"]["onnx_fp16"]["iou_drop_points"] <= 1.0
    assert res["reports"]["onnx_int8"]["mask_agreement"] >= 0.99

    # model.onnx: names, dynamic axes, opset, metadata; runs at a shape it was not traced at.
    m = onnx.load(str(b.file("onnx")))
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert m.graph.input[0].name == "input" and m.graph.output[0].name == "logits"
    assert dims[1] == 23 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    meta = read_metadata(b.file("onnx"))
    assert meta["coalmine.bundle_id"] == b.bundle_id
    assert json.loads(meta["coalmine.bands"]) == list(b.bands)
    assert float(meta["coalmine.threshold"]) == b.threshold
    sess = ort.InferenceSession(str(b.file("onnx")), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.zeros((3, 23, 96, 160), np.float32)})[0]
    assert out.shape == (3, 1, 96, 160) and out.dtype == np.float32

    # fp16: float32 graph I/O, half-precision weights inside, output head kept in FP32.
    m16 = onnx.load(str(b.file("onnx_fp16")))
    assert m16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    n_half = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in m16.graph.initializer)
    assert n_half > 40
    assert "writes the output logits" in res["settings"]["onnx_fp16"]["fp32_nodes"].values()
    # int8: QDQ nodes present, per-channel weights.
    ops = {n.op_type for n in onnx.load(str(b.file("onnx_int8"))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert res["settings"]["onnx_int8"]["weights"] == "int8 per-channel"
    for key in ("onnx", "onnx_fp16", "onnx_int8"):  # all carry the weights' fingerprint
        assert read_metadata(b.file(key))[SOURCE_KEY] == _sha(b.file("pytorch"))

    # Stale engine found, reported and said on stderr; the engine step was skipped with a reason.
    assert res["stale_engines"][0]["file"] == "old.engine"
    assert "sha256 differs" in res["stale_engines"][0]["reasons"][0]
    assert "old.engine" in caplog.text and "stale" in caplog.text
    assert res["engine"] == {"built": False, "reason": "--no-engine given"}
    assert "model.fp16.onnx" in res["table"] and "PASS" in res["table"]


def test_wrong_input_scale_is_caught_and_previous_onnx_kept(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = bundle_dir / "model.onnx"
    previous.write_bytes(b"previous good export")
    before = (bundle_dir / "bundle.json").read_text()

    def broken_export(model, bundle, out_path, **kw):
        return export_onnx(_ScaledInput(model, 1.05).module, bundle, out_path, **kw)

    monkeypatch.setattr(api, "export_onnx", broken_export)
    with pytest.raises(ParityError) as ei:
        export_bundle(bundle_dir, fp16=True, engine=False, progress=False)
    msg = str(ei.value)
    assert msg.startswith("model.onnx failed its parity gate against pytorch-fp32")
    assert "max |Δlogit|" in msg and "exceeds the tolerance 0.001 + 0.001·|logit| (worst pixel:" in msg
    assert msg.endswith("; nothing was written and the bundle keeps its previous files")
    assert isinstance(ei.value, BundleError) and ei.value.exit_code == 1
    assert previous.read_bytes() == b"previous good export"
    assert not (bundle_dir / "model.fp16.onnx").exists()
    assert (bundle_dir / "bundle.json").read_text() == before
    assert _leftovers(bundle_dir) == []


def test_corrupted_fp16_is_refused_and_nothing_written(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnx import numpy_helper

    def corrupted_fp16(src, dst, **kw):
        kept = convert_fp16(src, dst, **kw)
        m = onnx.load(str(dst))
        head = [n for n in m.graph.node if n.op_type == "Conv"][-1]
        for init in m.graph.initializer:
            if init.name == head.input[2]:  # shift the output bias: many pixels change side
                arr = numpy_helper.to_array(init) + np.asarray(2.5, dtype=numpy_helper.to_array(init).dtype)
                init.CopyFrom(numpy_helper.from_array(arr, init.name))
        onnx.save(m, str(dst))
        return kept

    monkeypatch.setattr(api, "convert_fp16", corrupted_fp16)
    with pytest.raises(ParityError) as ei:
        export_bundle(bundle_dir, fp16=True, engine=False, progress=False)
    msg = str(ei.value)
    assert msg.startswith("model.fp16.onnx failed its parity gate against model.onnx")
    assert "is below the required 99.50 %" in msg
    assert msg.endswith("nothing from this export was written and the bundle keeps its previous "
                        "files (without --fp16 the other files can be exported)")
    # All-or-nothing: not even the (good) fp32 file of this run replaces anything.
    assert not (bundle_dir / "model.fp16.onnx").exists()
    assert not (bundle_dir / "model.onnx").exists()
    assert _leftovers(bundle_dir) == []


# -- FP16 overflow guard ---------------------------------------------------------------------
def _folded_bn_graph(path: Path) -> None:
    """Conv → Relu → Conv(head): the first conv's weights look like BN folded with a tiny
    running variance (huge scale), so its activations overflow FP16."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = (rng.normal(0, 1, (4, 2, 3, 3)) * 3e4).astype(np.float32)
    w2 = (rng.normal(0, 1, (1, 4, 1, 1)) * 1e-4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["a"], name="conv_bn_folded", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["logits"], name="head"),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2, None, None])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 1, None, None])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def test_fp16_keeps_overflowing_nodes_in_fp32(tmp_path: Path) -> None:
    src = tmp_path / "folded.onnx"
    _folded_bn_graph(src)
    x = np.random.default_rng(1).normal(0, 1, (2, 2, 32, 32)).astype(np.float32)
    keep = risky_nodes(src, x)
    assert "conv_bn_folded" in keep and "≥" in keep["conv_bn_folded"]
    assert keep["head"] == "writes the output logits"
    assert "relu" in keep  # the Relu carries the same huge values
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(ref).max() < FP16_MAX / HEADROOM  # the logits themselves are harmless

    guarded = tmp_path / "guarded.onnx"
    convert_fp16(src, guarded, calib=x)
    out = ort.InferenceSession(str(guarded), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.isfinite(out).all() and np.allclose(out, ref, rtol=1e-2, atol=1e-2)

    # Without calibration only the head is protected: the folded conv's weights are clamped to
    # the converter's FP16 limit and its activations leave the FP16 range, so the map is wrong.
    naive = tmp_path / "naive.onnx"
    convert_fp16(src, naive, calib=None)
    bad = ort.InferenceSession(str(naive), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert not np.isfinite(bad).all() or np.abs(bad - ref).max() > 0.1 * np.abs(ref).max()


# -- parity comparisons on fake runners --------------------------------------------------------
class _Fn(Backend):
    def __init__(self, fn, name: str) -> None:
        self.fn, self.name = fn, name

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x)


def test_compare_reports_nan_iou_and_agreement() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (4, 1, 32, 32)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.uint8)
    y[:, :, :4] = 255  # labelled nodata is ignored for IoU
    ref = _Fn(lambda a: a.copy(), "ref")

    def with_nan(a: np.ndarray) -> np.ndarray:
        b = a.copy()
        b[0, 0, 5, 5] = np.nan
        return b

    rep = compare(ref, _Fn(with_nan, "cand"), x, labels=y, tol=FP16_TOLERANCES, artefact="m.onnx")
    assert rep.nan_outputs == 1 and not rep.passed
    assert rep.failures[0].startswith("NaN outputs: 1 non-finite")
    assert rep.reference_iou == pytest.approx(1.0)

    # Flip ~10 % of the mine pixels to background: agreement and IoU drop measured exactly.
    def drop_some(a: np.ndarray) -> np.ndarray:
        b = a.copy()
        b[:, :, :, 28:] = -1.0
        return b

    rep = compare(ref, _Fn(drop_some, "cand"), x, labels=y, tol=FP16_TOLERANCES, artefact="m.onnx")
    pos = (x[:, 0, :, 28:] > 0).sum()
    assert rep.mask_agreement == pytest.approx(1 - pos / x[:, 0].size)
    assert rep.iou_drop_points > 1.0
    assert any(f.startswith("IoU drop (points)") for f in rep.failures)
    with pytest.raises(ParityError, match=r"m.onnx failed its parity gate.*mask agreement .* below"):
        rep.raise_if_failed()

    # The FP32 rule is numpy.allclose's: |Δ| ≤ atol + rtol·|ref|. Float32 rounding on logits of
    # ±300 passes; the same absolute error on a logit near the threshold does not.
    big = _Fn(lambda a: a * 300.0, "ref")
    rep = compare(big, _Fn(lambda a: a * 300.0 * (1 + 2e-6), "cand"), x,
                  tol=Tolerances(max_abs_logit=1e-3, rtol=1e-3), artefact="m.onnx")
    assert rep.passed and rep.max_abs_logit > 1e-3 and rep.logit_tolerance_used < 1.0

    def near_zero_off(a: np.ndarray) -> np.ndarray:
        b = a * 300.0
        b[0, 0, 0, 0] = 1e-4 + 2e-3
        return b

    def near_zero(a: np.ndarray) -> np.ndarray:
        b = a * 300.0
        b[0, 0, 0, 0] = 1e-4
        return b

    rep = compare(_Fn(near_zero, "ref"), _Fn(near_zero_off, "cand"), x,
                  tol=Tolerances(max_abs_logit=1e-3, rtol=1e-3), artefact="m.onnx")
    assert not rep.passed and rep.logit_at_worst == pytest.approx(1e-4)
    assert rep.failures[0].startswith("max |Δlogit| 0.002 exceeds the tolerance 0.001 + 0.001·|logit|")

    ok = compare(ref, _Fn(lambda a: a + 1e-5, "cand"), [x, x[:1, :, :, :16]],
                 tol=Tolerances(max_abs_logit=1e-4, min_mask_agreement=0.99), artefact="m.onnx")
    assert ok.passed and ok.tiles == 5 and ok.max_abs_logit == pytest.approx(1e-5, rel=0.1)


# -- stale engine records (no TensorRT needed) -------------------------------------------------------
def test_stale_engine_records_detected(
    toy_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coalmine.runtime.backends.tensorrt.identity import Machine

    # As on a machine without TensorRT (also where one is installed, to keep the test exact).
    monkeypatch.setattr(export_engine, "tensorrt_status", lambda: (False, "no TensorRT (test)"))
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    shutil.copy(toy_bundle / "bundle.json", b_dir)
    (b_dir / "model.onnx").write_bytes(b"onnx v2")
    (b_dir / "model.fp16.onnx").write_bytes(b"fp16 v2")
    sha = hashlib.sha256(b"onnx v2").hexdigest()
    sha16 = hashlib.sha256(b"fp16 v2").hexdigest()
    eng = b_dir / "engines"
    eng.mkdir()
    base = {"gpu_name": "NVIDIA GeForce RTX 2060", "compute_capability": "7.5", "tensorrt_version": "10.13.0",
            "tensorrt_build": "cu12", "tile": 256, "max_batch": 8, "gate": {"passed": True}}
    entries = [
        {**base, "file": "fresh.engine", "onnx": "model.fp16.onnx", "onnx_sha256": sha16},
        {**base, "file": "reexported.engine", "onnx": "model.onnx", "onnx_sha256": hashlib.sha256(b"v1").hexdigest()},
        {**base, "file": "other_gpu.engine", "onnx": "model.onnx", "onnx_sha256": sha,
         "compute_capability": "8.6", "gpu_name": "RTX 3060"},
        {**base, "file": "old_trt.engine", "onnx": "model.onnx", "onnx_sha256": sha, "tensorrt_version": "10.3.0"},
        {**base, "file": "missing.engine", "onnx": "model.onnx", "onnx_sha256": sha},
    ]
    for e in entries[:4]:
        (eng / e["file"]).write_bytes(b"plan")
    for e in entries:
        (eng / e["file"].replace(".engine", ".json")).write_text(json.dumps(e))
    b = load_bundle(b_dir)

    # Without TensorRT/GPU: only what the ONNX hash and the files tell.
    no_gpu = {s["file"]: s["reasons"] for s in export_engine.stale_engines(b)}
    assert set(no_gpu) == {"reexported.engine", "missing.engine"}
    assert "sha256 differs" in no_gpu["reexported.engine"][0]
    assert no_gpu["missing.engine"] == ["its engine file is missing"]

    # On a given GPU/TensorRT (as detected on a workstation): other GPUs and versions are stale.
    here = Machine("NVIDIA GeForce RTX 2060", "7.5", "10.13.0", "cu12")
    on_gpu = {s["file"]: " ".join(s["reasons"]) for s in export_engine.stale_engines(b, machine=here)}
    assert set(on_gpu) == {"reexported.engine", "other_gpu.engine", "old_trt.engine", "missing.engine"}
    assert "compute 8.6" in on_gpu["other_gpu.engine"]
    assert "TensorRT 10.3.0" in on_gpu["old_trt.engine"]

    (eng / "fresh.json").write_text("{not json")
    stale = export_engine.stale_engines(b)
    assert stale[0]["file"] == "fresh.json" and "not a readable engine record" in stale[0]["reasons"][0]


# -- the engine with a fake TensorRT: what coal-export gates is what coal-run maps with ------------
def test_default_export_then_run_uses_the_gated_engine(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coalmine.runtime.run import run_scene
    from factories import make_stack, write_stack
    from fake_trt import FakeGPU

    gpu = FakeGPU().install(monkeypatch)
    res = export_bundle(bundle_dir, fp16=True, progress=False)  # engine: auto
    b = load_bundle(bundle_dir)
    assert res["engine"]["built"] and res["reports"]["engine"]["passed"]
    assert res["reports"]["engine"]["tolerances"] == dict(vars(FP16_TOLERANCES))
    assert b.engine_profile == {"tile": 256, "max_batch": 8}
    engine = res["engine"]["file"]
    assert engine.startswith("model.fp16_nvidia-geforce-rtx-3060_sm86_trt10.13.3.9-cu12_")
    assert engine.endswith("_t256_b8.engine")
    rec = json.loads((b.engines_dir / engine.replace(".engine", ".json")).read_text())
    assert rec["gate"]["when"] == "at export" and rec["gate"]["mask_agreement"] >= 0.995

    scene = write_stack(tmp_path / "scene.tif", make_stack(300, 280, seed=5))
    s = run_scene(scene, bundle_dir, tmp_path / "out", progress=False)  # every option at its default
    assert s["backend"]["name"] == "tensorrt" and s["backend"]["details"]["engine"] == engine
    assert s["tiling"]["tile"] == 256 and s["backend"]["batch_size"] <= 8
    assert len(gpu.builds) == 1  # built once, at export: coal-run did not build a second engine
    assert max(gpu.executed_batches) <= 8 and gpu.live() == (0, 0)


def test_engine_failing_its_gate_at_export_is_deleted(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_trt import FakeGPU

    gpu = FakeGPU().install(monkeypatch)
    gpu.faults.nan_logits = True
    with pytest.raises(ParityError) as ei:
        export_bundle(bundle_dir, engine=True, max_batch=2, tile=64, progress=False)
    msg = str(ei.value)
    assert msg.startswith("engines/model_nvidia-geforce-rtx-3060_sm86_trt10.13.3.9-cu12_")
    assert "failed its parity gate against model.onnx: NaN outputs:" in msg
    assert msg.endswith("the engine was deleted (the ONNX files passed and were written); coal-run can use "
                        "ONNX Runtime instead")
    assert load_bundle(bundle_dir).has("onnx")
    assert sorted(p.suffix for p in (bundle_dir / "engines").iterdir()) == [".cache"]  # the timing cache only
    assert gpu.live() == (0, 0)


# -- engine (only where TensorRT and a GPU exist) ----------------------------------------------
@pytest.mark.tensorrt
def test_engine_build_and_parity(bundle_dir: Path) -> None:
    from coalmine.runtime._io import sha256_file
    from coalmine.runtime.backends.tensorrt import TensorRTBackend

    res = export_bundle(bundle_dir, fp16=True, engine=True, max_batch=4, tile=64, progress=False)
    assert res["engine"]["built"] and res["reports"]["engine"]["passed"]
    b = load_bundle(bundle_dir)
    rec = json.loads((b.engines_dir / res["engine"]["file"]).with_suffix(".json").read_text())
    assert rec["onnx_sha256"] == sha256_file(b.file("onnx_fp16")) and rec["gate"]["passed"]
    assert list(b.engines_dir.glob("timing_*.cache"))
    assert export_engine.stale_engines(b) == []
    x = b.normalization.apply(np.load(b.file("val_tiles"))["x"][:2])
    ref = ort.InferenceSession(str(b.file("onnx")), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with TensorRTBackend(b.engines_dir / res["engine"]["file"]) as be:
        out = be.infer(x)
    assert out.shape == ref.shape and np.isfinite(out).all()


def test_engine_requested_without_tensorrt_is_refused(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_engine, "tensorrt_status", lambda: (False, "the tensorrt package is not installed"))
    with pytest.raises(BackendError, match="--engine was requested but cannot be built here: the tensorrt"):
        export_bundle(bundle_dir, engine=True, progress=False)
    assert not (bundle_dir / "model.onnx").exists()


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_help_shows_defaults() -> None:
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for text in ("--fp16", "--int8", "--engine / --no-engine", "--max-batch", "[default: 8]",
                 "--workspace", "[default: 1GiB]", "--tile"):
        assert text in r.output


def test_cli_exports_fp32_and_says_engine_skipped(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_engine, "tensorrt_status", lambda: (False, "no CUDA GPU (test)"))
    # An FP16 file left from other weights must not outlive a re-export: it is re-created.
    (bundle_dir / "model.fp16.onnx").write_bytes(b"fp16 from an older model.pt")
    r = CliRunner().invoke(main, [str(bundle_dir), "--json"])
    assert r.exit_code == 0, r.output
    assert "TensorRT engine skipped: no CUDA GPU (test)" in r.stderr
    assert "model.fp16.onnx was made from other weights than model.pt; re-creating it too" in r.stderr
    data = json.loads(r.stdout)
    assert data["reports"]["onnx"]["passed"] and data["engine"]["built"] is False
    assert data["reports"]["onnx_fp16"]["passed"]
    assert not (bundle_dir / "model.int8.onnx").exists()
    meta16 = read_metadata(bundle_dir / "model.fp16.onnx")
    assert meta16[SOURCE_KEY] == _sha(bundle_dir / "model.pt")
    assert meta16["coalmine.bundle_id"] == "toy-unet-resnet34"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--tile", "100"], 2, "--tile 100 is not a positive multiple of 32 (the model's encoder halves the size 5 times); use 96 or 128"),
        (["--workspace", "lots"], 2, "--workspace 'lots' is not a size; give a number with an optional unit, e.g. 1GiB"),
        (["--workspace", "1KiB"], 2, "--workspace '1KiB' is 1024 bytes; it must lie between 16MiB and 64GiB (about"),
        (["--max-batch", "0"], 2, "--max-batch 0 must be between 1 and 1024"),
    ],
)
def test_cli_bad_options(bundle_dir: Path, args: list[str], code: int, message: str) -> None:
    r = CliRunner().invoke(main, [str(bundle_dir), *args])
    assert r.exit_code == code
    assert r.stderr.startswith(f"coal-export: error: {message}")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (bundle_dir / "model.onnx").exists() and _leftovers(bundle_dir) == []


def test_cli_bad_bundles(bundle_dir: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, [str(tmp_path / "nope")])
    assert r.exit_code == 1 and f"bundle folder {tmp_path / 'nope'} does not exist" in r.stderr

    (bundle_dir / "val_tiles.npz").rename(bundle_dir / "moved.npz")
    r = CliRunner().invoke(main, [str(bundle_dir)])
    assert r.exit_code == 1
    assert "lacks val_tiles.npz (validation tiles for the parity gates" in r.stderr
    assert "re-create the bundle with coal-train" in r.stderr

    np.savez(bundle_dir / "val_tiles.npz", x=np.zeros((2, 5, 64, 64), np.float32), y=np.zeros((2, 64, 64), np.uint8))
    r = CliRunner().invoke(main, [str(bundle_dir)])
    assert r.exit_code == 1 and "'x' has shape (2, 5, 64, 64), expected (N, 23, H, W)" in r.stderr

    np.savez(bundle_dir / "val_tiles.npz", x=np.full((2, 23, 64, 64), np.nan, np.float32),
             y=np.zeros((2, 64, 64), np.uint8))
    r = CliRunner().invoke(main, [str(bundle_dir)])
    assert r.exit_code == 1 and "the validation tiles contain no valid pixel" in r.stderr

    (bundle_dir / "model.pt").unlink()
    r = CliRunner().invoke(main, [str(bundle_dir)])
    assert r.exit_code == 1
    assert r.stderr.strip().endswith("lacks its pytorch model file model.pt; train it with coal-train")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (bundle_dir / "model.onnx").exists()


def test_cli_subprocess_missing_bundle(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "coalmine.export.cli", str(tmp_path / "missing"), "--no-engine"],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 1
    assert p.stderr.strip() == (
        f"coal-export: error: bundle folder {tmp_path / 'missing'} does not exist; "
        "give coal-export the folder coal-train wrote"
    )
    assert p.stdout == ""


def test_parse_size() -> None:
    assert parse_size("1GiB") == 1 << 30
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1.5G") == int(1.5 * (1 << 30))
    assert parse_size("2GB") == 2_000_000_000
    assert parse_size(str(64 << 20)) == 64 << 20
    with pytest.raises(UsageError, match="--workspace '-1GiB' is not a size"):
        parse_size("-1GiB")
