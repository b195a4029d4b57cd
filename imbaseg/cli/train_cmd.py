"""``imbaseg train``: flags and YAML -> a typed Config (``imbaseg.config.resolve_config``) ->
``imbaseg.training.trainer.train``, drawn on the terminal by ``imbaseg.cli.render.TrainingDisplay``."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from imbaseg.cli import render


def train(
    dataset: str = typer.Option(
        None,
        "--dataset",
        "-d",
        help="Prepared dataset: cvc, drive, isic2018, folder, "
        "synthetic-polyp|vessel|lesion. Without --config, starts from the study's preset.",
    ),
    loss: str = typer.Option(
        None, "--loss", "-l", help='Loss name or compound, e.g. "boundary-dou" or "dice+bce".'
    ),
    loss_param: list[str] = typer.Option(
        [], "--loss-param", "-p", help="Loss parameter key=value (repeatable)."
    ),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config, e.g. configs/isic.yaml."),
    epochs: int = typer.Option(None, help="Maximum epochs (train.epochs)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Batch size (train.batch_size)."),
    lr: float = typer.Option(None, help="Initial learning rate (optim.lr)."),
    model: str = typer.Option(None, help="unet or timm-unet (model.name)."),
    encoder: str = typer.Option(
        None, help="timm encoder for timm-unet, e.g. resnet34 (implies --model timm-unet)."
    ),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:N or mps (train.device)."),
    seed: int = typer.Option(None, help="Random seed (seed)."),
    name: str = typer.Option(None, help="Run folder name (default: a timestamp)."),
    root: Path = typer.Option(
        None, help="Project root holding data/ and runs/ (default: $IMBASEG_HOME or .)."
    ),
    resume: Path = typer.Option(
        None,
        "--resume",
        help="Continue the run in RUN_DIR from checkpoints/last.pt (flags may change keys; see README).",
    ),
    deterministic: bool = typer.Option(
        None,
        "--deterministic/--no-deterministic",
        help="Deterministic kernels and loaders (bit-exact resume).",
    ),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    set_: list[str] = typer.Option(
        [], "--set", help="Any config key: --set train.early_stopping=5 (repeatable)."
    ),
    tracker: list[str] = typer.Option(
        [], "--tracker", help="Also log to tensorboard (RUN_DIR/tensorboard/) or mlflow (mlflow.db in the "
        "project root, or $MLFLOW_TRACKING_URI); repeatable; adds to train.trackers."
    ),
    progress: bool = typer.Option(
        None, "--progress/--no-progress", help="Live progress bars (default: on a terminal)."
    ),
    list_losses: bool = typer.Option(False, "--list-losses", help="Print the loss table and exit."),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved config (YAML) and exit without training."
    ),
) -> None:
    """Train a U-Net with a loss from the registry; writes runs/<dataset>/<loss>/<name>/."""
    if list_losses:
        from imbaseg.losses import list_losses as loss_rows

        render.loss_table(loss_rows())
        return
    flags = dict(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        model=model,
        encoder=encoder,
        device=device,
        seed=seed,
        name=name,
        root=str(root) if root else None,
        deterministic=deterministic,
        compile=compile,
    )
    from imbaseg.config import resolve_config

    base = None
    if resume is not None:
        from imbaseg.training.run_dir import RunDir

        base = RunDir(resume).config().to_dict()
    cfg, preset = resolve_config(config, dataset, loss, loss_param, set_, flags, base=base)
    if tracker:
        from imbaseg.config import add_trackers

        cfg = add_trackers(cfg, tracker)
    if print_config:
        from imbaseg.config import dump_config

        header = f"# settings from the preset {preset}\n" if preset is not None else ""
        typer.echo(header + dump_config(cfg), nl=False)
        return
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 talks
    if preset is not None and main_rank:
        render.console.print(f"[dim]settings from the preset {preset.name} ({preset})[/]", soft_wrap=True)
    from imbaseg.training.trainer import TrainingAborted, exit_code
    from imbaseg.training.trainer import train as run_training

    try:
        with render.TrainingDisplay(progress) as display:
            result = run_training(cfg, resume=resume, callbacks=display)
    except TrainingAborted as exc:  # a second stop signal; the trainer has said what is saved
        raise typer.Exit(exit_code(exc.signum)) from None
    if main_rank:
        render.training_result(result, cfg.train.monitor)
    if result.stopped == "interrupted":  # 128 + the signal: 130 Ctrl-C, 143 SIGTERM, 138/140 SIGUSR1/2
        raise typer.Exit(exit_code(result.signal))
