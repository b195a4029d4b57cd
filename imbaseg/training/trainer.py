"""The training loop: AMP, channels_last, optional compile, checkpoints, early stopping, resume.

``train(cfg)`` is the one entry point (the CLI calls it). It runs on CPU, one GPU, or many GPUs
under torchrun (DistributedDataParallel; rank 0 alone writes files). Losses are accumulated on
the device and synced once per ``train.log_interval`` steps, which is also when a non-finite
loss is detected: the run stops with ``NonFiniteLoss`` and the checkpoints written before stay
intact.

Stopping: SIGINT (Ctrl-C), SIGTERM, SIGUSR1 and SIGUSR2 ask the loop to stop after the current
batch (under torchrun the ranks agree at the next ``log_interval`` sync, so all stop at the same
batch). ``last.pt`` then holds the weights at that batch and its ``position`` in the epoch (batch
index and the partial loss sums of every rank); ``--resume`` redraws the epoch's batches up to that
point without training on them (the same permutation and augmentation stream) and continues
exactly there. The process exits with 128 + the signal number. A second signal aborts at once.

Order of an epoch's files: ``last.pt``, then ``best.pt``, then history and ``status.json``; a kill
between the two checkpoints is repaired at the next resume (``RunDir.repair_best``).
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
from imbaseg.paths import new_run_dir, write_error
from imbaseg.training import distributed as D
from imbaseg.training import resume as R
from imbaseg.training.device import amp_dtype, resolve_device
from imbaseg.training.history import epoch_line, write_history
from imbaseg.training.run_dir import (
    RunDir,
    build_model,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)

# Handled alike: stop after this batch, save, exit 128 + the signal number (Slurm sends SIGTERM, or
# SIGUSR1/SIGUSR2 with --signal, before it kills a job; Kubernetes and `timeout` send SIGTERM).
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
# A repeat within this many seconds is the same stop: torchrun's agent and srun forward a signal that the
# workers also received directly (Slurm signals every process of a step, a terminal its process group).
REPEAT_WINDOW_S = 1.0


class NonFiniteLoss(UserError):
    """The training loss became NaN or Inf (a user-facing stop, not a crash)."""


class TrainingAborted(KeyboardInterrupt):
    """A second stop signal: the run ended at once, without saving (``signum`` says which signal)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(signum: int | None) -> int:
    """The exit status of a run stopped by ``signum``: 128 + its number, as a shell reports a kill
    by that signal (SIGINT 130, SIGTERM 143, SIGUSR1 138, SIGUSR2 140 on Linux)."""
    return 128 + int(signum if signum is not None else signal.SIGINT)


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_value: float | None
    best_epoch: int | None
    stopped: str  # "completed", "early_stopping", "interrupted"
    signal: int | None = None  # the signal that stopped an interrupted run


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
      stopping, a stop signal and the resume command, changed keys on resume, a repaired best.pt, a
      lock taken over); each also goes to train.log.
    - ``on_end(stopped)``: the run is over: "completed", "early_stopping", "interrupted" (its files are
      written), "aborted" (a second signal) or "failed" (an error follows).

    ``train.trackers`` (TensorBoard, MLflow) are consumers of these hooks too: ``imbaseg.training.trackers``.
    """

    on_start: Callable[[Path, int, int, int], None] | None = None
    on_batch: Callable[[int, int, int, float | None, float], None] | None = None
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None
    on_message: Callable[[str, str], None] | None = None
    on_end: Callable[[str], None] | None = None


@dataclass
class _State:
    epoch: int = 0  # completed epochs
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # training time of the sessions before this one
    position: dict[str, Any] | None = None  # where in epoch ``epoch + 1`` a stopped run's weights are


@dataclass
class _Acc:
    """One epoch's running sums on this rank (restored from a mid-epoch position on resume)."""

    total: torch.Tensor  # float64 sum of the batch losses
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0  # batches in ``total``
    n: int = 0  # batches drawn from the loader this epoch (the position)
    seen: int = 0  # images trained in this session
    waited: float = 0.0  # seconds spent waiting for data
    before: float = 0.0  # seconds of this epoch spent before a resume


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
        # persistent workers carry their augmentation stream across epochs: resume would not be exact
        persistent_workers=d.num_workers > 0 and not cfg.train.deterministic,
    )
    drop_last = (
        len(train_ds) > cfg.train.batch_size * world
    )  # no tiny last batch, unless that is all there is
    train_dl = build_loader(train_ds, cfg.train.batch_size, shuffle=True, drop_last=drop_last, **common)
    val_batch = 1 if check_sizes(cfg, root) else cfg.train.batch_size
    val_dl = build_loader(val_ds, val_batch, shuffle=False, **common)
    for dl in (train_dl, val_dl):
        dl.worker_init_fn = QuietWorker(dl.worker_init_fn)
    return train_dl, val_dl


