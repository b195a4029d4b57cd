"""Lock files that work on a network file system: one owner of "who is using this folder".

A lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local file systems and on NFS v3+),
holding JSON: host, pid, Slurm job id (when under Slurm), start time, a random token and what
it is for. A second process finds it and stops with one line naming the holder. A lock is
*stale* when its holder is known to be gone: same host and the pid no longer runs, or a Slurm
job id that ``squeue`` no longer lists. A stale lock is taken over (renamed away atomically, so
two processes cannot both take it over) and ``Lock.took_over`` says from whom.

``waiting_lock`` is the other kind: an advisory ``flock`` that a second process waits on instead of
stopping (one process builds a cache or a synthetic dataset, the others then use it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbaseg.errors import UserError
from imbaseg.paths import pid_alive


class LockHeld(UserError):
    """Another live process holds the lock."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


def slurm_job_id() -> str | None:
    """``<array job>_<task>`` inside a Slurm array task, the job id inside a plain job, else None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host node1 (Slurm job 45_2) since 2026-11-30T10:00:00`` from a lock's content."""
    job = f" (Slurm job {holder['job']})" if holder.get("job") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{job} since {holder.get('started', '?')}"


def _slurm_job_alive(job: str) -> bool | None:
    """True/False when squeue can tell, None when it cannot (no Slurm here)."""
    if shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=15
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # an unknown (finished and purged) job id makes squeue fail with "Invalid job id"
        return False if "invalid job id" in (out.stderr or "").lower() else None
    states = [s.strip() for s in out.stdout.splitlines() if s.strip()]
    return any(s not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL",
                         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE") for s in states)


def is_stale(holder: dict[str, Any]) -> bool:
    """True when the holder is known to be gone (dead pid here, or a Slurm job squeue says ended)."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if not pid_alive(holder["pid"]):
            return True
        # the pid runs: the same process, unless the number was reused by a newer process
        started = holder.get("pid_start")
        return started is not None and process_start(holder["pid"]) not in (None, started)
    job = holder.get("job")
    if job:
        alive = _slurm_job_alive(str(job))
        return alive is False
    return False


def _is_self(holder: dict[str, Any]) -> bool:
    return (
        holder.get("host") == socket.gethostname()
        and holder.get("pid") == os.getpid()
        and holder.get("pid_start") == process_start(os.getpid())
    )


def read_holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """The lock's content, or None when there is no lock; an unreadable lock gives ``{}``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Lock:
    """A held lock; release it with ``release()`` or use it as a context manager."""

    path: Path
    content: dict[str, Any]
    took_over: dict[str, Any] | None = None  # the stale holder that was replaced, if any
    released: bool = field(default=False, repr=False)

    def release(self) -> None:
        """Remove the lock file if it is still ours (same token)."""
        if self.released:
            return
        self.released = True
        holder = read_holder(self.path)
        if holder and holder.get("token") == self.content["token"]:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(path: str | os.PathLike, what: str, **extra: Any) -> Lock:
    """Take the lock file ``path`` for ``what`` (e.g. "run folder runs/x"); LockHeld when a live
    process holds it. ``extra`` keys are stored in the lock (e.g. the command)."""
    path = Path(path)
    content = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": process_start(os.getpid()),
        "job": slurm_job_id(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "token": uuid.uuid4().hex,
        "what": what,
        **extra,
    }
    took_over = None
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            if holder is None:
                continue  # released between our two calls: try again
            if holder == {} and _young(path):
                time.sleep(0.2)  # being written right now
                holder = read_holder(path) or {}
            if holder and _is_self(holder):
                # this very process holds it already (a study cell trains in-process): a nested
                # hold that leaves the outer one in place when released
                return Lock(path, holder, None, released=True)
            if holder and not is_stale(holder):
                raise LockHeld(
                    f"{what} is in use by {describe(holder)}. Wait for it to finish; if that process "
                    f"is gone for good, delete {path}",
                    holder,
                ) from None
            # stale (or unreadable and old): move it away atomically; only one process wins the rename
            aside = path.with_name(f".{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            with contextlib.suppress(OSError):
                aside.unlink()
            took_over = holder or {"host": "?", "pid": "?"}
            continue
        except OSError as exc:
            from imbaseg.paths import write_error

            raise write_error(path, exc) from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(content, f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a full disk: no half-written lock left behind
            from imbaseg.paths import write_error

            with contextlib.suppress(OSError):
                path.unlink()
            raise write_error(path, exc) from exc
        return Lock(path, content, took_over)
    raise LockHeld(f"could not take the lock {path} for {what}: it keeps changing hands", {})


def _young(path: Path, seconds: float = 5.0) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return False


@contextlib.contextmanager
def waiting_lock(path: str | os.PathLike):
    """Hold an exclusive advisory lock on ``path`` (``fcntl.flock``), waiting while another process has it.

    For work that several processes may start at once and only one should do (the loader cache, a
    synthetic dataset's first prepare): the others wait, then find the work done. The kernel drops the
    lock when its holder dies, so nothing stale is left behind. A no-op where fcntl does not exist.
    """
    try:
        import fcntl
    except ImportError:  # Windows: concurrent builders do the work twice, each writing atomically
        yield
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as exc:
        from imbaseg.paths import write_error

        raise write_error(path, exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
