"""The one resize pair: prepare, the loader cache and inference all resize through these two functions.

Images: bilinear interpolation in float32 with ``antialias=True`` (``torch.nn.functional.interpolate``),
then rounded and clipped to uint8. When shrinking, antialias widens the bilinear (triangle) filter to
the scale factor, so every source pixel contributes (close to area averaging; no aliasing of vessels or
polyp edges); when enlarging it is plain bilinear. Pixel centres are aligned (``align_corners=False``).
It is torch on purpose: an exported model (ONNX ``Resize`` with ``antialias=1``, then ``Round`` and
``Clip``) can reproduce it inside the graph.

Masks: nearest neighbour at pixel centres (``nearest-exact``, the same rule as Pillow's NEAREST), so a
binary mask stays binary and a label keeps its value.

torch is imported inside the functions: ``imbaseg prepare`` and ``imbaseg --help`` stay torch-free
until an image actually needs resizing.
"""

from __future__ import annotations

import numpy as np


def _hw(size) -> tuple[int, int]:
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"resize target must be two positive integers (H, W), got {tuple(size)}")
    return h, w


def resize_image_antialiased(image: np.ndarray, size) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) -> uint8 of the same layout at ``size`` = (H', W').

    Antialiased bilinear (see the module docstring); the input itself is returned when the size matches.
    """
    hw = _hw(size)
    a = np.asarray(image)
    if a.shape[:2] == hw:
        return a
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(a.astype(np.float32))  # a copy: also fine for read-only memory maps
    t = t[None, None] if a.ndim == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, size=hw, mode="bilinear", antialias=True, align_corners=False)
    out = out[0].round_().clamp_(0, 255).to(torch.uint8)
    out = out[0] if a.ndim == 2 else out.permute(1, 2, 0)
    return out.contiguous().numpy()


def resize_mask_nearest(mask: np.ndarray, size) -> np.ndarray:
    """bool or uint8 (H, W) -> the same dtype at ``size``, nearest pixel centre (values kept exactly)."""
    hw = _hw(size)
    m = np.asarray(mask)
    if m.shape == hw:
        return m
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(m.astype(np.uint8))[None, None]
    out = F.interpolate(t, size=hw, mode="nearest-exact")[0, 0].numpy()
    return out.astype(bool) if m.dtype == bool else out.astype(m.dtype, copy=False)
