"""The study file: a typed, validated dataset x loss x seed grid, and the cells it defines.

::

    name: paper
    datasets:                       # name -> the config each cell starts from, plus overrides
      cvc: {config: configs/cvc.yaml}
      isic2018: {config: configs/isic.yaml, set: {train.batch_size: 4}}
    losses: [dynamit-batch, boundary-gaussian, "dice(batch=false)"]
    seeds: [42, 43, 44]
    reference: dynamit-batch        # the loss the paired tests compare against (default: the first)
    split: test
    metrics: [dice, iou, hd95, assd, nsd]
    set: {}                         # overrides for every cell (e.g. train.epochs: 100)
    evaluate: {}                    # evaluation options of every cell (checkpoint, threshold, tta, ...)

A cell's config: the dataset's config file <- the study's ``set`` <- the dataset's ``set`` <- its
loss <- its seed, with ``data.dataset`` = the dataset's name. Its run folder is
``runs/<dataset>/<loss slug>/<study name>-seed<seed>-<hash>``, the hash taken over the resolved
config without the keys that cannot change the result (``RESULT_FREE_KEYS``), so the same file
always maps to the same folders and a changed setting makes a new cell.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imbaseg.config import Config, configs_dir, load_config, read_yaml
from imbaseg.data.splits import SPLITS
from imbaseg.errors import UserError, suggestion
from imbaseg.paths import dataset_key, runs_root, safe_name, slug, studies_root

DEFAULT_METRICS = ("dice", "iou", "hd95", "assd", "nsd")
TOP_KEYS = ("name", "datasets", "losses", "seeds", "reference", "split", "metrics", "set", "evaluate")
DATASET_KEYS = ("config", "set")
# Evaluation options a study may set, with the defaults of `imbaseg evaluate`.
EVALUATE_DEFAULTS = {
    "checkpoint": "best",
    "threshold": 0.5,
    "tta": False,
    "hd_convention": "max",
    "nsd_tau": 2.0,
    "size": "train",
}
# Config keys left out of a cell's hash: where and how a run executes, never what it computes.
RESULT_FREE_KEYS = ("name", "data.root", "data.num_workers", "train.device", "train.log_interval")


@dataclass(frozen=True)
class DatasetEntry:
    name: str  # the dataset (aliases resolved), also the cells' data.dataset
    config: Path  # the YAML every cell of this dataset starts from
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A parsed study file (``path`` is where it was read from)."""

    name: str
    datasets: tuple[DatasetEntry, ...]
    losses: tuple[str, ...]
    seeds: tuple[int, ...]
    reference: str
    split: str = "test"
    metrics: tuple[str, ...] = DEFAULT_METRICS
    set: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def out_dir(self, root=None) -> Path:
        """``studies/<name>/``: the report's folder."""
        return studies_root(root) / self.name


@dataclass(frozen=True)
class Cell:
    """One (dataset, loss, seed) of a study: an ordinary training run plus one evaluation."""

    dataset: str
    loss: str  # the spec string as written in the study file
    seed: int
    config: Config
    key: str  # the hash of the result-relevant config (12 hex digits)
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.dataset} / {self.loss} / seed {self.seed}"


# ----------------------------------------------------------------------------- reading


def _unknown(key: str, valid, where: str) -> UserError:
    return UserError(
        f"unknown key '{key}' in {where}.{suggestion(key, valid)} Valid keys: {', '.join(valid)}."
    )


def _list(data: dict, key: str, path: Path, kind, default=None) -> list:
    value = data.get(key, default)
    if value is None:
        raise UserError(f"study file {path} needs '{key}:' (a list), e.g. {key}: [...]")
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UserError(f"'{key}' in {path} must be a non-empty list, got {value!r}")
    for v in value:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise UserError(f"'{key}' in {path} must hold integers, got {v!r}")
        if kind is str and not isinstance(v, str):
            raise UserError(f"'{key}' in {path} must hold strings, got {v!r}")
    dupes = sorted({str(v) for v in value if value.count(v) > 1})
    if dupes:
        raise UserError(f"'{key}' in {path} lists {', '.join(dupes)} more than once")
    return value


