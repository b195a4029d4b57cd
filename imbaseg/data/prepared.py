"""Writer and checker of the prepared format (see ARCHITECTURE.md).

``data/prepared/<name>/``: ``images/<id>.png``, ``masks/<id>.png`` (0/255), ``fov/<id>.png`` (optional),
``manifest.csv`` and ``prepare.json``. The writer fills a hidden temp folder next to the target and
renames it into place only when everything is written, so an interrupted prepare never leaves a
folder that looks complete; a full disk or a read-only folder is one ``UserError``
(``paths.write_error``) and the temp folder is removed. Temp folders of killed prepares go at the next
prepare there. ``prepare.json`` carries a fingerprint of the inputs and options: a re-run with the
same fingerprint does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from imbaseg.data.io import write_png
from imbaseg.data.manifest import COLUMNS, MANIFEST, read_manifest, write_manifest
from imbaseg.data.splits import SPLITS
from imbaseg.errors import UserError
from imbaseg.paths import atomic_write_text, remove_stale_temps, replace_dir, write_error

FORMAT_VERSION = 2  # bump when the prepared layout or pixels change (2: antialiased bilinear resize)
INFO = "prepare.json"


def fingerprint(payload) -> str:
    """sha256 of a JSON-serialisable description of inputs and options (sorted keys)."""
    text = json.dumps({"format": FORMAT_VERSION, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def files_fingerprint(files: list[Path], root: Path) -> list:
    """[relative path, size, mtime_ns] per file: cheap (stat only), changes when a file is replaced."""
    out = []
    for f in files:
        st = os.stat(f)
        try:
            rel = str(Path(f).relative_to(root))
        except ValueError:
            rel = str(f)
        out.append([rel, st.st_size, st.st_mtime_ns])
    return out


def read_info(prepared_dir: str | os.PathLike) -> dict | None:
    """prepare.json as a dict, or None when absent or unreadable."""
    path = Path(prepared_dir) / INFO
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def problem(prepared_dir: str | os.PathLike) -> str | None:
    """Why ``prepared_dir`` is not a complete prepared dataset, or None when it is."""
    d = Path(prepared_dir)
    if not d.is_dir():
        return f"'{d}' does not exist"
    info = read_info(d)
    if info is None or "counts" not in info:
        return f"'{d / INFO}' is missing or unreadable"
    try:
        df = read_manifest(d)
    except UserError as e:
        return str(e)
    if len(df) != sum(info["counts"].values()):
        return f"'{d / MANIFEST}' has {len(df)} rows but {INFO} counts {sum(info['counts'].values())}"
    for sub in ("images", "masks") + (("fov",) if info.get("has_fov") else ()):
        missing = [i for i in df["id"] if not (d / sub / f"{i}.png").is_file()]
        if missing:
            return f"'{d / sub / (missing[0] + '.png')}' is missing ({len(missing)} file(s) in {sub}/)"
    return None


def is_complete(prepared_dir: str | os.PathLike) -> bool:
    return problem(prepared_dir) is None


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


class PreparedWriter:
    """Context manager that writes a prepared dataset into a temp folder and renames it on ``commit``.

    Leaving the block without ``commit`` (an error, Ctrl-C) deletes the temp folder; the target is
    untouched. An ``OSError`` inside the block (full disk, read-only folder) leaves it as
    ``paths.write_error``, with the space needed estimated from the samples written so far and
    ``expected`` (the number of samples to come, when known). ``write_sample`` may run from several
    threads: each call writes distinct files.
    """

    def __init__(self, target: str | os.PathLike, with_fov: bool = False, expected: int | None = None):
        self.target = Path(target)
        self.tmp = self.target.parent / f".{self.target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.with_fov = with_fov
        self.expected = expected
        self.committed = False

    def __enter__(self) -> PreparedWriter:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.target.parent)
            for sub in ("images", "masks") + (("fov",) if self.with_fov else ()):
                (self.tmp / sub).mkdir(parents=True)
        except OSError as exc:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise write_error(self.target, exc) from exc
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.committed:
            return
        need = self._need() if isinstance(exc, OSError) else None
        shutil.rmtree(self.tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(self.target, exc, need) from exc

    def _need(self) -> int | None:
        """Bytes the whole dataset will take: the temp folder's size per image written, times ``expected``."""
        try:
            done = sum(1 for _ in (self.tmp / "images").iterdir())
            return _folder_bytes(self.tmp) * self.expected // done if done and self.expected else None
        except OSError:
            return None

    def write_sample(
        self,
        sample_id: str,
        image: np.ndarray,
        mask: np.ndarray,
        fov: np.ndarray | None = None,
        split: str = "",
        source: str = "",
    ) -> dict:
        """Write one sample; ``mask``/``fov`` are bool or 0/255 (H, W). Returns its manifest row.

        fg_fraction is over the whole image (an empty mask gives 0.0).
        """
        mask = np.asarray(mask) > 0
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{sample_id}: image {image.shape[:2]} and mask {mask.shape} differ")
        write_png(self.tmp / "images" / f"{sample_id}.png", image)
        write_png(self.tmp / "masks" / f"{sample_id}.png", mask.astype(np.uint8) * 255)
        if self.with_fov:
            if fov is None:
                raise ValueError(f"{sample_id}: this dataset needs a field-of-view mask")
            write_png(self.tmp / "fov" / f"{sample_id}.png", (np.asarray(fov) > 0).astype(np.uint8) * 255)
        h, w = mask.shape
        return {
            "id": sample_id,
            "split": split,
            "height": h,
            "width": w,
            "fg_fraction": float(mask.mean()),
            "source": source,
        }

    def commit(self, rows: list[dict], info: dict) -> Path:
        """Write manifest.csv and prepare.json, then swap the temp folder into place. Returns the target."""
        for r in rows:
            if r["split"] not in SPLITS:
                raise ValueError(f"{r['id']}: split '{r['split']}' is not train/val/test")
        rows = sorted(rows, key=lambda r: (SPLITS.index(r["split"]), r["id"]))
        write_manifest(self.tmp / MANIFEST, rows)
        counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
        info = {
            **info,
            "format_version": FORMAT_VERSION,
            "counts": counts,
            "has_fov": self.with_fov,
            "columns": list(COLUMNS),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(self.tmp / INFO, json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        replace_dir(self.tmp, self.target)
        self.committed = True
        return self.target
