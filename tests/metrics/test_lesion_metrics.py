"""Lesion-wise detection: hand-built masks with known components, both overlap rules, the empty rules,
min_component, the FOV cut, and an independent scipy + Python-loop matcher on random masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from imbaseg.errors import UserError
from imbaseg.metrics import compute_metrics
from imbaseg.metrics import lesion as lesion_mod
from imbaseg.metrics.lesion import area_thresholds, lesion_scores, match_lesions, recall_by_area


def canvas(h=12, w=12):
    return np.zeros((h, w), dtype=bool)


def lesions(pred, target, valid=None, **kw) -> dict:
    m = compute_metrics(pred, target, valid, **kw)
    return {k: v for k, v in m.items() if k.startswith("lesion_")}


def counts(m: dict) -> tuple:
    return tuple(
        m[k] for k in ("lesion_targets", "lesion_detected", "lesion_missed", "lesion_predicted", "lesion_fp")
    )


def test_diagonal_touch_is_one_component_with_8_connectivity():
    t = canvas()
    t[2, 2] = t[3, 3] = t[4, 4] = True  # touching only at corners: 1 component (4-connectivity: 3)
    p = canvas()
    p[4, 4] = True  # one pixel of it
    m = lesions(p, t)
    assert counts(m) == (1, 1, 0, 1, 0)
    assert (m["lesion_recall"], m["lesion_precision"], m["lesion_f1"]) == (1.0, 1.0, 1.0)


def test_nested_ring_and_core_are_two_components():
    t = canvas(15, 15)
    t[2:13, 2:13] = True
    t[4:11, 4:11] = False  # a ring 2 px thick ...
    t[7, 7] = True  # ... around a one-pixel core, separated by a 2-px gap
    p = canvas(15, 15)
    p[6:9, 6:9] = True  # covers the core only (9 px), touches nothing of the ring
    m = lesions(p, t)
    assert counts(m) == (2, 1, 1, 1, 0)
    assert m["lesion_recall"] == 0.5 and m["lesion_precision"] == 1.0
    assert m["lesion_f1"] == pytest.approx(2 * 0.5 / 1.5)


def test_one_pixel_components_at_the_border_and_a_false_positive():
    t = canvas()
    t[0, 0] = True  # corner pixel
    t[11, 5] = True  # bottom border pixel
    t[5, 11] = True  # right border pixel
    p = canvas()
    p[0, 0] = True  # hits the corner
    p[11, 4:7] = True  # hits the bottom one
    p[5, 5] = True  # touches nothing: false positive
    m = lesions(p, t)
    assert counts(m) == (3, 2, 1, 3, 1)
    assert m["lesion_recall"] == pytest.approx(2 / 3) and m["lesion_precision"] == pytest.approx(2 / 3)


def test_a_component_cut_by_the_fov_counts_twice_and_only_its_fov_pixels():
    t = canvas(8, 20)
    t[3:5, 1:19] = True  # one bar of 36 px
    fov = np.ones((8, 20), bool)
    fov[:, 9:11] = False  # the FOV cuts it: two pieces of 16 px inside the FOV
    p = canvas(8, 20)
    p[3:5, 1:5] = True  # 8 px on the left piece
    assert counts(lesions(p, t)) == (1, 1, 0, 1, 0)
    m = lesions(p, t, fov)
    assert counts(m) == (2, 1, 1, 1, 0)
    match = match_lesions(p & fov, t & fov)
    np.testing.assert_array_equal(match.target_areas, [16, 16])
    np.testing.assert_array_equal(match.target_detected, [True, False])
    # a prediction outside the FOV does not exist for the metrics
    outside = canvas(8, 20)
    outside[0:2, 9:11] = True
    assert counts(lesions(p | outside, t, fov)) == (2, 1, 1, 1, 0)


def test_the_two_overlap_rules():
    t = canvas()
    t[2:4, 2:7] = True  # 10 px
    p4, p5 = canvas(), canvas()
    p4[2, 2:6] = True  # covers 4 of 10
    p5[2, 2:7] = True  # covers 5 of 10 (exactly one half)
    assert lesions(p4, t)["lesion_detected"] == 1  # default: any overlapping pixel
    assert lesions(p4, t, lesion_overlap=0.5)["lesion_detected"] == 0
    assert lesions(p5, t, lesion_overlap=0.5)["lesion_detected"] == 1  # >= half
    assert lesions(p5, t, lesion_overlap=0.51)["lesion_detected"] == 0
    m = lesions(p4, t, lesion_overlap=0.5)
    assert m["lesion_fp"] == 0 and m["lesion_precision"] == 1.0  # it overlaps a target: not a false positive
    assert m["lesion_recall"] == 0.0 and m["lesion_f1"] == 0.0


def test_the_strict_rule_takes_the_best_single_predicted_component():
    t = canvas()
    t[2, 1:11] = True  # 10 px
    p = canvas()
    p[2, 1:5] = True  # 4 px
    p[2, 6:10] = True  # 4 px, a separate component (column 5 is empty)
    assert lesions(p, t, lesion_overlap=0.5)["lesion_detected"] == 0  # 40% + 40%, no single one >= 50%
    assert lesions(p, t, lesion_overlap=0.4)["lesion_detected"] == 1
    assert counts(lesions(p, t)) == (1, 1, 0, 2, 0)


def test_min_component_ignores_small_components_on_both_sides():
    t = canvas()
    t[1, 1] = True  # 1 px target
    t[5:8, 5:8] = True  # 9 px target
    p = canvas()
    p[0:3, 0:3] = True  # 9 px prediction that overlaps only the 1-px target
    p[10, 10] = True  # 1 px false positive
    assert counts(lesions(p, t)) == (2, 1, 1, 2, 1)
    m = lesions(p, t, min_component=2)
    # the 1-px target and the 1-px prediction are gone; the 9-px prediction now overlaps no target
    assert counts(m) == (1, 0, 1, 1, 1)
    assert m["lesion_recall"] == 0.0 and m["lesion_precision"] == 0.0


@pytest.mark.parametrize(
    "has_target, has_pred, expected",
    [
        (False, False, (1.0, 1.0, 1.0)),  # nothing to find, nothing found
        (False, True, (math.nan, 0.0, 0.0)),  # recall undefined, precision 0
        (True, False, (0.0, 0.0, 0.0)),  # everything missed
    ],
)
def test_empty_rules(has_target, has_pred, expected):
    blob = canvas()
    blob[3:6, 3:6] = True
    t, p = (blob if has_target else canvas()), (blob if has_pred else canvas())
    m = lesions(p, t)
    got = (m["lesion_recall"], m["lesion_precision"], m["lesion_f1"])
    assert got == pytest.approx(expected, nan_ok=True)


def test_lesion_scores_of_sums_and_f1_zero():
    assert lesion_scores(0, 0, 0, 0) == {"lesion_recall": 1.0, "lesion_precision": 1.0, "lesion_f1": 1.0}
    assert lesion_scores(4, 0, 3, 3)["lesion_f1"] == 0.0  # P = R = 0
    s = lesion_scores(10, 6, 8, 2)  # recall 0.6, precision 6/8
    assert s["lesion_recall"] == 0.6 and s["lesion_precision"] == 0.75
    assert s["lesion_f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)


def test_bad_options_are_user_errors():
    m = canvas()
    for bad in (-0.1, 1.5, float("nan"), "x"):
        with pytest.raises(UserError, match="--lesion-overlap"):
            compute_metrics(m, m, lesion_overlap=bad)
    for bad in (-1, 1.5, True):
        with pytest.raises(UserError, match="--min-component"):
            compute_metrics(m, m, min_component=bad)


# ----------------------------------------------------------------------------- independent reference


def reference(p, t, overlap, min_px):
    """scipy 8-connected labels and a plain Python loop over the components."""
    eight = np.ones((3, 3), bool)
    lt, nt = ndi.label(t, structure=eight)
    lp, np_ = ndi.label(p, structure=eight)
    tcomps = [lt == k for k in range(1, nt + 1)]
    pcomps = [lp == k for k in range(1, np_ + 1)]
    tcomps = [c for c in tcomps if c.sum() >= min_px]
    pcomps = [c for c in pcomps if c.sum() >= min_px]
    detected = 0
    for c in tcomps:
        best = max([int((c & q).sum()) for q in pcomps], default=0)
        detected += best > 0 and best >= overlap * c.sum()
    fp = sum(1 for q in pcomps if not any((q & c).any() for c in tcomps))
    return len(tcomps), detected, len(tcomps) - detected, len(pcomps), fp


@pytest.mark.parametrize("overlap, min_px", [(0.0, 0), (0.5, 0), (0.3, 3)])
def test_counts_equal_an_independent_matcher_on_random_masks(overlap, min_px):
    rng = np.random.default_rng(7)
    for _ in range(25):
        h, w = rng.integers(16, 48, 2)
        t = ndi.gaussian_filter(rng.normal(size=(h, w)), 1.5) > 0.25
        p = ndi.binary_dilation(t, iterations=1) if rng.random() < 0.5 else t.copy()
        p ^= rng.random((h, w)) < 0.04  # speckle: extra and missing pixels
        fov = None if rng.random() < 0.5 else (ndi.gaussian_filter(rng.normal(size=(h, w)), 4) > -0.2)
        m = lesions(p, t, fov, lesion_overlap=overlap, min_component=min_px)
        pv, tv = (p, t) if fov is None else (p & fov, t & fov)
        assert counts(m) == reference(pv, tv, overlap, min_px)


def test_dense_and_sparse_pair_counting_agree(monkeypatch):
    rng = np.random.default_rng(3)
    t = rng.random((64, 64)) < 0.2  # speckle: many components
    p = rng.random((64, 64)) < 0.2
    dense = match_lesions(p, t, overlap=0.5)
    monkeypatch.setattr(lesion_mod, "_DENSE_PAIRS", 0)
    sparse = match_lesions(p, t, overlap=0.5)
    assert dense.counts() == sparse.counts()
    np.testing.assert_array_equal(dense.target_detected, sparse.target_detected)


def test_recall_by_area_classes_and_thresholds():
    areas = np.array([1, 2, 3, 10, 20, 30, 100, 200, 300])
    detected = np.array([0, 0, 1, 1, 0, 1, 1, 1, 1], bool)
    t1, t2 = area_thresholds(areas)
    assert (t1, t2) == tuple(np.quantile(areas, [1 / 3, 2 / 3]))  # 7.67 and 46.67 (linear interpolation)
    classes = recall_by_area(areas, detected, (t1, t2))
    assert [c["class"] for c in classes] == ["small", "medium", "large"]
    assert [(c["targets"], c["detected"]) for c in classes] == [(3, 1), (3, 2), (3, 3)]
    assert [c["recall"] for c in classes] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert classes[0]["min_area"] == 0.0 and classes[2]["max_area"] is None
    assert area_thresholds([]) is None
    empty = recall_by_area([], [], None)
    assert all(c["targets"] == 0 and c["recall"] is None for c in empty)
