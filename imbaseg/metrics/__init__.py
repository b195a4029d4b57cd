"""Segmentation metrics, exactly as ../shared/spec/metrics.md defines them.

Per image: ``compute_metrics(pred, target, valid=None, spacing=None, hd_convention="max", nsd_tau=2.0)``
returns ``METRIC_NAMES`` as floats, never NaN (explicit empty-mask rules); ``empty_case`` says which rule
applied. Per split: ``auc_roc`` / ``auc_pr`` over all valid pixels. Over images: ``summarize`` (mean,
std, median, bootstrap CI) and ``paired_wilcoxon``. Over runs (m[L, S, n], the study's spec):
``imbaseg.metrics.stats`` (``bootstrap_draws``, ``analyse``, ``holm``, ``effect_size_r``).

Imports no other imbaseg package except ``imbaseg.errors``.
"""

from imbaseg.metrics.overlap import confusion_counts, overlap_metrics
from imbaseg.metrics.per_image import EMPTY_CASES, HIGHER_IS_BETTER, METRIC_NAMES, compute_metrics, empty_case
from imbaseg.metrics.roc import auc_pr, auc_roc
from imbaseg.metrics.stats import analyse, bootstrap_draws, higher_is_better, holm
from imbaseg.metrics.summary import SUMMARY_KEYS, bootstrap_means, paired_wilcoxon, summarize
from imbaseg.metrics.surface import HD_CONVENTIONS, surface, surface_distances, surface_metrics
from imbaseg.metrics.topology import cldice, skeleton

__all__ = [
    "EMPTY_CASES",
    "HD_CONVENTIONS",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "SUMMARY_KEYS",
    "auc_pr",
    "auc_roc",
    "analyse",
    "bootstrap_draws",
    "bootstrap_means",
    "cldice",
    "compute_metrics",
    "confusion_counts",
    "empty_case",
    "higher_is_better",
    "holm",
    "overlap_metrics",
    "paired_wilcoxon",
    "skeleton",
    "summarize",
    "surface",
    "surface_distances",
    "surface_metrics",
]
