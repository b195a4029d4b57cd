"""The per-image metric set: ``compute_metrics`` and the empty-mask case of an image."""

from __future__ import annotations

import numpy as np

from imbaseg.metrics._masks import masks
from imbaseg.metrics.overlap import OVERLAP_NAMES, counts_of, overlap_from_counts
from imbaseg.metrics.surface import SURFACE_NAMES, check_surface_options, surface_metrics
from imbaseg.metrics.topology import cldice

METRIC_NAMES = (*OVERLAP_NAMES, *SURFACE_NAMES, "cldice")
EMPTY_CASES = ("none", "both_empty", "gt_empty", "pred_empty")
HIGHER_IS_BETTER = {name: name not in ("hd95", "assd") for name in METRIC_NAMES}


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
    pred, target, valid=None, spacing=None, hd_convention: str = "max", nsd_tau: float = 2.0
) -> dict[str, float]:
    """All of ``METRIC_NAMES`` for one image, as floats (never NaN).

    pred, target: (H, W) masks, numpy arrays or torch tensors of any dtype; nonzero is foreground.
    valid: optional (H, W) field-of-view mask. Confusion counts are taken inside it, and both masks are
        cut to it before the surfaces and skeletons are extracted (its edge acts like the image border).
    spacing: (dy, dx) pixel size, or None for pixels; distances and ``nsd_tau`` are in its units.
    hd_convention: "max" (MONAI, default) or "union" (medpy); see ``imbaseg.metrics.surface``.
    nsd_tau: NSD tolerance (default 2 px, the study's choice for thin vessels and lesion borders).
    Empty masks follow the spec's table; see ``empty_case`` for which rule an image falls under.
    """
    check_surface_options(hd_convention, nsd_tau)
    p, t, v = masks(pred, target, valid)
    out = overlap_from_counts(*counts_of(p, t, v))
    out.update(surface_metrics(p, t, spacing=spacing, hd_convention=hd_convention, nsd_tau=nsd_tau))
    out["cldice"] = cldice(p, t)
    return {name: float(out[name]) for name in METRIC_NAMES}
