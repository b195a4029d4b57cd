"""The files of one evaluation, ``RUN_DIR/eval/<split>/``: the one writer and the one reader of each.

- ``per_image.csv``: one row per image, ``PER_IMAGE_COLUMNS`` (``per_image_csv`` / ``read_per_image``); an
  undefined value (``lesion_recall`` of an image without target but with a prediction) is an empty cell;
- ``summary.json``: the run, the options, the AUCs, ``aggregate(rows)`` and the sections ``lesion``
  (``lesion_section``), ``by_size`` (``size_section``) and ``calibration``; read by ``read_summary``;
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
from imbaseg.metrics import COMPARABLE_NAMES, LESION_COUNT_NAMES, MAY_BE_UNDEFINED, METRIC_NAMES, summarize
from imbaseg.metrics.lesion import area_thresholds, lesion_scores, recall_by_area
from imbaseg.metrics.overlap import OVERLAP_NAMES
from imbaseg.metrics.surface import SURFACE_NAMES

PER_IMAGE_COLUMNS = (
    "id",
    "height",
    "width",
    "fg_fraction",
    "empty_case",
    "size_bin",
    *METRIC_NAMES,
    *LESION_COUNT_NAMES,
)
# Columns every per_image.csv has had; the later ones (lesion, calibration) are read when present, so
# evaluations written before them can still be compared on these.
REQUIRED_METRICS = (*OVERLAP_NAMES, *SURFACE_NAMES, "cldice")


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else repr(float(v))
    return str(v)


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
    """per_image.csv read back: ``ids`` in file order and, per metric, the values (n,) in that order
    (NaN where a value is undefined); ``size_bins`` the size_bin column (None when the file has none)."""

    path: Path
    ids: list[str]
    values: dict[str, np.ndarray]
    size_bins: list[str] | None = None
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

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.values)

    def size_bin(self, item_id: str) -> str | None:
        return None if self.size_bins is None else self.size_bins[self._row[item_id]]


def _check_header(path: Path, header: list[str] | None, metrics) -> None:
    missing = [c for c in ("id", *metrics) if c not in (header or [])]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}: rerun imbaseg evaluate on the run")


def _parse(path: Path, row: dict, metric: str) -> float:
    if metric in MAY_BE_UNDEFINED and (row[metric] or "").strip().lower() in ("", "nan"):
        return float("nan")
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


def read_per_image(path: str | os.PathLike, metrics=None) -> PerImage:
    """Read per_image.csv (ids kept as text). metrics: the columns to read (all required); None reads
    ``REQUIRED_METRICS`` and every other ``COMPARABLE_NAMES`` column present. UserError naming the file
    for a missing file or column, a value that is not a finite number (an empty cell is NaN where
    ``MAY_BE_UNDEFINED``), a repeated id, or no rows."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if metrics is None:
                metrics = (
                    *REQUIRED_METRICS,
                    *(m for m in COMPARABLE_NAMES if m in header and m not in REQUIRED_METRICS),
                )
            _check_header(path, header, metrics)
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
    bins = [r["size_bin"] for r in rows] if "size_bin" in header else None
    return PerImage(path, ids, values, bins)


def summarize_defined(values) -> dict:
    """summarize() of the finite values, plus ``n_undefined`` (the NaNs left out); with no finite value
    the statistics are None and n is 0."""
    v = np.asarray(values, dtype=np.float64)
    defined = v[np.isfinite(v)]
    out = (
        summarize(defined)
        if defined.size
        else {k: None for k in ("mean", "std", "median", "ci_low", "ci_high")} | {"n": 0}
    )
    return {**out, "n_undefined": int(v.size - defined.size)}


def aggregate(rows: list[dict], metrics=METRIC_NAMES) -> dict[str, dict]:
    """summarize() of each metric over the rows (mean, std, median, bootstrap 95% CI, n); a metric that
    may be undefined (``MAY_BE_UNDEFINED``) over its defined values, with ``n_undefined``."""
    return {
        m: summarize_defined([r[m] for r in rows])
        if m in MAY_BE_UNDEFINED
        else summarize([r[m] for r in rows])
        for m in metrics
    }


# ----------------------------------------------------------------------------- results by object size

SIZE_VARIABLE = "fg_fraction: the target's foreground share of the whole image (the manifest's definition)"


