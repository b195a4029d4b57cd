"""The trainer end to end on a tiny synthetic dataset: run folder, resume, SIGINT, NaN, early stopping."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imbaseg.config import from_dict
from imbaseg.training.run_dir import load_checkpoint, load_run
from imbaseg.training.trainer import NonFiniteLoss, train


def tiny_cfg(root: Path, **sections) -> object:
    data = {
        "name": sections.pop("name", None),
        "data": {"dataset": "synthetic-polyp", "root": str(root), "size": [32, 32]},
        "model": {"base_channels": 4},
        "loss": {"name": "bce"},
        "optim": {"name": "adamw", "lr": 3e-3},
        "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "deterministic": True, "log_interval": 2},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return from_dict(data)


def read_history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_run_folder_contents(tiny_root):
    cfg = tiny_cfg(tiny_root, name="contents")
    result = train(cfg)
    run = result.run_dir
    assert run == tiny_root / "runs" / "synthetic-polyp" / "bce" / "contents"
    for name in (
        "config.yaml",
        "env.json",
        "history.csv",
        "train.log",
        "history.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    rows = read_history(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0])[:6] == ["epoch", "lr", "train_loss", "val_loss", "val_dice", "seconds"]
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 and math.isfinite(float(r["train_loss"])) for r in rows)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    for key in ("model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config", "history"):
        assert key in ckpt
    assert ckpt["epoch"] == 2 and ckpt["config"] == cfg.to_dict()
    loaded = load_run(run, "best")
    assert loaded.config == cfg
    assert "epoch   1/2" in (run / "train.log").read_text()


def test_run_folder_is_never_reused(tiny_root):
    first = train(tiny_cfg(tiny_root, name="same", train={"epochs": 1})).run_dir
    second = train(tiny_cfg(tiny_root, name="same", train={"epochs": 1})).run_dir
    assert first != second and second.name == "same-2"


def test_resume_gives_the_same_history_as_a_straight_run(tiny_root):
    straight = train(tiny_cfg(tiny_root, name="straight", train={"epochs": 4})).run_dir
    part = train(tiny_cfg(tiny_root, name="part", train={"epochs": 2})).run_dir
    resumed = train(tiny_cfg(tiny_root, name="part", train={"epochs": 4}), resume=part).run_dir
    assert resumed == part
    a, b = read_history(straight), read_history(resumed)
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b, strict=True):
        ra.pop("seconds"), rb.pop("seconds")
        assert ra == rb


def test_nan_loss_stops_with_a_message_and_keeps_checkpoints(tiny_root):
    def poison(row):
        trainer_model = poison.model
        with torch.no_grad():
            for p in trainer_model.parameters():
                p.fill_(float("nan"))

    from imbaseg.training.trainer import Trainer, TrainerCallbacks

    callbacks = TrainerCallbacks(on_epoch_end=poison)
    trainer = Trainer(tiny_cfg(tiny_root, name="nan", train={"epochs": 3}), callbacks=callbacks)
    poison.model = trainer.model
    with pytest.raises(NonFiniteLoss, match=r"training loss became nan at epoch 2"):
        trainer.fit()
    last = load_checkpoint(trainer.run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_compound_loss_terms_are_logged(tiny_root):
    run = train(tiny_cfg(tiny_root, name="terms", loss={"name": "dice+0.5*bce"}, train={"epochs": 1})).run_dir
    row = read_history(run)[0]
    assert "train_dice" in row and "train_bce" in row
    total = float(row["train_dice"]) + 0.5 * float(row["train_bce"])
    assert total == pytest.approx(float(row["train_loss"]), rel=1e-5)


def test_early_stopping(tiny_root):
    cfg = tiny_cfg(
        tiny_root,
        name="early",
        optim={"name": "sgd", "lr": 1e-12, "momentum": 0.0},
        train={"epochs": 6, "early_stopping": 2, "monitor": "val_loss"},
    )
    result = train(cfg)
    assert result.stopped == "early_stopping"
    assert len(result.history) == 3  # best at epoch 1, then two epochs without improvement


@pytest.mark.parametrize(
    "sched,expected",
    [  # lr per epoch for lr0 = 0.1 over 4 epochs
        (
            "cosine",
            [0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05, 0.1 * (1 + math.cos(3 * math.pi / 4)) / 2],
        ),
        ("poly", [0.1, 0.1 * 0.75**0.9, 0.1 * 0.5**0.9, 0.1 * 0.25**0.9]),
        ("none", [0.1] * 4),
    ],
)
def test_schedules(sched, expected):
    from imbaseg.optim import build_optimizer, build_scheduler

    cfg = from_dict({"sched": {"name": sched}, "train": {"epochs": 4}})
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(cfg, model.parameters())
    scheduler = build_scheduler(cfg, opt)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if scheduler is not None:
            scheduler.step()
    assert lrs == pytest.approx(expected)


def test_plateau_schedule_reduces_the_lr_after_patience():
    from imbaseg.optim import build_optimizer, build_scheduler

    cfg = from_dict({"sched": {"name": "plateau", "patience": 2, "factor": 0.1}})
    opt = build_optimizer(cfg, torch.nn.Linear(2, 1).parameters())
    scheduler = build_scheduler(cfg, opt)
    for value in [1.0, 1.0, 1.0, 1.0]:  # no improvement: after 2 bad epochs the 3rd reduces
        scheduler.step(value)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_sigint_leaves_a_loadable_last_checkpoint(tiny_root, tmp_path):
    env = dict(os.environ, IMBASEG_HOME=str(tiny_root))
    cmd = [
        sys.executable,
        "-m",
        "imbaseg",
        "train",
        "--dataset",
        "synthetic-polyp",
        "--loss",
        "bce",
        "--name",
        "sigint",
        "--epochs",
        "200",
        "--device",
        "cpu",
        "--no-progress",
        "--set",
        "data.size=[32,32]",
        "--set",
        "model.base_channels=4",
        "--set",
        "optim.name=adamw",
        "--set",
        "optim.lr=0.001",
        "--set",
        "train.early_stopping=0",
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    history = tiny_root / "runs" / "synthetic-polyp" / "bce" / "sigint" / "history.csv"
    deadline = time.time() + 120
    while not history.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert history.exists(), proc.stdout.read() if proc.poll() is not None else "no epoch finished in time"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out and "--resume" in out
    ckpt = load_checkpoint(history.parent / "checkpoints" / "last.pt")
    assert ckpt["interrupted"] is True and ckpt["epoch"] >= 1
    load_run(history.parent, "last")


def test_a_run_reports_through_its_callbacks_and_prints_nothing(tiny_root, capsys):
    from imbaseg.training.trainer import TrainerCallbacks

    events = []
    callbacks = TrainerCallbacks(
        on_start=lambda *a: events.append(("start", *a)),
        on_batch=lambda *a: events.append(("batch", *a)),
        on_epoch_end=lambda report: events.append(("epoch", report)),
        on_message=lambda text, level: events.append(("message", text, level)),
    )
    cfg = tiny_cfg(tiny_root, name="callbacks", train={"epochs": 2, "max_train_batches": 3})
    result = train(cfg, callbacks=callbacks)
    assert capsys.readouterr() == ("", "")  # the library prints nothing itself
    assert events[0] == ("start", result.run_dir, 2, 0, 3)
    batches = [e[1:4] for e in events if e[0] == "batch"]
    assert batches == [(epoch, done, 3) for epoch in (1, 2) for done in (1, 2, 3)]
    loss = [e[4] for e in events if e[0] == "batch"]
    assert loss[0] is None and loss[1] is not None  # the running loss once log_interval=2 steps synced
    reports = [e[1] for e in events if e[0] == "epoch"]
    assert [r["epoch"] for r in reports] == [1, 2] and reports[0]["best"] is True
    assert reports[1]["images_per_s"] > 0
    assert {k: v for k, v in reports[-1].items() if k not in ("images_per_s", "best")} == result.history[-1]
    log = (result.run_dir / "train.log").read_text()
    assert "epoch   1/2" in log and "epoch   2/2" in log


def test_the_trainer_holds_no_console_and_spells_no_run_folder_path():
    """Presentation lives in imbaseg.cli.render; the run folder's layout in training/run_dir.py."""
    from pathlib import Path

    import imbaseg

    src = Path(imbaseg.__file__).parent
    files = [p for p in (src / "training").glob("*.py") if p.name != "run_dir.py"]
    files.append(src / "cli" / "train_cmd.py")
    for path in files:
        text = path.read_text()
        for word in ('"checkpoints"', '"config.yaml"', '"eval"', '"history.csv"', '"train.log"', '"env.json"',
                     "last.pt\"", "best.pt\""):
            assert word not in text, f"{path.name} spells {word}"
        if path.parent.name == "training":
            assert "rich" not in text and "console" not in text and "print(" not in text, path.name
