"""The files of one evaluation, ``RUN_DIR/eval/<split>/``: the one writer and the one reader of each.

- ``per_image.csv``: one row per image, ``PER_IMAGE_COLUMNS`` (``per_image_csv`` / ``read_per_image``);
- ``summary.json``: the run, the options, the AUCs and ``aggregate(rows)`` (``read_summary``);
- ``summary.md``: the same as Markdown (``summary_markdown``).

``write_report`` writes all three atomically (``evaluate`` fills a staging folder that replaces
``eval/<split>/`` whole; the file names are ``imbaseg.training.run_dir.RunDir``'s).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imbaseg.errors import UserError
from imbaseg.metrics import METRIC_NAMES, summarize

PER_IMAGE_COLUMNS = ("id", "height", "width", "fg_fraction", "empty_case", *METRIC_NAMES)


def _fmt(v) -> str:
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def per_image_csv(rows: list[dict]) -> str:
    """The text of per_image.csv: PER_IMAGE_COLUMNS, floats written exactly (shortest round-trip repr),
    so that every reader gets the values summary.json was computed from, bit for bit."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PER_IMAGE_COLUMNS)
    for r in rows:
        w.writerow([_fmt(r[c]) for c in PER_IMAGE_COLUMNS])
    return buf.getvalue()


@dataclass
class PerImage:
    """per_image.csv read back: ``ids`` in file order and, per metric, the values (n,) in that order."""

    path: Path
    ids: list[str]
    values: dict[str, np.ndarray]
    _row: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._row = {i: k for k, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, metric: str, ids=None) -> np.ndarray:
        """The values of ``metric`` for ``ids`` (default: all, file order); KeyError for an unknown id."""
        v = self.values[metric]
        return v.copy() if ids is None else v[[self._row[i] for i in ids]]

    def value(self, item_id: str, metric: str) -> float:
        return float(self.values[metric][self._row[item_id]])


def _check_header(path: Path, header: list[str] | None, metrics) -> None:
    missing = [c for c in ("id", *metrics) if c not in (header or [])]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}: rerun imbaseg evaluate on the run")


def _parse(path: Path, row: dict, metric: str) -> float:
    try:
        v = float(row[metric])
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v):
        raise UserError(
            f"{path}: '{metric}' of image '{row['id']}' is {row[metric]!r}, not a finite number: "
            "rerun imbaseg evaluate on the run"
        )
    return v


def read_per_image(path: str | os.PathLike, metrics=METRIC_NAMES) -> PerImage:
    """Read per_image.csv (ids kept as text). UserError naming the file for a missing file or column, a
    value that is not a finite number, a repeated id, or no rows."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            _check_header(path, reader.fieldnames, metrics)
            rows = list(reader)
    except FileNotFoundError:
        raise UserError(f"{path} not found: evaluate the run first (imbaseg evaluate RUN_DIR)") from None
    if not rows:
        raise UserError(f"{path} has no images: rerun imbaseg evaluate on the run")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{path} lists image '{dup}' twice: rerun imbaseg evaluate on the run")
    values = {m: np.array([_parse(path, r, m) for r in rows], dtype=np.float64) for m in metrics}
    return PerImage(path, ids, values)


def aggregate(rows: list[dict]) -> dict[str, dict]:
    """summarize() of each metric over the rows (mean, std, median, bootstrap 95% CI, n)."""
    return {m: summarize([r[m] for r in rows]) for m in METRIC_NAMES}


def _num(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def summary_markdown(s: dict) -> str:
    """summary.json as Markdown: the settings as a list, then one table row per metric."""
    lines = [
        f"# Evaluation of {s['run_dir']} on {s['split']}",
        "",
        f"- dataset: {s['dataset']}, loss: {s['loss']}, model: {s['model']}, images: {s['n_images']}",
        f"- checkpoint: {s['checkpoint']['which']} (epoch {s['checkpoint']['epoch']})",
        f"- threshold: {s['threshold']} ({s['threshold_mode']}), TTA: {s['tta']}, "
        f"HD convention: {s['hd_convention']}, NSD tau: {s['nsd_tau']} px",
        f"- inference: {s['inference']['plan']} on {s['inference']['device']} (AMP {s['inference']['amp']})",
        f"- {s['resolution']}; field of view: {'yes' if s['fov'] else 'none'}",
        f"- auc_roc: {_num(s['auc_roc'])}, auc_pr: {_num(s['auc_pr'])} (pooled over {s['auc_pixels']} valid "
        f"pixels{', sampled' if s['auc_subsampled'] else ''})",
        "- empty-mask cases: " + ", ".join(f"{k} {v}" for k, v in s["empty_cases"].items()),
        "",
        "| metric | mean | 95% CI | std | median | n |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m, a in s["metrics"].items():
        lines.append(
            f"| {m} | {a['mean']:.4f} | [{a['ci_low']:.4f}, {a['ci_high']:.4f}] | {a['std']:.4f} "
            f"| {a['median']:.4f} | {a['n']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    rows: list[dict], summary: dict, per_image: Path, summary_json: Path, summary_md: Path
) -> None:
    """per_image.csv, summary.json and summary.md at the given paths (``RunDir``'s names), each atomically."""
    from imbaseg.paths import atomic_write_text

    atomic_write_text(per_image, per_image_csv(rows))
    atomic_write_text(summary_json, json.dumps(summary, indent=2) + "\n")
    atomic_write_text(summary_md, summary_markdown(summary))


def read_summary(path: str | os.PathLike) -> dict:
    """summary.json as a dict; UserError naming the file when it is missing or not JSON."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found: evaluate the run first (imbaseg evaluate RUN_DIR)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not readable JSON ({exc}): rerun imbaseg evaluate on the run") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} is not an evaluation summary: rerun imbaseg evaluate on the run")
    return data
