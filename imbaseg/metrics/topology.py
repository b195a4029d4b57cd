"""clDice, the centreline Dice of Shit et al. (CVPR 2021): the vessel metric.

    Tprec = |S(P) & T| / |S(P)|    (prediction skeleton inside the GT)
    Tsens = |S(T) & P| / |S(T)|    (GT skeleton inside the prediction)
    clDice = 2 Tprec Tsens / (Tprec + Tsens)

with S the skimage ``skeletonize`` skeleton (Zhang-Suen thinning; the image border counts as background).

Empty masks: both empty -> 1; exactly one empty -> 0; Tprec + Tsens = 0 -> 0. A non-empty mask whose
skeleton came out empty would use the mask itself as its centreline (never seen with skimage 0.2x,
kept so that no input can divide by zero).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from imbaseg.metrics._masks import bbox, masks

_EIGHT = np.ones((3, 3), dtype=bool)
_MAX_PARTS = 256  # components thinned one by one; more (speckle) are thinned together


def skeleton(mask: np.ndarray, components=None) -> np.ndarray:
    """skimage skeleton of a bool (H, W) mask, thinned one 8-connected component at a time.

    components: the mask's 8-connected labels on its bounding box when already at hand
    (``imbaseg.metrics.lesion.Components``: box, labels, count); else they are computed here.

    Thinning decides each pixel from its 3x3 neighbourhood, which holds no pixel of another 8-connected
    component, so thinning each component on its own bounding box gives the skeleton of the whole mask
    while scanning fewer pixels per pass. The mask's bounding box is thinned at once instead when the
    components' boxes overlap so much that they hold more pixels (long crossing vessels), or when there
    are more than ``_MAX_PARTS`` of them (speckle: the loop would cost more than it saves).
    """
    out = np.zeros_like(mask)
    if components is not None:
        box, labels, n = components.box, components.labels, components.count
    else:
        box = bbox(mask)
        labels, n = ndi.label(mask[box], structure=_EIGHT) if box is not None else (None, 0)
    if box is None:
        return out
    parts = ndi.find_objects(labels) if n <= _MAX_PARTS else []
    scanned = sum((r.stop - r.start) * (c.stop - c.start) for r, c in parts)
    if not parts or scanned >= labels.size:
        out[box] = skeletonize(mask[box])
    else:
        crop = out[box]
        for k, part in enumerate(parts, start=1):
            crop[part] |= skeletonize(labels[part] == k)
    return out if out.any() else mask.copy()


def cldice(pred, target, valid=None, components=None) -> float:
    """clDice of two (H, W) masks (cut to ``valid`` first when given), with the empty rules above.

    components: optional (pred's, target's) 8-connected labels (see ``skeleton``), reused when given."""
    p, t, _ = masks(pred, target, valid)
    has_p, has_t = bool(p.any()), bool(t.any())
    if not (has_p or has_t):
        return 1.0
    if not (has_p and has_t):
        return 0.0
    cp, ct = components if components is not None else (None, None)
    sp, st = skeleton(p, cp), skeleton(t, ct)
    tprec = np.count_nonzero(sp & t) / np.count_nonzero(sp)
    tsens = np.count_nonzero(st & p) / np.count_nonzero(st)
    if tprec + tsens == 0:
        return 0.0
    return float(2 * tprec * tsens / (tprec + tsens))
