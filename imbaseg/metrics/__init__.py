"""Segmentation metrics, exactly as ../shared/spec/metrics.md defines them.

Per image: ``compute_metrics(pred, target, valid=None, spacing=None, hd_convention="max", nsd_tau=2.0,
probs=None, lesion_overlap=0.0, min_component=0)`` returns the overlap, surface, clDice and lesion metrics
(and ``ece``, ``brier`` with ``probs``: all of ``METRIC_NAMES``) plus the lesion counts, with explicit
empty-mask rules (only ``lesion_recall`` can be undefined, NaN); ``empty_case`` says which rule applied.
Lesion-wise detection: ``imbaseg.metrics.lesion``; calibration (ECE, Brier, reliability counts):
``imbaseg.metrics.calibration``. Per split: ``auc_roc`` / ``auc_pr`` over all valid pixels. Over images:
``summarize`` (mean, std, median, bootstrap CI) and ``paired_wilcoxon``. Over runs (m[L, S, n], the
study's spec): ``imbaseg.metrics.stats`` (``bootstrap_draws``, ``analyse``, ``holm``, ``effect_size_r``).

Imports no other imbaseg package except ``imbaseg.errors``.
"""

from imbaseg.metrics.calibration import CALIBRATION_NAMES, CalibrationCounts, brier, calibration_counts, ece
from imbaseg.metrics.lesion import (
    LESION_COUNT_NAMES,
    LESION_NAMES,
    lesion_metrics,
    lesion_scores,
    match_lesions,
)
from imbaseg.metrics.overlap import confusion_counts, overlap_metrics
from imbaseg.metrics.per_image import (
    COMPARABLE_NAMES,
    EMPTY_CASES,
    HIGHER_IS_BETTER,
    MASK_METRIC_NAMES,
    MAY_BE_UNDEFINED,
    METRIC_NAMES,
    compute_metrics,
    empty_case,
)
from imbaseg.metrics.roc import auc_pr, auc_roc
from imbaseg.metrics.stats import analyse, bootstrap_draws, higher_is_better, holm
from imbaseg.metrics.summary import SUMMARY_KEYS, bootstrap_means, paired_wilcoxon, summarize
from imbaseg.metrics.surface import HD_CONVENTIONS, surface, surface_distances, surface_metrics
from imbaseg.metrics.topology import cldice, skeleton

__all__ = [
    "CALIBRATION_NAMES",
    "COMPARABLE_NAMES",
    "CalibrationCounts",
    "EMPTY_CASES",
    "HD_CONVENTIONS",
    "HIGHER_IS_BETTER",
    "LESION_COUNT_NAMES",
    "LESION_NAMES",
    "MASK_METRIC_NAMES",
    "MAY_BE_UNDEFINED",
    "METRIC_NAMES",
    "SUMMARY_KEYS",
    "auc_pr",
    "auc_roc",
    "analyse",
    "bootstrap_draws",
    "bootstrap_means",
    "brier",
    "calibration_counts",
    "cldice",
    "compute_metrics",
    "confusion_counts",
    "ece",
    "empty_case",
    "higher_is_better",
    "holm",
    "lesion_metrics",
    "lesion_scores",
    "match_lesions",
    "overlap_metrics",
    "paired_wilcoxon",
    "skeleton",
    "summarize",
    "surface",
    "surface_distances",
    "surface_metrics",
]
