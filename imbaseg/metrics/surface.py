"""Surface-distance metrics: hd95 (two conventions), assd and nsd (normalized surface Dice).

Surface pixels are the mask pixels with a 4-neighbour outside the mask, and the image border counts
as outside: ``mask & ~binary_erosion(mask, cross, border_value=0)``. MONAI (crop with a zero-padded
margin, then scipy erosion with the cross) and medpy (``connectivity=1``) extract exactly these pixels,
so one surface serves both HD95 conventions. Distances are exact Euclidean nearest-surface-pixel
distances in the spacing's units. A pixel whose nearest other-surface pixel is in its 3x3 window (most
of them, for a usable prediction) is answered by 9 array look-ups; a KD-tree over the surface
coordinates (scaled by the spacing) answers the others exactly. Both are several times faster than a
distance transform of the image (medpy), since surfaces are a small part of the image; see
tests/benchmarks/bench_metrics.py.

Empty masks (spec table): both empty -> hd95 = assd = 0, nsd = 1; exactly one empty -> hd95 = assd =
the image diagonal sqrt((H dy)^2 + (W dx)^2), nsd = 0.
"""

from __future__ import annotations

import math

import numpy as np

from imbaseg.errors import UserError, lookup
from imbaseg.metrics._masks import bbox, image_diagonal, masks, spacing_pair

SURFACE_NAMES = ("hd95", "assd", "nsd")


def surface(mask: np.ndarray) -> np.ndarray:
    """The surface pixels of a bool mask (H, W): foreground with a 4-neighbour outside (border = outside)."""
    p = np.pad(mask, 1)
    interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~interior


def _window_offsets(width: int, spacing) -> list[tuple[int, float]]:
    """(flat offset, distance) of the 3x3 neighbourhood in a row-major array ``width`` wide, nearest first."""
    dy, dx = spacing
    offsets = [(oy * width + ox, math.hypot(oy * dy, ox * dx)) for oy in (-1, 0, 1) for ox in (-1, 0, 1)]
    return sorted(offsets, key=lambda o: o[1])


def _directed(src: np.ndarray, dst: np.ndarray, spacing) -> np.ndarray:
    """Exact distance from each pixel of ``src`` to the nearest pixel of ``dst``, in row-major ``src`` order.

    src, dst: bool surfaces of one shape with an empty 1-pixel frame. Most surface pixels of a
    prediction lie within one pixel of the other surface: the 3x3 window answers those, exactly when its
    best distance is <= min(2 dy, 2 dx), the nearest any pixel outside the window can be. A KD-tree over
    ``dst`` answers the rest.
    """
    width = src.shape[1]
    src_idx, dst_flat = np.flatnonzero(src), dst.ravel()
    dist = np.full(src_idx.size, np.inf)
    for off, d in _window_offsets(width, spacing):
        hit = dst_flat[src_idx + off] & np.isinf(dist)
        dist[hit] = d
    far = dist > min(2 * spacing[0], 2 * spacing[1])
    if far.any():
        from scipy.spatial import cKDTree  # here, not at the top: scipy.spatial takes ~1 s to import

        scale = np.asarray(spacing, dtype=np.float64)
        coords = np.stack(np.divmod(np.flatnonzero(dst_flat), width), axis=1) * scale
        queries = np.stack(np.divmod(src_idx[far], width), axis=1) * scale
        dist[far] = cKDTree(coords, leafsize=32).query(queries, k=1)[0]
    return dist


def surface_distances(pred, target, spacing=None, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """(pred -> target, target -> pred) distances of each surface pixel to the other mask's surface.

    Both masks must be non-empty (inside ``valid``); ``surface_metrics`` applies the empty-mask rules.
    Returns 1-D float64 arrays in row-major surface-pixel order, in the spacing's units.
    """
    p, t, _ = masks(pred, target, valid)
    box = bbox(p | t)
    if box is None or not p.any() or not t.any():
        raise ValueError("surface_distances needs two non-empty masks; use surface_metrics for empty ones.")
    # Cropping to the union box keeps every distance exact; the frame keeps window look-ups in bounds.
    sp, st = np.pad(surface(p[box]), 1), np.pad(surface(t[box]), 1)
    dy_dx = spacing_pair(spacing)
    return _directed(sp, st, dy_dx), _directed(st, sp, dy_dx)


def _hd95_max(d_pt: np.ndarray, d_tp: np.ndarray) -> float:
    return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def _hd95_union(d_pt: np.ndarray, d_tp: np.ndarray) -> float:
    return float(np.percentile(np.concatenate([d_pt, d_tp]), 95))


# "max": MONAI HausdorffDistanceMetric(percentile=95) and DeepMind's surface-distance package.
# "union": medpy.metric.binary.hd95 (95th percentile of both directed sets pooled).
HD_CONVENTIONS = {"max": _hd95_max, "union": _hd95_union}


def hd95(d_pt: np.ndarray, d_tp: np.ndarray, convention: str = "max") -> float:
    """HD95 from the two directed distance sets; percentiles use linear interpolation (numpy's default)."""
    return lookup(convention, HD_CONVENTIONS, "hd convention")(d_pt, d_tp)


def assd(d_pt: np.ndarray, d_tp: np.ndarray) -> float:
    """Average symmetric surface distance: the mean of both directed sets pooled (MONAI, medpy)."""
    return float(np.concatenate([d_pt, d_tp]).mean())


def nsd(d_pt: np.ndarray, d_tp: np.ndarray, tau: float) -> float:
    """Normalized surface Dice (Nikolov et al. 2021): share of surface pixels within ``tau`` of the other."""
    within = np.count_nonzero(d_pt <= tau) + np.count_nonzero(d_tp <= tau)
    return float(within / (d_pt.size + d_tp.size))


def check_surface_options(hd_convention: str, nsd_tau: float) -> None:
    """UserError for an unknown HD convention or a tau that is not a finite number >= 0."""
    lookup(hd_convention, HD_CONVENTIONS, "hd convention")
    if not isinstance(nsd_tau, (int, float, np.integer, np.floating)) or not (
        math.isfinite(nsd_tau) and nsd_tau >= 0
    ):
        raise UserError(f"nsd_tau must be a finite number >= 0 (in spacing units), got {nsd_tau!r}.")


def surface_metrics(
    pred, target, valid=None, spacing=None, hd_convention: str = "max", nsd_tau: float = 2.0
) -> dict[str, float]:
    """hd95, assd and nsd of two (H, W) masks, with the empty-mask rules of the module doc.

    With ``valid``, both masks are cut to it first, so the field-of-view edge acts like the image border.
    """
    check_surface_options(hd_convention, nsd_tau)
    p, t, _ = masks(pred, target, valid)
    dy_dx = spacing_pair(spacing)
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return {"hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    if not (has_p and has_t):
        diag = image_diagonal(p.shape, dy_dx)
        return {"hd95": diag, "assd": diag, "nsd": 0.0}
    d_pt, d_tp = surface_distances(p, t, dy_dx)
    hd = hd95(d_pt, d_tp, hd_convention)
    return {"hd95": hd, "assd": assd(d_pt, d_tp), "nsd": nsd(d_pt, d_tp, nsd_tau)}
