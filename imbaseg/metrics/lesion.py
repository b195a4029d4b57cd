"""Lesion-wise detection: the connected components of the target and of the prediction, matched by overlap.

Components are 8-connected (``skimage.measure.label(connectivity=2)``), taken on the masks as given; with
a field of view the masks are cut to it first (``mask & fov``), so a component that the FOV edge cuts
in two counts as two, and only its pixels inside the FOV count towards its area.

- Components smaller than ``min_component`` pixels are dropped from both masks before matching; their
  pixels count as background (a predicted component overlapping only a dropped target is a false positive).
- A target component is **detected** when one predicted component covers at least ``overlap`` of its
  pixels (``overlap=0``, the default: any pixel; 0.5 is the stricter rule). The best single predicted
  component counts; two predicted pieces of 40% each do not detect it under the 0.5 rule.
- A predicted component is a **false positive** when it overlaps no target component.

Rates (``lesion_scores``), the same rule per image and for a split's sums:

    recall = detected / targets    precision = (predicted - fp) / predicted    f1 = 2PR / (P + R)

| case | recall | precision | f1 |
| --- | --- | --- | --- |
| no target, no prediction | 1 | 1 | 1 |
| no target, some prediction | undefined (NaN: left out of the recall mean, counted) | 0 | 0 |
| some target, no prediction | 0 | 0 | 0 |
| P + R = 0 | as computed | as computed | 0 |

Matching is vectorised: one ``np.bincount`` over the label pairs of the overlapping pixels, no loop
over components. Each mask is labelled once, on its bounding box (``Components``); clDice's skeletons
reuse those labels (``imbaseg.metrics.per_image.measure``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from imbaseg.errors import UserError
from imbaseg.metrics._masks import bbox

LESION_NAMES = ("lesion_recall", "lesion_precision", "lesion_f1")
LESION_COUNT_NAMES = ("lesion_targets", "lesion_detected", "lesion_missed", "lesion_predicted", "lesion_fp")
AREA_CLASSES = ("small", "medium", "large")
_DENSE_PAIRS = 1 << 22  # label-pair tables up to this size are counted densely (32 MiB of int64)


@dataclass
class LesionMatch:
    """One image's matching. ``target_areas`` (n_t,) int64 pixels and ``target_detected`` (n_t,) bool,
    in label order (row-major first pixel), for the recall by component area."""

    targets: int
    detected: int
    predicted: int
    fp: int
    target_areas: np.ndarray
    target_detected: np.ndarray

    @property
    def missed(self) -> int:
        return self.targets - self.detected

    def counts(self) -> dict[str, int]:
        """The ``LESION_COUNT_NAMES`` as ints."""
        values = (self.targets, self.detected, self.missed, self.predicted, self.fp)
        return dict(zip(LESION_COUNT_NAMES, values, strict=True))


def check_lesion_options(overlap, min_component) -> tuple[float, int]:
    """(overlap, min_component) checked: overlap a number in [0, 1], min_component an integer >= 0."""
    try:
        f = float(overlap)
    except (TypeError, ValueError):
        f = float("nan")
    if not 0.0 <= f <= 1.0:
        raise UserError(f"bad --lesion-overlap {overlap!r}: give a fraction in [0, 1] (0 = any pixel)")
    whole = isinstance(min_component, (int, np.integer)) and not isinstance(min_component, bool)
    if not whole or min_component < 0:
        raise UserError(f"bad --min-component {min_component!r}: give a whole number of pixels >= 0")
    return f, int(min_component)


@dataclass
class Components:
    """The 8-connected components of a bool (H, W) mask, labelled on its bounding box ``box``: ``labels``
    (h, w) int, 1..``count`` in raster order of their first pixel (box None, count 0: an empty mask)."""

    box: tuple[slice, slice] | None
    labels: np.ndarray
    count: int

    def areas(self) -> np.ndarray:
        """(count,) int64 pixels per component."""
        fg = self.labels[self.labels > 0]
        return np.bincount(fg, minlength=self.count + 1)[1:].astype(np.int64)


def label_components(mask: np.ndarray) -> Components:
    """``skimage.measure.label(connectivity=2)`` of a bool (H, W) mask, on its bounding box."""
    from skimage.measure import label  # here, not at the top: skimage.measure imports slowly

    box = bbox(mask)
    if box is None:
        return Components(None, np.zeros((0, 0), np.int32), 0)
    labels, n = label(mask[box], connectivity=2, return_num=True)
    return Components(box, labels, int(n))


def _framed(c: Components, frame: tuple[slice, slice], min_component: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels on ``frame``, areas): ``c`` placed in the frame (a box holding c.box), components smaller
    than ``min_component`` pixels removed and the rest renumbered 1..n in their order."""
    areas = c.areas()
    labels = c.labels
    if min_component > 0 and areas.size and areas.min() < min_component:
        keep = np.r_[False, areas >= min_component]
        labels, areas = (np.cumsum(keep) * keep)[labels], areas[keep[1:]]
    if c.box == frame:
        return labels, areas  # the usual case for large masks: no copy
    out = np.zeros((frame[0].stop - frame[0].start, frame[1].stop - frame[1].start), dtype=labels.dtype)
    if c.box is not None:
        rows, cols = (slice(b.start - f.start, b.stop - f.start) for b, f in zip(c.box, frame, strict=True))
        out[rows, cols] = labels
    return out, areas


