"""The study's class-balanced BCE losses: ``dynamit-batch``, ``dynamit-image``, ``boundary-gaussian``.

All are ``(1/|O|) sum(w * l)`` over the ``|O| = B*H*W`` pixels, ``l`` the BCE from logits; they differ
in the weight map ``w``, built from exact class counts (ratios in float64). The forward and backward
go through one fused function (``_functional.pixel_sums``), which keeps them near the cost of BCE.

``sync_stats`` (batch statistics only): when True and ``torch.distributed`` is initialised, the
counts ``P`` and ``N`` are all-reduced (SUM) over ranks, so every rank weights its pixels with the
statistics of the global batch. The mean stays over the rank's own pixels: averaging the per-rank
losses and gradients (what DDP does) then gives the single-process loss and gradient of the
concatenated batch, when the ranks hold equal batch sizes. Default False: per-rank statistics.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from imbaseg.losses import _functional
from imbaseg.losses._base import BinaryLoss
from imbaseg.losses._functional import (
    DIMS_IMAGE,
    ClampedWeight,
    check,
    count_pos,
    extra_map,
    mask_of,
    sync_sum,
    weighted_bce_mean,
)
from imbaseg.losses.distance import edt, gauss_key, gauss_reach, gaussian_of_distance

GAUSS_EPS = 1e-6  # the spec's eps of boundary-gaussian


def batch_counts(y: Tensor, sync: bool = False) -> tuple[Tensor, Tensor]:
    """Exact ``(P, N)`` of a 0/1 float batch as scalars; all-reduced (in float64) over ranks when ``sync``."""
    return batch_counts_from(count_pos(y), y.numel(), sync)


def batch_counts_from(pos: Tensor, numel: int, sync: bool = False) -> tuple[Tensor, Tensor]:
    """``(P, N)`` from the batch's foreground count ``pos`` (a scalar tensor) and its pixel count."""
    total = torch.full((), numel, dtype=pos.dtype, device=pos.device)  # a fill, not a host copy
    if sync:
        pos, total = sync_sum(torch.stack([pos, total]).double())
    return pos, total - pos