def check_sizes(cfg: Config, root: Path) -> bool:
    """Check that the training images can be batched; True when the validation images differ in size.

    Without ``data.size`` (and ``data.patch_size`` for training) images keep their prepared size, so
    training images of several sizes cannot be stacked into a batch of more than one: UserError
    naming two of them and the fix. Validation images of several sizes are validated one at a time.
    """
    if cfg.data.size:
        return False
    from imbaseg.data.manifest import read_manifest

    df = read_manifest(root)

    def sizes(split: str) -> dict[tuple[int, int], str]:
        part = df[df["split"] == split]
        return {(int(h), int(w)): i for (h, w), i in part.groupby(["height", "width"])["id"].first().items()}

    train = sizes("train")
    if len(train) > 1 and not cfg.data.patch_size and cfg.train.batch_size > 1:
        (a, ia), (b, ib) = list(train.items())[:2]
        raise UserError(
            f"dataset {cfg.data.dataset} ({root}) has training images of {len(train)} sizes, e.g. "
            f"{a[0]}x{a[1]} ({ia}) and {b[0]}x{b[1]} ({ib}), and neither data.size nor data.patch_size "
            "is set, so they cannot be batched: resize them with --set data.size=[H,W] or train on "
            "crops with --set data.patch_size=[H,W]"
        )
    return len(sizes("val")) > 1


