"""``compare``: a qualitative grid of several runs' predictions, and their metrics with paired tests.

Rows: per dataset (in the order the runs are given) the selected images. Columns: Original, Ground
truth, then one per run of that dataset, titled with its loss label and "Dice=0.921" from the run's
``eval/<split>/per_image.csv``. Predictions are those ``evaluate`` saved (``predictions/<id>.png``);
a run without them is evaluated first. Next to ``<stem>.png`` and ``<stem>.pdf`` come
``<stem>_comparison.csv`` and ``<stem>_comparison.md`` (mean [95% bootstrap CI] of Dice, IoU and HD95
per run, paired Wilcoxon p-values between the runs of each dataset).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imbaseg.errors import UserError, lookup, suggestion
from imbaseg.viz.colors import error_map, legend_handles
from imbaseg.viz.grid import DPI, Margins, font_size, line_inches, panel_grid, row_label, save_figure, show
from imbaseg.viz.labels import compact, dataset_title, loss_label

SELECT_MODES = ("gap", "best", "worst", "median", "ids")
TABLE_METRICS = ("dice", "iou", "hd95")
METRIC_TITLES = {"dice": "Dice", "iou": "IoU", "hd95": "HD95"}
MAX_PANEL_PX = 600  # panels as wide as the widest image (up to this): masks are not shrunk by much
MIN_PANEL_IN = 2.2  # "Boundary Gaussian + DoU Loss" fits on one line at 9 pt
TITLE_PAD_IN = 0.15  # titles stay this much narrower than their panel, so neighbours never touch


@dataclass
class RunData:
    """One evaluated run: where it is, its dataset, label, per-image metrics (a DataFrame indexed by id)."""

    run_dir: Path
    dataset: str
    loss: dict
    label: str
    eval_dir: Path
    prepared: Path
    per_image: object  # pandas.DataFrame


# ----------------------------------------------------------------------------- loading runs


def _read_config(run_dir: Path):
    from imbaseg.config import load_config

    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.yaml): pass runs/<dataset>/<loss>/<name>")
    return load_config(path)


def _has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints" / f"{c}.pt").is_file() for c in ("best", "last"))


def _eval_complete(eval_dir: Path) -> bool:
    """per_image.csv exists and every id in it has a saved prediction."""
    path = eval_dir / "per_image.csv"
    if not path.is_file():
        return False
    with open(path, newline="", encoding="utf-8") as f:
        ids = [r.get("id", "") for r in csv.DictReader(f)]
    return bool(ids) and all((eval_dir / "predictions" / f"{i}.png").is_file() for i in ids)


def read_per_image(eval_dir: Path):
    """per_image.csv as a DataFrame indexed by id (ids as strings); UserError naming missing columns."""
    import pandas as pd

    path = eval_dir / "per_image.csv"
    df = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    missing = [c for c in ("id", *TABLE_METRICS) if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}: rerun imbaseg evaluate on the run")
    return df.set_index("id", drop=False)


def load_run_data(
    run_dir, split: str = "test", checkpoint: str = "best", root=None, device: str = "auto", console=None
) -> RunData:
    """A run's config, evaluation and prepared data; runs ``evaluate_run`` when predictions are missing."""
    from imbaseg.evaluation.evaluate import locate_prepared

    run_dir = Path(run_dir)
    cfg = _read_config(run_dir)
    eval_dir = run_dir / "eval" / split
    if not _eval_complete(eval_dir):
        if not _has_checkpoint(run_dir):
            raise UserError(
                f"{run_dir} has no eval/{split}/per_image.csv with predictions and no checkpoint to "
                "compute them: train it first (imbaseg train) or pass an evaluated run folder"
            )
        from imbaseg.evaluation.evaluate import evaluate_run

        if console is not None:
            console.print(f"[dim]{run_dir}: no saved predictions for '{split}'; evaluating it first[/]")
        evaluate_run(
            run_dir, split=split, checkpoint=checkpoint, device=device, data_root=root, console=console
        )
    prepared = locate_prepared(cfg, run_dir, root)
    loss = {"name": cfg.loss.name, "params": dict(cfg.loss.params), "terms": cfg.loss.terms}
    return RunData(run_dir, cfg.data.dataset, loss, "", eval_dir, prepared, read_per_image(eval_dir))


