"""Crash-consistent runs (issue 10): stop signals at chosen batches, a kill between the two checkpoint saves,
the run folder's lock, status.json, setup checks that leave no folder, and the slug of a loss spec.

Real signals go to real subprocesses: ``train_driver.py`` runs ``imbaseg train`` and holds it after a chosen
batch until the signal has arrived, so a stop lands at a known batch without timing luck.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import read_history, tiny_cfg

from imbaseg.config import load_config, save_config
from imbaseg.errors import UserError
from imbaseg.training.run_dir import RunDir, load_checkpoint, load_run
from imbaseg.training.trainer import Trainer, TrainerCallbacks, train

DRIVER = Path(__file__).with_name("train_driver.py")
RUNS = ("runs", "synthetic-polyp", "bce")  # tiny_cfg's loss; 16 training images / batch 4 = 4 batches


def cfg_file(root: Path, tmp_path: Path, name: str, **sections):
    cfg = tiny_cfg(root, name=name, **sections)
    path = tmp_path / f"{name}.yaml"
    save_config(cfg, path)
    return cfg, path


def driver(root: Path, cwd: Path, mode: str, opts: list, args: list, group: bool = False) -> subprocess.Popen:
    """``train_driver.py`` in a subprocess; ``group``: in its own process group (with its loader workers)."""
    env = dict(os.environ, IMBASEG_HOME=str(root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(DRIVER), mode, *map(str, opts), "--", *map(str, args)]
    out = subprocess.PIPE
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                            start_new_session=group)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    """The pid written to ``path`` by the driver once it holds at its batch."""
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            out = proc.communicate()[0] if proc.poll() is not None else "timed out"
            pytest.fail(f"the driver never reached its batch: {out[-3000:]}")
        time.sleep(0.05)
    return int(path.read_text())


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def strip_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# ----------------------------------------------------------------------------- stop signals


@pytest.fixture(scope="module")
def straight(tiny_root) -> Path:
    """Three epochs without interruption (the reference of the resume tests)."""
    return train(tiny_cfg(tiny_root, name="rel-straight", train={"epochs": 3})).run_dir


def test_sigint_mid_epoch_then_resume_gives_the_straight_history(tiny_root, tmp_path, straight):
    cfg, path = cfg_file(tiny_root, tmp_path, "rel-sigint", train={"epochs": 3})
    ready = tmp_path / "ready"
    proc = driver(tiny_root, tmp_path, "pause", [2, 2, 0, ready], ["--config", path, "--no-progress"])
    os.kill(wait_for(ready, proc), signal.SIGINT)  # a real Ctrl-C, during batch 2 of 4 in epoch 2
    out = finish(proc)
    assert proc.returncode == 130, out
    run = tiny_root.joinpath(*RUNS, "rel-sigint")
    assert "interrupted by SIGINT" in out and f"imbaseg train --resume {run}" in out
    assert "stopped in epoch 2 after batch 2 of 4" in out
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["interrupted"] is True and last["signal"] == "SIGINT"
    pos = last["position"]
    assert (pos["epoch"], pos["batch"], pos["batches"], pos["world"]) == (1, 2, 4, 1)
    assert pos["ranks"][0]["count"] == 2 and np.isfinite(pos["ranks"][0]["loss_sum"])
    status = RunDir(run).read_status()
    assert (status["state"], status["stopped"], status["signal"], status["epoch"]) == (
        "interrupted", "interrupted", "SIGINT", 1)
    assert not RunDir(run).lock_file.exists()
    assert status["seconds"] >= last["seconds"] > last["history"][0]["seconds"] > 0  # epoch 1 + part of 2

    result = train(cfg, resume=run)
    assert result.stopped == "completed"
    assert RunDir(run).read_status()["seconds"] > status["seconds"]  # summed over the two sessions
    # exact, to the last digit
    assert strip_seconds(read_history(run)) == strip_seconds(read_history(straight))
    assert RunDir(run).read_status()["state"] == "finished"
    a = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_twice_at_once_saves_and_exits_143(tiny_root, tmp_path):
    """SIGTERM to the whole process group (as Slurm signals every process of a job), twice within 50 ms
    (as torchrun and srun forward it): one stop, the loader worker left alone, exit 143."""
    _, path = cfg_file(tiny_root, tmp_path, "rel-sigterm", train={"epochs": 3}, data={"num_workers": 1})
    ready = tmp_path / "ready"
    proc = driver(tiny_root, tmp_path, "pause", [1, 3, 0, ready, 2], ["--config", path, "--no-progress"],
                  group=True)
    wait_for(ready, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # (the driver holds the batch until both arrived)
    out = finish(proc)
    assert proc.returncode == 143, out
    assert "DataLoader worker" not in out and "Traceback" not in out
    run = tiny_root.joinpath(*RUNS, "rel-sigterm")
    assert "interrupted by SIGTERM" in out and "--resume" in out and "aborted" not in out
    assert out.count("SIGTERM: stopping after this batch") == 1
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["position"]["batch"] == 3 and last["epoch"] == 0 and last["signal"] == "SIGTERM"
    status = RunDir(run).read_status()
    assert (status["state"], status["signal"], status["epoch"]) == ("interrupted", "SIGTERM", 0)
    # no best.pt yet (no epoch ended), no temp files
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]


@pytest.fixture
def signals_to_self(monkeypatch):
    """Send real signals to this process from the CLI's batch callback; a no-op handler stands in for
    the trainer's outside a run, so that a missing handler fails the test instead of killing pytest."""
    from imbaseg.cli import render

    names = ("SIGTERM", "SIGUSR1", "SIGUSR2")
    previous = {n: signal.signal(getattr(signal, n), lambda *a: None) for n in names}
    plan = {}
    on_batch = render.TrainingDisplay.on_batch

    def on_batch_then_signal(self, epoch, done, total, loss, rate):
        on_batch(self, epoch, done, total, loss, rate)
        for sig_name, wait in plan.get((epoch, done), []):
            time.sleep(wait)
            os.kill(os.getpid(), getattr(signal, sig_name))

    monkeypatch.setattr(render.TrainingDisplay, "on_batch", on_batch_then_signal)
    yield plan
    for n, h in previous.items():
        signal.signal(getattr(signal, n), h)