@dataclass
class SizeBins:
    """Bins of the target's foreground fraction: ``edges`` [0, e1, ..., 1], bin k = (edges[k], edges[k+1]],
    named ``labels[k]``; an image with an empty target goes to the bin "empty". ``rule``: "tertiles" (of
    the split's non-empty targets) or "given" (``--size-bins``)."""

    edges: list[float]
    labels: list[str]
    rule: str

    def assign(self, fg: float) -> str:
        if fg <= 0:
            return "empty"
        k = int(np.searchsorted(self.edges, fg, side="left")) - 1  # (low, high]
        return self.labels[min(max(k, 0), len(self.labels) - 1)]

    def describe(self) -> list[dict]:
        return [
            {"bin": lab, "low": lo, "high": hi}
            for lab, lo, hi in zip(self.labels, self.edges[:-1], self.edges[1:], strict=True)
        ]


def _bin_labels(k: int) -> list[str]:
    return {2: ["small", "large"], 3: ["small", "medium", "large"]}.get(k, [f"size{i + 1}" for i in range(k)])


def parse_size_bins(text) -> list[float] | None:
    """``--size-bins "0.01,0.05"`` -> [0.01, 0.05] (strictly increasing, each in (0, 1)); None/"" -> None."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        edges = [float(x) for x in items]
    except (TypeError, ValueError):
        edges = []
    ok = edges and all(0 < e < 1 for e in edges) and bool(np.all(np.diff(edges) > 0))
    if not ok:
        raise UserError(
            f"bad --size-bins {text!r}: give increasing foreground fractions between 0 and 1, "
            "comma-separated, e.g. --size-bins 0.01,0.05"
        )
    return edges


def size_bins(fg_fractions, given: list[float] | None = None) -> SizeBins:
    """The bins: ``given`` inner edges, else the tertiles (numpy's linear interpolation) of the non-empty
    targets' fractions (no non-empty target: one bin (0, 1])."""
    if given is not None:
        inner, rule = list(given), "given"
    else:
        fg = np.asarray([f for f in fg_fractions if f > 0], dtype=np.float64)
        inner = [float(q) for q in np.quantile(fg, [1 / 3, 2 / 3])] if fg.size else []
        rule = "tertiles"
    edges = [0.0, *inner, 1.0]
    return SizeBins(edges, _bin_labels(len(edges) - 1), rule)


def size_section(rows: list[dict], bins: SizeBins, metrics=METRIC_NAMES) -> dict:
    """summary.json's ``by_size``: the bins with their edges, and per bin n and ``aggregate`` of its rows
    (an empty bin: n 0, no metrics). Rows carry their ``size_bin``."""
    out = []
    for b in [*(["empty"] if any(r["size_bin"] == "empty" for r in rows) else []), *bins.labels]:
        mine = [r for r in rows if r["size_bin"] == b]
        edges = next((d for d in bins.describe() if d["bin"] == b), {"bin": b, "low": 0.0, "high": 0.0})
        out.append({**edges, "n": len(mine), "metrics": aggregate(mine, metrics) if mine else {}})
    return {"variable": SIZE_VARIABLE, "rule": bins.rule, "edges": bins.edges, "bins": out}


# ----------------------------------------------------------------------------- lesion-wise detection


def lesion_section(rows: list[dict], areas, detected, overlap: float, min_component: int) -> dict:
    """summary.json's ``lesion``: the rule, the split's summed counts and the rates of the sums (same
    empty rules as per image, recall None when undefined), and the recall by component area over
    ``areas`` / ``detected`` (every target component of the split)."""
    sums = {c: int(sum(r[c] for r in rows)) for c in LESION_COUNT_NAMES}
    rates = lesion_scores(
        sums["lesion_targets"], sums["lesion_detected"], sums["lesion_predicted"], sums["lesion_fp"]
    )
    thresholds = area_thresholds(areas)
    return {
        "connectivity": 8,
        "overlap": overlap,
        "rule": "any overlapping pixel"
        if overlap == 0
        else f"one predicted component covers >= {overlap:g} of the target component's pixels",
        "min_component": min_component,
        **{c.removeprefix("lesion_"): v for c, v in sums.items()},
        **{k.removeprefix("lesion_"): (None if np.isnan(v) else v) for k, v in rates.items()},
        "recall_undefined_images": int(sum(1 for r in rows if np.isnan(r["lesion_recall"]))),
        "by_area": {
            "rule": "tertiles of the split's target component areas (pixels inside the FOV, if any)",
            "thresholds": None if thresholds is None else list(thresholds),
            "classes": recall_by_area(areas, detected, thresholds),
        },
    }


def _num(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _row_md(name: str, a: dict) -> str:
    if a.get("mean") is None:
        return f"| {name} | n/a | n/a | n/a | n/a | 0 |"
    return (
        f"| {name} | {a['mean']:.4f} | [{a['ci_low']:.4f}, {a['ci_high']:.4f}] | {a['std']:.4f} "
        f"| {a['median']:.4f} | {a['n']} |"
    )


def _lesion_md(le: dict) -> list[str]:
    small = f"; components under {le['min_component']} px ignored" if le["min_component"] else ""
    k = le["recall_undefined_images"]
    undefined = f" {k} image(s) without a target but with a prediction have no per-image recall." if k else ""
    lines = [
        "## Lesion-wise detection",
        "",
        f"8-connected components (inside the FOV, if any); a target is detected by {le['rule']}{small}. "
        f"Summed over the split.{undefined}",
        "",
        "| targets | detected | missed | predicted | false positives | recall | precision | F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {le['targets']} | {le['detected']} | {le['missed']} | {le['predicted']} | {le['fp']} "
        f"| {_num(le['recall'])} | {_num(le['precision'])} | {_num(le['f1'])} |",
        "",
        f"Lesion recall by target component area; the classes split at the {le['by_area']['rule']}:",
        "",
        "| class | area (pixels) | targets | detected | recall |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in le["by_area"]["classes"]:
        high = "" if c["max_area"] is None else f" and <= {c['max_area']:g}"
        area = f"> {c['min_area']:g}{high}"
        lines.append(f"| {c['class']} | {area} | {c['targets']} | {c['detected']} | {_num(c['recall'])} |")
    return lines + [""]


def _size_md(bs: dict) -> list[str]:
    bins = bs["bins"]
    head = [f"{b['bin']} (n={b['n']})" for b in bins]
    lines = [
        "## Results by object size",
        "",
        f"Bins of {bs['variable']}; edges {', '.join(f'{e:.6g}' for e in bs['edges'])} ({bs['rule']}); a "
        "bin holds low < fg_fraction <= high; images with an empty target form the bin 'empty'. "
        "Mean [95% CI].",
        "",
        "| metric | " + " | ".join(head) + " |",
        "| --- " * (len(bins) + 1) + "|",
        "| fg_fraction | "
        + " | ".join("empty" if b["bin"] == "empty" else f"({b['low']:.4g}, {b['high']:.4g}]" for b in bins)
        + " |",
    ]
    metrics = next((list(b["metrics"]) for b in bins if b["metrics"]), [])
    for m in metrics:
        cells = []
        for b in bins:
            a = b["metrics"].get(m) or {}
            ok = a.get("mean") is not None
            cells.append(f"{a['mean']:.4f} [{a['ci_low']:.4f}, {a['ci_high']:.4f}]" if ok else "n/a")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines + [""]


def _calibration_md(c: dict) -> list[str]:
    lines = [
        "## Calibration",
        "",
        f"Pooled over the split's {c['pixels']} valid pixels, {c['bins']} equal-width probability bins: "
        f"ECE {c['ece']:.4f}, Brier {c['brier']:.4f} (per-image means in the table above). Reliability "
        f"diagram: {c['figure']}.",
        "",
    ]
    t = c.get("temperature")
    if t:
        after, per = t["pooled_after"], t["per_image_after"]
        lines += [
            f"Temperature scaling: T = {t['temperature']:.4f}, fitted on {t['fitted_on']} (BCE "
            f"{t['bce_before']:.4f} -> {t['bce_after']:.4f}; {t['logits']}; stored in {t['file']}). Masks "
            "and mask metrics are those of the unscaled probabilities.",
            "",
            "| probabilities | ECE pooled | Brier pooled | ECE per-image mean | Brier per-image mean |",
            "| --- | --- | --- | --- | --- |",
            f"| as predicted | {c['ece']:.4f} | {c['brier']:.4f} | {t['per_image_before']['ece']:.4f} "
            f"| {t['per_image_before']['brier']:.4f} |",
            f"| scaled by T | {after['ece']:.4f} | {after['brier']:.4f} | {per['ece']['mean']:.4f} "
            f"| {per['brier']['mean']:.4f} |",
            "",
        ]
    return lines


def summary_markdown(s: dict) -> str:
    """summary.json as Markdown: the settings as a list, one table row per metric, then the sections
    (lesion-wise detection, results by object size, calibration) that the summary holds."""
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
    lines += [_row_md(m, a) for m, a in s["metrics"].items()]
    lines.append("")
    if s.get("lesion"):
        lines += _lesion_md(s["lesion"])
    if s.get("by_size"):
        lines += _size_md(s["by_size"])
    if s.get("calibration"):
        lines += _calibration_md(s["calibration"])
    return "\n".join(lines).rstrip("\n") + "\n"


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
