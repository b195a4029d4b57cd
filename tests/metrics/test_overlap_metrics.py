"""Overlap metrics: hand-computed squares, the spec's empty-mask table, the field of view, bad input."""

import math

import numpy as np
import pytest

from imbaseg.errors import UserError
from imbaseg.metrics import compute_metrics, confusion_counts, empty_case, overlap_metrics


def square(shape, y, x, side):
    m = np.zeros(shape, dtype=bool)
    m[y : y + side, x : x + side] = True
    return m


def test_squares_with_known_overlap():
    # A = 10x10 at (0, 0), B = 10x10 at (5, 5) in 32x32: intersection 5x5 = 25, |A| = |B| = 100.
    # TP = 25, FP = 75, FN = 75, TN = 1024 - 175 = 849.
    a, b = square((32, 32), 0, 0, 10), square((32, 32), 5, 5, 10)
    assert confusion_counts(b, a) == (25, 75, 75, 849)
    m = overlap_metrics(b, a)
    assert m["dice"] == pytest.approx(2 * 25 / (2 * 25 + 75 + 75))  # 0.25
    assert m["iou"] == pytest.approx(25 / 175)  # 1/7
    assert m["precision"] == pytest.approx(0.25)
    assert m["recall"] == pytest.approx(0.25)
    assert m["specificity"] == pytest.approx(849 / (849 + 75))
    assert m["accuracy"] == pytest.approx((25 + 849) / 1024)


def test_dice_and_iou_relation_on_nested_squares():
    # pred 4x4 inside GT 8x8: TP = 16, FN = 48, FP = 0: dice = 32/80 = 0.4, iou = 16/64 = 0.25,
    # precision 1, recall 0.25; iou = dice / (2 - dice) holds.
    gt, pred = square((16, 16), 0, 0, 8), square((16, 16), 2, 2, 4)
    m = overlap_metrics(pred, gt)
    assert (m["dice"], m["iou"], m["precision"], m["recall"]) == pytest.approx((0.4, 0.25, 1.0, 0.25))
    assert m["iou"] == pytest.approx(m["dice"] / (2 - m["dice"]))


# The spec's empty-mask table (32x32 image: diagonal = sqrt(32^2 + 32^2) = 45.2548...), plus clDice
# (both empty 1, one empty 0). The non-empty mask is a 7x7 square (49 px), so specificity and accuracy
# stay ordinary ratios: gt_empty has FP = 49, TN = 975; pred_empty has FN = 49, TN = 975, FP = 0.
# Lesion-wise (README): both empty 1/1/1; no target -> precision 0, F1 0, recall undefined (NaN, checked
# below); no prediction -> recall 0, precision 0, F1 0.
DIAG = math.hypot(32, 32)
EMPTY_ROWS = [
    # case, pred non-empty, GT non-empty, expected values
    (
        "both_empty", False, False,
        dict(dice=1, iou=1, precision=1, recall=1, hd95=0, assd=0, nsd=1, cldice=1,
             specificity=1, accuracy=1, lesion_recall=1, lesion_precision=1, lesion_f1=1,
             lesion_targets=0, lesion_predicted=0, lesion_fp=0),
    ),
    (
        "gt_empty", True, False,
        dict(dice=0, iou=0, precision=0, recall=0, hd95=DIAG, assd=DIAG, nsd=0, cldice=0,
             specificity=975 / 1024, accuracy=975 / 1024, lesion_precision=0, lesion_f1=0,
             lesion_targets=0, lesion_predicted=1, lesion_fp=1),
    ),
    (
        "pred_empty", False, True,
        dict(dice=0, iou=0, precision=0, recall=0, hd95=DIAG, assd=DIAG, nsd=0, cldice=0,
             specificity=1, accuracy=975 / 1024, lesion_recall=0, lesion_precision=0, lesion_f1=0,
             lesion_targets=1, lesion_detected=0, lesion_missed=1, lesion_predicted=0),
    ),
]  # fmt: skip


