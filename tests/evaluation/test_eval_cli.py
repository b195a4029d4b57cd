"""The evaluate and predict commands through Typer's CliRunner: exit codes, output, files, one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from imbaseg.cli.common import user_errors
from imbaseg.cli.eval_cmds import evaluate, predict

app = typer.Typer()
app.command("evaluate")(user_errors(evaluate))
app.command("predict")(user_errors(predict))
runner = CliRunner()


def one_red_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


def test_evaluate_one_run(run_copy):
    r = runner.invoke(
        app, ["evaluate", str(run_copy), "--device", "cpu", "--tta", "--hd-convention", "union"]
    )
    assert r.exit_code == 0, r.output
    assert "dice" in r.output and "95% CI" in r.output and "auc_roc" in r.output
    summary = json.loads((run_copy / "eval" / "test" / "summary.json").read_text())
    assert summary["tta"] is True and summary["hd_convention"] == "union"


def test_evaluate_auto_threshold_on_val_split(run_copy):
    r = runner.invoke(
        app,
        [
            "evaluate",
            str(run_copy),
            "--split",
            "val",
            "--threshold",
            "auto",
            "--device",
            "cpu",
            "--checkpoint",
            "last",
            "--save-probabilities",
        ],
    )
    assert r.exit_code == 0, r.output
    out = run_copy / "eval" / "val"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold_mode"] == "auto" and summary["checkpoint"]["which"] == "last"
    assert "optimistic" in summary["threshold_search"]["note"]  # tuned on the split it reports
    assert len(list((out / "probabilities").glob("*.npy"))) == 3


def test_evaluate_several_runs_writes_comparison(run_copy, tmp_path):
    other = tmp_path / "second"
    shutil.copytree(run_copy, other)
    out = tmp_path / "cmp"
    r = runner.invoke(app, ["evaluate", str(run_copy), str(other), "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "comparison" in r.output
    assert (out / "comparison.csv").is_file() and (out / "comparison.md").is_file()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--split", "validation"], "Available splits: train, val, test"),
        (["--threshold", "maybe"], "bad --threshold"),
        (["--checkpoint", "final"], "best or last"),
        (["--data-root", "/nonexistent/place"], "holds no data/prepared/tiny-fov"),
    ],
)
def test_evaluate_user_errors(run_copy, args, expected):
    line = one_red_line(runner.invoke(app, ["evaluate", str(run_copy), "--device", "cpu", *args]))
    assert expected in line


def test_evaluate_run_without_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    line = one_red_line(runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--device", "cpu"]))
    assert "has no checkpoints/best.pt" in line


def test_predict_command(tiny_project, tmp_path):
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (33, 47, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "pred"
    r = runner.invoke(
        app,
        [
            "predict",
            str(tiny_project["run"]),
            str(img),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--threshold",
            "0.4",
            "--tta",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "photo.png" in r.output and "wrote 2 files" in r.output
    assert np.asarray(Image.open(out / "photo_mask.png")).shape == (33, 47)
    assert np.asarray(Image.open(out / "photo_overlay.png")).shape == (33, 47, 3)
    line = one_red_line(
        runner.invoke(
            app, ["predict", str(tiny_project["run"]), str(img), "--out", str(out), "--device", "cpu"]
        )
    )
    assert "--force" in line


def test_predict_missing_input(tiny_project, tmp_path):
    line = one_red_line(
        runner.invoke(
            app,
            ["predict", str(tiny_project["run"]), str(tmp_path / "gone.png"), "--out", str(tmp_path / "o")],
        )
    )
    assert "gone.png" in line and "does not exist" in line
