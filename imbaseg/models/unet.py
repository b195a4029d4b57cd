"""The study's U-Net (Ronneberger et al., MICCAI 2015) with InstanceNorm, and the pad/crop helpers.

Shapes: input (N, in_channels, H, W) of any H, W >= 1; output (N, 1, H, W) logits (no sigmoid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imbaseg.errors import UserError


def check_positive_int(value, name: str, owner: str) -> int:
    """``value`` as an int, or a UserError naming ``owner.name`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{owner}: {name} must be a positive integer, got {value!r}.")
    return value


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom/right so H and W are multiples of ``multiple``, and at least 2x it.

    The 2x floor keeps the deepest feature map at least 2x2: InstanceNorm (and BatchNorm in training)
    refuses a single spatial element. Reflect padding, so InstanceNorm statistics and border context are not
    diluted by a band of zeros; zero padding where reflect is undefined (pad >= the side, tiny images).
    The amounts come from the shape only, so torch.compile sees no data-dependent control flow.
    """
    h, w = x.shape[-2:]
    # Floor division, not %: inductor (torch 2.14) fails on Python-mod of dynamic (symbolic) sizes.
    ph = max((h + multiple - 1) // multiple * multiple, 2 * multiple) - h
    pw = max((w + multiple - 1) // multiple * multiple, 2 * multiple) - w
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "constant"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def crop_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The top-left (height, width) window of (N, C, H', W'): undoes ``pad_to_multiple``."""
    return x[..., :height, :width]


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform conv and transposed-conv weights, zero biases (the study's init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class DoubleConv(nn.Sequential):
    """(3x3 conv -> InstanceNorm(affine) -> ReLU) x 2; keeps H, W. Params: 9*i*o + 9*o*o + 6*o."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """2x2 stride-2 transposed conv, pad to the skip's size, concatenate, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        # Zero after pad_to_multiple(16); kept so the block also works on its own (the original U-Net).
        x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """The study's U-Net: 4 max-pool downsamplings, 4 transposed-conv upsamplings, one logit channel.

    in_channels: 3 (RGB; the prepared datasets store RGB PNGs; 1 for grey images).
    base_channels: 64 (the study and Ronneberger et al.; widths 64-128-256-512-1024).
    Any H, W: the input is padded to a multiple of 16, at least 32 (``pad_to_multiple``), logits cropped back.
    """

    multiple = 16  # 2**4 max-pools

    def __init__(self, in_channels: int = 3, base_channels: int = 64):
        super().__init__()
        in_channels = check_positive_int(in_channels, "in_channels", "model 'unet'")
        c = check_positive_int(base_channels, "base_channels", "model 'unet'")
        widths = [c, 2 * c, 4 * c, 8 * c, 16 * c]
        self.inc = DoubleConv(in_channels, c)
        self.downs = nn.ModuleList(DoubleConv(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.ups = nn.ModuleList(Up(a, b) for a, b in zip(widths[:0:-1], widths[-2::-1], strict=True))
        self.head = nn.Conv2d(c, 1, 1)
        xavier_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = self.inc(pad_to_multiple(x, self.multiple))
        skips = []
        for down in self.downs:
            skips.append(x)
            x = down(F.max_pool2d(x, 2))
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(x, skip)
        return crop_to(self.head(x), h, w)
