"""summarize (bootstrap CI) and paired_wilcoxon against simple references and scipy."""

import numpy as np
import pytest
from scipy import stats

import imbaseg.metrics.stats as stats_module
from imbaseg.errors import UserError
from imbaseg.metrics import SUMMARY_KEYS, bootstrap_means, paired_wilcoxon, summarize
from imbaseg.metrics.stats import analyse, bootstrap_draws


def reference_bootstrap(values, n_boot, seed):
    """The spec's loop (study.md, S = 1): one resample at a time, indices rng.integers(0, n, n)."""
    rng = np.random.default_rng(seed)
    v = np.asarray(values, dtype=float)
    means = []
    for _ in range(n_boot):
        rng.integers(0, 1, 1)  # the seed draw of S = 1: consumes no random numbers
        idx = rng.integers(0, v.size, v.size)
        means.append(sum(v[i] for i in idx) / v.size)
    return np.array(means)


def test_summary_statistics_and_ci_match_a_reference_loop():
    values = [0.91, 0.85, 0.40, 0.77, 0.99, 0.62, 0.88]
    got = summarize(values, n_boot=500, seed=3)
    assert tuple(got) == SUMMARY_KEYS
    assert got["n"] == 7
    assert got["mean"] == pytest.approx(np.mean(values))
    assert got["std"] == pytest.approx(np.std(values, ddof=1))
    assert got["median"] == pytest.approx(0.85)
    low, high = np.percentile(reference_bootstrap(values, 500, 3), [2.5, 97.5])
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    assert got["ci_low"] <= got["mean"] <= got["ci_high"]


def test_ci_is_deterministic_and_depends_on_the_seed():
    rng = np.random.default_rng(0)
    values = rng.beta(5, 2, size=40)
    a, b = summarize(values), summarize(values)
    assert a == b
    assert summarize(values, seed=1)["ci_low"] != a["ci_low"]
    assert a["ci_low"] < a["mean"] < a["ci_high"]


def test_chunking_does_not_change_the_resamples(monkeypatch):
    values = np.linspace(0, 1, 37) ** 2
    whole = bootstrap_means(values, n_boot=300, seed=7)
    monkeypatch.setattr(stats_module, "_CHUNK", 100)  # 2 resamples per chunk
    np.testing.assert_array_equal(bootstrap_means(values, n_boot=300, seed=7), whole)


def test_single_run_ci_equals_the_comparison_ci_bit_for_bit():
    """summary.json's CI (summarize) is the S = 1 case of the comparison's analyse, inside a group too."""
    rng = np.random.default_rng(5)
    a, b = rng.beta(5, 2, size=33), rng.beta(4, 2, size=33)
    group = analyse(np.stack([a, b])[:, None, :], bootstrap_draws(1, 33, 10_000, 0))
    for k, v in enumerate((a, b)):
        s = summarize(v)
        assert (s["mean"], s["ci_low"], s["ci_high"]) == (group.mean[k], group.ci_low[k], group.ci_high[k])
        assert (s["std"], s["median"]) == (group.image_sd[k], group.median[k])


def test_ci_agrees_with_scipy_bootstrap_statistically():
    # an independent implementation with its own generator: the percentile CIs agree within 5% of the width
    rng = np.random.default_rng(2)
    values = rng.gamma(2.0, 1.0, size=60)
    got = summarize(values, n_boot=10_000, seed=0)
    ref = stats.bootstrap((values,), np.mean, n_resamples=10_000, method="percentile", random_state=0)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert got["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=0.05 * width)
    assert got["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=0.05 * width)


def test_one_value_and_constant_values_give_zero_width():
    assert summarize([0.7]) == {"mean": 0.7, "std": 0.0, "median": 0.7, "ci_low": 0.7, "ci_high": 0.7, "n": 1}
    got = summarize([0.1] * 5)
    assert got["ci_low"] == got["mean"] == got["ci_high"] == 0.1 and got["std"] == 0.0


def test_summarize_rejects_bad_values():
    with pytest.raises(UserError, match="empty"):
        summarize([])
    with pytest.raises(UserError, match="NaN"):
        summarize([0.1, float("nan")])
    with pytest.raises(UserError, match="n_boot"):
        summarize([0.1, 0.2], n_boot=0)


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(4)
    for n in (5, 12, 30, 80):
        a = rng.random(n)
        b = a + rng.normal(0.05, 0.1, n)
        assert paired_wilcoxon(a, b) == pytest.approx(stats.wilcoxon(a, b).pvalue)
    a = np.array([0.8, 0.7, 0.9, 0.6, 0.75, 0.85])
    # all 6 differences positive: exact two-sided p = 2 sign patterns (all +, all -) of 2^6
    assert paired_wilcoxon(a, a - 0.1 * np.arange(1, 7)) == pytest.approx(2 / 64)


def test_wilcoxon_edge_cases():
    a = [0.5, 0.6, 0.7]
    assert paired_wilcoxon(a, a) == 1.0  # all differences zero
    assert paired_wilcoxon([0.2], [0.9]) == 1.0  # one pair
    with pytest.raises(UserError, match="same images"):
        paired_wilcoxon([0.1, 0.2], [0.1])
    with pytest.raises(UserError, match="NaN"):
        paired_wilcoxon([0.1, float("nan")], [0.1, 0.2])
