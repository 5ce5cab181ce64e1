"""Pixel accuracy metrics: hand-worked cases and the study's Table 2."""

from __future__ import annotations

import numpy as np
import pytest
from coalmine.runtime.errors import InputError
from coalmine.train.metrics import accuracy_report, confusion_matrix, kappa_from_counts

# The study's Table 2 (pixels): mine ("coal") 4190 correct, 326 false mine (predicted mine,
# truly background), 378 missed (truly mine, predicted background), 21786 background correct.
TP, FP, FN, TN = 4190, 326, 378, 21786


def _table2_arrays() -> tuple[np.ndarray, np.ndarray]:
    pred = np.concatenate([np.ones(TP), np.ones(FP), np.zeros(FN), np.zeros(TN)]).astype(np.uint8)
    truth = np.concatenate([np.ones(TP), np.zeros(FP), np.ones(FN), np.zeros(TN)]).astype(np.uint8)
    rng = np.random.default_rng(0)
    order = rng.permutation(pred.size)
    return pred[order], truth[order]


def test_table2_from_pixels_gives_study_figures() -> None:
    pred, truth = _table2_arrays()
    cm = confusion_matrix(pred, truth)
    # rows = predicted, columns = reference
    assert cm.tolist() == [[TN, FN], [FP, TP]]
    r = accuracy_report(cm)
    assert round(r["overall_accuracy"] * 100, 1) == 97.4
    assert round(r["kappa"], 2) == 0.91
    # user's accuracy (row-wise) and producer's accuracy (column-wise) are not symmetric:
    assert r["users_accuracy"]["mine"] == pytest.approx(TP / (TP + FP))  # 92.8 %
    assert r["producers_accuracy"]["mine"] == pytest.approx(TP / (TP + FN))  # 91.7 %
    assert r["users_accuracy"]["background"] == pytest.approx(TN / (TN + FN))
    assert r["producers_accuracy"]["background"] == pytest.approx(TN / (TN + FP))
    assert round(r["users_accuracy"]["mine"] * 100, 1) == 92.8
    assert round(r["producers_accuracy"]["mine"] * 100, 1) == 91.7
    assert r["iou_mine"] == pytest.approx(TP / (TP + FP + FN))
    assert r["f1_mine"] == pytest.approx(2 * TP / (2 * TP + FP + FN))
    assert r["pixels"] == TP + FP + FN + TN


def test_hand_computed_small_case() -> None:
    pred = np.array([[1, 1, 0], [0, 0, 1]])
    truth = np.array([[1, 0, 0], [1, 0, 1]])
    cm = confusion_matrix(pred, truth)
    assert cm.tolist() == [[2, 1], [1, 2]]
    r = accuracy_report(cm)
    assert r["overall_accuracy"] == pytest.approx(4 / 6)
    # po = 2/3, pe = (3*3 + 3*3)/36 = 1/2, kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert r["kappa"] == pytest.approx(1 / 3)
    assert r["iou_mine"] == pytest.approx(2 / 4)
    assert r["f1_mine"] == pytest.approx(4 / 6)


def test_nodata_and_valid_mask_are_ignored() -> None:
    pred = np.array([1, 1, 0, 0, 1])
    truth = np.array([1, 255, 0, 1, 0])
    valid = np.array([True, True, True, True, False])
    cm = confusion_matrix(pred, truth, valid)
    assert cm.tolist() == [[1, 1], [0, 1]]


def test_perfect_and_chance_kappa() -> None:
    truth = np.array([0, 0, 1, 1])
    assert accuracy_report(confusion_matrix(truth, truth))["kappa"] == pytest.approx(1.0)
    # a map that is right exactly as often as chance: kappa 0
    assert kappa_from_counts(confusion_matrix(np.array([0, 1, 0, 1]), truth)) == pytest.approx(0.0)


def test_single_class_everywhere_gives_undefined_ratios() -> None:
    r = accuracy_report(confusion_matrix(np.zeros(5), np.zeros(5)))
    assert r["overall_accuracy"] == 1.0
    assert r["kappa"] is None
    assert r["users_accuracy"]["mine"] is None and r["iou_mine"] is None
    assert kappa_from_counts(np.array([[5, 0], [0, 0]])) == 0.0


def test_shape_mismatch_refused() -> None:
    with pytest.raises(InputError, match=r"prediction shape \(3,\) differs from reference shape \(2,\)"):
        confusion_matrix(np.zeros(3), np.zeros(2))


def test_bad_matrix_refused() -> None:
    with pytest.raises(InputError, match="must be 2x2"):
        accuracy_report(np.zeros((3, 3)))


def test_prediction_out_of_range_refused() -> None:
    with pytest.raises(InputError, match=r"predicted classes must lie in 0\.\.1"):
        confusion_matrix(np.array([2, 0]), np.array([1, 0]))


