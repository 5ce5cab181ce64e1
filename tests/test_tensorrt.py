"""The TensorRT backend against a fake of tensorrt + cuda-python (tests/fake_trt.py).

Engine selection and keys, batch clamping, the run-time build and its parity gate, fallback,
every checked failure return, cleanup and the timing cache — on every CI run, with no GPU.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from coalmine.runtime._io import sha256_file
from coalmine.runtime.backends import make_backend
from coalmine.runtime.backends import tensorrt as trt_backend
from coalmine.runtime.backends.tensorrt import identity
from coalmine.runtime.backends.tensorrt.runner import TensorRTBackend
from coalmine.runtime.errors import BackendError, BundleError
from factories import make_stack, make_tiny_bundle
from fake_trt import FakeGPU


def _val_tiles(bundle, n=6, size=64):
    x = np.stack([make_stack(size, size, seed=10 + i) for i in range(n)])
    y = (np.random.default_rng(1).random((n, size, size)) > 0.5).astype(np.uint8)
    np.savez(bundle.path / "val_tiles.npz", x=x, y=y)
    return x


@pytest.fixture
def bundle(tmp_path):
    b = make_tiny_bundle(tmp_path / "b", kind="conv")
    _val_tiles(b)
    return b


@pytest.fixture
def gpu(monkeypatch):
    return FakeGPU().install(monkeypatch)


def _files(bundle):
    return sorted(p.name for p in bundle.engines_dir.iterdir()) if bundle.engines_dir.is_dir() else []


def _engines(bundle):
    return [f for f in _files(bundle) if f.endswith(".engine")]


def _cpu_logits(bundle, x):
    with make_backend(bundle, "cpu", tile=x.shape[-1], max_batch=len(x))[0] as cpu:
        return cpu.infer(x)


# -- the run-time build is gated, recorded and reused ----------------------------------------------
def test_run_time_build_is_gated_recorded_and_reused(bundle, gpu):
    be, why = make_backend(bundle, "auto", tile=64, max_batch=4)
    with be:
        x = bundle.normalization.apply(make_stack(64, 64, seed=3)[None])
        np.testing.assert_allclose(be.infer(x), _cpu_logits(bundle, x), atol=1e-5)
        assert (be.fixed_tile, be.max_batch) == (64, 8)  # the bundle's default profile, not the run's 4
    assert why.startswith("auto chose tensorrt: no gated engine for NVIDIA GeForce RTX 3060 (compute 8.6) "
                          "with TensorRT 10.13.3.9 (cu12) at tile 64 yet, so one is built from model.onnx")
    assert "built now and gated against model.onnx (mask agreement 100.00 % on 6 validation tiles)" in why
    assert len(gpu.builds) == 1 and gpu.builds[0]["strongly_typed"]
    assert gpu.live() == (0, 0)

    sha = sha256_file(bundle.path / "model.onnx")
    stem = f"model_nvidia-geforce-rtx-3060_sm86_trt10.13.3.9-cu12_onnx{sha[:12]}_t64_b8"
    assert _files(bundle) == [f"{stem}.engine", f"{stem}.json",
                              "timing_nvidia-geforce-rtx-3060_sm86_trt10.13.3.9-cu12.cache"]
    rec = json.loads((bundle.engines_dir / f"{stem}.json").read_text())
    assert rec["onnx_sha256"] == sha and rec["tensorrt_build"] == "cu12" and rec["gpu_name"] == gpu.name
    assert rec["gate"]["passed"] and rec["gate"]["when"] == "at run time" and rec["gate"]["tiles"] == 6
    assert rec["gate"]["tolerances"]["min_mask_agreement"] == 0.999  # FP32 engine: fp32 engine tolerances

    be, why = make_backend(bundle, "tensorrt", tile=64, max_batch=4)
    be.close()
    assert len(gpu.builds) == 1  # reused, not rebuilt
    assert why == f"tensorrt requested with --backend tensorrt; engine {stem}.engine, gated at run time, max batch 8"


def test_fp16_onnx_is_the_engine_source_and_gets_the_fp16_gate(bundle, gpu):
    (bundle.path / "model.fp16.onnx").write_bytes((bundle.path / "model.onnx").read_bytes())
    be, _ = make_backend(bundle, "tensorrt", tile=64, max_batch=2)
    be.close()
    (rec_file,) = [f for f in _files(bundle) if f.endswith(".json")]
    assert rec_file.startswith("model.fp16_")
    rec = json.loads((bundle.engines_dir / rec_file).read_text())
    assert rec["onnx"] == "model.fp16.onnx" and rec["gate"]["tolerances"]["max_iou_drop_points"] == 1.0


# -- a failing engine is refused in one line and auto falls back -----------------------------------
@pytest.mark.parametrize("fault, failure", [
    ({"logit_offset": 4.0}, "mask agreement"),
    ({"nan_logits": True}, "NaN outputs: 6 non-finite logits (must be 0)"),
])
def test_engine_failing_its_gate_is_deleted_and_refused(bundle, gpu, fault, failure):
    for k, v in fault.items():
        setattr(gpu.faults, k, v)
    with pytest.raises(BackendError) as ei:
        make_backend(bundle, "tensorrt", tile=64, max_batch=4)
    msg = str(ei.value)
    assert msg.startswith("the TensorRT engine built now from model.onnx for NVIDIA GeForce RTX 3060 (compute 8.6) "
                          "with TensorRT 10.13.3.9 (cu12) failed its parity gate against model.onnx on 6 validation tiles")
    assert failure in msg and msg.endswith("and was deleted; use --backend cuda or --backend cpu")
    assert "\n" not in msg
    assert _engines(bundle) == [] and not [f for f in _files(bundle) if f.endswith(".json") or ".partial" in f]
    assert gpu.live() == (0, 0)

    be, why = make_backend(bundle, "auto", tile=64, max_batch=4)
    be.close()
    assert be.name == "onnxruntime-cpu"
    assert why.startswith("tensorrt skipped: the TensorRT engine built now from model.onnx")
    assert "auto chose onnxruntime-cpu: always available" in why


def test_no_validation_tiles_no_engine_means_no_tensorrt(tmp_path, gpu):
    b = make_tiny_bundle(tmp_path / "b")
    ok, why = trt_backend.availability(b, tile=64, max_batch=4)
    assert not ok and why.endswith("lacks val_tiles.npz to gate a new one; run coal-export on this machine")
    be, reason = make_backend(b, "auto", tile=64, max_batch=4)
    be.close()
    assert reason.startswith("tensorrt skipped: no gated engine for NVIDIA GeForce RTX 3060")
    with pytest.raises(BundleError, match="lacks val_tiles.npz .*re-create the bundle with coal-train"):
        make_backend(b, "tensorrt", tile=64, max_batch=4)
    assert gpu.builds == [] or _engines(b) == []


def test_no_gpu_is_a_reason_not_a_crash(bundle, monkeypatch):
    FakeGPU(devices=0).install(monkeypatch)
    ok, why = trt_backend.availability(bundle, tile=64, max_batch=4)
    assert not ok and why == "no CUDA GPU is visible (cudaGetDeviceCount: cudaErrorNoDevice, 0 devices)"
    with pytest.raises(BackendError, match="no CUDA GPU is visible"):
        make_backend(bundle, "tensorrt", tile=64, max_batch=4)


# -- engine selection: keys, smallest that fits, clamping, machines sharing a folder -----------------
def _build(bundle, monkeypatch, max_batch, **gpu_kw):
    """Build + gate an engine with the given profile, as coal-export does on that machine."""
    g = FakeGPU(**gpu_kw).install(monkeypatch)
    be, rep = trt_backend.build_gated(bundle, tile=64, max_batch=max_batch, workspace_bytes=1 << 28)
    assert rep.passed
    be.close()
    return g


def test_smallest_engine_that_takes_the_batch_else_the_largest_clamped(bundle, monkeypatch):
    for n in (4, 8, 16):
        _build(bundle, monkeypatch, n)
    gpu = FakeGPU().install(monkeypatch)
    for wanted, used in ((2, 4), (4, 4), (6, 8), (9, 16), (25, 16)):
        be, why = make_backend(bundle, "tensorrt", tile=64, max_batch=wanted)
        with be:
            assert be.max_batch == used, wanted
            assert be.engine_path.name.endswith(f"_t64_b{used}.engine")
        clamp = f"max batch {used}: the run's batch {wanted} is clamped to {used}"
        assert (clamp in why) == (wanted > used)
    ok, why = trt_backend.availability(bundle, tile=64, max_batch=25)
    assert ok and why == "a gated engine fits NVIDIA GeForce RTX 3060 (compute 8.6) with TensorRT 10.13.3.9 (cu12)"
    assert gpu.builds == []  # never rebuilt: the existing gated engines were used


def test_two_machines_sharing_a_bundle_keep_their_own_engines(bundle, monkeypatch):
    a = _build(bundle, monkeypatch, 8)
    b = _build(bundle, monkeypatch, 8, name="Tesla T4", cc=(7, 5), build="cu13")
    c = _build(bundle, monkeypatch, 8, version="10.14.1.48")  # the first machine after a TensorRT update
    assert len(_engines(bundle)) == 3 and len(a.builds) == len(b.builds) == len(c.builds) == 1
    assert len([f for f in _files(bundle) if f.startswith("timing_")]) == 3
    for kw, tag in (({}, "rtx-3060_sm86_trt10.13.3.9-cu12"), ({"name": "Tesla T4", "cc": (7, 5), "build": "cu13"},
                                                              "tesla-t4_sm75_trt10.13.3.9-cu13")):
        g = FakeGPU(**kw).install(monkeypatch)
        be, _ = make_backend(bundle, "tensorrt", tile=64, max_batch=8)
        with be:
            assert tag in be.engine_path.name and g.deserialized == 1
        assert g.builds == []


def test_rejected_engines_say_why(bundle, monkeypatch):
    _build(bundle, monkeypatch, 8, name="Tesla T4", cc=(7, 5))
    (legacy,) = [p for p in bundle.engines_dir.glob("*.json")]
    rec = json.loads(legacy.read_text())
    machine = identity.Machine("NVIDIA GeForce RTX 3060", "8.6", "11.4.0.106", "cu13")
    why = identity.record_mismatches(rec, onnx_sha256="0" * 64, machine=machine, tile=128)
    assert why == [
        "built from a different model.onnx (sha256 differs)",
        "built for Tesla T4 (compute 7.5), this GPU is NVIDIA GeForce RTX 3060 (compute 8.6)",
        "built with TensorRT 10.13.3.9 (cu12), this is TensorRT 11.4.0.106 (cu13)",
        "built for tile 64, the run uses tile 128",
    ]
    del rec["gate"]
    assert identity.record_mismatches(rec, onnx_sha256=rec["onnx_sha256"], tile=64, machine=identity.Machine(
        "Tesla T4", "7.5", "10.13.3.9", "cu12")) == ["has no passed parity gate on record"]
    (bundle.engines_dir / "broken.json").write_text("{not json")
    records, unreadable = identity.read_records(bundle.engines_dir)
    assert len(records) == 1 and unreadable[0].startswith("broken.json: not a readable engine record (")


def test_a_record_whose_engine_file_is_gone_is_rebuilt(bundle, monkeypatch):
    _build(bundle, monkeypatch, 8)
    for p in bundle.engines_dir.glob("*.engine"):
        p.unlink()
    gpu = FakeGPU().install(monkeypatch)
    be, _ = make_backend(bundle, "tensorrt", tile=64, max_batch=8)
    be.close()
    assert len(gpu.builds) == 1 and len(_engines(bundle)) == 1


# -- every checked failure return: one line naming the engine and the fix; nothing leaked -----------
@pytest.fixture
def engine_path(bundle, monkeypatch):
    _build(bundle, monkeypatch, 4)
    (p,) = bundle.engines_dir.glob("*.engine")
    return p


@pytest.mark.parametrize("fault, message", [
    ("deserialize", "TensorRT 10.13.3.9 cannot load engine {path} (damaged, or built for another GPU or "
                    "TensorRT version); delete it and its .json record to rebuild, or use --backend cuda"),
    ("context", "TensorRT could not create an execution context for engine {name} (usually too little free "
                "GPU memory for its largest batch); close other GPU programs, export an engine with a smaller "
                "--max-batch, or use --backend cuda"),
])
def test_load_failures_are_backend_errors_and_release_everything(engine_path, monkeypatch, fault, message):
    gpu = FakeGPU().install(monkeypatch)
    setattr(gpu.faults, fault, True)
    with pytest.raises(BackendError) as ei:
        TensorRTBackend(engine_path)
    assert str(ei.value) == message.format(path=engine_path, name=engine_path.name)
    assert gpu.live() == (0, 0)


def test_auto_falls_back_when_the_recorded_engine_does_not_load(bundle, engine_path, monkeypatch):
    gpu = FakeGPU().install(monkeypatch)
    gpu.faults.deserialize = True
    be, why = make_backend(bundle, "auto", tile=64, max_batch=4)
    be.close()
    assert be.name == "onnxruntime-cpu"
    assert why.startswith(f"tensorrt skipped: TensorRT 10.13.3.9 cannot load engine {engine_path} (damaged")


def test_device_allocation_failure_half_way_frees_what_was_allocated(engine_path, monkeypatch):
    gpu = FakeGPU().install(monkeypatch)
    gpu.faults.malloc_at = 2  # the output buffer: the stream and the input buffer exist by then
    with pytest.raises(BackendError, match="^CUDA call cudaMalloc failed with cudaErrorMemoryAllocation; too little free "
                                           "GPU memory: close other GPU programs or use --backend cpu$"):
        TensorRTBackend(engine_path)
    assert gpu.mallocs == 2 and gpu.live() == (0, 0)


@pytest.mark.parametrize("fault, message", [
    ("input_shape", "TensorRT engine {name} refused input shape (2, 23, 64, 64) (outside its profile); "
                    "delete it and its .json record to rebuild"),
    ("execute", "TensorRT execution failed for engine {name}; use --backend cuda"),
])
def test_run_failures_are_backend_errors(engine_path, monkeypatch, fault, message):
    gpu = FakeGPU().install(monkeypatch)
    x = np.zeros((2, 23, 64, 64), np.float32)
    with TensorRTBackend(engine_path) as be:
        assert be.infer(x).shape == (2, 1, 64, 64)
        setattr(gpu.faults, fault, True)
        with pytest.raises(BackendError) as ei:
            be.infer(x)
        assert str(ei.value) == message.format(name=engine_path.name)
        with pytest.raises(BackendError, match=r"takes up to 4 tiles of 23x64x64, got 5 of 23x64x64"):
            be.infer(np.zeros((5, 23, 64, 64), np.float32))
    assert gpu.live() == (0, 0)
    be.close()  # idempotent


def test_build_failures_are_backend_errors(bundle, gpu):
    gpu.faults.parse = True
    with pytest.raises(BackendError, match=r"^TensorRT cannot parse .*model.onnx: ModelImporter: unsupported "
                                           r"operator \(fault\); re-export it with coal-export$"):
        make_backend(bundle, "tensorrt", tile=64, max_batch=4)
    gpu.faults.parse, gpu.faults.build = False, True
    with pytest.raises(BackendError, match=r"could not build an engine from .*model.onnx \(tile 64, batch 8\); "
                                           r"try a smaller --tile or --max-batch, or use --backend cuda"):
        make_backend(bundle, "tensorrt", tile=64, max_batch=4)
    assert not [f for f in _files(bundle) if f.endswith((".engine", ".json")) or ".partial" in f]


# -- timing cache: per machine, mismatch tolerated, failures harmless --------------------------------
def test_timing_cache_is_reused_and_its_failures_are_harmless(bundle, gpu, caplog):
    caplog.set_level(logging.WARNING, logger="coalmine")
    trt_backend.build_gated(bundle, tile=64, max_batch=2, workspace_bytes=1 << 28)[0].close()
    trt_backend.build_gated(bundle, tile=32, max_batch=2, workspace_bytes=1 << 28)[0].close()
    assert gpu.timing_cache_loaded == [True, True]  # an empty one, then the saved one
    (cache,) = bundle.engines_dir.glob("timing_*.cache")

    cache.write_bytes(b"FAKECACHE" + b"Tesla T4|7.5|10.13.3.9")  # another GPU's: accepted, mismatch ignored
    trt_backend.build_gated(bundle, tile=96, max_batch=2, workspace_bytes=1 << 28)[0].close()
    assert gpu.timing_cache_loaded[-1] is False and caplog.records == []

    cache.write_bytes(b"garbage")
    gpu.faults.get_timing_cache = True
    trt_backend.build_gated(bundle, tile=128, max_batch=2, workspace_bytes=1 << 28)[0].close()
    assert "did not accept the timing cache" in caplog.text and "returned no timing cache" in caplog.text
    assert cache.read_bytes() == b"garbage"  # not overwritten with nothing

    gpu.faults.get_timing_cache, gpu.faults.set_timing_cache = False, True
    be, rep = trt_backend.build_gated(bundle, tile=160, max_batch=2, workspace_bytes=1 << 28)
    be.close()
    assert rep.passed and "building with an empty one" in caplog.text
    assert len(_engines(bundle)) == 5


# -- non-finite logits never become "no mine" ----------------------------------------------------
def test_nan_from_a_gated_engine_stops_the_run_and_writes_nothing(bundle, engine_path, monkeypatch, tmp_path):
    from coalmine.runtime.backends import NonFiniteLogitsError
    from coalmine.runtime.run import run_scene
    from factories import write_stack

    gpu = FakeGPU().install(monkeypatch)
    gpu.faults.nan_logits = True  # the engine passed its gate; this scene overflows it
    scene = write_stack(tmp_path / "scene.tif", make_stack(100, 90, seed=4))
    with pytest.raises(NonFiniteLogitsError) as ei:
        run_scene(scene, bundle, tmp_path / "out", backend="tensorrt", tile=64, progress=False)
    msg = str(ei.value)
    assert msg.startswith(f"the tensorrt backend ({engine_path.name}, fp32) returned ")
    assert "NaN or infinite logits for a batch of " in msg and "\n" not in msg
    assert msg.endswith("they are never mapped as 'no mine', so the run stops and writes nothing: run with "
                        "--backend cuda --precision fp32 or --backend cpu")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert gpu.live() == (0, 0)


def test_the_run_clamps_its_batch_to_the_engine_and_says_so(bundle, engine_path, monkeypatch, tmp_path):
    from coalmine.runtime.run import run_scene
    from factories import write_stack

    gpu = FakeGPU().install(monkeypatch)
    scene = write_stack(tmp_path / "scene.tif", make_stack(150, 160, seed=4))
    s = run_scene(scene, bundle, tmp_path / "out", backend="auto", tile=64, batch_size=16, progress=False)
    assert s["backend"]["name"] == "tensorrt" and s["backend"]["batch_size"] == 4
    assert s["backend"]["batch_size_reason"] == "set with --batch-size; clamped to the tensorrt engine's max batch 4"
    assert max(gpu.executed_batches) == 4 and gpu.builds == []
    assert "the run's batch 16 is clamped to 4" in s["backend"]["reason"]


def test_a_bad_engine_profile_in_bundle_json_is_refused(bundle):
    from coalmine.runtime.bundle import load_bundle

    d = json.loads((bundle.path / "bundle.json").read_text())
    d["engine_profile"] = {"tile": 100, "max_batch": 8}
    (bundle.path / "bundle.json").write_text(json.dumps(d))
    with pytest.raises(BundleError) as ei:
        load_bundle(bundle.path)
    assert str(ei.value) == (f"{bundle.path / 'bundle.json'}: engine_profile {{'tile': 100, 'max_batch': 8}} must "
                             "give a \"tile\" that is a multiple of 32 and a \"max_batch\" of at least 1; re-run coal-export")
