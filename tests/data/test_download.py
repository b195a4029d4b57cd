"""imbaseg download against a local HTTP server (127.0.0.1), and --from imports of archives and folders.

The server serves zips built from the shared ISIC 2018 sample under the official archive names. It
honours Range, and can drop a connection halfway, ignore Range, or answer 404.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from imbaseg.data import download as dl
from imbaseg.data.sources import ISIC_ARCHIVES, Archive, find_cvc, find_isic2018
from imbaseg.errors import UserError
from imbaseg.paths import raw_dir

TRAIN = (
    Archive("ISIC2018_Task1-2_Training_Input.zip", "ISIC2018_Task1-2_Training_Input", 20, ".jpg", "train"),
    Archive(
        "ISIC2018_Task1_Training_GroundTruth.zip", "ISIC2018_Task1_Training_GroundTruth", 20, ".png", "train"
    ),
)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        srv = self.server
        name = self.path.lstrip("/")
        srv.log.append((name, self.headers.get("Range")))
        data = srv.files.get(name)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and name not in srv.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in srv.drop_once:  # send half, then close the connection
            srv.drop_once.discard(name)
            self.wfile.write(body[: len(body) // 2])
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def isic_zips(shared_data, tmp_path_factory):
    """{archive file name: bytes} for the two training archives, built from the shared sample."""
    base = shared_data / "samples" / "ISIC2018"
    out = {}
    for a in TRAIN:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for f in sorted((base / a.folder).iterdir()):
                zf.write(f, f"{a.folder}/{f.name}")
            if "Input" in a.folder:
                zf.writestr(f"{a.folder}/LICENSE.txt", "CC-BY-NC")
        out[a.file] = buf.getvalue()
    return out


@pytest.fixture
def server(isic_zips):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.log, srv.drop_once, srv.ignore_range = dict(isic_zips), [], set(), set()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/"
    yield srv
    srv.shutdown()
    srv.server_close()


def _get(tmp_path, server, **kw):
    kw = {"base_url": server.url, "archives": TRAIN, "retries": 0, "backoff": 0, "timeout": 5, **kw}
    return dl.download_isic(root=tmp_path, **kw)


def test_full_download_extract_and_record(tmp_path, server, isic_zips):
    seen = []
    lines = _get(tmp_path, server, check_counts=True, progress=lambda label, done, total: seen.append(done))
    raw = raw_dir("isic2018", tmp_path)
    assert len(lines) == 2 and "20 files" in lines[0]
    layout = find_isic2018(raw)
    assert len(layout.pairs) == 20 and all(p.mask is not None for p in layout.pairs)
    record = json.loads((raw / "download.json").read_text())
    for entry, a in zip(record["entries"], TRAIN, strict=True):
        assert entry["url"] == server.url + a.file and entry["size"] == len(isic_zips[a.file])
        assert entry["sha256"] == hashlib.sha256(isic_zips[a.file]).hexdigest() and entry["files"] == 20
    assert not list(raw.rglob("*.part")) and not (raw / "archives" / TRAIN[0].file).exists()  # zips removed
    assert seen[-1] == len(isic_zips[TRAIN[1].file])  # the progress callback saw every byte
    n = len(server.log)
    assert _get(tmp_path, server) == [f"{a.folder}: already downloaded" for a in TRAIN]
    assert len(server.log) == n  # nothing fetched again


def test_resume_after_dropped_connection(tmp_path, server, isic_zips):
    name = TRAIN[0].file
    server.drop_once.add(name)
    with pytest.raises(UserError, match="rerun the same command to resume") as err:
        _get(tmp_path, server)
    part = raw_dir("isic2018", tmp_path) / "archives" / f"{name}.part"
    half = len(isic_zips[name]) // 2
    assert part.stat().st_size == half and str(half) in str(err.value)
    _get(tmp_path, server, keep_archives=True)
    assert (name, f"bytes={half}-") in server.log  # the second run asked only for the rest
    kept = raw_dir("isic2018", tmp_path) / "archives" / name
    assert kept.read_bytes() == isic_zips[name] and not part.exists()


def test_retry_with_backoff_in_one_call(tmp_path, server, isic_zips):
    server.drop_once.add(TRAIN[1].file)
    _get(tmp_path, server, retries=2)
    asked = [r for n, r in server.log if n == TRAIN[1].file]
    assert asked == [None, f"bytes={len(isic_zips[TRAIN[1].file]) // 2}-"]


def test_server_ignoring_range_restarts(tmp_path, server, isic_zips):
    name = TRAIN[0].file
    part = raw_dir("isic2018", tmp_path) / "archives" / f"{name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 100)  # junk from an earlier try
    server.ignore_range.add(name)
    _get(tmp_path, server, archives=TRAIN[:1], keep_archives=True)
    assert (part.parent / name).read_bytes() == isic_zips[name]


@pytest.mark.parametrize("damage", ["truncated", "crc"])
def test_corrupt_archive_extracts_nothing(tmp_path, server, isic_zips, damage):
    name = TRAIN[0].file
    data = isic_zips[name]
    if damage == "truncated":
        server.files[name] = data[: int(len(data) * 0.6)]
    else:  # flip one byte inside the first stored JPEG
        server.files[name] = data[:2000] + bytes([data[2000] ^ 0xFF]) + data[2001:]
    with pytest.raises(UserError, match="corrupt or truncated.*nothing was extracted"):
        _get(tmp_path, server, archives=TRAIN[:1])
    raw = raw_dir("isic2018", tmp_path)
    assert not (raw / TRAIN[0].folder).exists() and not list(raw.glob(".extract-*"))
    assert not (raw / "archives" / name).exists() and not (raw / "download.json").exists()


def test_wrong_file_count(tmp_path, server):
    short = (Archive(TRAIN[0].file, TRAIN[0].folder, 2594, ".jpg", "train"),)
    with pytest.raises(UserError, match="holds 20 '.jpg' files, expected 2594"):
        _get(tmp_path, server, archives=short, check_counts=True)


def test_404(tmp_path, server):
    missing = (Archive("nope.zip", "nope", 1, ".jpg", "train"),)
    with pytest.raises(UserError, match="HTTP 404"):
        _get(tmp_path, server, archives=missing, retries=3)
    assert [n for n, _ in server.log] == ["nope.zip"]  # a 404 is not retried


def test_unreachable_fails_fast(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="cannot reach .*Check the internet connection"):
        dl.download_isic(
            root=tmp_path, base_url=f"http://127.0.0.1:{port}/", archives=TRAIN, retries=5, timeout=2
        )


def test_base_url_from_environment(monkeypatch):
    monkeypatch.setenv("IMBASEG_ISIC_URL", "http://mirror.example/isic")
    assert dl.isic_base_url() == "http://mirror.example/isic/"
    assert dl.isic_base_url("http://x/") == "http://x/"
    monkeypatch.delenv("IMBASEG_ISIC_URL")
    assert dl.isic_base_url() == "https://isic-challenge-data.s3.amazonaws.com/2018/"
    assert len(ISIC_ARCHIVES) == 6 and sum(a.count for a in ISIC_ARCHIVES) == 2 * (2594 + 100 + 1000)


def test_disk_full(tmp_path, server, monkeypatch):
    class Usage:
        free = 10

    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(UserError, match="not enough disk space"):
        _get(tmp_path, server)
    monkeypatch.undo()

    class FullFile(io.BytesIO):
        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "open", lambda *a, **k: FullFile(), raising=False)
    with pytest.raises(UserError, match="disk full while writing .*rerun: downloads resume"):
        _get(tmp_path, server)


# --- --from ----------------------------------------------------------------------------------------


def _zip_folder(folder: Path, dest: Path, arc_root: str, only=None) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(folder)
            if f.is_file() and (only is None or rel.parts[0] in only):
                zf.write(f, f"{arc_root}/{rel}")
    return dest


def test_import_drive_zip_and_reimport(shared_data, tmp_path):
    archive = _zip_folder(shared_data / "DRIVE", tmp_path / "DRIVE.zip", "DRIVE", only={"training"})
    lines = dl.download("drive", root=tmp_path, sources=[archive])
    raw = raw_dir("drive", tmp_path)
    assert "extracted" in lines[0] and (raw / "DRIVE" / "training" / "images" / "21_training.tif").is_file()
    entry = json.loads((raw / "download.json").read_text())["entries"][0]
    assert entry["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest() and entry["kind"] == "archive"
    assert dl.download("drive", root=tmp_path, sources=[archive]) == ["DRIVE.zip: already imported"]


def test_import_corrupt_or_wrong_archive_leaves_nothing(shared_data, tmp_path):
    raw = raw_dir("cvc", tmp_path)
    bad = tmp_path / "CVC.zip"
    _zip_folder(shared_data / "samples" / "CVC-ClinicDB", bad, "CVC-ClinicDB")
    bad.write_bytes(bad.read_bytes()[:-3000])
    with pytest.raises(UserError, match="corrupt or truncated"):
        dl.download("cvc", root=tmp_path, sources=[bad])
    wrong = _zip_folder(shared_data / "samples" / "ISIC2018", tmp_path / "wrong.zip", "stuff")
    with pytest.raises(UserError, match="no CVC-ClinicDB layout"):
        dl.download("cvc", root=tmp_path, sources=[wrong])
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with pytest.raises(UserError, match="unsafe path"):
        dl.download("cvc", root=tmp_path, sources=[slip])
    assert [p.name for p in raw.iterdir()] == []  # nothing half-extracted, no temp folders
    assert not (tmp_path / "data" / "raw" / "evil.txt").exists()


def test_import_tar_gz(shared_data, tmp_path):
    archive = tmp_path / "cvc.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(shared_data / "samples" / "CVC-ClinicDB", arcname="CVC-ClinicDB")
    dl.download("cvc", root=tmp_path, sources=[archive])
    assert len(find_cvc(raw_dir("cvc", tmp_path)).pairs) == 20
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        dl.download("cvc", root=tmp_path / "other", sources=[truncated])


def test_import_folder_links_and_never_touches_the_source(shared_data, tmp_path):
    src = shared_data / "samples" / "CVC-ClinicDB"
    assert dl.download("cvc", root=tmp_path, sources=[src]) == [f"CVC-ClinicDB: linked from {src}"]
    entry = raw_dir("cvc", tmp_path) / "CVC-ClinicDB"
    assert entry.is_symlink() and len(find_cvc(raw_dir("cvc", tmp_path)).pairs) == 20
    assert "already imported" in dl.download("cvc", root=tmp_path, sources=[src])[0]
    other = tmp_path / "elsewhere" / "CVC-ClinicDB"
    (other / "Original").mkdir(parents=True)
    (other / "Ground Truth").mkdir()
    (other / "Original" / "1.tif").write_bytes((src / "Original" / "1.tif").read_bytes())
    (other / "Ground Truth" / "1.tif").write_bytes((src / "Ground Truth" / "1.tif").read_bytes())
    with pytest.raises(UserError, match="already exists.*--force"):
        dl.download("cvc", root=tmp_path, sources=[other])
    dl.download("cvc", root=tmp_path, sources=[other], force=True, copy=True)
    assert not entry.is_symlink() and len(find_cvc(raw_dir("cvc", tmp_path)).pairs) == 1
    assert len(list((src / "Original").iterdir())) == 20  # the replaced link's target is intact


def test_import_folder_of_archives(shared_data, tmp_path, isic_zips):
    folder = tmp_path / "downloads"
    folder.mkdir()
    for name, data in isic_zips.items():
        (folder / name).write_bytes(data)
    lines = dl.download("isic", root=tmp_path, sources=[folder])
    assert len(lines) == 2 and len(find_isic2018(raw_dir("isic2018", tmp_path)).pairs) == 20


def test_rar_needs_a_tool(tmp_path, monkeypatch):
    monkeypatch.setattr(dl.shutil, "which", lambda name: None)
    fake = tmp_path / "CVC-ClinicDB.rar"
    fake.write_bytes(b"Rar!\x1a\x07\x00")
    with pytest.raises(UserError, match="install unrar, bsdtar"):
        dl.download("cvc", root=tmp_path, sources=[fake])


def test_instructions_and_refusals(tmp_path):
    text = dl.download("cvc", root=tmp_path)[0]
    assert "https://polyp.grand-challenge.org/CVCClinicDB/" in text and "imbaseg download cvc --from" in text
    assert "imbaseg prepare drive" in dl.download("drive", root=tmp_path)[0]
    with pytest.raises(UserError, match="generated, not downloaded"):
        dl.download("synthetic-polyp", root=tmp_path, sources=[tmp_path])
    with pytest.raises(UserError, match="does not exist"):
        dl.download("drive", root=tmp_path, sources=[tmp_path / "nope"])
    with pytest.raises(UserError, match="not an archive"):
        (tmp_path / "notes.txt").write_text("x")
        dl.download("drive", root=tmp_path, sources=[tmp_path / "notes.txt"])


# --- a second source never silently replaces the first (issue 10, item 5) -------------------------


def _drive_zip(shared_data: Path, dest: Path, n: int, top: str = "DRIVE") -> Path:
    """A zip of the first ``n`` DRIVE training pairs (image, vessels, field of view) under ``top/``."""
    base = shared_data / "DRIVE" / "training"
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for sub in ("images", "1st_manual", "mask"):
            for f in sorted((base / sub).iterdir())[:n]:
                zf.write(f, f"{top}/training/{sub}/{f.name}")
    return dest


def _drive_pairs(tmp_path: Path) -> int:
    from imbaseg.data.sources import find_drive

    return len(find_drive(raw_dir("drive", tmp_path)).pairs)


def _entries(tmp_path: Path) -> list[dict]:
    return json.loads((raw_dir("drive", tmp_path) / "download.json").read_text())["entries"]


def test_second_archive_with_the_same_top_folder_needs_force(shared_data, tmp_path):
    a = _drive_zip(shared_data, tmp_path / "A.zip", 20)
    b = _drive_zip(shared_data, tmp_path / "B.zip", 5)
    dl.download("drive", root=tmp_path, sources=[a])
    assert _drive_pairs(tmp_path) == 20
    with pytest.raises(UserError, match=f"holds data imported from {a} on .*importing {b}.*--force") as err:
        dl.download("drive", root=tmp_path, sources=[b])
    assert "\n" not in str(err.value)
    assert _drive_pairs(tmp_path) == 20  # untouched
    assert sorted(p.name for p in raw_dir("drive", tmp_path).iterdir()) == ["DRIVE", "download.json"]
    assert dl.download("drive", root=tmp_path, sources=[a]) == ["A.zip: already imported"]
    assert "extracted" in dl.download("drive", root=tmp_path, sources=[b], force=True)[0]
    assert _drive_pairs(tmp_path) == 5
    assert [e["name"] for e in _entries(tmp_path)] == ["B"]  # A's data is gone, so is its record
    # A is another source now: not "already imported", and not silently put back either
    with pytest.raises(UserError, match=f"imported from {b} on .*--force"):
        dl.download("drive", root=tmp_path, sources=[a])
    assert _drive_pairs(tmp_path) == 5
    dl.download("drive", root=tmp_path, sources=[a], force=True)
    assert _drive_pairs(tmp_path) == 20


def test_refusal_comes_before_extraction(shared_data, tmp_path, monkeypatch):
    a = _drive_zip(shared_data, tmp_path / "A.zip", 3)
    b = _drive_zip(shared_data, tmp_path / "B.zip", 2)
    dl.download("drive", root=tmp_path, sources=[a])

    def no_extraction(*args):
        raise AssertionError("extracted although the import is refused")

    monkeypatch.setattr(dl, "_extract_into", no_extraction)
    with pytest.raises(UserError, match="--force"):
        dl.download("drive", root=tmp_path, sources=[b])
    assert dl.download("drive", root=tmp_path, sources=[a]) == ["A.zip: already imported"]  # not extracted


def test_refusal_after_extraction_when_the_member_list_is_unknown(shared_data, tmp_path, monkeypatch):
    """rar/7z: the names are known only once extracted; the refusal then leaves raw/ as it was."""
    a = _drive_zip(shared_data, tmp_path / "A.zip", 3)
    b = _drive_zip(shared_data, tmp_path / "B.zip", 2)
    dl.download("drive", root=tmp_path, sources=[a])
    monkeypatch.setattr(dl, "planned_entries", lambda path: None)
    with pytest.raises(UserError, match=f"imported from {a} .*--force"):
        dl.download("drive", root=tmp_path, sources=[b])
    assert _drive_pairs(tmp_path) == 3
    assert sorted(p.name for p in raw_dir("drive", tmp_path).iterdir()) == ["DRIVE", "download.json"]


def test_changed_moved_and_touched_archives(shared_data, tmp_path):
    a = _drive_zip(shared_data, tmp_path / "A.zip", 3)
    dl.download("drive", root=tmp_path, sources=[a])
    moved = tmp_path / "elsewhere" / "DRIVE-copy.zip"
    moved.parent.mkdir()
    shutil.copyfile(a, moved)
    assert dl.download("drive", root=tmp_path, sources=[moved]) == [
        f"DRIVE-copy.zip: already imported (the same content as {a})"
    ]
    os.utime(a, (1, 1))  # touched, same bytes: the sha256 decides
    assert dl.download("drive", root=tmp_path, sources=[a]) == ["A.zip: already imported"]
    _drive_zip(shared_data, a, 4)  # a new download saved over the old one: another source
    with pytest.raises(UserError, match=f"imported from {a} on .*, which has changed since.*--force"):
        dl.download("drive", root=tmp_path, sources=[a])
    assert _drive_pairs(tmp_path) == 3
    dl.download("drive", root=tmp_path, sources=[a], force=True)
    assert _drive_pairs(tmp_path) == 4
    assert dl.download("drive", root=tmp_path, sources=[a]) == ["A.zip: already imported"]


def test_record_left_by_older_versions_does_not_say_already_imported(shared_data, tmp_path):
    """The old code recorded A and B both as owning DRIVE/ after B silently replaced A's data."""
    a = _drive_zip(shared_data, tmp_path / "A.zip", 3)
    b = _drive_zip(shared_data, tmp_path / "B.zip", 2)
    raw = raw_dir("drive", tmp_path)
    dl.download("drive", root=tmp_path, sources=[b])
    old = [
        {"name": n, "from": str(z), "kind": "archive", "size": z.stat().st_size, "entries": ["DRIVE"],
         "sha256": hashlib.sha256(z.read_bytes()).hexdigest(), "date": "2025-01-01T00:00:00"}
        for n, z in (("A", a), ("B", b))
    ]  # fmt: skip
    (raw / "download.json").write_text(json.dumps({"dataset": "drive", "entries": old}))
    with pytest.raises(UserError, match=f"imported from {b} on 2025-01-01.*--force"):
        dl.download("drive", root=tmp_path, sources=[a])
    assert dl.download("drive", root=tmp_path, sources=[b]) == ["B.zip: already imported"]


