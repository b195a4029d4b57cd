"""Aggregation over images: mean, std, median and a bootstrap 95% CI; the paired Wilcoxon test."""

from __future__ import annotations

import numpy as np

from imbaseg.errors import UserError
from imbaseg.metrics._masks import to_numpy

SUMMARY_KEYS = ("mean", "std", "median", "ci_low", "ci_high", "n")
_CHUNK = 1 << 22  # resampled values drawn at once: bounds memory (32 MiB of float64) for large n


def _values(values, name: str) -> np.ndarray:
    v = to_numpy(values, name).astype(np.float64).ravel()
    if v.size == 0:
        raise UserError(f"{name} is empty: there is nothing to summarize or compare.")
    if not np.isfinite(v).all():
        raise UserError(f"{name} contains NaN or infinite values; per-image metrics are always finite.")
    return v


def bootstrap_means(values, n_boot: int = 10_000, seed: int = 0) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``values``, shape (n_boot,).

    Resample b takes indices floor(u * n) from the b-th block of n uniforms of
    ``np.random.default_rng(seed).random``, so the result does not depend on how the draws are chunked.
    """
    v = _values(values, "values")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise UserError(f"n_boot must be a positive integer, got {n_boot!r}.")
    rng = np.random.default_rng(seed)
    n, rows = v.size, max(1, _CHUNK // v.size)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(start + rows, n_boot)
        idx = (rng.random((stop - start, n)) * n).astype(np.intp)
        means[start:stop] = v[idx].mean(axis=1)
    return means


def summarize(values, n_boot: int = 10_000, seed: int = 0) -> dict:
    """mean, std (ddof=1; 0 for one value), median, 95% percentile-bootstrap CI of the mean, n.

    values: 1-D per-image values (finite). n_boot=10,000 resamples and seed=0 are the spec's choice, so the
    CI of a given list is reproducible. Identical values give a zero-width CI at that value.
    """
    v = _values(values, "values")
    n = int(v.size)
    if np.all(v == v[0]):
        c = float(v[0])
        return {"mean": c, "std": 0.0, "median": c, "ci_low": c, "ci_high": c, "n": n}
    low, high = np.percentile(bootstrap_means(v, n_boot, seed), [2.5, 97.5])
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)),
        "median": float(np.median(v)),
        "ci_low": float(low),
        "ci_high": float(high),
        "n": n,
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
    if x.size < 2 or np.all(x == y):
        return 1.0
    from scipy.stats import wilcoxon  # here, not at the top: scipy.stats takes ~1 s to import

    return float(wilcoxon(x, y, alternative="two-sided").pvalue)
