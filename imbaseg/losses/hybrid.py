"""Losses that combine a distribution term and a region term: ``combo``, ``unified-focal``
(asymmetric), ``unified-focal-symmetric`` and the study's ``boundary-dou``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from imbaseg.losses._base import BinaryLoss
from imbaseg.losses._functional import (
    DIMS_BATCH,
    DIMS_IMAGE,
    background_counts,
    check,
    dice_complement,
    extra_counts,
    extra_map,
    pixel_sums,
    pow_exp,
    signed,
    soft_counts,
    tversky_complement,
    weighted_bce_mean,
)
from imbaseg.losses.balanced import GAUSS_EPS, gaussian_weight_terms
from imbaseg.losses.distance import COUNTS_KEY, gauss_key
from imbaseg.losses.region import dou_from_sums


class ComboLoss(BinaryLoss):
    """``alpha * weighted BCE + (1-alpha) * dice`` (dice as a loss, batch-pooled, foreground only).

    Weighted BCE: ``mean(beta y softplus(-z) + (1-beta)(1-y) softplus(z))``.
    """

    name = "combo"
    formula = "alpha*mean(beta*y*softplus(-z) + (1-beta)*(1-y)*softplus(z)) + (1-alpha)*dice"
    reference = "Taghanaki et al., CMIG 2019"
    summary = "Weighted BCE plus Dice."

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-5):
        super().__init__()
        check(0 <= alpha <= 1 and 0 <= beta <= 1, self.name, f"alpha, beta must be in [0, 1]: {alpha} {beta}")
        check(smooth >= 0, self.name, f"smooth must be >= 0, got {smooth}")
        self.alpha, self.beta, self.smooth = alpha, beta, smooth

    def compute(self, z, y, yb, extras):
        w = y * (2.0 * self.beta - 1.0) + (1.0 - self.beta)
        bce = weighted_bce_mean(z, y, w)
        tp, fp, fn, _ = soft_counts(z, y, DIMS_BATCH)
        return self.alpha * bce + (1.0 - self.alpha) * dice_complement(tp, fp, fn, self.smooth)


class UnifiedFocalLoss(BinaryLoss):
    """Asymmetric unified focal loss: ``lambda * L_maF + (1-lambda) * L_maFT`` (Yeung et al. 2022).

    - ``L_maF = mean(delta y l + (1-delta)(1-y) p^gamma l)``: the focal factor suppresses only the background.
    - ``L_maFT = ((1 - mTI_bg) + (1 - mTI_fg)^(1-gamma)) / 2`` with
      ``mTI_c = (TP_c+s)/(TP_c + delta FN_c + (1-delta) FP_c + s)``: only the foreground is enhanced.
    ``batch`` (default True) pools the counts over the batch; False is the reference Keras code's
    per-image mean. ``p^gamma`` is ``exp(-gamma softplus(-z))`` and the power is zero-safe, so the
    gradient is finite at logits of +-50.
    """

    name = "unified-focal"
    formula = "lambda*L_maF + (1-lambda)*L_maFT (focal on background, focal Tversky on foreground)"
    reference = "Yeung et al., CMIG 2022"
    summary = "Asymmetric unified focal loss (the paper's recommended variant)."
    symmetric = False

    def __init__(self, lambda_: float = 0.5, delta: float = 0.6, gamma: float = 0.5, batch: bool = True,
                 smooth: float = 1e-5):  # lambda, delta, gamma: the paper's defaults
        super().__init__()
        check(0 <= lambda_ <= 1, self.name, f"lambda must be in [0, 1], got {lambda_}")
        check(0 <= delta <= 1, self.name, f"delta must be in [0, 1], got {delta}")
        check(0 <= gamma <= 1, self.name, f"gamma must be in [0, 1], got {gamma}")
        check(smooth >= 0, self.name, f"smooth must be >= 0, got {smooth}")
        self.lambda_, self.delta, self.gamma, self.batch, self.smooth = lambda_, delta, gamma, batch, smooth

    def focal_part(self, z, y):
        s = signed(z, y)
        focal = torch.exp(-self.gamma * F.softplus(-s))  # e^gamma, e = |p - y|: p^gamma on y=0
        if not self.symmetric:
            focal = torch.where(y > 0.5, torch.ones_like(focal), focal)
        weight = y * (2.0 * self.delta - 1.0) + (1.0 - self.delta)  # delta on y=1, 1-delta on y=0
        return (weight * focal * F.softplus(s)).mean()

    def tversky_part(self, z, y):
        dims = DIMS_BATCH if self.batch else DIMS_IMAGE
        tp, fp, fn, pos = soft_counts(z, y, dims)
        total = float(y.numel() if self.batch else y[0].numel())
        d, s, a = self.delta, self.smooth, 1.0 - self.gamma
        fg = pow_exp(tversky_complement(tp, fp, fn, 1.0 - d, d, s), a)
        bg = tversky_complement(*background_counts(tp, fp, fn, pos, total), 1.0 - d, d, s)
        if self.symmetric:
            bg = pow_exp(bg, a)
        return (0.5 * (fg + bg)).mean()

    def compute(self, z, y, yb, extras):
        return self.lambda_ * self.focal_part(z, y) + (1.0 - self.lambda_) * self.tversky_part(z, y)


class UnifiedFocalSymmetricLoss(UnifiedFocalLoss):
    """Symmetric unified focal loss: the focal factor and the focal-Tversky power act on both classes.

    ``L_mF = mean(delta y (1-p)^gamma l + (1-delta)(1-y) p^gamma l)``,
    ``L_mFT = ((1 - mTI_bg)^(1-gamma) + (1 - mTI_fg)^(1-gamma)) / 2``.
    """

    name = "unified-focal-symmetric"
    formula = "lambda*L_mF + (1-lambda)*L_mFT (focal and focal Tversky on both classes)"
    reference = "Yeung et al., CMIG 2022"
    summary = "Symmetric unified focal loss."
    symmetric = True


class BoundaryDoULoss(BinaryLoss):
    """The study's loss: ``boundary-gaussian(sigma) + lambda_dou * dou``, from one fused pass over the pixels.

    Extras: ``gauss(sigma=S)`` or ``dist_fg`` as for boundary-gaussian, and ``boundary_counts`` as for
    dou (``distance_inputs`` asks the loader for the first and the last: the step is then one weighted
    BCE with three more sums). ``last_terms`` holds the two (unweighted) parts. ``sync_stats`` applies
    to both parts (see ``balanced`` and ``region.DoULoss``).
    """

    name = "boundary-dou"
    formula = "boundary-gaussian(sigma) + lambda_dou * dou"
    reference = "this study"
    summary = "Boundary Gaussian BCE plus Boundary DoU."
    distance_inputs = ("dist_fg",)

    def __init__(self, sigma: float = 2.0, lambda_dou: float = 1.0, sync_stats: bool = False):
        super().__init__()
        check(sigma > 0, self.name, f"sigma must be > 0, got {sigma}")
        check(lambda_dou >= 0, self.name, f"lambda_dou must be >= 0, got {lambda_dou}")
        self.sigma, self.lambda_dou, self.sync_stats = sigma, lambda_dou, sync_stats
        self.distance_inputs = (gauss_key(sigma), COUNTS_KEY)

    def compute(self, z, y, yb, extras):
        counts = extra_counts(extras, COUNTS_KEY, z)
        w = gaussian_weight_terms(y, yb, extra_map(extras, "dist_fg", z), self.sigma, GAUSS_EPS,
                                  self.sync_stats, gauss=extra_map(extras, gauss_key(self.sigma), z),
                                  pos=None if counts is None else counts[0])
        sums = pixel_sums(z, y, w, bce=True, error=True)
        gauss = sums[0] / z.numel()
        dou = dou_from_sums(sums[1:], y, yb, self.sync_stats, counts=counts)
        self.last_terms = {"boundary-gaussian": gauss.detach(), "dou": dou.detach()}
        return gauss + self.lambda_dou * dou
