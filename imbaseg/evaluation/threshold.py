"""The probability threshold: parsing ``--threshold`` and the Dice-optimal search on the val split.

``threshold_counts`` turns one image's probabilities into confusion counts at every grid value (one sort,
no re-thresholding); ``best_threshold`` picks the value with the highest mean per-image Dice.
"""

from __future__ import annotations

import numpy as np

from imbaseg.errors import UserError
from imbaseg.metrics.overlap import overlap_from_counts

THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95: the auto-threshold search


def parse_threshold(value) -> float | str:
    """The string 'auto' or a float in (0, 1); UserError otherwise."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise UserError(f"bad --threshold '{value}': give a number between 0 and 1, or auto") from None
    if not 0.0 < t < 1.0:
        raise UserError(f"bad --threshold {t}: it must lie strictly between 0 and 1 (or be auto)")
    return t


def threshold_counts(probs: np.ndarray, mask: np.ndarray, valid, grid=THRESHOLD_GRID) -> np.ndarray:
    """(len(grid), 4) confusion counts (TP, FP, FN, TN) of ``probs >= t`` for each t, inside ``valid``."""
    p = probs if valid is None else probs[valid]
    y = mask if valid is None else mask[valid]
    pos, neg = np.sort(p[y].ravel()), np.sort(p[~y].ravel())
    t = np.asarray(grid, dtype=p.dtype)
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    return np.stack([tp, fp, pos.size - tp, neg.size - fp], axis=1).astype(np.int64)


def best_threshold(counts: list[np.ndarray], grid=THRESHOLD_GRID) -> tuple[float, list[float]]:
    """The grid value with the highest mean per-image Dice (ties: the one nearest 0.5), and the Dice curve.

    Mean per-image Dice (empty-mask rules included) is what the summary reports, so it is what we optimise.
    """
    curve = [
        float(np.mean([overlap_from_counts(*map(int, c[k]))["dice"] for c in counts]))
        for k in range(len(grid))
    ]
    best = max(range(len(grid)), key=lambda k: (round(curve[k], 12), -abs(grid[k] - 0.5)))
    return float(grid[best]), curve


def auto_threshold(predictor, data, progress=None) -> tuple[float, dict]:
    """Search THRESHOLD_GRID on ``data`` (a ``SplitData``, normally val). Returns (threshold, search info).

    progress: called as ``progress(done, total)`` after each image.
    """
    counts = []
    for k, item_id in enumerate(data.ids):
        image, mask, fov = data.item(item_id)
        counts.append(threshold_counts(predictor.probs(image), mask, fov))
        if progress:
            progress(k + 1, len(data.ids))
    thr, curve = best_threshold(counts)
    info = {
        "split": data.split,
        "criterion": "mean per-image dice",
        "grid": list(THRESHOLD_GRID),
        "dice": [round(v, 6) for v in curve],
        "best_dice": round(max(curve), 6),
    }
    return thr, info
