"""Finding a prepared dataset, and the images of one of its splits at their native size.

``locate_prepared(dataset, roots, given)`` resolves aliases through ``paths.dataset_key`` (the one
alias table) and looks for ``data/prepared/<name>/manifest.csv`` under each root in turn;
``split_data(prepared, split, in_channels)`` returns the split's ids (manifest order), whether it has
a field of view, and its pixel count. ``evaluate`` uses both; the prepared format itself belongs to
``imbaseg.data.prepared`` and ``imbaseg.data.manifest``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imbaseg.errors import UserError


def prepared_name(dataset: str) -> str:
    """The folder name ``imbaseg prepare`` uses for ``dataset`` (aliases resolved: isic -> isic2018)."""
    from imbaseg.paths import dataset_key, safe_name

    return safe_name(dataset_key(dataset))


def _given_candidates(name: str, given: Path) -> list[Path]:
    """The project root, its data/ folder, data/prepared/, or the dataset folder itself."""
    from imbaseg.paths import prepared_dir

    found = [prepared_dir(name, given), given / "prepared" / name, given / name]
    return found + ([given] if given.name == name else [])


def locate_prepared(dataset: str, roots: Iterable = (None,), given: str | os.PathLike | None = None) -> Path:
    """The folder holding ``data/prepared/<dataset>/manifest.csv``.

    given: a folder the user named (``--data-root``): only it is searched, in the four spellings of
    ``_given_candidates``. Otherwise each of ``roots`` in turn (a project root; None = $IMBASEG_HOME
    or the current directory). UserError saying where it was expected, and the fix, when none has it.
    """
    from imbaseg.paths import prepared_dir

    name = prepared_name(dataset)
    if given is not None:
        candidates = _given_candidates(name, Path(given).expanduser())
    else:
        candidates = list(dict.fromkeys(prepared_dir(name, r) for r in roots))
    for c in candidates:
        if (c / "manifest.csv").is_file():
            return c
    where = (
        f"--data-root {given} holds no data/prepared/{name}"
        if given is not None
        else "looked in " + ", ".join(str(c) for c in candidates)
    )
    raise UserError(
        f"prepared dataset '{name}' not found: expected {candidates[0]} ({where}). If it moved, pass "
        f"--data-root PATH (the folder holding data/prepared/{name}); "
        f"if it is gone, run imbaseg prepare {name}."
    )


@dataclass
class SplitData:
    """One split of a prepared dataset: ids in manifest order, FOV flag, channels, pixels (sum of H x W)."""

    prepared: Path
    split: str
    ids: list[str]
    has_fov: bool
    in_channels: int
    pixels: int

    def item(self, item_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """uint8 image (H, W, C), bool mask (H, W), bool FOV (H, W) or None, at the native size."""
        from imbaseg.data.dataset import decode_item

        planes = decode_item(self.prepared, item_id, self.in_channels, self.has_fov)
        c = self.in_channels
        fov = planes[..., c + 1] > 0 if self.has_fov else None
        return np.ascontiguousarray(planes[..., :c]), planes[..., c] > 0, fov


def split_data(prepared: Path, split: str, in_channels: int) -> SplitData:
    """ids, FOV flag and pixels of ``split``; UserError listing the available splits if it is absent."""
    from imbaseg.data.dataset import SegDataset
    from imbaseg.data.manifest import read_manifest
    from imbaseg.data.splits import SPLITS
    from imbaseg.errors import suggestion

    rows = read_manifest(prepared).to_dict("records")
    available = [s for s in SPLITS if s in {r["split"] for r in rows}]
    if split not in available:
        raise UserError(
            f"split '{split}' does not exist in {Path(prepared) / 'manifest.csv'}."
            f"{suggestion(split, available)} "
            f"Available splits: {', '.join(available) or 'none'}; pass one with --split."
        )
    ds = SegDataset(prepared, split, in_channels=in_channels, cache=False)
    pixels = sum(_pixels(r) for r in rows if r["split"] == split)
    return SplitData(Path(prepared), split, list(ds.ids), bool(ds.has_fov), in_channels, pixels)


def _pixels(row: dict) -> int:
    """height * width of a manifest row; 0 when unreadable (only the AUC sampling uses it)."""
    try:
        return int(row["height"]) * int(row["width"])
    except (KeyError, TypeError, ValueError):
        return 0
