"""The report's statistics on hand cases with known answers: Holm on a textbook example, ties in ranks,
Kendall's tau-b against scipy, S = 1 reducing to evaluate's image bootstrap, identical losses, and a metric
where lower is better (hd95)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from imbaseg.metrics.stats import holm
from imbaseg.study import rankings as R


def test_holm_textbook_example():
    """Wikipedia's Holm-Bonferroni example (m = 4, alpha = 0.05): p = 0.01, 0.04, 0.03, 0.005. Sorted, the
    step-down multipliers are 4, 3, 2, 1: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04
    -> running maximum 0.06. H1 and H4 are rejected, H2 and H3 not."""
    adj = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert list(adj < 0.05) == [True, False, False, True]
    np.testing.assert_array_equal(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert holm([]).size == 0


def test_significance_adjusts_over_all_ordered_pairs():
    """L = 3 gives 6 one-sided tests, each Holm-adjusted among the 6 (not among 2 or 3)."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 20)
    x = np.stack([base + s + rng.normal(0, 0.05, 20) for s in (0.0, 0.01, 0.3)])
    sig = R.significance_ranking(x, higher=True)
    pairs = [(a, b) for a in range(3) for b in range(3) if a != b]
    raw = [sps.wilcoxon(x[a] - x[b], alternative="greater").pvalue for a, b in pairs]
    np.testing.assert_allclose([sig.p[a, b] for a, b in pairs], raw, rtol=1e-12)
    order = np.argsort(raw)
    expect = np.empty(6)
    expect[order] = np.minimum(1, np.maximum.accumulate(np.array(raw)[order] * np.arange(6, 0, -1)))
    np.testing.assert_allclose([sig.p_holm[a, b] for a, b in pairs], expect, rtol=1e-12)
    assert np.isnan(np.diag(sig.p_holm)).all()
    assert sig.wins[2] == 2 and sig.rank[2] == 1  # the clearly best beats both


# ----------------------------------------------------------------------------- ties


def test_aggregate_then_rank_ties_share_the_minimum_rank():
    m = np.array([0.8, 0.9, 0.8, 0.7])[:, None, None] * np.ones((4, 2, 5))
    mean, rank = R.aggregate_then_rank(m, higher=True)
    np.testing.assert_array_equal(rank, [2, 1, 2, 4])
    np.testing.assert_array_equal(R.aggregate_then_rank(m, higher=False)[1], [2, 4, 2, 1])


def test_means_equal_up_to_summation_order_tie():
    """Two losses holding the same values in another image order have mathematically equal means; the
    12-digit rounding makes them tie whatever order the floats were summed in."""
    v = np.array([0.1, 0.7, 0.2, 0.3, 1e-3, 0.9, 0.33333333333, 0.6])
    m = np.stack([v, v[::-1]])[:, None, :]
    assert R.aggregate_then_rank(m, True)[1].tolist() == [1, 1]


def test_rank_then_aggregate_hand_case():
    """Per image: image 0 ranks (A, B, C) = (1, 2.5, 2.5) (B and C tie), image 1 = (3, 1, 2),
    image 2 = (1, 3, 2). Mean ranks: A 5/3, B 6.5/3, C 6.5/3 -> ranks 1, 2, 2."""
    x = np.array([[0.9, 0.1, 0.8], [0.5, 0.9, 0.2], [0.5, 0.4, 0.3]])
    score, rank = R.rank_then_aggregate(x, higher=True)
    np.testing.assert_allclose(score, [5 / 3, 6.5 / 3, 6.5 / 3])
    np.testing.assert_array_equal(rank, [1, 2, 2])
    score, rank = R.rank_then_aggregate(x, higher=False)  # reversed direction: (3, 1.5, 1.5), (1, 3, 2), ...
    np.testing.assert_allclose(score, [7 / 3, 5.5 / 3, 5.5 / 3])
    np.testing.assert_array_equal(rank, [3, 1, 1])


