"""The threshold: confusion counts per grid value and the Dice-optimal choice (moved from test_evaluate)."""

from __future__ import annotations

import numpy as np
import pytest

from imbaseg.errors import UserError
from imbaseg.evaluation.threshold import THRESHOLD_GRID, best_threshold, parse_threshold, threshold_counts


def test_threshold_counts_match_a_direct_count():
    rng = np.random.default_rng(0)
    probs = rng.random((20, 30)).astype(np.float32)
    mask = rng.random((20, 30)) < 0.3
    valid = rng.random((20, 30)) < 0.8
    got = threshold_counts(probs, mask, valid)
    for k, t in enumerate(THRESHOLD_GRID):
        p, y = (probs >= np.float32(t))[valid], mask[valid]
        assert tuple(got[k]) == (np.sum(p & y), np.sum(p & ~y), np.sum(~p & y), np.sum(~p & ~y))


def test_best_threshold_picks_the_separating_value_nearest_half():
    # foreground probabilities in [0.26, 0.34], background in [0, 0.18]: thresholds 0.20 and 0.25 both give
    # Dice 1 on both images; the tie goes to the one nearer 0.5 -> 0.25
    rng = np.random.default_rng(1)
    counts = []
    for _ in range(2):
        mask = rng.random((16, 16)) < 0.2
        probs = np.where(mask, rng.uniform(0.26, 0.34, mask.shape), rng.uniform(0.0, 0.18, mask.shape))
        counts.append(threshold_counts(probs.astype(np.float32), mask, None))
    thr, curve = best_threshold(counts)
    assert thr == 0.25
    assert curve[THRESHOLD_GRID.index(0.2)] == curve[THRESHOLD_GRID.index(0.25)] == 1.0
    assert curve[THRESHOLD_GRID.index(0.5)] == 0.0  # nothing predicted -> Dice 0 on non-empty GT


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (" AUTO ", "auto"), ("0.3", 0.3), (0.7, 0.7)])
def test_parse_threshold(value, expected):
    assert parse_threshold(value) == expected


@pytest.mark.parametrize(
    "value, match", [("high", "bad --threshold"), (0, "strictly between"), (1.0, "strictly")]
)
def test_parse_threshold_rejects(value, match):
    with pytest.raises(UserError, match=match):
        parse_threshold(value)
