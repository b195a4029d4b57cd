"""The ``imbaseg`` command: a thin Typer app over the library (no torch import at module level)."""

from __future__ import annotations

import importlib

import typer

from imbaseg import __version__
from imbaseg.cli.common import STATE, not_available, user_errors

app = typer.Typer(
    name="imbaseg",
    help="Class-imbalanced binary medical image segmentation: download, prepare, train, evaluate, figures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imbaseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for user errors."),
) -> None:
    """imbaseg: the loss study for imbalanced medical segmentation, from one CLI."""
    STATE["debug"] = debug


# (command name, module, function); a module that has not landed yet registers a plain "not available" command
COMMANDS = [
    ("download", "imbaseg.cli.data_cmds", "download"),
    ("prepare", "imbaseg.cli.data_cmds", "prepare"),
    ("train", "imbaseg.cli.train_cmd", "train"),
    ("evaluate", "imbaseg.cli.eval_cmds", "evaluate"),
    ("predict", "imbaseg.cli.eval_cmds", "predict"),
    ("export", "imbaseg.cli.export_cmd", "export"),
    ("visualize-weights", "imbaseg.cli.viz_cmds", "visualize_weights"),
    ("compare", "imbaseg.cli.viz_cmds", "compare"),
]


def _placeholder(command: str):
    def placeholder(args: list[str] = typer.Argument(None, hidden=True)) -> None:
        raise not_available(command, "see the open issues")

    placeholder.__doc__ = f"[not available yet] {command}"
    return placeholder


def _register() -> None:
    for command, module, attr in COMMANDS:
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            app.command(command, help=f"[not available yet] {command}")(user_errors(_placeholder(command)))
            continue
        app.command(command, **getattr(fn, "typer_command_kwargs", {}))(user_errors(fn))


_register()


def _register_study() -> None:
    try:
        from imbaseg.cli.study_cmds import study_app
    except ImportError:
        app.command("study", help="[not available yet] study")(user_errors(_placeholder("study")))
        return
    app.add_typer(study_app, name="study")


_register_study()


def run() -> None:
    app()
