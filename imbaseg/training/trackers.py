"""Experiment tracking: TensorBoard and MLflow, as consumers of the trainer's callbacks.

``train.trackers: [tensorboard, mlflow]`` (``imbaseg train --tracker NAME``, repeatable) names them;
``TRACKERS`` is the registry the config is checked against. ``attach`` wraps the run's callbacks (the
terminal's ``TrainingDisplay``, or none) in ``Tracking``, which hands every hook on and feeds the trackers:

- TensorBoard (``RUN_DIR/tensorboard/``): every history.csv column but ``epoch`` as a scalar under its
  column name (``train_loss``, ``val_loss``, ``val_dice``, ``lr``, ``seconds``, ``train_<term>``), and
  ``images_per_s``, at step = epoch; the resolved config as text (``config``) and as hparams; every
  ``train.image_grid_every`` epochs ``val/grid``: the first ``GRID_IMAGES`` validation images at the
  training size, in columns image | target | prediction coloured TP/FP/FN as ``imbaseg compare`` does
  (``imbaseg.viz.colors.error_map``).
- MLflow (``MLFLOW_TRACKING_URI``, else ``sqlite:///<project root>/mlflow.db``, the installed release's
  own default file, with artifacts in ``<project root>/mlruns/``): experiment ``imbaseg-<dataset>``, one
  MLflow run per run folder; params = the config flattened (``optim.lr``, ...), metrics per epoch as for
  TensorBoard, and at the end config.yaml, history.png and checkpoints/best.pt as artifacts, status
  FINISHED, KILLED (a stop signal) or FAILED. ``log_evaluation`` adds ``<split>_<metric>`` (the means)
  and the summary.json when ``imbaseg evaluate`` runs on a tracked run.

``RUN_DIR/tracking.json`` records what was logged where (the MLflow run id and store, the last epoch each
tracker logged), so a resumed run continues the same TensorBoard folder and MLflow run, and logs the
epochs a killed process had no time to log. A tracker that fails (a missing store, a full disk, a
bug) is dropped with one warning through ``on_message``; the run goes on. Only rank 0 tracks (the
trainer calls its callbacks there alone).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imbaseg.errors import UserError, suggestion

GRID_IMAGES = 4  # validation images in the TensorBoard grid: enough to see a trend, one small forward
SEPARATOR = 2  # pixels of grey between the grid's cells
MLFLOW_DB = "mlflow.db"  # the default store under the project root (MLflow 3's own default file name)
MLFLOW_ARTIFACTS = "mlruns"  # ... and its artifacts beside it (MLflow's default artifact folder)
PARAM_MAX = 6000  # MLflow's limit on a param value's length
END_STATUS = {"completed": "FINISHED", "early_stopping": "FINISHED", "interrupted": "KILLED",
              "aborted": "KILLED", "failed": "FAILED"}


def _package(name: str) -> str:
    return {"tensorboard": "tensorboard", "mlflow": "mlflow"}[name]


def check_trackers(names) -> list[str]:
    """``names`` when each is in ``TRACKERS`` and none repeats; UserError naming the closest otherwise."""
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"unknown tracker '{name}' in train.trackers.{suggestion(name, list(TRACKERS))} "
                            f"Choose from: {', '.join(TRACKERS)}.")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise UserError(f"train.trackers names '{repeated[0]}' twice; list each tracker once")
    return list(names)


def check_installed(names) -> None:
    """UserError for a tracker whose package is not installed (before the run folder is made)."""
    import importlib.util

    for name in names:
        if importlib.util.find_spec(_package(name)) is None:
            raise UserError(f"train.trackers has '{name}' but the {_package(name)} package is not installed: "
                            f"pip install 'imbaseg[{name}]', or drop the tracker (--set train.trackers=[])")


# ----------------------------------------------------------------------------- tracking.json


def read_tracking(run_dir) -> dict[str, dict]:
    """``tracking.json`` of a run folder ({} when absent or unreadable)."""
    from imbaseg.training.run_dir import RunDir

    try:
        data = json.loads(RunDir(run_dir).tracking_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_tracking(run_dir, data: dict) -> None:
    from imbaseg.paths import atomic_write_text
    from imbaseg.training.run_dir import RunDir

    atomic_write_text(RunDir(run_dir).tracking_file, json.dumps(data, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------- values


def flat_config(cfg) -> dict[str, Any]:
    """The config as ``{"optim.lr": 0.1, ...}``: scalars kept, None/lists/mappings as text."""
    from imbaseg.training.resume import flatten

    flat = flatten(cfg.to_dict())
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}


def epoch_values(report: dict[str, Any]) -> dict[str, float]:
    """The numbers of an epoch report (a history row, maybe with ``images_per_s``), without ``epoch``."""
    return {k: float(v) for k, v in report.items()
            if k not in ("epoch", "best") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def grid_image(samples: list[dict]) -> Any:
    """(H', W', 3) uint8: one row per sample, columns image | target | prediction coloured TP green, FP
    red, FN magenta (outside the field of view grey), cells padded to the largest, grey separators.

    samples: dicts of ``image`` (H, W, C) uint8 (C 1 or 3), ``mask``, ``pred`` and ``fov`` (H, W) bool.
    """
    import numpy as np

    from imbaseg.viz.colors import error_map

    rows = []
    for s in samples:
        img = np.asarray(s["image"])
        rgb = np.repeat(img[..., :1], 3, axis=-1) if img.ndim == 3 and img.shape[-1] == 1 else img[..., :3]
        target = np.repeat((np.asarray(s["mask"], bool) * np.uint8(255))[..., None], 3, axis=-1)
        fov = s.get("fov")
        valid = None if fov is None or np.all(fov) else fov
        rows.append([rgb.astype(np.uint8), target, error_map(s["pred"], s["mask"], valid)])
    if not rows:
        return np.zeros((1, 1, 3), np.uint8)
    h = max(c.shape[0] for r in rows for c in r)
    w = max(c.shape[1] for r in rows for c in r)
    shape = (len(rows) * (h + SEPARATOR) - SEPARATOR, 3 * (w + SEPARATOR) - SEPARATOR, 3)
    out = np.full(shape, 128, np.uint8)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            y, x = i * (h + SEPARATOR), j * (w + SEPARATOR)
            out[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
    return out


# ----------------------------------------------------------------------------- the trackers


class TensorBoardTracker:
    """Event files in ``RUN_DIR/tensorboard/`` (see the module doc)."""

    name = "tensorboard"

    def __init__(self, cfg, folder, done: int, state: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.cfg, self.folder = cfg, folder
        self.epoch = int(state.get("epoch") or 0)  # the last epoch logged (tracking.json)
        # purge_step: TensorBoard drops the earlier sessions' events of steps >= it, so the epochs logged
        # again after a resume (those a killed process logged but did not record) show once
        self.writer = SummaryWriter(str(folder.tensorboard_dir), purge_step=self.epoch + 1 if state else None)
        from imbaseg.config import dump_config

        self.writer.add_text("config", "```yaml\n" + dump_config(cfg) + "```", done)
        if not state:
            self._hparams()
        self.writer.flush()

    def _hparams(self) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = {"val_dice": None, "val_loss": None}
        for event in hparams(flat_config(self.cfg), metrics):
            self.writer.file_writer.add_summary(event)

    def log_epoch(self, report: dict, preview: Callable[[], list[dict]] | None = None) -> None:
        step = int(report["epoch"])
        for key, value in epoch_values(report).items():
            self.writer.add_scalar(key, value, step)
        every = self.cfg.train.image_grid_every
        if preview is not None and every and step % every == 0:
            self.writer.add_image("val/grid", grid_image(preview()), step, dataformats="HWC")
        self.writer.flush()
        self.epoch = step

    def state(self) -> dict:
        return {"log_dir": self.folder.tensorboard_dir.name, "epoch": self.epoch}

    def end(self, stopped: str) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def _quiet(*names: str):
    """Raise the named loggers to WARNING for the block."""
    import logging

    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def default_mlflow_root(folder, cfg) -> Path:
    """The project root whose ``mlflow.db`` a run logs to: the root the run folder sits in
    (``<root>/runs/...``), else ``data.root`` / $IMBASEG_HOME / the current directory."""
    from imbaseg.paths import home

    return (folder.project_root() or home(cfg.data.root)).resolve()


def mlflow_name(text: str) -> str:
    """A metric or param key MLflow accepts (letters, digits, ``_ - . / space``; others become ``_``)."""
    return re.sub(r"[^\w\-./ ]", "_", text)


class MlflowTracker:
    """One MLflow run per run folder (see the module doc)."""

    name = "mlflow"

    def __init__(self, cfg, folder, done: int, state: dict):
        from mlflow import MlflowClient

        self.cfg, self.folder = cfg, folder
        self.uri = state.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or \
            f"sqlite:///{default_mlflow_root(folder, cfg) / MLFLOW_DB}"
        with _quiet("mlflow", "alembic"):  # a new store's migrations log at INFO; the library prints nothing
            self.client = MlflowClient(self.uri)
            self.client.search_experiments(max_results=1)
        self.run_id = state.get("run_id")
        self.epoch = 0
        if self.run_id:
            self.client.update_run(self.run_id, status="RUNNING")
            # the last epoch in the store itself: a killed process may have logged one it did not record
            steps = [m.step for m in self.client.get_metric_history(self.run_id, "train_loss")]
            self.epoch = max(steps, default=0)
            self._resume_params()
        else:
            self.experiment_id = self._experiment(f"imbaseg-{cfg.data.dataset}")
            tags = {"imbaseg.run_dir": str(folder.path.resolve()), "imbaseg.loss": cfg.loss_label,
                    "mlflow.source.name": "imbaseg train"}
            self.run_id = self.client.create_run(self.experiment_id, run_name=folder.path.name,
                                                 tags=tags).info.run_id
            self._params(flat_config(cfg))

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI"):
            location = (Path(self.uri[len("sqlite:///"):]).parent / MLFLOW_ARTIFACTS).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # another run created it meanwhile (study cells start together)
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(mlflow_name(k), str(v)[:PARAM_MAX]) for k, v in params.items()]
        for k in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[k : k + 100])

    def _resume_params(self) -> None:
        """Params are immutable in MLflow: log the new keys; a changed value becomes a tag
        ``resumed.<key>`` = ``old -> new`` (the run's config.yaml artifact is the new config)."""
        have = self.client.get_run(self.run_id).data.params
        new, changed = {}, {}
        for k, v in flat_config(self.cfg).items():
            key, text = mlflow_name(k), str(v)[:PARAM_MAX]
            if key not in have:
                new[k] = v
            elif have[key] != text:
                changed[f"resumed.{key}"] = f"{have[key]} -> {text}"[:PARAM_MAX]
        if new:
            self._params(new)
        for k, v in changed.items():
            self.client.set_tag(self.run_id, k, v)

    def log_epoch(self, report: dict, preview=None) -> None:
        from mlflow.entities import Metric

        step, now = int(report["epoch"]), int(time.time() * 1000)
        metrics = [Metric(mlflow_name(k), v, now, step) for k, v in epoch_values(report).items()
                   if math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=metrics)
        self.epoch = step

    def state(self) -> dict:
        return {"tracking_uri": self.uri, "run_id": self.run_id, "epoch": self.epoch}

    def end(self, stopped: str) -> None:
        f = self.folder
        files = [(f.config_file, None), (f.history_png, None),
                 (f.checkpoint_file("best"), f.checkpoints_dir.name)]
        for path, where in files if stopped != "aborted" else []:  # a second signal means: out, now
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path), where)
        self.client.set_terminated(self.run_id, END_STATUS.get(stopped, "FINISHED"))

    def close(self) -> None:
        pass


