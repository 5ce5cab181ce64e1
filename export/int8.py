"""ONNX fp32 → INT8 (QDQ) for CPU-only workstations, calibrated on the bundle's validation tiles.

ONNX Runtime static quantisation: ``quant_pre_process`` (shape inference and graph
clean-up), then ``quantize_static`` in QDQ format with per-channel int8 weights and uint8
activations, calibrated on normalised validation tiles. The last convolution (the head that
writes the logits) stays in FP32 by default: it is tiny, and quantising the logits near the
decision threshold is exactly where the minority class would be lost.

Example:
    >>> quantize_int8("model.onnx", "model.int8.onnx", calib=tiles)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from coalmine.runtime.errors import BundleError

from .onnx_export import META_PREFIX, read_metadata, set_metadata

log = logging.getLogger(__name__)

#: Calibration methods offered by ONNX Runtime, by the name used here.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def _reader(input_name: str, tiles: np.ndarray, batch: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _TileReader(CalibrationDataReader):
        """Feeds the validation tiles to the calibrator, ``batch`` at a time."""

        def __init__(self) -> None:
            self._it = self._batches()

        def _batches(self) -> Iterator[dict[str, np.ndarray]]:
            for i in range(0, len(tiles), batch):
                yield {input_name: np.ascontiguousarray(tiles[i : i + batch])}

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = self._batches()

    return _TileReader()


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    *,
    calib: np.ndarray,
    per_channel: bool = True,
    method: str = "minmax",
    keep_last_conv_fp32: bool = True,
    batch: int = 2,
) -> dict[str, Any]:
    """Write a QDQ INT8 copy of ``src`` to ``dst``.

    Args:
        src: fp32 ONNX file.
        dst: INT8 ONNX file to write (the caller uses a temporary name and renames).
        calib: normalised float32 (N, C, H, W) calibration tiles (the validation tiles).
        per_channel: per-output-channel weight scales (much better for convolutions).
        method: calibration method, one of ``CALIBRATION_METHODS``.
        keep_last_conv_fp32: leave the output convolution unquantised.
        batch: tiles per calibration run.

    Returns:
        A dict describing the settings used (stored in the parity report).

    Raises:
        BundleError: no calibration tiles, an unknown method, or quantisation fails.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calib is None or len(calib) == 0:
        raise BundleError("INT8 calibration needs validation tiles; the bundle's val_tiles.npz is empty")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if method not in methods:
        raise BundleError(f"unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}")
    dst = Path(dst)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=dst.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            # Symbolic shape inference is for transformer-style dims; plain ONNX inference suffices.
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            model = onnx.load(str(pre), load_external_data=False)
            convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
            exclude = convs[-1:] if keep_last_conv_fp32 else []
            input_name = model.graph.input[0].name
            quantize_static(
                str(pre),
                str(dst),
                _reader(input_name, calib, batch),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                nodes_to_exclude=exclude,
            )
        except BundleError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT quantisation raises untyped errors
            raise BundleError(f"INT8 quantisation of {Path(src).name} failed: {exc}") from exc
    q = onnx.load(str(dst))
    settings = {
        "format": "QDQ",
        "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
        "activations": "uint8",
        "calibration": method,
        "calibration_tiles": int(len(calib)),
        "fp32_nodes": exclude,
    }
    set_metadata(q, {**read_metadata(src), f"{META_PREFIX}precision": "int8 QDQ (fp32 inputs/outputs)"})
    onnx.save(q, str(dst))
    # quantize_static leaves an augmented calibration model beside its output in some versions.
    for side in dst.parent.glob("augmented_model*.onnx"):
        side.unlink(missing_ok=True)
    return settings
