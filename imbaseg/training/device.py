"""Choosing the device and the mixed-precision dtype: one place for training and inference."""

from __future__ import annotations

import torch

from imbaseg.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable explicit device is a UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available here: use --device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device '{name}' requested but MPS is not available here: use --device cpu or auto")
    return dev


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; None (full precision) on CPU/MPS or when disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
