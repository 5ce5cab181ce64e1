"""Parity gates: run two backends on the same tiles and compare them with explicit tolerances.

In the manner of Polygraphy's ``polygraphy run --onnxrt --trt``: each model is a
:class:`~coalmine.runtime.backends.Backend` (``infer(x) -> logits``, a context manager), both
see the same normalised tiles, and a :class:`Tolerances` object states what "the same map"
means. :func:`compare` returns a :class:`ParityReport` (a JSON-able record and a printed
table); :meth:`ParityReport.raise_if_failed` turns a failed gate into a :class:`ParityError`
naming the artefact, the measured value and the threshold.

The gates look at what users see — the thresholded mine mask and the mine-class IoU — as well
as the raw logits, because FP16/INT8 conversions of U-Nets tend to fail on the minority class
while mean errors stay small. A non-finite logit always fails a gate.

coal-export gates every file it writes with these functions, and the TensorRT backend gates an
engine it builds at run time with the same tolerances on the same validation tiles
(:func:`gate_tiles`), so what maps is what passed. The module needs only numpy.

Example:
    >>> with OnnxBackend(ref_path, **io) as ref, OnnxBackend(fp16_path, **io) as cand:  # doctest: +SKIP
    ...     rep = compare(ref, cand, tiles, labels=y, tol=FP16_TOLERANCES, artefact="model.fp16.onnx")
    >>> rep.raise_if_failed()                                                         # doctest: +SKIP
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..errors import BundleError

#: Validation tiles a gate uses at most (bounds gate time on big validation sets).
MAX_GATE_TILES = 64


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


#: ONNX fp32 vs PyTorch: the same arithmetic, reordered.
FP32_TOLERANCES = Tolerances(max_abs_logit=1e-3, rtol=1e-3, min_mask_agreement=0.999)
#: FP16 ONNX (or an FP16 engine) vs ONNX fp32.
FP16_TOLERANCES = Tolerances(min_mask_agreement=0.995, max_iou_drop_points=1.0)
#: INT8 (QDQ) ONNX vs ONNX fp32.
INT8_TOLERANCES = Tolerances(min_mask_agreement=0.99)
#: An FP32 engine vs ONNX fp32: it may use TF32 tactics; NVIDIA's own ONNX→TensorRT check uses 1e-2.
ENGINE_FP32_TOLERANCES = Tolerances(max_abs_logit=1e-2, rtol=1e-2, min_mask_agreement=0.999)


# -- the report ---------------------------------------------------------------------------------
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

    def summary(self) -> str:
        """One line: what failed (or "passed"), for error messages and logs."""
        return "; ".join(self.failures) if self.failures else "passed"

    def raise_if_failed(self, consequence: str = "it was not written") -> None:
        """Raise :class:`ParityError` naming the artefact, what was measured and the limit.

        Args:
            consequence: what happened to the files, appended to the message.
        """
        if self.failures:
            raise ParityError(
                f"{self.artefact} failed its parity gate against {self.reference}: "
                + self.summary()
                + f"; {consequence}"
            )

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(metric, measured, limit, status) rows for the printed table."""
        t = self.tolerances
        rows = [
            ("max |Δlogit|", f"{self.max_abs_logit:.3g}", _atol_rtol(t)),
            ("mean |Δlogit|", f"{self.mean_abs_logit:.3g}", "-"),
            ("mask agreement", f"{100 * self.mask_agreement:.3f} %",
             _lim("≥", t.get("min_mask_agreement"), pct=True)),
            ("mine IoU vs reference", _pct(self.iou_vs_reference), "-"),
            ("mine IoU (reference)", _pct(self.reference_iou), "-"),
            ("mine IoU (candidate)", _pct(self.candidate_iou), "-"),
            ("IoU drop (points)", "-" if self.iou_drop_points is None else f"{self.iou_drop_points:.2f}",
             _lim("≤", t.get("max_iou_drop_points"))),
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


# -- the comparison -----------------------------------------------------------------------------
@dataclass
class _Tally:
    """Running sums over every batch of a comparison."""

    tol: Tolerances
    logit_threshold: float
    max_abs: float = 0.0
    used: float = 0.0
    at_worst: float | None = None
    sum_abs: float = 0.0
    n_valid: int = 0
    n_agree: int = 0
    n_nan: int = 0
    inter: dict[str, int] = field(default_factory=lambda: {"ref_cand": 0, "ref_lab": 0, "cand_lab": 0})
    union: dict[str, int] = field(default_factory=lambda: {"ref_cand": 0, "ref_lab": 0, "cand_lab": 0})

    def add_logits(self, a: np.ndarray, b: np.ndarray, v: np.ndarray) -> None:
        """Logit differences over the valid pixels ``v`` (non-finite candidate logits counted)."""
        self.n_nan += int(np.count_nonzero(~np.isfinite(b[v])))
        d = np.abs(a[v].astype(np.float64) - b[v])
        d = np.where(np.isfinite(d), d, np.inf)
        if d.size:
            self.max_abs = max(self.max_abs, float(d.max()))
            if self.tol.max_abs_logit is not None:
                ratio = d / (self.tol.max_abs_logit + self.tol.rtol * np.abs(a[v].astype(np.float64)))
                k = int(np.argmax(ratio))
                if ratio[k] > self.used or self.at_worst is None:
                    self.used, self.at_worst = float(ratio[k]), float(a[v][k])
            self.sum_abs += float(d[np.isfinite(d)].sum())
        self.n_valid += int(v.sum())

    def add_masks(self, a: np.ndarray, b: np.ndarray, v: np.ndarray, y: np.ndarray | None) -> None:
        """Mask agreement and IoUs (a NaN candidate logit compares False: it counts as "no mine")."""
        ma = (a > self.logit_threshold) & v
        mb = (b > self.logit_threshold) & v
        self.n_agree += int(np.count_nonzero((ma == mb) & v))
        self._iou("ref_cand", ma, mb)
        if y is not None:
            lv = v & (y != 255)
            truth = (y == 1) & lv
            self._iou("ref_lab", ma & lv, truth)
            self._iou("cand_lab", mb & lv, truth)

    def _iou(self, key: str, p: np.ndarray, q: np.ndarray) -> None:
        self.inter[key] += int(np.count_nonzero(p & q))
        self.union[key] += int(np.count_nonzero(p | q))

    def iou(self, key: str) -> float | None:
        return self.inter[key] / self.union[key] if self.union[key] else None


def _infer_pair(reference: Any, candidate: Any, xb: np.ndarray, artefact: str) -> tuple[np.ndarray, np.ndarray]:
    """Both models' logits (N, H, W) for one batch; any failure is a failed gate."""
    try:
        a = np.asarray(reference.infer(xb), dtype=np.float32)[:, 0]
        b = np.asarray(candidate.infer(xb), dtype=np.float32)[:, 0]
    except ParityError:
        raise
    except Exception as exc:  # noqa: BLE001 - any backend failure is a failed gate
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ParityError(f"{artefact}: inference failed on tiles of shape {tuple(xb.shape)}: {first}") from exc
    if a.shape != b.shape:
        raise ParityError(f"{artefact}: output shape {b.shape} differs from the reference's {a.shape}")
    return a, b


def _label(backend: Any) -> str:
    return str(getattr(backend, "label", None) or getattr(backend, "name", "backend"))


def compare(
    reference: Any,
    candidate: Any,
    tile_sets: list[np.ndarray] | np.ndarray,
    *,
    labels: list[np.ndarray | None] | np.ndarray | None = None,
    valid: list[np.ndarray | None] | np.ndarray | None = None,
    threshold: float = 0.5,
    tol: Tolerances,
    artefact: str,
    batch: int = 4,
) -> ParityReport:
    """Run both backends on the same normalised tiles and measure their agreement.

    Args:
        reference: the backend taken as truth (PyTorch for ONNX fp32; ONNX fp32 otherwise);
            anything with ``infer(x) -> (N, 1, H, W)`` and a ``label`` or ``name``.
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
        ParityError: when a backend fails on the tiles (e.g. a shape the model refuses).
    """
    sets = [tile_sets] if isinstance(tile_sets, np.ndarray) else list(tile_sets)
    labs = _per_set(labels, len(sets))
    vals = _per_set(valid, len(sets))
    tally = _Tally(tol, math.log(threshold / (1.0 - threshold)))
    shapes: list[list[int]] = []
    for xs, ys, vs in zip(sets, labs, vals, strict=True):
        shapes.append(list(xs.shape))
        for start in range(0, len(xs), batch):
            a, b = _infer_pair(reference, candidate, xs[start : start + batch], artefact)
            v = np.ones(a.shape, dtype=bool) if vs is None else vs[start : start + batch]
            tally.add_logits(a, b, v)
            tally.add_masks(a, b, v, None if ys is None else ys[start : start + batch])
    return _report(tally, reference, candidate, shapes, sum(len(x) for x in sets),
                   has_labels=any(y is not None for y in labs), artefact=artefact)


def _report(t: _Tally, reference: Any, candidate: Any, shapes: list[list[int]], n_tiles: int, *,
            has_labels: bool, artefact: str) -> ParityReport:
    ref_iou = t.iou("ref_lab") if has_labels else None
    cand_iou = t.iou("cand_lab") if has_labels else None
    rep = ParityReport(
        artefact=artefact,
        reference=_label(reference),
        candidate=_label(candidate),
        shapes=shapes,
        tiles=n_tiles,
        valid_pixels=t.n_valid,
        max_abs_logit=t.max_abs,
        logit_tolerance_used=t.used if t.tol.max_abs_logit is not None else None,
        logit_at_worst=t.at_worst,
        mean_abs_logit=t.sum_abs / t.n_valid if t.n_valid else 0.0,
        mask_agreement=t.n_agree / t.n_valid if t.n_valid else 1.0,
        iou_vs_reference=t.iou("ref_cand"),
        reference_iou=ref_iou,
        candidate_iou=cand_iou,
        iou_drop_points=None if ref_iou is None or cand_iou is None else 100.0 * (ref_iou - cand_iou),
        nan_outputs=t.n_nan,
        tolerances=asdict(t.tol),
    )
    rep.failures = _failures(rep, t.tol)
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


def _failures(rep: ParityReport, tol: Tolerances) -> list[str]:
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


# -- the validation tiles -------------------------------------------------------------------------
def load_val_tiles(bundle: Bundle, max_tiles: int = MAX_GATE_TILES) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's raw validation tiles and labels, cropped to a multiple of the size divisor.

    Returns:
        ``x`` float32 (N, C, H, W) raw (NaN nodata), ``y`` uint8 (N, H, W).

    Raises:
        BundleError: the file is missing, unreadable, or its arrays have the wrong shape.
    """
    p = bundle.file("val_tiles", must_exist=False)
    if not p.is_file():
        raise BundleError(
            f"bundle {bundle.path} lacks {p.name} (validation tiles for the parity gates and INT8 "
            "calibration); re-create the bundle with coal-train, which writes it"
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            x = np.asarray(z["x"][:max_tiles], dtype=np.float32)
            y = np.asarray(z["y"][:max_tiles])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # pickles are refused
        raise BundleError(
            f"{p} cannot be read as validation tiles with arrays 'x' and 'y' ({exc}); "
            "re-create the bundle with coal-train"
        ) from exc
    nb = len(bundle.bands)
    if x.ndim != 4 or x.shape[1] != nb or len(x) == 0:
        raise BundleError(f"{p}: 'x' has shape {x.shape}, expected (N, {nb}, H, W) with N ≥ 1")
    if y.shape != (x.shape[0],) + x.shape[2:]:
        raise BundleError(f"{p}: 'y' has shape {y.shape}, expected {(x.shape[0],) + x.shape[2:]}")
    if not np.isfinite(x).all(axis=1).any():
        raise BundleError(
            f"{p}: the validation tiles contain no valid pixel (every pixel has a NaN band), so "
            "no parity check is possible; re-create the bundle with coal-train"
        )
    m = bundle.model.size_multiple
    h, w = (x.shape[2] // m) * m, (x.shape[3] // m) * m
    if h == 0 or w == 0:
        raise BundleError(f"{p}: tiles of {x.shape[2]}x{x.shape[3]} are smaller than {m} pixels")
    return np.ascontiguousarray(x[:, :, :h, :w]), np.ascontiguousarray(y[:, :h, :w].astype(np.uint8))


def fit_tiles(x: np.ndarray, size: int, *rest: np.ndarray) -> list[np.ndarray]:
    """Crop or mirror-pad (N, …, H, W) arrays to ``size`` × ``size`` (for a fixed-shape engine)."""
    out = []
    for a in (x, *rest):
        a = a[..., :size, :size]
        ph, pw = size - a.shape[-2], size - a.shape[-1]
        if ph or pw:
            pad = [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)]
            a = np.pad(a, pad, mode="symmetric")
        out.append(np.ascontiguousarray(a))
    return out


@dataclass(frozen=True)
class GateTiles:
    """Normalised validation tiles, their labels and valid-pixel masks, ready for :func:`compare`."""

    x: np.ndarray
    labels: np.ndarray
    valid: np.ndarray

    def at_size(self, size: int) -> GateTiles:
        """The same tiles cropped or mirror-padded to ``size`` (a fixed-shape engine's tile)."""
        x, y, v = fit_tiles(self.x, size, self.labels, self.valid)
        return GateTiles(x, y, v)


def gate_tiles(bundle: Bundle, max_tiles: int = MAX_GATE_TILES) -> GateTiles:
    """The bundle's validation tiles, normalised as every runtime normalises its input.

    Raises:
        BundleError: see :func:`load_val_tiles`.
    """
    raw, labels = load_val_tiles(bundle, max_tiles)
    valid = np.isfinite(raw).all(axis=1)
    return GateTiles(bundle.normalization.apply(raw, out=raw), labels, valid)
