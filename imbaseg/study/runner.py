"""Running a study: the cells that are not done go to an executor, which runs each as an ordinary
run in its own process (``imbaseg study run-cell``, see ``imbaseg.study.cell``); the runner follows
them through their run folders and reports through callbacks (it prints nothing).

Executors: ``LocalExecutor`` (here: ``jobs`` processes at once, threads or GPUs split between them)
and ``imbaseg.study.slurm.SlurmExecutor`` (one Slurm job array). Both have ``launch(cells)``,
``poll() -> [Ended]``, ``active() -> [Cell]`` and ``stop(signum) -> bool`` (True: the cells keep
running without us, as Slurm jobs do).

What a study run keeps in ``studies/<name>/`` (``study_files``): ``logs/<cell>.log`` (each cell
process's output, appended per attempt), ``slurm/`` (submitit's job files and logs) and
``last_run.json`` (the outcome of the last ``study run``, written atomically). The run folders
themselves stay the truth: a cell's state is always read back from them (``imbaseg.study.state``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbaseg.study.cell import EXIT_BUSY, EXIT_DONE, EXIT_FAILED, cell_command
from imbaseg.study.spec import Cell, Study
from imbaseg.study.state import cell_state
from imbaseg.training.run_dir import RunDir

RUNNABLE = ("todo", "partial")  # and failed with --retry-failed


@dataclass
class CellView:
    """One row of the study's table: a cell, its state (``state.STATES``, or ``queued`` for a cell this
    study run is about to run) and what the table shows beside it."""

    cell: Cell
    state: str
    why: str
    seconds: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    dice: float | None = None  # the split's mean Dice of a done cell (with details)
    error: str | None = None  # the full recorded error of a failed cell


def describe_cell(study: Study, cell: Cell, details: bool = False) -> CellView:
    """The cell's state read from its run folder; ``details`` adds the Dice of a done cell."""
    st = cell_state(study, cell)
    status = RunDir(cell.run_dir).read_status() if RunDir(cell.run_dir).status_file.is_file() else {}
    v = CellView(cell, st.state, st.why, st.seconds, status.get("epoch"), status.get("epochs"),
                 error=st.error)
    if details and st.state == "done":
        v.dice = _dice(study, cell)
    return v


def _dice(study: Study, cell: Cell) -> float | None:
    from imbaseg.evaluation.report import read_summary

    try:
        summary = read_summary(RunDir(cell.run_dir).summary_json(study.split))
        return float(summary["metrics"]["dice"]["mean"])
    except Exception:  # an odd summary: the table shows no Dice rather than failing
        return None


def plan(study: Study, selected: list[Cell], details: bool = False) -> list[CellView]:
    """Every selected cell's view; reads small files, writes nothing."""
    return [describe_cell(study, c, details) for c in selected]


def to_run(view: CellView, retry_failed: bool) -> bool:
    return view.state in RUNNABLE or (retry_failed and view.state == "failed")


# ----------------------------------------------------------------------------- the study's own files


@dataclass(frozen=True)
class StudyFiles:
    """What ``study run`` keeps in ``studies/<name>/`` (the report writes its own files beside them)."""

    folder: Path

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def slurm(self) -> Path:
        return self.folder / "slurm"

    @property
    def last_run(self) -> Path:
        return self.folder / "last_run.json"

    def log(self, cell: Cell) -> Path:
        """``logs/<dataset>_<loss slug>_<run folder name>.log``."""
        r = cell.run_dir
        return self.logs / f"{r.parent.parent.name}_{r.parent.name}_{r.name}.log"


def study_files(study: Study, root=None) -> StudyFiles:
    return StudyFiles(study.out_dir(root))


def tail(path: Path, lines: int = 1) -> str:
    """The last ``lines`` non-empty lines of a text file ('' when unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def exit_text(code: int | None) -> str:
    """``exit code 1``, ``signal SIGKILL``..."""
    if code is None:
        return "an unknown exit"
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"exit code {code} ({signal.Signals(code - 128).name})"
    return f"exit code {code}"


# ----------------------------------------------------------------------------- the local executor


@dataclass
class Ended:
    """A cell whose process (or Slurm job) ended: its exit code (None when unknown) and a note."""

    cell: Cell
    code: int | None
    note: str = ""


def visible_gpus() -> list[str]:
    """The GPUs a cell may be given: CUDA_VISIBLE_DEVICES when set, else the ones ``nvidia-smi -L`` lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@dataclass
class _Proc:
    cell: Cell
    popen: subprocess.Popen
    gpu: str | None


