"""Optimizer and learning-rate schedule registries (plain dicts; torch is imported only when building).

``OPTIMIZERS[name](params, optim_cfg)`` -> ``torch.optim.Optimizer``;
``SCHEDULES[name](optimizer, cfg, start_epoch)`` -> a scheduler or None. The config validation
checks names against these dicts, so a name is written once.

Schedules are functions of the epoch: ``cosine`` and ``poly`` are ``LambdaLR`` over
``train.epochs`` that can be rebuilt for a new length at any epoch (``start_epoch``) without
replaying steps; ``plateau`` is ``ReduceLROnPlateau`` on ``train.monitor``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from imbaseg.errors import lookup


def _sgd(params, o):
    import torch

    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def _adamw(params, o):
    import torch

    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


OPTIMIZERS: dict[str, Callable[..., Any]] = {"sgd": _sgd, "adamw": _adamw}


def cosine_factor(epoch: int, epochs: int, lr0: float, min_lr: float) -> float:
    """lr / lr0 at ``epoch`` (0-based) of a cosine schedule from lr0 down to min_lr over ``epochs``."""
    e = min(epoch, epochs)
    return (min_lr + (lr0 - min_lr) * (1 + math.cos(math.pi * e / epochs)) / 2) / lr0


def poly_factor(epoch: int, epochs: int, lr0: float, min_lr: float, power: float) -> float:
    """lr / lr0 at ``epoch`` of nnU-Net's poly schedule ``(1 - epoch/epochs)^power``, floored at min_lr."""
    return max(min_lr / lr0, (1 - min(epoch, epochs) / epochs) ** power)


def _lambda(optimizer, factor: Callable[[int], float], start_epoch: int):
    import torch

    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=start_epoch - 1)


def _plateau(optimizer, cfg, start_epoch: int = 0):
    import torch

    s = cfg.sched
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=cfg.monitor_mode, factor=s.factor, patience=s.patience, min_lr=s.min_lr
    )


def _cosine(optimizer, cfg, start_epoch: int = 0):
    s, lr0, n = cfg.sched, cfg.optim.lr, cfg.train.epochs
    return _lambda(optimizer, lambda e: cosine_factor(e, n, lr0, s.min_lr), start_epoch)


def _poly(optimizer, cfg, start_epoch: int = 0):
    s, lr0, n = cfg.sched, cfg.optim.lr, cfg.train.epochs
    return _lambda(optimizer, lambda e: poly_factor(e, n, lr0, s.min_lr, s.power), start_epoch)


def _none(optimizer, cfg, start_epoch: int = 0):
    return None


SCHEDULES: dict[str, Callable[..., Any]] = {
    "plateau": _plateau,
    "cosine": _cosine,
    "poly": _poly,
    "none": _none,
}


def build_optimizer(cfg, params):
    """The optimizer ``cfg.optim`` names, over ``params``."""
    return lookup(cfg.optim.name, OPTIMIZERS, "optimizer")(params, cfg.optim)


def build_scheduler(cfg, optimizer, start_epoch: int = 0):
    """The schedule ``cfg.sched`` names, positioned at ``start_epoch`` completed epochs (None for none)."""
    return lookup(cfg.sched.name, SCHEDULES, "schedule")(optimizer, cfg, start_epoch)
