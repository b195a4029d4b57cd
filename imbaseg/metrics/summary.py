"""Aggregation over images: mean, std, median and a bootstrap 95% CI; the paired Wilcoxon test."""

from __future__ import annotations

import numpy as np

from imbaseg.errors import UserError
from imbaseg.metrics._masks import to_numpy
from imbaseg.metrics.stats import N_BOOT, analyse, bootstrap_draws, replicate_means, wilcoxon_p

SUMMARY_KEYS = ("mean", "std", "median", "ci_low", "ci_high", "n")


def _values(values, name: str) -> np.ndarray:
    v = to_numpy(values, name).astype(np.float64).ravel()
    if v.size == 0:
        raise UserError(f"{name} is empty: there is nothing to summarize or compare.")
    if not np.isfinite(v).all():
        raise UserError(f"{name} contains NaN or infinite values; per-image metrics are always finite.")
    return v


def bootstrap_means(values, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``values``, shape (n_boot,).

    Resample b takes the indices of the b-th ``rng.integers(0, n, n)`` of ``np.random.default_rng(seed)``:
    the spec's bootstrap with one seed (``imbaseg.metrics.stats``), so a run's CI equals the one a
    comparison of runs reports for it.
    """
    v = _values(values, "values")
    draws = bootstrap_draws(1, v.size, n_boot, seed)
    return replicate_means(v[None, None, :], draws)[0]


def summarize(values, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """mean, std (ddof=1; 0 for one value), median, 95% percentile-bootstrap CI of the mean, n.

    values: 1-D per-image values (finite). n_boot=10,000 resamples and seed=0 are the spec's choice, so the
    CI of a given list is reproducible. Identical values give a zero-width CI at that value. The numbers
    are ``analyse`` of one run with one seed, bit for bit.
    """
    v = _values(values, "values")
    st = analyse(v[None, None, :], bootstrap_draws(1, v.size, n_boot, seed))
    return {
        "mean": float(st.mean[0]),
        "std": float(st.image_sd[0]),
        "median": float(st.median[0]),
        "ci_low": float(st.ci_low[0]),
        "ci_high": float(st.ci_high[0]),
        "n": int(v.size),
    }


def paired_wilcoxon(a, b) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test on paired per-image values (scipy defaults:
    zero differences dropped, exact distribution for small n without ties).

    All differences zero -> 1.0 (no evidence of a difference; scipy would warn and divide by zero).
    One pair -> 1.0, which is also scipy's exact answer. Different lengths or NaN -> UserError.
    """
    x, y = _values(a, "a"), _values(b, "b")
    if x.size != y.size:
        raise UserError(f"paired values need the same images: a has {x.size} values and b has {y.size}.")
    return wilcoxon_p(x - y)
