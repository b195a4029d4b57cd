"""Train/val/test split rules: seeded proportional splits, held-out validation, CVC splits by near-duplicates.

Pure functions over id lists and thumbnails; nothing here reads files. Every random choice takes an
explicit seed and uses ``numpy.random.default_rng(seed)``, so the same ids and seed give the same split
anywhere.

Near-duplicates (``--split-by-sequence``): two frames are near-duplicates when ``similarity_matrix``
says > ``NEAR_DUPLICATE``. The split's guarantee is judged over all pairs, not only neighbours: frames
are grouped into the connected components of the near-duplicate graph and whole groups are dealt to
the splits, so no near-duplicate pair lies across two splits. The README ("--split-by-sequence")
gives the measurements behind the measure and its threshold; tests/data/test_splits.py re-measures them.
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
THUMB_HW = (24, 32)  # grey thumbnail (H, W): one pixel is a 12x12 block of a 288x384 CVC frame
DETAIL_SIGMA = 3.0  # thumbnail px; the Gaussian blur subtracted: every colonoscopy frame shares its layout
MARGIN = 4  # thumbnail px left out on each side: the black octagon around every CVC frame
REACH = 1  # thumbnail px of shift tolerated (12 px of a CVC frame): camera motion between frames
# Similarity above which two frames are near-duplicates. On the shared 20-frame CVC sample, frames of
# different videos reach at most 0.56 (and 0.22-0.63 for frames 5-17 ids apart in one video), while
# each frame against itself panned by 16 px, zoomed 10%, brightened or darkened 20% or with noise
# scores >= 0.80; plain NCC of 64x48 thumbnails cannot separate these (0.86 between different videos,
# 0.74 for a 16 px pan). tests/data/test_splits.py re-measures all of this.
NEAR_DUPLICATE = 0.75
MEASURE = (
    f"max over shifts of up to {REACH} px of the normalised cross-correlation of {THUMB_HW[1]}x{THUMB_HW[0]} "
    f"grey thumbnails minus their Gaussian blur (sigma {DETAIL_SIGMA:g} px), {MARGIN} px border left out"
)


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


def thumbnail(img: np.ndarray) -> np.ndarray:
    """uint8 grey ``THUMB_HW`` thumbnail of a uint8 (H, W) or (H, W, 3) image: Pillow BOX (block
    averages), then the mean of the channels (the same as grey first, ~20x faster)."""
    from PIL import Image

    small = np.asarray(Image.fromarray(np.asarray(img, np.uint8)).resize(THUMB_HW[::-1], Image.BOX))
    return (small if small.ndim == 2 else small.mean(axis=2).round()).astype(np.uint8)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows minus their mean, scaled to length 1; a flat row stays all zero."""
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-6)


def similarity_matrix(thumbs: Sequence[np.ndarray]) -> np.ndarray:
    """(n, n) float32 similarity of ``thumbnail``s, symmetric, 1 on the diagonal (see ``MEASURE``).

    All pairs at once: one matrix product per shift ((2 * REACH + 1)^2 = 9), 0.3-0.8 s for the 612
    CVC frames on 2 cores. Identical thumbnails score 1 (also flat ones, whose correlation is undefined).
    """
    from scipy.ndimage import gaussian_filter

    n = len(thumbs)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    t = np.stack([np.asarray(x, np.float32) / 255 for x in thumbs])
    detail = t - gaussian_filter(t, sigma=(0, DETAIL_SIGMA, DETAIL_SIGMA), mode="nearest")
    h, w = detail.shape[1:]
    m, r = MARGIN, REACH

    def window(dy: int, dx: int) -> np.ndarray:
        return _unit_rows(detail[:, m + dy : h - m + dy, m + dx : w - m + dx].reshape(n, -1))

    core, best = window(0, 0), np.full((n, n), -1.0, np.float32)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            np.maximum(best, core @ window(dy, dx).T, out=best)
    best = np.maximum(best, best.T)
    _, same = np.unique(t.reshape(n, -1), axis=0, return_inverse=True)
    best[same.reshape(-1, 1) == same.reshape(1, -1)] = 1.0
    return best


def near_duplicate_groups(sim: np.ndarray, threshold: float = NEAR_DUPLICATE) -> list[int]:
    """Group per frame: the connected components of the graph "similarity > threshold", numbered in
    order of their first frame. Not widened to id ranges: one near-duplicate pair between distant ids
    would pull every sequence between them into its group."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    if len(sim) == 0:
        return []
    _, comp = connected_components(csr_matrix(sim > threshold), directed=False)
    _, first, renumbered = np.unique(comp, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # component -> its rank by first frame
    return [int(g) for g in rank[renumbered.ravel()]]


def group_split(groups: Sequence[int], counts: Sequence[int], seed: int) -> list[str]:
    """Split whole groups, biggest first (seeded order among equal sizes).

    Each group goes to a split with room for all of it, picked at random with probability proportional
    to that room; a group that fits nowhere goes where most room is left. The singletons at the end
    then fill every split to exactly ``counts`` when there are enough of them; otherwise a split ends
    off by at most the biggest group.
    """
    labels, sizes = np.unique(np.asarray(groups), return_counts=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    order = order[np.argsort(-sizes[order], kind="stable")]
    room = np.array(counts, dtype=float)
    owner = {}
    for j in order:
        fits = np.where(room >= sizes[j], room, 0.0)
        k = int(rng.choice(len(room), p=fits / fits.sum())) if fits.sum() > 0 else int(np.argmax(room))
        owner[labels[j]] = k
        room[k] -= sizes[j]
    return [SPLITS[owner[g]] for g in groups]


def cross_split_report(
    sim: np.ndarray, ids: Sequence[str], labels: Sequence[str], threshold: float = NEAR_DUPLICATE
) -> dict:
    """How close the splits come: near-duplicate pairs across splits and the most similar such pair.

    ``closest_cross_split_pair`` is None when every frame is in one split.
    """
    lab = np.asarray(labels)
    cross = lab[:, None] != lab[None, :]
    pairs = int(np.triu((sim > threshold) & cross, 1).sum())
    if not cross.any():
        return {"cross_split_near_duplicate_pairs": 0, "closest_cross_split_pair": None}
    i, j = np.unravel_index(int(np.argmax(np.where(cross, sim, -np.inf))), sim.shape)
    i, j = sorted((int(i), int(j)))
    closest = {
        "ids": [ids[i], ids[j]],
        "splits": [labels[i], labels[j]],
        "similarity": round(float(sim[i, j]), 4),
    }
    return {"cross_split_near_duplicate_pairs": pairs, "closest_cross_split_pair": closest}
