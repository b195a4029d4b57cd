"""Speed of the comparison statistics (imbaseg.metrics.stats) at the loss study's size.

    python tests/benchmarks/bench_stats.py [--quick] [--datasets 3] [--losses 8] [--seeds 3] [--images 200]
                                           [--boot 10000] [--metrics 10]

The study report's budget: 3 datasets x 8 losses x 3 seeds x 200 images x 10,000 replicates in < 30 s on
2 cores. Per dataset: one ``bootstrap_draws`` (shared by every metric), then ``analyse`` per metric (CIs of
every loss, median-difference CIs, Wilcoxon, Holm and r against the reference). Also times the spec's literal
per-replicate draw loop, which ``bootstrap_draws`` replaces with one call (the same numbers, bit for bit).
--quick: 1,000 replicates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from imbaseg.metrics.stats import analyse, bootstrap_draws  # noqa: E402


def literal_draws(n_seeds: int, n: int, n_boot: int) -> float:
    """Seconds of the spec's loop (two generator calls per replicate), for comparison."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for _ in range(n_boot):
        rng.integers(0, n_seeds, n_seeds)
        rng.integers(0, n, n)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--datasets", type=int, default=3)
    p.add_argument("--losses", type=int, default=8)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--boot", type=int, default=None)
    p.add_argument("--metrics", type=int, default=10)
    a = p.parse_args(argv)
    n_boot = a.boot or (1_000 if a.quick else 10_000)
    rng = np.random.default_rng(0)
    analyse(rng.random((2, 1, 5)), bootstrap_draws(1, 5, 10))  # imports scipy.stats outside the timing
    t_draws = t_analyse = 0.0
    for _ in range(a.datasets):
        t0 = time.perf_counter()
        draws = bootstrap_draws(a.seeds, a.images, n_boot)
        t_draws += time.perf_counter() - t0
        for _ in range(a.metrics):
            m = np.clip(rng.beta(6, 2, a.images) + rng.normal(0, 0.05, (a.losses, a.seeds, a.images)), 0, 1)
            t0 = time.perf_counter()
            analyse(m, draws)
            t_analyse += time.perf_counter() - t0
    loop = literal_draws(a.seeds, a.images, n_boot)
    print(
        f"{a.datasets} datasets x {a.losses} losses x {a.seeds} seeds x {a.images} images x "
        f"{n_boot} replicates, {a.metrics} metrics"
    )
    print(f"  bootstrap_draws: {t_draws:.2f} s in all ({t_draws / a.datasets:.3f} s per dataset)")
    print(f"  spec's literal draw loop, for comparison: {loop:.3f} s per dataset")
    per = t_analyse / (a.datasets * a.metrics)
    print(f"  analyse: {t_analyse:.2f} s in all ({per:.3f} s per dataset and metric)")
    print(f"  total: {t_draws + t_analyse:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
