"""Statistics over per-image values of several runs, exactly as ``../shared/spec/study.md`` defines them.

Shapes: ``m[L, S, n]`` = runs or losses x seeds x images (images in id order sorted as text, seeds
ascending); ``evaluate`` and ``compare`` have S = 1. Pure numpy/scipy, no file I/O.

- ``bootstrap_draws``: the spec's hierarchical bootstrap draws (B replicates; S seed indices, then n
  image indices, from ``numpy.random.default_rng(seed)``), the same for every run and metric of a dataset.
- ``analyse``: per run the mean, seed and image SD, median and percentile CI; per run against the
  reference the median paired difference with its CI, the two-sided Wilcoxon p, Holm-adjusted p and
  the effect size r = Z / sqrt(n).
- ``holm``, ``wilcoxon_p``, ``effect_size_r``, ``round_sig``: the pieces, for an independent check.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from imbaseg.errors import UserError
from imbaseg.metrics.per_image import HIGHER_IS_BETTER

N_BOOT = 10_000  # the spec's replicates
LEVEL = 0.95  # percentile interval: the 2.5th and 97.5th percentiles
_CHUNK = 1 << 22  # values handled at once (32 MiB of float64): bounds memory for large B x n


def higher_is_better(metric: str) -> bool:
    """False for hd95 and assd (distances), True for every other metric (dice, ..., auc_*)."""
    return HIGHER_IS_BETTER.get(metric, True)


def round_sig(x, digits: int = 12) -> np.ndarray:
    """``x`` rounded to ``digits`` significant digits (decimal, correctly rounded), same shape.

    The spec rounds the seed-averaged values so that summation order cannot decide which differences tie.
    """
    a = np.asarray(x, dtype=np.float64)
    flat = [float(f"{v:.{digits - 1}e}") for v in a.ravel().tolist()]
    return np.array(flat, dtype=np.float64).reshape(a.shape)


def _cube(m, name: str = "values") -> np.ndarray:
    """``m`` as a finite float64 array (L, S, n) with every size >= 1; UserError otherwise."""
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 3 or 0 in a.shape:
        raise UserError(f"{name} must be a non-empty array of shape (runs, seeds, images), got {a.shape}")
    if not np.isfinite(a).all():
        raise UserError(f"{name} contains NaN or infinite values; per-image metrics are always finite.")
    return a


# ----------------------------------------------------------------------------- the bootstrap draws


@dataclass
class Draws:
    """The bootstrap draws of one dataset: ``seeds`` (B, S) and ``images`` (B, n) indices (int64)."""

    seeds: np.ndarray
    images: np.ndarray

    @property
    def n_boot(self) -> int:
        return int(self.images.shape[0])

    @cached_property
    def image_counts(self) -> np.ndarray:
        """(B, n) int32: how often replicate b drew image i."""
        b, n = self.images.shape
        flat = (self.images + n * np.arange(b)[:, None]).ravel()
        return np.bincount(flat, minlength=b * n).astype(np.int32).reshape(b, n)

    @cached_property
    def seed_patterns(self) -> tuple[np.ndarray, np.ndarray]:
        """(P, S) distinct drawn seed multisets (sorted rows) and (B,) the pattern of each replicate."""
        patterns, inverse = np.unique(np.sort(self.seeds, axis=1), axis=0, return_inverse=True)
        return patterns, inverse.reshape(-1)


def bootstrap_draws(n_seeds: int, n_images: int, n_boot: int = N_BOOT, seed: int = 0) -> Draws:
    """The spec's draws from a fresh ``numpy.random.default_rng(seed)``.

    Replicate b = 0..B-1 draws ``rng.integers(0, S, S)`` (seeds), then ``rng.integers(0, n, n)``
    (images). Done here as one ``rng.integers`` call per chunk of replicates with a bound per draw:
    numpy consumes the generator draw by draw, so this equals the spec's loop bit for bit (rejections
    included; tests/metrics/test_stats.py checks it against the literal loop) at a tenth of its time.
    With S = 1 the seed draws consume nothing, as in the spec.
    """
    for name, v in (("n_seeds", n_seeds), ("n_images", n_images), ("n_boot", n_boot)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise UserError(f"{name} must be a positive integer, got {v!r}.")
    rng = np.random.default_rng(seed)
    per = n_seeds + n_images
    bounds = np.concatenate([np.full(n_seeds, n_seeds), np.full(n_images, n_images)]).astype(np.int64)
    out = np.empty((n_boot, per), dtype=np.int64)
    rows = max(1, _CHUNK // per)
    for start in range(0, n_boot, rows):
        stop = min(start + rows, n_boot)
        out[start:stop] = rng.integers(0, np.tile(bounds, stop - start)).reshape(stop - start, per)
    return Draws(np.ascontiguousarray(out[:, :n_seeds]), np.ascontiguousarray(out[:, n_seeds:]))


def _check_draws(m: np.ndarray, draws: Draws) -> None:
    _, s, n = m.shape
    if draws.seeds.shape[1] != s or draws.images.shape[1] != n:
        raise ValueError(
            f"draws for {draws.seeds.shape[1]} seeds x {draws.images.shape[1]} images, values have {s} x {n}"
        )


def _row_chunks(n_boot: int, n: int):
    rows = max(1, _CHUNK // n)
    for start in range(0, n_boot, rows):
        yield slice(start, min(start + rows, n_boot))


def replicate_means(m, draws: Draws) -> np.ndarray:
    """(L, B): replicate b's mean of ``m[l, s*, i*]`` over its drawn seeds and images.

    Per drawn seed the image mean is ``m[l, s][images[b]].mean()``; then the mean over the drawn seeds.
    Rows are computed independently of L, so one run alone gives the same numbers as inside a group.
    """
    m = _cube(m)
    _check_draws(m, draws)
    n_runs, n_seeds, n = m.shape
    out = np.empty((n_runs, draws.n_boot), dtype=np.float64)
    for rows in _row_chunks(draws.n_boot, n):
        idx, seeds = draws.images[rows], draws.seeds[rows]
        for k in range(n_runs):
            per_seed = np.stack([m[k, s][idx].mean(axis=1) for s in range(n_seeds)], axis=1)
            out[k, rows] = np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)
    return out


def _weighted_medians(d: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row of ``counts`` (r, n), the median of the multiset holding d[i] counts[., i] times (n in all).

    Equals ``np.median`` of the drawn values bit for bit (the mean of the two middle ones for even n).
    """
    n = d.size
    order = np.argsort(d, kind="stable")
    ds = d[order]
    cum = np.cumsum(counts[:, order], axis=1, dtype=np.int32)
    lo = ds[np.count_nonzero(cum <= (n - 1) // 2, axis=1)]
    hi = ds[np.count_nonzero(cum <= n // 2, axis=1)]
    return (lo + hi) / 2


def replicate_median_diffs(m, reference: int, draws: Draws) -> np.ndarray:
    """(L, B): replicate b's median over its drawn images of the drawn-seed mean of m[l] - m[ref].

    The row of the reference is 0. Replicates with the same drawn seed multiset share the per-image
    differences, so each multiset sorts them once and the medians are weighted medians of the counts.
    """
    m = _cube(m)
    _check_draws(m, draws)
    n_runs, _, n = m.shape
    others = [k for k in range(n_runs) if k != reference]
    diff = m[others] - m[reference]
    patterns, inverse = draws.seed_patterns
    out = np.zeros((n_runs, draws.n_boot), dtype=np.float64)
    for p, seeds in enumerate(patterns):
        members = np.flatnonzero(inverse == p)
        d = diff[:, seeds].mean(axis=1)  # (K, n): the drawn-seed mean of each run's differences
        for rows in _row_chunks(members.size, n):
            sel = members[rows]
            counts = draws.image_counts[sel]
            for j, k in enumerate(others):
                out[k, sel] = _weighted_medians(d[j], counts)
    return out


def percentile_ci(replicates, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval along the last axis (numpy's linear interpolation): (low, high)."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(np.asarray(replicates, dtype=np.float64), [tail, 100 - tail], axis=-1)
    return low, high


# ----------------------------------------------------------------------------- paired tests


def wilcoxon_p(d) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences ``d`` (scipy defaults: zeros dropped).

    All differences zero, or fewer than two -> 1.0 (no evidence of a difference; scipy would divide by 0).
    """
    d = np.asarray(d, dtype=np.float64).ravel()
    if d.size < 2 or not np.any(d):
        return 1.0
    from scipy.stats import wilcoxon  # here, not at the top: scipy.stats takes ~1 s to import

    return float(wilcoxon(d).pvalue)


def effect_size_r(d, n_images: int | None = None, higher: bool = True) -> float:
    """r = Z / sqrt(n) of paired differences ``d`` (run minus reference).

    Z: normal approximation of the signed-rank statistic W+ after dropping zero differences, with the
    tie correction and no continuity correction; n: the number of images (zeros included). Signed
    positive when the run is better (``higher``: larger values are better). All zero -> 0.0.
    """
    from scipy.stats import rankdata

    d = np.asarray(d, dtype=np.float64).ravel()
    n = d.size if n_images is None else int(n_images)
    nz = d[d != 0]
    k = nz.size
    if k == 0:
        return 0.0
    a = np.abs(nz)
    w_plus = rankdata(a)[nz > 0].sum()
    _, ties = np.unique(a, return_counts=True)
    var = k * (k + 1) * (2 * k + 1) / 24 - float(np.sum(ties**3 - ties)) / 48
    z = (w_plus - k * (k + 1) / 4) / np.sqrt(var)
    return float((z if higher else -z) / np.sqrt(n))


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order (step-down, running maximum, capped at 1).

    Empty input -> empty array.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (p.size - np.arange(p.size))
    out = np.empty_like(p)
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


# ----------------------------------------------------------------------------- everything for one metric


@dataclass
class MetricStats:
    """``analyse``'s result for one dataset and metric: arrays of length L (runs in the given order).

    The test fields (median_diff, diff_ci_*, p, p_holm, effect_r) are NaN at the reference.
    """

    higher_is_better: bool
    reference: int
    n_images: int
    n_seeds: int
    n_boot: int
    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    seed_sd: np.ndarray
    image_sd: np.ndarray
    median: np.ndarray
    median_diff: np.ndarray
    diff_ci_low: np.ndarray
    diff_ci_high: np.ndarray
    p: np.ndarray
    p_holm: np.ndarray
    effect_r: np.ndarray


def _spread(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mean (grand), seed SD (ddof 1; 0 for S = 1), image SD and median of the seed averages."""
    n_runs, n_seeds, n = m.shape
    per_seed = m.mean(axis=2)
    x = m.mean(axis=1)
    seed_sd = per_seed.std(axis=1, ddof=1) if n_seeds > 1 else np.zeros(n_runs)
    image_sd = x.std(axis=1, ddof=1) if n > 1 else np.zeros(n_runs)
    return per_seed.mean(axis=1), seed_sd, image_sd, np.median(x, axis=1)


def analyse(m, draws: Draws, reference: int = 0, higher: bool = True) -> MetricStats:
    """Summaries of every run and paired tests against ``reference`` for one metric of one dataset.

    m: (L, S, n) per-image values. draws: ``bootstrap_draws(S, n, B, seed)`` of the dataset. A run
    whose values are all equal gets that value as mean, median and a zero-width interval, and SDs of 0.
    Identical runs give p = 1, r = 0 and a zero-width difference interval.
    """
    m = _cube(m)
    n_runs, n_seeds, n = m.shape
    if not 0 <= reference < n_runs:
        raise ValueError(f"reference {reference} out of range for {n_runs} runs")
    mean, seed_sd, image_sd, median = _spread(m)
    low, high = percentile_ci(replicate_means(m, draws))
    for k in range(n_runs):
        if np.all(m[k] == m[k].flat[0]):
            mean[k] = median[k] = low[k] = high[k] = m[k].flat[0]
            seed_sd[k] = image_sd[k] = 0.0
    nan = np.full(n_runs, np.nan)
    tests = {key: nan.copy() for key in ("median_diff", "diff_ci_low", "diff_ci_high", "p", "effect_r")}
    x = round_sig(m.mean(axis=1))
    others = [k for k in range(n_runs) if k != reference]
    for k in others:
        d = x[k] - x[reference]
        tests["median_diff"][k] = np.median(d)
        tests["p"][k] = wilcoxon_p(d)
        tests["effect_r"][k] = effect_size_r(d, n, higher)
    if others:
        d_low, d_high = percentile_ci(replicate_median_diffs(m, reference, draws)[others])
        tests["diff_ci_low"][others], tests["diff_ci_high"][others] = d_low, d_high
    p_holm = nan.copy()
    p_holm[others] = holm(tests["p"][others])
    return MetricStats(
        higher_is_better=higher,
        reference=reference,
        n_images=n,
        n_seeds=n_seeds,
        n_boot=draws.n_boot,
        mean=mean,
        ci_low=low,
        ci_high=high,
        seed_sd=seed_sd,
        image_sd=image_sd,
        median=median,
        p_holm=p_holm,
        **tests,
    )