class LocalExecutor:
    """Each cell in its own process (a crash takes only that cell down), ``jobs`` at once.

    Each process gets ``cores // jobs`` threads (at least 1; OMP_NUM_THREADS, MKL_NUM_THREADS) and, with
    GPUs, one of them (CUDA_VISIBLE_DEVICES, round robin over the free ones). Cell processes run in
    their own session, so a Ctrl-C reaches only the study, which forwards it once per press; they
    stop by themselves (saving last.pt) when the study process dies.
    """

    name = "local"

    def __init__(self, study: Study, files: StudyFiles, jobs: int = 1, root=None, retry_failed: bool = False):
        from imbaseg.errors import UserError

        if jobs < 1:
            raise UserError(f"--jobs must be at least 1, got {jobs}")
        self.study, self.files, self.jobs, self.root = study, files, jobs, root
        self.retry_failed = retry_failed
        self.gpus = visible_gpus()
        self.threads = max(1, cpu_count() // jobs)
        self.queue: deque[Cell] = deque()
        self.procs: list[_Proc] = []
        self.skipped: list[Ended] = []  # queued cells found running elsewhere or done: never started
        self.stopping = False

    def describe(self) -> str:
        where = f"{self.threads} CPU thread(s) per cell"
        if self.gpus:
            where = f"{len(self.gpus)} GPU(s), one per cell, and " + where
        return f"local executor: {self.jobs} cell(s) at once, {where}"

    def launch(self, cells: list[Cell]) -> None:
        self.queue.extend(cells)
        self._fill()

    def active(self) -> list[Cell]:
        return [p.cell for p in self.procs] + list(self.queue) + [e.cell for e in self.skipped]

    def running(self) -> dict[str, int]:
        """Cell key -> pid of the processes running now."""
        return {p.cell.key: p.popen.pid for p in self.procs}

    def poll(self) -> list[Ended]:
        ended, self.skipped = self.skipped, []
        for p in list(self.procs):
            code = p.popen.poll()
            if code is not None:
                self.procs.remove(p)
                ended.append(Ended(p.cell, code))
        self._fill()
        return ended

    def stop(self, signum: int) -> bool:
        """Start no more cells; forward ``signum`` to the running ones (they save last.pt and exit)."""
        self.stopping = True
        self.queue.clear()
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.popen.pid, signum)
        return False

    def _fill(self) -> None:
        while self.queue and len(self.procs) < self.jobs and not self.stopping:
            cell = self.queue.popleft()
            st = cell_state(self.study, cell)  # changed since it was queued? (another study run)
            if st.state == "running":
                self.skipped.append(Ended(cell, EXIT_BUSY, "running elsewhere"))
            elif st.state == "done" or (st.state == "failed" and not self.retry_failed):
                self.skipped.append(Ended(cell, EXIT_DONE if st.state == "done" else EXIT_FAILED))
            else:
                self._start(cell)

    def _free_gpu(self) -> str | None:
        if not self.gpus:
            return None
        used = [p.gpu for p in self.procs]
        return min(self.gpus, key=lambda g: (used.count(g), self.gpus.index(g)))

    def _start(self, cell: Cell) -> None:
        from imbaseg.paths import write_error

        gpu = self._free_gpu()
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "PYTHONUNBUFFERED": "1"}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        cmd = cell_command(self.study.path, cell.key, self.root, retry_failed=self.retry_failed,
                           parent_pid=os.getpid())
        log = self.files.log(cell)
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as out:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                out.write(f"==== {stamp} study run pid {os.getpid()}: {' '.join(cmd)}\n".encode())
                out.flush()
                popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        except OSError as exc:
            raise write_error(log, exc) from exc
        self.procs.append(_Proc(cell, popen, gpu))


# ----------------------------------------------------------------------------- the runner


@dataclass
class RunnerCallbacks:
    """How a study run reports; every hook is optional. ``on_start(views, executor_text)``;
    ``on_change(view)`` when a cell's state or note changes; ``on_tick(views)`` about twice a second
    (a live table redraws from it); ``on_message(text, level)`` for notices (stale locks, stopping)."""

    on_start: Callable[[list[CellView], str], None] | None = None
    on_change: Callable[[CellView], None] | None = None
    on_tick: Callable[[list[CellView]], None] | None = None
    on_message: Callable[[str, str], None] | None = None


