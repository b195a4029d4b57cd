"""Confusion counts and the overlap metrics (dice, iou, precision, recall, specificity, accuracy).

Every ratio is defined for every input (never a NaN), following ../shared/spec/metrics.md:

| case                         | dice, iou | precision | recall |
| ---------------------------- | --------- | --------- | ------ |
| GT and prediction both empty | 1         | 1         | 1      |
| GT empty, prediction not     | 0         | 0         | 0      |
| prediction empty, GT not     | 0         | 0         | 0      |

specificity = TN / (TN + FP) is 1 when nothing is negative (TN + FP = 0: the GT fills the valid
region), since no negative pixel was misclassified. accuracy always has a denominator (the valid
region is never empty).
"""

from __future__ import annotations

import numpy as np

from imbaseg.metrics._masks import masks

OVERLAP_NAMES = ("dice", "iou", "precision", "recall", "specificity", "accuracy")


def confusion_counts(pred, target, valid=None) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of two (H, W) masks, counted inside ``valid`` when it is given."""
    p, t, v = masks(pred, target, valid)
    return counts_of(p, t, v)


def counts_of(p: np.ndarray, t: np.ndarray, v: np.ndarray | None) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of bool masks already cut to ``v`` (see ``_masks.masks``)."""
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    total = p.size if v is None else int(np.count_nonzero(v))
    return tp, fp, fn, total - tp - fp - fn


def _ratio(num: int, den: int, when_zero: float) -> float:
    return num / den if den > 0 else when_zero


def overlap_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """The six overlap metrics from confusion counts, with the empty-mask rules of the module doc."""
    both_empty = tp + fp + fn == 0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        # TP + FP = 0 with a non-empty GT is "prediction empty": 0; with an empty GT: 1.
        "precision": _ratio(tp, tp + fp, 1.0 if both_empty else 0.0),
        "recall": _ratio(tp, tp + fn, 1.0 if both_empty else 0.0),
        "specificity": _ratio(tn, tn + fp, 1.0),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
    }


def overlap_metrics(pred, target, valid=None) -> dict[str, float]:
    """dice, iou, precision, recall, specificity, accuracy of two (H, W) masks (inside ``valid``)."""
    return overlap_from_counts(*confusion_counts(pred, target, valid))
