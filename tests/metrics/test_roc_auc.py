"""auc_roc and auc_pr against hand-computed values and brute-force references over all thresholds."""

import math

import numpy as np
import pytest

from imbaseg.errors import UserError
from imbaseg.metrics import auc_pr, auc_roc


def brute_roc(scores, labels):
    """Trapezoid over the ROC points of every distinct threshold (predict positive when score >= t)."""
    p, n = labels.sum(), (~labels).sum()
    fpr, tpr = [0.0], [0.0]
    for t in sorted(set(scores.tolist()), reverse=True):
        hit = scores >= t
        tpr.append((hit & labels).sum() / p)
        fpr.append((hit & ~labels).sum() / n)
    return sum((fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2 for i in range(1, len(fpr)))


def brute_ap(scores, labels):
    """scikit-learn's average precision: sum over thresholds of (R_n - R_{n-1}) P_n."""
    p = labels.sum()
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        hit = scores >= t
        tp = (hit & labels).sum()
        recall, precision = tp / p, tp / hit.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_known_small_example():
    # labels 0 0 1 1, scores 0.1 0.4 0.35 0.8 (the scikit-learn docs example).
    # ROC: of the 4 (pos, neg) pairs, 0.8 beats both negatives, 0.35 beats 0.1 only -> 3/4.
    # AP: t = 0.8 -> P 1, R 0.5; t = 0.4 -> R unchanged; t = 0.35 -> P 2/3, R 1: 0.5 * 1 + 0.5 * 2/3 = 0.8333.
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert auc_roc(s, y) == pytest.approx(0.75)
    assert auc_pr(s, y) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_ties_count_half_and_one_threshold():
    # every score equal: ROC is the diagonal (0.5); AP = P(pos) = 2/5 at the single threshold.
    y = np.array([1, 0, 1, 0, 0])
    s = np.full(5, 0.3)
    assert auc_roc(s, y) == pytest.approx(0.5)
    assert auc_pr(s, y) == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(6))
def test_random_with_ties_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    labels = rng.random(n) < rng.uniform(0.1, 0.6)
    labels[0], labels[1] = True, False
    scores = np.round(rng.random(n) * 0.5 + 0.4 * labels, 1)  # heavy ties
    assert auc_roc(scores, labels) == pytest.approx(brute_roc(scores, labels), abs=1e-12)
    assert auc_pr(scores, labels) == pytest.approx(brute_ap(scores, labels), abs=1e-12)


def test_lists_of_images_with_valid_masks_use_only_valid_pixels():
    rng = np.random.default_rng(1)
    probs = [rng.random((6, 7)).astype(np.float16), rng.random((5, 5)).astype(np.float32)]
    targets = [rng.random((6, 7)) < 0.3, (rng.random((5, 5)) < 0.3).astype(np.uint8) * 255]
    valid = [rng.random((6, 7)) < 0.7, np.ones((5, 5), dtype=bool)]
    s = np.concatenate([p[v].astype(np.float64) for p, v in zip(probs, valid, strict=True)])
    y = np.concatenate([t[v] != 0 for t, v in zip(targets, valid, strict=True)])
    assert auc_roc(probs, targets, valid) == pytest.approx(brute_roc(s, y), abs=1e-12)
    assert auc_pr(probs, targets, valid) == pytest.approx(brute_ap(s, y), abs=1e-12)


def test_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    s = np.array([0.1, 0.4, 0.35, 0.8], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    assert auc_roc(torch.from_numpy(s), torch.from_numpy(y)) == pytest.approx(0.75)


def test_perfect_and_inverted_rankings():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.0, 0.1, 0.2, 0.8, 0.9])
    assert auc_roc(s, y) == 1.0 and auc_pr(s, y) == 1.0
    assert auc_roc(-s, y) == 0.0
    # inverted: positives ranked last, precision at recall 0.5 is 1/4 and at recall 1 is 2/5
    assert auc_pr(-s, y) == pytest.approx(0.5 * 0.25 + 0.5 * 0.4)


def test_undefined_cases_warn_and_return_nan():
    s = np.array([0.2, 0.7])
    with pytest.warns(UserWarning, match="undefined"):
        assert math.isnan(auc_roc(s, np.array([1, 1])))
    with pytest.warns(UserWarning, match="undefined"):
        assert math.isnan(auc_pr(s, np.array([0, 0])))
    assert auc_pr(s, np.array([1, 1])) == 1.0  # no negatives: precision is 1 everywhere


def test_bad_inputs():
    with pytest.raises(UserError, match="NaN"):
        auc_roc(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(UserError, match="same number of pixels"):
        auc_roc(np.zeros(3), np.zeros(4))
    with pytest.raises(UserError, match="as many images"):
        auc_roc([np.zeros(3)], [np.zeros(3), np.zeros(3)])