def test_raw_entry_not_recorded_is_not_replaced(shared_data, tmp_path):
    mine = raw_dir("drive", tmp_path) / "DRIVE" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own files")
    with pytest.raises(UserError, match="holds data that download.json does not record.*--force"):
        dl.download("drive", root=tmp_path, sources=[_drive_zip(shared_data, tmp_path / "A.zip", 2)])
    assert mine.read_text() == "my own files"


def test_copied_folder_that_changed_needs_force(shared_data, tmp_path):
    src = tmp_path / "mine" / "CVC-ClinicDB"
    shutil.copytree(shared_data / "samples" / "CVC-ClinicDB", src)
    assert "copied" in dl.download("cvc", root=tmp_path, sources=[src], copy=True)[0]
    assert "already imported" in dl.download("cvc", root=tmp_path, sources=[src], copy=True)[0]
    # the same unchanged folder as a link instead of a copy: nothing is lost, no --force needed
    assert "linked" in dl.download("cvc", root=tmp_path, sources=[src])[0]
    assert "already imported" in dl.download("cvc", root=tmp_path, sources=[src])[0]
    assert "copied" in dl.download("cvc", root=tmp_path, sources=[src], copy=True)[0]
    (src / "Original" / "1.tif").unlink()
    (src / "Ground Truth" / "1.tif").unlink()
    with pytest.raises(UserError, match="which has changed since.*--force"):
        dl.download("cvc", root=tmp_path, sources=[src], copy=True)
    assert len(find_cvc(raw_dir("cvc", tmp_path)).pairs) == 20  # the earlier copy is kept
    dl.download("cvc", root=tmp_path, sources=[src], copy=True, force=True)
    assert len(find_cvc(raw_dir("cvc", tmp_path)).pairs) == 19