# the registry: a name of train.trackers -> its class (constructed when the run starts)
TRACKERS: dict[str, type] = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}


# ----------------------------------------------------------------------------- the callbacks


class Tracking:
    """The trainer's callbacks (``TrainerCallbacks``'s hooks): every hook goes on to ``inner`` first,
    then to the trackers of ``cfg.train.trackers``. A tracker that raises is dropped after one warning
    through ``say(text, level)``; the run goes on.

    preview: ``preview()`` -> the grid's samples (``grid_image``), called on the grid's epochs.
    history: ``history()`` -> the run's history rows, to log the epochs a killed process did not.
    """

    def __init__(self, cfg, inner=None, preview=None, history=None, say=None):
        self.cfg, self.inner = cfg, inner
        self.preview, self.history, self.say = preview, history or list, say
        self.trackers: list = []
        self.folder = None
        self.warned: set[str] = set()  # one warning per tracker (or per tracking.json)

    def _on(self, hook: str, *args) -> None:
        fn = getattr(self.inner, hook, None)
        if fn is not None:
            fn(*args)

    def _guard(self, tracker, what: str, fn: Callable[[], Any]) -> bool:
        try:
            fn()
            return True
        except Exception as exc:
            self.trackers = [t for t in self.trackers if t is not tracker]
            with contextlib.suppress(Exception):
                if tracker is not None and not isinstance(tracker, str):
                    tracker.close()
            name = tracker if isinstance(tracker, str) else tracker.name
            detail = (str(exc).strip().splitlines() or [""])[0][:200]
            if self.say is not None and name not in self.warned:
                self.warned.add(name)
                self.say(f"{name} tracking failed while {what} ({exc.__class__.__name__}: {detail}); the run "
                         f"goes on without it", "warning")
            return False

    def on_start(self, run_dir, epochs: int, done: int, batches: int) -> None:
        from imbaseg.training.run_dir import RunDir

        self._on("on_start", run_dir, epochs, done, batches)
        self.folder = RunDir(run_dir)
        saved = read_tracking(run_dir)
        for name in self.cfg.train.trackers:
            made: list = []
            start = lambda n=name, into=made: into.append(TRACKERS[n](  # noqa: E731
                self.cfg, self.folder, done, saved.get(n) or {}))
            if self._guard(name, "starting", start):
                self.trackers += made
        rows = [r for r in self.history() if int(r["epoch"]) <= done]
        for t in list(self.trackers):
            missing = [r for r in rows if int(r["epoch"]) > t.epoch]  # a killed process did not log them
            self._guard(t, "logging the epochs before the resume",
                        lambda t=t, m=missing: [t.log_epoch(r) for r in m])
        self._save(saved)

    def _save(self, saved: dict | None = None) -> None:
        data = dict(saved if saved is not None else read_tracking(self.folder.path))
        data.update({t.name: t.state() for t in self.trackers})
        if self.trackers:
            self._guard("tracking.json", "writing tracking.json",
                        lambda: _write_tracking(self.folder.path, data))

    def on_batch(self, *args) -> None:
        self._on("on_batch", *args)

    def on_message(self, text: str, level: str) -> None:
        self._on("on_message", text, level)

    def on_epoch_end(self, report: dict) -> None:
        self._on("on_epoch_end", report)
        samples: list | None = None

        def preview() -> list:
            nonlocal samples
            if samples is None:
                samples = self.preview()
            return samples

        for t in list(self.trackers):
            self._guard(t, f"logging epoch {report['epoch']}",
                        lambda t=t: t.log_epoch(report, preview if self.preview else None))
        self._save()

    def on_end(self, stopped: str) -> None:
        self._on("on_end", stopped)
        for t in list(self.trackers):
            self._guard(t, "finishing", lambda t=t: t.end(stopped))
        self.trackers = []


