"""One cell of a study, run in this process: train (resuming a partial run from ``last.pt``, never from
scratch), then evaluate with the study's options; the outcome is recorded in the run folder's status.json.

The cell holds its run folder's lock (``RunDir.lock``) from the state check to the end of its evaluation,
so two processes (two ``study run``, on one machine or on two sharing the file system) never run one
cell; the trainer takes the same lock re-entrantly. Under torchrun (``WORLD_SIZE`` > 1) rank 0 holds the
lock and decides, every rank trains, rank 0 evaluates.

Stop signals (``trainer.STOP_SIGNALS``): during training the trainer's own handling (stop after the
batch, save last.pt, repeats within a second are the same stop); before and after it (setup, evaluation)
the cell stops at once, as there is nothing to save. ``cell_command`` is how the executors start a cell;
its exit codes (``EXIT_*``) are what they read.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imbaseg.errors import UserError
from imbaseg.study.spec import Cell, Study, cells
from imbaseg.study.state import cell_state
from imbaseg.training.run_dir import RunDir

EXIT_DONE = 0  # done now, or already
EXIT_FAILED = 1  # the error is in status.json
EXIT_BUSY = 75  # another live process or Slurm job holds the cell: nothing was done (EX_TEMPFAIL)
# 128 + N: stopped by signal N (checkpoints/last.pt saved: the cell is partial)
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


class CellStopped(KeyboardInterrupt):
    """A stop signal outside training (setup or evaluation): the cell stops at once."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class CellOutcome:
    """What one attempt at a cell did: ``outcome`` done, failed, stopped or busy."""

    outcome: str
    message: str
    signum: int | None = None

    @property
    def exit_code(self) -> int:
        if self.outcome == "stopped":
            return 128 + int(self.signum or signal.SIGINT)
        return {"done": EXIT_DONE, "failed": EXIT_FAILED, "busy": EXIT_BUSY}[self.outcome]


@dataclass
class CellHooks:
    """How a cell reports; the library prints nothing. ``on_message(text, level)`` (level info,
    warning or error) and ``training``: the trainer's callbacks (``TrainerCallbacks`` or the like)."""

    on_message: Callable[[str, str], None] | None = None
    training: Any = None

    def say(self, text: str, level: str = "info") -> None:
        if self.on_message is not None:
            self.on_message(text, level)


def find_cell(study: Study, key: str, root=None) -> Cell:
    """The cell of ``study`` whose key (its run folder's hash) is ``key``; UserError when there is none."""
    all_cells = cells(study, root)
    for c in all_cells:
        if c.key == key:
            return c
    raise UserError(
        f"no cell with key {key} in {study.path} (the study file changed since the cell was started?); "
        f"its cells are {', '.join(c.key for c in all_cells)}"
    )


def cell_command(study_file, key: str, root=None, nproc: int = 1, retry_failed: bool = False,
                 parent_pid: int | None = None, python: str | None = None) -> list[str]:
    """The command line that runs one cell (``imbaseg study run-cell``); under torchrun with ``nproc`` > 1
    (one process per GPU of the cell). ``parent_pid``: the cell stops when that process dies (Linux)."""
    python = python or sys.executable
    args = ["-m", "imbaseg", "study", "run-cell", str(Path(study_file).resolve()), "--cell", key]
    if root is not None:
        args += ["--root", str(Path(root).resolve())]
    if retry_failed:
        args.append("--retry-failed")
    if parent_pid is not None:
        args += ["--parent-pid", str(parent_pid)]
    if nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return [python, *args]


def stop_with_parent(parent_pid: int) -> None:
    """Ask Linux to send SIGTERM to this process when ``parent_pid`` (its parent) dies, so that a study
    killed with SIGKILL leaves its cells saved and stopped rather than orphaned. Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the request: stop now
        os.kill(os.getpid(), signal.SIGTERM)


class StopSignals:
    """Outside training, the first stop signal raises ``CellStopped`` (repeats are ignored: launchers such
    as torchrun and srun forward the signal the process got already). The trainer installs its own handlers
    while it trains and restores these after."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        raise CellStopped(signum)

    def __enter__(self) -> StopSignals:
        import threading

        if threading.current_thread() is threading.main_thread():
            from imbaseg.training.trainer import STOP_SIGNALS

            for name in STOP_SIGNALS:
                sig = getattr(signal, name)
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old)


