"""The study's rankings of losses, exactly as ``../shared/spec/study.md`` ("Rankings") defines them.

Pure numpy/scipy over arrays, no file I/O. Shapes: ``m[L, S, n]`` (losses x seeds x images, images in
id order sorted as text, seeds ascending), ``x[L, n]`` = the seed averages rounded to 12 significant
digits (``seed_average``), ``mean[L]`` the grand means. ``higher``: larger values are better (False
for hd95 and assd).

- ``aggregate_then_rank``: rank by the grand mean (ties: minimum rank);
- ``rank_then_aggregate``: per image rank (ties: average), mean rank per loss, rank it (ties: minimum);
- ``significance_ranking``: one-sided Wilcoxon for every ordered pair, Holm over all L(L-1), wins;
- ``rank_stability``: B_rank = 1000 image bootstraps (seeds kept) -> rank frequencies and Kendall's tau-b;
- ``consensus``: the mean aggregate-then-rank rank over datasets (absent losses left out and flagged).

Means are compared after rounding to 12 significant digits (as the spec does for ``x``), so that two
losses with mathematically equal means tie whatever order their values were summed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imbaseg.metrics.stats import Draws, bootstrap_draws, holm, replicate_means, round_sig

N_RANK_BOOT = 1_000  # the spec's B_rank
ALPHA = 0.05  # adjusted p below this counts as a win / a dagger


def seed_average(m) -> np.ndarray:
    """x[L, n] = round((1/S) sum_s m[l, s, i], 12 significant digits)."""
    return round_sig(np.asarray(m, dtype=np.float64).mean(axis=1))


def grand_mean(m) -> np.ndarray:
    """mean[L] = (1/S) sum_s (1/n) sum_i m[l, s, i]."""
    return np.asarray(m, dtype=np.float64).mean(axis=2).mean(axis=1)


def min_ranks(scores, higher: bool) -> np.ndarray:
    """Ranks 1..L along the last axis, best first, ties share the minimum rank (int64, same shape)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    return rankdata(-s if higher else s, method="min", axis=-1).astype(np.int64)


# ----------------------------------------------------------------------------- 1. aggregate-then-rank


