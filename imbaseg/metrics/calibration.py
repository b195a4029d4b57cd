"""Calibration of foreground probabilities: ECE, the Brier score and the reliability-diagram counts.

Pixels are those inside ``valid`` (the FOV) when given. With N pixels, probability p and label y in {0, 1}:

    ECE   = sum_b n_b / N * |mean(y)_b - mean(p)_b|    over 15 equal-width bins of p
    Brier = mean((p - y)^2)

Bin b (0..14) holds b/15 <= p < (b+1)/15; p = 1 falls in the last bin. An empty bin adds nothing. Both
numbers are always defined (the valid region is never empty) and lie in [0, 1]; lower is better.

``CalibrationCounts`` keeps per bin n, sum(p) and sum(y), and the summed squared error: adding the
counts of several images gives the pooled numbers of a split exactly, without keeping its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imbaseg.errors import UserError
from imbaseg.metrics._masks import to_mask, to_numpy

N_BINS = 15  # the usual ECE binning (Guo et al. 2017), equal width over [0, 1]
CALIBRATION_NAMES = ("ece", "brier")


@dataclass
class CalibrationCounts:
    """Per-bin pixel counts ``n``, probability sums ``sum_p`` and label sums ``sum_y`` (n_bins,), and the
    sum of (p - y)^2 over the same pixels."""

    n: np.ndarray
    sum_p: np.ndarray
    sum_y: np.ndarray
    sq_err: float

    @classmethod
    def zeros(cls, n_bins: int = N_BINS) -> CalibrationCounts:
        return cls(np.zeros(n_bins, np.int64), np.zeros(n_bins), np.zeros(n_bins), 0.0)

    def __add__(self, other: CalibrationCounts) -> CalibrationCounts:
        return CalibrationCounts(
            self.n + other.n, self.sum_p + other.sum_p, self.sum_y + other.sum_y, self.sq_err + other.sq_err
        )

    @property
    def pixels(self) -> int:
        return int(self.n.sum())

    def ece(self) -> float:
        """sum_b |sum(y)_b - sum(p)_b| / N, which is sum_b n_b/N |mean(y)_b - mean(p)_b|."""
        return float(np.abs(self.sum_y - self.sum_p).sum() / max(1, self.pixels))

    def brier(self) -> float:
        return float(self.sq_err / max(1, self.pixels))

    def reliability(self) -> list[dict]:
        """Per bin {bin, low, high, n, mean_p, freq}: the reliability diagram's points (None when n = 0)."""
        k = self.n.size
        return [
            {
                "bin": b,
                "low": b / k,
                "high": (b + 1) / k,
                "n": int(self.n[b]),
                "mean_p": float(self.sum_p[b] / self.n[b]) if self.n[b] else None,
                "freq": float(self.sum_y[b] / self.n[b]) if self.n[b] else None,
            }
            for b in range(k)
        ]


def _pixels(probs, target, valid) -> tuple[np.ndarray, np.ndarray]:
    """(p float, y bool) of the valid pixels; UserError for shapes, NaN or values outside [0, 1]."""
    p = to_numpy(probs, "probs")
    t = to_mask(target, "target")
    if p.shape != t.shape:
        raise UserError(f"probs must have the mask shape {t.shape}, got {p.shape}.")
    if p.dtype.kind not in "fiu":
        raise UserError(f"probs must be numbers, got dtype {p.dtype}.")
    if valid is not None:
        v = to_mask(valid, "valid")
        if v.shape != t.shape:
            raise UserError(f"valid must have the mask shape {t.shape}, got {v.shape}.")
        if not v.any():
            raise UserError("valid (the field-of-view mask) has no pixels; pass valid=None instead")
        p, t = p[v], t[v]
    p = p.ravel()
    lo, hi = (float(p.min()), float(p.max())) if p.size else (0.0, 0.0)
    if not (0.0 <= lo and hi <= 1.0):  # NaN fails both comparisons
        raise UserError(f"probs must lie in [0, 1] without NaN, got values from {lo} to {hi}.")
    return p, t.ravel()


def _binned(p: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin n, sum(p), sum(y) of float64 probabilities ``p`` and bool labels ``y`` (1-D)."""
    b = np.minimum((p * n_bins).astype(np.intp), n_bins - 1)
    n = np.bincount(b, minlength=n_bins)
    return n, np.bincount(b, weights=p, minlength=n_bins), np.bincount(b[y], minlength=n_bins).astype(float)


def calibration_counts(probs, target, valid=None, n_bins: int = N_BINS) -> CalibrationCounts:
    """The ``CalibrationCounts`` of one image: probs (H, W) in [0, 1], target (H, W) mask, valid optional.

    Segmentation is imbalanced: most pixels have a probability near 0, in the first bin. Only the pixels
    that may lie above it are binned one by one (in float64); the first bin gets the rest from the image
    totals, which gives the same counts and sums.
    """
    p, y = _pixels(probs, target, valid)
    above = p >= 0.9 / n_bins  # a margin below the first edge: float32 rounding cannot move a pixel past it
    ph, yh = p[above].astype(np.float64), y[above]
    n, sum_p, sum_y = _binned(ph, yh, n_bins)
    total_p, total_y = float(p.sum(dtype=np.float64)), int(np.count_nonzero(y))
    n[0] += p.size - ph.size
    sum_p[0] += total_p - float(ph.sum())
    sum_y[0] += total_y - int(np.count_nonzero(yh))
    # sum (p - y)^2 = sum p^2 - 2 sum_{y} p + #y, without a temporary per pixel for (p - y)
    squares = float(np.einsum("i,i->", p, p, dtype=np.float64))
    sq = squares - 2 * float(p[y].sum(dtype=np.float64)) + total_y
    return CalibrationCounts(n.astype(np.int64), sum_p, sum_y, max(0.0, sq))


def calibration_metrics(probs, target, valid=None) -> dict[str, float]:
    """{"ece": ..., "brier": ...} of one image (15 bins, inside ``valid``)."""
    c = calibration_counts(probs, target, valid)
    return {"ece": c.ece(), "brier": c.brier()}


def ece(probs, target, valid=None, n_bins: int = N_BINS) -> float:
    """Expected calibration error over equal-width bins (module doc)."""
    return calibration_counts(probs, target, valid, n_bins).ece()


def brier(probs, target, valid=None) -> float:
    """Mean squared difference between the probability and the label over the valid pixels."""
    return calibration_counts(probs, target, valid).brier()
