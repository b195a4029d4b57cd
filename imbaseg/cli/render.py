"""Everything imbaseg draws on a terminal: progress bars, tables, colours (the one rich module).

The library never prints: it reports through callbacks (``progress(done, total)``, ``on_event``)
and returns results; the commands in ``imbaseg.cli`` turn those into the output below. No torch
import here: ``imbaseg --help`` must answer at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from imbaseg.cli.common import console


def _counting_progress():
    """A transient rich Progress: description, bar, done/total, time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True)


@contextlib.contextmanager
def progress_bar(label: str, total: int | None = None, show: bool | None = None) -> Iterator[Callable]:
    """A transient bar; yields ``advance(done=None, total=None)`` (no argument: one more item done).

    ``show`` None = only on a terminal. Off a terminal the callable does nothing.
    """
    show = console.is_terminal if show is None else show
    if not show:
        yield lambda *a, **k: None
        return
    prog = _counting_progress()
    task = prog.add_task(label, total=total)

    def advance(done: int | None = None, new_total: int | None = None) -> None:
        if new_total is not None:
            prog.update(task, total=new_total)
        if done is None:
            prog.advance(task)
        else:
            prog.update(task, completed=done)

    with prog:
        yield advance


# ----------------------------------------------------------------------------- training


class TrainingDisplay:
    """A training run on the terminal, fed by the trainer's callbacks (``TrainerCallbacks`` hooks).

    ``bars`` True: an epoch bar and a batch bar (running loss, images/s) with the epoch lines printed
    above them; False: one line per epoch and the notices, nothing else (logs, pipes, CI). None picks
    bars on a terminal. Use it as a context manager around the ``train`` call.
    """

    def __init__(self, bars: bool | None = None):
        self.bars = console.is_terminal if bars is None else bars
        self.epochs = 0
        self._prog = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> TrainingDisplay:
        return self

    def __exit__(self, *exc) -> None:
        if self._prog is not None:
            self._prog.stop()
            self._prog = None

    def on_start(self, run_dir, epochs: int, done: int, batches: int) -> None:
        self.epochs = epochs
        if not self.bars:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._prog = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks["epochs"] = self._prog.add_task("epochs", total=epochs, completed=done, info="")
        self._tasks["batches"] = self._prog.add_task("batches", total=batches, info="")
        self._prog.start()

    def on_batch(self, epoch: int, done: int, total: int, loss: float | None, images_per_s: float) -> None:
        if self._prog is None:
            return
        info = f"{images_per_s:.1f} img/s" + (f"  loss {loss:.4f}" if loss is not None else "")
        task = self._tasks["batches"]
        if done == 1:
            self._prog.reset(task, total=total, description=f"epoch {epoch}", info="")
        self._prog.update(task, completed=done, info=info)

    def on_epoch_end(self, report: dict) -> None:
        from imbaseg.training.history import epoch_line

        console.print(epoch_line(report, self.epochs), highlight=False, soft_wrap=True)  # never wrapped
        if self._prog is not None:
            self._prog.advance(self._tasks["epochs"])

    def on_message(self, text: str, level: str = "info") -> None:
        from rich.markup import escape

        text = f"[yellow]{escape(text)}[/]" if level == "warning" else escape(text)
        console.print(text, highlight=False, soft_wrap=True)


def training_result(result, monitor: str) -> None:
    """The last line of ``imbaseg train``: where the run is and how it ended."""
    best = result.best_value if result.best_value is None else round(result.best_value, 4)
    console.print(
        f"[bold]run folder:[/] {result.run_dir}  ({result.stopped}; best {monitor}={best} "
        f"at epoch {result.best_epoch})",
        soft_wrap=True,
    )


def loss_table(rows: list[dict]) -> None:
    """``imbaseg train --list-losses``: one row per registered loss."""
    from rich.table import Table

    table = Table(title="imbaseg losses", show_lines=False)
    for col in ("name", "parameters (defaults)", "formula", "reference"):
        table.add_column(col, overflow="fold")
    for row in rows:
        params = ", ".join(f"{k}={v}" for k, v in row.get("params", {}).items()) or "-"
        table.add_row(row["name"], params, row.get("formula", ""), row.get("reference", ""))
    console.print(table)
    console.print('Compound losses: --loss "dice+bce" or --loss "boundary-gaussian(sigma=4)+0.5*dou"')


# ----------------------------------------------------------------------------- study plan, run, status