@pytest.mark.parametrize("sig", ["SIGUSR1", "SIGUSR2"])
def test_slurm_signals_stop_like_sigterm(tiny_root, tmp_path, signals_to_self, sig):
    from typer.testing import CliRunner

    from imbaseg.cli.main import app

    _, path = cfg_file(tiny_root, tmp_path, f"rel-{sig}", train={"epochs": 3})
    signals_to_self[(1, 3)] = [(sig, 0.0)]
    res = CliRunner().invoke(app, ["train", "--config", str(path), "--no-progress"])
    assert res.exit_code == 128 + int(getattr(signal, sig)), res.output  # 138 and 140 on Linux
    assert f"interrupted by {sig}" in res.output and "--resume" in res.output
    run = tiny_root.joinpath(*RUNS, f"rel-{sig}")
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["position"]["batch"] == 3 and last["signal"] == sig
    assert RunDir(run).read_status()["signal"] == sig


def test_a_second_signal_aborts_at_once(tiny_root, tmp_path, signals_to_self):
    from typer.testing import CliRunner

    from imbaseg.cli.main import app

    _, path = cfg_file(tiny_root, tmp_path, "rel-abort", train={"epochs": 3})
    signals_to_self[(2, 1)] = [("SIGTERM", 0.0), ("SIGTERM", 1.2)]  # later than the repeat window
    res = CliRunner().invoke(app, ["train", "--config", str(path), "--no-progress"])
    assert res.exit_code == 143, res.output
    assert "aborted by a second SIGTERM" in res.output and "stopped in epoch" not in res.output
    run = tiny_root.joinpath(*RUNS, "rel-abort")
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["position"] is None  # the end of epoch 1, nothing half-saved
    status = RunDir(run).read_status()
    assert (status["state"], status["stopped"], status["signal"]) == ("interrupted", "aborted", "SIGTERM")
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").iterdir())
    assert not RunDir(run).lock_file.exists()


