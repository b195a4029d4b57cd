"""``imbaseg study report`` on the command line (exit codes, the Markdown table on the terminal, one-line
errors), on a real full disk and a read-only folder (tmpfs, root only), and end to end on two tiny trained
runs: one seed and two losses give exactly the interval and p-value of ``imbaseg evaluate`` on those runs."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess

import pytest
from conftest import BOOT
from typer.testing import CliRunner

from imbaseg.cli.main import app

runner = CliRunner()


def _report(*args):
    return runner.invoke(app, ["study", "report", *map(str, args)])


def test_cli_writes_the_report_and_shows_the_table(fake_project):
    root = fake_project["root"]
    res = _report(
        fake_project["path"],
        "--root",
        root,
        "--metric",
        "dice",
        "--metric",
        "hd95",
        "--boot",
        BOOT,
        "--seed",
        3,
    )
    assert res.exit_code == 0, res.output
    assert "| Loss | Dice ↑ | SD | Rank | HD95 (px) ↓ | SD | Rank |" in res.output
    assert "Boundary Gaussian (σ=4)" in res.output and "Dice (ref.)" in res.output
    out = root / "studies" / "fake"
    assert f"wrote {out}" in " ".join(res.output.split())
    for name in (
        "cells.csv",
        "results.csv",
        "table.csv",
        "table.md",
        "table.tex",
        "tests.csv",
        "ranking.csv",
        "ranks_blob.png",
        "ranks_blob.pdf",
        "significance.png",
        "significance.pdf",
        "distributions.png",
        "distributions.pdf",
        "study.yaml",
    ):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind
    # the library call with the same options gives the same table, byte for byte
    from imbaseg.study.report import write_report

    table = (out / "table.csv").read_bytes()
    write_report(fake_project["study"], ["dice", "hd95"], boot=BOOT, seed=3, root=root, figures=False)
    assert (out / "table.csv").read_bytes() == table


def test_cli_user_errors_are_one_red_line(fake_project, tmp_path):
    root = fake_project["root"]
    res = _report(fake_project["path"], "--root", root, "--metric", "dcie")
    assert res.exit_code == 2 and "Did you mean 'dice'" in res.output and "Traceback" not in res.output
    res = _report(fake_project["path"], "--root", root, "--boot", 0)
    assert res.exit_code == 2 and "--boot" in res.output
    res = _report(tmp_path / "missing.yaml")
    assert res.exit_code == 2 and "missing.yaml" in res.output
    res = _report(fake_project["path"], "--root", tmp_path)  # a root where no cell ran
    assert res.exit_code == 2 and "cell(s)" in res.output and "--allow-missing" in res.output
    assert not (tmp_path / "studies").exists()


def test_help():
    res = runner.invoke(app, ["study", "report", "--help"])
    assert res.exit_code == 0 and "--allow-missing" in res.output and "not available" not in res.output


# ----------------------------------------------------------------------------- full disk, read-only folder


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs at a path (root only; skipped elsewhere); unmounted afterwards."""
    mounted = []

    def mount(path, size: str):
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("a real full or read-only disk needs root (mount -t tmpfs)")
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_and_read_only_folder_are_one_line(fake_project, tmp_path, tmpfs):
    """studies/ on a 256 kB tmpfs holding a report: filled up, a new report stops with one line naming the
    disk and leaves the previous report whole (no file of it replaced, no staging folder left); remounted
    read-only, one line too (library and command line)."""
    from imbaseg.errors import UserError
    from imbaseg.study.report import write_report

    root = tmp_path / "root"
    shutil.copytree(fake_project["root"] / "runs", root / "runs")
    studies = tmpfs(root / "studies", "256k")
    write_report(fake_project["study"], ["dice"], boot=50, root=root, figures=False)
    out = studies / "fake"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    chunk, k = b"\0" * 4096, 0
    try:
        with open(studies / "filler", "wb", buffering=0) as f:
            while True:
                f.write(chunk)
                k += 1
    except OSError:
        pass
    os.truncate(studies / "filler", max(0, k * 4096 - 6000))  # room for cells.csv, not for results.csv
    with pytest.raises(UserError, match="no space left on the device"):
        write_report(fake_project["study"], ["dice"], boot=50, seed=1, root=root, figures=False)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == before
    assert [p.name for p in out.iterdir() if ".tmp" in p.name] == []
    (studies / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(studies)], check=True)
    with pytest.raises(UserError, match="read-only"):
        write_report(fake_project["study"], ["dice"], boot=50, root=root, figures=False)
    res = _report(fake_project["path"], "--root", root, "--metric", "dice", "--boot", 50)
    assert res.exit_code == 2 and "read-only" in res.output and "Traceback" not in res.output