STATE_STYLE = {"todo": "white", "queued": "cyan", "running": "bold blue", "partial": "yellow",
               "failed": "bold red", "done": "green"}


def _state_counts(views) -> str:
    """``18 cells: 6 done, 2 partial, 10 todo``."""
    from collections import Counter

    counts = Counter(v.state for v in views)
    order = ["done", "running", "queued", "partial", "todo", "failed"]
    parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
    return f"{len(views)} cells: " + ", ".join(parts)


def _shown(path) -> str:
    """``path`` relative to the current folder when it lies inside it (shorter tables)."""
    import os

    text = os.path.relpath(path)
    return str(path) if text.startswith("..") else text


def _epoch(v) -> str:
    return f"{v.epoch}/{v.epochs}" if v.epoch is not None and v.epochs else ""


def _study_table(views, title: str, columns: tuple[str, ...]):
    """One row per cell: the ``columns`` among dataset, loss, seed, state, epoch, seconds, dice, why, run."""
    from rich.markup import escape
    from rich.table import Table

    right = ("seed", "epoch", "seconds", "dice")
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for v in views:
        values = {
            "dataset": v.cell.dataset, "loss": v.cell.loss, "seed": str(v.cell.seed),
            "state": f"[{STATE_STYLE.get(v.state, 'white')}]{v.state}[/]", "epoch": _epoch(v),
            "seconds": "" if v.seconds is None else f"{v.seconds:.0f}",
            "dice": "" if v.dice is None else f"{v.dice:.4f}", "why": escape(v.why),
            "run folder": escape(_shown(v.cell.run_dir)),
        }
        t.add_row(*(values[c] for c in columns))
    return t


def study_plan(study, views) -> None:
    """``imbaseg study plan``: every cell with its state and why, then the counts; nothing is written."""
    cols = ("dataset", "loss", "seed", "state", "why", "run folder")
    console.print(_study_table(views, f"study {study.name} ({study.path})", cols))
    todo = sum(v.state in ("todo", "partial") for v in views)
    console.print(f"{_state_counts(views)}. `imbaseg study run` would run {todo} of them "
                  "(failed ones with --retry-failed).", highlight=False, markup=False)


def study_status(study, views) -> None:
    """``imbaseg study status``: the plan with epochs, training seconds, the Dice of done cells and the
    errors of failed ones."""
    from rich.markup import escape

    cols = ("dataset", "loss", "seed", "state", "epoch", "seconds", "dice", "why")
    title = f"study {study.name} ({study.path}); dice: mean on {study.split}"
    console.print(_study_table(views, title, cols))
    console.print(_state_counts(views), highlight=False, markup=False)
    for v in views:
        if v.state == "failed":
            console.print(f"[bold red]failed:[/] {escape(v.cell.label)} ({escape(str(v.cell.run_dir))}): "
                          f"{escape(v.error or v.why)}", highlight=False, soft_wrap=True)


class StudyDisplay:
    """A study run on the terminal, fed by the runner's callbacks (``RunnerCallbacks``): a live table of
    the cells, refreshed, when ``live`` (default: on a terminal); otherwise one line per state change."""

    COLUMNS = ("dataset", "loss", "seed", "state", "epoch", "seconds", "why")

    def __init__(self, live: bool | None = None):
        self.live = console.is_terminal if live is None else live
        self._live = None

    def __enter__(self) -> StudyDisplay:
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def on_start(self, views, executor: str) -> None:
        console.print(f"{executor}. {_state_counts(views)}.", highlight=False, markup=False, soft_wrap=True)
        if self.live:
            from rich.live import Live

            self._live = Live(_study_table(views, "", self.COLUMNS), console=console, refresh_per_second=2)
            self._live.start()

    def on_change(self, view) -> None:
        if self.live:
            return
        import time

        from rich.markup import escape

        style = STATE_STYLE.get(view.state, "white")
        epoch = f" epoch {_epoch(view)}" if view.state == "running" and _epoch(view) else ""
        head = f"{time.strftime('%H:%M:%S')} {escape(view.cell.label)}"
        console.print(f"{head}: [{style}]{view.state}[/]{epoch} - {escape(view.why)}", highlight=False,
                      soft_wrap=True)

    def on_tick(self, views) -> None:
        if self._live is not None:
            self._live.update(_study_table(views, "", self.COLUMNS))

    def on_message(self, text: str, level: str = "info") -> None:
        from rich.markup import escape

        text = f"[yellow]{escape(text)}[/]" if level == "warning" else escape(text)
        console.print(text, highlight=False, soft_wrap=True)


