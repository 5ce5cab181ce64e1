"""The export's parity gates: the runtime's gate (:mod:`coalmine.runtime.backends.gate`) plus PyTorch.

Every converted file is compared with its reference by running the *same*
:class:`~coalmine.runtime.backends.Backend` classes coal-run uses — ONNX Runtime for the ONNX
files, the TensorRT backend for engines — so the gate tests what ships. Only the reference
for ONNX fp32, the PyTorch model itself, needs a class of its own here (:class:`TorchRunner`),
because the runtime never imports torch.

Example:
    >>> with TorchRunner(model) as ref, OnnxBackend(path, **io, label="model.onnx") as cand:  # doctest: +SKIP
    ...     rep = compare(ref, cand, tiles, labels=y, threshold=0.5, tol=FP32_TOLERANCES,
    ...                   artefact="model.onnx")
    >>> rep.raise_if_failed()                                                                # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
from coalmine.runtime.backends import Backend
from coalmine.runtime.backends.gate import (
    ENGINE_FP32_TOLERANCES,
    FP16_TOLERANCES,
    FP32_TOLERANCES,
    INT8_TOLERANCES,
    MAX_GATE_TILES,
    GateTiles,
    ParityError,
    ParityReport,
    Tolerances,
    compare,
    fit_tiles,
    format_table,
    gate_tiles,
    load_val_tiles,
)

__all__ = [
    "ENGINE_FP32_TOLERANCES", "FP16_TOLERANCES", "FP32_TOLERANCES", "INT8_TOLERANCES", "MAX_GATE_TILES",
    "GateTiles", "ParityError", "ParityReport", "Tolerances", "TorchRunner", "compare", "fit_tiles",
    "format_table", "gate_tiles", "load_val_tiles",
]


class TorchRunner(Backend):
    """PyTorch eager reference (eval mode, no autograd, TF32 off for a true FP32 baseline)."""

    def __init__(self, model: Any, device: str = "cpu", name: str = "pytorch-fp32") -> None:
        import torch

        self._torch = torch
        self.device = device
        self.model = model.to(device).eval()
        self.name = name
        self.on_gpu = device.startswith("cuda")
        if self.on_gpu:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    def infer(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return out.float().cpu().numpy()
