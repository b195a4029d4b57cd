"""Joint augmentation of image, mask and field of view, built on torchvision.transforms.v2.

The study's set, each applied with probability 0.15 (``AugmentConfig``): vertical flip, horizontal
flip, shift-scale-rotate, elastic deformation and brightness/contrast. Geometry moves image, mask and
FOV together (``tv_tensors.Mask`` is always resampled with nearest neighbour, so masks stay binary);
brightness/contrast touches the image only.

Randomness: the transforms draw from torch's global generator. ``JointAugment.__call__(..., seed=s)``
runs them inside ``torch.random.fork_rng`` seeded with ``s``, so one sample's augmentation depends on
its seed only and the caller's generator state is left untouched. ``SegDataset`` draws that seed per
item from its own generator, which ``imbaseg.data.loader`` reseeds in every DataLoader worker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch

from imbaseg.errors import UserError, check_params


@dataclass
class AugmentConfig:
    """The study's augmentation; YAML keys are the field names (``augment: {hflip_p: 0.5}``)."""

    enabled: bool = True
    vflip_p: float = 0.15  # the study applied every augmentation with p=0.15
    hflip_p: float = 0.15
    shift_scale_rotate_p: float = 0.15
    shift_limit: float = 0.0625  # max shift, fraction of width/height (albumentations ShiftScaleRotate)
    scale_limit: float = 0.1  # zoom factor drawn from [1 - 0.1, 1 + 0.1] (same default)
    rotate_limit: float = 15.0  # degrees, drawn from [-15, 15] (same default)
    elastic_p: float = 0.15
    elastic_alpha: float = 50.0  # torchvision's default: displacement std ~ 0.8 px with sigma 5
    elastic_sigma: float = 5.0  # smoothness (px) of the random displacement field
    brightness_contrast_p: float = 0.15
    brightness_limit: float = 0.2  # brightness factor drawn from [0.8, 1.2]
    contrast_limit: float = 0.2  # contrast factor drawn from [0.8, 1.2]


_PROBS = ("vflip_p", "hflip_p", "shift_scale_rotate_p", "elastic_p", "brightness_contrast_p")