def study_run_result(study, result) -> None:
    """How ``imbaseg study run`` ended: the counts, then what failed, what is unfinished and what to do."""
    import signal

    from rich.markup import escape

    console.print(_state_counts(result.views), highlight=False, markup=False)
    for v in result.failed:
        console.print(f"[bold red]failed:[/] {escape(v.cell.label)} ({escape(str(v.cell.run_dir))}): "
                      f"{escape(v.error or v.why)}", highlight=False, soft_wrap=True)
    for v in result.unfinished:
        console.print(f"[yellow]not finished:[/] {escape(v.cell.label)}: {escape(v.why)}", highlight=False,
                      soft_wrap=True)
    again = f"imbaseg study run {study.path}"
    if result.detached:
        console.print(f"{len(result.unfinished)} cell(s) go on as Slurm jobs; follow them with `imbaseg "
                      f"study status {study.path}` (scancel stops them, saving last.pt)", highlight=False)
    elif result.stopped_by is not None:
        name = signal.Signals(result.stopped_by).name
        console.print(f"[yellow]stopped by {name}[/]: the stopped cells saved checkpoints/last.pt; `{again}` "
                      "continues them", highlight=False, soft_wrap=True)
    elif result.failed:
        console.print(f"[bold red]{len(result.failed)} cell(s) failed[/]; after a fix, `{again} "
                      "--retry-failed` runs them again", highlight=False, soft_wrap=True)
    elif result.unfinished:
        console.print(f"`{again}` continues the unfinished cells", highlight=False, soft_wrap=True)
    else:
        console.print(f"[green]all {len(result.views)} cells done[/]", highlight=False)


def study_note(text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def cell_message(text: str, level: str = "info") -> None:
    """A notice of one cell's process (its output is the cell's log)."""
    from rich.markup import escape

    style = {"warning": "yellow", "error": "red"}.get(level)
    text = escape(text)
    console.print(f"[{style}]{text}[/]" if style else text, highlight=False, soft_wrap=True)


def cell_outcome(cell, outcome) -> None:
    """The last line of a cell's process: what it did."""
    from rich.markup import escape

    style = {"done": "green", "failed": "bold red", "busy": "yellow", "stopped": "yellow"}[outcome.outcome]
    console.print(f"[{style}]{escape(cell.label)}: {escape(outcome.message)}[/]", highlight=False,
                  soft_wrap=True)


# ----------------------------------------------------------------------------- download and prepare


@contextlib.contextmanager
def byte_progress() -> Iterator[Callable]:
    """Transient byte bars, one per file; yields ``update(label, done, total)`` (total None = unknown)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, int] = {}

    def update(label: str, done: int, total) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done, total=total)

    with progress:
        yield update


def lines(texts) -> None:
    """Print library messages verbatim (no markup, no highlighting)."""
    for text in texts:
        console.print(text, markup=False, highlight=False)


def prepare_result(result, table_rows: list[dict]) -> None:
    """What ``imbaseg prepare`` did (counts, notes, skipped and empty files) and the class-imbalance table."""
    from rich.markup import escape
    from rich.table import Table

    from imbaseg.data.splits import SPLITS

    counts = " / ".join(f"{result.counts.get(s, 0)} {s}" for s in SPLITS)
    path = escape(str(result.path))
    if result.up_to_date:
        console.print(f"{path} is up to date ({counts}); nothing to do (--force rebuilds it).",
                      highlight=False)
    else:
        console.print(f"[green]Prepared[/green] {path} ({counts}).", highlight=False)
    for note in result.notes:
        if note != "already up to date":
            console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    if result.skipped:
        console.print(f"[yellow]Skipped {len(result.skipped)} bad file(s):[/yellow]")
        for f, reason in result.skipped:
            console.print(f"  {f}: {reason}", markup=False, highlight=False)
    if result.empty:
        shown = ", ".join(result.empty[:10]) + (" ..." if len(result.empty) > 10 else "")
        console.print(f"[yellow]{len(result.empty)} empty mask(s) (kept):[/yellow] {escape(shown)}")
    table = Table(title="Class imbalance (foreground % of the image)")
    for col in ("split", "images", "mean %", "min %", "max %", "empty"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for r in table_rows:
        cells = (f"{r['fg_mean']:.2f}", f"{r['fg_min']:.2f}", f"{r['fg_max']:.2f}", str(r["empty"]))
        table.add_row(r["split"], str(r["images"]), *cells)
    console.print(table)


# ----------------------------------------------------------------------------- evaluate, predict, compare


@contextlib.contextmanager
def stage_progress(show: bool | None = None) -> Iterator[Callable]:
    """Transient bars, one per stage; yields ``update(stage, done, total)``, the callback of
    ``evaluate_run``/``evaluate_runs``. ``show`` None = only on a terminal."""
    show = console.is_terminal if show is None else show
    if not show:
        yield lambda *a, **k: None
        return
    progress = _counting_progress()
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    with progress:
        yield update


def _mean_ci(a: dict, digits: int = 4) -> str:
    return f"{a['mean']:.{digits}f} [{a['ci_low']:.{digits}f}, {a['ci_high']:.{digits}f}]"


def evaluation_summary(s: dict) -> None:
    """One evaluated run (``evaluate_run``'s summary): mean, 95% CI and median per metric, the AUCs, then
    the lesion-wise detection, results by object size and calibration sections."""
    from rich.table import Table

    t = Table(title=f"{s['run_dir']} - {s['split']} ({s['n_images']} images, threshold {s['threshold']})")
    for col in ("metric", "mean", "95% CI", "median"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for m, a in s["metrics"].items():
        if a["mean"] is None:  # lesion_recall when no image has a target component
            t.add_row(m, "n/a", "", "")
            continue
        t.add_row(m, f"{a['mean']:.4f}", f"[{a['ci_low']:.4f}, {a['ci_high']:.4f}]", f"{a['median']:.4f}")
    for k in ("auc_roc", "auc_pr"):
        t.add_row(k, "n/a" if s[k] is None else f"{s[k]:.4f}", "", "")
    console.print(t)
    _evaluation_sections(s)
    console.print(f"wrote {s['eval_dir']}", highlight=False)


def _n(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _area_range(c: dict) -> str:
    """'<= 38 px', '38-23791 px' or '> 23791 px' from a lesion area class (min exclusive, max inclusive)."""
    lo, hi = c.get("min_area") or 0, c.get("max_area")
    if hi is None:
        return f"> {lo:.0f} px"
    return f"<= {hi:.0f} px" if not lo else f"{lo:.0f}-{hi:.0f} px"


def _evaluation_sections(s: dict) -> None:
    """The lesion, object-size and calibration parts of an evaluation summary (absent in older ones)."""
    from rich.table import Table

    le, bs, cal = s.get("lesion"), s.get("by_size"), s.get("calibration")
    if le:
        classes = le["by_area"]["classes"]
        areas = ", ".join(
            f"{c['class']} ({_area_range(c)}) {_n(c['recall'], 3)} ({c['detected']}/{c['targets']})"
            for c in classes
        )
        console.print(
            f"lesions ({le['rule']}): {le['detected']}/{le['targets']} detected, {le['fp']} false "
            f"positive(s) of {le['predicted']} predicted; recall {_n(le['recall'])}, precision "
            f"{_n(le['precision'])}, F1 {_n(le['f1'])}; recall by area: {areas}",
            highlight=False,
        )
    if bs:
        t = Table(title=f"by object size (fg_fraction bins, {bs['rule']}): mean")
        t.add_column("metric")
        for b in bs["bins"]:
            t.add_column(f"{b['bin']} (n={b['n']})", justify="right")
        for m in ("dice", "lesion_recall", "lesion_f1", "ece"):
            t.add_row(m, *(_n((b["metrics"].get(m) or {}).get("mean")) for b in bs["bins"]))
        console.print(t)
    if cal:
        line = f"calibration ({cal['pixels']} pixels, {cal['bins']} bins): ECE {cal['ece']:.4f}, "
        line += f"Brier {cal['brier']:.4f}"
        t = cal.get("temperature")
        if t:
            after = t["pooled_after"]
            line += f"; with T = {t['temperature']:.3f} (fitted on {t['fitted_on']}): "
            line += f"ECE {after['ece']:.4f}, Brier {after['brier']:.4f}"
        console.print(line + f"; diagram {cal['figure']}", highlight=False)


def comparison_tables(
    comparison, metrics=("dice", "lesion_f1", "ece", "hd95", "cldice"), test_metric: str = "dice"
) -> None:
    """A ``Comparison`` (``imbaseg.evaluation.comparison``): per dataset and split, mean [95% CI] of
    ``metrics`` and the Holm-adjusted p and effect size r of ``test_metric`` against the reference."""
    from rich.table import Table

    from imbaseg.evaluation.comparison import metric_digits
    from imbaseg.viz.labels import metric_title

    rows = {(r["dataset"], r["split"], r["metric"], r["label"]): r for r in comparison.rows()}
    shown = [m for m in metrics if m in comparison.metrics]
    for g in comparison.groups:
        ref = g.entries[g.reference].label
        t = Table(title=f"{g.dataset} {g.split} ({len(g.ids)} images): mean [95% CI]; tests against {ref}")
        t.add_column("run")
        for col in [metric_title(m) for m in shown] + [f"p Holm ({test_metric})", f"r ({test_metric})"]:
            t.add_column(col, justify="right")
        for e in g.entries:
            cells = []
            for m in shown:
                r = rows[(g.dataset, g.split, m, e.label)]
                cells.append("n/a" if r["mean"] is None else _mean_ci(r, metric_digits(m)))
            r = rows.get((g.dataset, g.split, test_metric, e.label), {})
            p, eff = r.get("p_holm"), r.get("effect_r")
            cells += ["-" if p is None else f"{p:.3g}", "-" if eff is None else f"{eff:+.2f}"]
            t.add_row(e.label, *cells)
        console.print(t)


def comparison_columns(metrics) -> dict:
    """``comparison_tables``' keyword arguments for ``--metric M ...``: those metrics shown and the first
    one tested against the reference; none given: the defaults."""
    metrics = list(metrics or [])
    return {"metrics": tuple(metrics), "test_metric": metrics[0]} if metrics else {}


def prediction_results(results: list[dict]) -> None:
    """``predict``'s results: one row per input image, then how many files were written."""
    import os

    from rich.table import Table

    thr = results[0]["threshold"] if results else None
    temp = results[0].get("temperature") if results else None
    t = Table(title=f"predictions (threshold {thr}" + (f", temperature {temp:.4g})" if temp else ")"))
    for col in ("input", "size", "foreground", "mask"):
        t.add_column(col, justify="right" if col in ("size", "foreground") else "left", overflow="fold")
    for r in results:
        size, fg = f"{r['width']}x{r['height']}", f"{100 * r['fg_fraction']:.1f}%"
        t.add_row(os.path.basename(r["input"]), size, fg, r["mask"])
    console.print(t)


def tracking_note(tracking: dict | None, split: str) -> None:
    """What ``evaluate`` logged to a tracked run's MLflow run (nothing for an untracked run)."""
    if not tracking:
        return
    if "warning" in tracking:
        console.print(f"[yellow]warning:[/] {tracking['warning']}", highlight=False, soft_wrap=True)
    else:
        n, run = tracking["metrics"], tracking["mlflow"]
        console.print(f"[dim]logged {n} {split} metrics to MLflow run {run}[/]", highlight=False)


def export_result(r: dict) -> None:
    """``export``'s result: the file, what goes in and out, what is inside, the sidecar."""
    size = r["training_size"]
    inside = (f"resize to {size[0]}x{size[1]} and back, " if size else "") + "per-image z-score, padding, "
    inside += (f"threshold {r['threshold']}" if r["output"]["name"] == "mask" else "probabilities")
    if r.get("temperature"):
        inside += f", temperature {r['temperature']:.4g}"
    opset = f", opset {r['opset']}" if r.get("opset") else ""
    console.print(f"wrote {r['file']} ({r['format']}{opset}): {r['input']['dtype']} (N, H, W, 3) -> "
                  f"{r['output']['dtype']} (N, H, W) {r['output']['name']}", highlight=False, soft_wrap=True)
    console.print(f"[dim]inside: {inside}; {r['loss']} on {r['dataset']}, checkpoint "
                  f"{r['checkpoint']['which']} (epoch {r['checkpoint']['epoch']}); sidecar {r['sidecar']}[/]",
                  highlight=False, soft_wrap=True)


def study_report(result) -> None:
    """``imbaseg study report``'s result: the Markdown table as written to table.md, what was left out
    (yellow), and the folder with its files."""
    console.print(result.table_md, markup=False, highlight=False, soft_wrap=True)
    for line in result.dropped:
        console.print(f"[yellow]left out:[/] {line}", highlight=False)
    names = ", ".join(sorted(p.name for p in result.files.values()))
    console.print(f"wrote {result.out_dir}: {names}", highlight=False)
