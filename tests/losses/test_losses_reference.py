"""Every registered loss against its independent float64 numpy reference (tests/losses/_loss_refs.py).

Tolerance: |ours - ref| <= 1e-4 * |ref| + 1e-7. The absolute 1e-7 only matters where the loss is
(nearly) 0 - perfect logits of +-50 - where the float64 reference itself rounds ``1 - ratio`` to 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _loss_cases import ALL_LOSSES, EDGE_KINDS, make_batch
from _loss_refs import REFERENCES

from imbaseg.losses import LOSSES, get_loss

RTOL, ATOL = 1e-4, 1e-7

# Non-default parameter sets, checked too (the first entry of each list is the defaults).
PARAMS = {
    "bce": [{}, {"pos_weight": 3.0}],
    "dynamit-batch": [{}],
    "dynamit-image": [{}],
    "boundary-gaussian": [{}, {"sigma": 4.0}, {"sigma": 0.7}],
    "dou": [{}],
    "boundary-dou": [{}, {"sigma": 3.0, "lambda_dou": 0.5}],
    "dice": [{}, {"batch": False, "include_background": True, "smooth": 1e-6}, {"include_background": True},
             {"batch": False, "smooth": 1.0}],
    "iou": [{}, {"batch": False, "include_background": True}],
    "tversky": [{}, {"alpha": 0.7, "beta": 0.3, "batch": False}, {"include_background": True}],
    "focal-tversky": [{}, {"gamma": 2.0, "alpha": 0.5, "beta": 0.5, "batch": False},
                      {"include_background": True}],
    "focal": [{}, {"alpha": None, "gamma": 0.0}, {"alpha": 0.8, "gamma": 0.5}],
    "combo": [{}, {"alpha": 0.3, "beta": 0.8}],
    "unified-focal": [{}, {"lambda_": 0.2, "delta": 0.7, "gamma": 0.2, "batch": False}],
    "unified-focal-symmetric": [{}, {"lambda_": 0.8, "delta": 0.4, "gamma": 0.9, "batch": False}],
    "cldice": [{}, {"alpha": 0.3, "iterations": 2}],
    "boundary": [{}],
    "hausdorff-dt": [{}, {"alpha": 1.0}],
    "lovasz": [{}],
}


def test_every_loss_has_a_reference_and_parameter_sets():
    assert set(REFERENCES) == set(LOSSES) == set(PARAMS)


def _check(name, params, z, y):
    ref = float(REFERENCES[name](z.double().numpy(), y.double().numpy(), **params))
    ours = get_loss(name, **params)(z, y)  # "lambda_" is accepted for the public "lambda"
    assert ours.dtype == torch.float32 and ours.dim() == 0
    assert np.isfinite(ref)
    assert abs(ours.item() - ref) <= RTOL * abs(ref) + ATOL, (name, params, ours.item(), ref)


def _cases():
    for name in ALL_LOSSES:
        for i, params in enumerate(PARAMS[name]):
            yield pytest.param(name, params, id=f"{name}-p{i}")


@pytest.mark.parametrize("name,params", list(_cases()))
@pytest.mark.parametrize("seed", [0, 1])
def test_random_batches_match_reference(name, params, seed):
    z, y = make_batch("random", b=4, h=14, w=11, seed=seed)
    _check(name, params, z, y)


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("kind", EDGE_KINDS)
@pytest.mark.parametrize("b", [1, 4])
def test_edge_cases_match_reference(name, kind, b):
    z, y = make_batch(kind, b=b, h=10, w=12, seed=b)
    _check(name, {}, z, y)


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("logits", ["pm50", "perfect50"])
@pytest.mark.parametrize("kind", ["random", "mixed", "empty", "full"])
def test_logits_pm50_match_reference(name, logits, kind):
    z, y = make_batch(kind, b=4, h=10, w=10, seed=3, logits=logits)
    _check(name, {}, z, y)


def test_the_study_dice_baseline_setting():
    """The original study's Dice: per image, with background, smooth 1e-6 - an option set, not a name."""
    z, y = make_batch("mixed", b=4, h=12, w=12, seed=5)
    _check("dice", {"batch": False, "include_background": True, "smooth": 1e-6}, z, y)
