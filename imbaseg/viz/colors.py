"""Error-map colours of the qualitative figures: TP green, FP red, FN magenta, TN black.

``error_map`` is plain numpy so that the exact colours are testable without drawing anything.
"""

from __future__ import annotations

import numpy as np

TP = (0, 255, 0)
FP = (255, 0, 0)
FN = (255, 0, 255)
TN = (0, 0, 0)
OUTSIDE = (64, 64, 64)  # outside the field of view (DRIVE): not scored, so not black like a TN
COLORS = {"TP": TP, "FP": FP, "FN": FN, "TN": TN}
NAMES = {"TP": "true positive", "FP": "false positive", "FN": "false negative", "TN": "true negative"}


def _bool_mask(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {a.shape}")
    return a > 127 if a.dtype == np.uint8 and a.max(initial=0) > 1 else a.astype(bool)


def error_map(pred, target, valid=None) -> np.ndarray:
    """(H, W) masks -> (H, W, 3) uint8 RGB: TP green, FP red, FN magenta, TN black.

    pred/target: bool, 0/1 or 0/255. valid: optional (H, W) field of view; pixels outside it get
    ``OUTSIDE`` grey whatever they hold. Empty masks are fine (all black).
    """
    p, t = _bool_mask(pred, "pred"), _bool_mask(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ in size")
    out = np.zeros(p.shape + (3,), dtype=np.uint8)
    out[p & t] = TP
    out[p & ~t] = FP
    out[~p & t] = FN
    if valid is not None:
        v = _bool_mask(valid, "valid")
        if v.shape != p.shape:
            raise ValueError(f"valid {v.shape} and pred {p.shape} differ in size")
        out[~v] = OUTSIDE
    return out


def legend_handles(with_outside: bool = False):
    """matplotlib patches for the legend (a grey edge, so the black TN swatch stays visible)."""
    from matplotlib.patches import Patch

    items = [(COLORS[k], f"{k} ({NAMES[k]})") for k in ("TP", "FP", "FN", "TN")]
    if with_outside:
        items.append((OUTSIDE, "outside field of view"))
    return [
        Patch(facecolor=np.array(c) / 255.0, edgecolor="0.5", linewidth=0.6, label=text) for c, text in items
    ]
