"""ECE and Brier: a hand-computed 2-bin example, exact bin edges, an independent numpy recomputation
(with a field of view), pooling of per-image counts, and the bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from imbaseg.errors import UserError
from imbaseg.metrics import CalibrationCounts, brier, calibration_counts, compute_metrics, ece


def test_two_bin_textbook_example():
    # p = .2 .2 .8 .8 .8, y = 0 1 1 1 0, two bins [0, .5) and [.5, 1]:
    # bin 0: n 2, mean p .2, mean y .5 -> 2/5 * .3 = .12
    # bin 1: n 3, mean p .8, mean y 2/3 -> 3/5 * 2/15 = .08
    # ECE = .20; Brier = (.04 + .64 + .04 + .04 + .64) / 5 = .28
    p = np.array([[0.2, 0.2, 0.8, 0.8, 0.8]])
    y = np.array([[0, 1, 1, 1, 0]], bool)
    assert ece(p, y, n_bins=2) == pytest.approx(0.20, abs=1e-12)
    assert brier(p, y) == pytest.approx(0.28, abs=1e-12)


def test_perfectly_calibrated_bins_give_zero_ece():
    # in each bin the foreground share equals the probability: 0.1 with 1 of 10, 0.5 with 5 of 10
    p = np.r_[np.full(10, 0.1), np.full(10, 0.5)][None]
    y = np.r_[np.arange(10) < 1, np.arange(10) < 5][None]
    assert ece(p, y) == pytest.approx(0.0, abs=1e-12)
    assert brier(p, y) == pytest.approx((0.9 * 0.01 + 0.1 * 0.81 + 0.25) / 2)


def test_bin_edges_are_half_open_and_one_is_in_the_last_bin():
    p = np.array([[0.0, 1 / 15, 2 / 15 - 1e-9, 14 / 15, 1.0]])
    c = calibration_counts(p, np.zeros_like(p, bool))
    assert c.n.tolist() == [1, 2] + [0] * 11 + [0, 2]


def reference_ece(p, y, n_bins=15):
    """Straight from the definition: np.digitize into equal-width bins, a loop over the bins."""
    edges = np.linspace(0, 1, n_bins + 1)
    b = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    total = 0.0
    for k in range(n_bins):
        sel = b == k
        if sel.any():
            total += sel.sum() / p.size * abs(y[sel].mean() - p[sel].mean())
    return total


def test_ece_and_brier_equal_an_independent_numpy_computation_inside_the_fov():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(8, 64, 2)
        probs = rng.beta(0.5, 2.0, (h, w)).astype(np.float32)
        target = rng.random((h, w)) < probs**1.5  # over-confident on purpose
        fov = rng.random((h, w)) < 0.8
        fov[0, 0] = True
        p, y = probs[fov].astype(np.float64), target[fov]
        assert ece(probs, target, fov) == pytest.approx(reference_ece(p, y), abs=1e-12)
        assert brier(probs, target, fov) == pytest.approx(np.mean((p - y) ** 2), abs=1e-12)
        m = compute_metrics(probs >= 0.5, target, fov, probs=probs)
        assert (m["ece"], m["brier"]) == pytest.approx(
            (reference_ece(p, y), np.mean((p - y) ** 2)), abs=1e-12
        )
    assert "ece" not in compute_metrics(target, target)  # no probabilities, no calibration metrics


def test_per_image_counts_pool_into_the_split_numbers():
    rng = np.random.default_rng(1)
    images = [(rng.random((20, 30)), rng.random((20, 30)) < 0.2) for _ in range(4)]
    pooled = sum((calibration_counts(p, y) for p, y in images), CalibrationCounts.zeros())
    p_all = np.concatenate([p.ravel() for p, _ in images])
    y_all = np.concatenate([y.ravel() for _, y in images])
    assert pooled.pixels == p_all.size
    assert pooled.ece() == pytest.approx(reference_ece(p_all, y_all), abs=1e-12)
    assert pooled.brier() == pytest.approx(np.mean((p_all - y_all) ** 2), abs=1e-12)
    rel = pooled.reliability()
    assert len(rel) == 15 and sum(r["n"] for r in rel) == p_all.size
    assert all((r["mean_p"] is None) == (r["n"] == 0) for r in rel)


@pytest.mark.parametrize(
    "probs, match",
    [
        (np.full((4, 4), np.nan), "NaN"),
        (np.full((4, 4), 1.5), r"\[0, 1\]"),
        (np.full((4, 4), -0.1), r"\[0, 1\]"),
        (np.full((4, 5), 0.5), "shape"),
    ],
)
def test_bad_probabilities_are_user_errors(probs, match):
    with pytest.raises(UserError, match=match):
        ece(probs, np.zeros((4, 4), bool))
    with pytest.raises(UserError, match="valid"):
        brier(np.full((4, 4), 0.5), np.zeros((4, 4), bool), np.zeros((4, 4), bool))
