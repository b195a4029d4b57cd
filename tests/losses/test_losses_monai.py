"""Agreement with MONAI (a test-only dependency) where the definitions coincide.

MONAI settings that match ours:
- ``DiceLoss(sigmoid=True, batch=True, smooth_nr=s, smooth_dr=s)`` on one channel = our ``dice`` (foreground
  only); ``batch=False`` = ours per image. Our ``include_background=True`` = MONAI on the two channels
  ``[1-p, p]`` / ``[1-y, y]`` (probabilities, no activation), averaged over channels.
- ``TverskyLoss``: MONAI's alpha weighs FP and beta FN, as ours (Salehi's naming).
- ``FocalLoss(alpha, gamma, reduction='mean', use_softmax=False)``: MONAI's ``sigmoid_focal_loss`` is
  ``alpha_t * exp(gamma * logsigmoid(-z(2y-1))) * BCE``, averaged over all elements: our definition.
- ``HausdorffDTLoss(alpha, sigmoid=True, include_background=True)``: same field (edt(fg) + edt(bg), 0 for
  empty or full masks) on the target and the thresholded prediction.
- ``SoftDiceclDiceLoss``: MONAI reduces clDice per batch element and adds ``smooth`` to the harmonic-mean
  denominator, so it matches ours (batch-pooled, as the reference repo) at B = 1 and a negligible ``smooth``.
- ``AsymmetricFocalTverskyLoss`` (per image, eps-clamped probabilities) = our unified-focal's L_maFT with
  ``batch=False``; MONAI's ``AsymmetricFocalLoss`` also averages over the two class channels, so it is
  half of the reference Keras L_maF (which sums the class terms per pixel) - checked with that factor.
"""

from __future__ import annotations

import pytest
import torch
from _loss_cases import make_batch

from imbaseg.losses import get_loss

monai_losses = pytest.importorskip("monai.losses", reason="MONAI is a test-only dependency")
unified = pytest.importorskip("monai.losses.unified_focal_loss")

S = 1e-5
KINDS = ["random", "mixed", "line", "empty"]


def two_channel(z, y):
    p = torch.sigmoid(z.double())
    return torch.cat([1 - p, p], 1), torch.cat([1 - y, y], 1).double()


def close(a, b, rel=1e-4, abs_=1e-6):
    return float(a) == pytest.approx(float(b), rel=rel, abs=abs_)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [True, False])
def test_dice_matches_monai(kind, batch):
    z, y = make_batch(kind, b=4, h=16, w=16, seed=1)
    monai = monai_losses.DiceLoss(sigmoid=True, batch=batch, smooth_nr=S, smooth_dr=S)
    assert close(get_loss("dice", batch=batch)(z, y), monai(z.double(), y.double()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [True, False])
def test_dice_with_background_matches_monai_on_two_channels(kind, batch):
    z, y = make_batch(kind, b=4, h=16, w=16, seed=2)
    monai = monai_losses.DiceLoss(include_background=True, batch=batch, smooth_nr=1e-6, smooth_dr=1e-6)
    ours = get_loss("dice", batch=batch, include_background=True, smooth=1e-6)
    assert close(ours(z, y), monai(*two_channel(z, y)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha,beta", [(0.3, 0.7), (0.5, 0.5), (0.9, 0.1)])
def test_tversky_matches_monai(kind, alpha, beta):
    z, y = make_batch(kind, b=4, h=16, w=16, seed=3)
    monai = monai_losses.TverskyLoss(sigmoid=True, alpha=alpha, beta=beta, batch=True, smooth_nr=S,
                                     smooth_dr=S)
    assert close(get_loss("tversky", alpha=alpha, beta=beta)(z, y), monai(z.double(), y.double()))


@pytest.mark.parametrize("kind", KINDS + ["full"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.6, 0.5), (None, 2.0), (0.25, 0.0)])
def test_focal_matches_monai(kind, alpha, gamma):
    z, y = make_batch(kind, b=4, h=16, w=16, seed=4)
    monai = monai_losses.FocalLoss(alpha=alpha, gamma=gamma, reduction="mean", use_softmax=False)
    assert close(get_loss("focal", alpha=alpha, gamma=gamma)(z, y), monai(z.double(), y.double()), abs_=1e-7)


@pytest.mark.parametrize("kind", KINDS + ["full", "border"])
@pytest.mark.parametrize("alpha", [2.0, 1.0])
def test_hausdorff_dt_matches_monai(kind, alpha):
    z, y = make_batch(kind, b=4, h=16, w=16, seed=5)
    monai = monai_losses.HausdorffDTLoss(alpha=alpha, sigmoid=True, include_background=True)
    assert close(get_loss("hausdorff-dt", alpha=alpha)(z, y), monai(z.double(), y.double()))


@pytest.mark.parametrize("kind", ["random", "line", "pixel"])
@pytest.mark.parametrize("iterations", [0, 3, 10])
def test_cldice_matches_monai_for_one_image(kind, iterations):
    z, y = make_batch(kind, b=1, h=20, w=20, seed=6)
    monai = monai_losses.SoftDiceclDiceLoss(iter_=iterations, alpha=0.5, smooth_nr=S, smooth_dr=S,
                                            smooth=1e-12, sigmoid=True)
    assert close(get_loss("cldice", iterations=iterations)(z, y), monai(z.double(), y.double()))


@pytest.mark.parametrize("kind", ["random", "mixed", "line"])
def test_unified_focal_parts_match_monai(kind):
    z, y = make_batch(kind, b=4, h=16, w=16, seed=7)
    p2, y2 = two_channel(z, y)
    tversky = unified.AsymmetricFocalTverskyLoss(delta=0.6, gamma=0.5, epsilon=1e-7)
    ours_ft = get_loss("unified-focal", **{"lambda": 0.0, "batch": False, "smooth": 1e-7})
    assert close(ours_ft(z, y), tversky(p2, y2))
    focal = unified.AsymmetricFocalLoss(delta=0.6, gamma=0.5, epsilon=1e-12)
    ours_f = get_loss("unified-focal", **{"lambda": 1.0})
    assert close(ours_f(z, y), 2 * focal(p2, y2))