class QuietWorker:
    """A DataLoader ``worker_init_fn`` that makes workers ignore the stop signals, then calls ``init``.

    A terminal's Ctrl-C and Slurm's SIGTERM reach every process of the job; the main process stops
    the run and shuts its workers down, which must not die (or report) on their own first.
    """

    def __init__(self, init: Callable[[int], None] | None):
        self.init = init

    def __call__(self, worker_id: int) -> None:
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        if self.init is not None:
            self.init(worker_id)


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """Owns the model, optimizer and loaders of one run; ``fit()`` runs the epochs.

    ``callbacks``: a ``TrainerCallbacks`` (or any object with its hooks) that hears about the run;
    without one the run is silent apart from its own files (train.log, history.csv, ...).

    Every check (dataset, sizes, config changes on resume, the run folder's lock) runs before the
    run folder is created; a setup that fails after that removes the folder it created. The lock
    (``RunDir.lock``) is held from here until ``fit()`` returns.
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
        self.state = _State()
        if self.main:  # train.trackers wrap the callbacks (UserError now for a tracker not installed)
            from imbaseg.training.trackers import attach

            self.callbacks = attach(cfg, callbacks, self.preview, lambda: self.state.history, self._say)
        self.stop_requested, self.stop_signal = False, None
        self.signal_times: list[float] = []  # when this process received stop signals
        self.signal_note: str | None = None  # the handler's message, said by the loop (_signal_notice)
        self.notes: list[tuple[str, str]] = []  # setup messages, said (and logged) when fit() starts
        self.lock, self.log, self._created = None, None, False
        if resume is not None:  # a second process resuming the same folder stops here, at once
            self.run_dir = Path(resume)
            self.folder = RunDir(self.run_dir)
            self._last_checkpoint()
            self.lock = self._on_main(self._take_lock)
        try:
            self._build(run_dir, resume is not None)
        except BaseException:
            self._abandon()
            raise

    def _build(self, run_dir: Path | None, resuming: bool) -> None:
        """Data, model, optimizer and loaders; then the run folder (new, or restored from last.pt)."""
        cfg = self.cfg
        self.data_dir = prepared_data(cfg)  # before building anything: a missing dataset fails at once
        seed_everything(cfg.seed + self.rank, cfg.train.deterministic)
        self.model = build_model(cfg).to(self.device)
        # channels_last speeds up cuDNN convolutions; on CPU it measured ~20% slower (bench_train.py)
        self.channels_last = cfg.train.channels_last and self.device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(cfg).to(self.device)
        self.distance_keys = tuple(getattr(self.loss_fn, "distance_inputs", ()) or ())
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        self.scheduler = None if resuming else build_scheduler(cfg, self.optimizer)
        self.amp = amp_dtype(self.device, cfg.train.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        loaders = build_loaders(cfg, self.distance_keys, self.world, self.rank, self.data_dir)
        self.train_dl, self.val_dl = loaders  # every check has passed: now the folder
        if resuming:
            self._resume()
        else:
            self.run_dir = self._new_run_dir(run_dir)
            self.folder = RunDir(self.run_dir)
            self.lock = self._on_main(self._take_lock)
        self.net = self._wrap(self.model)
        self.log = self._on_main(self._logger) or _silent_logger()

    # -- reporting (rank 0 only)

    def _emit(self, hook: str, *args) -> None:
        fn = getattr(self.callbacks, hook, None) if self.main else None
        if fn is not None:
            fn(*args)

    def _say(self, text: str, level: str = "info") -> None:
        """A notice for the callbacks and train.log (kept until train.log is open)."""
        if self.log is None:
            self.notes.append((text, level))
            return
        self._emit("on_message", text, level)
        self.log.info(text)

    def _status(self, **fields: Any) -> None:
        """Merge ``fields`` into status.json (rank 0), with the progress every state carries."""
        if self.main:
            self.folder.write_status(
                epoch=self.state.epoch,
                epochs=self.cfg.train.epochs,
                best_epoch=self.state.best_epoch,
                best_value=self.state.best_value,
                monitor=self.cfg.train.monitor,
                seconds=round(self._seconds(), 3),
                **fields,
            )

    def _seconds(self) -> float:
        """Training time over all sessions (up to now)."""
        started = getattr(self, "_t_fit", None)
        return self.state.seconds + (time.perf_counter() - started if started is not None else 0.0)

    @property
    def batches_per_epoch(self) -> int:
        limit = self.cfg.train.max_train_batches
        return len(self.train_dl) if limit is None else min(len(self.train_dl), limit)

    # -- setup

    def _on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0 (None elsewhere); a UserError there is raised on every rank."""
        if self.world == 1:
            return fn()
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except UserError as exc:
                error = str(exc)
        error = D.broadcast_object(error)
        if error is not None:
            raise UserError(error)
        return result

    def _new_run_dir(self, run_dir: Path | None) -> Path:
        """Create the run folder on rank 0: ``run_dir`` if given, else ``runs/<dataset>/<loss>/<name>``."""

        def make() -> str:
            if run_dir is None:
                path = new_run_dir(self.cfg.data.dataset, self.cfg.loss_label, self.cfg.name,
                                   root=self.cfg.data.root)
                self._created = "named"  # runs/<dataset>/<loss>/<name>: the parents may be new too
                return str(path)
            path = Path(run_dir)
            self._created = not path.exists()
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise write_error(path, exc) from exc
            return str(path)

        return Path(D.broadcast_object(self._on_main(make)))

    def _take_lock(self):
        lock = self.folder.lock(f"run folder {self.run_dir}")
        if lock.took_over is not None:
            from imbaseg.locks import describe

            self._say(f"took over the run folder's lock from {describe(lock.took_over)}, which is no "
                      "longer running", "warning")
        return lock

    def _abandon(self) -> None:
        """After a failed setup: close train.log, release the lock, remove the folder made here."""
        self._close()
        if self._created and self.main:
            import shutil

            shutil.rmtree(self.run_dir, ignore_errors=True)
            parents = (self.run_dir.parent, self.run_dir.parent.parent) if self._created == "named" else ()
            for parent in parents:  # runs/<dataset>/<loss>/ when nothing else is in them
                with contextlib.suppress(OSError):
                    parent.rmdir()

    def _close(self) -> None:
        if self.log is not None:
            for h in list(self.log.handlers):
                h.close()
                self.log.removeHandler(h)
        if self.lock is not None:
            self.lock.release()
            self.lock = None

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
        handler = self.folder.log_handler()  # a full disk: no traceback per line (see RunDir.log_handler)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        return log

    def _last_checkpoint(self) -> Path:
        """``checkpoints/last.pt`` of the folder to resume, or a UserError saying there is none."""
        path = self.folder.checkpoint_file("last")
        if not path.is_file():
            raise UserError(
                f"cannot resume {self.folder.path}: no {path.relative_to(self.folder.path)} in it (not a run "
                "folder, or it never finished an epoch); start a new run instead"
            )
        return path

    def _resume(self) -> None:
        """Restore last.pt, applying the keys that changed (``imbaseg.training.resume``); repair best.pt."""
        folder = self.folder
        path = self._last_checkpoint()
        ckpt = load_checkpoint(path, map_location=self.device)
        old = ckpt.get("config") or {}
        changes = R.changed_keys(old, self.cfg.to_dict())
        R.check_changes(changes, str(folder.path))
        load_model_state(self.model, ckpt["model"], str(path))
        dropped = R.restore_optimizer(self.optimizer, ckpt["optimizer"], old.get("optim", {}).get("name"),
                                      self.cfg.optim.name)
        self.scheduler = R.restore_schedule(self.optimizer, self.cfg, old, ckpt.get("scheduler"),
                                            R.saved_lrs(ckpt["optimizer"]), ckpt["epoch"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = _State(
            ckpt["epoch"],
            ckpt.get("best_value"),
            ckpt.get("best_epoch"),
            ckpt.get("bad_epochs", 0),
            list(ckpt.get("history", [])),
            float(ckpt.get("seconds") or 0.0),
            ckpt.get("position"),
        )
        if ckpt.get("world_size", 1) == self.world:  # across a world-size change the streams differ anyway
            ranks = ckpt.get("rng_ranks")
            if ranks and len(ranks) == self.world:
                set_rng_state(ranks[self.rank])
            elif ckpt.get("rng"):
                set_rng_state(ckpt["rng"])
        if changes:
            self._say(f"resume with changed keys: {R.describe(changes)}")
            if dropped:
                self._say(dropped, "warning")
            lr_keys = ("train.epochs", "optim.lr", "optim.name")
            if any(k in lr_keys or k.startswith("sched.") for k, _, _ in changes):
                self._say("schedule: " + R.schedule_note(self.cfg, self.optimizer, self.state.epoch))
        if self.main:
            repaired = folder.repair_best()
            if repaired:
                self._say(repaired, "warning")

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

    def _sync_running(self, total: torch.Tensor, count: int, epoch: int, step: int,
                      local: bool = False) -> float:
        """The mean loss ``total / count``; ``NonFiniteLoss`` when it is NaN or infinite. ``local``: the
        sums are this rank's own, so under torchrun the ranks first agree (a collective) whether any of
        them saw a non-finite loss, and all stop together instead of one waiting for a rank that left."""
        value = float(total.item()) / max(count, 1)
        where = ""
        if local and self.world > 1:
            bad = D.max_over_ranks([0 if math.isfinite(value) else self.rank + 1], self.device)[0]
            if bad and math.isfinite(value):
                value, where = float("nan"), f" on rank {bad - 1}"
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"training loss became {value}{where} at epoch {epoch + 1}, step {step}: lower the learning "
                f"rate (optim.lr={self.cfg.optim.lr}), enable optim.grad_clip, or check the data. "
                f"Checkpoints written before are intact in {self.folder.checkpoints_dir}"
            )
        return value

    def _step(self, batch: dict[str, Any], acc: _Acc) -> int:
        """One optimisation step on ``batch``, added to ``acc``; returns the batch's image count."""
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
        acc.total += loss.detach()
        for k, v in (getattr(self.loss_fn, "last_terms", None) or {}).items():
            acc.terms[k] = acc.terms.get(k, 0.0) + v.detach().double()
        acc.count += 1
        return x.shape[0]

    def _epoch_batches(self, epoch: int, acc: _Acc):
        """The epoch's batch iterator, seeded by the epoch; after a mid-epoch stop, advanced past the
        batches already trained (drawn, so the augmentation stream is the same, but not trained on)
        with ``acc`` holding their sums."""
        sampler = getattr(self.train_dl, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        gen = getattr(self.train_dl, "generator", None)
        if gen is not None:
            gen.manual_seed((self.cfg.seed + epoch) * 1_000_003 + self.rank)  # epoch-seeded: resume is exact
        pos, self.state.position = self.state.position, None
        if not pos or pos.get("epoch") != epoch:
            return iter(self.train_dl)
        skip = self._restore_position(pos, acc)
        if skip >= self.batches_per_epoch:
            return iter(())
        batches = iter(self.train_dl)
        for _ in range(skip):
            next(batches, None)
        return batches

    def _restore_position(self, pos: dict[str, Any], acc: _Acc) -> int:
        """Put a saved position's sums into ``acc``; the number of batches to skip on this rank."""
        bs, world = self.cfg.train.batch_size, self.world
        same = pos["world"] == world and pos["batch_size"] == bs and len(pos["ranks"]) == world
        if same:
            mine, skip = pos["ranks"][self.rank], pos["batch"]
        else:  # the global mean only needs the global sums: rank 0 carries them
            ranks = pos["ranks"] if self.main else []
            keys = ranks[0]["terms"] if ranks else {}
            mine = {
                "loss_sum": sum(r["loss_sum"] for r in ranks),
                "count": sum(r["count"] for r in ranks),
                "terms": {k: sum(r["terms"].get(k, 0.0) for r in ranks) for k in keys},
            }
            done = pos["batch"] * pos["batch_size"] * pos["world"]  # images of the epoch already trained
            skip = done // (bs * world)
            again = done - skip * bs * world
            self._say(
                f"resuming epoch {pos['epoch'] + 1} after its first {done} images ({skip} batches of {bs} x "
                f"{world}; they were {pos['batch_size']} x {pos['world']})"
                + (f": {again} of them are trained again" if again else ""),
                "warning" if again else "info",
            )
        acc.total += mine["loss_sum"]
        f64 = dict(device=self.device, dtype=torch.float64)
        acc.terms = {k: torch.tensor(v, **f64) for k, v in mine["terms"].items()}
        acc.count, acc.n, acc.before = int(mine["count"]), skip, float(pos.get("seconds") or 0.0)
        return skip

    def _position(self, epoch: int, acc: _Acc, elapsed: float) -> dict[str, Any]:
        """Where a stopped epoch is: its batch and every rank's partial sums (a collective)."""
        mine = {"loss_sum": float(acc.total.item()), "count": acc.count,
                "terms": {k: float(v.item()) for k, v in acc.terms.items()}}
        return {
            "epoch": epoch,
            "batch": acc.n,
            "batches": self.batches_per_epoch,
            "batch_size": self.cfg.train.batch_size,
            "world": self.world,
            "ranks": D.all_gather_object(mine),
            "seconds": acc.before + elapsed,
        }

    def train_epoch(self, epoch: int) -> tuple[dict[str, float] | None, dict[str, Any] | None]:
        """One pass over the training loader (``epoch`` counts from 0).

        Returns ``(stats, None)``: the epoch's mean loss (and per-term means), images/s and the share
        of time spent waiting for data; or ``(None, position)`` when a stop was agreed mid-epoch.
        """
        self.net.train()
        acc = _Acc(torch.zeros((), device=self.device, dtype=torch.float64))
        batches = self._epoch_batches(epoch, acc)
        limit, planned = self.cfg.train.max_train_batches, self.batches_per_epoch
        interval = self.cfg.train.log_interval
        t0, running, stop = time.perf_counter(), None, False
        while limit is None or acc.n < limit:
            t_wait = time.perf_counter()
            batch = next(batches, None)
            acc.waited += time.perf_counter() - t_wait  # time the step waited for data (the loader's share)
            if batch is None:
                break
            acc.seen += self._step(batch, acc)
            acc.n += 1
            sync = acc.n % interval == 0
            if sync:
                running = self._sync_running(acc.total, acc.count, epoch, acc.n, local=True)
            rate = acc.seen * self.world / max(time.perf_counter() - t0, 1e-9)
            self._emit("on_batch", epoch + 1, acc.n, planned, running, rate)
            # one process checks every step; ranks agree at the sync, so all stop at the same batch
            if (sync or self.world == 1) and self._stop_agreed():
                stop = True
                break
        elapsed = max(time.perf_counter() - t0, 1e-9)
        if stop or self._stop_agreed():
            # never save a non-finite position
            self._sync_running(acc.total, acc.count, epoch, acc.n, local=True)
            return None, self._position(epoch, acc, elapsed)
        return self._epoch_stats(epoch, acc, elapsed), None

    def _signal_notice(self) -> None:
        """Say what the signal handler noted, where the stop is checked (``_stop_agreed``). The handler only
        sets flags: printing or logging from a handler could re-enter the terminal output, logging or an
        import that the interrupted code was in the middle of."""
        text, self.signal_note = self.signal_note, None
        if text:
            self._say(text, "warning")

    def _stop_agreed(self) -> bool:
        """True when any rank was asked to stop; under torchrun a collective, after which every rank
        knows the signal (a rank that received none adopts it)."""
        self._signal_notice()
        if self.world == 1:
            return self.stop_requested
        requested, signum = D.max_over_ranks([self.stop_requested, self.stop_signal or 0], self.device)
        if requested and not self.stop_requested:
            self.stop_requested, self.stop_signal = True, signum or None
        return bool(requested)

    def _epoch_stats(self, epoch: int, acc: _Acc, elapsed: float) -> dict[str, float]:
        n = torch.tensor(float(acc.count), device=self.device, dtype=torch.float64)
        stats = torch.stack([acc.total, n])
        D.all_reduce_sum(stats)
        count = int(stats[1].item())
        out = {
            "train_loss": self._sync_running(stats[0], count, epoch, acc.n),
            "images_per_s": acc.seen * self.world / elapsed,
            "data_wait_fraction": acc.waited / elapsed,
            "seconds_before": acc.before,
        }
        keys = sorted(acc.terms)
        if self.world > 1:  # every rank must all-reduce the same terms, even one that trained no batch
            keys = sorted(set().union(*D.all_gather_object(keys)))
        for k in keys:
            t = torch.as_tensor(acc.terms.get(k, 0.0), device=self.device, dtype=torch.float64).reshape(1)
            D.all_reduce_sum(t)
            out[f"train_{k}"] = float(t.item()) / max(count, 1)
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

    @torch.no_grad()
    def preview(self, n: int | None = None) -> list[dict[str, Any]]:
        """The first ``n`` (default ``trackers.GRID_IMAGES``) validation images at the training size with
        this model's masks, as validate thresholds them: dicts of image (H, W, C) uint8, mask, fov and pred
        (H, W) bool. For the trackers' image grid (rank 0; the model's train/eval mode is kept)."""
        from imbaseg.training.trackers import GRID_IMAGES

        ds, was = self.val_dl.dataset, self.model.training
        self.model.eval()
        try:
            out = []
            for i in range(min(GRID_IMAGES if n is None else n, len(ds))):
                x = ds[i]["image"][None].to(self.device)
                with self._autocast():
                    prob = torch.sigmoid(self.model(x).float())[0, 0]
                out.append({**ds.raw(i), "pred": (prob > self.cfg.train.threshold).cpu().numpy()})
            return out
        finally:
            self.model.train(was)

    # -- bookkeeping

    def _improved(self, value: float) -> bool:
        best = self.state.best_value
        if best is None or not math.isfinite(best):
            return math.isfinite(value)
        return value > best if self.cfg.monitor_mode == "max" else value < best

    def checkpoint(self, position: dict | None = None, rng_ranks: list | None = None) -> dict[str, Any]:
        """The checkpoint dict (see ``imbaseg.training.run_dir``); ``position`` after a mid-epoch stop."""
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
            "rng_ranks": rng_ranks,
            "config": self.cfg.to_dict(),
            "interrupted": self.stop_requested,
            "signal": signal.Signals(self.stop_signal).name if self.stop_signal else None,
            "position": position,
            "seconds": self._seconds(),
            "world_size": self.world,
        }

    def _save(self, best: bool = False, position: dict[str, Any] | None = None) -> None:
        """Write last.pt, then best.pt when ``best`` (rank 0; every rank contributes its RNG state)."""
        ranks = D.all_gather_object(rng_state()) if self.world > 1 else None
        if self.main:
            state = self.checkpoint(position, ranks)
            save_checkpoint(state, self.folder.checkpoint_file("last"))
            if best:
                save_checkpoint(state, self.folder.checkpoint_file("best"))

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
        self._save(best=improved)
        if self.main:
            write_history(self.folder, self.state.history)
        self._status(state="running")
        D.barrier()
        patience = self.cfg.train.early_stopping
        return bool(patience) and self.state.bad_epochs >= patience

    def fit(self) -> TrainResult:
        """Run the remaining epochs; stop early, on a stop signal (saving last.pt) or a non-finite loss.

        status.json says ``running`` from the start and after every epoch, then ``finished``
        (``stopped`` completed or early_stopping), ``interrupted`` (``stopped`` interrupted or aborted,
        with ``signal``) or ``failed`` (with ``error``).
        """
        try:
            self._start()
        except BaseException:
            self._abandon()
            raise
        with _signal_guard(self):  # until the lock is released: a forwarded repeat must not kill the process
            try:
                stopped = self._epochs()
                self._finish(stopped)
            except TrainingAborted as exc:
                name = signal.Signals(exc.signum).name
                with contextlib.suppress(Exception):
                    self._say(f"aborted by a second {name}: nothing more was saved; checkpoints/last.pt is "
                              "the last state written. Continue with imbaseg train --resume "
                              f"{_quote(self.run_dir)}", "warning")
                    self._status(state="interrupted", stopped="aborted", signal=name)
                with contextlib.suppress(Exception):
                    self._emit("on_end", "aborted")
                raise
            except BaseException as exc:
                with contextlib.suppress(Exception):  # never hide the error itself
                    self.log.error("failed: %s: %s", exc.__class__.__name__, exc)
                    self._status(state="failed", stopped="failed", error=f"{exc.__class__.__name__}: {exc}")
                with contextlib.suppress(Exception):
                    self._emit("on_end", "failed")
                raise
            finally:
                self._close()
        return TrainResult(
            self.run_dir, self.state.history, self.state.best_value, self.state.best_epoch, stopped,
            self.stop_signal if stopped == "interrupted" else None,
        )

    def _start(self) -> None:
        """Write config.yaml (the new config on a resume) and env.json, say the notes, status running."""
        self._t_fit = time.perf_counter()
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
        notes, self.notes = self.notes, []
        for text, level in notes:
            self._say(text, level)
        self._status(state="running", stopped=None, signal=None, error=None)
        self._emit("on_start", self.run_dir, self.cfg.train.epochs, self.state.epoch, self.batches_per_epoch)

    def _finish(self, stopped: str) -> None:
        if stopped == "interrupted":
            name = signal.Signals(self.stop_signal).name if self.stop_signal else "a stop request"
            self._say(
                f"interrupted by {name}: saved {self.folder.checkpoint_file('last')}; continue with "
                f"imbaseg train --resume {_quote(self.run_dir)}",
                "warning",
            )
        self.log.info(
            "finished (%s) after %d epochs; best %s=%s at epoch %s",
            stopped,
            self.state.epoch,
            self.cfg.train.monitor,
            self.state.best_value,
            self.state.best_epoch,
        )
        state = "interrupted" if stopped == "interrupted" else "finished"
        sig = signal.Signals(self.stop_signal).name if stopped == "interrupted" and self.stop_signal else None
        self._status(state=state, stopped=stopped, signal=sig)
        self._emit("on_end", stopped)

    def _epochs(self) -> str:
        """The epoch loop; returns how it stopped: completed, early_stopping or interrupted."""
        for epoch in range(self.state.epoch, self.cfg.train.epochs):
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_stats, position = self.train_epoch(epoch)
            if position is not None:
                self._save(position=position)
                self._say(f"stopped in epoch {epoch + 1} after batch {position['batch']} of "
                          f"{position['batches']}: last.pt holds the weights there, and --resume continues "
                          "from that batch")
                return "interrupted"
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": train_stats["train_loss"],
                **self.validate(),
                "seconds": round(time.perf_counter() - t0 + train_stats["seconds_before"], 3),
                **{k: v for k, v in train_stats.items() if k.startswith("train_") and k != "train_loss"},
            }
            self.last_train_stats = train_stats
            early = self._end_epoch(epoch, row)
            best = self.state.best_epoch == epoch + 1
            report = {**row, "images_per_s": train_stats["images_per_s"], "best": best}
            if self.main:
                self.log.info(epoch_line(report, self.cfg.train.epochs))
            self._emit("on_epoch_end", report)
            if self._stop_agreed():
                self._save()  # the same end-of-epoch state, marked interrupted
                return "interrupted"
            if early:
                self._say(
                    f"early stopping: no improvement of {self.cfg.train.monitor} for "
                    f"{self.cfg.train.early_stopping} epochs"
                )
                return "early_stopping"
        return "completed"


def _quote(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def _silent_logger() -> logging.Logger:
    """The logger of ranks other than 0: no file, no output."""
    log = logging.getLogger("imbaseg.run.silent")
    log.propagate = False
    log.addHandler(logging.NullHandler())
    return log


@contextlib.contextmanager
def _signal_guard(trainer: Trainer):
    """The first stop signal (``STOP_SIGNALS``) asks the loop to stop after the current batch; another
    one later than ``REPEAT_WINDOW_S`` raises ``TrainingAborted`` at once. Only in the main thread
    (Python delivers signals there)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        now, times = time.monotonic(), trainer.signal_times
        if times and now - times[0] > REPEAT_WINDOW_S:
            raise TrainingAborted(signum)
        times.append(now)
        if len(times) > 1:
            return  # the same stop again: a launcher forwarding it (torchrun, srun), or a double press
        if not trainer.stop_requested:  # (a rank may already have adopted another rank's stop)
            trainer.stop_requested, trainer.stop_signal = True, signum
        name = signal.Signals(signum).name
        trainer.signal_note = f"{name}: stopping after this batch ({name} again aborts at once)..."


    previous = {}
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
