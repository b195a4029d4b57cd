"""Helpers of the study tests and of tests/benchmarks/bench_report.py: study files, and fake evaluated cells
written without training, through the one writer of evaluations (``imbaseg.evaluation.report.write_report``)
and ``RunDir.write_status`` (state finished), into the run folders ``cells(study, root)`` names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from imbaseg.metrics import METRIC_NAMES


def write_study(
    path: Path, datasets=("synthetic-polyp",), losses=("bce", "dice"), seeds=(1, 2), **extra
) -> Path:
    """A study file starting every dataset from the shipped synthetic.yaml."""
    data = {
        "name": extra.pop("name", "t"),
        "datasets": {d: {"config": "synthetic.yaml"} for d in datasets},
        "losses": list(losses),
        "seeds": list(seeds),
        **extra,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def image_ids(n: int) -> list[str]:
    """n ids whose text order differs from their numeric order ('10' < '9')."""
    return [str(k) for k in range(n)]


def synthetic_values(dataset_k: int, loss_k: int, seed: int, n: int) -> dict[str, np.ndarray]:
    """Plausible per-image values of every metric: loss k a little better than loss k - 1, image and seed
    noise; dice-like metrics in [0, 1], distances >= 0, some values repeated (ties)."""
    rng = np.random.default_rng(1000 * dataset_k + 37 * loss_k + seed)
    base = np.random.default_rng(dataset_k).beta(5, 2, n)
    dice = np.clip(base + 0.02 * loss_k + rng.normal(0, 0.04, n), 0, 1).round(4)
    out = {m: np.clip(dice + rng.normal(0, 0.02, n), 0, 1).round(4) for m in METRIC_NAMES}
    out["dice"] = dice
    out["hd95"] = np.maximum(0, 30 * (1 - dice) + rng.normal(0, 1, n)).round(2)
    out["assd"] = np.maximum(0, 8 * (1 - dice) + rng.normal(0, 0.3, n)).round(2)
    return out


def _summary(cell, study, rows: list[dict]) -> dict:
    """A summary.json like evaluate's, with the study's evaluation options (so the cell counts as done)."""
    ev = study.evaluate
    metrics = {}
    for m in METRIC_NAMES:
        v = np.array([r[m] for r in rows])
        metrics[m] = {
            "mean": float(v.mean()),
            "ci_low": float(v.min()),
            "ci_high": float(v.max()),
            "std": float(v.std()),
            "median": float(np.median(v)),
            "n": len(v),
        }
    return {
        "run_dir": str(cell.run_dir),
        "split": study.split,
        "dataset": cell.dataset,
        "loss": cell.loss,
        "model": "unet",
        "n_images": len(rows),
        "checkpoint": {"which": ev["checkpoint"], "epoch": 1},
        "threshold": ev["threshold"],
        "threshold_mode": "fixed",
        "tta": ev["tta"],
        "hd_convention": ev["hd_convention"],
        "nsd_tau": ev["nsd_tau"],
        "inference": {"plan": "whole", "device": "cpu", "amp": False, "size": ev["size"]},
        "resolution": "fake",
        "fov": False,
        "auc_roc": None,
        "auc_pr": None,
        "auc_pixels": 0,
        "auc_subsampled": False,
        "empty_cases": {"none": len(rows)},
        "metrics": metrics,
    }


def fake_cell(
    cell,
    study,
    values: dict[str, np.ndarray],
    ids: list[str],
    state: str = "finished",
    seconds: float = 12.5,
    shuffle: bool = True,
) -> Path:
    """Write an evaluated run folder for ``cell``: config.yaml, eval/<split>/ (per_image.csv in a shuffled
    row order, summary.json, summary.md) and status.json. values: metric -> (n,) in ``ids`` order
    (metrics not given: 0.5)."""
    from imbaseg.config import save_config
    from imbaseg.evaluation.report import PER_IMAGE_COLUMNS, write_report
    from imbaseg.training.run_dir import RunDir

    rd = RunDir(cell.run_dir)
    rd.path.mkdir(parents=True, exist_ok=True)
    save_config(cell.config, rd.config_file)
    n = len(ids)
    fixed = {"height": 32, "width": 32, "fg_fraction": 0.1, "empty_case": "none", "size_bin": "small"}
    rows = []
    for j, i in enumerate(ids):
        row = {c: fixed.get(c, 1) for c in PER_IMAGE_COLUMNS}  # columns evaluate adds later: a count of 1
        row.update({m: float(values[m][j]) if m in values else 0.5 for m in METRIC_NAMES}, id=i)
        rows.append(row)
    if shuffle:  # the report must sort the images itself
        rows = [rows[j] for j in np.random.default_rng(n).permutation(n)]
    split = study.split
    write_report(
        rows,
        _summary(cell, study, rows),
        rd.per_image_csv(split),
        rd.summary_json(split),
        rd.summary_md(split),
    )
    rd.write_status(state=state, seconds=seconds)
    return rd.path


def fake_study(study, root: Path, n: int = 12, skip=(), values=None) -> None:
    """Fake every cell of ``study`` under ``root`` except those whose (dataset, loss, seed) is in ``skip``.
    values: ``values(dataset_k, loss_k, seed, n) -> {metric: (n,)}`` (default ``synthetic_values``)."""
    from imbaseg.study.spec import cells

    values = values or synthetic_values
    ds = [d.name for d in study.datasets]
    for c in cells(study, root):
        if (c.dataset, c.loss, c.seed) in skip:
            continue
        fake_cell(c, study, values(ds.index(c.dataset), study.losses.index(c.loss), c.seed, n), image_ids(n))