def aggregate_then_rank(m, higher: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean[L], rank[L]): the grand means and their ranks (ties: minimum)."""
    mean = grand_mean(m)
    return mean, min_ranks(round_sig(mean), higher)


# ----------------------------------------------------------------------------- 2. rank-then-aggregate


def rank_then_aggregate(x, higher: bool) -> tuple[np.ndarray, np.ndarray]:
    """(score[L], rank[L]): per image the losses ranked by x[l, i] (ties: average rank), score = the mean
    rank over images, ranked with lower better (ties: minimum).

    The per-image ranks are multiples of 1/2, so their sums are exact and equal scores tie exactly.
    """
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64)
    per_image = rankdata(-x if higher else x, method="average", axis=0)  # (L, n)
    score = per_image.sum(axis=1) / x.shape[1]
    return score, min_ranks(score, higher=False)


# ----------------------------------------------------------------------------- 3. significance ranking


def one_sided_p(d, higher: bool) -> float:
    """One-sided Wilcoxon signed-rank p that the differences ``d`` (l minus k) favour l (scipy defaults:
    zeros dropped). All differences zero -> 1.0 (no evidence; scipy would divide by zero)."""
    d = np.asarray(d, dtype=np.float64).ravel()
    if not np.any(d):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(d, alternative="greater" if higher else "less").pvalue)


@dataclass
class Significance:
    """The significance ranking of one dataset and metric: ``p[l, k]`` (raw) and ``p_holm[l, k]`` of
    the one-sided test that l is better than k (NaN on the diagonal), ``wins[l]`` and ``rank[l]``."""

    p: np.ndarray
    p_holm: np.ndarray
    wins: np.ndarray
    rank: np.ndarray


def significance_ranking(x, higher: bool, alpha: float = ALPHA) -> Significance:
    """One-sided Wilcoxon for every ordered pair on x[L, n]; Holm over all L(L-1) p-values; the score of
    l is the number of losses it beats at adjusted p < alpha; ranked higher-better (ties: minimum).
    L = 1: no pairs, score 0, rank 1."""
    x = np.asarray(x, dtype=np.float64)
    n_losses = x.shape[0]
    p = np.full((n_losses, n_losses), np.nan)
    pairs = [(a, b) for a in range(n_losses) for b in range(n_losses) if a != b]
    for a, b in pairs:
        p[a, b] = one_sided_p(x[a] - x[b], higher)
    p_holm = np.full_like(p, np.nan)
    if pairs:
        rows, cols = np.array(pairs).T
        p_holm[rows, cols] = holm(p[rows, cols])
    wins = np.sum(np.nan_to_num(p_holm, nan=1.0) < alpha, axis=1).astype(np.int64)
    return Significance(p, p_holm, wins, min_ranks(wins, higher=True))


# ----------------------------------------------------------------------------- 4. rank stability


def kendall_tau_b(samples, reference) -> np.ndarray:
    """Kendall's tau-b between each row of ``samples`` (B, L) and ``reference`` (L,), as scipy's
    ``kendalltau`` computes it (the same formula and operation order): (concordant - discordant) /
    sqrt(pairs untied in the row) / sqrt(pairs untied in the reference), clipped to [-1, 1]. NaN where
    either side is all tied (or L < 2), as scipy returns."""
    a = np.atleast_2d(np.asarray(samples, dtype=np.float64))
    r = np.asarray(reference, dtype=np.float64)
    i, j = np.triu_indices(r.size, k=1)
    sa, sr = np.sign(a[:, i] - a[:, j]), np.sign(r[i] - r[j])
    num = (sa * sr).sum(axis=1)
    untied_a, untied_r = np.abs(sa).sum(axis=1), np.abs(sr).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = num / np.sqrt(untied_a) / np.sqrt(untied_r)
    tau = np.minimum(1.0, np.maximum(-1.0, tau))
    tau[(untied_a == 0) | (untied_r == 0)] = np.nan
    return tau


@dataclass
class Stability:
    """Bootstrap rank stability: ``counts[l, r - 1]`` = samples in which loss l took rank r,
    ``ranks`` (B, L) the samples' rankings, ``tau`` (B,) Kendall's tau-b of each against the full-data
    ranking and ``median_tau`` their median (samples with an undefined tau left out; NaN if all are)."""

    counts: np.ndarray
    ranks: np.ndarray
    tau: np.ndarray
    median_tau: float

    @property
    def freq(self) -> np.ndarray:
        """(L, L) fraction of samples in which loss l took rank r (column r - 1)."""
        return self.counts / self.ranks.shape[0]


def rank_stability(m, higher: bool, n_boot: int = N_RANK_BOOT, seed: int = 0) -> Stability:
    """B bootstrap samples of the images (every seed kept) from a fresh ``default_rng(seed)``: sample b
    draws ``rng.integers(0, n, n)``; its value per loss is the mean over all seeds and the drawn images,
    ranked as ``aggregate_then_rank`` does."""
    m = np.asarray(m, dtype=np.float64)
    n_losses, n_seeds, n = m.shape
    images = bootstrap_draws(1, n, n_boot, seed).images  # S = 1 consumes no draws: rng.integers(0, n, n)
    every_seed = np.broadcast_to(np.arange(n_seeds), (n_boot, n_seeds))
    values = replicate_means(m, Draws(every_seed, images)).T  # (B, L)
    ranks = min_ranks(round_sig(values), higher)
    full = aggregate_then_rank(m, higher)[1]
    counts = np.zeros((n_losses, n_losses), dtype=np.int64)
    for k in range(n_losses):
        counts[k] = np.bincount(ranks[:, k] - 1, minlength=n_losses)
    tau = kendall_tau_b(ranks, full)
    median_tau = float(np.median(tau[~np.isnan(tau)])) if np.any(~np.isnan(tau)) else float("nan")
    return Stability(counts, ranks, tau, median_tau)


# ----------------------------------------------------------------------------- 5. consensus


@dataclass
class Consensus:
    """Per loss (the given order): ``score`` = mean aggregate-then-rank rank over the datasets that have
    it (NaN when none), ``rank`` (ties: minimum; 0 when absent everywhere), ``absent`` = the datasets
    that lack it."""

    losses: list[str]
    score: np.ndarray
    rank: np.ndarray
    absent: list[list[str]]


def consensus(ranks: dict[str, dict[str, int]], losses: list[str]) -> Consensus:
    """``ranks``: dataset -> {loss: aggregate-then-rank rank}; ``losses``: every loss, in order."""
    score = np.full(len(losses), np.nan)
    absent: list[list[str]] = []
    for k, loss in enumerate(losses):
        have = [r[loss] for r in ranks.values() if loss in r]
        absent.append([d for d, r in ranks.items() if loss not in r])
        if have:
            score[k] = np.sum(have, dtype=np.float64) / len(have)
    rank = np.zeros(len(losses), dtype=np.int64)
    present = ~np.isnan(score)
    if present.any():
        rank[present] = min_ranks(round_sig(score[present]), higher=False)
    return Consensus(list(losses), score, rank, absent)