def _mapping(value, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a mapping of config keys to values, e.g. {{train.epochs: 50}}")
    return {str(k): v for k, v in value.items()}


def resolve_config_file(text: str, study_path: Path) -> Path:
    """A dataset's ``config:``: as given (absolute or from the current folder), next to the study
    file, or a config shipped with imbaseg by file name; UserError naming what was tried."""
    given = Path(str(text)).expanduser()
    tried = [given, study_path.parent / given]
    for p in tried:
        if p.is_file():
            return p
    shipped = configs_dir() / given.name
    if shipped.is_file():
        return shipped
    raise UserError(
        f"config file '{text}' of {study_path} not found (looked in the current folder, next to the "
        f"study file and among the shipped configs {configs_dir()}); fix the path"
    )


def _datasets(data: dict, path: Path) -> tuple[DatasetEntry, ...]:
    raw = data.get("datasets")
    if not isinstance(raw, dict) or not raw:
        raise UserError(
            f"study file {path} needs 'datasets:', a mapping like {{cvc: {{config: configs/cvc.yaml}}}}"
        )
    out = []
    for name, entry in raw.items():
        where = f"datasets.{name} of {path}"
        if isinstance(entry, str):
            entry = {"config": entry}
        if not isinstance(entry, dict) or "config" not in entry:
            raise UserError(f"{where} needs 'config:' (the YAML its cells start from)")
        for k in entry:
            if k not in DATASET_KEYS:
                raise _unknown(str(k), DATASET_KEYS, where)
        out.append(
            DatasetEntry(
                dataset_key(str(name)),
                resolve_config_file(entry["config"], path),
                _mapping(entry.get("set"), f"'set' of {where}"),
            )
        )
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise UserError(f"'datasets' in {path} names the same dataset twice (aliases count): {names}")
    return tuple(out)


def _metrics(data: dict, path: Path) -> tuple[str, ...]:
    from imbaseg.metrics import METRIC_NAMES

    metrics = _list(data, "metrics", path, str, list(DEFAULT_METRICS))
    for m in metrics:
        if m not in METRIC_NAMES:
            raise UserError(
                f"unknown metric '{m}' in {path}.{suggestion(m, METRIC_NAMES)} "
                f"Choose from: {', '.join(METRIC_NAMES)}."
            )
    return tuple(metrics)


def _evaluate(data: dict, path: Path) -> dict[str, Any]:
    given = _mapping(data.get("evaluate"), f"'evaluate' of {path}")
    for k in given:
        if k not in EVALUATE_DEFAULTS:
            raise _unknown(k, tuple(EVALUATE_DEFAULTS), f"'evaluate' of {path}")
    return {**EVALUATE_DEFAULTS, **given}


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study file; UserError naming the key and the fix for every mistake.

    Every cell's config is resolved once here, so a bad key or loss fails before anything runs.
    """
    path = Path(path)
    data = read_yaml(path)
    for k in data:
        if k not in TOP_KEYS:
            raise _unknown(str(k), TOP_KEYS, f"study file {path}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"study file {path} needs 'name:' (the folder under studies/), e.g. name: paper")
    if safe_name(name) != name or slug(name) != name:
        raise UserError(f"study name '{name}' in {path} must use only letters, digits, '.', '_' and '-'")
    losses = _list(data, "losses", path, str)
    reference = data.get("reference", losses[0])
    if reference not in losses:
        raise UserError(
            f"reference '{reference}' of {path} is not among its losses.{suggestion(str(reference), losses)} "
            f"Losses: {', '.join(losses)}."
        )
    split = data.get("split", "test")
    if split not in SPLITS:
        raise UserError(f"split '{split}' of {path} must be one of {', '.join(SPLITS)}")
    study = Study(
        name=name,
        datasets=_datasets(data, path),
        losses=tuple(losses),
        seeds=tuple(_list(data, "seeds", path, int)),
        reference=reference,
        split=split,
        metrics=_metrics(data, path),
        set=_mapping(data.get("set"), f"'set' of {path}"),
        evaluate=_evaluate(data, path),
        path=path,
    )
    cells(study)  # resolve every cell now: a bad loss or key fails before anything runs
    return study


# ----------------------------------------------------------------------------- cells


def _without(data: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        data = data.get(p) or {}
    if isinstance(data, dict):
        data.pop(last, None)


def cell_key(cfg: Config, evaluate: dict[str, Any] | None = None) -> str:
    """12 hex digits of sha256 over the config that can change the result (``RESULT_FREE_KEYS`` left out)."""
    data = cfg.to_dict()
    for k in RESULT_FREE_KEYS:
        _without(data, k)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cell_config(study: Study, entry: DatasetEntry, loss: str, seed: int, root=None) -> Config:
    """The resolved config of one cell (see the module doc for the order)."""
    overrides = [(k, v) for k, v in study.set.items()] + [(k, v) for k, v in entry.set.items()]
    overrides += [("loss.name", loss), ("loss.terms", None), ("loss.params", {})]
    overrides += [("data.dataset", entry.name), ("seed", seed)]
    if root is not None:
        overrides.append(("data.root", str(root)))
    try:
        cfg = load_config(entry.config, overrides)
    except UserError as exc:
        raise UserError(f"cell {entry.name} / {loss} / seed {seed} of {study.path}: {exc}") from exc
    _check_loss(cfg, study, entry, seed)
    return cfg


def _check_loss(cfg: Config, study: Study, entry: DatasetEntry, seed: int) -> None:
    from imbaseg.losses import get_loss

    try:
        get_loss(cfg.loss.name)
    except UserError as exc:
        raise UserError(f"loss '{cfg.loss.name}' in {study.path}: {exc}") from exc


def cell_run_dir(study: Study, cfg: Config, key: str, root=None) -> Path:
    """``runs/<dataset>/<loss slug>/<study>-seed<seed>-<key>``."""
    folder = f"{study.name}-seed{cfg.seed}-{key}"
    return runs_root(root) / safe_name(cfg.data.dataset) / slug(cfg.loss_label) / folder


def cells(study: Study, root=None) -> list[Cell]:
    """Every cell, in the order dataset, loss, seed (the study file's order)."""
    out = []
    for entry in study.datasets:
        for loss in study.losses:
            for seed in study.seeds:
                cfg = cell_config(study, entry, loss, seed, root)
                key = cell_key(cfg)
                out.append(Cell(entry.name, loss, seed, cfg, key, cell_run_dir(study, cfg, key, root)))
    return out


def select(all_cells: list[Cell], only: list[str] | tuple[str, ...] = ()) -> list[Cell]:
    """Cells matching every ``--only key=value`` (keys dataset, loss, seed; a key given twice: either)."""
    wanted: dict[str, set[str]] = {}
    for item in only:
        if "=" not in item:
            raise UserError(f"bad --only '{item}': write it as dataset=cvc, loss=dice or seed=42")
        k, v = (s.strip() for s in item.split("=", 1))
        if k not in ("dataset", "loss", "seed"):
            raise UserError(f"bad --only key '{k}'.{suggestion(k, ['dataset', 'loss', 'seed'])} "
                            "Use dataset, loss or seed.")
        wanted.setdefault(k, set()).add(dataset_key(v) if k == "dataset" else v)
    out = [c for c in all_cells if all(str(getattr(c, k)) in vs for k, vs in wanted.items())]
    if only and not out:
        raise UserError(f"no cell matches {' '.join('--only ' + o for o in only)}")
    return out


def dump(study: Study) -> str:
    """The study as YAML (what was read, normalised), for the report folder."""
    data = {
        "name": study.name,
        "datasets": {d.name: {"config": str(d.config), "set": d.set} for d in study.datasets},
        "losses": list(study.losses),
        "seeds": list(study.seeds),
        "reference": study.reference,
        "split": study.split,
        "metrics": list(study.metrics),
        "set": study.set,
        "evaluate": study.evaluate,
    }
    return yaml.safe_dump(data, sort_keys=False)


__all__ = ["Cell", "DatasetEntry", "Study", "cell_key", "cells", "dump", "load_study", "select"]
