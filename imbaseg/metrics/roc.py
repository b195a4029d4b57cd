"""Split-level ranking metrics over all valid pixels: ``auc_roc`` and ``auc_pr`` (the DRIVE literature's AUC).

Both are exact, from sorted scores (no binning): O(n log n) for n pixels, a few seconds for tens of
millions. Tied scores are one threshold, as in scikit-learn. When the split has no positive (or, for
auc_roc, no negative) pixel the value is undefined: the functions return NaN and warn.
"""

from __future__ import annotations

import warnings

import numpy as np

from imbaseg.errors import UserError
from imbaseg.metrics._masks import to_numpy


def _flat(x, name: str) -> list[np.ndarray]:
    items = x if isinstance(x, (list, tuple)) else [x]
    return [to_numpy(a, name).ravel() for a in items]


def pixels(probs, targets, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of all valid pixels, 1-D. Each argument is one array or a list of per-image arrays
    (any shapes, matching pairwise); labels and valid are nonzero = true."""
    ps, ts = _flat(probs, "probs"), _flat(targets, "targets")
    vs = _flat(valid, "valid") if valid is not None else [None] * len(ps)
    if not (len(ps) == len(ts) == len(vs)):
        counts = f"{len(ps)}, {len(ts)}, {len(vs)}"
        raise UserError(f"probs, targets and valid must list as many images, got {counts}.")
    scores, labels = [], []
    for i, (p, t, v) in enumerate(zip(ps, ts, vs, strict=True)):
        if p.shape != t.shape or (v is not None and v.shape != p.shape):
            raise UserError(f"image {i}: probs, targets and valid must have the same number of pixels.")
        keep = slice(None) if v is None else v != 0
        scores.append(p[keep])
        labels.append(t[keep] != 0)
    s, y = np.concatenate(scores), np.concatenate(labels)
    if s.dtype.kind not in "fiub":
        raise UserError(f"probs must be numbers, got dtype {s.dtype}.")
    if s.dtype.kind == "f" and np.isnan(s).any():
        raise UserError("probs contain NaN; check the model output before computing AUCs.")
    return s, y


def _split_sorted(probs, targets, valid) -> tuple[np.ndarray, np.ndarray]:
    s, y = pixels(probs, targets, valid)
    if s.dtype == np.float16:
        s = s.astype(np.float32)  # numpy sorts float16 slowly; the conversion is exact
    return np.sort(s[y]), np.sort(s[~y])


def _undefined(what: str) -> float:
    warnings.warn(f"{what} is undefined without positive and negative pixels; returning NaN.", stacklevel=3)
    return float("nan")


def auc_roc(probs, targets, valid=None) -> float:
    """Area under the ROC curve over all valid pixels (trapezoidal, ties as one threshold).

    Computed as the Mann-Whitney statistic P(s_pos > s_neg) + P(s_pos = s_neg) / 2, which equals the
    trapezoidal area of the empirical ROC curve (scikit-learn's ``roc_auc_score``).
    """
    pos, neg = _split_sorted(probs, targets, valid)
    if pos.size == 0 or neg.size == 0:
        return _undefined("auc_roc")
    below = np.searchsorted(neg, pos, side="left")  # negatives scoring lower than each positive
    not_above = np.searchsorted(neg, pos, side="right")
    wins = below.sum(dtype=np.float64) + 0.5 * (not_above - below).sum(dtype=np.float64)
    return float(wins / (pos.size * float(neg.size)))


def auc_pr(probs, targets, valid=None) -> float:
    """Average precision over all valid pixels, as scikit-learn's ``average_precision_score`` defines it.

    AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds (predict positive when score >= t),
    a step-wise sum without interpolation (not the trapezoidal area under the PR curve).
    """
    pos, neg = _split_sorted(probs, targets, valid)
    if pos.size == 0:
        return _undefined("auc_pr")
    first = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])  # first index of each distinct positive score
    counts = np.diff(np.r_[first, pos.size])
    tp = pos.size - first  # positives scoring >= this threshold
    fp = neg.size - np.searchsorted(neg, pos[first], side="left")
    return float(np.sum(counts / pos.size * (tp / (tp + fp))))
