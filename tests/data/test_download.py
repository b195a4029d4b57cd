"""imbaseg download against a local HTTP server (127.0.0.1), and --from imports of archives and folders.

The server serves zips built from the shared ISIC 2018 sample under the official archive names. It
honours Range, and can drop a connection halfway, ignore Range, or answer 404.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
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
