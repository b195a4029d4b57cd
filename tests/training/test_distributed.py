"""torchrun with the gloo backend on CPU, 2 processes, on a tiny synthetic dataset."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imbaseg.training.run_dir import load_checkpoint, load_run

pytestmark = pytest.mark.slow

COMMON = [
    "--dataset",
    "synthetic-polyp",
    "--device",
    "cpu",
    "--deterministic",
    "--no-progress",
    "--set",
    "data.size=[32,32]",
    "--set",
    "model.base_channels=4",
    "--set",
    "optim.name=adamw",
    "--set",
    "optim.lr=0.003",
    "--set",
    "data.augment.enabled=false",
    "--set",
    "train.early_stopping=0",
]


def launch(root: Path, nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, IMBASEG_HOME=str(root), OMP_NUM_THREADS="1")
    if nproc == 1:
        cmd = [sys.executable, "-m", "imbaseg", "train", *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "imbaseg",
            "train",
            *args,
        ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def history(run: Path) -> list[dict[str, float]]:
    with open(run / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def run_dir(root: Path, loss: str, name: str) -> Path:
    return root / "runs" / "synthetic-polyp" / loss / name


@pytest.fixture(scope="module")
def runs(tiny_root) -> dict[str, Path]:
    """Each launch once: single process x batch 4 against two processes x batch 2 (global batch 4)."""
    out = {}
    for key, loss, nproc, sync in [
        ("single-bce", "bce", 1, "true"),
        ("ddp-bce", "bce", 2, "true"),
        ("single-dyn", "dynamit-batch", 1, "true"),
        ("ddp-dyn-sync", "dynamit-batch", 2, "true"),
        ("ddp-dyn-local", "dynamit-batch", 2, "false"),
    ]:
        launch(
            tiny_root,
            nproc,
            *COMMON,
            "--loss",
            loss,
            "--epochs",
            "2",
            "--batch-size",
            str(4 // nproc),
            "--set",
            f"loss.sync_stats={sync}",
            "--name",
            key,
        )
        out[key] = run_dir(tiny_root, loss, key)
    return out


def test_two_process_run_completes_and_loads_in_one_process(runs):
    run = runs["ddp-bce"]
    assert len(history(run)) == 2
    assert sorted(p.name for p in run.parent.iterdir() if p.name.startswith("ddp")) == [
        "ddp-bce"
    ]  # rank 0 only
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2
    loaded = load_run(run, "best")
    assert not any(k.startswith("module.") for k in loaded.checkpoint["model"])
    assert (run / "train.log").read_text().count("epoch   1/2") == 1  # one writer


@pytest.mark.parametrize(
    "single,multi,match",
    [
        ("single-bce", "ddp-bce", True),
        ("single-dyn", "ddp-dyn-sync", True),
        ("single-dyn", "ddp-dyn-local", False),
    ],
)
def test_same_global_batch_gives_the_same_losses(runs, single, multi, match):
    """Batch statistics (dynamit-batch) match one big batch only when all-reduced (loss.sync_stats)."""
    a_rows, b_rows = history(runs[single]), history(runs[multi])
    first = abs(b_rows[0]["train_loss"] - a_rows[0]["train_loss"]) / a_rows[0]["train_loss"]
    if match:
        # measured here: 3e-8 relative in epoch 1 (summation order only); later epochs drift a little
        assert first < 1e-6
        for a, b in zip(a_rows, b_rows, strict=True):
            # validation is sharded without padding and all-reduced: the whole split on both sides
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
            assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-3)
            assert b["val_dice"] == pytest.approx(a["val_dice"], abs=1e-3)
    else:
        assert first > 1e-4  # per-rank class weights: measured 3e-4 relative on this data


def test_resume_across_a_change_of_world_size(runs, tiny_root, tmp_path):
    import shutil

    run = tmp_path / "grow"
    shutil.copytree(runs["ddp-bce"], run)
    launch(tiny_root, 1, "--resume", str(run), "--epochs", "3")
    rows = history(run)
    assert [r["epoch"] for r in rows] == [1.0, 2.0, 3.0]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["world_size"] == 1


def test_two_ranks_in_an_empty_home_prepare_the_synthetic_set_once(tmp_path):
    """Both ranks need data/prepared/synthetic-polyp on first use: one prepares it under the lock, the
    other waits (before the lock both prepared, and one rank's swap deleted the other's loader cache)."""
    out = launch(
        tmp_path, 2, "--dataset", "synthetic-polyp", "--epochs", "1", "--device", "cpu", "--no-progress",
        "--set", "model.base_channels=4", "--set", "data.size=[32,32]", "--set", "train.max_train_batches=1",
        "--name", "first-use",
    )
    prepared = tmp_path / "data" / "prepared"
    assert [p.name for p in prepared.iterdir() if not p.name.startswith(".")] == ["synthetic-polyp"]
    assert len(history(run_dir(tmp_path, "dynamit-batch", "first-use"))) == 1
    assert out.stdout.count("run folder:") == 1  # only rank 0 talks


def test_a_signal_to_one_rank_stops_both_at_the_same_batch_and_resume_is_exact(runs, tiny_root, tmp_path):
    """SIGTERM reaches rank 1 only, during its batch 2 of epoch 2 (rank 0 waits for it in the gradient
    all-reduce): the ranks agree at the next sync (every 2 steps here), both stop after batch 2, rank 0
    saves every rank's position; a 2-process resume then gives the history of the uninterrupted run."""
    import signal
    import time

    from imbaseg.training.run_dir import RunDir

    driver = Path(__file__).with_name("train_driver.py")
    ready = tmp_path / "ready"
    args = [*COMMON, "--loss", "bce", "--epochs", "2", "--batch-size", "2", "--set", "loss.sync_stats=true",
            "--set", "train.log_interval=2", "--name", "ddp-stop"]
    env = dict(os.environ, IMBASEG_HOME=str(tiny_root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver),
           "pause", "2", "2", "1", str(ready), "--", *args]
    proc = subprocess.Popen(cmd, env=env, cwd=tiny_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 180
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate()[0][-3000:] if proc.poll() is not None else "timed out"
    os.kill(int(ready.read_text()), signal.SIGTERM)
    out, _ = proc.communicate(timeout=180)  # no rank left waiting in a collective
    run = run_dir(tiny_root, "bce", "ddp-stop")
    assert out.count("interrupted by SIGTERM") == 1, out[-3000:]  # rank 0 speaks, for the signal rank 1 got
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    pos = last["position"]
    assert (pos["epoch"], pos["batch"], pos["world"]) == (1, 2, 2)
    assert [r["count"] for r in pos["ranks"]] == [2, 2] and pos["ranks"][0] != pos["ranks"][1]
    assert last["signal"] == "SIGTERM" and len(last["rng_ranks"]) == 2
    assert RunDir(run).read_status()["state"] == "interrupted"

    launch(tiny_root, 2, "--resume", str(run), "--no-progress")
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in history(run)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in history(runs["ddp-bce"])]


