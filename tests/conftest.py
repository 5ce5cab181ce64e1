"""Shared fixtures: paths to ../shared/realdata, GPU/TensorRT skips, the local STAC catalogue."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def _cuda_devices() -> tuple[int, str]:
    """Number of visible CUDA devices, and why there are none.

    Asked through cuda-python's runtime bindings (the library the TensorRT backend uses), or the
    driver library itself where cuda-python is not installed — never through torch or ONNX
    Runtime, whose CUDA support says nothing about the device.
    """
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
    except ImportError:
        return _driver_devices()
    err, n = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not n:
        return 0, f"no CUDA device visible to cuda-python (cudaGetDeviceCount: {getattr(err, 'name', err)})"
    return int(n), ""


def _driver_devices() -> tuple[int, str]:
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no CUDA driver (libcuda.so.1) on this machine"
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return 0, "the CUDA driver sees no device"
    return count.value, ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(k in item.keywords for item in items for k in ("gpu", "tensorrt")):
        return
    n_gpu, why = _cuda_devices()
    trt_ok = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if ("gpu" in item.keywords or "tensorrt" in item.keywords) and not n_gpu:
            item.add_marker(pytest.mark.skip(reason=why))
        elif "tensorrt" in item.keywords and not trt_ok:
            item.add_marker(pytest.mark.skip(reason="a CUDA device is visible but the tensorrt package is not "
                                                    "installed (pip install '.[tensorrt]')"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The ../shared/realdata folder; tests using it skip when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real Sentinel test data not found at {REALDATA} (../shared is not beside the checkout)")
    return REALDATA


@pytest.fixture(scope="session")
def stac_catalogue(tmp_path_factory):
    """A local STAC API on 127.0.0.1 serving one synthetic tile as COGs (tests/stac_fixture.py)."""
    from stac_fixture import make_catalogue

    cat = make_catalogue(tmp_path_factory.mktemp("catalogue"))
    yield cat
    cat["srv"].stop()
