"""Model registry: ``create_model(name, **kw)`` over the plain dict ``MODELS``.

Every model maps (N, in_channels, H, W) of any H, W to (N, 1, H, W) logits.
- ``unet``: the study's U-Net (in_channels=3, base_channels=64).
- ``timm-unet``: U-Net decoder over a timm encoder (encoder="resnet34", pretrained=False, in_channels=3,
  decoder_channels=(256, 128, 64, 32, 16)).
"""

from __future__ import annotations

import inspect

from torch import nn

from imbaseg.errors import check_params, lookup
from imbaseg.models.timm_unet import TimmUNet
from imbaseg.models.unet import UNet

MODELS: dict[str, type[nn.Module]] = {"unet": UNet, "timm-unet": TimmUNet}


def model_names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(MODELS)


def model_params(name: str) -> dict[str, object]:
    """The keyword arguments model ``name`` accepts, with their defaults."""
    cls = lookup(name, MODELS, "model")
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return {p.name: p.default for p in params}


def create_model(name: str, **kwargs) -> nn.Module:
    """``MODELS[name](**kwargs)``; UserError with a did-you-mean for an unknown name or keyword."""
    cls = lookup(name, MODELS, "model")
    check_params(kwargs, model_params(name), f"model '{name}'")
    return cls(**kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (only those with requires_grad when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MODELS", "TimmUNet", "UNet", "count_parameters", "create_model", "model_names", "model_params"]
