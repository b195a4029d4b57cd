"""imbaseg.metrics.stats against a literal reading of ../shared/spec/study.md, written here with numpy/scipy.

The reference below follows the spec sentence by sentence (one replicate at a time, the generator called
exactly as the spec says); the library's vectorised code must give the same draws bit for bit and the
same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from imbaseg.errors import UserError
from imbaseg.metrics import stats
from imbaseg.metrics.stats import (
    analyse,
    bootstrap_draws,
    effect_size_r,
    holm,
    replicate_means,
    replicate_median_diffs,
    round_sig,
    wilcoxon_p,
)

# ----------------------------------------------------------------------------- the literal spec


def spec_draws(n_seeds, n_images, n_boot, seed=0):
    """The spec's loop: per replicate rng.integers(0, S, S), then rng.integers(0, n, n)."""
    rng = np.random.default_rng(seed)
    seeds, images = [], []
    for _ in range(n_boot):
        seeds.append(rng.integers(0, n_seeds, n_seeds))
        images.append(rng.integers(0, n_images, n_images))
    return np.array(seeds), np.array(images)


def spec_replicates(m, ref, n_boot, seed=0):
    """Replicate means (L, B) and median paired differences (L, B), one replicate at a time."""
    n_runs, n_seeds, n = m.shape
    seeds, images = spec_draws(n_seeds, n, n_boot, seed)
    means = np.empty((n_runs, n_boot))
    meds = np.empty((n_runs, n_boot))
    for b in range(n_boot):
        for k in range(n_runs):
            means[k, b] = m[k][np.ix_(seeds[b], images[b])].mean()
            d = (m[k][seeds[b]] - m[ref][seeds[b]]).mean(axis=0)  # (1/S) sum over the drawn seeds
            meds[k, b] = np.median(d[images[b]])
    return means, meds