def group_by_dataset(runs: list[RunData]) -> dict[str, list[RunData]]:
    """{dataset: runs}, datasets in order of first appearance, runs in the order given."""
    groups: dict[str, list[RunData]] = {}
    for r in runs:
        groups.setdefault(r.dataset, []).append(r)
    return groups


def assign_labels(runs: list[RunData], labels: list[str] | None = None) -> None:
    """Set ``run.label``: from ``labels`` (one per run, or one per column when every dataset has that many
    runs), else the loss label; parameters, then the folder name, are added only to tell runs apart."""
    groups = group_by_dataset(runs)
    if labels:
        if len(labels) == len(runs):
            for r, lab in zip(runs, labels, strict=True):
                r.label = lab
            return
        if all(len(g) == len(labels) for g in groups.values()):
            for g in groups.values():
                for r, lab in zip(g, labels, strict=True):
                    r.label = lab
            return
        raise UserError(
            f"got {len(labels)} --labels for {len(runs)} runs: give one per run, or one per column "
            "when every dataset has the same number of runs"
        )
    for g in groups.values():
        for r in g:
            r.label = loss_label(r.loss["terms"] or r.loss["name"])
        for fmt in (lambda r: loss_label(r.loss), lambda r: f"{loss_label(r.loss)} ({r.run_dir.name})"):
            names = [r.label for r in g]
            for r in g:
                if names.count(r.label) > 1:
                    r.label = fmt(r)


# ----------------------------------------------------------------------------- choosing images


def dice_matrix(runs: list[RunData]) -> tuple[list[str], np.ndarray]:
    """Ids common to all ``runs`` (in the first run's order) and their Dice, shape (n_ids, n_runs)."""
    ids = [i for i in runs[0].per_image.index if all(i in r.per_image.index for r in runs[1:])]
    d = np.array([[float(r.per_image.at[i, "dice"]) for r in runs] for i in ids], dtype=np.float64)
    return ids, d.reshape(len(ids), len(runs))


def select_ids(ids: list[str], dice: np.ndarray, mode: str = "gap", n: int = 1) -> list[str]:
    """``n`` ids by ``mode`` (ties to the smaller id).

    gap: largest max-min Dice over the runs (where the losses differ most); best / worst: highest /
    lowest mean Dice; median: mean Dice closest to the median of the means.
    """
    lookup(mode, {m: m for m in SELECT_MODES if m != "ids"}, "selection mode")
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if not ids:
        return []
    mean = dice.mean(axis=1)
    score = {
        "gap": -(dice.max(axis=1) - dice.min(axis=1)),
        "best": -mean,
        "worst": mean,
        "median": np.abs(mean - np.median(mean)),
    }[mode]
    order = sorted(range(len(ids)), key=lambda k: (score[k], ids[k]))
    return [ids[k] for k in order[:n]]


def choose_rows(
    groups: dict[str, list[RunData]], mode: str, n: int, ids: list[str] | None
) -> list[tuple[str, str]]:
    """[(dataset, id)] in figure order. mode "ids": the given ids, each in the dataset(s) that have it."""
    if mode == "ids" and not ids:
        raise UserError("--select ids needs --ids ID [ID ...]")
    if ids and mode != "ids":
        mode = "ids"  # --ids alone means these images
    rows, seen = [], set()
    for dataset, runs in groups.items():
        common, dice = dice_matrix(runs)
        if not common:
            raise UserError(
                f"the runs on '{dataset}' share no image ids in their per_image.csv: "
                "evaluate them on the same split"
            )
        if mode == "ids":
            chosen = [i for i in ids if i in common]
            seen.update(chosen)
        else:
            chosen = select_ids(common, dice, mode, n)
        rows += [(dataset, i) for i in chosen]
    if mode == "ids":
        every = [i for runs in groups.values() for i in dice_matrix(runs)[0]]
        for i in ids:
            if i not in seen:
                raise UserError(
                    f"image id '{i}' is in none of the runs' per_image.csv.{suggestion(i, every)}"
                )
    return rows


