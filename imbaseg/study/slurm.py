"""The Slurm executor: the cells to run as one job array, submitted through submitit (an optional
extra: ``pip install imbaseg[slurm]``).

Each array task runs ``CellJob(key)``: the cell command (``imbaseg.study.cell.cell_command``; under
torchrun with ``gpus_per_cell`` > 1) as a child process, then reads the cell's state back from its run
folder. Preemption and time limits lose no work: Slurm sends USR2 ``signal_delay_s`` seconds before
the end (``--signal=USR2@90``, submitit's convention; ``scancel --signal=USR2 JOB`` does the same by
hand); submitit calls ``CellJob.checkpoint``, which passes the signal on to the cell (it saves last.pt:
every process of the job may get the signal from Slurm too, and a repeat within a second is the same
stop), waits for it to exit and returns the same call, which submitit requeues (``scontrol requeue``).
The requeued task (``SLURM_RESTART_COUNT`` + 1) finds the cell partial and resumes from last.pt. A
SIGTERM (``scancel``, preemption) is passed on too: the cell saves, the job ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from imbaseg.errors import UserError
from imbaseg.study.cell import EXIT_BUSY, cell_command
from imbaseg.study.runner import Ended, StudyFiles, cpu_count, exit_text
from imbaseg.study.spec import Cell, Study

# squeue states of a job that is not over yet
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT")
SQUEUE_EVERY_S = 3.0  # how often the study asks squeue (each call is a request to slurmctld)


@dataclass(frozen=True)
class SlurmOptions:
    """What each cell's job asks for (the ``--slurm-*`` flags of ``study run``)."""

    partition: str | None = None
    time: str = "24:00:00"  # per job; a longer cell is requeued at the limit and resumes
    gpus_per_cell: int = 0
    cpus_per_cell: int | None = None
    mem: str | None = None  # e.g. 32G
    array_parallelism: int = 256  # cells running at once
    account: str | None = None
    setup: tuple[str, ...] = ()  # shell lines before the cell, e.g. "module load cuda"
    signal_delay_s: int = 90  # USR2 this long before the time limit: time to save last.pt
    max_requeues: int = 1000  # time-limit requeues per cell (each one continues from last.pt)


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: str) -> int:
    """Slurm's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) in whole
    minutes (at least 1); UserError otherwise."""
    m = _TIME.match(str(text).strip())
    if not m:
        raise UserError(f"bad --slurm-time '{text}': use minutes, HH:MM:SS or D-HH:MM:SS, e.g. 24:00:00")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        seconds = a * 60 + b
    else:  # MM
        seconds = a * 60
    if seconds <= 0:
        raise UserError(f"--slurm-time '{text}' must be positive")
    return max(1, -(-seconds // 60))


def require_submitit():
    """The submitit module, or a UserError saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit: pip install 'imbaseg[slurm]'") from None
    return submitit


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; [] elsewhere)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[-1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _ignore_user_signals() -> None:
    """In the cell's child before exec: torchrun's agent would die of USR1/USR2 (their default action);
    the cell processes themselves install their own handlers."""
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


class CellJob:
    """What one array task runs: the cell command as a child process (pickled by submitit by reference;
    only plain attributes travel)."""

    def __init__(self, study_file: str, root: str | None, nproc: int = 1, retry_failed: bool = False,
                 signal_delay_s: int = 90):
        self.study_file, self.root, self.nproc = study_file, root, nproc
        self.retry_failed, self.signal_delay_s = retry_failed, signal_delay_s
        self._proc: subprocess.Popen | None = None
        self._forwarded: int | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_proc", "_forwarded")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._proc, self._forwarded = None, None

    def __call__(self, key: str) -> str:
        cmd = cell_command(self.study_file, key, self.root, nproc=self.nproc, retry_failed=self.retry_failed,
                           parent_pid=os.getpid())
        threads = max(1, int(os.environ.get("SLURM_CPUS_PER_TASK") or cpu_count()) // max(1, self.nproc))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONUNBUFFERED": "1"}
        previous = signal.signal(signal.SIGTERM, self._on_term)
        try:
            self._proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                          preexec_fn=_ignore_user_signals)
            while (code := self._proc.poll()) is None:
                time.sleep(0.5)
        finally:
            signal.signal(signal.SIGTERM, previous)
        return self._conclude(key, code)

    def _on_term(self, signum, frame) -> None:
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        """Pass ``signum`` on to the cell's processes, once (the cell may have had it from Slurm already)."""
        if self._proc is None or self._forwarded is not None:
            return
        self._forwarded = signum
        for pid in [self._proc.pid, *_descendants(self._proc.pid)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def checkpoint(self, key: str):
        """submitit calls this on USR2 (time limit or preemption): the cell saves last.pt and exits, then
        the same call is requeued."""
        from submitit.helpers import DelayedSubmission

        from imbaseg.paths import pid_alive

        self._forward(signal.SIGUSR2)
        deadline = time.monotonic() + max(10, self.signal_delay_s - 15)
        while self._proc is not None and pid_alive(self._proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        fresh = CellJob(self.study_file, self.root, self.nproc, self.retry_failed, self.signal_delay_s)
        return DelayedSubmission(fresh, key)

    def _conclude(self, key: str, code: int) -> str:
        """The cell's state after its process ended: a line, or RuntimeError (the job shows as FAILED)."""
        from imbaseg.study.cell import find_cell
        from imbaseg.study.spec import load_study
        from imbaseg.study.state import cell_state

        study = load_study(self.study_file)
        cell = find_cell(study, key, self.root)
        st = cell_state(study, cell)
        if st.state == "done":
            return f"{cell.label}: done"
        if code == EXIT_BUSY or st.state == "running":
            return f"{cell.label}: {st.why}"
        if st.state == "failed":
            raise RuntimeError(f"{cell.label} failed: {st.error}")
        raise RuntimeError(f"{cell.label} is {st.state} after {exit_text(code)} ({st.why}); `imbaseg study "
                           f"run {self.study_file}` again continues it")


def squeue_states(job_ids: list[str]) -> dict[str, str] | None:
    """``{"123_4": "RUNNING", ...}`` for the given jobs (array tasks one by one); None when squeue cannot
    answer now (the caller asks again later). Jobs squeue no longer knows are left out."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return {} if "invalid job id" in out.stderr.lower() else None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


class SlurmExecutor:
    """The cells as one Slurm job array per ``launch``; ``stop`` leaves the jobs running (they are the
    cluster's now: ``scancel`` stops them, saving last.pt) and the study stops following them."""

    name = "slurm"

    def __init__(self, study: Study, files: StudyFiles, options: SlurmOptions, root=None,
                 retry_failed: bool = False):
        self.study, self.files, self.options, self.root = study, files, options, root
        self.retry_failed = retry_failed
        self.nproc = max(1, options.gpus_per_cell)
        params = self._parameters()  # the flags first: a typo fails before anything else
        submitit = require_submitit()
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise UserError("--executor slurm needs Slurm's sbatch and srun on PATH: run the study on the "
                            "cluster's login node (or use --executor local)")
        self.executor = submitit.SlurmExecutor(folder=str(files.slurm / "%j"),
                                               max_num_timeout=options.max_requeues)
        self.executor.update_parameters(**params)
        self.jobs: dict[str, Cell] = {}  # job id (array_task) -> cell
        self.states: dict[str, str] = {}
        self.logs: dict[str, Path] = {}  # job id -> submitit's log of the job (stdout; stderr beside it)
        self._asked = 0.0

    def _parameters(self) -> dict:
        o = self.options
        checks = (("gpus-per-cell", o.gpus_per_cell, 0), ("cpus-per-cell", o.cpus_per_cell, 1),
                  ("array-parallelism", o.array_parallelism, 1), ("signal-delay", o.signal_delay_s, 10))
        for flag, value, least in checks:
            if value is not None and value < least:
                raise UserError(f"--slurm-{flag} must be at least {least}, got {value}")
        params = {
            "job_name": f"imbaseg-{self.study.name}",
            "time": parse_time(o.time),
            "nodes": 1,
            "ntasks_per_node": 1,
            "cpus_per_task": o.cpus_per_cell,
            "gpus_per_node": o.gpus_per_cell or None,
            "mem": o.mem,
            "partition": o.partition,
            "account": o.account,
            "setup": list(o.setup) or None,
            "array_parallelism": o.array_parallelism,
            "signal_delay_s": o.signal_delay_s,
        }
        return {k: v for k, v in params.items() if v is not None}

    def describe(self) -> str:
        o = self.options
        what = f"{o.gpus_per_cell} GPU(s) (torchrun)" if o.gpus_per_cell > 1 else f"{o.gpus_per_cell} GPU"
        return (f"slurm executor: one job array, {what} and {o.cpus_per_cell or 'default'} CPU(s) per cell, "
                f"time {o.time}, up to {o.array_parallelism} at once; job files in {self.files.slurm}")

    def launch(self, cells: list[Cell]) -> None:
        if not cells:
            return
        job = CellJob(str(self.study.path.resolve()), str(self.root) if self.root else None, self.nproc,
                      self.retry_failed, self.options.signal_delay_s)
        try:
            jobs = self.executor.map_array(job, [c.key for c in cells])
        except Exception as exc:  # sbatch refused: the cluster's message is the useful part
            raise UserError(f"sbatch refused the study's job array: {str(exc).strip()[-500:]}") from exc
        for j, c in zip(jobs, cells, strict=True):
            self.jobs[j.job_id] = c
            self.states[j.job_id] = "PENDING"
            self.logs[j.job_id] = Path(str(j.paths.stdout).replace("%t", "0"))

    def active(self) -> list[Cell]:
        return [self.jobs[j] for j, s in self.states.items() if s in ACTIVE]

    def poll(self) -> list[Ended]:
        if not self.active() or time.monotonic() - self._asked < SQUEUE_EVERY_S:
            return []
        self._asked = time.monotonic()
        now = squeue_states([j for j, s in self.states.items() if s in ACTIVE])
        if now is None:
            return []
        ended = []
        for j, s in list(self.states.items()):
            if s not in ACTIVE:
                continue
            new = now.get(j, "ENDED")
            self.states[j] = new
            if new not in ACTIVE:
                ended.append(Ended(self.jobs[j], None, f"Slurm job {j} ended ({new}; see {self.logs[j]})"))
        return ended

    def stop(self, signum: int) -> bool:
        return True