@dataclass
class StudyRun:
    """The outcome of ``run_study``: every selected cell's final view, the failed ones and the ones not
    finished (stopped, crashed without a record, Slurm jobs gone), the signal that stopped the study."""

    views: list[CellView]
    failed: list[CellView] = field(default_factory=list)
    unfinished: list[CellView] = field(default_factory=list)
    stopped_by: int | None = None
    detached: bool = False  # stopped following cells that keep running (Slurm)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unfinished and self.stopped_by is None


class _StopRequests:
    """SIGINT, SIGTERM and SIGHUP to the study process, queued for the runner's loop (main thread only)."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self):
        self.pending: list[int] = []
        self.first: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.pending.append(signum)
        if self.first is None:
            self.first = signum

    def take(self) -> list[int]:
        out, self.pending = self.pending, []
        return out

    def __enter__(self) -> _StopRequests:
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old)


class _Runner:
    """The loop of ``run_study`` (state kept between its small steps)."""

    def __init__(self, study: Study, selected: list[Cell], executor, retry_failed: bool,
                 callbacks: RunnerCallbacks, poll_s: float):
        self.study, self.executor, self.retry_failed = study, executor, retry_failed
        self.cb, self.poll_s = callbacks, poll_s
        self.views = {c.key: describe_cell(study, c) for c in selected}
        self.order = [c.key for c in selected]
        self.waiting: dict[str, Cell] = {}  # running elsewhere: followed, run here if left unfinished
        self.notes: dict[str, str] = {}  # key -> why a cell was left unfinished in this study run
        self.stopped_by: int | None = None
        self.detached = False
        self._last_check = 0.0

    # -- reporting
    def _emit(self, hook: str, *args) -> None:
        fn = getattr(self.cb, hook, None)
        if fn is not None:
            fn(*args)

    def _set(self, key: str, view: CellView) -> None:
        old = self.views.get(key)
        self.views[key] = view
        if old is None or (old.state, old.why) != (view.state, view.why):
            self._emit("on_change", view)

    def all_views(self) -> list[CellView]:
        return [self.views[k] for k in self.order]

    # -- steps
    def start(self) -> None:
        todo = []
        for key in self.order:
            v = self.views[key]
            if to_run(v, self.retry_failed):
                self._stale_lock_note(v.cell)
                self.views[key] = CellView(v.cell, "queued", f"queued ({v.state}: {v.why})", v.seconds,
                                           v.epoch, v.epochs)
                todo.append(v.cell)
            elif v.state == "running":
                self.waiting[key] = v.cell
        self._emit("on_start", self.all_views(), self.executor.describe())
        if todo:
            self.executor.launch(todo)

    def _stale_lock_note(self, cell: Cell) -> None:
        from imbaseg.locks import describe, is_stale, read_holder

        holder = read_holder(RunDir(cell.run_dir).lock_file)
        if holder and is_stale(holder):
            self._emit("on_message", f"{cell.label}: the lock of {describe(holder)} is stale (that process "
                       "or job is gone); the cell takes it over", "warning")

    def step(self, stops: _StopRequests) -> bool:
        """One round: signals, ended cells, progress, cells running elsewhere; False when all is over."""
        for signum in stops.take():
            self._stop(signum)
        if self.detached:
            return False
        for ended in self.executor.poll():
            self._ended(ended)
        self._refresh()
        if time.monotonic() - self._last_check > 2.0:
            self._last_check = time.monotonic()
            self._check_waiting()
        self._emit("on_tick", self.all_views())
        return bool(self.executor.active()) or (bool(self.waiting) and self.stopped_by is None)

    def _stop(self, signum: int) -> None:
        first = self.stopped_by is None
        self.stopped_by = self.stopped_by or signum
        forward = signal.SIGTERM if signum == getattr(signal, "SIGHUP", None) else signum
        name = signal.Signals(signum).name
        self.detached = self.executor.stop(forward)
        if self.detached:
            text = f"{name}: no longer following the cells; they go on without this process"
        elif first:
            text = (f"{name}: stopping; running cells save checkpoints/last.pt and stop ({name} again "
                    "after a second aborts them at once)")
        else:
            text = f"{name} again: passed on to the running cells"
        self._emit("on_message", text, "warning")

    def _ended(self, ended: Ended) -> None:
        cell, code = ended.cell, ended.code
        v = describe_cell(self.study, cell)
        if code == EXIT_BUSY or v.state == "running":
            self.waiting[cell.key] = cell
        elif v.state in ("done", "failed"):
            pass
        elif code is not None and code > 128:  # stopped by a signal it handled: last.pt saved
            v.why = f"stopped ({exit_text(code)}); {v.why}"
        elif code is not None and code not in (EXIT_DONE, EXIT_FAILED):  # killed or crashed, nothing recorded
            v = self._crashed(cell, code)
        else:
            v.why = f"{ended.note or 'ended with ' + exit_text(code)} before the cell finished; {v.why}"
        if v.state not in ("done", "failed", "running"):
            self.notes[cell.key] = v.why
        self._set(cell.key, v)

    def _crashed(self, cell: Cell, code: int) -> CellView:
        """A cell process that died without recording why (killed, a crash): record it as failed."""
        log = self.executor.files.log(cell)
        last = tail(log)
        error = f"the cell process ended with {exit_text(code)}; see {log}"
        error += f" ({last[:300]})" if last else ""
        run = RunDir(cell.run_dir)
        if run.path.is_dir():
            run.write_status(state="failed", error=error)
        v = describe_cell(self.study, cell)
        if v.state != "failed":  # it never made its run folder: nothing to record in
            v.why = error
        return v

    def _refresh(self) -> None:
        """Queued cells that started, and the epoch progress of running ones (their status.json); a cell
        that stopped running stays shown as running until its process's end is seen."""
        for key, v in self.views.items():
            if v.state in ("queued", "running"):
                now = describe_cell(self.study, v.cell)
                if now.state == "running":
                    self._set(key, now)

    def _check_waiting(self) -> None:
        for key, cell in list(self.waiting.items()):
            v = describe_cell(self.study, cell)
            if v.state == "running":
                continue
            del self.waiting[key]
            if to_run(v, self.retry_failed) and self.stopped_by is None and v.state != "failed":
                self._emit("on_message", f"{cell.label} was left {v.state} by the process that ran it; "
                           "running it here", "info")
                self._set(key, CellView(cell, "queued", f"queued ({v.state}: {v.why})", v.seconds))
                self.executor.launch([cell])
            else:
                self._set(key, v)

    def result(self) -> StudyRun:
        views = []
        for key in self.order:
            v = self.views[key]
            keep = self.detached and v.state in ("queued", "running")  # Slurm jobs we stopped following
            views.append(v if keep else describe_cell(self.study, v.cell, details=True))
        for v in views:
            if v.state in ("todo", "partial") and v.cell.key in self.notes:
                v.why = self.notes[v.cell.key]
        failed = [v for v in views if v.state == "failed"]
        unfinished = [v for v in views if v.state not in ("done", "failed")]
        return StudyRun(views, failed, unfinished, self.stopped_by, self.detached)


