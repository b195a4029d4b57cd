"""``manifest.csv`` of a prepared dataset: one row per image.

Columns ``id, split, height, width, fg_fraction, source``; fg_fraction is over the whole image.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from imbaseg.data.splits import SPLITS
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
    """The manifest of a prepared dataset as a pandas DataFrame, checked; UserError naming the file.

    Columns exactly ``COLUMNS`` in file order of the rows: ``id`` str (never parsed as a number, so
    ``0001`` stays ``0001``), ``split`` str in ``splits.SPLITS``, ``height``/``width`` int64 (> 0),
    ``fg_fraction`` float64 in [0, 1], ``source`` str (may be empty). An empty manifest (header only)
    gives an empty frame. Checked: the file exists and parses, every column is present, ids are
    non-empty and unique, splits are known, sizes and fractions are numbers in range.
    Select a split with ``df[df["split"] == "val"]``; ``df.to_dict("records")`` gives row dicts.
    """
    import pandas as pd

    path = manifest_path(prepared_dir)
    if not path.is_file():
        raise UserError(f"'{path}' is missing: the dataset is not prepared. Run: imbaseg prepare <dataset>.")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises several parser error types
        raise UserError(f"'{path}' is not a readable CSV ({e}); rerun imbaseg prepare with --force.") from e
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UserError(
            f"'{path}' lacks the column(s) {', '.join(missing)}; rerun imbaseg prepare with --force."
        )
    df = df[list(COLUMNS)].copy()
    _check_ids_and_splits(df, path)
    for col, kind in (("height", "Int64"), ("width", "Int64"), ("fg_fraction", "float64")):
        df[col] = _numbers(df, col, kind, path)
    return df


def _check_ids_and_splits(df, path: Path) -> None:
    empty = df["id"].str.strip() == ""
    if empty.any():
        raise UserError(f"'{path}' has a row without an id (row {int(empty.to_numpy().argmax()) + 2}); "
                        "rerun imbaseg prepare with --force.")
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise UserError(f"'{path}' lists the id '{dup.iloc[0]}' twice; rerun imbaseg prepare with --force.")
    bad = df[~df["split"].isin(SPLITS)]
    if len(bad):
        raise UserError(
            f"'{path}' has an unknown split '{bad['split'].iloc[0]}' for id '{bad['id'].iloc[0]}' "
            f"(expected {', '.join(SPLITS)}); rerun imbaseg prepare with --force."
        )


def _numbers(df, col: str, kind: str, path: Path):
    """Column ``col`` as int64 (> 0) or float64 in [0, 1]; UserError naming the first bad row."""
    import pandas as pd

    values = pd.to_numeric(df[col], errors="coerce")
    if kind == "Int64":
        ok = values.notna() & (values > 0) & (values == values.round())
    else:
        ok = values.notna() & (values >= 0) & (values <= 1)
    if not ok.all():
        i = int((~ok).to_numpy().argmax())
        want = "a positive integer" if kind == "Int64" else "a fraction between 0 and 1"
        raise UserError(
            f"'{path}': {col} of id '{df['id'].iloc[i]}' is {df[col].iloc[i]!r}, not {want}; "
            "rerun imbaseg prepare with --force."
        )
    return values.astype("int64" if kind == "Int64" else "float64")
