"""The training loop: AMP, channels_last, optional compile, checkpoints, early stopping, resume.

``train(cfg)`` is the one entry point (the CLI calls it). It runs on CPU, one GPU, or many GPUs
under torchrun (DistributedDataParallel; rank 0 alone writes files). Losses are accumulated on
the device and synced once per ``train.log_interval`` steps, which is also when a non-finite
loss is detected: the run stops with ``NonFiniteLoss`` and the checkpoints written before stay
intact.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from imbaseg.config import Config, save_config
from imbaseg.errors import UserError
from imbaseg.optim import build_optimizer, build_scheduler
from imbaseg.paths import new_run_dir
from imbaseg.training import distributed as D
from imbaseg.training.device import amp_dtype, resolve_device
from imbaseg.training.history import epoch_line, write_history
from imbaseg.training.run_dir import (
    RunDir,
    build_model,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)


class NonFiniteLoss(UserError):
    """The training loss became NaN or Inf (a user-facing stop, not a crash)."""


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_value: float | None
    best_epoch: int | None
    stopped: str  # "completed", "early_stopping", "interrupted"


@dataclass
class TrainerCallbacks:
    """How a run reports its progress; the trainer itself prints nothing. Every hook is optional.

    Only rank 0 calls them. ``imbaseg.cli.render.TrainingDisplay`` is the terminal implementation;
    any object with these attributes works.

    - ``on_start(run_dir, epochs, done, batches)``: the run folder (Path), the planned epochs, the epochs
      already done (a resumed run) and the batches per epoch.
    - ``on_batch(epoch, done, total, loss, images_per_s)``: after each step; ``epoch`` counts from 1,
      ``loss`` is the running mean (None until the first sync, every ``train.log_interval`` steps).
    - ``on_epoch_end(report)``: the epoch's history row (the columns of history.csv) plus
      ``images_per_s`` and ``best`` (True when it wrote a new best.pt); after the checkpoints are written.
    - ``on_message(text, level)``: a notice, ``level`` "info" or "warning" (compile fallback, early
      stopping, Ctrl-C).
    """

    on_start: Callable[[Path, int, int, int], None] | None = None
    on_batch: Callable[[int, int, int, float | None, float], None] | None = None
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None
    on_message: Callable[[str, str], None] | None = None


@dataclass
class _State:
    epoch: int = 0  # completed epochs
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- setup helpers


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_loss(cfg: Config) -> nn.Module:
    from imbaseg.losses import get_loss

    spec = cfg.loss.terms if cfg.loss.terms else cfg.loss.name
    params = {} if cfg.loss.terms else dict(cfg.loss.params)
    loss = get_loss(spec, **params)
    if D.env_world_size() > 1 and cfg.loss.sync_stats:
        _enable_sync_stats(loss)
    return loss


def _enable_sync_stats(loss: nn.Module) -> None:
    """Switch every batch-statistic loss (sub)module to all-reduced global counts."""
    for module in loss.modules():
        if hasattr(module, "sync_stats"):
            module.sync_stats = True


def prepared_data(cfg: Config) -> Path:
    """The prepared folder of ``cfg.data.dataset``; UserError saying what to run when it is missing.

    Training only reads ``data/prepared``; the synthetic sets prepare themselves on first use, once,
    however many processes start at the same time (see ``imbaseg.data.prepare.ensure_prepared``).
    """
    from imbaseg.data.prepare import ensure_prepared

    return ensure_prepared(cfg.data.dataset, root=cfg.data.root)


def build_loaders(cfg: Config, distance_keys: tuple[str, ...], world: int = 1, rank: int = 0,
                  root: Path | None = None):
    """Train and val loaders over the prepared folder ``root`` (default: ``prepared_data(cfg)``).

    Sampling is the same permutation for any world size: the global batch ``batch_size * world`` holds
    the same images on 1 or N processes; validation is sharded without padding.
    """
    from imbaseg.data.dataset import SegDataset
    from imbaseg.data.loader import build_loader

    d = cfg.data
    root = prepared_data(cfg) if root is None else root
    size = tuple(d.size) if d.size else None
    patch = tuple(d.patch_size) if d.patch_size else None
    train_ds = SegDataset(
        root,
        "train",
        size=size,
        augment=d.augment,
        patch_size=patch,
        distance_keys=distance_keys,
        in_channels=d.in_channels,
        seed=cfg.seed,
        patches_per_image=d.patches_per_image if patch else 1,
    )
    val_ds = SegDataset(
        root,
        "val",
        size=size,
        augment=None,
        patch_size=None,
        distance_keys=distance_keys,
        in_channels=d.in_channels,
        seed=cfg.seed,
    )
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise UserError(
            f"prepared dataset {root} needs non-empty train and val splits (see its manifest.csv)"
        )
    common = dict(
        num_workers=d.num_workers,
        seed=cfg.seed,
        distributed=True,
        num_replicas=world,
        rank=rank,
        persistent_workers=(d.num_workers > 0 and not cfg.train.deterministic) or None,
    )
    drop_last = (
        len(train_ds) > cfg.train.batch_size * world
    )  # no tiny last batch, unless that is all there is
    train_dl = build_loader(train_ds, cfg.train.batch_size, shuffle=True, drop_last=drop_last, **common)
    val_dl = build_loader(val_ds, cfg.train.batch_size, shuffle=False, **common)
    return train_dl, val_dl


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """Owns the model, optimizer and loaders of one run; ``fit()`` runs the epochs.

    ``callbacks``: a ``TrainerCallbacks`` (or any object with its hooks) that hears about the run;
    without one the run is silent apart from its own files (train.log, history.csv, ...).
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: Path | None = None,
        resume: str | Path | None = None,
        callbacks: TrainerCallbacks | None = None,
    ):
        self.cfg = cfg
        self.callbacks = callbacks
        self.device = resolve_device(cfg.train.device)
        self.rank, local_rank, self.world = D.setup(self.device.type)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        self.main = self.rank == 0
        self.data_dir = prepared_data(cfg)  # before building anything: a missing dataset fails at once
        seed_everything(cfg.seed + self.rank, cfg.train.deterministic)
        self.state = _State()
        self.stop_requested = False

        self.model = build_model(cfg).to(self.device)
        # channels_last speeds up cuDNN convolutions; on CPU it measured ~20% slower (bench_train.py)
        self.channels_last = cfg.train.channels_last and self.device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(cfg).to(self.device)
        self.distance_keys = tuple(getattr(self.loss_fn, "distance_inputs", ()) or ())
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.amp = amp_dtype(self.device, cfg.train.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        loaders = build_loaders(cfg, self.distance_keys, self.world, self.rank, self.data_dir)
        self.train_dl, self.val_dl = loaders

        if resume is not None:
            self._resume(RunDir(resume))
            self.run_dir = Path(resume)
        else:
            self.run_dir = Path(run_dir) if run_dir is not None else self._new_run_dir()
        self.folder = RunDir(self.run_dir)
        self.net = self._wrap(self.model)
        self.log = self._logger()

    # -- reporting (rank 0 only)

    def _emit(self, hook: str, *args) -> None:
        fn = getattr(self.callbacks, hook, None) if self.main else None
        if fn is not None:
            fn(*args)

    def _say(self, text: str, level: str = "info") -> None:
        self._emit("on_message", text, level)

    @property
    def batches_per_epoch(self) -> int:
        limit = self.cfg.train.max_train_batches
        return len(self.train_dl) if limit is None else min(len(self.train_dl), limit)

    # -- setup

    def _new_run_dir(self) -> Path:
        path = None
        if self.main:
            path = str(
                new_run_dir(
                    self.cfg.data.dataset, self.cfg.loss_label, self.cfg.name, root=self.cfg.data.root
                )
            )
        return Path(D.broadcast_object(path))

    def _wrap(self, model: nn.Module) -> nn.Module:
        net = model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.cfg.train.compile:
            try:
                net = torch.compile(net)
            except Exception as exc:  # compile support varies by platform; eager always works
                self._say(f"torch.compile failed ({exc.__class__.__name__}); training eagerly", "warning")
        return net

    def _logger(self) -> logging.Logger:
        """train.log of rank 0 (the library's own file; the terminal hears through the callbacks)."""
        log = logging.getLogger(f"imbaseg.run.{id(self)}")
        log.setLevel(logging.INFO)
        log.propagate = False
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(self.folder.train_log)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            log.addHandler(handler)
        return log

    def _resume(self, folder: RunDir) -> None:
        path = folder.checkpoint_file("last")
        if not path.is_file():
            raise UserError(
                f"cannot resume {folder.path}: no {path.relative_to(folder.path)} in it (not a run folder, "
                "or it never finished an epoch); start a new run instead"
            )
        ckpt = load_checkpoint(path, map_location=self.device)
        load_model_state(self.model, ckpt["model"], str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = _State(
            ckpt["epoch"],
            ckpt.get("best_value"),
            ckpt.get("best_epoch"),
            ckpt.get("bad_epochs", 0),
            list(ckpt.get("history", [])),
        )
        if ckpt.get("rng") and ckpt.get("world_size", 1) == self.world:
            set_rng_state(ckpt["rng"])  # across a world-size change the streams differ anyway

    # -- one epoch

    def _batch_to_device(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        nb = self.device.type == "cuda"
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = batch["image"].to(self.device, non_blocking=nb).contiguous(memory_format=fmt)
        y = batch["mask"].to(self.device, non_blocking=nb)
        extras = {k: batch[k].to(self.device, non_blocking=nb) for k in self.distance_keys if k in batch}
        return x, y, extras

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def _sync_running(self, total: torch.Tensor, count: int, epoch: int, step: int) -> float:
        value = float(total.item()) / max(count, 1)
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"training loss became {value} at epoch {epoch + 1}, step {step}: lower the learning rate "
                f"(optim.lr={self.cfg.optim.lr}), enable optim.grad_clip, or check the data. "
                f"Checkpoints written before are intact in {self.folder.checkpoints_dir}"
            )
        return value

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training loader (``epoch`` counts from 0); the epoch's mean loss and rates."""
        self.net.train()
        sampler = getattr(self.train_dl, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        gen = getattr(self.train_dl, "generator", None)
        if gen is not None:
            gen.manual_seed((self.cfg.seed + epoch) * 1_000_003 + self.rank)  # epoch-seeded: resume is exact
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        terms: dict[str, torch.Tensor] = {}
        n_batches, seen, t0, running, waited = 0, 0, time.perf_counter(), None, 0.0
        limit, planned = self.cfg.train.max_train_batches, self.batches_per_epoch
        batches = iter(self.train_dl)
        while not self.stop_requested and (limit is None or n_batches < limit):
            t_wait = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - t_wait  # time the step waited for data (the loader's share)
            if batch is None:
                break
            x, y, extras = self._batch_to_device(batch)
            with self._autocast():
                logits = self.net(x)
            loss = self.loss_fn(logits.float(), y, **extras)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.detach()
            for k, v in (getattr(self.loss_fn, "last_terms", None) or {}).items():
                terms[k] = terms.get(k, 0.0) + v.detach().double()
            n_batches += 1
            seen += x.shape[0]
            if n_batches % self.cfg.train.log_interval == 0:
                running = self._sync_running(total, n_batches, epoch, n_batches)
            rate = seen * self.world / max(time.perf_counter() - t0, 1e-9)
            self._emit("on_batch", epoch + 1, n_batches, planned, running, rate)
        stats = torch.stack([total, torch.tensor(float(n_batches), device=self.device, dtype=torch.float64)])
        D.all_reduce_sum(stats)
        mean = self._sync_running(stats[0], int(stats[1].item()), epoch, n_batches)
        elapsed = max(time.perf_counter() - t0, 1e-9)
        out = {
            "train_loss": mean,
            "images_per_s": seen * self.world / elapsed,
            "data_wait_fraction": waited / elapsed,
        }
        for k, v in terms.items():
            t = torch.as_tensor(v, device=self.device, dtype=torch.float64).reshape(1)
            D.all_reduce_sum(t)
            out[f"train_{k}"] = float(t.item()) / max(int(stats[1].item()), 1)
        return out

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss per image and mean per-image Dice (both empty counts as 1), over all ranks."""
        self.net.eval()
        thr = self.cfg.train.threshold
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # loss*n, dice sum, n
        for batch in self.val_dl:
            x, y, extras = self._batch_to_device(batch)
            with self._autocast():
                logits = self.net(x)
            logits = logits.float()
            loss = self.loss_fn(logits, y, **extras)
            fov = batch["fov"].to(self.device) if "fov" in batch else torch.ones_like(y)
            pred = (torch.sigmoid(logits) > thr).float() * fov
            tgt = (y > 0.5).float() * fov
            tp = (pred * tgt).sum(dim=(1, 2, 3))
            denom = pred.sum(dim=(1, 2, 3)) + tgt.sum(dim=(1, 2, 3))
            dice = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.ones_like(denom))
            n = x.shape[0]
            sums += torch.stack(
                [
                    loss.double() * n,
                    dice.double().sum(),
                    torch.tensor(float(n), device=self.device, dtype=torch.float64),
                ]
            )
        D.all_reduce_sum(sums)
        n = max(sums[2].item(), 1.0)
        return {"val_loss": sums[0].item() / n, "val_dice": sums[1].item() / n}

    # -- bookkeeping

    def _improved(self, value: float) -> bool:
        best = self.state.best_value
        if best is None or not math.isfinite(best):
            return math.isfinite(value)
        return value > best if self.cfg.monitor_mode == "max" else value < best

    def checkpoint(self, interrupted: bool = False) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": self.state.epoch,
            "best_value": self.state.best_value,
            "best_epoch": self.state.best_epoch,
            "bad_epochs": self.state.bad_epochs,
            "history": self.state.history,
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "interrupted": interrupted,
            "world_size": self.world,
        }

    def _write_run_files(self) -> None:
        from imbaseg.training.env import write_env

        save_config(self.cfg, self.folder.config_file)
        write_env(self.folder.env_file, self.device, self.world)

    def _end_epoch(self, epoch: int, row: dict[str, Any]) -> bool:
        """Record the epoch, step the schedule, write files; True when early stopping triggers."""
        value = row[self.cfg.train.monitor]
        improved = self._improved(value)
        if improved:
            self.state.best_value, self.state.best_epoch, self.state.bad_epochs = value, epoch + 1, 0
        else:
            self.state.bad_epochs += 1
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(value)
        elif self.scheduler is not None:
            self.scheduler.step()
        self.state.epoch = epoch + 1
        self.state.history.append(row)
        if self.main:
            state = self.checkpoint()
            save_checkpoint(state, self.folder.checkpoint_file("last"))
            if improved:
                save_checkpoint(state, self.folder.checkpoint_file("best"))
            write_history(self.folder, self.state.history)
        D.barrier()
        patience = self.cfg.train.early_stopping
        return bool(patience) and self.state.bad_epochs >= patience

    def fit(self) -> TrainResult:
        """Run the remaining epochs; stop early, on Ctrl-C (saving last.pt) or on a non-finite loss."""
        if self.main:
            self._write_run_files()
            self.log.info(
                "run %s: dataset=%s loss=%s model=%s device=%s world=%d",
                self.run_dir,
                self.cfg.data.dataset,
                self.cfg.loss_label,
                self.cfg.model.name,
                self.device,
                self.world,
            )
        self._emit("on_start", self.run_dir, self.cfg.train.epochs, self.state.epoch, self.batches_per_epoch)
        with _sigint_guard(self):
            stopped = self._epochs()
        if stopped == "interrupted" and self.main:
            last = self.folder.checkpoint_file("last")
            save_checkpoint(self.checkpoint(interrupted=True), last)
            self._say(f"interrupted: saved {last}; continue with imbaseg train --resume {self.run_dir}",
                      "warning")
        self.log.info(
            "finished (%s) after %d epochs; best %s=%s at epoch %s",
            stopped,
            self.state.epoch,
            self.cfg.train.monitor,
            self.state.best_value,
            self.state.best_epoch,
        )
        for h in list(self.log.handlers):
            h.close()
            self.log.removeHandler(h)
        return TrainResult(
            self.run_dir, self.state.history, self.state.best_value, self.state.best_epoch, stopped
        )

    def _epochs(self) -> str:
        """The epoch loop; returns how it stopped: completed, early_stopping or interrupted."""
        for epoch in range(self.state.epoch, self.cfg.train.epochs):
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_stats = self.train_epoch(epoch)
            if self.stop_requested:
                return "interrupted"
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": train_stats["train_loss"],
                **self.validate(),
                "seconds": round(time.perf_counter() - t0, 3),
                **{k: v for k, v in train_stats.items() if k.startswith("train_") and k != "train_loss"},
            }
            self.last_train_stats = train_stats
            early = self._end_epoch(epoch, row)
            best = self.state.best_epoch == epoch + 1
            report = {**row, "images_per_s": train_stats["images_per_s"], "best": best}
            if self.main:
                self.log.info(epoch_line(report, self.cfg.train.epochs))
            self._emit("on_epoch_end", report)
            if self.stop_requested:
                return "interrupted"
            if early:
                self._say(
                    f"early stopping: no improvement of {self.cfg.train.monitor} for "
                    f"{self.cfg.train.early_stopping} epochs"
                )
                return "early_stopping"
        return "completed"


@contextlib.contextmanager
def _sigint_guard(trainer: Trainer):
    """First Ctrl-C asks the loop to stop after the current batch; a second one aborts at once."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        trainer._say("stopping after this batch (Ctrl-C again to abort)...", "warning")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    cfg: Config,
    resume: str | Path | None = None,
    callbacks: TrainerCallbacks | None = None,
) -> TrainResult:
    """Train a model as ``cfg`` describes; ``resume`` continues a run folder where it stopped.

    Progress goes to ``callbacks`` (see ``TrainerCallbacks``); nothing is printed.
    """
    trainer = Trainer(cfg, resume=resume, callbacks=callbacks)
    try:
        return trainer.fit()
    finally:
        D.cleanup()
