"""``imbaseg study report``: the study's table, paired tests, rankings and figures in ``studies/<name>/``.

Follows ``../shared/spec/study.md`` to the letter. The cells' evaluations are read and compared through
the one comparison layer (``imbaseg.evaluation.comparison``): per dataset one ``Group`` whose entries are
the losses (study order) and whose runs are their seeds (ascending), and ``compare_groups`` for the
hierarchical bootstrap intervals and the tests against the reference, so a study with one seed gives
exactly what ``imbaseg evaluate`` gives on the same runs. The rankings are ``imbaseg.study.rankings``.

Files (``write_report``): cells.csv, results.csv, table.csv, table.md, table.tex, tests.csv,
ranking.csv, study.yaml, and ranks_blob / significance / distributions as PNG (200 dpi) and PDF. Every
number and figure is computed first; then each file is written atomically.

A cell that is not done (todo, running, partial, failed) makes the report refuse with the list, or,
with ``allow_missing``, drops its loss from its dataset (every seed is needed), and the table says so.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imbaseg.errors import UserError, suggestion
from imbaseg.evaluation.comparison import EvaluatedRun, Group, MetricStats
from imbaseg.metrics.stats import N_BOOT, higher_is_better
from imbaseg.study import rankings as R
from imbaseg.study.spec import Cell, Study
from imbaseg.study.state import CellState

Progress = Callable[[str, int, int], None]  # progress(stage, done, total)
FILES = (
    "cells.csv",
    "results.csv",
    "table.csv",
    "table.md",
    "table.tex",
    "tests.csv",
    "ranking.csv",
    "study.yaml",
)
FIGURES = ("ranks_blob", "significance", "distributions")
ALL_DATASETS = "all"  # the dataset column of the consensus rows in ranking.csv
METHODS = ("aggregate-then-rank", "rank-then-aggregate", "significance", "bootstrap", "consensus")


# ----------------------------------------------------------------------------- what the report holds


@dataclass
class CellInfo:
    """A cell with its state and, when done, its evaluation (``run``)."""

    cell: Cell
    state: CellState
    run: EvaluatedRun | None = None


@dataclass
class Ranking:
    """Every ranking of one dataset and metric (arrays over the dataset's losses)."""

    mean: np.ndarray  # grand means (aggregate-then-rank's score)
    rank: np.ndarray  # aggregate-then-rank
    rta_score: np.ndarray
    rta_rank: np.ndarray
    significance: R.Significance
    stability: R.Stability


@dataclass
class DatasetReport:
    """One dataset: the losses kept (study order), those dropped with why, the group, the statistics."""

    name: str
    losses: list[str]
    dropped: dict[str, str]  # loss -> why (its cells that are not done)
    group: Group | None = None  # None when no loss is left
    reference: int | None = None  # index into ``losses``; None when the reference loss was dropped
    stats: dict[str, MetricStats] = field(default_factory=dict)
    ranking: dict[str, Ranking] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return len(self.group.ids) if self.group else 0

    @property
    def n_seeds(self) -> int:
        return self.group.n_seeds if self.group else 0

    def array(self, metric: str) -> np.ndarray:
        """m[L, S, n] of the kept losses."""
        return self.group.array(metric)


@dataclass
class StudyReport:
    """Everything the files are written from (``build_report``)."""

    study: Study
    metrics: tuple[str, ...]
    n_boot: int
    seed: int
    root: Path | None
    cells: list[CellInfo]
    datasets: list[DatasetReport]
    consensus: dict[str, R.Consensus]
    labels: dict[str, str]  # loss spec -> readable label
    n_rank_boot: int = R.N_RANK_BOOT

    @property
    def reported(self) -> list[DatasetReport]:
        """The datasets with at least one loss left."""
        return [d for d in self.datasets if d.group is not None]


@dataclass
class ReportResult:
    """``write_report``'s result: the folder, each file written (name -> path), the Markdown table,
    and one line per loss or dataset left out."""

    out_dir: Path
    files: dict[str, Path]
    table_md: str
    dropped: list[str]
    report: StudyReport


# ----------------------------------------------------------------------------- reading the cells


def display_labels(losses) -> dict[str, str]:
    """Loss spec -> readable label without the trailing ' Loss' ('dice(batch=false)' -> 'Dice
    (batch=false)'); a label two specs would share falls back to the spec itself."""
    from imbaseg.viz.labels import loss_label

    out = {loss: loss_label(loss).removesuffix(" Loss") for loss in losses}
    taken = list(out.values())
    return {loss: (lab if taken.count(lab) == 1 else loss) for loss, lab in out.items()}


def check_metrics(metrics, study: Study) -> tuple[str, ...]:
    """The metrics to report: ``metrics`` (deduplicated, in order) or the study's; UserError for an
    unknown name, with the closest one. (That every cell has the column is checked once they are read.)"""
    from imbaseg.metrics import COMPARABLE_NAMES

    chosen = list(dict.fromkeys(metrics or study.metrics))
    for m in chosen:
        if m not in COMPARABLE_NAMES:
            raise UserError(
                f"unknown metric '{m}' for --metric.{suggestion(m, COMPARABLE_NAMES)} "
                f"Choose from: {', '.join(COMPARABLE_NAMES)}."
            )
    return tuple(chosen)


def _missing_error(study: Study, missing: list[CellInfo]) -> UserError:
    shown = "; ".join(f"{i.cell.label}: {i.state.state} ({i.state.why})" for i in missing[:8])
    more = f"; and {len(missing) - 8} more" if len(missing) > 8 else ""
    return UserError(
        f"{len(missing)} cell(s) of {study.path or study.name} are not done: {shown}{more}. Finish them "
        f"with imbaseg study run {study.path or 'STUDY_FILE'}, or report without them with --allow-missing"
    )


def read_cells(study: Study, root=None, allow_missing: bool = False, progress: Progress | None = None):
    """Every cell with its state; the done ones with their evaluation (``load_evaluated``).

    UserError listing the cells that are not done unless ``allow_missing``.
    """
    from imbaseg.evaluation.comparison import load_evaluated
    from imbaseg.study.spec import cells
    from imbaseg.study.state import cell_state

    infos = [CellInfo(c, cell_state(study, c)) for c in cells(study, root)]
    missing = [i for i in infos if i.state.state != "done"]
    if missing and not allow_missing:
        raise _missing_error(study, missing)
    done = [i for i in infos if i.state.state == "done"]
    for k, info in enumerate(done):
        info.run = load_evaluated(info.cell.run_dir, study.split)
        if progress:
            progress("reading cells", k + 1, len(done))
    return infos


def _dataset(study: Study, name: str, infos: list[CellInfo]) -> DatasetReport:
    """The dataset's group: a loss with every seed done is an entry (its runs in ascending seed order)."""
    from imbaseg.evaluation.comparison import Entry, make_group

    kept, entries, dropped = [], [], {}
    for loss in study.losses:
        mine = sorted(
            (i for i in infos if i.cell.dataset == name and i.cell.loss == loss), key=lambda i: i.cell.seed
        )
        bad = [i for i in mine if i.run is None]
        if bad:
            dropped[loss] = "; ".join(f"seed {i.cell.seed} {i.state.state}" for i in bad)
            continue
        kept.append(loss)
        entries.append(Entry(loss, [i.run for i in mine]))
    rep = DatasetReport(name, kept, dropped)
    if entries:
        rep.reference = kept.index(study.reference) if study.reference in kept else None
        rep.group = make_group(name, study.split, entries, rep.reference or 0)
    return rep


# ----------------------------------------------------------------------------- the statistics


def _without_tests(st: MetricStats) -> MetricStats:
    """The statistics with every test field NaN (the dataset's reference loss was dropped)."""
    nan = np.full_like(st.mean, np.nan)
    keys = ("median_diff", "diff_ci_low", "diff_ci_high", "p", "p_holm", "effect_r")
    return dataclasses.replace(st, **{k: nan.copy() for k in keys})


def rank_dataset(m, higher: bool, n_rank_boot: int = R.N_RANK_BOOT, seed: int = 0) -> Ranking:
    """All four per-dataset rankings of m[L, S, n] (see ``imbaseg.study.rankings``)."""
    mean, rank = R.aggregate_then_rank(m, higher)
    x = R.seed_average(m)
    rta_score, rta_rank = R.rank_then_aggregate(x, higher)
    return Ranking(
        mean,
        rank,
        rta_score,
        rta_rank,
        R.significance_ranking(x, higher),
        R.rank_stability(m, higher, n_rank_boot, seed),
    )


def check_values(d: DatasetReport, metrics) -> None:
    """UserError when a reported cell's per_image.csv lacks a metric's column (``comparable_metrics`` names
    the evaluate command), or has an undefined (NaN) value of it: the study's tests and rankings need a
    value for every image of every cell (spec: the same n images in every cell)."""
    from imbaseg.evaluation.comparison import comparable_metrics

    comparable_metrics([d.group], metrics)
    for e in d.group.entries:
        for r in e.runs:
            for m in metrics:
                bad = np.flatnonzero(~np.isfinite(r.per_image.values[m]))
                if bad.size:
                    raise UserError(
                        f"'{m}' is undefined for image '{r.per_image.ids[bad[0]]}' in {r.per_image.path} "
                        f"({bad.size} image(s)): the study's paired tests need a value for every image; "
                        "report other metrics (--metric)"
                    )


def _analyse(rep: StudyReport, progress: Progress | None) -> None:
    from imbaseg.evaluation.comparison import compare_groups

    total, done = len(rep.reported) * len(rep.metrics), 0
    for d in rep.reported:
        check_values(d, rep.metrics)
        comp = compare_groups([d.group], rep.metrics, rep.n_boot, rep.seed, by_size=False)  # the spec's draws
        for metric in rep.metrics:
            st = comp.stats[(0, metric)]
            d.stats[metric] = st if d.reference is not None else _without_tests(st)
            d.ranking[metric] = rank_dataset(
                d.array(metric), higher_is_better(metric), rep.n_rank_boot, rep.seed
            )
            done += 1
            if progress:
                progress("statistics", done, total)
    for metric in rep.metrics:
        ranks = {
            d.name: dict(zip(d.losses, d.ranking[metric].rank.tolist(), strict=True)) for d in rep.reported
        }
        rep.consensus[metric] = R.consensus(ranks, list(rep.study.losses))


def build_report(
    study: Study,
    metrics=None,
    allow_missing: bool = False,
    boot: int = N_BOOT,
    seed: int = 0,
    root=None,
    progress: Progress | None = None,
    n_rank_boot: int = R.N_RANK_BOOT,
) -> StudyReport:
    """Read the cells and compute every number of the report (nothing is written)."""
    chosen = check_metrics(metrics, study)
    if isinstance(boot, bool) or not isinstance(boot, (int, np.integer)) or boot < 1:
        raise UserError(f"--boot must be a positive number of bootstrap replicates, got {boot!r}")
    infos = read_cells(study, root, allow_missing, progress)
    datasets = [_dataset(study, d.name, infos) for d in study.datasets]
    if not any(d.group for d in datasets):
        raise UserError(
            f"no loss of {study.path or study.name} has all its cells done in any dataset: nothing to "
            f"report yet; run imbaseg study run {study.path or 'STUDY_FILE'}"
        )
    rep = StudyReport(
        study,
        chosen,
        int(boot),
        int(seed),
        Path(root) if root else None,
        infos,
        datasets,
        {},
        display_labels(study.losses),
        n_rank_boot,
    )
    _analyse(rep, progress)
    return rep


def dropped_lines(rep: StudyReport) -> list[str]:
    """One line per dataset left out, per loss dropped from a dataset, and per dataset whose reference
    was dropped (no tests)."""
    out = []
    for d in rep.datasets:
        if d.group is None:
            out.append(f"{d.name}: not reported, no loss has all its seeds done")
            continue
        out += [f"{d.name}: {rep.labels[loss]} dropped ({why})" for loss, why in d.dropped.items()]
        if d.reference is None:
            out.append(f"{d.name}: no tests, the reference {rep.labels[rep.study.reference]} was dropped")
    return out


# ----------------------------------------------------------------------------- the CSV files


def _v(v) -> str:
    """A CSV cell: floats exact (shortest round-trip repr), NaN/None empty."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (float, np.floating)):
        return repr(float(v)) if np.isfinite(v) else ""
    return str(v)


def _csv(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([_v(x) for x in row])
    return buf.getvalue()


def shown_run(path, root=None) -> str:
    """A run folder relative to the project root when under it (no machine paths in the files)."""
    from imbaseg.paths import home

    try:
        return str(Path(path).resolve().relative_to(home(root).resolve()))
    except ValueError:
        return str(path)


CELLS_COLUMNS = ("dataset", "loss", "seed", "run_dir", "state", "seconds", "n_images")


def cells_csv(rep: StudyReport) -> str:
    """One row per cell of the study (dataset, loss, seed order): its state, training seconds, images."""
    rows = []
    for i in rep.cells:
        n = len(i.run.per_image) if i.run else None
        rows.append(
            (
                i.cell.dataset,
                i.cell.loss,
                i.cell.seed,
                shown_run(i.cell.run_dir, rep.root),
                i.state.state,
                i.state.seconds,
                n,
            )
        )
    return _csv(CELLS_COLUMNS, rows)


RESULTS_COLUMNS = ("dataset", "loss", "seed", "id", "metric", "value")


def results_csv(rep: StudyReport) -> str:
    """The values every number was computed from: one row per dataset, loss, seed, image (ids sorted as
    text) and metric, for the reported losses only."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RESULTS_COLUMNS)
    for d in rep.reported:
        cols = {m: d.array(m) for m in rep.metrics}
        for k, entry in enumerate(d.group.entries):
            for s, seed in enumerate(sorted(rep.study.seeds)):  # a kept loss has every seed
                for j, image in enumerate(d.group.ids):
                    for m in rep.metrics:
                        w.writerow((d.name, entry.label, seed, image, m, repr(float(cols[m][k, s, j]))))
    return buf.getvalue()


def table_columns(metrics) -> tuple[str, ...]:
    per = ("mean", "ci_low", "ci_high", "seed_sd", "rank", "p_holm", "best", "dagger")
    return (
        "dataset",
        "loss",
        "label",
        "reference",
        "n_seeds",
        "n_images",
        *(f"{m}_{k}" for m in metrics for k in per),
        "note",
    )


def table_rows(rep: StudyReport) -> list[dict]:
    """The table as dicts (``table_columns``): per dataset and loss of the study; a dropped loss has only
    its note. best: aggregate-then-rank rank 1 (the bold cell); dagger: Holm-adjusted p < 0.05."""
    rows = []
    for d in rep.datasets:
        for loss in rep.study.losses:
            row = {
                "dataset": d.name,
                "loss": loss,
                "label": rep.labels[loss],
                "reference": loss == rep.study.reference,
                "note": "",
            }
            if loss not in d.losses:
                row["note"] = f"dropped: {d.dropped[loss]}"
                rows.append(row)
                continue
            k = d.losses.index(loss)
            row.update(n_seeds=d.n_seeds, n_images=d.n_images)
            for m in rep.metrics:
                st, rk = d.stats[m], d.ranking[m]
                p = st.p_holm[k]
                row.update(
                    {
                        f"{m}_mean": st.mean[k],
                        f"{m}_ci_low": st.ci_low[k],
                        f"{m}_ci_high": st.ci_high[k],
                        f"{m}_seed_sd": st.seed_sd[k],
                        f"{m}_rank": int(rk.rank[k]),
                        f"{m}_p_holm": p,
                        f"{m}_best": bool(rk.rank[k] == 1),
                        f"{m}_dagger": bool(np.isfinite(p) and p < R.ALPHA),
                    }
                )
            if d.reference is None:
                row["note"] = "no tests: the reference was dropped"
            rows.append(row)
    return rows


def table_csv(rep: StudyReport) -> str:
    cols = table_columns(rep.metrics)
    return _csv(cols, ([r.get(c) for c in cols] for r in table_rows(rep)))


TESTS_COLUMNS = (
    "dataset",
    "metric",
    "direction",
    "loss",
    "label",
    "reference",
    "n_images",
    "n_seeds",
    "median_diff",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "p_holm",
    "effect_r",
)


def tests_csv(rep: StudyReport) -> str:
    """Every paired test against the reference: per dataset, metric and loss (not the reference)."""
    rows = []
    for d in rep.reported:
        if d.reference is None:
            continue
        for m in rep.metrics:
            st = d.stats[m]
            for k, loss in enumerate(d.losses):
                if k == d.reference:
                    continue
                rows.append(
                    (
                        d.name,
                        m,
                        "higher" if st.higher_is_better else "lower",
                        loss,
                        rep.labels[loss],
                        rep.study.reference,
                        st.n_images,
                        st.n_seeds,
                        st.median_diff[k],
                        st.diff_ci_low[k],
                        st.diff_ci_high[k],
                        st.p[k],
                        st.p_holm[k],
                        st.effect_r[k],
                    )
                )
    return _csv(TESTS_COLUMNS, rows)


def ranking_columns(n_losses: int) -> tuple[str, ...]:
    return (
        "dataset",
        "metric",
        "direction",
        "method",
        "loss",
        "label",
        "score",
        "rank",
        "kendall_tau",
        *(f"freq_rank_{r}" for r in range(1, n_losses + 1)),
        "note",
    )


def ranking_rows(rep: StudyReport) -> list[dict]:
    """Every ranking (``METHODS``) per dataset and metric, then the consensus per metric.

    score: aggregate-then-rank the mean; rank-then-aggregate the mean per-image rank; significance the
    number of losses beaten; bootstrap the mean rank over the samples (rank: the full-data rank,
    freq_rank_r: the fraction of samples at rank r, kendall_tau: the median tau-b); consensus the mean
    rank over the datasets (note: the datasets that lack the loss).
    """
    rows = []
    for d in rep.reported:
        for m in rep.metrics:
            rk, direction = d.ranking[m], "higher" if higher_is_better(m) else "lower"
            stab = rk.stability
            for k, loss in enumerate(d.losses):
                base = {
                    "dataset": d.name,
                    "metric": m,
                    "direction": direction,
                    "loss": loss,
                    "label": rep.labels[loss],
                }
                rows.append(
                    {**base, "method": "aggregate-then-rank", "score": rk.mean[k], "rank": rk.rank[k]}
                )
                rows.append(
                    {
                        **base,
                        "method": "rank-then-aggregate",
                        "score": rk.rta_score[k],
                        "rank": rk.rta_rank[k],
                    }
                )
                rows.append(
                    {
                        **base,
                        "method": "significance",
                        "score": int(rk.significance.wins[k]),
                        "rank": rk.significance.rank[k],
                    }
                )
                freq = {f"freq_rank_{r + 1}": f for r, f in enumerate(stab.freq[k])}
                rows.append(
                    {
                        **base,
                        "method": "bootstrap",
                        "score": float(stab.ranks[:, k].mean()),
                        "rank": rk.rank[k],
                        "kendall_tau": stab.median_tau,
                        **freq,
                    }
                )
    for m in rep.metrics:
        c = rep.consensus[m]
        for k, loss in enumerate(c.losses):
            note = f"absent from {', '.join(c.absent[k])}" if c.absent[k] else ""
            rows.append(
                {
                    "dataset": ALL_DATASETS,
                    "metric": m,
                    "direction": "higher" if higher_is_better(m) else "lower",
                    "method": "consensus",
                    "loss": loss,
                    "label": rep.labels[loss],
                    "score": c.score[k],
                    "rank": int(c.rank[k]) or None,
                    "note": note,
                }
            )
    return rows


def ranking_csv(rep: StudyReport) -> str:
    cols = ranking_columns(len(rep.study.losses))
    return _csv(cols, ([r.get(c) for c in cols] for r in ranking_rows(rep)))


# ----------------------------------------------------------------------------- writing


def report_texts(rep: StudyReport) -> dict[str, str]:
    """Every text file of the report, by name."""
    from imbaseg.study.spec import dump
    from imbaseg.study.tables import table_latex, table_markdown

    return {
        "cells.csv": cells_csv(rep),
        "results.csv": results_csv(rep),
        "table.csv": table_csv(rep),
        "table.md": table_markdown(rep),
        "table.tex": table_latex(rep),
        "tests.csv": tests_csv(rep),
        "ranking.csv": ranking_csv(rep),
        "study.yaml": dump(rep.study),
    }


def _replace_files(out: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    """Write every file through ``paths.staged_files``: a full disk or a kill while writing leaves the
    previous report whole (the folder's other files, e.g. study run's logs, are never touched)."""
    from imbaseg.paths import staged_files

    with staged_files(out) as stage:
        for name, data in contents.items():
            (stage / name).write_bytes(data)
    return {name: out / name for name in contents}


def write_report(
    study: Study | str | os.PathLike,
    metrics=None,
    allow_missing: bool = False,
    boot: int = N_BOOT,
    seed: int = 0,
    root=None,
    progress: Progress | None = None,
    figures: bool = True,
) -> ReportResult:
    """Compute the report of ``study`` (a ``Study`` or a study file) and write ``studies/<name>/``.

    metrics: the metrics to report (default: the study's). allow_missing: drop the losses whose cells
    are not done instead of refusing. boot/seed: the bootstrap replicates and the seed of the draws.
    root: the project root (runs/ and studies/; default $IMBASEG_HOME or the current folder).
    progress: ``progress(stage, done, total)``. figures: False skips the three figures (tests).
    Everything is computed and drawn before the first file is written; each file is atomic.
    """
    from imbaseg.locks import waiting_lock
    from imbaseg.study.spec import load_study

    if not isinstance(study, Study):
        study = load_study(study)
    rep = build_report(study, metrics, allow_missing, boot, seed, root, progress)
    texts = report_texts(rep)
    images = {}
    if figures:
        from imbaseg.study.figures import report_figures

        images = report_figures(rep, progress)
    out = study.out_dir(root)
    contents = {**{k: v.encode("utf-8") for k, v in texts.items()}, **images}
    with waiting_lock(out / ".report.lock"):  # two `study run`s ending together write one at a time
        files = _replace_files(out, contents)
    return ReportResult(out, files, texts["table.md"], dropped_lines(rep), rep)