def _check_config(cfg: AugmentConfig) -> AugmentConfig:
    """Raise UserError for out-of-range values; return ``cfg``."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "enabled":
            if not isinstance(value, bool):
                raise UserError(f"augment.enabled must be true or false, got {value!r}.")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"augment.{f.name} must be a number, got {value!r}.")
        if f.name in _PROBS and not 0.0 <= value <= 1.0:
            raise UserError(f"augment.{f.name} is a probability and must lie in [0, 1], got {value}.")
        if value < 0:
            raise UserError(f"augment.{f.name} must be >= 0, got {value}.")
    for name in ("scale_limit", "brightness_limit", "contrast_limit"):
        if getattr(cfg, name) >= 1.0:
            raise UserError(f"augment.{name} must be < 1 (a factor of 1 - limit must stay positive).")
    return cfg


def augment_config(cfg: AugmentConfig | Mapping | None = None) -> AugmentConfig:
    """An ``AugmentConfig`` from a dataclass, a (YAML) dict of overrides or None (the defaults).

    Unknown keys raise UserError with a did-you-mean suggestion.
    """
    if cfg is None:
        return AugmentConfig()
    if isinstance(cfg, AugmentConfig):
        return _check_config(AugmentConfig(**asdict(cfg)))
    if not isinstance(cfg, Mapping):
        raise UserError(f"augment must be a mapping of options (e.g. {{hflip_p: 0.5}}), got {cfg!r}.")
    check_params(cfg.keys(), [f.name for f in fields(AugmentConfig)], "augment")
    values = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in cfg.items()}
    return _check_config(AugmentConfig(**values))


class JointAugment:
    """Callable ``(image, mask, fov=None, seed=None) -> (image, mask, fov)``.

    image: float32 (C, H, W) in [0, 1]; mask, fov: uint8 (1, H, W) in {0, 1}; fov may be None.
    Outside the image after a shift/rotation the fill is 0 for image, mask and FOV (the FOV marks
    the padding as outside). Outputs are plain tensors of the same shapes and dtypes.
    """

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self.geometry, self.photometric = _build_pipelines(cfg)

    def __call__(self, image, mask, fov=None, seed: int | None = None):
        if not self.cfg.enabled:
            return image, mask, fov
        if seed is None:
            return self._apply(image, mask, fov)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._apply(image, mask, fov)

    def _apply(self, image, mask, fov):
        from torchvision import tv_tensors

        items = [tv_tensors.Image(image), tv_tensors.Mask(mask)]
        if fov is not None:
            items.append(tv_tensors.Mask(fov))
        if self.geometry is not None:
            items = list(self.geometry(*items))
        if self.photometric is not None:
            items[0] = self.photometric(items[0])
        out = [t.as_subclass(torch.Tensor) for t in items]
        return out[0], out[1], (out[2] if fov is not None else None)

    def __getstate__(self):
        return {"cfg": self.cfg}  # pipelines are rebuilt on unpickling (spawned workers, DDP)

    def __setstate__(self, state):
        self.__init__(state["cfg"])

    def __repr__(self) -> str:
        return f"JointAugment({self.cfg})"


def _build_pipelines(cfg: AugmentConfig):
    """(geometry, photometric) torchvision v2 pipelines; None where every probability is 0."""
    from torchvision.transforms import v2

    geo = []
    if cfg.vflip_p > 0:
        geo.append(v2.RandomVerticalFlip(p=cfg.vflip_p))
    if cfg.hflip_p > 0:
        geo.append(v2.RandomHorizontalFlip(p=cfg.hflip_p))
    if cfg.shift_scale_rotate_p > 0:
        affine = v2.RandomAffine(
            degrees=cfg.rotate_limit,
            translate=(cfg.shift_limit, cfg.shift_limit),
            scale=(1.0 - cfg.scale_limit, 1.0 + cfg.scale_limit),
            interpolation=v2.InterpolationMode.BILINEAR,  # masks: nearest, always (tv_tensors.Mask)
            fill=0,
        )
        geo.append(v2.RandomApply([affine], p=cfg.shift_scale_rotate_p))
    if cfg.elastic_p > 0 and cfg.elastic_alpha > 0:
        elastic = _separable_elastic()(alpha=cfg.elastic_alpha, sigma=cfg.elastic_sigma, fill=0)
        geo.append(v2.RandomApply([elastic], p=cfg.elastic_p))
    photo = None
    if cfg.brightness_contrast_p > 0 and (cfg.brightness_limit > 0 or cfg.contrast_limit > 0):
        jitter = v2.ColorJitter(brightness=cfg.brightness_limit, contrast=cfg.contrast_limit)
        photo = v2.RandomApply([jitter], p=cfg.brightness_contrast_p)
    return (v2.Compose(geo) if geo else None), photo


def gaussian_kernel1d(kernel_size: int, sigma: float) -> torch.Tensor:
    """torchvision's 1-D Gaussian (std ``sigma`` px, sums to 1); its 2-D kernel is the outer product."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=kernel_size)
    return torch.softmax(x.div(sigma).pow(2).neg(), dim=0)


def separable_blur(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a (1, 1, H, W) field as torchvision's gaussian_blur does it (kernel
    ``int(8*sigma+1)`` made odd, reflect padding), in two 1-D passes: 2k instead of k*k products."""
    k = int(8 * sigma + 1)
    k += 1 - k % 2
    w = gaussian_kernel1d(k, sigma)
    pad = k // 2
    out = torch.nn.functional.pad(field, [pad, pad, 0, 0], mode="reflect")
    out = torch.nn.functional.conv2d(out, w.view(1, 1, 1, k))
    out = torch.nn.functional.pad(out, [0, 0, pad, pad], mode="reflect")
    return torch.nn.functional.conv2d(out, w.view(1, 1, k, 1))


def _separable_elastic():
    """``v2.ElasticTransform`` whose random displacement field is blurred separably.

    Same draws, same field up to float rounding (tested), about 20x cheaper at sigma 5: torchvision
    blurs with a full 41x41 kernel, which made elastic the most expensive augmentation by far.
    The warping itself stays torchvision's ``F.elastic``.
    """
    from torchvision.transforms import v2
    from torchvision.transforms.v2._utils import query_size

    class SeparableElastic(v2.ElasticTransform):
        def make_params(self, flat_inputs):
            height, width = query_size(flat_inputs)
            dx = torch.rand(1, 1, height, width) * 2 - 1
            if self.sigma[0] > 0.0:
                dx = separable_blur(dx, self.sigma[0])
            dx = dx * self.alpha[0] / width
            dy = torch.rand(1, 1, height, width) * 2 - 1
            if self.sigma[1] > 0.0:
                dy = separable_blur(dy, self.sigma[1])
            dy = dy * self.alpha[1] / height
            return dict(displacement=torch.concat([dx, dy], 1).permute([0, 2, 3, 1]))

    return SeparableElastic


def build_augment(cfg: AugmentConfig | Mapping | None = None) -> JointAugment:
    """The joint augmentation for ``cfg`` (dataclass, dict of overrides or None = the study's defaults)."""
    return JointAugment(augment_config(cfg))