def test_a_mid_epoch_position_resumed_with_another_batch_size(tiny_root):
    """A stop requested from Python (no signal) after batch 3 of 4 (12 images); resumed with batch 2 and
    batch 8: the first 12 images are skipped as 6 batches of 2, or as 1 batch of 8 with 4 trained again."""
    from imbaseg.training.trainer import Trainer

    def stop_at_3(epoch, done, total, loss, rate):
        if (epoch, done) == (1, 3):
            trainer.stop_requested = True

    for new_batch, expected in [(2, "after its first 12 images (6 batches of 2 x 1; they were 4 x 1)"),
                                (8, "(1 batches of 8 x 1; they were 4 x 1): 4 of them are trained again")]:
        name = f"rel-rebatch-{new_batch}"
        trainer = Trainer(tiny_cfg(tiny_root, name=name, train={"epochs": 1}),
                          callbacks=TrainerCallbacks(on_batch=stop_at_3))
        result = trainer.fit()
        assert result.stopped == "interrupted" and result.signal is None
        assert load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["position"]["batch"] == 3
        said = []
        cfg = tiny_cfg(tiny_root, name=name, train={"epochs": 1, "batch_size": new_batch})
        cb = TrainerCallbacks(on_message=lambda t, lv, s=said: s.append(t))
        train(cfg, resume=result.run_dir, callbacks=cb)
        assert any(expected in s for s in said), said
        rows = read_history(result.run_dir)
        assert len(rows) == 1 and np.isfinite(float(rows[0]["train_loss"]))


# ----------------------------------------------------------------------------- best.pt against last.pt


def test_a_kill_between_last_and_best_is_repaired(tiny_root, tmp_path):
    cfg, path = cfg_file(tiny_root, tmp_path, "rel-between", train={"epochs": 3, "monitor": "val_loss"})
    proc = driver(tiny_root, tmp_path, "kill-between", [2], ["--config", path, "--no-progress"])
    out = finish(proc)
    assert proc.returncode == -signal.SIGKILL, out
    run = tiny_root.joinpath(*RUNS, "rel-between")
    folder = RunDir(run)
    last = load_checkpoint(folder.checkpoint_file("last"))
    assert (last["epoch"], last["best_epoch"]) == (2, 2)  # epoch 2 improved; best.pt was never written
    assert load_checkpoint(folder.checkpoint_file("best"))["epoch"] == 1
    best = folder.checkpoint_file("best")
    assert folder.best_problem() == (f"{best} holds epoch 1 but the run's best epoch is 2 (last.pt)", True)

    loaded = load_run(run, "best")  # what evaluate --checkpoint best uses: epoch 2, the recorded best
    assert loaded.checkpoint["epoch"] == 2 and loaded.checkpoint_file == folder.checkpoint_file("last")
    assert all(torch.equal(v, last["model"][k]) for k, v in loaded.model.state_dict().items())

    said = []
    train(cfg, resume=run, callbacks=TrainerCallbacks(on_message=lambda text, level: said.append(text)))
    assert any("rewrote best.pt from last.pt" in s for s in said)
    assert "rewrote best.pt" in (run / "train.log").read_text()
    last = load_checkpoint(folder.checkpoint_file("last"))
    assert load_checkpoint(folder.checkpoint_file("best"))["epoch"] == last["best_epoch"]
    assert folder.best_problem() is None


def test_a_best_that_cannot_be_repaired_is_refused_then_removed(tiny_root, tmp_path, straight):
    run = tmp_path / "copy"
    (run / "checkpoints").mkdir(parents=True)
    for f in ("config.yaml", "checkpoints/best.pt"):
        (run / f).write_bytes((straight / f).read_bytes())
    last = load_checkpoint(straight / "checkpoints" / "last.pt")
    best_epoch = load_checkpoint(straight / "checkpoints" / "best.pt")["epoch"]
    last["best_epoch"] = best_epoch - 1 if best_epoch > 1 else 2  # last.pt records another epoch, not its own
    torch.save(last, run / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match=r"best.pt is out of date .* Use --checkpoint last"):
        load_run(run, "best")
    from typer.testing import CliRunner

    from imbaseg.cli.main import app

    res = CliRunner().invoke(app, ["evaluate", str(run), "--device", "cpu"])
    assert res.exit_code == 2 and "out of date" in res.output

    said = []
    cfg = load_config(run / "config.yaml")
    cfg.train.epochs = 3  # nothing left to train: the resume only checks and repairs
    train(cfg, resume=run, callbacks=TrainerCallbacks(on_message=lambda text, level: said.append(text)))
    assert any("removed the stale best.pt" in s for s in said)
    assert not (run / "checkpoints" / "best.pt").exists()


