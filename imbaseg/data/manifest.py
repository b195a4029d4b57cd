"""``manifest.csv`` of a prepared dataset: one row per image.

Columns ``id, split, height, width, fg_fraction, source``; fg_fraction is over the whole image.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from imbaseg.errors import UserError
from imbaseg.paths import atomic_write_text

COLUMNS = ("id", "split", "height", "width", "fg_fraction", "source")
MANIFEST = "manifest.csv"


def manifest_path(prepared_dir: str | os.PathLike) -> Path:
    return Path(prepared_dir) / MANIFEST


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Atomically write ``rows`` (dicts with COLUMNS) as CSV; fg_fraction with 6 decimals."""
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r["id"],
                r["split"],
                int(r["height"]),
                int(r["width"]),
                f"{float(r['fg_fraction']):.6f}",
                r.get("source", ""),
            ]
        )
    atomic_write_text(path, buf.getvalue())


def read_manifest(prepared_dir: str | os.PathLike):
    """The manifest as a pandas DataFrame (ids kept as strings); UserError if missing or corrupt."""
    import pandas as pd

    path = manifest_path(prepared_dir)
    if not path.is_file():
        raise UserError(f"'{path}' is missing: the dataset is not prepared. Run: imbaseg prepare <dataset>.")
    try:
        df = pd.read_csv(path, dtype={"id": str, "split": str, "source": str}, keep_default_na=False)
    except Exception as e:  # pandas raises several parser error types
        raise UserError(f"'{path}' is not a readable CSV ({e}); rerun imbaseg prepare with --force.") from e
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UserError(
            f"'{path}' lacks the column(s) {', '.join(missing)}; rerun imbaseg prepare with --force."
        )
    bad = df[~df["split"].isin(["train", "val", "test"])]
    if len(bad):
        raise UserError(
            f"'{path}' has an unknown split '{bad['split'].iloc[0]}' for id '{bad['id'].iloc[0]}'."
        )
    return df[list(COLUMNS)]