def _union(a: tuple[slice, slice] | None, b: tuple[slice, slice] | None) -> tuple[slice, slice] | None:
    if a is None or b is None:
        return a or b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def _best_overlap(lt: np.ndarray, lp: np.ndarray, n_t: int, n_p: int) -> np.ndarray:
    """(n_t,) the largest overlap, in pixels, of each target component with one predicted component."""
    both = (lt > 0) & (lp > 0)
    pairs = lt[both].astype(np.int64) * (n_p + 1) + lp[both]
    size = (n_t + 1) * (n_p + 1)
    if size <= _DENSE_PAIRS:
        return np.bincount(pairs, minlength=size).reshape(n_t + 1, n_p + 1)[1:].max(axis=1)
    keys, counts = np.unique(pairs, return_counts=True)  # speckle: only the pairs that occur
    best = np.zeros(n_t + 1, dtype=np.int64)
    np.maximum.at(best, keys // (n_p + 1), counts)
    return best[1:]


def match_lesions(
    p: np.ndarray, t: np.ndarray, overlap: float = 0.0, min_component: int = 0, labelled=None
) -> LesionMatch:
    """Match the components of two bool (H, W) masks already cut to the FOV (see the module doc).

    labelled: optional (``label_components(p)``, ``label_components(t)``), when they are at hand.
    """
    cp, ct = labelled if labelled is not None else (label_components(p), label_components(t))
    frame = _union(cp.box, ct.box)
    if frame is None:
        return LesionMatch(0, 0, 0, 0, np.zeros(0, np.int64), np.zeros(0, bool))
    lt, areas = _framed(ct, frame, min_component)
    lp, p_areas = _framed(cp, frame, min_component)
    n_t, n_p = areas.size, p_areas.size
    both = (p[frame] & t[frame]) if min_component == 0 else (lt > 0) & (lp > 0)
    hit_pred = np.bincount(lp[both], minlength=n_p + 1)[1:] > 0
    if overlap == 0.0:
        detected = np.bincount(lt[both], minlength=n_t + 1)[1:] > 0
    else:
        best = _best_overlap(lt, lp, n_t, n_p)
        detected = (best > 0) & (best >= overlap * areas)
    fp = int(n_p - np.count_nonzero(hit_pred))
    return LesionMatch(n_t, int(np.count_nonzero(detected)), n_p, fp, areas, detected)


def lesion_scores(targets: int, detected: int, predicted: int, fp: int) -> dict[str, float]:
    """lesion_recall, lesion_precision, lesion_f1 from counts, with the empty rules of the module doc
    (recall is NaN when there is no target but some prediction)."""
    if targets == 0 and predicted == 0:
        return {"lesion_recall": 1.0, "lesion_precision": 1.0, "lesion_f1": 1.0}
    recall = detected / targets if targets else math.nan
    precision = (predicted - fp) / predicted if predicted else 0.0
    r = 0.0 if targets == 0 else recall
    f1 = 2 * precision * r / (precision + r) if precision + r > 0 else 0.0
    return {"lesion_recall": recall, "lesion_precision": precision, "lesion_f1": f1}


def lesion_metrics(p: np.ndarray, t: np.ndarray, overlap: float = 0.0, min_component: int = 0) -> dict:
    """LESION_NAMES (floats; recall may be NaN) and LESION_COUNT_NAMES (ints) of two bool masks."""
    m = match_lesions(p, t, overlap, min_component)
    return {**lesion_scores(m.targets, m.detected, m.predicted, m.fp), **m.counts()}


# ----------------------------------------------------------------------------- recall by component area


def area_thresholds(areas) -> tuple[float, float] | None:
    """The tertiles (1/3, 2/3 quantiles, numpy's linear interpolation) of target component areas, or
    None without any component. small: area <= t1; medium: t1 < area <= t2; large: area > t2."""
    a = np.asarray(areas, dtype=np.float64).ravel()
    if a.size == 0:
        return None
    t1, t2 = np.quantile(a, [1 / 3, 2 / 3])
    return float(t1), float(t2)


def recall_by_area(areas, detected, thresholds: tuple[float, float] | None) -> list[dict]:
    """Per AREA_CLASSES: {class, min_area, max_area (the class's pixel bounds, exclusive min), targets,
    detected, recall (None without a target)}; areas (n,) and detected (n,) over a split's components."""
    a, d = np.asarray(areas, dtype=np.float64).ravel(), np.asarray(detected, dtype=bool).ravel()
    t1, t2 = thresholds if thresholds is not None else (math.inf, math.inf)
    bounds = ((0.0, t1), (t1, t2), (t2, math.inf))
    out = []
    for name, (low, high) in zip(AREA_CLASSES, bounds, strict=True):
        inside = (a > low) & (a <= high)
        n, k = int(np.count_nonzero(inside)), int(np.count_nonzero(inside & d))
        out.append(
            {
                "class": name,
                "min_area": low,
                "max_area": None if math.isinf(high) else high,
                "targets": n,
                "detected": k,
                "recall": k / n if n else None,
            }
        )
    return out