# ----------------------------------------------------------------------------- Kendall's tau


def test_kendall_tau_b_equals_scipy_bit_for_bit():
    rng = np.random.default_rng(5)
    ref = np.array([1, 2, 2, 4, 5, 5, 7, 8])
    samples = rng.integers(1, 6, (400, 8))
    samples[0] = ref
    samples[1] = ref[::-1]
    samples[2] = 3  # all tied: undefined
    got = R.kendall_tau_b(samples, ref)
    want = np.array([sps.kendalltau(s, ref).statistic for s in samples])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])
    assert got[0] == 1.0 and np.isnan(got[2])
    assert np.isnan(R.kendall_tau_b([[1]], [1])).all()  # one loss: no pairs


def test_rank_stability_counts_and_tau():
    """Losses far apart keep their ranks in every sample (tau 1); the two identical best ones always share
    rank 1, so the others take ranks 3 and 4 (ties: minimum rank)."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.4, 0.6, (1, 2, 30))
    m = np.concatenate([base, base + 0.3, base + 0.6, base + 0.6])
    st = R.rank_stability(m, higher=True, n_boot=200, seed=0)
    np.testing.assert_array_equal(
        st.counts[:, :4], [[0, 0, 0, 200], [0, 0, 200, 0], [200, 0, 0, 0], [200, 0, 0, 0]]
    )
    assert st.freq.sum(axis=1).tolist() == [1.0] * 4
    assert st.median_tau == 1.0


def test_rank_stability_draws_are_the_specs():
    """Sample b draws rng.integers(0, n, n) from a fresh default_rng(seed), seeds kept: checked against the
    literal loop."""
    rng = np.random.default_rng(2)
    m = rng.uniform(0, 1, (3, 2, 11))
    st = R.rank_stability(m, higher=False, n_boot=50, seed=9)
    gen = np.random.default_rng(9)
    for b in range(50):
        idx = gen.integers(0, 11, 11)
        vals = m[:, :, idx].mean(axis=2).mean(axis=1)
        np.testing.assert_array_equal(st.ranks[b], sps.rankdata(vals, method="min"))


def test_consensus_leaves_out_and_flags_absent_losses():
    ranks = {"a": {"x": 1, "y": 2, "z": 3}, "b": {"x": 2, "y": 1}, "c": {"x": 3, "y": 1, "z": 2}}
    c = R.consensus(ranks, ["x", "y", "z", "w"])
    np.testing.assert_allclose(c.score[:3], [2.0, 4 / 3, 2.5])
    assert np.isnan(c.score[3])
    assert c.rank.tolist() == [2, 1, 3, 0]
    assert c.absent == [[], [], ["b"], ["a", "b", "c"]]
    tie = R.consensus({"a": {"x": 1, "y": 2}, "b": {"x": 2, "y": 1}}, ["x", "y"])
    assert tie.rank.tolist() == [1, 1]


# ----------------------------------------------------------------------------- identical losses, hd95


def test_identical_losses_give_p_one_zero_width_difference_and_shared_ranks(tmp_path):
    from report_helpers import fake_study, write_study

    from imbaseg.study.report import write_report
    from imbaseg.study.spec import load_study

    study = load_study(write_study(tmp_path / "s.yaml", losses=("bce", "dice", "focal"), seeds=(1, 2)))

    def values(dk, lk, seed, n):
        dice = np.linspace(0.5, 0.9, n) + 0.01 * seed + (0.2 if lk == 2 else 0.0)  # bce == dice; focal better
        return {"dice": dice, "hd95": 10 - dice}

    fake_study(study, tmp_path, n=14, values=values)
    rep = write_report(study, metrics=["dice"], boot=200, root=tmp_path, figures=False).report
    d = rep.datasets[0]
    st, rk = d.stats["dice"], d.ranking["dice"]
    assert st.p[1] == 1.0 and st.p_holm[1] == 1.0 and st.effect_r[1] == 0.0
    assert st.median_diff[1] == st.diff_ci_low[1] == st.diff_ci_high[1] == 0.0
    assert st.ci_low[0] == st.ci_low[1] and st.ci_high[0] == st.ci_high[1]
    assert rk.rank.tolist() == [2, 2, 1]
    assert rk.rta_rank.tolist() == [2, 2, 1]
    assert rk.significance.wins.tolist() == [0, 0, 2] and rk.significance.rank.tolist() == [2, 2, 1]
    assert rk.significance.p[0, 1] == 1.0
    np.testing.assert_array_equal(rk.stability.counts, [[0, 1000, 0], [0, 1000, 0], [1000, 0, 0]])


def test_hd95_lower_is_better_everywhere(tmp_path):
    """Loss 'focal' has the smallest hd95: rank 1 in every method, significant win, r > 0 against the
    reference, and its HD95 cell bold with a dagger."""
    from report_helpers import fake_study, write_study

    from imbaseg.study.report import write_report
    from imbaseg.study.spec import load_study

    study = load_study(write_study(tmp_path / "s.yaml", losses=("bce", "focal"), seeds=(1,)))

    def values(dk, lk, seed, n):
        hd = np.linspace(5, 25, n) - (3.0 + np.linspace(0, 1, n) if lk == 1 else 0.0)
        return {"hd95": hd, "dice": 1 - hd / 30}

    fake_study(study, tmp_path, n=14, values=values)
    res = write_report(study, metrics=["hd95"], boot=200, root=tmp_path, figures=False)
    d = res.report.datasets[0]
    st, rk = d.stats["hd95"], d.ranking["hd95"]
    assert not st.higher_is_better
    assert st.mean[1] < st.mean[0] and rk.rank.tolist() == [2, 1] and rk.rta_rank.tolist() == [2, 1]
    assert rk.significance.wins.tolist() == [0, 1]
    assert st.median_diff[1] < 0 and st.effect_r[1] > 0 and st.p_holm[1] < 0.05
    focal = next(line for line in res.table_md.splitlines() if line.startswith("| Focal"))
    assert f"**{st.mean[1]:.2f}**†" in focal


# ----------------------------------------------------------------------------- S = 1


def test_one_seed_reduces_to_evaluates_image_bootstrap(tmp_path):
    """With S = 1 a loss's interval is summarize()'s (evaluate's summary.json CI) on the same values."""
    from report_helpers import fake_study, write_study

    from imbaseg.metrics import summarize
    from imbaseg.study.report import write_report
    from imbaseg.study.spec import load_study

    study = load_study(write_study(tmp_path / "s.yaml", losses=("bce", "dice"), seeds=(5,)))
    fake_study(study, tmp_path, n=17)
    rep = write_report(study, metrics=["dice", "hd95"], boot=500, seed=2, root=tmp_path, figures=False).report
    d = rep.datasets[0]
    for metric in ("dice", "hd95"):
        m = d.array(metric)
        for k in range(2):
            s = summarize(m[k, 0], n_boot=500, seed=2)
            st = d.stats[metric]
            assert (st.mean[k], st.ci_low[k], st.ci_high[k]) == (s["mean"], s["ci_low"], s["ci_high"])
            assert st.seed_sd[k] == 0.0


@pytest.mark.parametrize("n_losses", [1, 2])
def test_few_losses(n_losses):
    """One loss: rank 1 everywhere, no pairs, tau undefined; two: everything defined."""
    m = np.random.default_rng(0).uniform(0, 1, (n_losses, 2, 6))
    x = R.seed_average(m)
    assert R.aggregate_then_rank(m, True)[1].tolist()[0] in (1, 2)
    sig = R.significance_ranking(x, True)
    assert sig.p.shape == (n_losses, n_losses)
    st = R.rank_stability(m, True, n_boot=20)
    assert np.isnan(st.median_tau) == (n_losses == 1)
