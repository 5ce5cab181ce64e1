"""Pixel accuracy metrics of a binary mine map (NumPy only, no torch).

The confusion matrix follows the remote-sensing error-matrix convention (Congalton):
rows are the **map** (predicted) classes, columns the **reference** (true) classes,
class 0 = background ("no coal"), class 1 = mine ("coal"). So ``cm[1, 0]`` counts
false mine pixels (predicted mine, truly background) and ``cm[0, 1]`` missed mine
pixels (truly mine, predicted background).

User's accuracy of a class = correct / row total (how often the map is right when it
says that class); producer's accuracy = correct / column total (how much of the true
class the map finds).

Example (the study's Table 2):
    >>> cm = np.array([[21786, 378], [326, 4190]])
    >>> r = accuracy_report(cm)
    >>> round(r["overall_accuracy"] * 100, 1), round(r["kappa"], 2)
    (97.4, 0.91)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from coalmine.runtime.errors import InputError

CLASS_NAMES: tuple[str, ...] = ("background", "mine")


def confusion_matrix(
    pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None, n_classes: int = 2
) -> np.ndarray:
    """Count pixels per (predicted, reference) class pair.

    Args:
        pred: predicted class per pixel (integers 0..n_classes-1, or bool).
        truth: reference class per pixel, same shape. Values outside 0..n_classes-1
            (e.g. the label nodata 255) are ignored.
        valid: optional bool mask of pixels to count (e.g. image valid), same shape.
        n_classes: number of classes (2: background, mine).

    Returns:
        int64 array (n_classes, n_classes), ``cm[p, t]`` = pixels predicted ``p`` with
        reference ``t``.

    Raises:
        InputError: shapes differ, or a counted prediction is out of range.

    Example:
        >>> confusion_matrix(np.array([1, 0, 1]), np.array([1, 1, 0])).tolist()
        [[0, 1], [1, 1]]
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference shape {truth.shape}")
    keep = (truth >= 0) & (truth < n_classes)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != truth.shape:
            raise InputError(f"valid mask shape {valid.shape} differs from reference shape {truth.shape}")
        keep &= valid
    p = pred[keep].astype(np.int64)
    t = truth[keep].astype(np.int64)
    if p.size and (p.min() < 0 or p.max() >= n_classes):
        raise InputError(f"predicted classes must lie in 0..{n_classes - 1}, got {p.min()}..{p.max()}")
    counts = np.bincount(p * n_classes + t, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def accuracy_report(cm: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES) -> dict[str, Any]:
    """Overall accuracy, Cohen's kappa, user's/producer's accuracy, IoU and F1 of the mine class.

    Args:
        cm: confusion matrix from :func:`confusion_matrix` (rows predicted, columns reference).
        class_names: names of the classes in index order; the last one is the positive class.

    Returns:
        A JSON-ready dict: ``confusion_matrix`` (nested list), ``pixels``,
        ``overall_accuracy``, ``kappa``, ``users_accuracy`` and ``producers_accuracy``
        ({class: value}), ``iou_mine``, ``f1_mine``, ``precision_mine``, ``recall_mine``.
        A ratio whose denominator is zero is ``None`` (e.g. no mine pixels at all); kappa is
        ``None`` when the chance agreement is 1 (a single class everywhere).

    Raises:
        InputError: ``cm`` is not square, or does not match ``class_names``.
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = len(class_names)
    if cm.ndim != 2 or cm.shape != (k, k):
        raise InputError(f"confusion matrix must be {k}x{k} for classes {class_names}, got shape {cm.shape}")
    n = int(cm.sum())
    diag = np.diag(cm).astype(np.float64)
    rows = cm.sum(axis=1).astype(np.float64)
    cols = cm.sum(axis=0).astype(np.float64)
    oa = _ratio(diag.sum(), n)
    kappa = None
    if n > 0:
        pe = float((rows * cols).sum()) / float(n) ** 2
        if pe < 1.0:
            kappa = (float(diag.sum()) / n - pe) / (1.0 - pe)
    pos = k - 1
    tp = float(cm[pos, pos])
    fp = float(rows[pos] - tp)
    fn = float(cols[pos] - tp)
    return {
        "classes": list(class_names),
        "confusion_matrix": cm.tolist(),
        "layout": "rows = predicted (map), columns = reference",
        "pixels": n,
        "overall_accuracy": oa,
        "kappa": kappa,
        "users_accuracy": {c: _ratio(diag[i], rows[i]) for i, c in enumerate(class_names)},
        "producers_accuracy": {c: _ratio(diag[i], cols[i]) for i, c in enumerate(class_names)},
        "iou_mine": _ratio(tp, tp + fp + fn),
        "f1_mine": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision_mine": _ratio(tp, tp + fp),
        "recall_mine": _ratio(tp, tp + fn),
    }


def kappa_from_counts(cm: np.ndarray) -> float:
    """Cohen's kappa of a 2x2 matrix as a plain float (0.0 where undefined): for early stopping."""
    k = accuracy_report(np.asarray(cm))["kappa"]
    return 0.0 if k is None else float(k)
