"""``imbaseg download``: fetch ISIC 2018, or import archives/folders the user got by hand.

- HTTP: resumable with ``Range`` into ``<file>.part`` (renamed when complete), retries with
  exponential backoff for dropped connections and 5xx, a 10 s socket timeout so an unreachable host
  fails within seconds, a free-space check before writing and a clear error on ENOSPC.
- Archives (zip, tar.*, rar via unrar/bsdtar/7z) are checked (CRCs, file counts), then extracted
  into a hidden temp folder and renamed into ``data/raw/<dataset>/``: a corrupt archive leaves nothing.
- Folders given with ``--from`` are linked, not copied (``copy=True`` copies): raw/<dataset>/ is a
  real folder holding ``download.json`` and a symlink to the user's data, which imbaseg only reads.
- ``data/raw/<dataset>/download.json`` records each entry: URL or source, size, sha256, date, and
  the raw/ names it put there. It is the source of truth for "already imported" (same path and same
  content: an archive's size + mtime, else its sha256; a copied folder's file list with sizes and
  mtimes) and for who owns a raw/ entry: data from another source, or a source that changed since,
  never replaces it without ``force``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import tarfile
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from imbaseg import __version__
from imbaseg.data.sources import ISIC_OFFICIAL_URL, ISIC_URL_ENV, Archive, get_source
from imbaseg.errors import UserError
from imbaseg.paths import atomic_write_text, raw_dir

TIMEOUT = 10.0  # seconds for connect and for each read: offline fails fast, a stalled server is retried
RETRIES = 5  # attempts after the first for a dropped connection or a 5xx answer
BACKOFF = 2.0  # seconds before the first retry, doubled each time (2, 4, 8, 16, 32)
CHUNK = 1 << 20
RECORD = "download.json"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".rar", ".7z")

Progress = Callable[[str, int, "int | None"], None]  # (label, bytes done, total or None)


class _Retry(Exception):
    """A transient failure: the connection dropped, timed out mid-transfer, or the server said 5xx."""


# --- small helpers -------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _disk_full(path: Path, need: int | None = None) -> UserError:
    free = shutil.disk_usage(path if path.exists() else path.parent).free
    want = f"; about {need / 1e9:.1f} GB more is needed" if need else ""
    return UserError(
        f"disk full while writing '{path}' ({free / 1e9:.1f} GB free{want}). "
        "Free some space (or use --root on a bigger disk) and rerun: downloads resume."
    )


def _check_space(folder: Path, need: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise UserError(
            f"not enough disk space in '{folder}': {need / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free. "
            "Free some space or use --root on a bigger disk."
        )


def archive_kind(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return "zip" if suffix == ".zip" else "rar" if suffix in (".rar", ".7z") else "tar"
    return None


def archive_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_record(raw: Path) -> dict:
    try:
        data = json.loads((raw / RECORD).read_text())
        return data if isinstance(data, dict) and isinstance(data.get("entries"), list) else {"entries": []}
    except (OSError, ValueError):
        return {"entries": []}


def _owned(entry: dict) -> list[str]:
    """The raw/ names an entry put there: an archive's top-level entries, else its own name."""
    return list(entry.get("entries") or [entry.get("name")])


def _owner(raw: Path, name: str) -> dict | None:
    """The latest download.json entry that put ``name`` into raw/ (None: not imbaseg's, or unknown)."""
    return next((e for e in reversed(read_record(raw)["entries"]) if name in _owned(e)), None)


def _save_record(raw: Path, dataset: str, entry: dict) -> None:
    """Add ``entry``; drop earlier entries with its name or whose raw/ data it replaced."""
    record = read_record(raw)
    mine = set(_owned(entry))
    record["entries"] = [
        e for e in record["entries"] if e.get("name") != entry["name"] and not mine & set(_owned(e))
    ] + [entry]
    record.update(dataset=dataset, imbaseg_version=__version__, updated=_now())
    atomic_write_text(raw / RECORD, json.dumps(record, indent=2) + "\n")


