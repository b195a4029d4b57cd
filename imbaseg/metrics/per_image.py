"""The per-image metric set: ``compute_metrics`` and the empty-mask case of an image."""

from __future__ import annotations

import numpy as np

from imbaseg.metrics._masks import masks, to_numpy
from imbaseg.metrics.calibration import CALIBRATION_NAMES, CalibrationCounts, calibration_counts
from imbaseg.metrics.lesion import (
    LESION_NAMES,
    LesionMatch,
    check_lesion_options,
    label_components,
    lesion_scores,
    match_lesions,
)
from imbaseg.metrics.overlap import OVERLAP_NAMES, counts_of, overlap_from_counts
from imbaseg.metrics.surface import SURFACE_NAMES, check_surface_options, surface_metrics
from imbaseg.metrics.topology import cldice

MASK_METRIC_NAMES = (*OVERLAP_NAMES, *SURFACE_NAMES, "cldice", *LESION_NAMES)  # from the two masks
METRIC_NAMES = (*MASK_METRIC_NAMES, *CALIBRATION_NAMES)  # calibration needs the probabilities
# Per-image values that may be undefined (NaN): lesion recall of an image with no target but a prediction.
MAY_BE_UNDEFINED = ("lesion_recall",)
# Per-image counts that a comparison can test too (lesion_targets and lesion_predicted have no direction).
COMPARABLE_COUNTS = ("lesion_detected", "lesion_missed", "lesion_fp")
COMPARABLE_NAMES = (*METRIC_NAMES, *COMPARABLE_COUNTS)
LOWER_IS_BETTER = ("hd95", "assd", "ece", "brier", "lesion_missed", "lesion_fp")
HIGHER_IS_BETTER = {name: name not in LOWER_IS_BETTER for name in COMPARABLE_NAMES}
EMPTY_CASES = ("none", "both_empty", "gt_empty", "pred_empty")


def _case(p: np.ndarray, t: np.ndarray) -> str:
    has_p, has_t = bool(p.any()), bool(t.any())
    if has_p and has_t:
        return "none"
    if not (has_p or has_t):
        return "both_empty"
    return "gt_empty" if has_p else "pred_empty"


def empty_case(pred, target, valid=None) -> str:
    """Which empty-mask rule applies: "none", "both_empty", "gt_empty" or "pred_empty" (inside ``valid``)."""
    p, t, _ = masks(pred, target, valid)
    return _case(p, t)


def compute_metrics(
    pred,
    target,
    valid=None,
    spacing=None,
    hd_convention: str = "max",
    nsd_tau: float = 2.0,
    probs=None,
    lesion_overlap: float = 0.0,
    min_component: int = 0,
) -> dict[str, float]:
    """The per-image metric set of one image.

    Returns ``MASK_METRIC_NAMES`` as floats and the lesion counts ``LESION_COUNT_NAMES`` as ints, plus
    ``ece`` and ``brier`` when ``probs`` is given (so all of ``METRIC_NAMES``). Never NaN, except
    ``lesion_recall`` of an image with no target component and some predicted one (undefined, see
    ``imbaseg.metrics.lesion``).

    pred, target: (H, W) masks, numpy arrays or torch tensors of any dtype; nonzero is foreground.
    valid: optional (H, W) field-of-view mask. Confusion counts are taken inside it, and both masks are
        cut to it before the surfaces, skeletons and components are extracted (its edge acts like the
        image border). Calibration uses the probabilities of the pixels inside it.
    spacing: (dy, dx) pixel size, or None for pixels; distances and ``nsd_tau`` are in its units.
    hd_convention: "max" (MONAI, default) or "union" (medpy); see ``imbaseg.metrics.surface``.
    nsd_tau: NSD tolerance (default 2 px, the study's choice for thin vessels and lesion borders).
    probs: optional (H, W) foreground probabilities in [0, 1] (``imbaseg.metrics.calibration``).
    lesion_overlap, min_component: the lesion matching rule (``imbaseg.metrics.lesion``): the share of a
        target component one predicted component must cover (0 = any pixel), and the smallest component
        counted, in pixels.
    Empty masks follow the spec's table; see ``empty_case`` for which rule an image falls under.
    """
    options = (spacing, hd_convention, nsd_tau, probs, lesion_overlap, min_component)
    return measure(pred, target, valid, *options)[0]


def measure(
    pred,
    target,
    valid=None,
    spacing=None,
    hd_convention="max",
    nsd_tau=2.0,
    probs=None,
    lesion_overlap=0.0,
    min_component=0,
) -> tuple[dict, LesionMatch, CalibrationCounts | None]:
    """``compute_metrics``' dict, the ``LesionMatch`` (every target component's area and whether it was
    detected) and the ``CalibrationCounts`` (None without ``probs``): what a split's totals need."""
    check_surface_options(hd_convention, nsd_tau)
    overlap, min_px = check_lesion_options(lesion_overlap, min_component)
    p, t, v = masks(pred, target, valid)
    out = overlap_from_counts(*counts_of(p, t, v))
    out.update(surface_metrics(p, t, spacing=spacing, hd_convention=hd_convention, nsd_tau=nsd_tau))
    labelled = (label_components(p), label_components(t))  # once, for clDice's skeletons and the lesions
    out["cldice"] = cldice(p, t, components=labelled)
    match = match_lesions(p, t, overlap, min_px, labelled)
    out.update(lesion_scores(match.targets, match.detected, match.predicted, match.fp))
    names, calib = MASK_METRIC_NAMES, None
    if probs is not None:
        calib = calibration_counts(to_numpy(probs, "probs"), t, v)
        out.update(ece=calib.ece(), brier=calib.brier())
        names = METRIC_NAMES
    values = {**{name: float(out[name]) for name in names}, **match.counts()}
    return values, match, calib
