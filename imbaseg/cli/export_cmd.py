"""``imbaseg export``: flags -> ``imbaseg.evaluation.export.export_run`` -> what was written.

No torch import at module level: ``imbaseg --help`` must answer at once.
"""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Run folder of imbaseg train."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Model file (default RUN_DIR/export/<checkpoint>.onnx or .pt); the "
        "sidecar JSON is that name plus .json."
    ),
    opset: int = typer.Option(None, "--opset", help="ONNX opset, 11 to 20 (default 17)."),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Output float32 probabilities instead of the 0/255 mask."
    ),
    temperature: str = typer.Option(
        None, "--temperature", help="Temperature inside the graph: auto (the one evaluate --calibrate "
        "fitted for this checkpoint) or a number > 0; scales the probabilities and moves the threshold."
    ),
    threshold: float = typer.Option(
        None, "--threshold", help="Threshold inside the graph (default: the run's train.threshold)."
    ),
    dtype: str = typer.Option("uint8", "--dtype", help="Input dtype: uint8 (images as read) or float32."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing model file and sidecar."),
) -> None:
    """Export a trained run as one ONNX or TorchScript graph with the preprocessing inside.

    The graph takes an (N, H, W, 3) image batch of any size and returns the (N, H, W) 0/255 masks at
    the input size (or probabilities): the run's normalisation, resize, padding, the network, the
    resize back and the threshold are inside. imbaseg predict accepts the file in place of a run folder.
    """
    from imbaseg.cli import render
    from imbaseg.evaluation.export import export_run

    result = export_run(run_dir, format, checkpoint, out, opset, probabilities, temperature, dtype,
                        threshold, force)
    render.export_result(result)