@pytest.mark.parametrize(
    "members, expected",
    [
        (["DRIVE/training/a.tif", "DRIVE/test/b.tif"], "DRIVE"),
        (["DRIVE/", "DRIVE/a.tif", "__MACOSX/DRIVE/._a.tif"], "DRIVE"),
        (["a.tif", "b.tif"], "pack"),  # loose files go into a folder named after the archive
        (["a.tif"], "pack"),
        (["DRIVE/a.tif", "other/b.tif"], "pack"),
    ],
)
def test_planned_entries_match_what_extraction_creates(tmp_path, members, expected):
    for kind, suffix in (("zip", ".zip"), ("tar", ".tar.gz")):
        archive = tmp_path / kind / f"pack{suffix}"
        archive.parent.mkdir()
        if kind == "zip":
            with zipfile.ZipFile(archive, "w") as zf:
                for m in members:
                    zf.writestr(m, "" if m.endswith("/") else "x")
        else:
            with tarfile.open(archive, "w:gz") as tf:
                for m in members:
                    info = tarfile.TarInfo("./" + m.rstrip("/"))
                    info.type = tarfile.DIRTYPE if m.endswith("/") else tarfile.REGTYPE
                    info.size = 0 if m.endswith("/") else 1
                    tf.addfile(info, None if m.endswith("/") else io.BytesIO(b"x"))
        assert dl.planned_entries(archive) == [expected]
        assert [p.name for p in dl.extract(archive, tmp_path / kind / "raw")] == [expected]


def test_a_dangling_link_is_replaced_without_force(shared_data, tmp_path):
    """The README's "if you move the folder, run the command again" with the folder's new place."""
    src = tmp_path / "old" / "CVC-ClinicDB"
    shutil.copytree(shared_data / "samples" / "CVC-ClinicDB", src)
    dl.download("cvc", root=tmp_path, sources=[src])
    moved = tmp_path / "new" / "CVC-ClinicDB"
    moved.parent.mkdir()
    src.rename(moved)
    assert dl.download("cvc", root=tmp_path, sources=[moved]) == [f"CVC-ClinicDB: linked from {moved}"]
    assert len(find_cvc(raw_dir("cvc", tmp_path)).pairs) == 20
