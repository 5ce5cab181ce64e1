"""ONNX fp32 → fp16 with FP32 inputs/outputs and numerically risky nodes kept in FP32.

TensorRT 11 builds strongly typed networks only, so an FP16 engine needs an FP16 ONNX file.
The conversion uses onnxconverter-common with ``keep_io_types=True`` (the graph takes and
returns float32; Cast nodes are inserted inside). Kept in FP32:

* normalisation and soft-max-like ops (``FP32_OPS``) should an architecture contain them;
* the last node (the segmentation head that writes the logits), because the minority
  class lives in the logits' sign near the threshold and the head's 16-channel dot product
  is where FP16 rounding moves it;
* every node whose activations, measured on the bundle's validation tiles, come within a
  safety factor of the FP16 range — BatchNorm folded into a convolution with a tiny running
  variance produces huge weights and activations that overflow to inf in FP16.

Example:
    >>> convert_fp16("model.onnx", "model.fp16.onnx", calib=tiles)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from coalmine.runtime.errors import BundleError

from .onnx_export import META_PREFIX, read_metadata, set_metadata

log = logging.getLogger(__name__)

#: Ops never converted to FP16 (on top of onnxconverter-common's default block list).
FP32_OPS: tuple[str, ...] = (
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "Softmax",
    "LogSoftmax",
    "Sigmoid",
    "ReduceMean",
    "Pow",
    "Sqrt",
)
#: FP16's largest finite value.
FP16_MAX = 65504.0
#: A node is kept in FP32 when its activations reach FP16_MAX / this factor on the
#: validation tiles (headroom for unseen scenes brighter than the validation set).
HEADROOM = 8.0


def activation_peaks(onnx_path: str | Path, tiles: np.ndarray, batch: int = 2) -> dict[str, float]:
    """Largest |value| of every float node output over ``tiles`` (ONNX Runtime, CPU).

    Args:
        onnx_path: the fp32 model.
        tiles: normalised float32 (N, C, H, W) tiles.
        batch: tiles per run.

    Returns:
        ``{node_name: peak}`` for nodes with a float output.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    existing = {o.name for o in model.graph.output}
    produced: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in ("Constant", "Shape", "Gather", "Unsqueeze", "Concat", "Slice", "Cast"):
            continue  # shape arithmetic, not activations
        if node.output and node.output[0]:
            produced[node.output[0]] = node.name
    for name in produced:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Optimisations would fuse nodes away and hide the very tensors we want to look at.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    input_name = sess.get_inputs()[0].name
    peaks: dict[str, float] = {}
    for i in range(0, len(tiles), batch):
        outs = sess.run(names, {input_name: tiles[i : i + batch]})
        for name, arr in zip(names, outs, strict=True):
            if name not in produced or not np.issubdtype(np.asarray(arr).dtype, np.floating):
                continue
            a = np.asarray(arr)
            peak = float(np.max(np.abs(a))) if a.size else 0.0
            if not np.isfinite(peak):
                peak = float("inf")
            node = produced[name]
            peaks[node] = max(peaks.get(node, 0.0), peak)
    return peaks


def risky_nodes(onnx_path: str | Path, tiles: np.ndarray | None) -> dict[str, str]:
    """Nodes to keep in FP32 and why: the output node, and nodes near the FP16 range."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    out_names = {o.name for o in model.graph.output}
    keep: dict[str, str] = {}
    for node in model.graph.node:
        if any(o in out_names for o in node.output):
            keep[node.name] = "writes the output logits"
    if tiles is not None and len(tiles):
        limit = FP16_MAX / HEADROOM
        for node, peak in activation_peaks(onnx_path, tiles).items():
            if peak >= limit:
                keep.setdefault(node, f"activation peak {peak:.4g} ≥ {limit:.4g} on validation tiles")
    return keep


def _keep_fp32_outputs(model: Any, names: set[str]) -> None:
    """Make graph outputs float32 again where the converter left them float16.

    With ``keep_io_types=True`` and the output node on the block list, onnxconverter-common
    1.16 still appends a Cast to float16 before the graph output (and declares it float16),
    which would round the logits we deliberately computed in FP32. Turn such a final Cast
    into a cast to float32 (a no-op on an FP32 input, the intended upcast on an FP16 one).
    """
    from onnx import TensorProto, helper

    producers = {o: n for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        tt = out.type.tensor_type
        if out.name not in names or tt.elem_type != TensorProto.FLOAT16:
            continue
        node = producers.get(out.name)
        if node is not None and node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to":
                    a.i = TensorProto.FLOAT
        else:
            inner = out.name + "_fp16"
            if node is not None:
                node.output[list(node.output).index(out.name)] = inner
            model.graph.node.append(
                helper.make_node("Cast", [inner], [out.name], name=out.name + "_to_fp32", to=TensorProto.FLOAT)
            )
        tt.elem_type = TensorProto.FLOAT


def convert_fp16(
    src: str | Path,
    dst: str | Path,
    *,
    calib: np.ndarray | None = None,
    op_block_list: tuple[str, ...] = FP32_OPS,
    extra_fp32_nodes: tuple[str, ...] = (),
) -> dict[str, str]:
    """Write an FP16 copy of ``src`` to ``dst`` with FP32 inputs/outputs.

    Args:
        src: fp32 ONNX file.
        dst: fp16 ONNX file to write (the caller uses a temporary name and renames).
        calib: normalised validation tiles used to find nodes whose activations approach the
            FP16 range (None: only the output node is kept in FP32).
        op_block_list: op types kept in FP32.
        extra_fp32_nodes: further node names to keep in FP32.

    Returns:
        ``{node_name: reason}`` of the nodes kept in FP32 (op types in ``op_block_list`` not listed).

    Raises:
        BundleError: the converter fails or the result fails ``onnx.checker``.
    """
    import onnx
    from onnxconverter_common import float16

    keep = risky_nodes(src, calib)
    for n in extra_fp32_nodes:
        keep.setdefault(n, "requested")
    model = onnx.load(str(src))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            converted = float16.convert_float_to_float16(
                model,
                keep_io_types=True,
                op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(op_block_list),
                node_block_list=sorted(keep),
            )
        except Exception as exc:  # noqa: BLE001 - the converter raises plain Exceptions
            raise BundleError(f"converting {Path(src).name} to FP16 failed: {exc}") from exc
    _keep_fp32_outputs(converted, {o.name for o in model.graph.output})
    truncated = sum("truncated" in str(w.message) for w in caught)
    if truncated:
        # Weights below FP16's resolution are clamped to ±1e-7 or above 1e4 to ±1e4 by the
        # converter; the parity gate decides whether that matters.
        log.debug("FP16: %d weight values outside FP16's useful range were clamped", truncated)
    try:
        onnx.checker.check_model(converted)
    except Exception as exc:  # noqa: BLE001
        raise BundleError(f"the FP16 model fails onnx.checker: {exc}") from exc
    set_metadata(
        converted,
        {
            **read_metadata(src),
            f"{META_PREFIX}precision": "fp16 (fp32 inputs/outputs)",
            f"{META_PREFIX}fp32_nodes": ",".join(sorted(keep)),
        },
    )
    onnx.save(converted, str(dst))
    return keep