def test_an_unreadable_checkpoint_on_either_side(tmp_path, straight):
    import shutil

    run = tmp_path / "torn"
    shutil.copytree(straight, run)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])  # torn by something outside imbaseg (a partial copy)
    problem = RunDir(run).best_problem()
    assert problem is not None and "best.pt is unreadable but the run's best epoch is" in problem[0]
    if last["best_epoch"] == last["epoch"]:
        assert load_run(run, "best").checkpoint_file.name == "last.pt"
    else:
        with pytest.raises(UserError, match="out of date"):
            load_run(run, "best")
    shutil.copy(straight / "checkpoints" / "best.pt", best)
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")  # cannot judge: best.pt as it is
    assert RunDir(run).best_problem() is None and load_run(run, "best").checkpoint_file == best


# ----------------------------------------------------------------------------- the run folder's lock


def test_a_second_resume_of_a_running_folder_is_refused_and_a_stale_lock_taken_over(tiny_root, tmp_path):
    cfg, path = cfg_file(tiny_root, tmp_path, "rel-lock", train={"epochs": 1})
    run = train(cfg).run_dir
    ready = tmp_path / "ready"
    first = driver(tiny_root, tmp_path, "pause", [2, 1, 0, ready],
                   ["--resume", run, "--epochs", "2", "--no-progress"])
    pid = wait_for(ready, first)
    from typer.testing import CliRunner

    from imbaseg.cli.main import app

    second = CliRunner().invoke(app, ["train", "--resume", str(run), "--epochs", "2", "--device", "cpu"])
    assert second.exit_code == 2, second.output
    line = " ".join(second.output.split())
    assert f"is in use by pid {pid} on host {socket.gethostname()}" in line and "Traceback" not in line
    assert RunDir(run).read_status()["state"] == "running"  # the second process wrote nothing

    first.kill()  # SIGKILL: the lock file stays behind, its holder gone
    first.communicate(timeout=60)
    assert json.loads(RunDir(run).lock_file.read_text())["pid"] == pid
    said = []
    cfg.train.epochs = 2
    cb = TrainerCallbacks(on_message=lambda text, level: said.append((text, level)))
    train(cfg, resume=run, callbacks=cb)
    assert (f"took over the run folder's lock from pid {pid} on host {socket.gethostname()}" in said[0][0]
            and said[0][1] == "warning"), said
    assert not RunDir(run).lock_file.exists() and len(read_history(run)) == 2


def test_the_lock_is_held_while_training(tiny_root):
    seen = []

    def look(report):
        seen.append(json.loads(RunDir(report_dir[0]).lock_file.read_text())["pid"])

    report_dir = []
    cb = TrainerCallbacks(on_start=lambda run, *a: report_dir.append(run), on_epoch_end=look)
    result = train(tiny_cfg(tiny_root, name="rel-held", train={"epochs": 1}), callbacks=cb)
    assert seen == [os.getpid()] and not RunDir(result.run_dir).lock_file.exists()


# ----------------------------------------------------------------------------- status.json


def test_status_of_finished_and_failed_runs(tiny_root):
    result = train(tiny_cfg(tiny_root, name="rel-status", train={"epochs": 2}))
    status = RunDir(result.run_dir).read_status()
    want = {"state": "finished", "stopped": "completed", "epoch": 2, "epochs": 2,
            "best_epoch": result.best_epoch, "best_value": result.best_value, "monitor": "val_loss",
            "error": None, "signal": None}
    assert {k: status[k] for k in want} == want and status["seconds"] > 0

    early = train(tiny_cfg(tiny_root, name="rel-early", optim={"name": "sgd", "lr": 1e-12, "momentum": 0.0},
                           train={"epochs": 6, "early_stopping": 1, "monitor": "val_loss"}))
    status = RunDir(early.run_dir).read_status()
    assert (status["state"], status["stopped"], status["epoch"]) == ("finished", "early_stopping", 2)

    states = []

    def poison(report):
        states.append(RunDir(trainer.run_dir).read_status()["state"])
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.fill_(float("nan"))

    trainer = Trainer(tiny_cfg(tiny_root, name="rel-nan", train={"epochs": 3}),
                      callbacks=TrainerCallbacks(on_epoch_end=poison))
    with pytest.raises(UserError, match="training loss became nan"):
        trainer.fit()
    status = RunDir(trainer.run_dir).read_status()
    assert states == ["running"]
    assert (status["state"], status["stopped"], status["epoch"]) == ("failed", "failed", 1)
    assert status["error"].startswith("NonFiniteLoss: training loss became nan at epoch 2")


# ----------------------------------------------------------------------------- setup checks


