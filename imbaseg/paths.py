"""Where things live, and how a file that matters is written.

Roots: ``data/``, ``runs/``, ``studies/`` and ``Figures/`` default to the current directory;
``IMBASEG_HOME`` (or an explicit ``root``) moves them. Run folders are named
``runs/<dataset>/<loss slug>/<name>``; what lies inside a run folder belongs to
``imbaseg.training.run_dir``.

Writing (the one owner of atomic writes): every file goes to a temp file in the same folder
(``.<name>.<pid>.tmp``), is fsynced, then ``os.replace``d; a folder is filled as
``.<name>.tmp-<pid>-<hex>`` and renamed into place whole. A full disk or a read-only folder becomes
one ``UserError`` naming the path and the space needed, and the partial temp file is removed. Temp
files and folders left by a killed process are removed by ``remove_stale_temps`` once their
process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from imbaseg.errors import UserError


def home(root: str | os.PathLike | None = None) -> Path:
    """The project root: ``root`` if given, else $IMBASEG_HOME, else the current directory."""
    if root is not None:
        return Path(root)
    env = os.environ.get("IMBASEG_HOME")
    return Path(env) if env else Path.cwd()


# Other spellings of dataset names, resolved everywhere a dataset is named (the one alias table).
DATASET_ALIASES = {"isic": "isic2018", "isic-2018": "isic2018", "cvc-clinicdb": "cvc", "clinicdb": "cvc"}


def dataset_key(name: str) -> str:
    """``name`` with an alias resolved (``isic`` -> ``isic2018``); unknown names pass unchanged."""
    key = str(name).strip()
    return DATASET_ALIASES.get(key.lower(), key)


def data_root(root=None) -> Path:
    return home(root) / "data"


def raw_dir(dataset: str, root=None) -> Path:
    """``data/raw/<dataset>``: archives and files exactly as published."""
    return data_root(root) / "raw" / dataset


def prepared_dir(dataset: str, root=None) -> Path:
    """``data/prepared/<dataset>``: images/, masks/, fov/, manifest.csv, prepare.json."""
    return data_root(root) / "prepared" / dataset


def cache_dir(dataset: str, root=None) -> Path:
    """``data/cache/<dataset>``: the loader's decoded arrays, kept out of ``data/prepared`` so that a
    prepared dataset on a read-only share trains as well as a writable one."""
    return data_root(root) / "cache" / dataset


def cache_dir_for(prepared: str | os.PathLike) -> Path:
    """The loader cache of the prepared folder ``prepared``: ``<data>/cache/<name>`` when it sits in
    ``<data>/prepared/<name>`` (the layout ``prepare`` writes), else ``<its parent>/cache/<name>``."""
    prepared = Path(prepared)
    parent = prepared.parent
    return (parent.parent if parent.name == "prepared" else parent) / "cache" / prepared.name


def runs_root(root=None) -> Path:
    return home(root) / "runs"


def studies_root(root=None) -> Path:
    return home(root) / "studies"


def figures_dir(root=None) -> Path:
    return home(root) / "Figures"


_SAFE = re.compile(r"[^A-Za-z0-9._+()=,-]+")


def safe_name(text: str) -> str:
    """A file-system-safe version of a dataset or run name (ids of prepared images keep this form)."""
    return _SAFE.sub("_", str(text)).strip("_") or "run"


_SLUG_DROP = re.compile(r"[=\s'\"]+")
_SLUG_DASH = re.compile(r"[^A-Za-z0-9._+-]+")


def slug(text: str) -> str:
    """A shell-safe folder name for a loss spec: letters, digits and ``. _ + -`` only.

    ``boundary-gaussian(sigma=4)`` -> ``boundary-gaussian-sigma4``;
    ``boundary-gaussian(sigma=4)+0.5*dou`` -> ``boundary-gaussian-sigma4+0.5xdou``;
    ``dice(batch=false, smooth=1e-6)`` -> ``dice-batchfalse-smooth1e-6``.
    The exact spec is kept in the run's config.yaml.
    """
    s = str(text).replace("*", "x")
    s = _SLUG_DROP.sub("", s)
    s = _SLUG_DASH.sub("-", s)
    s = re.sub(r"-*\+-*", "+", re.sub(r"-+", "-", s)).strip("-.+")
    return s or "run"


def new_run_dir(dataset: str, loss: str, name: str | None = None, root=None) -> Path:
    """Create and return ``runs/<dataset>/<loss slug>/<name or timestamp>/``; never reuses a folder.

    An explicit name that exists gets a ``-2``, ``-3``... suffix rather than overwriting.
    """
    parent = runs_root(root) / safe_name(dataset) / slug(loss)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(parent, exc) from exc
    base = safe_name(name) if name else time.strftime("%Y%m%d-%H%M%S")
    candidate, k = parent / base, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            k += 1
            candidate = parent / f"{base}-{k}"
        except OSError as exc:
            raise write_error(candidate, exc) from exc


# ----------------------------------------------------------------------------- errors of writing


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent); None if unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _mb(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:,.1f} GB"
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when a library wrapped it (torch's ``file write failed``)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "file write failed" in text


def write_error(path: str | os.PathLike, exc: BaseException, need: int | None = None) -> UserError:
    """One clear line for a failed write of ``path``: disk full (with the space needed), read-only
    folder or permission denied. Any other error keeps its own message, with the path."""
    path = Path(path)
    if is_disk_full(exc):
        need_txt = f" (needs about {_mb(need)}, {_mb(free_bytes(path))} free)" if need else (
            f" ({_mb(free_bytes(path))} free)"
        )
        return UserError(
            f"no space left on the device holding {path}{need_txt}: free some space (or move the "
            "project with --root / IMBASEG_HOME) and run the command again; nothing half-written was kept"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        what = "is on a read-only file system" if exc.errno == errno.EROFS else "is not writable"
        return UserError(
            f"cannot write {path}: the folder {what}. Choose a writable place (--root / IMBASEG_HOME "
            "or --out) or fix its permissions"
        )
    return UserError(f"cannot write {path}: {exc.__class__.__name__}: {exc}")


# ----------------------------------------------------------------------------- atomic writes


def temp_file(path: str | os.PathLike) -> Path:
    """The temp file that precedes ``path``: ``.<name>.<pid>.tmp`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, need: int | None = None) -> Iterator[Path]:
    """Yield a temp path to fill; on success it is fsynced and renamed to ``path``.

    On any error (Ctrl-C included) the temp file is removed and ``path`` is untouched; a full disk
    or an unwritable folder becomes ``write_error``. ``need``: expected size, for the message.
    Temp files of the same ``path`` left by killed processes are removed first (``figure.png``'s
    ``.figure.png.<pid>.tmp``), so every writer cleans up after a kill the next time it writes.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc, need) from exc
    _remove_stale_temps_of(path)
    tmp = temp_file(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, UserError) or not isinstance(exc, (OSError, RuntimeError)):
            raise
        if is_disk_full(exc) or isinstance(exc, OSError):
            raise write_error(path, exc, need) from exc
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, ``os.replace``)."""
    with atomic_path(path, need=len(data)) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden sibling folder to fill; on success it replaces ``target`` whole.

    A previous ``target`` is moved aside and deleted only after the new one is in place, so a
    crash leaves either the old or the new folder, never a mix. Errors remove the staging folder;
    write errors become ``write_error``. Stale staging folders of dead processes are removed first.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target.parent)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as exc:
        raise write_error(target, exc) from exc
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(target, exc) from exc
        raise


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder inside ``folder`` to fill with files; on success every file is moved
    into ``folder`` (fsync, then ``os.replace``: the same file system, so no extra space is needed).

    For outputs that share a folder with the user's other files (``predict --out``): an error or Ctrl-C
    before the end moves nothing and removes the staging folder; write errors become ``write_error``
    naming ``folder``. Stale staging folders of dead processes are removed first.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder)
        tmp = folder / f".staged.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as exc:
        raise write_error(folder, exc) from exc
    try:
        yield tmp
        files = sorted(tmp.iterdir())
        for f in files:
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        for f in files:
            os.replace(f, folder / f.name)
        _fsync_dir(folder)
    except OSError as exc:
        raise write_error(folder, exc) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def reserve(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of the open file ``fd`` now, so that a full disk fails here (ENOSPC)
    instead of later: a memory map whose pages cannot be allocated kills the process with SIGBUS.
    A file system without fallocate leaves the file as it is (the write then fails where it fails)."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def replace_dir(src: Path, target: Path) -> None:
    """Rename the complete folder ``src`` to ``target``, replacing a previous one only now."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    try:
        os.rename(src, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- stale temp files

_TEMP_FILE = re.compile(r"^\..+\.(\d+)\.tmp$")  # .<name>.<pid>.tmp
_TEMP_DIR = re.compile(r"^\..+\.(?:tmp|old)-(\d+)-[0-9a-f]+$")  # .<name>.tmp-<pid>-<hex>


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this machine (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    try:  # a zombie has exited; its parent just has not reaped it yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def temp_owner(name: str) -> int | None:
    """The pid in a temp file or staging folder name made here, or None for any other name."""
    m = _TEMP_FILE.match(name) or _TEMP_DIR.match(name)
    return int(m.group(1)) if m else None


def _remove_stale_temps_of(path: Path) -> None:
    """Delete ``.<name>.<pid>.tmp`` files of ``path`` whose process is gone."""
    prefix = f".{path.name}."
    try:
        with os.scandir(path.parent) as it:
            entries = [e for e in it if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return
    for entry in entries:
        m = _TEMP_FILE.match(entry.name)
        if m and entry.name == f"{prefix}{m.group(1)}.tmp" and not pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files and staging folders in ``folder`` whose process is gone; return them.

    Only names of the forms written here count (``.<name>.<pid>.tmp``, ``.<name>.tmp-<pid>-<hex>``,
    ``.<name>.old-<pid>-<hex>``), so nothing of the user's is touched.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid = temp_owner(entry.name)
        if pid is None or pid_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed
