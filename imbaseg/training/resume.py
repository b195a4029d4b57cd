"""What ``imbaseg train --resume`` does with config keys that changed since the run was saved.

The rules (the README's table; ``tests/training/test_resume_changes.py`` tests each row):

- ``train.epochs``, ``sched.*``: cosine and poly are functions of (epoch, train.epochs); they are
  rebuilt from the completed epoch over the new length, so a 2-epoch cosine run extended to 4 gets,
  from epoch 3 on, the lr of a 4-epoch cosine. A new ``sched.name`` starts there too (``plateau``
  and ``none`` start from ``optim.lr``, plateau with fresh counters).
- ``optim.lr``: the new base lr. cosine/poly continue at ``new lr x factor(epoch)``; ``none`` uses it
  as is; plateau restarts from it (its counters are kept). Unchanged, plateau keeps its reduced lr.
- ``optim.name``: the optimizer starts with fresh state (no momentum or Adam moments); a message says so.
- other ``optim.*`` (momentum, weight_decay): applied to the restored optimizer, its state kept.
- ``train.monitor`` and the model's shape (``model.name``, ``model.base_channels``, ``model.encoder``,
  ``data.in_channels``) cannot change: ``UserError`` (best.pt and the weights belong to the old ones).
- anything else (data, loss, batch size, seed, early stopping, ...) applies from the resumed point on.
"""

from __future__ import annotations

from typing import Any

from imbaseg.errors import UserError
from imbaseg.optim import build_scheduler

FROZEN = {
    "train.monitor": "best.pt and early stopping were chosen by it",
    "model.name": "the saved weights belong to the old model",
    "model.base_channels": "the saved weights belong to the old model",
    "model.encoder": "the saved weights belong to the old model",
    "data.in_channels": "the saved weights belong to the old model",
}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, old value, new value)]`` for every key that differs, in ``new``'s order."""
    a, b = flatten(old), flatten(new)
    keys = list(b) + [k for k in a if k not in b]
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]


def check_changes(changes: list[tuple[str, Any, Any]], run: str) -> None:
    """UserError for a key that cannot change on resume (see ``FROZEN``)."""
    for key, old, new in changes:
        if key in FROZEN:
            raise UserError(
                f"{key} cannot change on --resume of {run} ({old} -> {new}): {FROZEN[key]}. "
                f"Drop the flag, or start a new run"
            )


def describe(changes: list[tuple[str, Any, Any]]) -> str:
    """``train.epochs 2 -> 4, optim.lr 0.003 -> 0.001`` (for the message and train.log)."""
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changes)


def restore_optimizer(optimizer, saved: dict[str, Any], old_name: str, new_name: str) -> str | None:
    """Load ``saved`` (an optimizer state dict) into ``optimizer`` unless its type changed.

    The config's hyper-parameters win over the saved ones (momentum, weight decay, ...); the lr is
    left to ``restore_schedule``. Returns a message when the state was dropped.
    """
    if old_name != new_name:
        return (
            f"optim.name changed ({old_name} -> {new_name}): the {new_name} optimizer starts with fresh "
            "state (no momentum or moments carried over)"
        )
    skip = ("params", "lr", "initial_lr")
    fresh = [{k: v for k, v in g.items() if k not in skip} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, hyper in zip(optimizer.param_groups, fresh, strict=True):
        group.update(hyper)
    return None


def saved_lrs(saved_optimizer: dict[str, Any] | None) -> list[float] | None:
    """The lr of each param group in a saved optimizer state dict (what the schedule had reached)."""
    if not saved_optimizer:
        return None
    return [g["lr"] for g in saved_optimizer.get("param_groups", [])] or None


def restore_schedule(optimizer, cfg, old: dict[str, Any], saved_sched: dict[str, Any] | None,
                     lrs: list[float] | None, epoch: int):
    """The schedule of ``cfg`` positioned after ``epoch`` completed epochs, per the module's rules.

    ``old``: the saved config (dict); ``saved_sched``: the saved scheduler state; ``lrs``: the lr of
    each group when the run was saved. Sets each group's lr; returns the scheduler (None for none).
    """
    name, lr0 = cfg.sched.name, cfg.optim.lr
    lr_changed = old.get("optim", {}).get("lr") != lr0
    if name in ("cosine", "poly"):
        for g in optimizer.param_groups:
            g["initial_lr"] = lr0  # the LambdaLR base: factor(epoch) x the config's lr
        return build_scheduler(cfg, optimizer, start_epoch=epoch)
    for g in optimizer.param_groups:
        g.pop("initial_lr", None)
    scheduler = build_scheduler(cfg, optimizer, start_epoch=epoch)
    same_plateau = name == "plateau" and old.get("sched", {}).get("name") == "plateau" and saved_sched
    keep_lr = same_plateau and not lr_changed and lrs is not None
    for i, g in enumerate(optimizer.param_groups):
        g["lr"] = lrs[i] if keep_lr else lr0
    if same_plateau:
        for key in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
            if key in saved_sched:
                setattr(scheduler, key, saved_sched[key])
    return scheduler


def schedule_note(cfg, optimizer, epoch: int) -> str:
    """``lr 1.50e-03 for epoch 3 (cosine over 4 epochs)``."""
    lr = optimizer.param_groups[0]["lr"]
    over = f" over {cfg.train.epochs} epochs" if cfg.sched.name in ("cosine", "poly") else ""
    return f"lr {lr:.3g} for epoch {epoch + 1} ({cfg.sched.name}{over})"
