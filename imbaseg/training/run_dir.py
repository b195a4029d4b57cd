"""Run folders: checkpoint paths, atomic checkpoint I/O, and rebuilding a trained model from a run.

A checkpoint is a dict with ``model`` (state dict), ``optimizer``, ``scheduler``, ``scaler``,
``epoch`` (completed epochs), ``best_value``, ``best_epoch``, ``bad_epochs``, ``history``
(list of row dicts), ``rng``, ``config`` (the resolved config as a dict), ``interrupted`` and
``world_size``. ``evaluate`` and ``compare`` need nothing but the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imbaseg.config import Config, from_dict
from imbaseg.errors import UserError

CHECKPOINTS = ("best", "last")


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


def checkpoint_path(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """``RUN_DIR/checkpoints/<which>.pt``, or a UserError saying what is missing."""
    run_dir = Path(run_dir)
    if which not in CHECKPOINTS:
        raise UserError(f"unknown checkpoint '{which}': choose best or last")
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        other = [c for c in CHECKPOINTS if (run_dir / "checkpoints" / f"{c}.pt").is_file()]
        hint = f" Use --checkpoint {other[0]}." if other else " Train it first with imbaseg train."
        raise UserError(f"{run_dir} has no checkpoints/{which}.pt (not a finished run?).{hint}")
    return path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save through a temp file and os.replace, so a crash never leaves a torn checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise UserError(
            f"cannot read checkpoint {path}: {exc.__class__.__name__}. Is it a complete imbaseg run?"
        ) from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise UserError(f"{path} is not an imbaseg checkpoint (no model/config inside)")
    return ckpt


def build_model(cfg: Config) -> torch.nn.Module:
    """The model a config describes (weights freshly initialised)."""
    from imbaseg.models import create_model

    m = cfg.model
    if m.name == "unet":
        return create_model("unet", in_channels=cfg.data.in_channels, base_channels=m.base_channels)
    return create_model(m.name, in_channels=cfg.data.in_channels, encoder=m.encoder, pretrained=m.pretrained)


def load_model_state(model: torch.nn.Module, state: dict[str, Any], source: str) -> None:
    """Load weights, turning a shape/key mismatch into a UserError naming the checkpoint."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise UserError(
            f"checkpoint {source} does not match the model its config describes ({detail}). "
            "Was the checkpoint copied from another run?"
        ) from exc


@dataclass
class LoadedRun:
    run_dir: Path
    config: Config
    model: torch.nn.Module
    checkpoint: dict[str, Any]
    checkpoint_file: Path


def load_run(
    run_dir: str | os.PathLike, which: str = "best", device: str | torch.device = "cpu"
) -> LoadedRun:
    """Rebuild the trained model of a run folder, in eval mode on ``device``."""
    path = checkpoint_path(run_dir, which)
    ckpt = load_checkpoint(path)
    cfg = from_dict(ckpt["config"])
    model = build_model(cfg)
    load_model_state(model, ckpt["model"], str(path))
    model.to(device).eval()
    return LoadedRun(Path(run_dir), cfg, model, ckpt, path)