# ----------------------------------------------------------------------------- S = 1 equals evaluate


def test_one_seed_two_losses_equal_evaluate_on_the_same_runs(tiny_root, tmp_path):
    """Two tiny trained cells (bce, dice; one seed) evaluated by `imbaseg evaluate RUN1 RUN2`: its comparison
    and the study report give the same mean, 95% CI, median difference with its CI, p, Holm p and r, to the
    last bit."""
    import torch  # noqa: F401  (the trainer)
    from report_helpers import write_study

    from imbaseg.study.report import write_report
    from imbaseg.study.spec import cells, load_study
    from imbaseg.training.run_dir import RunDir
    from imbaseg.training.trainer import Trainer

    shutil.copytree(tiny_root / "data", tmp_path / "data")
    tiny = {
        "data.size": [32, 32],
        "model.base_channels": 8,
        "train.epochs": 1,
        "train.batch_size": 8,
        "data.num_workers": 0,
        "train.device": "cpu",
        "train.early_stopping": 0,
    }
    study = load_study(
        write_study(
            tmp_path / "s.yaml", losses=("bce", "dice"), seeds=(0,), set=tiny, metrics=["dice", "hd95"]
        )
    )
    runs = []
    for c in cells(study, tmp_path):
        Trainer(c.config, run_dir=c.run_dir).fit()
        if RunDir(c.run_dir).read_status().get("state") != "finished":  # trainers before status.json
            RunDir(c.run_dir).write_status(state="finished")
        runs.append(c.run_dir)
    # evaluate both (the study's evaluation options are evaluate's defaults) and compare them
    ev = runner.invoke(app, ["evaluate", *map(str, runs), "--out", str(tmp_path / "cmp"), "--device", "cpu"])
    assert ev.exit_code == 0, ev.output
    write_report(study, root=tmp_path, figures=False)  # evaluate's 10,000 replicates and seed 0: the defaults
    with open(tmp_path / "cmp" / "comparison.csv", newline="") as f:
        cmp = {(r["metric"], r["run"].split("/")[-1]): r for r in csv.DictReader(f) if r["size_bin"] == "all"}
    with open(tmp_path / "studies" / "t" / "table.csv", newline="") as f:
        table = {r["loss"]: r for r in csv.DictReader(f)}
    with open(tmp_path / "studies" / "t" / "tests.csv", newline="") as f:
        tests = {(r["metric"], r["loss"]): r for r in csv.DictReader(f)}
    for metric in ("dice", "hd95"):
        for loss, run in zip(("bce", "dice"), runs, strict=True):
            c = cmp[(metric, run.name)]
            for key in ("mean", "ci_low", "ci_high"):
                assert float(table[loss][f"{metric}_{key}"]) == float(c[key]), (metric, loss, key)
        c, t = cmp[(metric, runs[1].name)], tests[(metric, "dice")]
        for key in ("median_diff", "diff_ci_low", "diff_ci_high", "p_value", "p_holm", "effect_r"):
            assert float(t[key]) == float(c[key]), (metric, key)
