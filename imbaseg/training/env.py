"""env.json: what a run ran on (versions, device, git commit), so it can be reproduced."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import imbaseg
from imbaseg.paths import atomic_write_text


def git_commit() -> str | None:
    """The commit of the imbaseg source tree, with '+dirty' when it has local changes; None outside git."""
    src = Path(imbaseg.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, world_size: int = 1) -> dict:
    import numpy
    import timm

    info = {
        "imbaseg": imbaseg.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "world_size": world_size,
        "git_commit": git_commit(),
        "argv": sys.argv,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return info


def write_env(path: Path, device: torch.device, world_size: int = 1) -> None:
    atomic_write_text(path, json.dumps(environment(device, world_size), indent=2) + "\n")
