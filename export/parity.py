"""Parity checks: run two models on the same tiles and compare them with explicit tolerances.

In the manner of Polygraphy's ``polygraphy run --onnxrt --trt``: each model is wrapped in a
*runner* (a context manager with ``infer(x) -> logits``), both runners see the same
normalised tiles, and a :class:`Tolerances` object states what "the same map" means.
:func:`compare` returns a :class:`ParityReport` (a JSON-able record and a printed table);
:meth:`ParityReport.raise_if_failed` turns a failed gate into a :class:`ParityError` that names
the artefact, the measured value and the threshold.

The gates look at what users see — the thresholded mine mask and the mine-class IoU — as well
as the raw logits, because FP16/INT8 conversions of U-Nets tend to fail on the minority class
while mean errors stay small.

Example:
    >>> with TorchRunner(model) as ref, OnnxRunner("model.onnx") as cand:   # doctest: +SKIP
    ...     rep = compare(ref, cand, tiles, labels=y, threshold=0.5, tol=FP32_TOLERANCES,
    ...                   artefact="model.onnx")
    >>> rep.raise_if_failed()                                               # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from coalmine.runtime.errors import BundleError


class ParityError(BundleError):
    """A converted model does not reproduce its reference within the stated tolerances."""


@dataclass(frozen=True)
class Tolerances:
    """What a candidate must achieve against its reference (``None`` = not gated).

    Attributes:
        max_abs_logit: absolute logit tolerance ``atol``: every valid pixel must satisfy
            |Δlogit| ≤ atol + rtol·|reference logit| (the ``numpy.allclose`` rule).
        rtol: relative logit tolerance. FP32 reorderings give errors proportional to the
            logit (a trained U-Net's logits reach ±100s, where 1e-3 is float32 rounding), and
            only logits near the threshold can flip the mask, which the mask gates watch.
        min_mask_agreement: smallest allowed share of valid pixels whose mask agrees.
        max_iou_drop_points: largest allowed drop of the mine-class IoU against the labels,
            in percentage points (reference IoU − candidate IoU).
    """

    max_abs_logit: float | None = None
    rtol: float = 0.0
    min_mask_agreement: float | None = None
    max_iou_drop_points: float | None = None


#: ONNX fp32 vs PyTorch (and an fp32 engine vs ONNX fp32): the same arithmetic, reordered.
FP32_TOLERANCES = Tolerances(max_abs_logit=1e-3, rtol=1e-3, min_mask_agreement=0.999)
#: FP16 ONNX (or an FP16 engine) vs ONNX fp32.
FP16_TOLERANCES = Tolerances(min_mask_agreement=0.995, max_iou_drop_points=1.0)
#: INT8 (QDQ) ONNX vs ONNX fp32.
INT8_TOLERANCES = Tolerances(min_mask_agreement=0.99)


# -- runners ------------------------------------------------------------------------------------
class Runner(AbstractContextManager["Runner"]):
    """A model that maps normalised float32 (N, C, H, W) tiles to float32 logits (N, 1, H, W)."""

    name = "runner"

    def infer(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release what the runner holds (sessions, GPU memory)."""

    def __exit__(self, *exc: object) -> None:
        self.close()


class TorchRunner(Runner):
    """PyTorch eager reference (eval mode, no autograd, TF32 off for a true FP32 baseline)."""

    def __init__(self, model: Any, device: str = "cpu", name: str = "pytorch-fp32") -> None:
        import torch

        self._torch = torch
        self.device = device
        self.model = model.to(device).eval()
        self.name = name
        if device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    def infer(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return out.float().cpu().numpy()


class OnnxRunner(Runner):
    """ONNX Runtime session on a model file (CPU unless ``providers`` says otherwise)."""

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        *,
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        # Spinning worker threads help a dedicated benchmark but stall when the CPU is shared;
        # a parity check is not a benchmark.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.name = name or self.path.name
        try:
            self.session = ort.InferenceSession(
                str(self.path), opts, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors
            raise ParityError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def infer(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x)})[0]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


class BackendRunner(Runner):
    """Adapter for a ``coalmine.runtime.backends.Backend`` (e.g. the TensorRT engine)."""

    def __init__(self, backend: Any, name: str | None = None) -> None:
        self.backend = backend
        self.name = name or getattr(backend, "name", "backend")

    def infer(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.backend.infer(np.ascontiguousarray(x)), dtype=np.float32)

    def close(self) -> None:
        self.backend.close()


# -- comparison ---------------------------------------------------------------------------------
@dataclass
class ParityReport:
    """Measured agreement of one candidate artefact with its reference."""

    artefact: str
    reference: str
    candidate: str
    shapes: list[list[int]]
    tiles: int
    valid_pixels: int
    max_abs_logit: float
    #: max over valid pixels of |Δ| / (atol + rtol·|ref|): ≤ 1 passes the logit gate.
    logit_tolerance_used: float | None
    #: the reference logit where that maximum occurred.
    logit_at_worst: float | None
    mean_abs_logit: float
    mask_agreement: float
    iou_vs_reference: float | None
    reference_iou: float | None
    candidate_iou: float | None
    iou_drop_points: float | None
    nan_outputs: int
    tolerances: dict[str, float | None]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def raise_if_failed(self, consequence: str = "it was not written") -> None:
        """Raise :class:`ParityError` naming the artefact, what was measured and the limit.

        Args:
            consequence: what happened to the files, appended to the message.
        """
        if self.failures:
            raise ParityError(
                f"{self.artefact} failed its parity gate against {self.reference}: "
                + "; ".join(self.failures)
                + f"; {consequence}"
            )

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(metric, measured, limit, status) rows for the printed table."""
        t = self.tolerances
        rows = [
            ("max |Δlogit|", f"{self.max_abs_logit:.3g}", _atol_rtol(t)),
            ("mean |Δlogit|", f"{self.mean_abs_logit:.3g}", "-"),
            (
                "mask agreement",
                f"{100 * self.mask_agreement:.3f} %",
                _lim("≥", t.get("min_mask_agreement"), pct=True),
            ),
            ("mine IoU vs reference", _pct(self.iou_vs_reference), "-"),
            ("mine IoU (reference)", _pct(self.reference_iou), "-"),
            ("mine IoU (candidate)", _pct(self.candidate_iou), "-"),
            (
                "IoU drop (points)",
                "-" if self.iou_drop_points is None else f"{self.iou_drop_points:.2f}",
                _lim("≤", t.get("max_iou_drop_points")),
            ),
            ("NaN outputs", str(self.nan_outputs), "= 0"),
        ]
        out = []
        for metric, value, limit in rows:
            failed = any(f.startswith(metric) for f in self.failures)
            status = "FAIL" if failed else ("ok" if limit != "-" else "")
            out.append((metric, value, limit, status))
        return out


def _atol_rtol(t: dict[str, float | None]) -> str:
    atol, rtol = t.get("max_abs_logit"), t.get("rtol") or 0.0
    if atol is None:
        return "-"
    return f"≤ {atol:g} + {rtol:g}·|ref|" if rtol else f"≤ {atol:g}"


def _lim(op: str, v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{op} {100 * v:.2f} %" if pct else f"{op} {v:g}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def format_table(reports: list[ParityReport]) -> str:
    """A plain-text table of one or more reports (for stdout)."""
    lines = []
    for r in reports:
        verdict = "PASS" if r.passed else "FAIL"
        shapes = ", ".join("x".join(str(s) for s in sh) for sh in r.shapes)
        lines.append(f"{r.artefact}  vs {r.reference}  [{verdict}]  ({r.tiles} tiles: {shapes})")
        for metric, value, limit, status in r.rows():
            lines.append(f"  {metric:<24} {value:>12}  {limit:<12} {status}")
    return "\n".join(lines)


def _iou(pred: np.ndarray, truth: np.ndarray) -> float | None:
    union = np.count_nonzero(pred | truth)
    if union == 0:
        return None
    return float(np.count_nonzero(pred & truth) / union)


def _batches(x: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for i in range(0, len(x), batch):
        yield x[i : i + batch]


def compare(
    reference: Runner,
    candidate: Runner,
    tile_sets: list[np.ndarray] | np.ndarray,
    *,
    labels: list[np.ndarray | None] | np.ndarray | None = None,
    valid: list[np.ndarray | None] | np.ndarray | None = None,
    threshold: float = 0.5,
    tol: Tolerances,
    artefact: str,
    batch: int = 4,
) -> ParityReport:
    """Run both runners on the same normalised tiles and measure their agreement.

    Args:
        reference: the runner taken as truth (PyTorch for ONNX fp32; ONNX fp32 otherwise).
        candidate: the converted model under test.
        tile_sets: one array (N, C, H, W) or a list of them of different shapes (e.g. the
            validation tiles plus a batch at a shape other than the export shape).
        labels: per tile set, (N, H, W) uint8 labels (1 = mine, 255 = nodata) or None.
        valid: per tile set, (N, H, W) bool of pixels whose input was valid, or None (all).
        threshold: the bundle's decision threshold on the probability.
        tol: the gate.
        artefact: file name used in the report and in error messages.
        batch: tiles per inference call.

    Returns:
        The report; its ``failures`` list says which tolerance was broken and by how much.

    Raises:
        ParityError: when a runner fails on the tiles (e.g. a shape the model refuses).
    """
    sets = [tile_sets] if isinstance(tile_sets, np.ndarray) else list(tile_sets)
    labs = _per_set(labels, len(sets))
    vals = _per_set(valid, len(sets))
    logit_thr = math.log(threshold / (1.0 - threshold))
    max_abs = 0.0
    used = 0.0
    at_worst: float | None = None
    atol = tol.max_abs_logit
    sum_abs = 0.0
    n_valid = 0
    n_agree = 0
    n_nan = 0
    inter = {"ref_cand": 0, "ref_lab": 0, "cand_lab": 0}
    union = {"ref_cand": 0, "ref_lab": 0, "cand_lab": 0}
    shapes: list[list[int]] = []
    n_tiles = 0
    for xs, ys, vs in zip(sets, labs, vals, strict=True):
        shapes.append(list(xs.shape))
        n_tiles += len(xs)
        for start in range(0, len(xs), batch):
            xb = xs[start : start + batch]
            try:
                a = reference.infer(xb)[:, 0]
                b = candidate.infer(xb)[:, 0]
            except ParityError:
                raise
            except Exception as exc:  # noqa: BLE001 - any runner failure is a failed gate
                raise ParityError(
                    f"{artefact}: inference failed on tiles of shape {tuple(xb.shape)}: {exc}"
                ) from exc
            if a.shape != b.shape:
                raise ParityError(
                    f"{artefact}: output shape {b.shape} differs from the reference's {a.shape}"
                )
            v = np.ones(a.shape, dtype=bool) if vs is None else vs[start : start + batch]
            n_nan += int(np.count_nonzero(~np.isfinite(b[v])))
            d = np.abs(a[v].astype(np.float64) - b[v])
            d = np.where(np.isfinite(d), d, np.inf)
            if d.size:
                max_abs = max(max_abs, float(d.max()))
                if atol is not None:
                    ratio = d / (atol + tol.rtol * np.abs(a[v].astype(np.float64)))
                    k = int(np.argmax(ratio))
                    if ratio[k] > used or at_worst is None:
                        used, at_worst = float(ratio[k]), float(a[v][k])
                sum_abs += float(d[np.isfinite(d)].sum())
            n_valid += int(v.sum())
            ma = (a > logit_thr) & v
            mb = (b > logit_thr) & v  # NaN compares False: a NaN output is "no mine"
            n_agree += int(np.count_nonzero((ma == mb) & v))
            inter["ref_cand"] += int(np.count_nonzero(ma & mb))
            union["ref_cand"] += int(np.count_nonzero(ma | mb))
            if ys is not None:
                yb = ys[start : start + batch]
                lv = v & (yb != 255)
                truth = (yb == 1) & lv
                for key, m in (("ref_lab", ma & lv), ("cand_lab", mb & lv)):
                    inter[key] += int(np.count_nonzero(m & truth))
                    union[key] += int(np.count_nonzero(m | truth))
    iou = {k: (inter[k] / union[k] if union[k] else None) for k in inter}
    has_labels = any(y is not None for y in labs)
    ref_iou = iou["ref_lab"] if has_labels else None
    cand_iou = iou["cand_lab"] if has_labels else None
    drop = None if ref_iou is None or cand_iou is None else 100.0 * (ref_iou - cand_iou)
    agreement = n_agree / n_valid if n_valid else 1.0
    rep = ParityReport(
        artefact=artefact,
        reference=reference.name,
        candidate=candidate.name,
        shapes=shapes,
        tiles=n_tiles,
        valid_pixels=n_valid,
        max_abs_logit=max_abs,
        logit_tolerance_used=used if atol is not None else None,
        logit_at_worst=at_worst,
        mean_abs_logit=sum_abs / n_valid if n_valid else 0.0,
        mask_agreement=agreement,
        iou_vs_reference=iou["ref_cand"],
        reference_iou=ref_iou,
        candidate_iou=cand_iou,
        iou_drop_points=drop,
        nan_outputs=n_nan,
        tolerances=asdict(tol),
    )
    rep.failures = _check(rep, tol)
    return rep


def _per_set(v: Any, n: int) -> list[Any]:
    if v is None:
        return [None] * n
    if isinstance(v, np.ndarray):
        return [v]
    out = list(v)
    if len(out) != n:
        raise ValueError(f"expected {n} entries (one per tile set), got {len(out)}")
    return out


def _check(rep: ParityReport, tol: Tolerances) -> list[str]:
    fails = []
    if rep.nan_outputs:
        fails.append(f"NaN outputs: {rep.nan_outputs} non-finite logits (must be 0)")
    if tol.max_abs_logit is not None and not (rep.logit_tolerance_used or 0.0) <= 1.0:
        limit = f"{tol.max_abs_logit:g} + {tol.rtol:g}·|logit|" if tol.rtol else f"{tol.max_abs_logit:g}"
        fails.append(
            f"max |Δlogit| {rep.max_abs_logit:.3g} exceeds the tolerance {limit} "
            f"(worst pixel: {rep.logit_tolerance_used:.3g}x its allowance, at a logit of "
            f"{rep.logit_at_worst:.4g})"
        )
    if tol.min_mask_agreement is not None and rep.mask_agreement < tol.min_mask_agreement:
        fails.append(
            f"mask agreement {100 * rep.mask_agreement:.3f} % is below the required "
            f"{100 * tol.min_mask_agreement:.2f} %"
        )
    if (
        tol.max_iou_drop_points is not None
        and rep.iou_drop_points is not None
        and rep.iou_drop_points > tol.max_iou_drop_points
    ):
        fails.append(
            f"IoU drop (points) {rep.iou_drop_points:.2f}: the mine-class IoU fell from "
            f"{100 * (rep.reference_iou or 0):.2f} % to {100 * (rep.candidate_iou or 0):.2f} %, "
            f"more than the allowed {tol.max_iou_drop_points:g} points"
        )
    return fails