# ----------------------------------------------------------------------------- one cell


def run_cell(study: Study, cell: Cell, retry_failed: bool = False,
             hooks: CellHooks | None = None) -> CellOutcome:
    """Bring ``cell`` to done: train what is missing (resume from last.pt), then evaluate.

    Returns the outcome; never raises for a failure of the cell itself (it is recorded in status.json
    with ``stage`` train or evaluate). A failed cell is left alone unless ``retry_failed``.
    """
    from imbaseg.training import distributed as D

    hooks = hooks or CellHooks()
    with StopSignals():
        try:
            if D.env_world_size() > 1:
                return _run_distributed(study, cell, retry_failed, hooks)
            return _run_locked(study, cell, retry_failed, hooks)
        except KeyboardInterrupt as exc:  # CellStopped, or the trainer's abort on a late second signal
            signum = getattr(exc, "signum", signal.SIGINT)
            return CellOutcome("stopped", f"stopped by {signal.Signals(signum).name}", signum)


def _lock(cell: Cell, hooks: CellHooks):
    """The run folder's lock, or None when another live process holds it."""
    from imbaseg.locks import LockHeld, describe
    from imbaseg.paths import write_error

    run = RunDir(cell.run_dir)
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(run.path, exc) from exc
    try:
        lock = run.lock(f"study cell {cell.label} ({run.path})")
    except LockHeld as exc:
        hooks.say(f"{cell.label} is running elsewhere: {describe(exc.holder)}; nothing to do here", "warning")
        return None
    if lock.took_over is not None:
        hooks.say(f"took over the lock of {cell.label} from {describe(lock.took_over)}, which is no longer "
                  "running", "warning")
    return lock


def _decide(study: Study, cell: Cell, retry_failed: bool) -> tuple[str, str]:
    """(action, why) with the lock held: action done, failed, train or evaluate."""
    st = cell_state(study, cell, lock=False)
    if st.state == "done":
        return "done", "already done"
    if st.state == "failed" and not retry_failed:
        return "failed", f"failed earlier: {st.why} (--retry-failed runs it again)"
    return ("evaluate" if st.trained else "train"), st.why


def _run_locked(study: Study, cell: Cell, retry_failed: bool, hooks: CellHooks) -> CellOutcome:
    lock = _lock(cell, hooks)
    if lock is None:
        return CellOutcome("busy", f"{cell.label} is running elsewhere")
    try:
        action, why = _decide(study, cell, retry_failed)
        if action in ("done", "failed"):
            return CellOutcome(action, why)
        return _attempt(study, cell, action, hooks)
    finally:
        lock.release()


def _attempt(study: Study, cell: Cell, action: str, hooks: CellHooks, record: bool = True) -> CellOutcome:
    """Train (when ``action`` is train) and evaluate, recording a failure in status.json."""
    run = RunDir(cell.run_dir)
    if record:
        _record_attempt(study, cell, run)
    stage = action
    try:
        if action == "train":
            outcome = _train(cell, run, hooks)
            if outcome is not None:
                return outcome
            stage = "evaluate"
        return _evaluate(study, cell, run)
    except CellStopped as exc:  # outside the trainer's own handling (which records its stops itself)
        if stage == "train":
            name = signal.Signals(exc.signum).name
            run.write_status(state="interrupted", stopped="interrupted", signal=name, error=None)
        raise
    except Exception as exc:  # the cell failed: record it, the study goes on
        error = str(exc) if isinstance(exc, UserError) else f"{exc.__class__.__name__}: {exc}"
        if not isinstance(exc, UserError):
            hooks.say(traceback.format_exc(), "error")
        run.write_status(state="failed", stage=stage, trained=stage == "evaluate", error=error)
        return CellOutcome("failed", f"{stage} failed: {error}")


def _record_attempt(study: Study, cell: Cell, run: RunDir) -> None:
    from imbaseg.locks import slurm_job_id

    status = run.read_status()
    restarts = os.environ.get("SLURM_RESTART_COUNT")
    run.write_status(
        study=study.name,
        cell=cell.key,
        attempts=int(status.get("attempts") or 0) + 1,
        slurm_job=slurm_job_id(),
        slurm_restart_count=int(restarts) if restarts and restarts.isdigit() else None,
    )


