"""Real small disks for the write-error tests: a tmpfs of a given size, filled or remounted read-only.

``mount -t tmpfs -o size=...`` needs root (CAP_SYS_ADMIN); elsewhere the tests that use ``Disks`` skip
with the reason. Root ignores file permissions, so a read-only folder is a tmpfs remounted ``ro``, never
a chmod.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest


class Disks:
    """Mounts made by one test; ``unmount_all`` (the fixture's teardown) undoes them in reverse order."""

    def __init__(self):
        self.mounted: list[Path] = []

    def mount(self, path: Path, size: str) -> Path:
        """A tmpfs of ``size`` (e.g. "512k", "4m") at ``path`` (created)."""
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs (a real full or read-only disk) needs root")
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip() or out.returncode}")
        self.mounted.append(path)
        return path

    def readonly(self, path: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)

    def writable(self, path: Path) -> None:
        subprocess.run(["mount", "-o", "remount,rw", str(path)], check=True, capture_output=True)

    def unmount_all(self) -> None:
        for path in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        self.mounted.clear()


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the disk of ``folder`` with ``folder/filler`` until ENOSPC, then give back ``leave`` bytes."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_leftovers(folder: Path) -> list[Path]:
    """Temp files and staging folders of ``imbaseg.paths`` anywhere under ``folder``."""
    from imbaseg.paths import temp_owner

    return [p for p in folder.rglob(".*") if temp_owner(p.name) is not None]
