"""``imbaseg visualize-weights`` and ``imbaseg compare``: figures from prepared data and evaluated runs.

No torch or matplotlib import at module level: ``imbaseg --help`` stays instant.

Options that take several values accept both ``--sigma 1 3 6 10`` and ``--sigma 1 --sigma 3``.
Click has no variadic options, so ``VariadicCommand`` rewrites the first form into the second before
parsing; register the commands with ``app.command(name, **fn.typer_command_kwargs)`` to get it.
"""

from __future__ import annotations

from pathlib import Path

import typer
from typer.core import TyperCommand

from imbaseg.cli.common import console


def _is_option(token: str) -> bool:
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)  # "-1" is a (bad) value, not an option
        return False
    except ValueError:
        return True


def expand_variadic(args: list[str], names: set[str]) -> list[str]:
    """``[--sigma, 1, 3]`` -> ``[--sigma, 1, --sigma, 3]`` for the options in ``names``; stops at ``--``."""
    out, i = [], 0
    while i < len(args):
        token = args[i]
        if token == "--":
            return out + args[i:]
        out.append(token)
        i += 1
        if token in names:
            first = True
            while i < len(args) and (first or not _is_option(args[i])) and args[i] != "--":
                if not first:
                    out.append(token)
                out.append(args[i])
                first, i = False, i + 1
    return out


class VariadicCommand(TyperCommand):
    """A Typer command whose list options (``multiple=True``) also take space-separated values."""

    def parse_args(self, ctx, args):
        names = {opt for p in self.params if getattr(p, "multiple", False) for opt in p.opts}
        return super().parse_args(ctx, expand_variadic(list(args), names))


def visualize_weights(
    sigma: list[float] = typer.Option(
        [1.0, 3.0, 6.0, 10.0], "--sigma", "-s", help="Gaussian sigmas in pixels, e.g. --sigma 1 3 6 10."
    ),
    dataset: list[str] = typer.Option(
        [],
        "--dataset",
        "-d",
        help="Datasets, e.g. --dataset cvc isic2018 drive "
        "(default: the prepared ones of these three, else the synthetic ones).",
    ),
    id_: list[str] = typer.Option(
        [], "--id", help="Image id, one per dataset (default: the median foreground fraction)."
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="PNG path; a PDF is written next to it (default: Figures/boundary_weights.png).",
    ),
    root: Path = typer.Option(
        None, help="Project root holding data/ and Figures/ (default: $IMBASEG_HOME or .)."
    ),
) -> None:
    """Draw the Boundary Gaussian weight map for several sigmas on one sample per dataset."""
    from imbaseg.viz.weights import visualize_weights as draw

    result = draw(sigma, dataset or None, id_ or None, out, root)
    shown = ", ".join(f"{d} #{i}" for d, i in result["samples"])
    console.print(f"[bold]wrote[/] {result['png']} and {result['pdf'].name}  ({shown})")


def compare(
    run_dirs: list[Path] = typer.Argument(
        ...,
        help="Run folders (runs/<dataset>/<loss>/<name>), several datasets "
        "allowed; rows are grouped by dataset in this order.",
    ),
    split: str = typer.Option("test", help="Evaluated split to show."),
    n: int = typer.Option(1, "--n", "-n", help="Images per dataset."),
    select: str = typer.Option("gap", help="gap (runs differ most in Dice), best, worst, median, or ids."),
    ids: list[str] = typer.Option([], "--ids", help="Image ids to show (implies --select ids)."),
    labels: list[str] = typer.Option(
        [], "--labels", help="Column labels: one per run, or one per column (default: readable loss names)."
    ),
    metric: list[str] = typer.Option(
        [],
        "--metric",
        help="Metrics of the comparison tables, e.g. --metric lesion_f1 ece (default: all); the first one "
        "is tested in the terminal table.",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="PNG path; PDF, _comparison.csv and _comparison.md "
        "go next to it (default: Figures/<A>_vs_<B>.png).",
    ),
    root: Path = typer.Option(
        None, help="Project root holding data/ and Figures/ (default: $IMBASEG_HOME or .)."
    ),
) -> None:
    """Qualitative grid of evaluated runs (TP green, FP red, FN magenta) and their comparison table.

    The runs must have been evaluated on --split with imbaseg evaluate (it saves the predictions).
    """
    from imbaseg.cli import render
    from imbaseg.viz.compare import compare as run_compare

    result = run_compare(
        run_dirs,
        split=split,
        n=n,
        select=select,
        ids=ids or None,
        labels=labels or None,
        out=out,
        root=root,
        metrics=metric or None,
    )
    render.comparison_tables(result["comparison"], **render.comparison_columns(metric))
    rows = ", ".join(f"{d} #{i}" for d, i in result["rows"])
    console.print(f"[bold]wrote[/] {result['png']} and {result['pdf'].name}  ({rows})")
    console.print(f"[bold]tables[/] {result['csv']} and {result['md'].name}")


# how the app should register them (the variadic options need the command class)
visualize_weights.typer_command_kwargs = {"cls": VariadicCommand}
compare.typer_command_kwargs = {"cls": VariadicCommand}
