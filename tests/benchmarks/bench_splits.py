"""The CVC near-duplicate split at full size (612 frames): time of each step, median of 5 rounds.

    python tests/benchmarks/bench_splits.py            # median of 5 rounds
    python tests/benchmarks/bench_splits.py --quick    # 1 round

Synthetic 24x32 thumbnails (random), so only the times mean something: the all-pairs similarity
(one matrix product per shift), its connected components, and dealing the groups to the splits.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from imbaseg.data import splits as sp


def median_time(fn, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round instead of five")
    rounds = 1 if parser.parse_args().quick else 5
    thumbs = list(np.random.default_rng(0).integers(0, 256, (612, *sp.THUMB_HW), dtype=np.uint8))
    sp.similarity_matrix(thumbs[:2])  # imports
    sim = sp.similarity_matrix(thumbs)
    groups = sp.near_duplicate_groups(sim)
    rows = [
        ("similarity_matrix (187,266 pairs)", median_time(lambda: sp.similarity_matrix(thumbs), rounds)),
        ("near_duplicate_groups", median_time(lambda: sp.near_duplicate_groups(sim), rounds)),
        ("group_split", median_time(lambda: sp.group_split(groups, sp.CVC_COUNTS, 42), rounds)),
    ]
    for name, seconds in rows:
        print(f"{name:36s} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