def spec_holm(p):
    """Holm step-down, written from the textbook definition (sorted, times m - k + 1, running max, cap)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for k, i in enumerate(order, start=1):
        running = max(running, min(1.0, p[i] * (len(p) - k + 1)))
        out[i] = running
    return out


def study_like(n_runs=4, n_seeds=3, n=25, seed=1):
    rng = np.random.default_rng(seed)
    base = rng.beta(6, 2, n)
    shift = np.linspace(0, 0.05, n_runs)[:, None, None]
    return np.clip(base + shift + rng.normal(0, 0.03, (n_runs, n_seeds, n)), 0, 1)


# ----------------------------------------------------------------------------- draws


@pytest.mark.parametrize(
    "n_seeds,n_images,n_boot,seed", [(1, 37, 400, 0), (3, 20, 300, 0), (2, 1, 50, 5), (4, 9, 250, 7)]
)
def test_draws_equal_the_spec_loop_bit_for_bit(n_seeds, n_images, n_boot, seed):
    d = bootstrap_draws(n_seeds, n_images, n_boot, seed)
    s, i = spec_draws(n_seeds, n_images, n_boot, seed)
    np.testing.assert_array_equal(d.seeds, s)
    np.testing.assert_array_equal(d.images, i)


def test_draws_do_not_depend_on_chunking(monkeypatch):
    whole = bootstrap_draws(3, 11, 200, 0)
    monkeypatch.setattr(stats, "_CHUNK", 30)  # two replicates per generator call
    part = bootstrap_draws(3, 11, 200, 0)
    np.testing.assert_array_equal(whole.seeds, part.seeds)
    np.testing.assert_array_equal(whole.images, part.images)


def test_one_call_with_a_bound_per_draw_equals_separate_calls_even_with_rejections():
    """What bootstrap_draws relies on: numpy draws bounded integers one by one from the same stream.
    A bound of 3 * 2**30 rejects ~1/4 of the raw draws, so the rejection path is exercised."""
    big = 3 * 2**30
    rng = np.random.default_rng(11)
    separate = [[rng.integers(0, big, 1)[0], *rng.integers(0, 5, 2)] for _ in range(500)]
    rng = np.random.default_rng(11)
    one = rng.integers(0, np.tile(np.array([big, 5, 5], dtype=np.int64), 500)).reshape(500, 3)
    np.testing.assert_array_equal(one, np.array(separate))


def test_bad_draw_sizes_are_user_errors():
    with pytest.raises(UserError, match="n_boot"):
        bootstrap_draws(1, 5, 0)
    with pytest.raises(UserError, match="n_images"):
        bootstrap_draws(1, 0, 10)


# ----------------------------------------------------------------------------- replicates


@pytest.mark.parametrize("n_seeds,n", [(1, 16), (1, 15), (3, 12)])
def test_replicates_equal_the_spec_loop(n_seeds, n):
    m = study_like(n_runs=3, n_seeds=n_seeds, n=n)
    draws = bootstrap_draws(n_seeds, n, 300, 0)
    ref_means, ref_meds = spec_replicates(m, 0, 300)
    np.testing.assert_allclose(replicate_means(m, draws), ref_means, rtol=0, atol=1e-14)
    got = replicate_median_diffs(m, 0, draws)
    if n_seeds == 1:  # the same values in the same order: np.median's own bits
        np.testing.assert_array_equal(got, ref_meds)
    else:  # the drawn-seed mean is summed in another order: equal up to rounding
        np.testing.assert_allclose(got, ref_meds, rtol=0, atol=1e-14)


def test_replicate_means_do_not_depend_on_the_other_runs_or_chunks(monkeypatch):
    m = study_like(n_runs=3, n_seeds=2, n=10)
    draws = bootstrap_draws(2, 10, 200, 0)
    together = replicate_means(m, draws)
    np.testing.assert_array_equal(replicate_means(m[1:2], draws)[0], together[1])
    monkeypatch.setattr(stats, "_CHUNK", 25)
    np.testing.assert_array_equal(replicate_means(m, draws), together)
    medians = replicate_median_diffs(m, 0, draws)
    monkeypatch.setattr(stats, "_CHUNK", 1 << 22)
    np.testing.assert_array_equal(replicate_median_diffs(m, 0, draws), medians)


# ----------------------------------------------------------------------------- analyse against scipy


def independent_analysis(m, ref, higher, n_boot):
    """The spec's report for one metric from numpy/scipy only (no imbaseg code)."""
    n_runs, n_seeds, n = m.shape
    means, meds = spec_replicates(m, ref, n_boot)
    x = np.array([[float(f"{v:.11e}") for v in row] for row in m.mean(axis=1)])  # 12 significant digits
    out = {
        "mean": m.mean(axis=2).mean(axis=1),
        "ci": np.percentile(means, [2.5, 97.5], axis=1),
        "seed_sd": m.mean(axis=2).std(axis=1, ddof=1) if n_seeds > 1 else np.zeros(n_runs),
        "image_sd": m.mean(axis=1).std(axis=1, ddof=1),
        "p": {},
        "r": {},
        "median_diff": {},
        "diff_ci": {},
    }
    for k in range(n_runs):
        if k == ref:
            continue
        d = x[k] - x[ref]
        out["p"][k] = sps.wilcoxon(x[k], x[ref]).pvalue
        z = sps.wilcoxon(d, alternative="greater", method="approx").zstatistic  # W+ after zeros, ties
        out["r"][k] = (z if higher else -z) / np.sqrt(n)
        out["median_diff"][k] = np.median(d)
        out["diff_ci"][k] = np.percentile(meds[k], [2.5, 97.5])
    others = sorted(out["p"])
    out["p_holm"] = dict(zip(others, spec_holm([out["p"][k] for k in others]), strict=True))
    return out


