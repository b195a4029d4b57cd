"""``imbaseg study``: plan, run, follow and report a dataset x loss x seed grid (a Typer sub-app).

``plan``/``run``/``status`` live with the executors (``imbaseg.study.runner``); ``report`` calls
``imbaseg.study.report``. Each half can land alone: a missing library module makes its command
say so plainly. No torch import at module level.
"""

from __future__ import annotations

from pathlib import Path

import typer

from imbaseg.cli.common import user_errors

study_app = typer.Typer(
    name="study",
    help="The loss study as one command: plan, run (locally or on Slurm), follow and report a grid of "
    "datasets x losses x seeds.",
    no_args_is_help=True,
    add_completion=False,
)

STUDY_FILE = typer.Argument(..., metavar="STUDY_FILE", help="The study YAML, e.g. configs/study-demo.yaml.")
ONLY = typer.Option(
    [], "--only", help="Only the cells with dataset=..., loss=... or seed=... (repeatable; a key given "
    "twice: either value)."
)
ROOT = typer.Option(None, "--root", help="Project root holding data/, runs/ and studies/ (default: "
                    "$IMBASEG_HOME or .).")


# ----------------------------------------------------------------------------- plan, run, status


def _load(study_file: Path, only: list[str], root: Path | None):
    from imbaseg.study.spec import cells, load_study, select

    study = load_study(study_file)
    return study, select(cells(study, root), only)


@study_app.command("plan")
@user_errors
def plan(study_file: Path = STUDY_FILE, only: list[str] = ONLY, root: Path = ROOT) -> None:
    """The table of cells (dataset, loss, seed, state and why, run folder); writes nothing."""
    from imbaseg.cli import render
    from imbaseg.study.runner import plan as plan_cells

    study, selected = _load(study_file, only, root)
    render.study_plan(study, plan_cells(study, selected))


@study_app.command("status")
@user_errors
def status(study_file: Path = STUDY_FILE, only: list[str] = ONLY, root: Path = ROOT) -> None:
    """The plan's table with the training seconds, the Dice of done cells and the errors of failed ones."""
    from imbaseg.cli import render
    from imbaseg.study.runner import plan as plan_cells

    study, selected = _load(study_file, only, root)
    render.study_status(study, plan_cells(study, selected, details=True))


def _slurm_options(**given):
    from imbaseg.study.slurm import SlurmOptions

    fields = {k: v for k, v in given.items() if v is not None}
    if "setup" in fields:
        fields["setup"] = tuple(fields["setup"])
    return SlurmOptions(**fields)


def _executor(kind: str, study, jobs: int, root, retry_failed: bool, slurm: dict):
    from imbaseg.errors import UserError, suggestion
    from imbaseg.study.runner import LocalExecutor, study_files

    files = study_files(study, root)
    if kind == "local":
        given = [k for k, v in slurm.items() if v not in (None, [], ())]
        if given:
            flag = "--slurm-" + given[0].replace("_", "-")
            raise UserError(f"{flag} needs --executor slurm (the local executor runs cells on this machine)")
        return LocalExecutor(study, files, jobs, root, retry_failed)
    if kind == "slurm":
        from imbaseg.study.slurm import SlurmExecutor

        return SlurmExecutor(study, files, _slurm_options(**slurm), root, retry_failed)
    hint = suggestion(kind, ["local", "slurm"])
    raise UserError(f"unknown --executor '{kind}'.{hint} Choose local or slurm.")


