"""Where things live: the data, runs and figures roots, and run-directory naming.

All roots default to the current directory; ``IMBASEG_HOME`` (or an explicit ``root``) moves them.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path


def home(root: str | os.PathLike | None = None) -> Path:
    """The project root: ``root`` if given, else $IMBASEG_HOME, else the current directory."""
    if root is not None:
        return Path(root)
    env = os.environ.get("IMBASEG_HOME")
    return Path(env) if env else Path.cwd()


def data_root(root=None) -> Path:
    return home(root) / "data"


def raw_dir(dataset: str, root=None) -> Path:
    """``data/raw/<dataset>``: archives and files exactly as published."""
    return data_root(root) / "raw" / dataset


def prepared_dir(dataset: str, root=None) -> Path:
    """``data/prepared/<dataset>``: images/, masks/, fov/, manifest.csv, prepare.json."""
    return data_root(root) / "prepared" / dataset


def runs_root(root=None) -> Path:
    return home(root) / "runs"


def figures_dir(root=None) -> Path:
    return home(root) / "Figures"


_SAFE = re.compile(r"[^A-Za-z0-9._+()=,-]+")


def safe_name(text: str) -> str:
    """A file-system-safe version of a dataset, loss or run name."""
    return _SAFE.sub("_", str(text)).strip("_") or "run"


def new_run_dir(dataset: str, loss: str, name: str | None = None, root=None) -> Path:
    """Create and return ``runs/<dataset>/<loss>/<name or timestamp>/``; never reuses a folder.

    An explicit name that exists gets a ``-2``, ``-3``... suffix rather than overwriting.
    """
    parent = runs_root(root) / safe_name(dataset) / safe_name(loss)
    parent.mkdir(parents=True, exist_ok=True)
    base = safe_name(name) if name else time.strftime("%Y%m%d-%H%M%S")
    candidate, k = parent / base, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            k += 1
            candidate = parent / f"{base}-{k}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