@pytest.mark.parametrize("n_seeds,higher", [(1, True), (3, True), (2, False)])
def test_analyse_matches_an_independent_recomputation(n_seeds, higher):
    m = study_like(n_runs=4, n_seeds=n_seeds, n=30)
    if not higher:
        m = 40 * (1 - m)  # distances in pixels: lower is better
    got = analyse(m, bootstrap_draws(n_seeds, 30, 400, 0), reference=1, higher=higher)
    ref = independent_analysis(m, 1, higher, 400)
    np.testing.assert_allclose(got.mean, ref["mean"], rtol=1e-13)
    np.testing.assert_allclose([got.ci_low, got.ci_high], ref["ci"], rtol=1e-12)
    np.testing.assert_allclose(got.seed_sd, ref["seed_sd"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.image_sd, ref["image_sd"], rtol=1e-12)
    assert np.isnan([got.p[1], got.p_holm[1], got.effect_r[1], got.median_diff[1], got.diff_ci_low[1]]).all()
    for k in (0, 2, 3):
        assert got.p[k] == pytest.approx(ref["p"][k], rel=1e-12)
        assert got.p_holm[k] == pytest.approx(ref["p_holm"][k], rel=1e-12)
        assert got.effect_r[k] == pytest.approx(ref["r"][k], rel=1e-12)
        assert got.median_diff[k] == pytest.approx(ref["median_diff"][k], abs=1e-15)
        np.testing.assert_allclose([got.diff_ci_low[k], got.diff_ci_high[k]], ref["diff_ci"][k], atol=1e-14)


def test_holm_on_a_textbook_example():
    # m = 4 p-values; sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04;
    # the running maximum makes the last 0.06; back in the input order:
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # 0.5 x 2 = 1.0; capped at 1
    assert holm([]).size == 0
    rng = np.random.default_rng(0)
    p = rng.random(7) ** 3
    np.testing.assert_allclose(holm(p), spec_holm(list(p)))


def test_identical_runs_give_p_one_and_a_zero_width_difference_interval():
    m = study_like(n_runs=1, n_seeds=2, n=20)
    m = np.concatenate([m, m])
    got = analyse(m, bootstrap_draws(2, 20, 300, 0))
    assert got.p[1] == 1.0 and got.p_holm[1] == 1.0 and got.effect_r[1] == 0.0
    assert got.median_diff[1] == got.diff_ci_low[1] == got.diff_ci_high[1] == 0.0
    assert (got.ci_low[0], got.ci_high[0]) == (got.ci_low[1], got.ci_high[1])


def test_hd95_direction_a_smaller_distance_is_better():
    rng = np.random.default_rng(3)
    worse = rng.uniform(5, 10, 25)
    better = worse - rng.uniform(0.5, 2.0, 25)  # every image closer
    m = np.stack([worse, better])[:, None, :]
    draws = bootstrap_draws(1, 25, 200, 0)
    as_distance = analyse(m, draws, higher=stats.higher_is_better("hd95"))
    as_score = analyse(m, draws, higher=stats.higher_is_better("dice"))
    assert stats.higher_is_better("hd95") is False and stats.higher_is_better("assd") is False
    assert stats.higher_is_better("auc_pr") is True
    assert as_distance.effect_r[1] > 0.8 and as_score.effect_r[1] == -as_distance.effect_r[1]
    assert as_distance.median_diff[1] < 0  # the difference keeps its sign; only r follows the direction
    assert as_distance.p[1] == pytest.approx(2 / 2**25)  # exact: all 25 differences one sign


def test_constant_run_has_a_zero_width_interval_at_its_value():
    m = np.stack([np.full(6, 0.1), np.linspace(0, 1, 6)])[:, None, :]
    got = analyse(m, bootstrap_draws(1, 6, 100, 0))
    assert got.mean[0] == got.ci_low[0] == got.ci_high[0] == got.median[0] == 0.1
    assert got.image_sd[0] == got.seed_sd[0] == 0.0


def test_wilcoxon_and_effect_size_edge_cases():
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0 and wilcoxon_p([0.3]) == 1.0
    assert effect_size_r([0.0, 0.0]) == 0.0
    d = np.array([0.1, 0.1, -0.2, 0.3, 0.0, 0.4])  # a tie and a zero
    z = sps.wilcoxon(d, alternative="greater", method="approx").zstatistic
    assert effect_size_r(d) == pytest.approx(z / np.sqrt(6))


def test_round_sig_keeps_twelve_significant_digits():
    got = round_sig([0.1 + 0.2, 0.0, -123456.7890123456])
    np.testing.assert_array_equal(got, [0.3, 0.0, -123456.789012])
    a, b = 1.1 * 3, 3.3  # 3.3000000000000003: differ in the last bit, equal after rounding
    assert a != b and round_sig(a) == round_sig(b)


def test_analyse_rejects_bad_shapes_and_values():
    with pytest.raises(UserError, match="shape"):
        analyse(np.zeros((2, 3)), bootstrap_draws(1, 3, 10))
    with pytest.raises(UserError, match="NaN"):
        analyse(np.array([[[0.1, np.nan]]]), bootstrap_draws(1, 2, 10))
