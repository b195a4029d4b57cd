"""The run folder: the one module that knows its layout, and loading a trained run.

::

    runs/<dataset>/<loss slug>/<name>/
        config.yaml  env.json  history.csv  history.png  train.log  status.json  .lock
        checkpoints/{best,last}.pt
        eval/<split>/{per_image.csv, summary.json, summary.md, reliability.png, predictions/, probabilities/}
        eval/temperature.json
        tensorboard/  tracking.json               (train.trackers)
        export/<checkpoint>.{onnx,pt}[.json]      (imbaseg export; .json: the sidecar)

``RunDir(path)`` names every file; everything else asks it. A run's config is ``RunDir.config()``
(``config.yaml``; the copy inside the checkpoint is the fallback when the YAML is gone).

A checkpoint is a dict with ``model`` (state dict), ``optimizer``, ``scheduler``, ``scaler``,
``epoch`` (completed epochs), ``best_value``, ``best_epoch``, ``bad_epochs``, ``history``
(list of row dicts), ``rng`` (and ``rng_ranks``, one per torchrun rank), ``config`` (the resolved
config as a dict), ``interrupted``, ``signal`` (the name of the signal that stopped it), ``position``
(None at an epoch's end; after a stop mid-epoch, where in the epoch the weights are: see
``imbaseg.training.trainer``), ``seconds`` (training time so far) and ``world_size``.

``last.pt`` is written before ``best.pt``; ``best.pt`` holds the epoch ``last.pt`` records as
``best_epoch`` (``RunDir.best_problem`` checks it, ``repair_best`` restores it, ``load_run`` relies on
it). ``evaluate`` and ``compare`` need nothing but the run folder.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imbaseg.config import Config, from_dict, load_config
from imbaseg.errors import UserError
from imbaseg.paths import atomic_write_bytes, write_error

CHECKPOINTS = ("best", "last")


class RunDir:
    """The layout of one run folder (no I/O in the constructor)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- files at the top
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def env_file(self) -> Path:
        return self.path / "env.json"

    @property
    def history_csv(self) -> Path:
        return self.path / "history.csv"

    @property
    def history_png(self) -> Path:
        return self.path / "history.png"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    def read_status(self) -> dict[str, Any]:
        """``status.json`` as a dict ({} when absent or unreadable): what the trainer last reported,
        e.g. ``{"state": "running"|"interrupted"|"finished"|"failed", "epoch": 3, "epochs": 8,
        "stopped": "completed"|"early_stopping"|..., "error": "...", "seconds": 12.5}``."""
        import json

        try:
            data = json.loads(self.status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_status(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``status.json`` (written atomically) and return the new content."""
        import json
        import time

        data = {**self.read_status(), **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_bytes(self.status_file, (json.dumps(data, indent=2, default=str) + "\n").encode())
        return data

    # -- checkpoints
    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_file(self, which: str = "best") -> Path:
        """``checkpoints/<which>.pt`` (not checked; see ``checkpoint``)."""
        if which not in CHECKPOINTS:
            raise UserError(f"unknown checkpoint '{which}': choose best or last")
        return self.checkpoints_dir / f"{which}.pt"

    def has_checkpoint(self, which: str | None = None) -> bool:
        return any(self.checkpoint_file(c).is_file() for c in ([which] if which else CHECKPOINTS))

    def checkpoint(self, which: str = "best") -> Path:
        """``checkpoints/<which>.pt``, or a UserError saying what is missing and what to use."""
        path = self.checkpoint_file(which)
        if not self.path.is_dir():
            raise UserError(f"run folder not found: {self.path}")
        if not path.is_file():
            other = [c for c in CHECKPOINTS if self.checkpoint_file(c).is_file()]
            hint = f" Use --checkpoint {other[0]}." if other else " Train it first with imbaseg train."
            raise UserError(f"{self.path} has no checkpoints/{which}.pt (not a finished run?).{hint}")
        return path

    # -- evaluations
    def eval_dir(self, split: str) -> Path:
        return self.path / "eval" / split

    def per_image_csv(self, split: str) -> Path:
        return self.eval_dir(split) / "per_image.csv"

    def summary_json(self, split: str) -> Path:
        return self.eval_dir(split) / "summary.json"

    def summary_md(self, split: str) -> Path:
        return self.eval_dir(split) / "summary.md"

    def predictions_dir(self, split: str) -> Path:
        return self.eval_dir(split) / "predictions"

    def probabilities_dir(self, split: str) -> Path:
        return self.eval_dir(split) / "probabilities"

    def reliability_png(self, split: str) -> Path:
        return self.eval_dir(split) / "reliability.png"

    def temperature_json(self) -> Path:
        """``eval/temperature.json`` (``evaluate --calibrate``): beside the split folders, since a new
        evaluation of a split replaces ``eval/<split>/`` whole."""
        return self.path / "eval" / "temperature.json"

    # -- tracking and export
    @property
    def tensorboard_dir(self) -> Path:
        """``tensorboard/``: the event files of ``train.trackers: [tensorboard]`` (a resume appends)."""
        return self.path / "tensorboard"

    @property
    def tracking_file(self) -> Path:
        """``tracking.json``: what the trackers logged to (the MLflow run id), so that a resume and
        ``evaluate`` continue the same run (``imbaseg.training.trackers``)."""
        return self.path / "tracking.json"

    def export_file(self, which: str, suffix: str) -> Path:
        """``export/<which><suffix>``: ``imbaseg export``'s default file (``.onnx``, ``.pt``)."""
        self.checkpoint_file(which)  # the same check of the name
        return self.path / "export" / f"{which}{suffix}"

    def evaluated(self, split: str) -> bool:
        """True when ``eval/<split>/per_image.csv`` exists (an evaluation is swapped in whole)."""
        return self.per_image_csv(split).is_file()

    # -- where the project is
    def project_root(self) -> Path | None:
        """The project root this run sits in (``<root>/runs/<dataset>/<loss>/<name>``), or None."""
        parents = self.path.resolve().parents
        if len(parents) >= 4 and parents[2].name == "runs":
            return parents[3]
        return None

    # -- the config
    def check(self) -> RunDir:
        """UserError unless this looks like a run folder (config.yaml or a checkpoint in it)."""
        if not self.path.is_dir():
            raise UserError(f"run folder not found: {self.path}")
        if not self.config_file.is_file() and not self.has_checkpoint():
            raise UserError(
                f"{self.path} is not a run folder (no config.yaml, no checkpoints/): "
                "pass runs/<dataset>/<loss>/<name>"
            )
        return self

    def config(self) -> Config:
        """The run's resolved config: config.yaml, else the copy inside last.pt / best.pt."""
        self.check()
        if self.config_file.is_file():
            return load_config(self.config_file)
        for which in ("last", "best"):
            if self.checkpoint_file(which).is_file():
                return from_dict(load_checkpoint(self.checkpoint_file(which))["config"])
        raise UserError(f"{self.path} has no config.yaml")  # unreachable after check()

    # -- best.pt against last.pt
    def best_problem(self) -> tuple[str, bool] | None:
        """None when ``best.pt`` is the run's recorded best epoch, else ``(why, repairable)``.

        ``last.pt`` records ``best_epoch``; ``best.pt`` must hold that epoch. A kill between the two
        saves of an epoch (last.pt is written first) leaves best.pt older or missing while last.pt is
        itself that best epoch's end state: repairable from last.pt. Without last.pt there is nothing
        to judge by (None), and a run without any improvement yet has no best (None).
        """
        if not self.checkpoint_file("last").is_file():
            return None
        try:
            last = checkpoint_meta(self.checkpoint_file("last"))
        except UserError:
            return None  # an unreadable last.pt cannot judge; best.pt is used as it is
        want = last.get("best_epoch")
        if want is None:
            return None
        best_file = self.checkpoint_file("best")
        try:
            have = checkpoint_meta(best_file).get("epoch") if best_file.is_file() else None
            held = f"holds epoch {have}" if best_file.is_file() else "is missing"
        except UserError:
            have, held = None, "is unreadable"
        if have == want:
            return None
        repairable = last.get("epoch") == want and not last.get("position")
        return f"{best_file} {held} but the run's best epoch is {want} (last.pt)", repairable

    def repair_best(self) -> str | None:
        """Make ``best.pt`` agree with last.pt's ``best_epoch``; say what was done (None: nothing to do).

        Copies last.pt when it is that epoch's end state, else removes the stale best.pt (the next
        improvement writes a new one). Call it with the run folder's lock held.
        """
        problem = self.best_problem()
        if problem is None:
            return None
        why, repairable = problem
        best = self.checkpoint_file("best")
        if repairable:
            atomic_write_bytes(best, self.checkpoint_file("last").read_bytes())
            return f"{why}: rewrote best.pt from last.pt"
        best.unlink(missing_ok=True)
        return f"{why}: removed the stale best.pt (the next improvement writes a new one)"

    def lock(self, what: str | None = None):
        """Take the run folder's lock (``.lock``); ``imbaseg.locks.LockHeld`` names a live holder.

        With the lock held, temp files that killed processes left here (``checkpoints/.last.pt.<pid>.tmp``,
        ``.history.csv.<pid>.tmp``, ...) are removed.
        """
        from imbaseg.locks import acquire
        from imbaseg.paths import remove_stale_temps

        lock = acquire(self.lock_file, what or f"run folder {self.path}")
        for folder in (self.path, self.checkpoints_dir):
            remove_stale_temps(folder)
        return lock

    def log_handler(self) -> logging.Handler:
        """A logging handler appending to ``train.log``. A failed write (full disk) drops the line quietly
        instead of printing a traceback for every line: the run's next checkpoint write then stops it
        with one clear error (``paths.write_error``)."""
        try:
            return _QuietFileHandler(self.train_log)
        except OSError as exc:
            raise write_error(self.train_log, exc) from exc


class _QuietFileHandler(logging.FileHandler):
    error: BaseException | None = None  # the first write error, kept for inspection

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if self.error is None:
            self.error = sys.exc_info()[1]


def checkpoint_path(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """``RUN_DIR/checkpoints/<which>.pt``, or a UserError saying what is missing."""
    return RunDir(run_dir).checkpoint(which)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Serialise in memory, then write atomically: a crash or a full disk never leaves a torn checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getbuffer())


def checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's small entries (epoch, best_epoch, position, ...) without reading its tensors
    (memory-mapped); UserError as ``load_checkpoint`` for an unreadable file."""
    ckpt = load_checkpoint(path, mmap=True)
    return {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scheduler", "scaler", "rng",
                                                       "rng_ranks")}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
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

    @property
    def folder(self) -> RunDir:
        return RunDir(self.run_dir)


def load_run(
    run_dir: str | os.PathLike, which: str = "best", device: str | torch.device = "cpu"
) -> LoadedRun:
    """Rebuild the trained model of a run folder, in eval mode on ``device``.

    The model is built from the checkpoint's own config (the one its weights were trained with).
    ``best`` is checked against last.pt's ``best_epoch`` (see ``RunDir.best_problem``): when a kill
    left best.pt behind, last.pt, which then is that very epoch, is loaded instead; when that cannot
    be, a UserError says so rather than evaluating another epoch.
    """
    folder = RunDir(run_dir)
    path = None
    if which == "best" and folder.path.is_dir():
        problem = folder.best_problem()
        if problem is not None:
            why, repairable = problem
            if not repairable:
                raise UserError(
                    f"{why}: best.pt is out of date (a kill between the two saves?). Use --checkpoint "
                    f"last, or resume the run (imbaseg train --resume {folder.path}) to bring it up to date"
                )
            path = folder.checkpoint_file("last")
    path = path or folder.checkpoint(which)
    ckpt = load_checkpoint(path)
    cfg = from_dict(ckpt["config"])
    model = build_model(cfg)
    load_model_state(model, ckpt["model"], str(path))
    model.to(device).eval()
    return LoadedRun(Path(run_dir), cfg, model, ckpt, path)

