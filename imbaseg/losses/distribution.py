"""Pixel-wise distribution losses: ``bce`` and ``focal``.

Both are means over all ``B*H*W`` pixels of a per-pixel BCE ``l(z, y) = softplus(z) - y*z`` computed
from logits; an empty or full target is an ordinary input for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from imbaseg.losses._base import BinaryLoss
from imbaseg.losses._functional import check, signed, weighted_bce_mean


class BCELoss(BinaryLoss):
    """``mean(l)``; ``pos_weight`` multiplies the foreground terms (as ``BCEWithLogitsLoss``).

    logits/target ``(B,1,H,W)``; returns the mean over all pixels.
    """

    name = "bce"
    formula = "mean(l), l = softplus(z) - y*z; pos_weight scales the y=1 terms"
    reference = "binary cross-entropy"
    summary = "Plain binary cross-entropy from logits, the baseline of the study."

    def __init__(self, pos_weight: float | None = None):  # None: no re-weighting, as in the study
        super().__init__()
        check(pos_weight is None or pos_weight > 0, self.name, f"pos_weight must be > 0, got {pos_weight}")
        self.pos_weight = pos_weight

    def compute(self, z, y, yb, extras):
        w = None
        if self.pos_weight is not None:
            w = torch.mul(y, float(self.pos_weight) - 1.0).add_(1.0)  # pos_weight on y=1, 1 on y=0
        return weighted_bce_mean(z, y, w)


class FocalLoss(BinaryLoss):
    """Lin et al. 2017: ``mean(a_t (1-p_t)^gamma l)``, ``a_t = alpha`` on foreground, else ``1-alpha``.

    ``1-p_t`` is ``sigmoid(s)`` with ``s = (1-2y) z``; for ``gamma < 1`` the factor is computed as
    ``exp(-gamma * softplus(-s))`` so that its gradient stays finite where ``1-p_t`` underflows to 0.
    ``alpha=None`` drops the class weight. Equals MONAI ``FocalLoss(alpha, gamma, reduction='mean')``.
    """

    name = "focal"
    formula = "mean(-a_t (1-p_t)^gamma log p_t), a_t = alpha if y=1 else 1-alpha"
    reference = "Lin et al., ICCV 2017"
    summary = "Down-weights easy pixels by (1-p_t)^gamma; alpha balances the classes."

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0):  # the RetinaNet defaults
        super().__init__()
        check(alpha is None or 0 <= alpha <= 1, self.name, f"alpha must be in [0, 1] or none, got {alpha}")
        check(gamma >= 0.0, self.name, f"gamma must be >= 0, got {gamma}")
        self.alpha, self.gamma = alpha, gamma

    def compute(self, z, y, yb, extras):
        s = signed(z, y)
        loss = F.softplus(s)
        if self.gamma >= 1.0:
            loss = loss * torch.sigmoid(s).pow(self.gamma)
        elif self.gamma > 0.0:
            loss = loss * torch.exp(-self.gamma * F.softplus(-s))
        if self.alpha is not None:
            loss = loss * (y * (2.0 * self.alpha - 1.0) + (1.0 - self.alpha))  # alpha on y=1, 1-alpha on y=0
        return loss.mean()
