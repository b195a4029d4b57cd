"""Input handling shared by the per-image metrics: masks, spacing, crops.

Masks arrive as numpy arrays or torch tensors of any dtype (nonzero = foreground); everything
below works on 2-D numpy ``bool`` arrays. torch is never imported here: a tensor is recognised by
its ``detach`` method, so the metrics import fast and work without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from imbaseg.errors import UserError


def to_numpy(x, name: str) -> np.ndarray:
    """``x`` (array, tensor, list) as a numpy array; a tensor is detached and moved to the CPU."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise UserError(f"{name} must be an array or a tensor, got {type(x).__name__}.") from err


def to_mask(x, name: str) -> np.ndarray:
    """A 2-D ``bool`` mask (H, W) from an array or tensor; nonzero is foreground."""
    arr = to_numpy(x, name)
    if arr.ndim != 2 or arr.size == 0:
        raise UserError(
            f"{name} must be one image's mask of shape (H, W), got shape {tuple(arr.shape)}; "
            "squeeze the batch and channel dimensions."
        )
    return arr if arr.dtype == np.bool_ else arr != 0


def masks(pred, target, valid=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """pred and target as bool masks of one shape, cut to the valid region when ``valid`` is given.

    Outside ``valid`` both masks are set to background, so the surface and topology metrics see the
    field of view as the image (its edge is an edge of the masks, like the image border).
    """
    p, t = to_mask(pred, "pred"), to_mask(target, "target")
    if p.shape != t.shape:
        raise UserError(f"pred and target must have the same shape, got {p.shape} and {t.shape}.")
    if valid is None:
        return p, t, None
    v = to_mask(valid, "valid")
    if v.shape != p.shape:
        raise UserError(f"valid must have the mask shape {p.shape}, got {v.shape}.")
    if not v.any():
        raise UserError("valid (the field-of-view mask) has no pixels; pass valid=None for the whole image.")
    return p & v, t & v, v


def spacing_pair(spacing) -> tuple[float, float]:
    """(dy, dx) from None (unit pixels), a number (isotropic) or a pair; each finite and > 0."""
    if spacing is None:
        return (1.0, 1.0)
    if isinstance(spacing, (int, float, np.floating, np.integer)):
        spacing = (spacing, spacing)
    if not isinstance(spacing, (Sequence, np.ndarray)) or len(spacing) != 2:
        raise UserError(f"spacing must be None, a number or a pair (dy, dx), got {spacing!r}.")
    dy, dx = (float(s) for s in spacing)
    if not (math.isfinite(dy) and math.isfinite(dx) and dy > 0 and dx > 0):
        raise UserError(f"spacing values must be finite and > 0, got {spacing!r}.")
    return (dy, dx)


def image_diagonal(shape: tuple[int, int], spacing: tuple[float, float]) -> float:
    """sqrt((H dy)^2 + (W dx)^2): the worst-case distance used for one-sided empty masks."""
    return math.hypot(shape[0] * spacing[0], shape[1] * spacing[1])


def bbox(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The tight bounding box of the foreground as slices, or None when the mask is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