def dynamit_weights(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """``w+ = min(1, N/P)`` (0 if P = 0) and ``w- = min(1, P/N)`` (0 if N = 0), in float64, any shape."""
    p, n = pos.double(), neg.double()
    w_pos = torch.where(pos > 0, (n / p.clamp_min(1)).clamp_max(1.0), torch.zeros_like(p))
    w_neg = torch.where(neg > 0, (p / n.clamp_min(1)).clamp_max(1.0), torch.zeros_like(n))
    return w_pos, w_neg


class DynamitBatchLoss(BinaryLoss):
    """Class-balanced BCE with batch-wise weights: the minority class keeps weight 1.

    ``L = (1/|O|) sum((y w+ + (1-y) w-) l)``. A batch without foreground has ``w- = 0`` (and ``w+ = 0``),
    so its loss and gradient are 0: that is the published formula and it is kept. Likewise for a
    batch without background.
    """

    name = "dynamit-batch"
    formula = "(1/|O|) sum((y w+ + (1-y) w-) l), w+ = min(1, N/P), w- = min(1, P/N), batch counts"
    reference = "this study (class-balanced BCE, batch-wise)"
    summary = "BCE with the majority class scaled down by the batch class ratio."

    def __init__(self, sync_stats: bool = False):  # False: per-rank counts (see module docstring)
        super().__init__()
        self.sync_stats = sync_stats

    def compute(self, z, y, yb, extras):
        w_pos, w_neg = dynamit_weights(*batch_counts(y, self.sync_stats))
        w = torch.lerp(w_neg.to(z.dtype).expand_as(y), w_pos.to(z.dtype), y)  # exact: w+ on y=1, w- on y=0
        return weighted_bce_mean(z, y, w)


class DynamitImageLoss(BinaryLoss):
    """The dynamit weights computed per image; the per-image means are averaged over the images.

    An image without foreground (or without background) contributes 0.
    """

    name = "dynamit-image"
    formula = "mean over images of (1/|O_i|) sum((y w+_i + (1-y) w-_i) l), per-image counts"
    reference = "this study (class-balanced BCE, image-wise)"
    summary = "dynamit-batch with the class ratio of each image."

    def compute(self, z, y, yb, extras):
        pos = count_pos(y, DIMS_IMAGE)
        w_pos, w_neg = dynamit_weights(pos, y[0].numel() - pos)
        view = (-1, 1, 1, 1)
        w = torch.lerp(w_neg.to(z.dtype).view(view).expand_as(y), w_pos.to(z.dtype).view(view), y)
        return weighted_bce_mean(z, y, w)  # equal-size images: mean of image means = mean over pixels


def gaussian_weight_terms(y: Tensor, yb: Tensor | None, dist_fg: Tensor | None, sigma: float,
                          eps: float = GAUSS_EPS, sync: bool = False, gauss: Tensor | None = None,
                          pos: Tensor | None = None) -> ClampedWeight:
    """The boundary-gaussian weight map of a 0/1 batch ``y`` ``(B,1,H,W)`` as its terms (``full(y)``
    makes the map): ``w+`` on y=1, ``w-(x)`` on y=0.

    ``w+ = min(1, (N+eps)/(P+eps))``, ``b = (P+eps)/(N+eps)``, ``w-(x) = min(1, b + g(x))`` with
    ``g = exp(-d^2/(2 sigma^2))`` (``distance.gaussian_of_distance``), ``d`` the distance to the nearest
    foreground pixel of the same image, ``g = 0`` for images without foreground. The target-only term
    comes precomputed (``gauss``, the loader's ``gauss(sigma=S)`` map), or from ``dist_fg``, or is
    computed here (``distance.edt`` of ``yb``, made from ``y`` if None). ``pos``: the batch's P when known
    (summed precomputed counts), else counted here; ``sync`` all-reduces P and N over ranks.
    """
    dtype = y.dtype
    pos, neg = batch_counts(y, sync) if pos is None else batch_counts_from(pos.double(), y.numel(), sync)
    p, n = pos.double(), neg.double()
    w_pos = ((n + eps) / (p + eps)).clamp_max(1.0).to(dtype)
    base = ((p + eps) / (n + eps)).to(dtype)
    if gauss is None:
        if dist_fg is None:  # beyond reach every d gives the same weight, so only nearer d need be exact
            dist_fg = edt(mask_of(y, yb), max_distance=gauss_reach(sigma))
        gauss = gaussian_of_distance(dist_fg.to(dtype), sigma)
    # On foreground g = 1 (d = 0), so min(1, b + 1) = 1 = w+ whenever P <= N: the clamped map is already
    # exact there. Knowing that needs P's value: free on a CPU, a host sync on a GPU, so there the
    # foreground is always overwritten with w+.
    exact_fg = _functional.on_host(y) and bool(pos <= neg)
    return ClampedWeight(gauss.to(dtype), base, w_pos, fix_fg=not exact_fg)


def gaussian_weight(y: Tensor, yb: Tensor | None, dist_fg: Tensor | None, sigma: float,
                    eps: float = GAUSS_EPS, sync: bool = False) -> Tensor:
    """The whole boundary-gaussian weight map ``(B,1,H,W)`` of ``gaussian_weight_terms``."""
    return gaussian_weight_terms(y, yb, dist_fg, sigma, eps, sync).full(y)


def boundary_gaussian_weight_map(target, sigma: float = 2.0, eps: float = GAUSS_EPS, dist_fg=None, *,
                                 sync_stats: bool = False) -> Tensor:
    """The full per-pixel weight of ``boundary-gaussian``: ``w+`` on foreground, ``w-(x)`` on background.

    target: a batch ``(B,1,H,W)`` (tensor) or ONE mask ``(H,W)`` (numpy array or tensor, treated as a
    batch of one); bool, int or 0/1 float. dist_fg: optional precomputed distance map of the same
    shape (as ``distance_maps(mask, ["dist_fg"])`` gives). Returns float32 on the target's device, in
    the target's layout: ``(B,1,H,W)``, or ``(H,W)`` for an ``(H,W)`` input. Batch statistics
    ``P, N`` are those of the whole batch, exactly as the loss uses them (the loss calls this code).
    """
    check(sigma > 0, "boundary-gaussian", f"sigma must be > 0, got {sigma}")
    target = torch.as_tensor(np.asarray(target)) if not isinstance(target, Tensor) else target
    single = target.dim() == 2
    if single:
        target = target[None, None]
    if target.dim() != 4 or target.shape[1] != 1:
        raise ValueError(f"target must be (H, W) or (B, 1, H, W), got {tuple(target.shape)}")
    yb = target.bool()
    if dist_fg is not None:
        dist_fg = torch.as_tensor(np.asarray(dist_fg)) if not isinstance(dist_fg, Tensor) else dist_fg
        dist_fg = dist_fg.reshape(yb.shape).to(yb.device)
    w = gaussian_weight(yb.float(), yb, dist_fg, sigma, eps, sync_stats)
    return w[0, 0] if single else w


class BoundaryGaussianLoss(BinaryLoss):
    """BCE whose background weight rises to 1 near the object (Gaussian of the distance) and decays to ``b``.

    ``L = (1/|O|) sum(y w+ softplus(-z) + (1-y) w-(x) softplus(z))`` with the weight map of
    ``boundary_gaussian_weight_map``. Extras (B,1,H,W), from ``distance_maps``: ``gauss(sigma=S)`` for
    this sigma (what ``distance_inputs`` asks the loader for: the step is then a weighted BCE), or
    ``dist_fg``; computed in forward when absent. A batch without foreground has ``w- = min(1, b)``
    with ``b = eps/(N+eps)``: the loss is then tiny but not 0.
    """

    name = "boundary-gaussian"
    formula = ("(1/|O|) sum(y w+ l + (1-y) min(1, b + exp(-d^2/2sigma^2)) l), "
               "w+ = min(1,(N+e)/(P+e)), b = (P+e)/(N+e)")
    reference = "this study"
    summary = "Class-balanced BCE that keeps background pixels near the object at full weight."
    distance_inputs = ("dist_fg",)

    def __init__(self, sigma: float = 2.0, sync_stats: bool = False):  # sigma in pixels: a thin halo
        super().__init__()
        check(sigma > 0, self.name, f"sigma must be > 0, got {sigma}")
        self.sigma, self.sync_stats = sigma, sync_stats
        self.distance_inputs = (gauss_key(sigma),)

    def compute(self, z, y, yb, extras):
        w = gaussian_weight_terms(y, yb, extra_map(extras, "dist_fg", z), self.sigma, GAUSS_EPS,
                                  self.sync_stats, gauss=extra_map(extras, gauss_key(self.sigma), z))
        return weighted_bce_mean(z, y, w)