def attach(cfg, callbacks=None, preview=None, history=None, say=None):
    """``callbacks`` wrapped in ``Tracking`` when ``cfg.train.trackers`` names any, else as it is.
    UserError (before anything is written) for a tracker whose package is missing."""
    if not cfg.train.trackers:
        return callbacks
    check_installed(cfg.train.trackers)
    return Tracking(cfg, callbacks, preview, history, say)


# ----------------------------------------------------------------------------- evaluate


def log_evaluation(run_dir, summary: dict) -> dict | None:
    """Log an evaluation's means (``<split>_<metric>``, at step = the checkpoint's epoch) and its
    summary.json to the run's MLflow run, when it has one (tracking.json). Returns None for an
    untracked run, else ``{"mlflow": run_id, "metrics": n}`` or ``{"warning": text}`` (never raises)."""
    state = read_tracking(run_dir).get("mlflow") or {}
    if not state.get("run_id"):
        return None
    try:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        from imbaseg.training.run_dir import RunDir

        with _quiet("mlflow", "alembic"):
            client = MlflowClient(state["tracking_uri"])
        split, now = summary["split"], int(time.time() * 1000)
        step = int(summary["checkpoint"].get("epoch") or 0)
        metrics = []
        for name, stats in summary.get("metrics", {}).items():
            mean = stats.get("mean") if isinstance(stats, dict) else None
            if isinstance(mean, (int, float)) and math.isfinite(mean):
                metrics.append(Metric(mlflow_name(f"{split}_{name}"), float(mean), now, step))
        client.log_batch(state["run_id"], metrics=metrics)
        summary_json = RunDir(run_dir).summary_json(split)
        if summary_json.is_file():
            client.log_artifact(state["run_id"], str(summary_json), f"eval/{split}")
        return {"mlflow": state["run_id"], "metrics": len(metrics)}
    except Exception as exc:  # tracking never fails an evaluation
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        return {"warning": f"mlflow: the {summary.get('split')} metrics were not logged "
                           f"({exc.__class__.__name__}: {detail})"}