@study_app.command("run")
@user_errors
def run(
    study_file: Path = STUDY_FILE,
    executor: str = typer.Option("local", "--executor", "-e", help="local (here) or slurm (submitit)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Local: cells at once (threads or GPUs are split)."),
    only: list[str] = ONLY,
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed cells again (after a fix)."),
    root: Path = ROOT,
    progress: bool = typer.Option(
        None, "--progress/--no-progress", help="A live table (default: on a terminal), else lines."
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report when all is done."),
    slurm_partition: str = typer.Option(None, "--slurm-partition", help="Partition of the cells' jobs."),
    slurm_time: str = typer.Option(
        None, "--slurm-time", help="Time limit per job (default 24:00:00); a longer cell requeues, resumes."
    ),
    slurm_gpus_per_cell: int = typer.Option(
        None, "--slurm-gpus-per-cell", help="GPUs per cell (default 0); more than 1: torchrun."
    ),
    slurm_cpus_per_cell: int = typer.Option(None, "--slurm-cpus-per-cell", help="CPUs per cell."),
    slurm_mem: str = typer.Option(None, "--slurm-mem", help="Memory per cell, e.g. 32G."),
    slurm_array_parallelism: int = typer.Option(
        None, "--slurm-array-parallelism", help="Cells running at once (default 256)."
    ),
    slurm_account: str = typer.Option(None, "--slurm-account", help="Slurm account to charge."),
    slurm_setup: list[str] = typer.Option(
        [], "--slurm-setup", help="A shell line run before each cell, e.g. 'module load cuda' (repeatable)."
    ),
    slurm_signal_delay: int = typer.Option(
        None, "--slurm-signal-delay", help="Seconds between the USR2 warning and the time limit (default 90)."
    ),
) -> None:
    """Train and evaluate every cell that is not done (partial cells resume from last.pt), then report.

    Failed cells are recorded and the others go on; the study exits 1 at the end with the list. Ctrl-C
    stops the running cells cleanly (they save last.pt); the same command continues.
    """
    from imbaseg.cli import render
    from imbaseg.study.runner import RunnerCallbacks, run_study

    study, selected = _load(study_file, only, root)
    slurm = dict(partition=slurm_partition, time=slurm_time, gpus_per_cell=slurm_gpus_per_cell,
                 cpus_per_cell=slurm_cpus_per_cell, mem=slurm_mem, array_parallelism=slurm_array_parallelism,
                 account=slurm_account, setup=slurm_setup, signal_delay_s=slurm_signal_delay)
    ex = _executor(executor, study, jobs, root, retry_failed, slurm)
    with render.StudyDisplay(progress) as display:
        callbacks = RunnerCallbacks(display.on_start, display.on_change, display.on_tick, display.on_message)
        result = run_study(study, selected, ex, retry_failed, callbacks)
    render.study_run_result(study, result)
    if result.detached:  # Slurm jobs go on: only the failures seen so far make it an error
        raise typer.Exit(1 if result.failed else 0)
    if result.stopped_by is not None:
        raise typer.Exit(128 + int(result.stopped_by))
    if not result.ok:
        raise typer.Exit(1)
    if report:
        _report_after_run(study_file, study, root)


def _report_after_run(study_file: Path, study, root) -> None:
    """The report, when every cell of the study is done."""
    from imbaseg.cli import render
    from imbaseg.study.runner import plan as plan_cells
    from imbaseg.study.spec import cells

    missing = [v for v in plan_cells(study, cells(study, root)) if v.state != "done"]
    if missing:
        render.study_note(f"report: {len(missing)} cell(s) of the study are not done yet; `imbaseg study "
                          f"report {study_file} --allow-missing` reports the done ones")
        return
    report(study_file=study_file, metric=[], allow_missing=False, boot=10_000, seed=0, root=root)


@study_app.command("run-cell", hidden=True)
@user_errors
def run_cell_command(
    study_file: Path = STUDY_FILE,
    cell: str = typer.Option(..., "--cell", help="The cell's key (its run folder's hash)."),
    root: Path = ROOT,
    retry_failed: bool = typer.Option(False, "--retry-failed"),
    parent_pid: int = typer.Option(None, "--parent-pid", help="Stop (saving last.pt) when it dies."),
) -> None:
    """Internal: run one cell in this process (what the executors start). Exit 0 done, 1 failed,
    75 running elsewhere, 128+N stopped by signal N."""
    if parent_pid is not None:
        from imbaseg.study.cell import stop_with_parent

        stop_with_parent(parent_pid)
    from imbaseg.cli import render
    from imbaseg.study.cell import CellHooks, find_cell, run_cell
    from imbaseg.study.spec import load_study

    study = load_study(study_file)
    target = find_cell(study, cell, root)
    # the first rich output happens here, not inside a signal handler: rich imports its markup tables
    # lazily, and a handler printing in the middle of that import fails with a circular-import error
    render.cell_message(f"cell {target.label} of study {study.name}: {target.run_dir}")
    with render.TrainingDisplay(False) as display:
        outcome = run_cell(study, target, retry_failed, CellHooks(render.cell_message, display))
    render.cell_outcome(target, outcome)
    raise typer.Exit(outcome.exit_code)



@study_app.command("report")
@user_errors
def report(
    study_file: Path = STUDY_FILE,
    metric: list[str] = typer.Option(
        [], "--metric", help="Metrics to report (repeatable; default: the study file's metrics)."
    ),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Drop losses whose cells are not done (the table says which)."
    ),
    boot: int = typer.Option(10_000, "--boot", help="Bootstrap replicates."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap draws."),
    root: Path = typer.Option(None, "--root", help="Project root holding runs/ and studies/."),
) -> None:
    """Write studies/<name>/: the table (CSV, Markdown, LaTeX), tests, rankings and figures.

    Mean [95% CI] by a hierarchical bootstrap over seeds and images, seed SD, paired Wilcoxon tests
    against the reference with Holm adjustment, four rankings with their bootstrap stability, and the
    consensus across datasets. Refuses while cells are not done (the list says which), unless
    --allow-missing.
    """
    from imbaseg.cli import render
    from imbaseg.study.report import write_report

    with render.stage_progress() as progress:
        result = write_report(study_file, metric or None, allow_missing, boot, seed, root, progress)
    render.study_report(result)