def run_study(study: Study, selected: list[Cell], executor, retry_failed: bool = False,
              callbacks: RunnerCallbacks | None = None, poll_s: float = 0.5) -> StudyRun:
    """Run every selected cell that is not done (failed ones too with ``retry_failed``) on ``executor``.

    Cells running elsewhere (another ``study run``, a Slurm job) are followed, and run here if they end
    unfinished. SIGINT/SIGTERM/SIGHUP stop the study: the running cells get the signal and save
    last.pt (local), or keep running as Slurm jobs while the study stops following them. Returns the
    final views; ``last_run.json`` records them.
    """
    runner = _Runner(study, selected, executor, retry_failed, callbacks or RunnerCallbacks(), poll_s)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with _StopRequests() as stops:
        runner.start()
        while runner.step(stops):
            time.sleep(poll_s)
    result = runner.result()
    files = getattr(executor, "files", None)
    if files is not None:
        write_last_run(files, study, result, started, getattr(executor, "name", "?"))
    return result


def write_last_run(files: StudyFiles, study: Study, result: StudyRun, started: str, executor: str) -> None:
    """``studies/<name>/last_run.json``: when, how and with what outcome the last study run ended."""
    from imbaseg.paths import atomic_write_text

    def row(v: CellView) -> dict:
        return {"dataset": v.cell.dataset, "loss": v.cell.loss, "seed": v.cell.seed, "key": v.cell.key,
                "run_dir": str(v.cell.run_dir), "state": v.state, "why": v.why, "seconds": v.seconds}

    data = {
        "study": study.name,
        "study_file": str(study.path),
        "executor": executor,
        "started": started,
        "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stopped_by": signal.Signals(result.stopped_by).name if result.stopped_by else None,
        "detached": result.detached,
        "cells": [row(v) for v in result.views],
        "failed": [v.cell.key for v in result.failed],
        "unfinished": [v.cell.key for v in result.unfinished],
    }
    atomic_write_text(files.last_run, json.dumps(data, indent=2, default=str) + "\n")


__all__ = ["CellView", "LocalExecutor", "RunnerCallbacks", "StudyRun", "describe_cell", "plan", "run_study",
           "study_files"]
