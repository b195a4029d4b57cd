"""``imbaseg download`` and ``imbaseg prepare``: thin Typer commands over imbaseg.data.

Registered by cli/main.py (``app.command("download")(download)``). Imports of the data modules happen
inside the functions, and nothing here imports torch, so ``imbaseg --help`` stays fast. The bars and
tables are drawn by ``imbaseg.cli.render``.
"""

from pathlib import Path
from typing import List, Tuple  # noqa: UP035 - Typer reads these annotations at runtime

import typer

ROOT_HELP = "Project root holding data/ (default: $IMBASEG_HOME, else the current directory)."


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
    from imbaseg.cli import render
    from imbaseg.data.download import download as run_download

    with render.byte_progress() as update:
        lines = run_download(
            dataset,
            root=root,
            sources=from_ or None,
            force=force,
            copy=copy,
            keep_archives=keep_archives,
            progress=update,
        )
    render.lines(lines)


def prepare(
    dataset: str = typer.Argument(..., help="cvc, drive, isic2018, folder, synthetic-polyp|vessel|lesion."),
    root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),  # noqa: UP007
    source: Path | None = typer.Option(  # noqa: UP007
        None, "--source", help="Read the raw layout here instead of data/raw/<dataset>/."
    ),
    images: Path | None = typer.Option(None, "--images", help="folder: the images directory."),  # noqa: UP007
    masks: Path | None = typer.Option(None, "--masks", help="folder: the masks directory."),  # noqa: UP007
    size: Tuple[int, int] | None = typer.Option(  # noqa: UP006, UP007
        None, "--size", help="Resize everything to H W (images antialiased bilinear, masks nearest)."
    ),
    max_side: int | None = typer.Option(  # noqa: UP007
        None, "--max-side", help="Shrink images whose longest side exceeds this (default 1024; 0 = never)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the prepared dataset is up to date."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Leave out bad pairs (and list them) instead of stopping."
    ),
    split_by_sequence: bool = typer.Option(
        False,
        "--split-by-sequence",
        help="cvc: no two near-duplicate frames (judged over all pairs) in different splits.",
    ),
    sequence_threshold: float | None = typer.Option(  # noqa: UP007
        None,
        "--sequence-threshold",
        help="cvc: similarity above which two frames are near-duplicates, in (0, 1] (default 0.75).",
    ),
    seed: int = typer.Option(42, "--seed", help="Seed of the random splits and of synthetic data."),
    n: int | None = typer.Option(None, "--n", help="synthetic-*: number of images."),  # noqa: UP007
    name: str | None = typer.Option(  # noqa: UP007
        None, "--name", help="Write data/prepared/<name>/ instead of the dataset's name."
    ),
    workers: int | None = typer.Option(None, "--workers", help="Threads reading images (default up to 4)."),  # noqa: UP007
    max_pixels: int | None = typer.Option(  # noqa: UP007
        None,
        "--max-pixels",
        help="Largest image read, in pixels (H x W); larger files are bad files. Default 178956970 "
        "(Pillow's decompression-bomb limit), or $IMBASEG_MAX_IMAGE_PIXELS.",
    ),
) -> None:
    """Check, split and convert a dataset into data/prepared/<dataset>/ (PNG + manifest.csv)."""
    from imbaseg.cli import render
    from imbaseg.data.prepare import imbalance_table
    from imbaseg.data.prepare import prepare as run_prepare

    options = {
        "images": images,
        "masks": masks,
        "n": n,
        "out_name": name,
        "workers": workers,
        "max_side": max_side,
        "max_pixels": max_pixels,
        "split_by_sequence": True if split_by_sequence else None,
        "sequence_threshold": sequence_threshold,
    }
    options = {k: v for k, v in options.items() if v is not None}
    with render.progress_bar("preparing") as advance:
        result = run_prepare(
            dataset,
            root=root,
            source=source,
            force=force,
            skip_bad=skip_bad,
            size=size,
            seed=seed,
            progress=lambda done, total: advance(done, total),
            **options,
        )
    render.prepare_result(result, imbalance_table(result.path))
