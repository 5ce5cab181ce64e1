"""Shared fixtures: paths to ../shared/realdata, GPU/TensorRT skips, the local STAC catalogue."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def _cuda_available() -> tuple[bool, str]:
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return True, ""
    except ImportError:
        pass
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True, ""
    return False, "no CUDA GPU on this machine"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_ok, why = _cuda_available()
    trt_ok = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not gpu_ok:
            item.add_marker(pytest.mark.skip(reason=why))
        if "tensorrt" in item.keywords and not (trt_ok and gpu_ok):
            item.add_marker(
                pytest.mark.skip(reason="needs the tensorrt package and a CUDA GPU; neither builder nor GPU here")
            )


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
