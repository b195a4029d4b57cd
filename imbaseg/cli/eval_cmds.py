"""``imbaseg evaluate`` and ``imbaseg predict``: flags -> one library call -> rich output.

No torch import at module level: ``imbaseg --help`` must answer at once.
"""

from __future__ import annotations

from pathlib import Path

import typer

from imbaseg.cli.common import console


def evaluate(
    run_dirs: list[Path] = typer.Argument(
        ...,
        metavar="RUN_DIR...",
        help="Run folder(s) of imbaseg train; several are compared (mean and 95% CI, paired Wilcoxon "
        "tests against the first run of each dataset).",
    ),
    split: str = typer.Option("test", "--split", help="Split to evaluate: test, val or train."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
    threshold: str = typer.Option(
        "0.5",
        "--threshold",
        help="Probability threshold, or auto: the Dice-optimal "
        "value on the val split (grid 0.05..0.95, mean per-image Dice).",
    ),
    tta: bool = typer.Option(
        False, "--tta", help="Average the probabilities over horizontal and vertical flips."
    ),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write probabilities/<id>.npy (float16, native size)."
    ),
    hd_convention: str = typer.Option(
        "max",
        "--hd-convention",
        help="HD95: max of the two directed 95th percentiles (MONAI) or union of both sets (medpy).",
    ),
    nsd_tau: float = typer.Option(2.0, "--nsd-tau", help="Normalized surface Dice tolerance in pixels."),
    size: str = typer.Option(
        "train",
        "--size",
        help="train: predict at the training scale and resize back; "
        "native: native pixels in sliding windows of the training size.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision on CUDA (faster; fp32 by default)."),
    data_root: Path = typer.Option(
        None,
        "--data-root",
        help="Where the prepared dataset is now, if it moved (the folder holding data/prepared/<dataset>).",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Folder for comparison.{csv,md} with several runs (default runs/comparison-<timestamp>).",
    ),
    lesion_overlap: float = typer.Option(
        0.0,
        "--lesion-overlap",
        help="Share of a target component's pixels one predicted component must cover for the lesion to "
        "count as detected: 0 = any overlapping pixel (default), 0.5 = the stricter rule.",
    ),
    min_component: int = typer.Option(
        0,
        "--min-component",
        help="Ignore connected components smaller than this many pixels, in the target and the "
        "prediction, for the lesion-wise metrics (default 0: count every component).",
    ),
    size_bins: str = typer.Option(
        None,
        "--size-bins",
        help="Edges of the object-size bins of the target's foreground fraction, e.g. 0.01,0.05 "
        "(default: tertiles of the split).",
    ),
    calibrate: bool = typer.Option(
        False,
        "--calibrate",
        help="Fit one temperature on the val split (eval/temperature.json) and report the calibration "
        "(ECE, Brier) before and after it.",
    ),
    metric: list[str] = typer.Option(
        [],
        "--metric",
        help="With several runs: the metrics to compare (repeatable, e.g. --metric lesion_f1 --metric ece; "
        "default: all); the first one is tested in the terminal table.",
    ),
) -> None:
    """Metrics of trained runs, in RUN_DIR/eval/<split>/: per_image.csv, summary.json/.md, predictions/.

    Beside the overlap, surface and clDice metrics: lesion-wise detection, results by object size,
    calibration (ECE, Brier, reliability.png).

    Several RUN_DIRs are also compared: comparison.csv and comparison.md (mean and 95% CI of every
    metric per run; paired Wilcoxon, Holm-adjusted, median difference and effect size against the first
    run of each dataset; the same per object-size bin).
    """
    from imbaseg.cli import render
    from imbaseg.evaluation.evaluate import evaluate_runs

    if out is not None and len(run_dirs) == 1:
        console.print("[dim]--out is used only when several runs are compared[/]")
    if metric and len(run_dirs) == 1:
        console.print("[dim]--metric is used only when several runs are compared[/]")
    with render.stage_progress() as progress:
        result = evaluate_runs(
            run_dirs,
            out=out,
            progress=progress,
            split=split,
            checkpoint=checkpoint,
            threshold=threshold,
            tta=tta,
            save_probabilities=save_probabilities,
            hd_convention=hd_convention,
            nsd_tau=nsd_tau,
            device=device,
            amp=amp,
            data_root=data_root,
            size=size,
            lesion_overlap=lesion_overlap,
            min_component=min_component,
            size_bins=size_bins,
            calibrate=calibrate,
            metrics=metric or None,
        )
    for summary in result["runs"]:
        render.evaluation_summary(summary)
        render.tracking_note(summary.get("tracking"), summary["split"])
    if result["comparison"] is not None:
        render.comparison_tables(result["comparison"], **render.comparison_columns(metric))
        csv_path, md_path = result["files"]
        console.print(f"wrote the comparison {csv_path} and {md_path.name}", highlight=False)


def predict(
    run_dir: Path = typer.Argument(
        ...,
        metavar="RUN_DIR|MODEL",
        help="Run folder of imbaseg train, or a model file of imbaseg export (.onnx, .pt).",
    ),
    inputs: list[Path] = typer.Argument(
        ..., metavar="INPUT...", help="Image files (PNG, JPG, TIFF) or folders."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <stem>_mask.png and <stem>_overlay.png."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
    threshold: float = typer.Option(
        None, "--threshold", help="Probability threshold (default: the run's train.threshold)."
    ),
    temperature: str = typer.Option(
        None,
        "--temperature",
        help="Scale the probabilities by a temperature before thresholding: auto (the one evaluate "
        "--calibrate fitted) or a number > 0. Changes masks only at thresholds other than 0.5.",
    ),
    tta: bool = typer.Option(False, "--tta", help="Average the probabilities over flips."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision on CUDA (faster; fp32 by default)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing masks and overlays in --out."),
    max_pixels: int = typer.Option(
        None,
        "--max-pixels",
        help="Largest input read, in pixels (H x W). Default 178956970 (Pillow's decompression-bomb "
        "limit), or $IMBASEG_MAX_IMAGE_PIXELS.",
    ),
    size: str = typer.Option(
        "train", "--size", help="train: the training scale, resized back; native: native pixels in windows."
    ),
) -> None:
    """Segment new images (no masks needed): 0/255 masks at the input size, and overlays."""
    from imbaseg.cli import render
    from imbaseg.evaluation.predict import predict as run_predict

    with render.progress_bar("predicting", total=None) as advance:
        results = run_predict(
            run_dir,
            inputs,
            out,
            checkpoint=checkpoint,
            threshold=threshold,
            tta=tta,
            device=device,
            amp=amp,
            size=size,
            force=force,
            progress=advance,
            temperature=temperature,
            max_pixels=max_pixels,
        )
    render.prediction_results(results)
    console.print(f"wrote {2 * len(results)} files to {out}", highlight=False)