# ----------------------------------------------------------------------------- drawing


@dataclass
class Row:
    dataset: str
    id: str
    image: np.ndarray
    target: np.ndarray
    fov: np.ndarray | None
    preds: list[np.ndarray]
    dice: list[float]
    labels: list[str]


def load_row(runs: list[RunData], sample_id: str) -> Row:
    from imbaseg.data.io import read_image, read_mask

    prepared = runs[0].prepared
    image = read_image(prepared / "images" / f"{sample_id}.png")
    target = read_mask(prepared / "masks" / f"{sample_id}.png") > 127
    fov_path = prepared / "fov" / f"{sample_id}.png"
    fov = read_mask(fov_path) > 127 if fov_path.is_file() else None
    preds = []
    for r in runs:
        p = read_mask(r.eval_dir / "predictions" / f"{sample_id}.png") > 127
        if p.shape != target.shape:
            raise UserError(
                f"{r.eval_dir / 'predictions' / (sample_id + '.png')} is {p.shape[1]}x{p.shape[0]} but "
                f"the mask is {target.shape[1]}x{target.shape[0]}: rerun imbaseg evaluate on {r.run_dir}"
            )
        preds.append(p)
    dice = [float(r.per_image.at[sample_id, "dice"]) for r in runs]
    return Row(runs[0].dataset, sample_id, image, target, fov, preds, dice, [r.label for r in runs])


def text_width_pt(text: str, fontsize: float) -> float:
    """Width in points of one line of ``text`` in matplotlib's default font."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    w, _, _ = TextToPath().get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)
    return float(w)


def wrap_to_width(label: str, width_in: float, fontsize: float) -> str:
    """``label`` broken at spaces to fit ``width_in`` inches: one line if it fits, else the most even
    two-line split that fits, else greedy lines (a single over-long word stays whole)."""
    limit, words = width_in * 72, label.split()
    if text_width_pt(label, fontsize) <= limit:
        return label
    splits = [(" ".join(words[:k]), " ".join(words[k:])) for k in range(1, len(words))]
    widths = [max(text_width_pt(a, fontsize), text_width_pt(b, fontsize)) for a, b in splits]
    if widths and min(widths) <= limit:
        return "\n".join(splits[widths.index(min(widths))])
    lines: list[str] = []
    for word in words:
        if lines and text_width_pt(f"{lines[-1]} {word}", fontsize) <= limit:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return "\n".join(lines)


def render_comparison(rows: list[Row], dpi: int = DPI, fontsize: float | None = None):
    """The figure (not saved). Returns (fig, axes[row][col]); columns past a row's runs stay blank."""
    if not rows:
        raise UserError("no image to show: check --select/--ids")
    ncols = 2 + max(len(r.preds) for r in rows)
    widest = max(r.target.shape[1] for r in rows)
    panel_w = max(MIN_PANEL_IN, min(widest, MAX_PANEL_PX) / dpi)
    fontsize = fontsize or font_size(panel_w)
    titles = [
        [
            wrap_to_width(lab, panel_w - TITLE_PAD_IN, fontsize) + f"\nDice={d:.3f}"
            for lab, d in zip(r.labels, r.dice, strict=True)
        ]
        for r in rows
    ]
    lines = max(t.count("\n") + 1 for row in titles for t in row)
    m = Margins(left=0.15 + line_inches(fontsize, 2), title=0.1 + line_inches(fontsize, lines), row_gap=0.12)
    aspects = [r.target.shape[0] / r.target.shape[1] for r in rows]
    fig, axes = panel_grid(
        aspects,
        ncols,
        panel_w,
        titles=[m.title] * len(rows),
        margins=m,
        extra_bottom=0.15 + line_inches(fontsize),
        dpi=dpi,
    )
    for r, row_titles, ax_row in zip(rows, titles, axes, strict=True):
        img_kw = {"cmap": "gray", "vmin": 0, "vmax": 255} if r.image.ndim == 2 else {}
        show(ax_row[0], r.image, **img_kw)
        show(ax_row[1], r.target.astype(np.uint8), cmap="gray", vmin=0, vmax=1)
        ax_row[0].set_title("Original", fontsize=fontsize)
        ax_row[1].set_title("Ground truth", fontsize=fontsize)
        for ax, pred, title in zip(ax_row[2:], r.preds, row_titles, strict=False):
            show(ax, error_map(pred, r.target, r.fov))
            ax.set_title(title, fontsize=fontsize)
        row_label(fig, ax_row[0], f"{dataset_title(r.dataset)}\n{r.id}", fontsize=fontsize)
    with_fov = any(r.fov is not None and not r.fov.all() for r in rows)
    fig.legend(
        handles=legend_handles(with_fov),
        loc="lower center",
        ncol=5 if with_fov else 4,
        frameon=False,
        fontsize=fontsize,
        bbox_to_anchor=(0.5, 0.02 / fig.get_size_inches()[1]),
        handlelength=1.2,
    )
    return fig, axes


