"""``imbaseg download`` and ``imbaseg prepare``: thin Typer commands over imbaseg.data.

Registered by cli/main.py (``app.command("download")(download)``). Imports of the data modules happen
inside the functions, and nothing here imports torch, so ``imbaseg --help`` stays fast.
"""

from pathlib import Path
from typing import List, Tuple  # noqa: UP035 - Typer reads these annotations at runtime

import typer

ROOT_HELP = "Project root holding data/ (default: $IMBASEG_HOME, else the current directory)."


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _byte_progress(console):
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
    tasks = {}

    def update(label: str, done: int, total):
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done, total=total)

    return progress, update


def download(
    dataset: str = typer.Argument(
        ..., help="cvc, drive or isic2018 (alias isic); synthetic-* need no download."
    ),
    from_: List[Path] | None = typer.Option(  # noqa: UP006, UP007
        None, "--from", help="An archive (zip, tar, rar) or folder you already have; repeat for several."
    ),
    root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),  # noqa: UP007
    force: bool = typer.Option(
        False, "--force", help="Replace raw data imported earlier from another source."
    ),
    copy: bool = typer.Option(False, "--copy", help="Copy a --from folder instead of linking to it."),
    keep_archives: bool = typer.Option(
        False, "--keep-archives", help="Keep downloaded ISIC zips after extraction."
    ),
) -> None:
    """Fetch ISIC 2018 (resumable), or import CVC-ClinicDB / DRIVE from an archive or folder (--from)."""
    from imbaseg.data.download import download as run_download

    console = _console()
    progress, update = _byte_progress(console)
    with progress:
        lines = run_download(
            dataset,
            root=root,
            sources=from_ or None,
            force=force,
            copy=copy,
            keep_archives=keep_archives,
            progress=update,
        )
    for line in lines:
        console.print(line)


def prepare(
    dataset: str = typer.Argument(..., help="cvc, drive, isic2018, folder, synthetic-polyp|vessel|lesion."),
    root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),  # noqa: UP007
    source: Path | None = typer.Option(  # noqa: UP007
        None, "--source", help="Read the raw layout here instead of data/raw/<dataset>/."
    ),
    images: Path | None = typer.Option(None, "--images", help="folder: the images directory."),  # noqa: UP007
    masks: Path | None = typer.Option(None, "--masks", help="folder: the masks directory."),  # noqa: UP007
    size: Tuple[int, int] | None = typer.Option(  # noqa: UP006, UP007
        None, "--size", help="Resize everything to H W (masks nearest, images area/linear)."
    ),
    max_side: int | None = typer.Option(  # noqa: UP007
        None, "--max-side", help="Shrink images whose longest side exceeds this (default 1024; 0 = never)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the prepared dataset is up to date."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Leave out bad pairs (and list them) instead of stopping."
    ),
    split_by_sequence: bool = typer.Option(
        False, "--split-by-sequence", help="cvc: keep runs of near-identical consecutive frames in one split."
    ),
    seed: int = typer.Option(42, "--seed", help="Seed of the random splits and of synthetic data."),
    n: int | None = typer.Option(None, "--n", help="synthetic-*: number of images."),  # noqa: UP007
    name: str | None = typer.Option(  # noqa: UP007
        None, "--name", help="Write data/prepared/<name>/ instead of the dataset's name."
    ),
    workers: int | None = typer.Option(None, "--workers", help="Threads reading images (default up to 4)."),  # noqa: UP007
) -> None:
    """Check, split and convert a dataset into data/prepared/<dataset>/ (PNG + manifest.csv)."""
    from imbaseg.data.prepare import imbalance_table
    from imbaseg.data.prepare import prepare as run_prepare

    options = {
        "images": images,
        "masks": masks,
        "n": n,
        "out_name": name,
        "workers": workers,
        "max_side": max_side,
        "split_by_sequence": True if split_by_sequence else None,
    }
    options = {k: v for k, v in options.items() if v is not None}
    console = _console()
    result = _run_with_bar(
        console,
        run_prepare,
        dataset,
        root=root,
        source=source,
        force=force,
        skip_bad=skip_bad,
        size=size,
        seed=seed,
        **options,
    )
    _print_result(console, result, imbalance_table(result.path))


def _run_with_bar(console, fn, *args, **kwargs):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("preparing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("prepare", total=None)
        return fn(*args, progress=lambda done, total: bar.update(task, completed=done, total=total), **kwargs)


def _print_result(console, result, table_rows) -> None:
    from rich.table import Table

    counts = " / ".join(f"{result.counts.get(s, 0)} {s}" for s in ("train", "val", "test"))
    if result.up_to_date:
        console.print(f"{result.path} is up to date ({counts}); nothing to do (--force rebuilds it).")
    else:
        console.print(f"[green]Prepared[/green] {result.path} ({counts}).")
    for note in result.notes:
        if note != "already up to date":
            console.print(f"[yellow]note:[/yellow] {note}")
    if result.skipped:
        console.print(f"[yellow]Skipped {len(result.skipped)} bad file(s):[/yellow]")
        for f, reason in result.skipped:
            console.print(f"  {f}: {reason}")
    if result.empty:
        shown = ", ".join(result.empty[:10]) + (" ..." if len(result.empty) > 10 else "")
        console.print(f"[yellow]{len(result.empty)} empty mask(s) (kept):[/yellow] {shown}")
    table = Table(title="Class imbalance (foreground % of the image)")
    for col in ("split", "images", "mean %", "min %", "max %", "empty"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for r in table_rows:
        table.add_row(
            r["split"],
            str(r["images"]),
            f"{r['fg_mean']:.2f}",
            f"{r['fg_min']:.2f}",
            f"{r['fg_max']:.2f}",
            str(r["empty"]),
        )
    console.print(table)