def resume_note(run: RunDir) -> str | None:
    """``resuming from last.pt: 2 of 5 epochs done, then 3 of 4 batches of epoch 3`` (None: no last.pt)."""
    from imbaseg.training.run_dir import checkpoint_meta

    last = run.checkpoint_file("last")
    if not last.is_file():
        return None
    meta = checkpoint_meta(last)
    epochs = (meta.get("config") or {}).get("train", {}).get("epochs")
    text = f"resuming from {last}: {meta.get('epoch')} of {epochs} epochs done"
    pos = meta.get("position")
    if pos:
        text += f", then {pos['batch']} of {pos['batches']} batches of epoch {pos['epoch'] + 1}"
    restarts = os.environ.get("SLURM_RESTART_COUNT")
    return text + (f" (Slurm restart {restarts})" if restarts else "")


def _train(cell: Cell, run: RunDir, hooks: CellHooks) -> CellOutcome | None:
    """Train the cell (resuming from last.pt when there is one); an outcome when it did not finish."""
    from imbaseg.training import distributed as D
    from imbaseg.training.trainer import Trainer

    note = resume_note(run) if D.is_main() else None
    if note:
        hooks.say(note)
        run.write_status(resumes=int(run.read_status().get("resumes") or 0) + 1)
    resume = run.path if run.checkpoint_file("last").is_file() else None
    trainer = Trainer(cell.config, run_dir=run.path, resume=resume, callbacks=hooks.training)
    result = trainer.fit()
    if result.stopped == "interrupted":
        name = signal.Signals(result.signal).name if result.signal else "a stop request"
        return CellOutcome("stopped", f"stopped by {name}: last.pt saved, the cell resumes from it",
                           result.signal)
    return None


def _evaluate(study: Study, cell: Cell, run: RunDir) -> CellOutcome:
    """Evaluate on the study's split with its options (``study.evaluate``: ``evaluate_run``'s keywords)."""
    from imbaseg.evaluation.evaluate import evaluate_run

    t0 = time.perf_counter()
    summary = evaluate_run(run.path, split=study.split, device=cell.config.train.device, **study.evaluate)
    run.write_status(state="finished", stage=None, trained=True, error=None, evaluated=study.split,
                     eval_seconds=round(time.perf_counter() - t0, 3))
    dice = (summary.get("metrics") or {}).get("dice", {}).get("mean")
    return CellOutcome("done", "done" + (f": {study.split} Dice {dice:.4f}" if dice is not None else ""))


# ----------------------------------------------------------------------------- under torchrun


def _run_distributed(study: Study, cell: Cell, retry_failed: bool, hooks: CellHooks) -> CellOutcome:
    """Rank 0 locks and decides; every rank trains; rank 0 evaluates (the others are done then)."""
    from imbaseg.training import distributed as D
    from imbaseg.training.device import resolve_device

    D.setup(resolve_device(cell.config.train.device).type)
    lock, decision = None, None
    try:
        if D.is_main():
            lock = _lock(cell, hooks)
            decision = ("busy", "running elsewhere") if lock is None else _decide(study, cell, retry_failed)
        action, why = D.broadcast_object(decision)
        if action in ("done", "failed", "busy"):
            return CellOutcome(action, why)
        if action == "train":
            if D.is_main():
                _record_attempt(study, cell, RunDir(cell.run_dir))
            outcome = _train_ranks(cell, hooks)
            if outcome is not None or not D.is_main():
                return outcome or CellOutcome("done", "trained (rank 0 evaluates)")
        return _attempt(study, cell, "evaluate", hooks, record=action == "evaluate")
    finally:
        D.cleanup()
        if lock is not None:
            lock.release()


def _train_ranks(cell: Cell, hooks: CellHooks) -> CellOutcome | None:
    run = RunDir(cell.run_dir)
    try:
        return _train(cell, run, hooks)
    except Exception as exc:
        from imbaseg.training import distributed as D

        if D.is_main():
            error = str(exc) if isinstance(exc, UserError) else f"{exc.__class__.__name__}: {exc}"
            run.write_status(state="failed", stage="train", trained=False, error=error)
        return CellOutcome("failed", f"train failed: {exc}")
