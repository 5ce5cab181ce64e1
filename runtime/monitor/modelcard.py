"""The model card of the report: which model made the maps and how good it is.

An inspector reading hectares needs to know how far to trust them. Everything here is read
from the bundle folder the monitor ran, never recomputed:

- ``bundle.json`` — bundle id and date, the training data's fingerprint and scenes (with their
  split: train, or test = held out whole), epochs run and the best epoch, seed, device, code
  version, decision threshold;
- ``report.json`` (coal-train) — the pixel confusion matrices of the validation and test splits,
  shown as the study's Table 2: rows are the map, columns the reference, mine first, with
  user's accuracy per row, producer's accuracy per column, overall accuracy and Cohen's kappa;
- ``parity_report.json`` (coal-export) — each exported model's gate against its reference:
  mask agreement and mine-IoU drop against their limits, passed or not.

A file that is missing or unreadable leaves its part of the card out with a note; only plain
file names inside the bundle folder are opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import Bundle

#: Display order of the classes (the mine class first, as in the study's Table 2).
_CLASSES = (("mine", "mine (coal)"), ("background", "no mine"))


@dataclass
class AccuracyTable:
    """One split's confusion matrix in the layout of the study's Table 2."""

    split: str
    rows: list[dict[str, Any]]          # per map class: name, counts (per reference class), total, user's acc.
    column_totals: list[int]
    producers: list[float | None]
    total: int
    overall_accuracy: float | None
    kappa: float | None
    iou_mine: float | None
    f1_mine: float | None


@dataclass
class Gate:
    """One export gate as coal-export measured it."""

    artefact: str
    reference: str
    passed: bool
    mask_agreement: float | None
    min_mask_agreement: float | None
    iou_drop_points: float | None
    max_iou_drop_points: float | None
    max_abs_logit: float | None


@dataclass
class ModelCard:
    """What the report says about the model (see the module docstring)."""

    bundle_id: str
    created: str
    path: str
    threshold: float
    training: dict[str, Any]
    scenes: list[dict[str, str]]
    accuracy: list[AccuracyTable]
    gates: list[Gate]
    exported: str = ""
    notes: list[str] = field(default_factory=list)


def _read_json(folder: Path, name: str) -> dict[str, Any] | None:
    p = folder / Path(name).name  # a plain name inside the bundle: never a path elsewhere
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def accuracy_table(split: str, rep: dict[str, Any]) -> AccuracyTable:
    """The study-style table of one :func:`coalmine.train.metrics.accuracy_report` dict.

    Example:
        >>> t = accuracy_table("test", {"classes": ["background", "mine"], "confusion_matrix":
        ...     [[21786, 378], [326, 4190]], "overall_accuracy": 0.974, "kappa": 0.907})
        >>> [r["counts"] for r in t.rows], t.producers
        ([[4190, 326], [378, 21786]], [0.9172504378283712, 0.9852568740955137])
    """
    classes = list(rep["classes"])
    cm = [[int(v) for v in row] for row in rep["confusion_matrix"]]
    order = [classes.index(k) for k, _ in _CLASSES]
    rows = []
    for i, (_, label) in zip(order, _CLASSES, strict=True):
        counts = [cm[i][j] for j in order]
        total = sum(counts)
        rows.append({"name": label, "counts": counts, "total": total,
                     "users": cm[i][i] / total if total else None})
    col = [sum(cm[i][j] for i in order) for j in order]
    producers = [cm[j][j] / c if c else None for j, c in zip(order, col, strict=True)]
    return AccuracyTable(
        split=split, rows=rows, column_totals=col, producers=producers, total=sum(col),
        overall_accuracy=rep.get("overall_accuracy"), kappa=rep.get("kappa"), iou_mine=rep.get("iou_mine"),
        f1_mine=rep.get("f1_mine"),
    )


def read_model_card(bundle: Bundle) -> ModelCard:
    """The model card of a loaded bundle (parts whose files are missing are left out, noted)."""
    t = bundle.training or {}
    notes: list[str] = []
    scenes = []
    cfg = t.get("config") if isinstance(t.get("config"), dict) else {}
    for s in cfg.get("scenes", []) if isinstance(cfg.get("scenes"), list) else []:
        if isinstance(s, dict):
            where = s.get("path") or s.get("scene") or ""  # [[scenes]] spelling, then the older one
            scenes.append({"split": str(s.get("split", "train")), "scene": Path(str(where)).name,
                           "labels": Path(str(s.get("labels") or "")).name})
    report = _read_json(bundle.path, "report.json")
    accuracy = []
    if report is None:
        notes.append("the bundle has no readable report.json: no accuracy table")
    else:
        for split in ("validation", "test"):
            rep = report.get(split)
            if isinstance(rep, dict) and "confusion_matrix" in rep:
                accuracy.append(accuracy_table(split, rep))
        if report.get("threshold_tuned_on_validation"):
            notes.append("the decision threshold was tuned on the validation split, so its figures are optimistic; "
                         "the test split is the unbiased one")
    parity = _read_json(bundle.path, bundle.files.get("parity_report", "parity_report.json"))
    gates = []
    if parity is None:
        notes.append("the bundle has no readable parity_report.json: export gates unknown")
    else:
        for rep in (parity.get("reports") or {}).values():
            if not isinstance(rep, dict):
                continue
            tol = rep.get("tolerances") or {}
            gates.append(Gate(
                artefact=str(rep.get("artefact")), reference=str(rep.get("reference")), passed=bool(rep.get("passed")),
                mask_agreement=rep.get("mask_agreement"), min_mask_agreement=tol.get("min_mask_agreement"),
                iou_drop_points=rep.get("iou_drop_points"), max_iou_drop_points=tol.get("max_iou_drop_points"),
                max_abs_logit=rep.get("max_abs_logit"),
            ))
    return ModelCard(
        bundle_id=bundle.bundle_id, created=bundle.created, path=str(bundle.path), threshold=bundle.threshold,
        training={k: t.get(k) for k in ("data_fingerprint", "epochs_run", "epochs_max", "best_epoch", "stopped_early",
                                        "seed", "device", "code_version", "patches")},
        scenes=scenes, accuracy=accuracy, gates=gates,
        exported=str(parity.get("created", "")) if parity else "", notes=notes,
    )