def test_table_layout_of_the_study() -> None:
    from coalmine.train.report import format_report

    text = format_report(accuracy_report(np.array([[TN, FN], [FP, TP]])), "Table 2")
    lines = text.splitlines()
    assert lines[0] == "Table 2"
    assert lines[1].split()[:5] == ["map", "/", "reference", "mine", "(coal)"]
    # mine row: correct, false mine, row total, user's accuracy
    assert lines[2].split() == ["mine", "(coal)", "4,190", "326", "4,516", "92.8", "%"]
    assert lines[3].split() == ["no", "mine", "378", "21,786", "22,164", "98.3", "%"]
    assert lines[4].split() == ["total", "4,568", "22,112", "26,680"]
    assert lines[5].split() == ["producer", "acc.", "91.7", "%", "98.5", "%"]
    assert "overall accuracy 97.4 %" in lines[6] and "kappa 0.907" in lines[6]


def test_kappa_with_unequal_row_and_column_totals() -> None:
    # map (rows):       background 60, mine 40;   reference (columns): background 55, mine 45
    cm = np.array([[50, 10], [5, 35]])
    r = accuracy_report(cm)
    assert r["overall_accuracy"] == pytest.approx(0.85)  # (50 + 35) / 100
    # chance agreement from the row AND column totals: (60 * 55 + 40 * 45) / 100^2 = 0.51
    # kappa = (0.85 - 0.51) / (1 - 0.51) = 0.34 / 0.49 = 0.693877...
    # (rows only would give pe = 0.52 and kappa 0.6875; columns only pe = 0.505, kappa 0.69697)
    assert r["kappa"] == pytest.approx(0.34 / 0.49, rel=1e-12)
    assert kappa_from_counts(cm) == pytest.approx(0.6938775510204082, rel=1e-12)
    assert r["users_accuracy"] == pytest.approx({"background": 50 / 60, "mine": 35 / 40})
    assert r["producers_accuracy"] == pytest.approx({"background": 50 / 55, "mine": 35 / 45})
    assert r["precision_mine"] == pytest.approx(0.875) and r["recall_mine"] == pytest.approx(35 / 45)
    assert r["iou_mine"] == pytest.approx(0.7)  # 35 / (35 + 5 + 10)
    assert r["f1_mine"] == pytest.approx(70 / 85)
    assert r["pixels"] == 100
    # transposing (map and reference swapped) keeps kappa and OA but swaps user's and producer's
    t = accuracy_report(cm.T)
    assert t["kappa"] == pytest.approx(r["kappa"]) and t["users_accuracy"]["mine"] == pytest.approx(35 / 45)


def test_no_pixels_gives_no_figures_rather_than_zero() -> None:
    r = accuracy_report(np.zeros((2, 2), np.int64))
    assert r["pixels"] == 0
    for key in ("overall_accuracy", "kappa", "iou_mine", "f1_mine", "precision_mine", "recall_mine"):
        assert r[key] is None, key
    assert r["users_accuracy"] == {"background": None, "mine": None}
    assert kappa_from_counts(np.zeros((2, 2))) == 0.0


def test_one_wrong_pixel() -> None:
    # one pixel, mapped background, truly mine: po = 0, pe = (1 * 0 + 0 * 1) / 1 = 0 -> kappa 0
    r = accuracy_report(np.array([[0, 1], [0, 0]]))
    assert r["pixels"] == 1 and r["overall_accuracy"] == 0.0 and r["kappa"] == 0.0
    assert r["users_accuracy"] == {"background": 0.0, "mine": None}  # 0 of 1; no mine row
    assert r["producers_accuracy"] == {"background": None, "mine": 0.0}
    assert r["recall_mine"] == 0.0 and r["precision_mine"] is None and r["iou_mine"] == 0.0


def test_report_is_json_ready_with_integer_counts() -> None:
    r = accuracy_report(np.array([[50.0, 10.0], [5.0, 35.0]]))  # counts given as floats
    assert r["confusion_matrix"] == [[50, 10], [5, 35]]
    assert all(type(v) is int for row in r["confusion_matrix"] for v in row) and type(r["pixels"]) is int
    assert r["layout"] == "rows = predicted (map), columns = reference"
    assert r["classes"] == ["background", "mine"]


def test_reference_classes_outside_the_range_and_integer_valid_masks() -> None:
    pred = np.array([0, 1, 1, 0, 1])
    truth = np.array([0, 2, 1, 1, 0])  # 2 is not a class of a 2-class map: ignored like nodata
    assert confusion_matrix(pred, truth).tolist() == [[1, 1], [1, 1]]
    valid = np.array([1, 1, 1, 0, 0])  # 0/1 integers mean the same as booleans
    assert confusion_matrix(pred, truth, valid).tolist() == [[1, 0], [0, 1]]
    with pytest.raises(InputError, match=r"valid mask shape \(4,\) differs from reference shape \(5,\)"):
        confusion_matrix(pred, truth, np.ones(4, bool))