@pytest.mark.parametrize("case, has_pred, has_gt, expected", EMPTY_ROWS)
@pytest.mark.parametrize("convention", ["max", "union"])
def test_empty_mask_rows_of_the_spec(case, has_pred, has_gt, expected, convention):
    blob = square((32, 32), 4, 6, 7)
    empty = np.zeros((32, 32), dtype=bool)
    pred, gt = (blob if has_pred else empty), (blob if has_gt else empty)
    m = compute_metrics(pred, gt, hd_convention=convention)
    assert empty_case(pred, gt) == case
    assert m == pytest.approx(m | expected, nan_ok=True)
    # the one NaN rule (no target, a prediction)
    undefined = {"lesion_recall"} if case == "gt_empty" else set()
    assert {k for k, v in m.items() if not math.isfinite(v)} == undefined


def test_empty_rows_diagonal_uses_spacing():
    # 20x30 image with spacing (0.5, 2): diagonal = sqrt((20*0.5)^2 + (30*2)^2) = sqrt(100 + 3600).
    pred = np.zeros((20, 30))
    gt = square((20, 30), 2, 2, 3)
    m = compute_metrics(pred, gt, spacing=(0.5, 2.0))
    assert m["hd95"] == pytest.approx(math.sqrt(3700)) and m["assd"] == pytest.approx(math.sqrt(3700))


def test_specificity_is_one_when_nothing_is_negative():
    full = np.ones((8, 8), dtype=bool)
    m = overlap_metrics(full, full)
    assert m["specificity"] == 1.0 and m["accuracy"] == 1.0 and m["dice"] == 1.0
    # GT fills the image, prediction half of it: TN + FP = 0, specificity 1, recall 0.5.
    half = full.copy()
    half[:, 4:] = False
    m = overlap_metrics(half, full)
    assert (m["specificity"], m["recall"], m["precision"]) == (1.0, 0.5, 1.0)


def test_field_of_view_changes_specificity_and_accuracy_not_tp():
    # 20x20 image; FOV = the left 10 columns (200 px). GT = 4x4 at (2, 2), inside the FOV.
    # pred = GT + a 2x2 false positive inside the FOV at (12, 2) + a 5x5 false positive outside at (10, 12).
    gt = square((20, 20), 2, 2, 4)
    pred = gt | square((20, 20), 12, 2, 2) | square((20, 20), 10, 12, 5)
    fov = np.zeros((20, 20), dtype=bool)
    fov[:, :10] = True
    # Whole image: TP 16, FP 4 + 25 = 29, FN 0, TN 400 - 45 = 355.
    assert confusion_counts(pred, gt) == (16, 29, 0, 355)
    # Inside the FOV: TP 16, FP 4, FN 0, TN 200 - 20 = 180.
    assert confusion_counts(pred, gt, valid=fov) == (16, 4, 0, 180)
    whole, inside = overlap_metrics(pred, gt), overlap_metrics(pred, gt, valid=fov)
    assert (whole["specificity"], inside["specificity"]) == pytest.approx((355 / 384, 180 / 184))
    assert (whole["accuracy"], inside["accuracy"]) == pytest.approx((371 / 400, 196 / 200))
    assert whole["recall"] == inside["recall"] == 1.0


def test_tensor_and_dtype_inputs_agree_with_bool_arrays():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    pred, gt = rng.random((24, 24)) > 0.6, rng.random((24, 24)) > 0.5
    reference = compute_metrics(pred, gt)
    assert compute_metrics(pred.astype(np.uint8) * 255, gt.astype(np.float32)) == reference
    assert compute_metrics(torch.from_numpy(pred), torch.from_numpy(gt).float()) == reference
    assert compute_metrics(torch.from_numpy(pred).int(), gt.astype(np.int64)) == reference


@pytest.mark.parametrize(
    "pred, target, valid, message",
    [
        (np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), None, "shape \\(H, W\\)"),
        (np.zeros((8, 8)), np.zeros((8, 9)), None, "same shape"),
        (np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((4, 4)), "valid must have"),
        (np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 8)), "no pixels"),
        (np.zeros((0, 8)), np.zeros((0, 8)), None, "shape"),
    ],
)
def test_bad_inputs_raise_user_error(pred, target, valid, message):
    with pytest.raises(UserError, match=message):
        compute_metrics(pred, target, valid=valid)
