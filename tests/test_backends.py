"""Inference backends: ONNX Runtime CPU, refusals, the auto policy, TensorRT manifest logic."""

from __future__ import annotations

import json

import numpy as np
import pytest
from coalmine.runtime._io import sha256_file
from coalmine.runtime.backends import make_backend
from coalmine.runtime.backends import onnx as ort_backend
from coalmine.runtime.backends import tensorrt as trt_backend
from coalmine.runtime.bundle import load_bundle
from coalmine.runtime.errors import BackendError, BundleError, MissingDependencyError, UsageError
from coalmine.runtime.run import auto_batch_size
from factories import make_tiny_bundle


@pytest.fixture
def bundle(tmp_path):
    return make_tiny_bundle(tmp_path / "b", kind="linear", bias=0.25)


def test_cpu_backend_matches_numpy(bundle):
    x = np.random.default_rng(0).standard_normal((3, 23, 32, 48)).astype(np.float32)
    be, why = make_backend(bundle, "cpu", tile=32, max_batch=4)
    with be:
        y = be.infer(x)
        d = be.describe()
    assert y.shape == (3, 1, 32, 48) and y.dtype == np.float32
    np.testing.assert_allclose(y[:, 0], x.sum(axis=1) / np.sqrt(23) + 0.25, rtol=1e-5, atol=1e-5)
    assert be.name == "onnxruntime-cpu" and d["providers"] == ["CPUExecutionProvider"]
    assert d["intra_op_threads"] == ort_backend.cpu_cores()
    assert "cpu requested" in why


def test_auto_explains_every_skipped_backend(bundle):
    be, why = make_backend(bundle, "auto", tile=64, max_batch=4)
    be.close()
    assert be.name == "onnxruntime-cpu"
    assert "tensorrt skipped:" in why and "'tensorrt-cu13'" in why
    assert "onnxruntime-cuda skipped:" in why and "CUDAExecutionProvider" in why
    assert why.endswith("auto chose onnxruntime-cpu: always available; fp32 model (the bundle has no model.int8.onnx)")


def test_auto_precision_takes_the_int8_model_on_cpu_when_the_bundle_has_one(bundle):
    # coal-export writes model.int8.onnx only after its parity gate; a distinct graph (other bias)
    # shows which file really ran.
    from factories import tiny_onnx

    tiny_onnx(bundle.path / "model.int8.onnx", kind="linear", bias=-3.0)
    x = np.zeros((1, 23, 32, 32), np.float32)
    be, why = make_backend(bundle, "auto", tile=32, max_batch=1)
    with be:
        y = be.infer(x)
        assert be.describe()["model"] == "model.int8.onnx"
    np.testing.assert_allclose(y, -3.0, atol=1e-6)
    assert why.endswith("int8 model model.int8.onnx (passed its parity gate at export)")
    be, why = make_backend(bundle, "cpu", tile=32, max_batch=1, precision="fp32")
    with be:
        assert be.describe()["model"] == "model.onnx"
    assert why == "cpu requested with --backend cpu; fp32 model model.onnx (--precision fp32)"


@pytest.mark.parametrize("precision, error, message", [
    ("fp16", UsageError, "--precision fp16 does not suit ONNX Runtime on CPU: use int8 or fp32 there"),
    ("int8", BundleError, "lacks its onnx_int8 model file model.int8.onnx; run: coal-export --int8"),
    ("bf16", UsageError, "--precision 'bf16' is not one of auto, fp32, fp16, int8"),
])
def test_precision_refusals(bundle, precision, error, message):
    with pytest.raises(error) as ei:
        make_backend(bundle, "cpu", tile=32, max_batch=1, precision=precision)
    assert message in str(ei.value)


def test_unknown_backend_refused(bundle):
    with pytest.raises(UsageError, match="--backend 'gpu' is not one of auto, tensorrt, cuda, cpu"):
        make_backend(bundle, "gpu", tile=64, max_batch=4)


def test_cuda_requested_without_provider_refused(bundle):
    with pytest.raises(BackendError, match="--backend cuda cannot run: this onnxruntime has no CUDAExecutionProvider"):
        make_backend(bundle, "cuda", tile=64, max_batch=4)


