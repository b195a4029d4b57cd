"""Batches for the loss tests: random imbalanced blobs and the edge cases of the spec (a helper module)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from imbaseg.losses import LOSSES

ALL_LOSSES = list(LOSSES)


def blobs(rng, b, h, w, frac=0.15):
    """Smooth random blobs covering about ``frac`` of each image, plus a one-pixel curve in some images."""
    noise = gaussian_filter(rng.standard_normal((b, h, w)), sigma=(0, 2, 2))
    y = np.stack([n > np.quantile(n, 1 - frac) for n in noise])
    y[::2, h // 2, 1:-1] = True  # thin line through every other image
    return y[:, None].astype(np.float32)


def edge_target(kind: str, b: int, h: int, w: int, rng) -> np.ndarray:
    y = np.zeros((b, 1, h, w), np.float32)
    if kind == "random":
        return blobs(rng, b, h, w)
    if kind == "full":
        y[:] = 1
    elif kind == "pixel":
        y[:, 0, h // 2, w // 3] = 1
    elif kind == "line":
        y[:, 0, 2:-2, w // 2] = 1
    elif kind == "border":
        y[:, 0, :3, :4] = 1  # corner block
        y[:, 0, :, -1] = 1  # the whole right edge
    elif kind == "mixed":  # images differ inside the batch: empty, full, one pixel, blob
        y[1 % b] = 1
        y[2 % b, 0, 3, 3] = 1
        y[3 % b] = blobs(rng, 1, h, w)[0]
        y[0] = 0
    elif kind != "empty":
        raise ValueError(kind)
    return y


EDGE_KINDS = ["random", "empty", "full", "pixel", "line", "border", "mixed"]


def make_batch(kind: str, b: int = 4, h: int = 12, w: int = 12, seed: int = 0, logits: str = "random"):
    """``(z, y)`` float32 tensors. logits: random (N(0, 3^2)), pm50 (random +-50) or perfect50."""
    rng = np.random.default_rng(seed)
    y = edge_target(kind, b, h, w, rng)
    if logits == "random":
        z = rng.normal(0, 3, y.shape)
    elif logits == "pm50":
        z = np.where(rng.random(y.shape) < 0.5, 50.0, -50.0)
    elif logits == "perfect50":
        z = np.where(y > 0.5, 50.0, -50.0)
    else:
        raise ValueError(logits)
    return torch.tensor(z, dtype=torch.float32), torch.tensor(y)
