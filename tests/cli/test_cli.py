"""The Typer app: help, version, fast start-up and the one-line user errors (exit code 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from imbaseg import __version__
from imbaseg.cli.main import app

runner = CliRunner()
COMMANDS = ["download", "prepare", "train", "evaluate", "predict", "export", "visualize-weights", "compare"]


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert "not available yet" not in result.output, f"{command} has not landed"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"imbaseg {__version__}"


def test_help_does_not_import_torch():
    code = "import sys; from imbaseg.cli.main import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "imbaseg", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def _one_red_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["train", "--loss", "dcie"], "Did you mean 'dice'?"),
        (["train", "--set", "trian.epochs=2"], "Did you mean 'train'?"),
        (["train", "--set", "train.epochs=two"], "'train.epochs' must be an integer"),
        (["train", "--set", "train.epochs"], "key.sub=value"),
        (["train", "--config", "missing.yaml"], "config file not found: missing.yaml"),
        (["train", "--dataset", "synthetic-polip"], "Did you mean 'synthetic-polyp'?"),
        (["train", "--model", "unte"], "Did you mean 'unet'?"),
        (["train", "--loss-param", "sigma"], "key=value"),
        (["train", "--resume", "no/such/run"], "run folder not found: no/such/run"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(args, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _one_red_line(runner.invoke(app, args))
    assert line.startswith("error:") and expected in line


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["--debug", "train", "--loss", "dcie"])
    assert result.exit_code != 0 and result.exception is not None
    assert "dcie" in str(result.exception)


def test_list_losses_prints_the_table():
    result = runner.invoke(app, ["train", "--list-losses"])
    assert result.exit_code == 0, result.output
    for name in ("bce", "dynamit-batch", "boundary-gaussian", "boundary-dou", "dice", "lovasz"):
        assert name in result.output


def test_console_script_exit_code(tmp_path):
    exe = sys.executable.replace("python", "imbaseg") if sys.executable.endswith("python") else None
    cmd = [exe] if exe else [sys.executable, "-m", "imbaseg"]
    out = subprocess.run(cmd + ["train", "--loss", "dcie"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert "Did you mean 'dice'?" in out.stderr and "Traceback" not in out.stderr


def test_training_display_without_a_terminal_prints_one_line_per_epoch(capsys):
    from imbaseg.cli.render import TrainingDisplay

    row = {"epoch": 1, "lr": 0.1, "train_loss": 0.5, "val_loss": 0.4, "val_dice": 0.3, "seconds": 1.25,
           "images_per_s": 9.5, "best": True}
    with TrainingDisplay(bars=False) as display:
        display.on_start("runs/x", 2, 0, 4)
        display.on_batch(1, 1, 4, None, 8.0)
        display.on_epoch_end(row)
        display.on_message("early stopping: no improvement", "info")
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "epoch   1/2  lr 1.00e-01  train_loss 0.5000  val_loss 0.4000  val_dice 0.3000  9.5 img/s  1.2s"
        "  *best*",
        "early stopping: no improvement",
    ]


def test_training_display_with_bars_draws_them(capsys):
    from imbaseg.cli.render import TrainingDisplay

    row = {"epoch": 2, "lr": 0.1, "train_loss": 0.5, "val_loss": 0.4, "val_dice": 0.3, "seconds": 1.0,
           "images_per_s": 9.5, "best": False}
    with TrainingDisplay(bars=True) as display:
        display.on_start("runs/x", 2, 1, 4)  # resumed after one epoch
        for done in range(1, 5):
            display.on_batch(2, done, 4, 0.5, 8.0)
        display.on_epoch_end(row)
        assert display._prog.tasks[0].completed == 2 and display._prog.tasks[1].completed == 4
    assert "epoch   2/2" in capsys.readouterr().out


def test_print_config_shows_the_preset_and_trains_nothing(tmp_path, monkeypatch):
    import yaml

    from imbaseg.config import configs_dir, from_dict, load_config

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--dataset", "cvc", "--epochs", "3", "--print-config"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"# settings from the preset {configs_dir() / 'cvc.yaml'}")
    cfg = from_dict(yaml.safe_load(result.output))
    expected = load_config(configs_dir() / "cvc.yaml", [("train.epochs", 3)])
    assert cfg == expected and cfg.loss.params == {"sigma": 4}
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_a_missing_preset_is_an_error_not_the_defaults(tmp_path, monkeypatch):
    import imbaseg.config as config

    (tmp_path / "cvc.yaml").write_text("seed: 1\n")  # the folder exists, drive.yaml does not
    monkeypatch.setattr(config, "configs_dir", lambda: tmp_path)
    line = _one_red_line(runner.invoke(app, ["train", "--dataset", "drive", "--print-config"]))
    assert "the preset drive.yaml for dataset 'drive' is missing" in line and "--config" in line