# ----------------------------------------------------------------------------- tables


def summary_rows(groups: dict[str, list[RunData]], n_boot: int = 10_000) -> list[dict]:
    """Per run and metric: mean and 95% bootstrap CI over the run's images."""
    from imbaseg.metrics import summarize

    out = []
    for dataset, runs in groups.items():
        for r in runs:
            for m in TABLE_METRICS:
                s = summarize(r.per_image[m].astype(float).to_numpy(), n_boot=n_boot)
                out.append(
                    {
                        "dataset": dataset,
                        "kind": "summary",
                        "label": r.label,
                        "run": shown_path(r.run_dir),
                        "other_label": "",
                        "other_run": "",
                        "metric": m,
                        "n": s["n"],
                        "mean": s["mean"],
                        "ci_low": s["ci_low"],
                        "ci_high": s["ci_high"],
                        "p_value": None,
                    }
                )
    return out


def wilcoxon_rows(groups: dict[str, list[RunData]]) -> list[dict]:
    """Per pair of runs of a dataset and metric: two-sided paired Wilcoxon p on their common images."""
    from imbaseg.metrics import paired_wilcoxon

    out = []
    for dataset, runs in groups.items():
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                a, b = runs[i], runs[j]
                common = [k for k in a.per_image.index if k in b.per_image.index]
                for m in TABLE_METRICS:
                    x = a.per_image.loc[common, m].astype(float).to_numpy()
                    y = b.per_image.loc[common, m].astype(float).to_numpy()
                    p = paired_wilcoxon(x, y) if common else None
                    out.append(
                        {
                            "dataset": dataset,
                            "kind": "wilcoxon",
                            "label": a.label,
                            "run": shown_path(a.run_dir),
                            "other_label": b.label,
                            "other_run": shown_path(b.run_dir),
                            "metric": m,
                            "n": len(common),
                            "mean": None,
                            "ci_low": None,
                            "ci_high": None,
                            "p_value": p,
                        }
                    )
    return out


CSV_COLUMNS = (
    "dataset",
    "kind",
    "label",
    "run",
    "other_label",
    "other_run",
    "metric",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "p_value",
)


def comparison_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow(
            [
                "" if r[c] is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                for c in CSV_COLUMNS
            ]
        )
    return buf.getvalue()