def mixed_sizes(root: Path) -> Path:
    """A prepared dataset whose train and val images come in two sizes (32x32 and 40x48)."""
    from imbaseg.data.prepared import PreparedWriter
    from imbaseg.paths import prepared_dir

    rng = np.random.default_rng(0)
    with PreparedWriter(prepared_dir("mixed", root)) as w:
        rows = []
        for k, split in enumerate(["train"] * 6 + ["val"] * 4 + ["test"] * 2):
            h, wd = (32, 32) if k % 2 == 0 else (40, 48)
            image = (rng.random((h, wd, 3)) * 255).astype(np.uint8)
            mask = np.zeros((h, wd), bool)
            mask[8:16, 6:20] = True
            rows.append(w.write_sample(f"m{k:02d}", image, mask, split=split))
        w.commit(rows, {"name": "mixed"})
    return prepared_dir("mixed", root)


def test_mixed_sizes_are_refused_before_any_folder_exists(tmp_path):
    from typer.testing import CliRunner

    from imbaseg.cli.main import app

    mixed_sizes(tmp_path)
    args = ["train", "--dataset", "mixed", "--root", str(tmp_path), "--loss", "bce", "--device", "cpu",
            "--epochs", "1", "--batch-size", "2", "--no-progress", "--set", "model.base_channels=4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    assert "dataset mixed" in line and "32x32 (m00)" in line and "40x48 (m01)" in line
    assert "--set data.size=[H,W]" in line and "data.patch_size" in line
    assert not (tmp_path / "runs").exists()

    # crops for training; the validation images (two sizes) then go through one at a time
    res = CliRunner().invoke(app, [*args, "--set", "data.patch_size=[32,32]", "--name", "crops"])
    assert res.exit_code == 0, res.output
    assert len(read_history(tmp_path / "runs" / "mixed" / "bce" / "crops")) == 1


def test_a_setup_that_fails_after_the_folder_was_made_removes_it(tiny_root, monkeypatch):
    import imbaseg.training.env as env

    def fail(*a, **k):
        raise UserError("env.json cannot be written (test)")

    monkeypatch.setattr(env, "write_env", fail)
    with pytest.raises(UserError, match="test"):
        train(tiny_cfg(tiny_root, name="rel-setup", train={"epochs": 1}))
    assert not tiny_root.joinpath(*RUNS, "rel-setup").exists()
    with pytest.raises(UserError, match="test"):  # a loss with no runs yet: its folder goes too
        train(tiny_cfg(tiny_root, name="rel-setup", loss={"name": "dice", "params": {"smooth": 2.0}},
                       train={"epochs": 1}))
    assert not (tiny_root / "runs" / "synthetic-polyp" / "dice-smooth2.0").exists()
    assert (tiny_root / "runs" / "synthetic-polyp").is_dir()  # other runs live there


def test_a_resume_that_changes_the_model_or_monitor_is_refused(tiny_root):
    cfg = tiny_cfg(tiny_root, name="rel-frozen", train={"epochs": 1})
    run = train(cfg).run_dir
    before = sorted(p.name for p in run.iterdir())
    for section, key, value in [("model", "base_channels", 8), ("train", "monitor", "val_dice")]:
        changed = tiny_cfg(tiny_root, name="rel-frozen", **{section: {key: value}})
        with pytest.raises(UserError, match=rf"{section}.{key} cannot change on --resume"):
            train(changed, resume=run)
    assert sorted(p.name for p in run.iterdir()) == before and not RunDir(run).lock_file.exists()


# ----------------------------------------------------------------------------- the slug of the loss


def test_run_folders_are_named_with_a_shell_safe_slug_and_keep_the_spec(tiny_root):
    cfg = tiny_cfg(tiny_root, name="rel-slug", loss={"name": "boundary-gaussian", "params": {"sigma": 4}},
                   train={"epochs": 1, "max_train_batches": 1})
    run = train(cfg).run_dir
    assert run == tiny_root / "runs" / "synthetic-polyp" / "boundary-gaussian-sigma4" / "rel-slug"
    saved = RunDir(run).config()
    assert saved.loss.name == "boundary-gaussian" and saved.loss.params == {"sigma": 4}
    assert saved.loss_label == "boundary-gaussian(sigma=4)"

    moved = run.parents[1] / "renamed" / run.name  # the loss is read from the config, never from the path
    moved.parent.mkdir()
    run.rename(moved)
    assert RunDir(moved).config().loss_label == "boundary-gaussian(sigma=4)"
    assert load_run(moved, "best").config.loss_label == "boundary-gaussian(sigma=4)"