def test_cuda_provider_that_silently_falls_back_is_refused(bundle, monkeypatch):
    # Pretend the build offers CUDA: the real CPU-only ORT then creates the session on the CPU
    # (its silent fallback, onnxruntime #23372). get_providers() reveals it and we refuse.
    monkeypatch.setattr(ort_backend, "cuda_availability", lambda: (True, "pretend"))
    with pytest.raises(BackendError, match="did not load the CUDA provider .*session providers: \\['CPUExecutionProvider'\\]"):
        make_backend(bundle, "cuda", tile=64, max_batch=4)


def test_tensorrt_requested_without_package_names_the_install(bundle):
    with pytest.raises(MissingDependencyError, match='pip install "coalmine\\[tensorrt\\]"'):
        make_backend(bundle, "tensorrt", tile=64, max_batch=4)


def test_corrupt_onnx_refused(bundle):
    (bundle.path / "model.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(BundleError, match="ONNX Runtime cannot load .*model.onnx .*re-export the bundle"):
        make_backend(bundle, "cpu", tile=64, max_batch=4)


def test_missing_onnx_refused(bundle):
    (bundle.path / "model.onnx").unlink()
    with pytest.raises(BundleError, match="lacks its onnx model file model.onnx; run: coal-export"):
        make_backend(bundle, "cpu", tile=64, max_batch=4)


def test_input_name_mismatch_refused(tmp_path):
    b = make_tiny_bundle(tmp_path / "b")
    d = json.loads((b.path / "bundle.json").read_text())
    d["model"]["input_name"] = "x"
    (b.path / "bundle.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match="has inputs \\['input'\\] but bundle.json names the input 'x'"):
        make_backend(load_bundle(b.path), "cpu", tile=64, max_batch=4)


def test_auto_batch_size():
    n, why = auto_batch_size(256, on_gpu=True, gpu_mem_gb=6.0, tiles_per_block=100)
    assert n == 64 and "capped at 64" in why
    n2, _ = auto_batch_size(512, on_gpu=True, gpu_mem_gb=2.0, tiles_per_block=100)
    assert n2 == int((2 * 2**30 - 2**30) // (512 * 512 * 600))  # memory bound, not the cap
    assert auto_batch_size(512, on_gpu=True, gpu_mem_gb=1.0, tiles_per_block=100)[0] == 1
    assert auto_batch_size(256, on_gpu=False, gpu_mem_gb=6.0, tiles_per_block=100)[0] == 4
    assert auto_batch_size(512, on_gpu=False, gpu_mem_gb=6.0, tiles_per_block=100)[0] == 1
    assert auto_batch_size(256, on_gpu=False, gpu_mem_gb=6.0, tiles_per_block=2) == (
        2, "CPU backend: 4 tile(s) of 256 px per call (~0.26 Mpx), limited to the 2 tiles of a block")


def test_engine_source_prefers_fp16(bundle):
    assert trt_backend.engine_source(bundle).name == "model.onnx"
    (bundle.path / "model.fp16.onnx").write_bytes((bundle.path / "model.onnx").read_bytes())
    assert trt_backend.engine_source(bundle).name == "model.fp16.onnx"


def test_registry_is_the_one_list_of_backends():
    from coalmine.runtime.backends import GPU_KINDS, KINDS, REGISTRY
    from coalmine.runtime.cli.run import main as run_cli
    from coalmine.runtime.monitor import cluster

    assert list(REGISTRY) == ["tensorrt", "cuda", "cpu"]  # auto's order: fastest first
    assert KINDS == ("auto", *REGISTRY) and GPU_KINDS == ("tensorrt", "cuda")
    choice = next(p for p in run_cli.params if p.name == "backend").type
    assert tuple(choice.choices) == KINDS
    assert cluster.GPU_BACKENDS == GPU_KINDS


def test_onnx_cuda_arena_leaves_room_for_the_cuda_context():
    assert ort_backend.gpu_mem_limit(6.0) == 5 << 30
    assert ort_backend.gpu_mem_limit(1.0) == 256 << 20  # never below 256 MiB


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnxruntime(tmp_path):
    b = make_tiny_bundle(tmp_path / "b", kind="conv")
    rng = np.random.default_rng(1)
    np.savez(b.path / "val_tiles.npz", x=rng.random((4, 23, 64, 64), dtype=np.float32),
             y=(rng.random((4, 64, 64)) > 0.5).astype(np.uint8))
    x = rng.standard_normal((3, 23, 64, 64)).astype(np.float32)
    with make_backend(b, "cpu", tile=64, max_batch=4)[0] as cpu:
        ref = cpu.infer(x)
    be, why = make_backend(b, "tensorrt", tile=64, max_batch=4)
    with be:
        y = be.infer(x)
    np.testing.assert_allclose(y, ref, atol=1e-2, rtol=1e-2)
    assert "built now and gated against model.onnx" in why
    (rec,) = [json.loads(p.read_text()) for p in b.engines_dir.glob("*.json")]
    assert rec["onnx_sha256"] == sha256_file(b.path / "model.onnx") and rec["gate"]["passed"]
    # Second time: the recorded engine, not a rebuild.
    be2, why2 = make_backend(b, "tensorrt", tile=64, max_batch=4)
    be2.close()
    assert "gated at run time" in why2


@pytest.mark.gpu
def test_onnxruntime_cuda_matches_cpu(tmp_path):
    b = make_tiny_bundle(tmp_path / "b", kind="conv")
    x = np.random.default_rng(1).standard_normal((2, 23, 64, 64)).astype(np.float32)
    with make_backend(b, "cpu", tile=64, max_batch=4)[0] as cpu:
        ref = cpu.infer(x)
    with make_backend(b, "cuda", tile=64, max_batch=4, gpu_mem_gb=1.0)[0] as gpu:
        assert gpu.describe()["providers"][0] == "CUDAExecutionProvider"
        np.testing.assert_allclose(gpu.infer(x), ref, atol=1e-3, rtol=1e-3)


def _nan_model(path):
    """A 1x1 conv then Sqrt: NaN wherever the conv's output is negative (about half the pixels)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.full((1, 23, 1, 1), 1.0 / np.sqrt(23), dtype=np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"]), helper.make_node("Sqrt", ["c"], ["logits"])], "nan",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 23, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def test_nan_logits_from_the_int8_model_stop_the_run(bundle, tmp_path):
    from coalmine.runtime.backends import NonFiniteLogitsError
    from coalmine.runtime.run import run_scene
    from factories import make_stack, write_stack

    _nan_model(bundle.path / "model.int8.onnx")  # what auto takes on the CPU
    scene = write_stack(tmp_path / "scene.tif", make_stack(80, 70, seed=1))
    with pytest.raises(NonFiniteLogitsError) as ei:
        run_scene(scene, bundle, tmp_path / "out", tile=64, progress=False)
    assert str(ei.value).startswith("the onnxruntime-cpu backend (model.int8.onnx, int8) returned ")
    assert str(ei.value).endswith("so the run stops and writes nothing: run with --precision fp32")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    s = run_scene(scene, bundle, tmp_path / "out", tile=64, precision="fp32", progress=False)
    assert s["backend"]["details"]["model"] == "model.onnx" and s["areas_ha"]["total"] is not None


def test_finite_logits_passes_finite_batches_through(bundle):
    from coalmine.runtime.backends import NonFiniteLogitsError, finite_logits

    with make_backend(bundle, "cpu", tile=32, max_batch=2)[0] as be:
        x = np.zeros((2, 23, 32, 32), np.float32)
        np.testing.assert_array_equal(finite_logits(be)(x), be.infer(x))
        be.infer = lambda a: np.full((len(a), 1, 32, 32), np.inf, np.float32)
        with pytest.raises(NonFiniteLogitsError, match=r"returned 2048 NaN or infinite logits for a batch of 2 tiles.*"
                                                       r"the FP32 model itself gives NaN on this scene"):
            finite_logits(be)(x)