def shown_path(path: Path) -> str:
    """``path`` relative to the current directory when under it (tables stay free of machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _fmt(m: str, v: float) -> str:
    return f"{v:.2f}" if m == "hd95" else f"{v:.3f}"


def comparison_markdown(groups: dict[str, list[RunData]], rows: list[dict], split: str) -> str:
    lines = [
        f"# Comparison on the {split} split",
        "",
        "Mean [95% bootstrap CI] over the split's images (10,000 resamples); p: two-sided paired Wilcoxon "
        "signed-rank test on the images both runs share. HD95 in pixels at the prepared images' size.",
        "",
    ]
    for dataset, runs in groups.items():
        n = max(len(r.per_image) for r in runs)
        lines += [
            f"## {dataset_title(dataset)} ({n} images)",
            "",
            "| Loss | " + " | ".join(METRIC_TITLES[m] for m in TABLE_METRICS) + " | run |",
            "| --- " * (len(TABLE_METRICS) + 2) + "|",
        ]
        for r in runs:
            cells = []
            for m in TABLE_METRICS:
                s = next(
                    x
                    for x in rows
                    if x["kind"] == "summary" and x["run"] == shown_path(r.run_dir) and x["metric"] == m
                )
                cells.append(f"{_fmt(m, s['mean'])} [{_fmt(m, s['ci_low'])}, {_fmt(m, s['ci_high'])}]")
            lines.append(f"| {r.label} | " + " | ".join(cells) + f" | `{shown_path(r.run_dir)}` |")
        tests = [x for x in rows if x["kind"] == "wilcoxon" and x["dataset"] == dataset]
        if tests:
            lines += [
                "",
                "| A | B | " + " | ".join(f"p ({METRIC_TITLES[m]})" for m in TABLE_METRICS) + " |",
                "| --- " * (len(TABLE_METRICS) + 2) + "|",
            ]
            pairs = list(dict.fromkeys((t["run"], t["other_run"]) for t in tests))
            for a, b in pairs:
                ts = {t["metric"]: t for t in tests if (t["run"], t["other_run"]) == (a, b)}
                first = next(iter(ts.values()))
                ps = ["n/a" if ts[m]["p_value"] is None else f"{ts[m]['p_value']:.3g}" for m in TABLE_METRICS]
                lines.append(f"| {first['label']} | {first['other_label']} | " + " | ".join(ps) + " |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command


def default_out(runs: list[RunData], root=None) -> Path:
    from imbaseg.paths import figures_dir

    labels = list(dict.fromkeys(compact(r.label) for r in runs))
    return figures_dir(root) / ("_vs_".join(labels) + ".png")


def table_paths(png: Path) -> tuple[Path, Path]:
    return png.with_name(f"{png.stem}_comparison.csv"), png.with_name(f"{png.stem}_comparison.md")


def compare(
    run_dirs,
    split: str = "test",
    n: int = 1,
    select: str = "gap",
    ids: list[str] | None = None,
    labels: list[str] | None = None,
    out: str | os.PathLike | None = None,
    root=None,
    checkpoint: str = "best",
    device: str = "auto",
    dpi: int = DPI,
    console=None,
) -> dict:
    """Render the comparison grid and write its tables. Returns {png, pdf, csv, md, rows: [(dataset, id)]}."""
    from imbaseg.paths import atomic_write_text
    from imbaseg.viz.grid import output_paths

    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise UserError("no run folder given: pass one or more RUN_DIRs")
    if len({p.resolve() for p in run_dirs}) != len(run_dirs):
        raise UserError("the same run folder is given twice; pass each run once")
    lookup(select, {m: m for m in SELECT_MODES}, "selection mode")
    runs = [load_run_data(r, split, checkpoint, root, device, console) for r in run_dirs]
    assign_labels(runs, labels)
    groups = group_by_dataset(runs)
    chosen = choose_rows(groups, select, n, ids)
    rows = [load_row(groups[dataset], i) for dataset, i in chosen]
    fig, _ = render_comparison(rows, dpi)
    png, _ = output_paths(out or default_out(runs, root))
    png, pdf = save_figure(fig, png, dpi)
    table = summary_rows(groups) + wilcoxon_rows(groups)
    csv_path, md_path = table_paths(png)
    atomic_write_text(csv_path, comparison_csv(table))
    atomic_write_text(md_path, comparison_markdown(groups, table, split))
    return {
        "png": png,
        "pdf": pdf,
        "csv": csv_path,
        "md": md_path,
        "rows": chosen,
        "labels": [r.label for r in runs],
        "table": table,
        "figsize": tuple(fig.get_size_inches()),
        "dpi": dpi,
    }
