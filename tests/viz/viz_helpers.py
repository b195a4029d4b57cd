"""Builders for the figure tests: small prepared datasets and hand-made evaluated run folders."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from imbaseg.config import from_dict, save_config
from imbaseg.data.io import write_png
from imbaseg.data.prepared import PreparedWriter
from imbaseg.metrics import compute_metrics
from imbaseg.paths import prepared_dir


def write_prepared(
    root: Path,
    name: str,
    samples: dict[str, tuple[np.ndarray, np.ndarray]],
    split: str = "test",
    fov: dict[str, np.ndarray] | None = None,
) -> Path:
    """A prepared dataset ``name`` under ``root`` with ``samples`` {id: (image, mask)}, all in ``split``."""
    rows = []
    with PreparedWriter(prepared_dir(name, root), with_fov=fov is not None) as w:
        for i, (image, mask) in samples.items():
            rows.append(
                w.write_sample(i, image, mask, None if fov is None else fov[i], split=split, source="test")
            )
        return w.commit(rows, {"dataset": name})


def write_run(
    root: Path,
    dataset: str,
    loss: str,
    name: str,
    preds: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    params: dict | None = None,
    split: str = "test",
) -> Path:
    """An evaluated run folder: config.yaml, eval/<split>/per_image.csv (real metrics) and predictions/."""
    run = root / "runs" / dataset / loss / name
    cfg = from_dict(
        {"data": {"dataset": dataset, "root": str(root)}, "loss": {"name": loss, "params": params or {}}}
    )
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    ev = run / "eval" / split
    (ev / "predictions").mkdir(parents=True)
    rows = []
    for i, p in preds.items():
        write_png(ev / "predictions" / f"{i}.png", p.astype(bool))
        m = compute_metrics(p.astype(bool), masks[i].astype(bool))
        rows.append({"id": i, "height": p.shape[0], "width": p.shape[1], **m})
    with open(ev / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return run


def blob(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
