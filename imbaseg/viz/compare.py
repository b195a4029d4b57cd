"""``compare``: a qualitative grid of several evaluated runs' predictions, and their comparison table.

Rows: per dataset (in the order the runs are given) the selected images. Columns: Original, Ground
truth, then one per run of that dataset, titled with its loss label and "Dice=0.921" from the run's
``eval/<split>/per_image.csv``. Predictions are those ``evaluate`` saved (``predictions/<id>.png``); a
run without them is a UserError naming the ``imbaseg evaluate`` command to run. Next to ``<stem>.png``
and ``<stem>.pdf`` come ``<stem>_comparison.csv`` and ``<stem>_comparison.md``, written by
``imbaseg.evaluation.comparison`` (the same format and numbers as ``imbaseg evaluate RUN...``).
This module only selects images and draws.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imbaseg.errors import UserError, lookup, suggestion
from imbaseg.evaluation.comparison import EvaluatedRun, Group
from imbaseg.viz.colors import error_map, legend_handles
from imbaseg.viz.grid import DPI, Margins, font_size, line_inches, panel_grid, row_label, save_figure, show
from imbaseg.viz.labels import compact, dataset_title

SELECT_MODES = ("gap", "best", "worst", "median", "ids")
MAX_PANEL_PX = 600  # panels as wide as the widest image (up to this): masks are not shrunk by much
MIN_PANEL_IN = 2.2  # "Boundary Gaussian + DoU Loss" fits on one line at 9 pt
TITLE_PAD_IN = 0.15  # titles stay this much narrower than their panel, so neighbours never touch


@dataclass
class FigureRun:
    """An evaluated run with saved predictions, and where its prepared images are."""

    run: EvaluatedRun
    prepared: Path

    @property
    def label(self) -> str:
        return self.run.label

    @property
    def predictions(self) -> Path:
        from imbaseg.training.run_dir import RunDir

        return RunDir(self.run.run_dir).predictions_dir(self.run.split)


# ----------------------------------------------------------------------------- loading runs


def load_figure_run(run_dir, split: str = "test", root=None) -> FigureRun:
    """An evaluated run whose predictions are all saved; else a UserError naming the evaluate command."""
    from imbaseg.evaluation.comparison import evaluate_command, load_evaluated
    from imbaseg.evaluation.evaluate import run_prepared
    from imbaseg.training.run_dir import RunDir

    run = load_evaluated(run_dir, split, data_root=root)
    folder = RunDir(run.run_dir).predictions_dir(split)
    missing = [i for i in run.per_image.ids if not (folder / f"{i}.png").is_file()]
    if missing:
        raise UserError(
            f"{run.run_dir} has no saved prediction for {len(missing)} image(s) of the {split} split "
            f"(e.g. {folder / (missing[0] + '.png')}): run {evaluate_command(run.run_dir, split, root)} first"
        )
    return FigureRun(run, run_prepared(RunDir(run.run_dir).config(), run.run_dir, root))


# ----------------------------------------------------------------------------- choosing images


def dice_matrix(group: Group) -> tuple[list[str], np.ndarray]:
    """The group's image ids (sorted as text) and their Dice, shape (n_ids, n_runs)."""
    return list(group.ids), group.array("dice")[:, 0, :].T


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


def choose_rows(groups: list[Group], mode: str, n: int, ids: list[str] | None) -> list[tuple[int, str]]:
    """[(group index, id)] in figure order. mode "ids": the given ids, each in the group(s) that have it."""
    if mode == "ids" and not ids:
        raise UserError("--select ids needs --ids ID [ID ...]")
    if ids and mode != "ids":
        mode = "ids"  # --ids alone means these images
    rows = []
    for gi, g in enumerate(groups):
        common, dice = dice_matrix(g)
        chosen = [i for i in ids if i in common] if mode == "ids" else select_ids(common, dice, mode, n)
        rows += [(gi, i) for i in chosen]
    if mode == "ids":
        seen = {i for _, i in rows}
        every = [i for g in groups for i in g.ids]
        for i in ids:
            if i not in seen:
                hint = suggestion(i, every)
                raise UserError(f"image id '{i}' is in none of the runs' per_image.csv.{hint}")
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


def load_row(runs: list[FigureRun], sample_id: str) -> Row:
    """One figure row: the prepared image, mask and FOV of ``sample_id`` and each run's saved prediction."""
    from imbaseg.data.io import read_image, read_mask

    prepared = runs[0].prepared
    image = read_image(prepared / "images" / f"{sample_id}.png")
    target = read_mask(prepared / "masks" / f"{sample_id}.png") > 127
    fov_path = prepared / "fov" / f"{sample_id}.png"
    fov = read_mask(fov_path) > 127 if fov_path.is_file() else None
    preds = []
    for r in runs:
        path = r.predictions / f"{sample_id}.png"
        p = read_mask(path) > 127
        if p.shape != target.shape:
            raise UserError(
                f"{path} is {p.shape[1]}x{p.shape[0]} but the mask is {target.shape[1]}x{target.shape[0]}: "
                f"rerun imbaseg evaluate on {r.run.run_dir}"
            )
        preds.append(p)
    dice = [r.run.per_image.value(sample_id, "dice") for r in runs]
    return Row(runs[0].run.dataset, sample_id, image, target, fov, preds, dice, [r.label for r in runs])


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


# ----------------------------------------------------------------------------- the command


def default_out(runs: list[FigureRun], root=None) -> Path:
    from imbaseg.paths import figures_dir

    labels = list(dict.fromkeys(compact(r.label) for r in runs))
    return figures_dir(root) / ("_vs_".join(labels) + ".png")


def table_paths(png: Path) -> tuple[Path, Path]:
    """``<stem>_comparison.csv`` and ``<stem>_comparison.md`` next to the figure."""
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
    dpi: int = DPI,
    metrics=None,
) -> dict:
    """Render the comparison grid of evaluated runs and write their comparison tables next to it
    (``metrics``: the comparison's metrics, default all; ``imbaseg.evaluation.comparison``).

    Returns {png, pdf, csv, md, rows: [(dataset, id)], labels, comparison, figsize, dpi}.
    """
    from imbaseg.evaluation.comparison import (
        check_distinct,
        check_metric_names,
        compare_groups,
        group_runs,
        label_runs,
        write_comparison,
    )
    from imbaseg.viz.grid import output_paths

    run_dirs = check_distinct(run_dirs)
    lookup(select, {m: m for m in SELECT_MODES}, "selection mode")
    check_metric_names(metrics)
    runs = [load_figure_run(r, split, root) for r in run_dirs]
    label_runs([r.run for r in runs], labels)
    groups = group_runs([r.run for r in runs])
    by_dir = {r.run.run_dir: r for r in runs}
    chosen = choose_rows(groups, select, n, ids)
    rows = [load_row([by_dir[e.runs[0].run_dir] for e in groups[gi].entries], i) for gi, i in chosen]
    fig, _ = render_comparison(rows, dpi)
    png, _ = output_paths(out or default_out(runs, root))
    png, pdf = save_figure(fig, png, dpi)
    comparison = compare_groups(groups, metrics)
    csv_path, md_path = write_comparison(comparison, *table_paths(png))
    return {
        "png": png,
        "pdf": pdf,
        "csv": csv_path,
        "md": md_path,
        "rows": [(groups[gi].dataset, i) for gi, i in chosen],
        "labels": [r.label for r in runs],
        "comparison": comparison,
        "figsize": tuple(fig.get_size_inches()),
        "dpi": dpi,
    }
