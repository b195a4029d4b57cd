"""A U-Net decoder over any timm encoder (``features_only=True``), e.g. resnet34 or efficientnet_b0.

Shapes: input (N, in_channels, H, W) of any H, W >= 1; output (N, 1, H, W) logits (no sigmoid).
Pretrained weights are loaded only when asked for; offline, that is a quick UserError, never a hang.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Sequence
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from imbaseg.errors import UserError, suggestion
from imbaseg.models.unet import DoubleConv, check_positive_int, crop_to, pad_to_multiple, xavier_init_

PROBE_TIMEOUT_S = 3.0  # a reachable hub answers a TCP connect in well under a second
DOWNLOAD_SOCKET_TIMEOUT_S = 30.0  # per socket operation while downloading, so a dead link cannot hang
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _offline_hint(encoder: str) -> str:
    return (
        f"could not download pretrained weights for {encoder} (offline?); use --set model.pretrained=false "
        "or place the weights in the HF/torch cache"
    )


def check_encoder_name(encoder: str) -> None:
    """UserError with a did-you-mean among ``timm.list_models()`` when timm does not know ``encoder``."""
    import timm

    if not isinstance(encoder, str) or not timm.is_model(encoder):
        arch = encoder.split(".")[0] if isinstance(encoder, str) else str(encoder)
        hint = suggestion(arch, timm.list_models()) or " See timm.list_models() for the names."
        raise UserError(f"unknown encoder '{encoder}' for model 'timm-unet'.{hint}")


def _weights_host(encoder: str) -> tuple[str, int]:
    """(host, port) the pretrained weights of ``encoder`` come from; UserError when timm has none."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(encoder)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise UserError(
            f"encoder '{encoder}' has no pretrained weights in timm; use --set model.pretrained=false."
        )
    if cfg.hf_hub_id:
        with contextlib.suppress(ImportError):
            from huggingface_hub import constants

            url = urlparse(constants.ENDPOINT)
            return url.hostname or "huggingface.co", url.port or 443
    url = urlparse(cfg.url or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def can_reach(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to host:port opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hf_offline(flag: bool):
    """Temporarily set huggingface_hub's offline mode (the HF_HUB_OFFLINE semantics: cache only)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = flag or old
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _user_offline() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _create(encoder: str, in_channels: int, pretrained: bool) -> nn.Module:
    import timm

    try:
        return timm.create_model(encoder, features_only=True, pretrained=pretrained, in_chans=in_channels)
    except (RuntimeError, AttributeError, TypeError, NotImplementedError) as err:
        raise UserError(f"encoder '{encoder}' cannot be used by 'timm-unet' (features_only): {err}") from err


def build_encoder(encoder: str, in_channels: int, pretrained: bool) -> nn.Module:
    """``timm.create_model(encoder, features_only=True, ...)``; cache first, then a quick online check.

    With ``pretrained``: (1) try the caches only (HF offline mode; a 3 s socket timeout for torch-hub URLs);
    (2) if they miss and the user is offline or the weights' host does not answer a TCP connect within 3 s,
    raise UserError at once (huggingface_hub would otherwise retry for ~45 s); (3) else download with a
    30 s socket timeout.
    """
    check_encoder_name(encoder)
    if not pretrained:
        return _create(encoder, in_channels, False)
    host, port = _weights_host(encoder)
    try:
        with _hf_offline(True), _socket_timeout(PROBE_TIMEOUT_S):
            return _create(encoder, in_channels, True)
    except OSError:
        pass  # not cached: huggingface_hub raises LocalEntryNotFoundError, urllib URLError (OSErrors)
    proxied = any(os.environ.get(v) for v in PROXY_VARS)  # a direct probe says nothing behind a proxy
    if _user_offline() or (not proxied and not can_reach(host, port)):
        raise UserError(_offline_hint(encoder))
    try:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            return _create(encoder, in_channels, True)
    except OSError as err:  # includes huggingface_hub's HTTP errors, URLError and socket timeouts
        raise UserError(f"{_offline_hint(encoder)}: {type(err).__name__}") from err


def check_decoder_channels(decoder_channels) -> tuple[int, ...]:
    """``decoder_channels`` as a tuple of positive ints, or a UserError."""
    if isinstance(decoder_channels, (str, bytes)) or not isinstance(decoder_channels, Sequence):
        got = repr(decoder_channels)
        raise UserError(f"model 'timm-unet': decoder_channels must be a list of ints, got {got}.")
    return tuple(check_positive_int(c, "decoder_channels", "model 'timm-unet'") for c in decoder_channels)


def fit_decoder_channels(widths: tuple[int, ...], n_stages: int) -> tuple[int, ...]:
    """The first ``n_stages`` widths; UserError when the encoder has more stages than widths."""
    if len(widths) < n_stages:
        raise UserError(
            f"model 'timm-unet': decoder_channels needs {n_stages} widths for this encoder, "
            f"got {len(widths)}."
        )
    return widths[:n_stages]


class TimmUNet(nn.Module):
    """U-Net decoder over a timm encoder: one DoubleConv per skip, then upsampling to full resolution.

    encoder: "resnet34" (the usual U-Net encoder; any timm CNN with features_only works).
    pretrained: False (reproducible and offline by default; ImageNet weights only when asked for).
    in_channels: 3 (RGB; timm adapts the first conv when pretrained and in_channels != 3).
    decoder_channels: (256, 128, 64, 32, 16) (smp's default; one width per encoder stage, deepest first;
        extra trailing widths are ignored for encoders with fewer stages, e.g. convnext's 4).
    Any H, W: padded to a multiple of the encoder's largest reduction r (usually 32), at least 2r, and the
        logits cropped back.
    """

    def __init__(
        self,
        encoder: str = "resnet34",
        pretrained: bool = False,
        in_channels: int = 3,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    ):
        super().__init__()
        if not isinstance(pretrained, bool):
            raise UserError(f"model 'timm-unet': pretrained must be true or false, got {pretrained!r}.")
        in_channels = check_positive_int(in_channels, "in_channels", "model 'timm-unet'")
        widths = check_decoder_channels(decoder_channels)  # before the (possibly downloading) encoder
        self.encoder = build_encoder(encoder, in_channels, pretrained)
        chans, reductions = self.encoder.feature_info.channels(), self.encoder.feature_info.reduction()
        if list(reductions) != sorted(reductions):
            raise UserError(f"encoder '{encoder}' returns features out of resolution order: {reductions}.")
        widths = fit_decoder_channels(widths, len(chans))
        self.multiple, self.first_reduction = max(reductions), reductions[0]
        self.nhwc = "NHWC" in str(getattr(self.encoder, "output_fmt", "NCHW"))  # e.g. swin
        ins, skips = [chans[-1], *widths[:-1]][: len(widths) - 1], chans[-2::-1]  # deepest first
        self.blocks = nn.ModuleList(
            DoubleConv(i + s, o) for i, s, o in zip(ins, skips, widths[:-1], strict=True)
        )
        self.final = DoubleConv(widths[-2] if len(widths) > 1 else chans[-1], widths[-1])
        self.head = nn.Conv2d(widths[-1], 1, 1)
        for part in (self.blocks, self.final, self.head):
            xavier_init_(part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple)
        feats = self.encoder(x)
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        y = feats[-1]
        for block, skip in zip(self.blocks, feats[-2::-1], strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = block(torch.cat([y, skip], dim=1))
        if self.first_reduction > 1:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return crop_to(self.head(self.final(y)), h, w)
