"""Train/val/test split rules: seeded proportional splits, held-out validation, sequence-aware CVC splits.

Pure functions over id lists; nothing here reads files. Every random choice takes an explicit seed
and uses ``numpy.random.default_rng(seed)``, so the same ids and seed give the same split anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from imbaseg.errors import UserError

SPLITS = ("train", "val", "test")
CVC_COUNTS = (392, 98, 122)  # the study's split of the 612 CVC-ClinicDB frames
CVC_FRACTIONS = tuple(c / 612 for c in CVC_COUNTS)
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)  # folder datasets and the synthetic ones
# Motion-compensated frame difference (see frame_difference; 0..1 on 40x30 grey thumbnails) above
# which a new video sequence starts. On the shared CVC sample, a frame panned by up to 24 px or
# brightened 15% differs from itself by <= 0.035 and zoomed 5% by ~0.055, while different frames
# differ by 0.06 to 0.23 (5th percentile 0.08); tests/data/test_splits.py re-measures this.
SEQUENCE_THRESHOLD = 0.05


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers by value: ``img2`` < ``img10``; letters case-insensitively.

    The one natural order: file listings (sources) and the ids that are split (prepare) both use it.
    """
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """Counts summing to ``n`` in the given proportions (largest remainder), each >= 1 when n allows.

    Example: n=20 with CVC's 392/98/122 proportions -> 12.81/3.20/3.99 -> (13, 3, 4).
    """
    if n < 0 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise UserError(f"cannot split {n} items in proportions {tuple(fractions)}.")
    total = float(sum(fractions))
    exact = [n * f / total for f in fractions]
    counts = [int(np.floor(x)) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if n >= len(counts):  # never leave a requested split empty
        for i, f in enumerate(fractions):
            if f > 0 and counts[i] == 0:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[i] += 1
    return tuple(counts)


def cvc_counts(n: int) -> tuple[int, int, int]:
    """392/98/122 for the full 612 frames, the same proportions otherwise."""
    return CVC_COUNTS if n == 612 else split_counts(n, CVC_FRACTIONS)


def random_split(ids: Sequence[str], counts: Sequence[int], seed: int, names=SPLITS) -> dict[str, str]:
    """Assign ``counts[k]`` randomly chosen ids to ``names[k]``; the permutation is seeded."""
    if sum(counts) != len(ids):
        raise ValueError(f"split counts {tuple(counts)} do not add up to {len(ids)} ids")
    order = np.random.default_rng(seed).permutation(len(ids))
    out, start = {}, 0
    for name, count in zip(names, counts, strict=True):
        for j in order[start : start + count]:
            out[ids[j]] = name
        start += count
    return out


def hold_out(ids: Sequence[str], k: int, seed: int, name: str = "val", rest: str = "train") -> dict[str, str]:
    """``k`` seeded random ids go to ``name``, the others to ``rest`` (DRIVE: 4 of 20 to val)."""
    k = min(k, max(len(ids) - 1, 0))
    return random_split(list(ids), (len(ids) - k, k), seed, names=(rest, name))


def frame_difference(a: np.ndarray, b: np.ndarray, reach: int = 2) -> float:
    """Motion-compensated difference of two grey thumbnails (floats in 0..1, same shape).

    The smallest mean |a - b| over shifts of up to ``reach`` thumbnail pixels (one pixel of a 40x30
    thumbnail is ~10 px of a 384x288 frame), after removing each crop's mean brightness: a camera
    that pans or changes exposure between frames still gives a small value.
    """
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    r = reach
    core = b[r : b.shape[0] - r, r : b.shape[1] - r]
    core = core - core.mean()
    best = np.inf
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            win = a[r + dy : a.shape[0] - r + dy, r + dx : a.shape[1] - r + dx]
            best = min(best, float(np.abs(win - win.mean() - core).mean()))
    return best


def frame_differences(thumbs: Sequence[np.ndarray]) -> np.ndarray:
    """``frame_difference`` of each thumbnail and the one before it; length len(thumbs) - 1."""
    return np.array([frame_difference(thumbs[i - 1], thumbs[i]) for i in range(1, len(thumbs))])


def sequence_groups(thumbs: Sequence[np.ndarray], threshold: float = SEQUENCE_THRESHOLD) -> list[int]:
    """Group index per frame (frames in id order): a new group starts where the difference > threshold."""
    starts = frame_differences(thumbs) > threshold
    return [0] + list(np.cumsum(starts).astype(int)) if len(thumbs) else []


def group_split(groups: Sequence[int], counts: Sequence[int], seed: int) -> list[str]:
    """Split whole groups: visit groups in seeded random order, give each to the neediest split.

    Need = (target - assigned) / target, so large groups never starve a small split for long;
    final counts are close to ``counts`` but not exact when groups are large.
    """
    labels = sorted(set(groups))
    sizes = {g: 0 for g in labels}
    for g in groups:
        sizes[g] += 1
    order = np.random.default_rng(seed).permutation(len(labels))
    assigned, target = [0] * len(counts), [max(c, 1e-9) for c in counts]
    owner = {}
    for j in order:
        g = labels[j]
        need = [
            (target[k] - assigned[k]) / target[k] if counts[k] > 0 else -np.inf for k in range(len(counts))
        ]
        k = int(np.argmax(need))
        owner[g] = k
        assigned[k] += sizes[g]
    return [SPLITS[owner[g]] for g in groups]
