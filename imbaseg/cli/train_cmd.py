"""``imbaseg train``: flags and YAML -> a typed Config -> ``imbaseg.training.trainer.train``."""

from __future__ import annotations

from pathlib import Path

import typer

from imbaseg.cli.common import console


def list_losses_table() -> None:
    from rich.table import Table

    from imbaseg.losses import list_losses

    table = Table(title="imbaseg losses", show_lines=False)
    for col in ("name", "parameters (defaults)", "formula", "reference"):
        table.add_column(col, overflow="fold")
    for row in list_losses():
        params = ", ".join(f"{k}={v}" for k, v in row.get("params", {}).items()) or "-"
        table.add_row(row["name"], params, row.get("formula", ""), row.get("reference", ""))
    console.print(table)
    console.print('Compound losses: --loss "dice+bce" or --loss "boundary-gaussian(sigma=4)+0.5*dou"')


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
        None, "--resume", help="Continue the run in RUN_DIR from checkpoints/last.pt."
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
    progress: bool = typer.Option(
        None, "--progress/--no-progress", help="Live progress bars (default: on a terminal)."
    ),
    list_losses: bool = typer.Option(False, "--list-losses", help="Print the loss table and exit."),
) -> None:
    """Train a U-Net with a loss from the registry; writes runs/<dataset>/<loss>/<name>/."""
    if list_losses:
        list_losses_table()
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
    if preset is not None:
        console.print(f"[dim]settings from the preset {preset.name} ({preset})[/]")
    from imbaseg.training.trainer import train as run_training

    result = run_training(cfg, resume=resume, console=console, progress=progress)
    console.print(
        f"[bold]run folder:[/] {result.run_dir}  ({result.stopped}; best {cfg.train.monitor}="
        f"{result.best_value if result.best_value is None else round(result.best_value, 4)} "
        f"at epoch {result.best_epoch})"
    )
    if result.stopped == "interrupted":
        raise typer.Exit(130)