def test_a_nan_seen_by_one_rank_stops_both_with_one_line(tiny_root):
    """Rank 1 alone sees a non-finite running loss (its weights stay finite): at the next sync both ranks
    stop with NonFiniteLoss, rank 0 says which rank saw it, and status.json records the failure (before,
    rank 1 left and rank 0 waited in its next collective)."""
    import time

    from imbaseg.training.run_dir import RunDir

    driver = Path(__file__).with_name("train_driver.py")
    args = [*COMMON, "--loss", "bce", "--epochs", "2", "--batch-size", "2", "--set", "train.log_interval=2",
            "--name", "ddp-nan"]
    env = dict(os.environ, IMBASEG_HOME=str(tiny_root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver),
           "nan-on", "1", "1", "1", "--", *args]
    t0 = time.monotonic()
    out = subprocess.run(cmd, env=env, cwd=tiny_root, capture_output=True, text=True, timeout=240)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert time.monotonic() - t0 < 200
    assert "training loss became nan on rank 1 at epoch 1, step 2" in " ".join(text.split()), text[-3000:]
    status = RunDir(run_dir(tiny_root, "bce", "ddp-nan")).read_status()
    assert status["state"] == "failed"
    assert status["error"].startswith("NonFiniteLoss: training loss became nan on rank 1 at epoch 1, step 2")
