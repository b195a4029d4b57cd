"""Distance-based losses: ``boundary`` (Kervadec et al. 2019) and ``hausdorff-dt`` (Karimi & Salcudean 2019).

Distance maps come from ``distance`` (scipy on CPU, exact torch EDT on CUDA) or are handed in
precomputed by the data loader as extras (``sdf``; ``dist_fg`` and ``dist_bg``). hausdorff-dt also
needs the distance map of the thresholded prediction, which is computed in every forward.
"""

from __future__ import annotations

import torch

from imbaseg.losses._base import BinaryLoss
from imbaseg.losses._functional import check, error_prob, extra_map, mask_of
from imbaseg.losses.distance import boundary_distance, edt, target_maps


class BoundaryLoss(BinaryLoss):
    """``mean(p * phi(y))`` with Kervadec's signed distance ``phi`` (negative inside, 0 on the inner edge).

    ``phi`` is 0 for an image that is empty or full (no boundary), so such an image adds nothing:
    combine this loss with a region loss (e.g. ``"dice+0.01*boundary"``). Extras: ``sdf``.
    """

    name = "boundary"
    formula = "mean(p * phi), phi = signed distance to the boundary, negative inside"
    reference = "Kervadec et al., MIDL 2019"
    summary = "Boundary (surface) loss; combine it with a region loss."
    distance_inputs = ("sdf",)

    def compute(self, z, y, yb, extras):
        phi = extra_map(extras, "sdf", z)
        if phi is None:
            phi = target_maps(mask_of(y, yb), ["sdf"])["sdf"].to(z.dtype)
        return (torch.sigmoid(z) * phi).mean()


class HausdorffDTLoss(BinaryLoss):
    """``mean((p-y)^2 (d_y^alpha + d_p^alpha))``; ``d`` is the distance to the other class's nearest pixel.

    ``d_y`` from the target (``dist_fg + dist_bg``; extras ``dist_fg`` and ``dist_bg``), ``d_p`` from the
    prediction thresholded at p > 0.5 (no gradient, as in the reference implementation). ``d`` is 0 for
    an empty or full mask.
    """

    name = "hausdorff-dt"
    formula = "mean((p-y)^2 * (d_y^alpha + d_p^alpha)), d = distance transform of the mask boundary"
    reference = "Karimi & Salcudean, IEEE TMI 2019"
    summary = "Distance-transform estimate of the Hausdorff distance."
    distance_inputs = ("dist_fg", "dist_bg")

    def __init__(self, alpha: float = 2.0):  # the paper's alpha
        super().__init__()
        check(alpha > 0, self.name, f"alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def compute(self, z, y, yb, extras):
        d_fg, d_bg = extra_map(extras, "dist_fg", z), extra_map(extras, "dist_bg", z)
        yb = mask_of(y, yb)
        d_fg = edt(yb) if d_fg is None else d_fg
        d_bg = edt(~yb) if d_bg is None else d_bg
        d_y = boundary_distance(yb, d_fg, d_bg).to(z.dtype)
        with torch.no_grad():
            d_p = boundary_distance(z.detach() > 0).to(z.dtype)
        e = error_prob(z, y)
        return (e.square() * (d_y.pow(self.alpha) + d_p.pow(self.alpha))).mean()
