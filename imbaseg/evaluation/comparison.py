"""Comparing evaluated runs: the one place that reads several runs' ``per_image.csv``, labels them,
summarises and tests them, and writes the comparison tables.

Used by ``imbaseg evaluate RUN...`` (several runs), ``imbaseg compare`` and the study report.

- ``load_evaluated(run_dir, split)`` -> ``EvaluatedRun`` (config, per-image values, summary.json);
- ``label_runs`` gives readable, unique labels ("Boundary Gaussian Loss", then parameters, then folder);
- ``group_runs`` -> ``Group`` per (dataset, split): entries (runs, or a loss with its seeds), the image
  ids sorted as text, and ``Group.array(metric)`` = m[L, S, n];
- ``compare_groups`` -> ``Comparison``: ``imbaseg.metrics.stats.analyse`` per group and metric, with one
  fresh ``bootstrap_draws`` per group (the spec's draws: the same for every run and metric of a dataset);
  the same again per object-size bin (the runs' ``size_bin`` column, ``Comparison.size``);
- ``write_comparison`` -> one long CSV (``COLUMNS``, one row per dataset, split, size bin ("all" for the
  whole split), metric and run) and one Markdown file. The reference of a group is its first entry.

A metric that can be undefined on an image (``lesion_recall`` without a target component) is compared
on the images where every run of the group has a value (``n_images`` says how many), with draws of its
own for that number of images.
"""

from __future__ import annotations

import csv
import io
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imbaseg.errors import UserError, suggestion
from imbaseg.evaluation.report import PerImage, read_per_image, read_summary
from imbaseg.metrics import COMPARABLE_NAMES, METRIC_NAMES
from imbaseg.metrics.stats import N_BOOT, MetricStats, analyse, bootstrap_draws, higher_is_better

ALL_IMAGES = "all"  # the size_bin of the rows over the whole split
COLUMNS = (
    "dataset",
    "split",
    "size_bin",  # "all", or the object-size bin the row is restricted to
    "metric",
    "direction",  # higher / lower (is better)
    "label",
    "run",
    "reference",  # the label of the group's reference
    "n_images",
    "n_seeds",
    "mean",
    "ci_low",
    "ci_high",
    "image_sd",
    "seed_sd",
    "median",
    "median_diff",  # the test columns are empty on the reference's own rows
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "p_holm",
    "effect_r",
)

# ----------------------------------------------------------------------------- reading runs


@dataclass
class EvaluatedRun:
    """One run's evaluation of one split: its config's dataset (aliases resolved) and loss, its
    per-image values, and its summary.json ({} when absent)."""

    run_dir: Path
    split: str
    dataset: str
    loss: dict
    per_image: PerImage
    summary: dict = field(default_factory=dict)
    label: str = ""


def evaluate_command(run_dir, split: str, data_root=None) -> str:
    """The exact ``imbaseg evaluate`` command that writes ``run_dir``'s evaluation of ``split``."""
    cmd = ["imbaseg", "evaluate", str(run_dir), "--split", split]
    if data_root is not None:
        cmd += ["--data-root", str(data_root)]
    return " ".join(shlex.quote(c) for c in cmd)


def load_evaluated(run_dir, split: str = "test", data_root=None) -> EvaluatedRun:
    """A run folder's evaluation of ``split``. UserError for a folder that is not a run, and, for a run
    not evaluated on ``split``, one line with the ``imbaseg evaluate`` command to run."""
    from imbaseg.paths import dataset_key
    from imbaseg.training.run_dir import RunDir

    rd = RunDir(run_dir).check()
    if not rd.evaluated(split):
        raise UserError(
            f"{rd.path} has no evaluation of the {split} split ({rd.per_image_csv(split)} is missing): "
            f"run {evaluate_command(rd.path, split, data_root)} first"
        )
    cfg = rd.config()
    summary = read_summary(rd.summary_json(split)) if rd.summary_json(split).is_file() else {}
    loss = {"name": cfg.loss.name, "params": dict(cfg.loss.params), "terms": cfg.loss.terms}
    per_image = read_per_image(rd.per_image_csv(split))
    return EvaluatedRun(rd.path, split, dataset_key(cfg.data.dataset), loss, per_image, summary)


