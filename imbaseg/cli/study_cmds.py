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
