"""Run ``imbaseg train ARGS`` in this process with a hook that holds it at a chosen moment, so that a test
can send real signals (or start a second process) exactly there. Not a test module.

    python train_driver.py pause EPOCH BATCH RANK READY [SIGNALS] -- ARGS...
        when batch BATCH of epoch EPOCH (both from 1) starts on rank RANK (0 without torchrun), write this
        process's pid to READY and wait (at most 120 s) until SIGNALS (default 1) stop signals arrived;
        the signal thus lands during that batch, and the run should stop after it.
    python train_driver.py kill-between EPOCH -- ARGS...
        SIGKILL this process after last.pt and before best.pt of epoch EPOCH are written.
    python train_driver.py nan-on EPOCH BATCH RANK -- ARGS...
        after batch BATCH of epoch EPOCH on rank RANK, that rank's running loss sum becomes NaN (its
        weights and gradients stay finite): a non-finite loss seen by one rank alone.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def pause_at(epoch: int, batch: int, rank: int, ready: Path, signals: int) -> None:
    """Hold when training batch ``batch`` of ``epoch`` starts (through ``Trainer._batch_to_device``, which
    every version of the trainer calls once per step), until ``signals`` stop signals arrived."""
    from imbaseg.training.trainer import Trainer

    train_epoch, to_device = Trainer.train_epoch, Trainer._batch_to_device

    def counted_epoch(self, e):
        self.driver_batches = 0
        return train_epoch(self, e)

    def paused_to_device(self, b):
        if self.net.training:
            self.driver_batches += 1
            if (self.state.epoch + 1, self.driver_batches, self.rank) == (epoch, batch, rank):
                hold(self, ready, signals)
        return to_device(self, b)

    Trainer.train_epoch, Trainer._batch_to_device = counted_epoch, paused_to_device


def hold(trainer, ready: Path, signals: int) -> None:
    tmp = ready.with_name(ready.name + ".tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, ready)
    deadline = time.time() + 120
    while time.time() < deadline:
        received = getattr(trainer, "signal_times", None)
        if received is None and trainer.stop_requested or received is not None and len(received) >= signals:
            return
        time.sleep(0.02)


def kill_between(epoch: int) -> None:
    import imbaseg.training.trainer as T

    save = T.save_checkpoint

    def save_then_die(state, path):
        save(state, path)
        if Path(path).name == "last.pt" and state["epoch"] == epoch and not state.get("position"):
            os.kill(os.getpid(), signal.SIGKILL)

    T.save_checkpoint = save_then_die


def nan_on(epoch: int, batch: int, rank: int) -> None:
    from imbaseg.training.trainer import Trainer

    step = Trainer._step

    def step_then_nan(self, b, acc):
        n = step(self, b, acc)
        if (self.state.epoch + 1, acc.count, self.rank) == (epoch, batch, rank):
            acc.total += float("nan")
        return n

    Trainer._step = step_then_nan


def main(argv: list[str]) -> None:
    split = argv.index("--")
    mode, opts, args = argv[0], argv[1:split], argv[split + 1 :]
    if mode == "pause":
        signals = int(opts[4]) if len(opts) > 4 else 1
        pause_at(int(opts[0]), int(opts[1]), int(opts[2]), Path(opts[3]), signals)
    elif mode == "kill-between":
        kill_between(int(opts[0]))
    elif mode == "nan-on":
        nan_on(int(opts[0]), int(opts[1]), int(opts[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    import torch

    torch.set_num_threads(1)
    from imbaseg.cli.main import app

    app(["train", *args], prog_name="imbaseg")


if __name__ == "__main__":
    main(sys.argv[1:])