def shown_path(path) -> str:
    """``path`` relative to the current directory when under it (tables stay free of machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- labels


def _unique_within(runs: list[EvaluatedRun]) -> None:
    from imbaseg.viz.labels import loss_label

    for r in runs:
        r.label = loss_label(r.loss["terms"] or r.loss["name"])
    steps = (
        lambda r: loss_label(r.loss),  # with its parameters
        lambda r: f"{loss_label(r.loss)} ({r.run_dir.name})",  # with its folder name
        lambda r: f"{loss_label(r.loss)} ({shown_path(r.run_dir)})",  # with its whole path
    )
    for fmt in steps:
        names = [r.label for r in runs]
        for r in runs:
            if names.count(r.label) > 1:
                r.label = fmt(r)


def _group_key(r: EvaluatedRun) -> tuple[str, str]:
    return (r.dataset, r.split)


def label_runs(runs: list[EvaluatedRun], labels: list[str] | None = None) -> list[str]:
    """Set and return ``run.label``: ``labels`` (one per run, or one per column when every (dataset,
    split) group has that many runs), else the readable loss label, made unique within each group by
    adding the loss parameters, then the folder name, then the path."""
    groups: dict[tuple, list[EvaluatedRun]] = {}
    for r in runs:
        groups.setdefault(_group_key(r), []).append(r)
    if labels and len(labels) == len(runs):
        for r, lab in zip(runs, labels, strict=True):
            r.label = lab
    elif labels and all(len(g) == len(labels) for g in groups.values()):
        for g in groups.values():
            for r, lab in zip(g, labels, strict=True):
                r.label = lab
    elif labels:
        raise UserError(
            f"got {len(labels)} --labels for {len(runs)} runs: give one per run, or one per column "
            "when every dataset has the same number of runs"
        )
    else:
        for g in groups.values():
            _unique_within(g)
    return [r.label for r in runs]


# ----------------------------------------------------------------------------- groups


@dataclass
class Entry:
    """One row of a comparison: a run (S = 1), or, for a study, one loss with its runs of seeds 1..S."""

    label: str
    runs: list[EvaluatedRun]


@dataclass
class Group:
    """The entries compared on one (dataset, split); ``ids``: their common images, sorted as text."""

    dataset: str
    split: str
    entries: list[Entry]
    ids: list[str]
    reference: int = 0

    @property
    def n_seeds(self) -> int:
        return len(self.entries[0].runs)

    def array(self, metric: str, ids=None) -> np.ndarray:
        """m[L, S, n] of ``metric``: entries x seeds x images (``ids``, default the group's, in that order);
        NaN where a run's value is undefined."""
        ids = self.ids if ids is None else ids
        return np.stack([[r.per_image.column(metric, ids) for r in e.runs] for e in self.entries])

    def size_bins(self) -> list[tuple[str, list[str]]] | None:
        """[(bin, ids sorted as text)] from the runs' ``size_bin`` column, bins in size order; None when a
        run has no such column. UserError when two runs put an image in different bins."""
        runs = [r for e in self.entries for r in e.runs]
        if any(r.per_image.size_bins is None for r in runs):
            return None
        first = runs[0]
        for r in runs[1:]:
            odd = next((i for i in self.ids if r.per_image.size_bin(i) != first.per_image.size_bin(i)), None)
            if odd is not None:
                raise UserError(
                    f"{shown_path(first.run_dir)} and {shown_path(r.run_dir)} put image '{odd}' in different "
                    "size bins (evaluated with different --size-bins?): evaluate both with the same bins"
                )
        bins: dict[str, list[str]] = {}
        for i in self.ids:
            bins.setdefault(first.per_image.size_bin(i), []).append(i)
        return sorted(bins.items(), key=lambda kv: _bin_order(kv[0]))


_BIN_ORDER = ("empty", "small", "medium", "large")


def _bin_order(name: str) -> tuple[int, int, str]:
    if name in _BIN_ORDER:
        return (0, _BIN_ORDER.index(name), name)
    digits = "".join(ch for ch in name if ch.isdigit())
    return (1, int(digits) if digits else 0, name)


def _check_same_images(dataset: str, split: str, runs: list[EvaluatedRun]) -> list[str]:
    """The ids (sorted as text) that every run has; UserError naming two runs whose images differ."""
    first = runs[0]
    ids = set(first.per_image.ids)
    for r in runs[1:]:
        other = set(r.per_image.ids)
        if other != ids:
            odd = sorted(ids ^ other)[0]
            raise UserError(
                f"{shown_path(first.run_dir)} and {shown_path(r.run_dir)} were evaluated on different images "
                f"of {dataset}/{split} (e.g. '{odd}' is in one only): evaluate both on the same prepared data"
            )
    return sorted(ids)


def make_group(dataset: str, split: str, entries: list[Entry], reference: int = 0) -> Group:
    """A group of entries (unique labels, each with the same number of seeds) on the same images;
    UserError otherwise."""
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        dup = next(lab for lab in labels if labels.count(lab) > 1)
        raise UserError(
            f"the label '{dup}' is given to two runs of {dataset}/{split}: give each run its own label"
        )
    seeds = {len(e.runs) for e in entries}
    if len(seeds) != 1 or 0 in seeds:
        raise UserError(
            f"every entry of {dataset}/{split} needs the same number of runs, got {sorted(seeds)}"
        )
    runs = [r for e in entries for r in e.runs]
    return Group(dataset, split, entries, _check_same_images(dataset, split, runs), reference)


def group_runs(runs: list[EvaluatedRun]) -> list[Group]:
    """One group per (dataset, split), in order of first appearance, one entry per run (S = 1), the
    first run of each group its reference."""
    keys: dict[tuple, list[EvaluatedRun]] = {}
    for r in runs:
        keys.setdefault(_group_key(r), []).append(r)
    return [make_group(d, s, [Entry(r.label, [r]) for r in g]) for (d, s), g in keys.items()]


# ----------------------------------------------------------------------------- the statistics


@dataclass
class Comparison:
    """``compare_groups``' result: per group and metric a ``MetricStats`` (arrays over the entries); per
    group its size bins [(bin, ids)] (``bins``, None without) and per group, bin and metric ``size``."""

    groups: list[Group]
    metrics: tuple[str, ...]
    stats: dict[tuple[int, str], MetricStats]
    n_boot: int
    seed: int
    bins: dict[int, list[tuple[str, list[str]]] | None] = field(default_factory=dict)
    size: dict[tuple[int, str, str], MetricStats] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """The long table over whole splits: one dict per group, metric and entry, with ``COLUMNS`` as keys
        (None = empty; size_bin "all")."""
        out = []
        for gi, g in enumerate(self.groups):
            for metric in self.metrics:
                out += _metric_rows(g, metric, self.stats[(gi, metric)])
        return out

    def size_rows(self) -> list[dict]:
        """The same per object-size bin: one dict per group, bin, metric and entry."""
        out = []
        for gi, g in enumerate(self.groups):
            for b, _ in self.bins.get(gi) or []:
                for metric in self.metrics:
                    out += _metric_rows(g, metric, self.size[(gi, b, metric)], b)
        return out


_TESTS = ("median_diff", "diff_ci_low", "diff_ci_high", "p_holm", "effect_r")


def _num(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _metric_rows(g: Group, metric: str, st: MetricStats, size_bin: str = ALL_IMAGES) -> list[dict]:
    ref = g.entries[g.reference].label
    rows = []
    for k, e in enumerate(g.entries):
        row = {
            "dataset": g.dataset,
            "split": g.split,
            "size_bin": size_bin,
            "metric": metric,
            "direction": "higher" if st.higher_is_better else "lower",
            "label": e.label,
            "run": ";".join(shown_path(r.run_dir) for r in e.runs),
            "reference": ref,
            "n_images": st.n_images,
            "n_seeds": st.n_seeds,
        }
        for key in ("mean", "ci_low", "ci_high", "image_sd", "seed_sd", "median", *_TESTS):
            row[key] = _num(getattr(st, key)[k])
        row["p_value"] = _num(st.p[k])
        rows.append(row)
    return rows


def _empty_stats(n_runs: int, n_seeds: int, n_boot: int, reference: int, higher: bool) -> MetricStats:
    """The stats of a metric with no image defined in every run: n_images 0, every value NaN (empty)."""
    nan = np.full(n_runs, np.nan)
    keys = (
        "mean",
        "ci_low",
        "ci_high",
        "seed_sd",
        "image_sd",
        "median",
        "median_diff",
        "diff_ci_low",
        "diff_ci_high",
        "p",
        "p_holm",
        "effect_r",
    )
    return MetricStats(higher, reference, 0, n_seeds, n_boot, **{k: nan.copy() for k in keys})


def analyse_images(g: Group, ids: list[str], metrics, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """{metric: MetricStats} of the group on ``ids``: one fresh ``bootstrap_draws`` for the images, and
    for a metric undefined on some of them, draws of its own over those defined in every run."""
    draws = bootstrap_draws(g.n_seeds, len(ids), n_boot, seed)
    out = {}
    for metric in metrics:
        m, higher = g.array(metric, ids), higher_is_better(metric)
        keep = np.isfinite(m).all(axis=(0, 1))
        if keep.all():
            out[metric] = analyse(m, draws, g.reference, higher)
        elif keep.any():
            own = bootstrap_draws(g.n_seeds, int(keep.sum()), n_boot, seed)
            out[metric] = analyse(m[:, :, keep], own, g.reference, higher)
        else:
            out[metric] = _empty_stats(m.shape[0], g.n_seeds, n_boot, g.reference, higher)
    return out


def check_metric_names(metrics) -> None:
    """UserError for a name that is not a comparable per-image metric (``COMPARABLE_NAMES``)."""
    for m in metrics or ():
        if m not in COMPARABLE_NAMES:
            raise UserError(
                f"unknown metric '{m}'.{suggestion(m, COMPARABLE_NAMES)} "
                f"Choose from: {', '.join(COMPARABLE_NAMES)}"
            )


def comparable_metrics(groups: list[Group], metrics=None) -> tuple[str, ...]:
    """The metrics to compare: ``metrics`` checked (known, and a column of every run's per_image.csv),
    or by default every ``METRIC_NAMES`` that all runs have (evaluations written before the lesion and
    calibration metrics are compared on the others)."""
    runs = [r for g in groups for e in g.entries for r in e.runs]
    if metrics is None:
        return tuple(m for m in METRIC_NAMES if all(m in r.per_image.metrics for r in runs))
    check_metric_names(metrics)
    for m in metrics:
        lacking = next((r for r in runs if m not in r.per_image.metrics), None)
        if lacking is not None:
            raise UserError(
                f"{lacking.per_image.path} has no '{m}' column (evaluated by an older imbaseg): run "
                f"{evaluate_command(lacking.run_dir, lacking.split)} again"
            )
    return tuple(dict.fromkeys(metrics))


def compare_groups(
    groups: list[Group], metrics=None, n_boot: int = N_BOOT, seed: int = 0, by_size: bool = True
) -> Comparison:
    """``analyse`` of every group and metric (default: ``comparable_metrics``); each group draws afresh
    from ``default_rng(seed)``. by_size: the same per object-size bin of the group (fresh draws per bin;
    Holm over the runs within a bin and metric, as for the whole split)."""
    metrics = comparable_metrics(groups, metrics)
    c = Comparison(groups, metrics, {}, n_boot, seed)
    for gi, g in enumerate(groups):
        for metric, st in analyse_images(g, g.ids, metrics, n_boot, seed).items():
            c.stats[(gi, metric)] = st
        c.bins[gi] = g.size_bins() if by_size else None
        for b, ids in c.bins[gi] or []:
            for metric, st in analyse_images(g, ids, metrics, n_boot, seed).items():
                c.size[(gi, b, metric)] = st
    return c


def compare_runs(
    run_dirs, split: str = "test", labels=None, metrics=None, n_boot=N_BOOT, seed=0, by_size=True
):
    """Read, label, group and compare evaluated run folders. Returns the ``Comparison``."""
    runs = [load_evaluated(r, split) for r in check_distinct(run_dirs)]
    label_runs(runs, labels)
    return compare_groups(group_runs(runs), metrics, n_boot, seed, by_size)


def check_distinct(run_dirs) -> list[Path]:
    """The run folders as Paths; UserError when none is given or one is given twice."""
    paths = [Path(r) for r in run_dirs]
    if not paths:
        raise UserError("no run folder given: pass one or more RUN_DIRs")
    if len({p.resolve() for p in paths}) != len(paths):
        raise UserError("the same run folder is given twice; pass each run once")
    return paths


# ----------------------------------------------------------------------------- the files


def _cell(v) -> str:
    if v is None:
        return ""
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def comparison_csv(c: Comparison) -> str:
    """The long CSV: ``COLUMNS``, one row per dataset, split, size bin ("all" first, then each bin),
    metric and run; floats exact (repr); an empty cell where a value does not apply (the tests on the
    reference's own rows, a metric without any image defined in every run)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in [*c.rows(), *c.size_rows()]:
        w.writerow([_cell(row[k]) for k in COLUMNS])
    return buf.getvalue()


_TWO_DECIMALS = ("hd95", "assd", "lesion_detected", "lesion_missed", "lesion_fp")  # pixels and counts


def metric_digits(metric: str) -> int:
    """Decimals to show: 2 for distances in pixels and component counts, 4 for the rest."""
    return 2 if metric in _TWO_DECIMALS else 4


def _fmt(metric: str, v: float | None, signed: bool = False) -> str:
    """``metric_digits`` decimals; n/a for None."""
    if v is None:
        return "n/a"
    return format(v, f"{'+' if signed else ''}.{metric_digits(metric)}f")


def _p(v: float | None) -> str:
    return "n/a" if v is None else format(v, ".3g")


def _run_note(e: Entry) -> str:
    """Where an entry's run lives and how it was evaluated (from summary.json when present)."""
    from imbaseg.viz.labels import metric_title

    r = e.runs[0]
    s, parts = r.summary, []
    if s.get("checkpoint"):
        parts.append(f"checkpoint {s['checkpoint'].get('which')} (epoch {s['checkpoint'].get('epoch')})")
    if "threshold" in s:
        parts.append(f"threshold {s['threshold']}" + (", TTA" if s.get("tta") else ""))
    aucs = [f"{metric_title(k)} {s[k]:.4f}" for k in ("auc_roc", "auc_pr") if s.get(k) is not None]
    where = ", ".join(f"`{shown_path(x.run_dir)}`" for x in e.runs)
    return f"- {e.label}: {where}" + (f" ({'; '.join(parts + aucs)})" if parts or aucs else "")


def _group_markdown(c: Comparison, g: Group) -> list[str]:
    from imbaseg.viz.labels import dataset_title, metric_title

    mine = [r for r in c.rows() if (r["dataset"], r["split"]) == (g.dataset, g.split)]
    rows = {(r["metric"], r["label"]): r for r in mine}
    ref = g.entries[g.reference].label
    seeds = f", {g.n_seeds} seeds" if g.n_seeds > 1 else ""
    lines = [
        f"## {dataset_title(g.dataset)}, {g.split} split ({len(g.ids)} images{seeds})",
        "",
        "| run | " + " | ".join(metric_title(m) for m in c.metrics) + " |",
        "| --- " * (len(c.metrics) + 1) + "|",
    ]
    for k, e in enumerate(g.entries):
        cells = []
        for m in c.metrics:
            r = rows[(m, e.label)]
            cells.append(f"{_fmt(m, r['mean'])} [{_fmt(m, r['ci_low'])}, {_fmt(m, r['ci_high'])}]")
        name = f"{e.label} (reference)" if k == g.reference else e.label
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(g.entries) > 1:
        lines += [
            "",
            f"Against {ref}:",
            "",
            "| run | metric | median difference [95% CI] | p | p (Holm) | r |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for k, e in enumerate(g.entries):
            if k == g.reference:
                continue
            for m in c.metrics:
                r = rows[(m, e.label)]
                low, high = _fmt(m, r["diff_ci_low"], True), _fmt(m, r["diff_ci_high"], True)
                diff = f"{_fmt(m, r['median_diff'], True)} [{low}, {high}]"
                eff = "n/a" if r["effect_r"] is None else f"{r['effect_r']:+.2f}"
                lines.append(
                    f"| {e.label} | {metric_title(m)} | {diff} | {_p(r['p_value'])} | {_p(r['p_holm'])} "
                    f"| {eff} |"
                )
    partial = [(m, rows[(m, ref)]["n_images"]) for m in c.metrics if rows[(m, ref)]["n_images"] != len(g.ids)]
    if partial:
        lines += [
            "",
            "Compared on the images where every run has a value: "
            + ", ".join(f"{metric_title(m)} on {n} of {len(g.ids)}" for m, n in partial)
            + ".",
        ]
    return lines + ["", *(_run_note(e) for e in g.entries), ""]


SIZE_MARKDOWN = ("dice", "lesion_recall", "lesion_f1", "ece")  # the per-bin tables of comparison.md


def _size_markdown(c: Comparison, gi: int, g: Group) -> list[str]:
    """Per object-size bin: mean [95% CI] of a few metrics per run, with the Holm p against the reference."""
    from imbaseg.viz.labels import metric_title

    bins = c.bins.get(gi)
    shown = [m for m in SIZE_MARKDOWN if m in c.metrics]
    if not bins or not shown:
        return []
    edges = (g.entries[g.reference].runs[0].summary.get("by_size") or {}).get("bins") or []
    where = {b["bin"]: f" ({b['low']:.4g}, {b['high']:.4g}]" for b in edges if b["bin"] != "empty"}
    lines = [
        "### By object size",
        "",
        "Images binned by the target's foreground fraction (evaluate's `size_bin`); per bin mean [95% CI] "
        "and, against the reference, the Holm-adjusted p of the paired Wilcoxon test within the bin. "
        "Every metric and bin is in the CSV.",
        "",
        "| metric | run | " + " | ".join(f"{b}{where.get(b, '')}, n={len(ids)}" for b, ids in bins) + " |",
        "| --- " * (len(bins) + 2) + "|",
    ]
    for m in shown:
        for k, e in enumerate(g.entries):
            cells = []
            for b, _ in bins:
                st = c.size[(gi, b, m)]
                mean, low, high = (_num(x[k]) for x in (st.mean, st.ci_low, st.ci_high))
                cell = f"{_fmt(m, mean)} [{_fmt(m, low)}, {_fmt(m, high)}]" if mean is not None else "n/a"
                if k != g.reference and mean is not None:
                    cell += f", p {_p(_num(st.p_holm[k]))}"
                cells.append(cell)
            lines.append(f"| {metric_title(m)} | {e.label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _area_markdown(g: Group) -> list[str]:
    """Lesion recall by target component area per run, from the runs' summary.json (pooled: no test)."""
    sections = [e.runs[0].summary.get("lesion") for e in g.entries]
    if not all(sections) or g.n_seeds > 1:
        return []
    classes = sections[0]["by_area"]["classes"]
    head = [
        f"{cl['class']} (> {cl['min_area']:g}"
        + ("" if cl["max_area"] is None else f", <= {cl['max_area']:g}")
        + " px)"
        for cl in classes
    ]
    lines = [
        "### Lesion recall by component area",
        "",
        f"Detected / target components, summed over the split, by area class (split at the "
        f"{sections[0]['by_area']['rule']}; detected by {sections[0]['rule']}). Pooled: no paired test.",
        "",
        "| run | " + " | ".join(head) + " | false positives |",
        "| --- " * (len(head) + 2) + "|",
    ]
    for e, s in zip(g.entries, sections, strict=True):
        cells = [
            f"{_fmt('lesion_recall', cl['recall'])} ({cl['detected']}/{cl['targets']})"
            for cl in s["by_area"]["classes"]
        ]
        lines.append(f"| {e.label} | " + " | ".join(cells) + f" | {s['fp']} |")
    return lines + [""]


def comparison_markdown(c: Comparison) -> str:
    """The comparison as Markdown: per group a table of mean [95% CI] per metric, the tests against the
    reference, and where each run is."""
    n_runs = sum(len(e.runs) for g in c.groups for e in g.entries)
    lines = [
        f"# Comparison of {n_runs} runs",
        "",
        f"Mean [95% CI] per image: percentile bootstrap over images ({c.n_boot:,} resamples, seed {c.seed}). "
        "Tests against the reference (the first run of each dataset): two-sided paired Wilcoxon "
        "signed-rank test on the per-image values, Holm-adjusted over the runs compared with it; median "
        "paired difference (run minus reference) with its bootstrap CI; effect size r = Z/sqrt(n), "
        "positive when the run is better. HD95 and ASSD in pixels; lower is better for them, ECE, Brier, "
        "missed and false-positive components.",
        "",
    ]
    for gi, g in enumerate(c.groups):
        lines += _group_markdown(c, g) + _size_markdown(c, gi, g) + _area_markdown(g)
    return "\n".join(lines)


def write_comparison(c: Comparison, csv_path, md_path) -> tuple[Path, Path]:
    """Write the CSV and the Markdown atomically. Returns their paths."""
    from imbaseg.paths import atomic_write_text

    atomic_write_text(csv_path, comparison_csv(c))
    atomic_write_text(md_path, comparison_markdown(c))
    return Path(csv_path), Path(md_path)


def default_comparison_dir() -> Path:
    """``runs/comparison-<timestamp>`` under the project root ($IMBASEG_HOME or the current directory)."""
    import time

    from imbaseg.paths import runs_root

    return runs_root() / f"comparison-{time.strftime('%Y%m%d-%H%M%S')}"


def comparison_files(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``comparison.csv`` and ``comparison.md`` in ``out_dir``."""
    return Path(out_dir) / "comparison.csv", Path(out_dir) / "comparison.md"
