"""Inference: whole image when it fits, else sliding windows with Gaussian blending; flip TTA; AMP on CUDA.

Shapes: ``Predictor.probs`` takes a raw (H, W, C) uint8 image and returns a float32 (H, W) probability
map (sigmoid of the model's one logit channel) at the image's own size, with the dataset's preprocessing.
The lower-level ``run_plan`` / ``sliding_window`` take an already normalised float tensor (C, H, W).

Where the model sees the pixels (``InferencePlan``, see ``plan_for``):
- trained on resized images (``data.size``): the input is resized to that size, predicted whole
  (or in ``data.patch_size`` windows if it was trained on crops of the resized images), and the
  probabilities are resized back (bilinear) to the input's size;
- trained on patches (``data.patch_size``) at native scale: sliding windows of the patch size;
- otherwise the whole image, unless it has more than ``max_whole_pixels`` pixels, then windows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from imbaseg.data.dataset import STD_FLOOR
from imbaseg.data.resize import resize_image_antialiased
from imbaseg.errors import UserError
from imbaseg.training.device import amp_dtype

DEFAULT_OVERLAP = 0.5  # fraction of a window shared with its neighbour (MONAI/nnU-Net use 0.25-0.5)
SIGMA_SCALE = 0.125  # Gaussian sigma as a fraction of the window side (nnU-Net's 1/8)
MIN_WEIGHT = 1e-3  # floor of the Gaussian map, so window corners still count and never divide by zero
MAX_WHOLE_PIXELS = 1024 * 1024  # above this, a model without a training window runs in windows
FALLBACK_WINDOW = (512, 512)  # the window used then (the study's training size)
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))  # identity, h-flip, v-flip, both

ProbFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InferencePlan:
    """How an image reaches the model. resize_to: (H, W) the input is resized to, or None (native pixels).
    window: (h, w) sliding window, or None (whole image). Images no larger than the window run whole."""

    resize_to: tuple[int, int] | None = None
    window: tuple[int, int] | None = None
    overlap: float = DEFAULT_OVERLAP
    batch_size: int = 4  # windows per forward pass
    max_whole_pixels: int = MAX_WHOLE_PIXELS
    normalize: str = "image"  # z-score per "image" or per "window" (models trained on z-scored patches)

    def describe(self) -> str:
        where = f"resized to {self.resize_to[0]}x{self.resize_to[1]}" if self.resize_to else "native size"
        how = (
            f"sliding {self.window[0]}x{self.window[1]} windows, overlap {self.overlap}"
            if self.window
            else (
                f"whole image (windows of {FALLBACK_WINDOW[0]}x{FALLBACK_WINDOW[1]} "
                f"above {self.max_whole_pixels} px)"
            )
        )
        norm = ", z-score per window" if self.normalize == "window" else ""
        return f"{where}, {how}{norm}"


def plan_for(
    cfg, size: str = "train", overlap: float = DEFAULT_OVERLAP, batch_size: int = 4
) -> InferencePlan:
    """The plan matching how ``cfg`` trained. size="train": the training scale (see module doc);
    size="native": native pixels, windows of patch_size or data.size (full-resolution DRIVE)."""
    if size not in ("train", "native"):
        raise UserError(f"unknown size mode '{size}': choose train or native")
    if not 0.0 <= overlap < 1.0:
        raise UserError(f"overlap must be in [0, 1), got {overlap}")
    d = cfg.data
    patch = tuple(d.patch_size) if d.patch_size else None
    if size == "train" and d.size:
        resize = tuple(d.size)
        window = patch if patch and (patch[0] < resize[0] or patch[1] < resize[1]) else None
        return InferencePlan(resize, window, overlap, batch_size, normalize="window" if window else "image")
    window = patch or (tuple(d.size) if d.size else None)
    return InferencePlan(None, window, overlap, batch_size, normalize="window" if patch else "image")


def prob_fn(model: torch.nn.Module, tta: bool = False, amp: bool = False) -> ProbFn:
    """(N, C, h, w) -> (N, 1, h, w) float32 probabilities; with ``tta`` the mean over the 4 flips."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = amp_dtype(device, amp)

    def once(x: torch.Tensor) -> torch.Tensor:
        if dtype is None:
            return torch.sigmoid(model(x).float())
        with torch.autocast(device_type="cuda", dtype=dtype):
            logits = model(x)
        return torch.sigmoid(logits.float())

    if not tta:
        return once

    def flipped(x: torch.Tensor) -> torch.Tensor:
        total = once(x)
        for dims in FLIPS[1:]:
            total = total + once(x.flip(dims)).flip(dims)
        return total / len(FLIPS)

    return flipped


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets covering [0, size) with windows of ``window`` (the last one flush with the end)."""
    if size <= window:
        return [0]
    stride = max(1, int(window * (1.0 - overlap)))
    starts = list(range(0, size - window, stride))
    return starts + [size - window]


@functools.lru_cache(maxsize=8)
def _gaussian_cpu(h: int, w: int, sigma_scale: float) -> torch.Tensor:
    def axis(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0
        return torch.exp(-0.5 * (x / (sigma_scale * n)) ** 2)

    g = torch.outer(axis(h), axis(w))
    return (g / g.max()).clamp_min(MIN_WEIGHT).float()


def gaussian_weights(window: tuple[int, int], sigma_scale: float = SIGMA_SCALE, device=None) -> torch.Tensor:
    """(h, w) importance map: a centred Gaussian with sigma = sigma_scale * side, max 1, floor MIN_WEIGHT."""
    return _gaussian_cpu(int(window[0]), int(window[1]), float(sigma_scale)).to(device)


def sliding_window(
    fn: ProbFn,
    image: torch.Tensor,
    window: tuple[int, int],
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 4,
    sigma_scale: float = SIGMA_SCALE,
) -> torch.Tensor:
    """(C, H, W) -> (1, H, W): ``fn`` on overlapping windows, blended as sum(g * p) / sum(g).

    A side shorter than the window uses the whole side. ``batch_size`` windows go through ``fn`` at once.
    """
    _, H, W = image.shape
    wh, ww = min(int(window[0]), H), min(int(window[1]), W)
    g = gaussian_weights((wh, ww), sigma_scale, image.device)
    out = torch.zeros((1, H, W), dtype=torch.float32, device=image.device)
    norm = torch.zeros((1, H, W), dtype=torch.float32, device=image.device)
    boxes = [(y, x) for y in window_starts(H, wh, overlap) for x in window_starts(W, ww, overlap)]
    for k in range(0, len(boxes), max(1, batch_size)):
        chunk = boxes[k : k + max(1, batch_size)]
        batch = torch.stack([image[:, y : y + wh, x : x + ww] for y, x in chunk])
        probs = fn(batch)
        for (y, x), p in zip(chunk, probs, strict=True):
            out[:, y : y + wh, x : x + ww] += g * p
            norm[:, y : y + wh, x : x + ww] += g
    return out / norm


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) -> (C, *size), bilinear (antialiased when shrinking, so small structures average out)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    y = F.interpolate(
        x[None].float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink
    )
    return y[0]


def run_plan(fn: ProbFn, image: torch.Tensor, plan: InferencePlan) -> torch.Tensor:
    """(C, H, W) on the model's device -> (1, H, W) probabilities at the input's size, following ``plan``."""
    native = tuple(image.shape[-2:])
    x = resize(image, plan.resize_to) if plan.resize_to else image
    h, w = x.shape[-2:]
    window = plan.window
    if window is None and h * w > plan.max_whole_pixels:
        window = FALLBACK_WINDOW
    if window is None or (h <= window[0] and w <= window[1]):
        p = fn(x[None])[0]
    else:
        p = sliding_window(fn, x, window, plan.overlap, plan.batch_size)
    return resize(p, native).clamp_(0.0, 1.0) if tuple(p.shape[-2:]) != native else p


def zscore_batch(x: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> each sample z-scored over its channels and pixels, as ``SegDataset`` does per item."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False).clamp_min(STD_FLOOR)
    return (x - mean) / std


class Predictor:
    """A model with its plan and options: ``probs(image)`` maps a raw image to (H, W) float32 probabilities.

    image: (H, W, C) uint8 with C = the model's in_channels (see ``imbaseg.data.dataset.to_channels``).
    The preprocessing is the dataset's: uint8 resize to ``plan.resize_to`` (bilinear, antialiased), then
    per-image z-score (per window when ``plan.normalize == "window"``, as patch training z-scores patches).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        plan: InferencePlan,
        tta: bool = False,
        amp: bool = False,
        device: torch.device | str | None = None,
    ):
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.plan, self.tta = plan, tta
        self.amp = bool(amp and amp_dtype(self.device) is not None)
        fn = prob_fn(self.model, tta, self.amp)
        self.fn = (lambda b: fn(zscore_batch(b))) if plan.normalize == "window" else fn
        self._model_plan = replace(plan, resize_to=None)

    def tensor_probs(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, C) raw image -> (H, W) float32 probabilities on the model's device."""
        a = np.asarray(image)
        if a.ndim != 3:
            raise ValueError(f"expected one (H, W, C) image, got shape {a.shape}")
        native = a.shape[:2]
        if self.plan.resize_to is not None:
            a = resize_image_antialiased(a, self.plan.resize_to) if a.dtype == np.uint8 else a
        x = torch.from_numpy(np.require(a, requirements=["C", "W"])).to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1).float()
        if self.plan.resize_to is not None and tuple(x.shape[-2:]) != tuple(self.plan.resize_to):
            x = resize(x, self.plan.resize_to)  # float input: resized as floats
        with torch.inference_mode():
            if self.plan.normalize == "image":
                x = zscore_batch(x[None])[0]
            p = run_plan(self.fn, x, self._model_plan)
            if tuple(p.shape[-2:]) != tuple(native):
                p = resize(p, native).clamp_(0.0, 1.0)
        return p[0]

    def probs(self, image: np.ndarray) -> np.ndarray:
        return self.tensor_probs(image).float().cpu().numpy()
