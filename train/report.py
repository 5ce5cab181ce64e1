"""The accuracy report as a text table, in the layout of the study's Table 2.

Rows are the map (predicted) classes, columns the reference classes, mine ("coal") first;
the last column is the user's accuracy of each row, the last row the producer's accuracy of
each column, then overall accuracy, kappa, and IoU/F1 of the mine class.

Example:
    >>> from coalmine.train.metrics import accuracy_report
    >>> print(format_report(accuracy_report(np.array([[21786, 378], [326, 4190]]))))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Display order and names: the mine class first, as in the study's table.
_DISPLAY = (("mine", "mine (coal)"), ("background", "no mine"))


def _pct(v: float | None) -> str:
    return "   n/a" if v is None else f"{100 * v:5.1f} %"


def format_report(rep: dict[str, Any], title: str = "") -> str:
    """Render one :func:`~coalmine.train.metrics.accuracy_report` dict as a table.

    Args:
        rep: the report dict (two classes: background, mine).
        title: an optional first line.

    Returns:
        The table as text (no trailing newline).
    """
    classes = list(rep["classes"])
    cm = np.asarray(rep["confusion_matrix"], dtype=np.int64)
    order = [classes.index(k) for k, _ in _DISPLAY]
    names = [n for _, n in _DISPLAY]
    w = max(12, max(len(n) for n in names) + 2)
    lines = []
    if title:
        lines.append(title)
    head = "map / reference"
    lines.append(f"{head:<{w}}" + "".join(f"{n:>14}" for n in names) + f"{'total':>12}{'user acc.':>12}")
    for i, name in zip(order, names, strict=True):
        row = cm[i, order]
        lines.append(
            f"{name:<{w}}" + "".join(f"{int(v):>14,d}" for v in row) + f"{int(row.sum()):>12,d}"
            + f"{_pct(rep['users_accuracy'][classes[i]]):>12}"
        )
    cols = cm[:, order].sum(axis=0)
    lines.append(f"{'total':<{w}}" + "".join(f"{int(v):>14,d}" for v in cols) + f"{int(cols.sum()):>12,d}")
    lines.append(
        f"{'producer acc.':<{w}}" + "".join(f"{_pct(rep['producers_accuracy'][classes[i]]):>14}" for i in order)
    )
    kappa = "n/a" if rep["kappa"] is None else f"{rep['kappa']:.3f}"
    iou = "n/a" if rep["iou_mine"] is None else f"{rep['iou_mine']:.3f}"
    f1 = "n/a" if rep["f1_mine"] is None else f"{rep['f1_mine']:.3f}"
    lines.append(
        f"overall accuracy {_pct(rep['overall_accuracy']).strip()}   kappa {kappa}   "
        f"IoU (mine) {iou}   F1 (mine) {f1}   pixels {rep['pixels']:,d}"
    )
    return "\n".join(lines)
