"""clDice: hand-computed lines, the formula of Shit et al. against skimage skeletons, empty rules."""

import numpy as np
import pytest
from skimage.morphology import skeletonize

import imbaseg.metrics.topology as topology
from imbaseg.metrics import cldice, skeleton


def reference_cldice(pred, gt):
    """Shit et al. 2021 on the full image, no crop: 2 Tprec Tsens / (Tprec + Tsens)."""
    sp, sg = skeletonize(pred), skeletonize(gt)
    tprec = (sp & gt).sum() / sp.sum()
    tsens = (sg & pred).sum() / sg.sum()
    return 2 * tprec * tsens / (tprec + tsens)


def test_lines_by_hand():
    # pred = row 10, cols 0..29 (30 px); GT = row 10, cols 5..24 (20 px). A 1 px line is its own skeleton.
    # Tprec = 20 / 30, Tsens = 20 / 20 -> clDice = 2 (2/3)(1) / (2/3 + 1) = 0.8.
    pred = np.zeros((20, 30), dtype=bool)
    gt = np.zeros((20, 30), dtype=bool)
    pred[10, :] = True
    gt[10, 5:25] = True
    assert np.array_equal(skeleton(pred), pred) and np.array_equal(skeleton(gt), gt)
    assert cldice(pred, gt) == pytest.approx(0.8)
    # GT moved one row down: no skeleton pixel lies in the other mask -> 0 (Tprec + Tsens = 0).
    assert cldice(pred, np.roll(gt, 1, axis=0)) == 0.0


def test_thin_prediction_inside_thick_vessel_scores_high_cldice_but_low_dice():
    # GT = 5 px wide bar; pred = its 1 px centre line across the whole bar. The pred skeleton lies in the
    # GT (Tprec = 1) and the GT skeleton lies (nearly) on the centre line, while Dice = 2*30/(150+30) = 1/3.
    gt = np.zeros((20, 40), dtype=bool)
    gt[8:13, 5:35] = True
    pred = np.zeros_like(gt)
    pred[10, 5:35] = True
    value = cldice(pred, gt)
    assert value == pytest.approx(reference_cldice(pred, gt))
    assert value > 0.9


def test_equals_full_image_reference_on_random_masks():
    rng = np.random.default_rng(5)
    for _ in range(30):
        shape = tuple(rng.integers(8, 48, size=2))
        gt = rng.random(shape) < 0.4
        pred = gt ^ (rng.random(shape) < 0.15)
        gt[0, :] = rng.random() < 0.5  # masks that touch the border
        assert cldice(pred, gt) == pytest.approx(reference_cldice(pred, gt))
        assert np.array_equal(skeleton(gt), skeletonize(gt))  # the crop does not change the skeleton


def test_empty_rules_and_identity():
    m = np.zeros((16, 16), dtype=bool)
    m[3:12, 4:6] = True
    empty = np.zeros_like(m)
    assert cldice(empty, empty) == 1.0
    assert cldice(m, empty) == 0.0 and cldice(empty, m) == 0.0
    assert cldice(m, m) == 1.0


def test_empty_skeleton_falls_back_to_the_mask(monkeypatch):
    # If skeletonize ever returned nothing for a non-empty mask, the mask is its own centreline
    # (no division by zero): identical masks then still score 1.
    monkeypatch.setattr(topology, "skeletonize", lambda image: np.zeros_like(image))
    m = np.zeros((8, 8), dtype=bool)
    m[2:4, 2:4] = True
    assert np.array_equal(skeleton(m), m)
    assert cldice(m, m) == 1.0


@pytest.mark.parametrize("max_parts", [0, 256])
def test_component_wise_thinning_equals_whole_image_skeleton(monkeypatch, max_parts):
    # many 8-connected components, some nested in another's bounding box (a ring around a dot)
    monkeypatch.setattr(topology, "_MAX_PARTS", max_parts)
    rng = np.random.default_rng(8)
    m = rng.random((60, 70)) < 0.45
    m[20:35, 20:35] = True
    m[23:32, 23:32] = False
    m[27, 27] = True
    assert np.array_equal(skeleton(m), skeletonize(m))