# --- HTTP ----------------------------------------------------------------------------------------


def isic_base_url(base_url: str | None = None) -> str:
    """``base_url``, else $IMBASEG_ISIC_URL, else the official S3 bucket; always ends with '/'."""
    url = base_url or os.environ.get(ISIC_URL_ENV) or ISIC_OFFICIAL_URL
    return url if url.endswith("/") else url + "/"


def _unreachable(url: str, reason) -> UserError:
    return UserError(
        f"cannot reach {url}: {reason}. Check the internet connection (or set ${ISIC_URL_ENV} to a "
        "mirror); archives you already have: imbaseg download isic2018 --from PATH."
    )


def _open(url: str, have: int, timeout: float):
    headers = {"User-Agent": f"imbaseg/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and have:
            return e  # handled by the caller: maybe complete already
        if e.code in (408, 429) or e.code >= 500:
            raise _Retry(f"HTTP {e.code} {e.reason}") from e
        raise UserError(
            f"the server answered HTTP {e.code} ({e.reason}) for {url}; the file may have moved: "
            f"check the URL or set ${ISIC_URL_ENV} to a mirror."
        ) from e
    except URLError as e:  # DNS failure, refused, no route, connect timeout: offline, fail at once
        if isinstance(e.reason, ConnectionResetError):
            raise _Retry(f"connection reset ({e.reason})") from e
        raise _unreachable(url, e.reason) from e
    except (TimeoutError, ConnectionError, HTTPException) as e:  # connected, then no or a broken answer
        raise _Retry(f"no answer ({e or type(e).__name__})") from e


def _total_from_416(resp) -> int | None:
    text = resp.headers.get("Content-Range", "")  # "bytes */12345"
    try:
        return int(text.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None


def _fetch_once(url: str, part: Path, timeout: float, progress: Progress | None, label: str) -> None:
    have = part.stat().st_size if part.exists() else 0
    resp = _open(url, have, timeout)
    if isinstance(resp, HTTPError):  # 416: the range starts at or past the end
        if _total_from_416(resp) == have:
            return
        part.unlink()
        raise _Retry("the server refused to resume; starting over")
    with resp:
        length = resp.headers.get("Content-Length")
        if resp.status == 206:
            start = int(resp.headers.get("Content-Range", f"bytes {have}-").split()[1].split("-")[0])
            if start != have:
                part.unlink()
                raise _Retry(f"the server resumed at byte {start}, not {have}; starting over")
        else:
            have = 0  # 200: the server ignored Range and sends everything
        total = have + int(length) if length is not None else None
        if total is not None:
            _check_space(part.parent, total - have)
        _stream(resp, part, have, total, progress, label)


def _stream(resp, part: Path, have: int, total: int | None, progress, label) -> None:
    done = have
    try:
        with open(part, "ab" if have else "wb") as out:
            while True:
                try:
                    block = resp.read(CHUNK)
                except (TimeoutError, ConnectionError, HTTPException, OSError) as e:
                    raise _Retry(f"connection lost after {done} bytes ({e or type(e).__name__})") from e
                if not block:
                    break
                out.write(block)
                done += len(block)
                if progress:
                    progress(label, done, total)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _disk_full(part, (total - done) if total else None) from e
        raise
    if total is not None and done < total:
        raise _Retry(f"connection closed after {done} of {total} bytes")


def fetch(
    url: str,
    dest: Path,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    timeout: float = TIMEOUT,
    progress: Progress | None = None,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming what a previous try left there."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout, progress, dest.name)
            break
        except _Retry as e:
            if attempt == retries:
                raise UserError(
                    f"downloading {url} failed after {retries + 1} tries ({e}); rerun the same "
                    f"command to resume from the {part.stat().st_size if part.exists() else 0} "
                    f"bytes kept in '{part}'."
                ) from e
            time.sleep(backoff * 2**attempt)
    os.replace(part, dest)
    return dest


# --- archives ------------------------------------------------------------------------------------


def _corrupt(path: Path, why) -> UserError:
    return UserError(
        f"archive '{path}' is corrupt or truncated ({why}); nothing was extracted. "
        "Download it again (a partial download is the usual cause)."
    )


def _safe_member(name: str, path: Path) -> None:
    parts = Path(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise UserError(
            f"archive '{path}' holds an unsafe path '{name}' (absolute or with '..'); refusing it."
        )


def check_zip(path: Path, suffix: str | None = None, count: int | None = None) -> int:
    """CRC-check every member of a zip; return how many files end with ``suffix`` (all files if None).

    UserError when unreadable, when a CRC fails, or when ``count`` is given and differs.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            for n in names:
                _safe_member(n, path)
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError, zlib.error) as e:
        raise _corrupt(path, e) from e
    if bad is not None:
        raise _corrupt(path, f"CRC error in '{bad}'")
    wanted = [n for n in names if "__MACOSX" not in n and (suffix is None or n.lower().endswith(suffix))]
    if count is not None and len(wanted) != count:
        raise UserError(
            f"archive '{path}' holds {len(wanted)} '{suffix}' files, expected {count}: it is incomplete "
            "or not the published one. Delete it and download it again."
        )
    if not wanted:
        raise UserError(f"archive '{path}' holds no {suffix or ''} files.")
    return len(wanted)


def _check_tar(path: Path) -> int:
    try:
        with tarfile.open(path) as tf:
            members = tf.getmembers()  # reads the whole stream: truncation shows here
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise _corrupt(path, e) from e
    for m in members:
        _safe_member(m.name, path)
    return sum(m.isfile() for m in members)


def _unpack_size(path: Path, kind: str) -> int:
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            return sum(i.file_size for i in zf.infolist())
    return path.stat().st_size * (1 if kind == "rar" else 2)  # tar: the compressed size is a lower bound


def _rar_command(path: Path, out: Path) -> list[str]:
    if shutil.which("unrar"):
        return ["unrar", "x", "-idq", "-o+", str(path), str(out) + os.sep]
    if shutil.which("bsdtar"):
        return ["bsdtar", "-xf", str(path), "-C", str(out)]
    if shutil.which("7z"):
        return ["7z", "x", "-y", f"-o{out}", str(path)]
    raise UserError(
        f"cannot extract '{path}': install unrar, bsdtar (libarchive-tools) or 7z, or extract it "
        "yourself and pass the folder to --from."
    )


def _extract_into(path: Path, kind: str, out: Path) -> None:
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            zf.extractall(out)
    elif kind == "tar":
        with tarfile.open(path) as tf:
            tf.extractall(out, filter="data")
    else:
        run = subprocess.run(_rar_command(path, out), capture_output=True, text=True)
        if run.returncode != 0:
            raise _corrupt(
                path, (run.stderr or run.stdout).strip().splitlines()[-1:] or f"exit {run.returncode}"
            )


def extract(
    path: Path,
    raw: Path,
    check: Callable[[Path], None] | None = None,
    replace: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Verify and unpack ``path`` into ``raw``; returns the top-level entries it created.

    Unpacks into ``raw/.extract-*``; ``check(temp_folder)`` may reject the content (UserError); then
    each top-level entry is renamed into ``raw`` (a lone top folder keeps its name, loose files go
    into a folder named after the archive). ``replace(existing_entry)`` is asked before anything in
    ``raw`` is replaced and may refuse (UserError). Any failure removes the temp folder.
    """
    kind = archive_kind(path)
    if kind == "zip":
        check_zip(path)
    elif kind == "tar":
        _check_tar(path)
    elif kind is None:
        raise UserError(f"'{path}' is not an archive imbaseg can read (zip, tar, tar.gz, rar) nor a folder.")
    _check_space(raw, _unpack_size(path, kind))
    tmp = raw / f".extract-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        _extract_into(path, kind, tmp)
        if check:
            check(tmp)
        return _move_up(tmp, raw, archive_stem(path), replace)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _disk_full(raw) from e
        if e.errno is None:  # gzip.BadGzipFile and friends: bad data, not a file-system problem
            raise _corrupt(path, e) from e
        raise UserError(f"cannot extract '{path}' into '{raw}': {e}") from e
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise _corrupt(path, e) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_up(tmp: Path, raw: Path, stem: str, replace: Callable[[Path], None] | None = None) -> list[Path]:
    entries = [p for p in tmp.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        moves = [(entries[0], raw / entries[0].name)]
    else:
        inner = tmp / f".{stem}"
        inner.mkdir()
        for p in entries:
            os.rename(p, inner / p.name)
        moves = [(inner, raw / stem)]
    for _, dst in moves:
        if replace and (dst.exists() or dst.is_symlink()):
            replace(dst)
    for src, dst in moves:
        _remove_entry(dst)
        os.rename(src, dst)
    return [dst for _, dst in moves]


def planned_entries(path: Path) -> list[str] | None:
    """The raw/ names extracting ``path`` will create (as ``_move_up`` names them), from the member
    list alone; None for rar/7z, whose list is not read before extraction."""
    kind = archive_kind(path)
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            members = [(i.filename, i.is_dir()) for i in zf.infolist()]
    elif kind == "tar":
        with tarfile.open(path) as tf:
            members = [(m.name, m.isdir()) for m in tf.getmembers()]
    else:
        return None
    parts = [(PurePosixPath(n.replace("\\", "/")).parts, d) for n, d in members]
    if any(p and (p[0] == "/" or ".." in p) for p, _ in parts):
        return None  # unsafe: extract() refuses it with the reason
    parts = [(p, d) for p, d in parts if p and p[0] != "__MACOSX"]
    tops = {p[0] for p, _ in parts}
    if len(tops) == 1 and any(len(p) > 1 or d for p, d in parts):
        return [tops.pop()]
    return [archive_stem(path)]


def _remove_entry(path: Path) -> None:
    """Remove a raw entry: a symlink is unlinked (never followed), a folder deleted, a file removed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


# --- ISIC 2018 -----------------------------------------------------------------------------------


def _isic_done(raw: Path, archive: Archive) -> bool:
    names = {e.get("name") for e in read_record(raw)["entries"]}
    return archive.folder in names and (raw / archive.folder).is_dir()


def download_isic(
    root=None,
    base_url: str | None = None,
    archives: tuple[Archive, ...] | None = None,
    check_counts: bool | None = None,
    keep_archives: bool = False,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    timeout: float = TIMEOUT,
    progress: Progress | None = None,
) -> list[str]:
    """Fetch, verify and extract the ISIC 2018 Task 1 archives into ``data/raw/isic2018/``.

    Skips archives already extracted (per download.json). File counts are checked against the
    published numbers when downloading from the official URL (``check_counts`` overrides).
    Returns one line per archive saying what happened.
    """
    src = get_source("isic2018")
    raw = raw_dir(src.name, root)
    base = isic_base_url(base_url)
    if check_counts is None:
        check_counts = base == ISIC_OFFICIAL_URL
    lines = []
    for archive in archives or src.archives:
        if _isic_done(raw, archive):
            lines.append(f"{archive.folder}: already downloaded")
            continue
        url = base + archive.file
        dest = raw / "archives" / archive.file
        if not dest.exists():
            fetch(url, dest, retries, backoff, timeout, progress)
        lines.append(_install_archive(raw, dest, archive, url, check_counts, keep_archives))
    return lines


def _install_archive(
    raw: Path, dest: Path, archive: Archive, url: str, check_counts: bool, keep: bool
) -> str:
    try:
        files = check_zip(dest, archive.suffix, archive.count if check_counts else None)
    except UserError:
        dest.unlink(missing_ok=True)  # a bad complete file would otherwise be reused forever
        raise
    size, digest = dest.stat().st_size, sha256_of(dest)
    extract(dest, raw)
    if not (raw / archive.folder).is_dir():
        raise UserError(
            f"archive '{dest}' did not unpack to '{archive.folder}/': it is not the published one."
        )
    _save_record(
        raw,
        "isic2018",
        {
            "name": archive.folder,
            "url": url,
            "file": archive.file,
            "size": size,
            "sha256": digest,
            "files": files,
            "date": _now(),
        },
    )
    if not keep:
        dest.unlink()
    return f"{archive.folder}: {files} files, {size / 1e6:.1f} MB, sha256 {digest[:12]}..."


# --- --from: archives and folders the user already has --------------------------------------------


def _validator(name: str) -> Callable[[Path], None]:
    """A check that a folder holds the dataset's layout (UserError naming what is expected)."""
    src = get_source(name)
    if name == "isic2018":
        from imbaseg.data.sources import _isic_folders

        def check(folder: Path) -> None:
            inputs, gts = _isic_folders(folder)
            if not inputs and not gts:
                raise UserError(
                    f"no ISIC 2018 folders (ISIC2018_Task1-2_*_Input, ISIC2018_Task1_*_GroundTruth) "
                    f"in '{folder}'."
                )

        return check
    return lambda folder: src.find(folder)


def _live(raw: Path, entry: dict) -> bool:
    """``entry`` still owns every raw/ name it created, and they all exist."""
    return all((raw / n).exists() and _owner(raw, n) == entry for n in _owned(entry))


def _folder_fingerprint(path: Path) -> str:
    """sha256 over every file's relative path, size and mtime_ns (stat only): changes when a file does."""
    rows = []
    for folder, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(folder, f))
            rows.append([os.path.relpath(os.path.join(folder, f), path), st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest()


def _refusal(raw: Path, dst: Path, new: Path, owner: dict | None) -> UserError:
    if owner is None:
        held = "data that download.json does not record"
    elif owner.get("from") == str(new):
        held = f"data imported from {new} on {owner.get('date', '?')}, which has changed since"
    else:
        source = owner.get("from") or owner.get("url") or "an unrecorded source"
        held = f"data imported from {source} on {owner.get('date', '?')}"
    return UserError(
        f"'{dst}' already exists and holds {held}; importing {new} would replace it. "
        "Add --force to replace it (or import into another --root)."
    )


def _guard(raw: Path, new: Path, same_source: Callable[[dict], bool]) -> Callable[[Path], None]:
    """A ``replace`` check: an existing raw/ entry may only be replaced by the source that made it."""

    def check(dst: Path) -> None:
        if dst.is_symlink() and not dst.exists():
            return  # a link to a folder that was moved or deleted holds nothing to lose
        owner = _owner(raw, dst.name)
        if owner is None or not same_source(owner):
            raise _refusal(raw, dst, new, owner)

    return check


def import_path(name: str, path, root=None, force: bool = False, copy: bool = False) -> list[str]:
    """Bring an archive or folder into ``data/raw/<name>/``; returns lines saying what happened.

    A folder holding no layout but archives imports each archive. Re-importing the same source (same
    path and content, see the module docstring) is a no-op; replacing data that came from another
    source, or from a source that has changed since, needs ``force`` (UserError naming the earlier one).
    """
    src = get_source(name)
    if src.kind == "synthetic":
        raise UserError(f"{src.name} is generated, not downloaded: run imbaseg prepare {src.name}.")
    if src.kind == "folder":
        raise UserError(
            "'folder' reads your data in place: run imbaseg prepare folder --images DIR --masks DIR."
        )
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise UserError(f"--from '{path}' does not exist.")
    raw = raw_dir(src.name, root)
    raw.mkdir(parents=True, exist_ok=True)
    check = _validator(src.name)
    if path.is_dir():
        archives = sorted(p for p in path.iterdir() if p.is_file() and archive_kind(p))
        try:
            check(path)
        except UserError:
            if not archives:
                raise
            return [line for a in archives for line in _import_archive(src.name, a, raw, force, None)]
        return [_import_folder(src.name, path, raw, force, copy)]
    return _import_archive(src.name, path, raw, force, check)


def _import_folder(dataset: str, path: Path, raw: Path, force: bool, copy: bool) -> str:
    entry, kind = raw / path.name, "copy" if copy else "link"
    fp = _folder_fingerprint(path)

    def same_source(e: dict) -> bool:  # a link shows the folder as it is now: its path is enough
        return e.get("from") == str(path) and (e.get("kind") == "link" or e.get("fingerprint") == fp)

    earlier = _owner(raw, path.name)
    if not force and earlier and earlier.get("kind") == kind and same_source(earlier) and _live(raw, earlier):
        if kind == "copy" or entry.resolve() == path:
            return f"{path.name}: already imported from {path}"
    if entry.exists() or entry.is_symlink():
        if not force:
            _guard(raw, path, same_source)(entry)
        _remove_entry(entry)
    if copy:
        tmp = raw / f".copy-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(path, tmp, symlinks=False)
            os.rename(tmp, entry)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno == errno.ENOSPC or "No space left" in str(e):
                raise _disk_full(raw) from e
            raise
    else:
        entry.symlink_to(path, target_is_directory=True)
    _save_record(
        raw,
        dataset,
        {"name": path.name, "from": str(path), "kind": kind, "fingerprint": fp, "date": _now()},
    )
    return f"{path.name}: {'copied' if copy else 'linked'} from {path}"


def _earlier_import(raw: Path, path: Path, st: os.stat_result) -> tuple[dict | None, str | None]:
    """(the live entry of an earlier import of this archive's content, or None; its sha256 if computed).

    The same path, size and mtime is the same file without reading it; otherwise an entry of the same
    size counts when its sha256 matches (the archive was moved or touched, not changed).
    """
    alike = [
        e
        for e in read_record(raw)["entries"]
        if e.get("kind") == "archive" and e.get("size") == st.st_size and _live(raw, e)
    ]
    for e in alike:
        if e.get("from") == str(path) and e.get("mtime_ns") == st.st_mtime_ns:
            return e, e.get("sha256")
    if not alike:
        return None, None
    digest = sha256_of(path)
    return next((e for e in alike if e.get("sha256") == digest), None), digest


def _import_archive(dataset: str, path: Path, raw: Path, force: bool, check) -> list[str]:
    stat = path.stat()
    same, digest = _earlier_import(raw, path, stat)
    if same and not force:
        also = "" if same.get("from") == str(path) else f" (the same content as {same.get('from')})"
        return [f"{path.name}: already imported{also}"]
    digest = digest or sha256_of(path)
    guard = None if force else _guard(raw, path, lambda e: e.get("sha256") == digest)
    if guard:
        try:
            planned = planned_entries(path)
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError):
            planned = None  # extract() checks the archive and says what is wrong with it
        for name in planned or []:  # refuse before spending minutes on extraction
            if (raw / name).exists() or (raw / name).is_symlink():
                guard(raw / name)
    created = extract(path, raw, check, guard)
    _save_record(
        raw,
        dataset,
        {
            "name": archive_stem(path),
            "from": str(path),
            "kind": "archive",
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": digest,
            "entries": [p.name for p in created],
            "date": _now(),
        },
    )
    return [f"{path.name}: extracted to {', '.join(str(p) for p in created)}"]


# --- entry point ---------------------------------------------------------------------------------


def download(
    name: str,
    root=None,
    sources=None,
    force: bool = False,
    copy: bool = False,
    keep_archives: bool = False,
    progress: Progress | None = None,
    **http,
) -> list[str]:
    """``imbaseg download``: lines to print. Without ``sources``: fetch (ISIC) or explain (CVC, DRIVE)."""
    src = get_source(name)
    if sources:
        return [line for s in sources for line in import_path(src.name, s, root, force, copy)]
    if src.kind == "download":
        return download_isic(root, keep_archives=keep_archives, progress=progress, **http)
    lines = [src.how_to_get]
    if src.kind == "registration" and raw_dir(src.name, root).exists():
        lines.append(f"Raw data is already in {raw_dir(src.name, root)}; next: imbaseg prepare {src.name}")
    return lines
