"""The one manifest reader: what it returns and every check, each naming the file and the fix."""

from __future__ import annotations

import pytest

from imbaseg.data.manifest import COLUMNS, read_manifest, write_manifest
from imbaseg.errors import UserError

HEADER = ",".join(COLUMNS) + "\n"


def write(folder, *rows: str) -> None:
    (folder / "manifest.csv").write_text(HEADER + "".join(r + "\n" for r in rows))


def test_typed_frame_in_file_order_with_ids_kept_as_text(tmp_path):
    rows = [
        {"id": "0010", "split": "val", "height": 4, "width": 6, "fg_fraction": 0.25, "source": "a/b.png"},
        {"id": "0002", "split": "train", "height": 8, "width": 8, "fg_fraction": 0.0, "source": ""},
    ]
    write_manifest(tmp_path / "manifest.csv", rows)
    df = read_manifest(tmp_path)
    assert list(df.columns) == list(COLUMNS)
    assert list(df["id"]) == ["0010", "0002"]  # not parsed as numbers, not re-sorted
    assert df["height"].dtype == "int64" and df["width"].dtype == "int64"
    assert df["fg_fraction"].dtype == "float64" and list(df["fg_fraction"]) == [0.25, 0.0]
    assert list(df["source"]) == ["a/b.png", ""]
    records = df[df["split"] == "val"].to_dict("records")
    assert records == [{**rows[0], "fg_fraction": 0.25}]


def test_an_empty_manifest_is_an_empty_frame(tmp_path):
    write(tmp_path)
    df = read_manifest(tmp_path)
    assert len(df) == 0 and list(df.columns) == list(COLUMNS)


@pytest.mark.parametrize(
    "row,message",
    [
        ("1,tarin,4,4,0.5,x", "unknown split 'tarin' for id '1'"),
        (",train,4,4,0.5,x", "a row without an id"),
        ("1,train,four,4,0.5,x", "height of id '1' is 'four', not a positive integer"),
        ("1,train,4,0,0.5,x", "width of id '1' is '0', not a positive integer"),
        ("1,train,4,4.5,0.5,x", "width of id '1' is '4.5'"),
        ("1,train,4,4,1.5,x", "fg_fraction of id '1' is '1.5', not a fraction between 0 and 1"),
        ("1,train,4,4,,x", "fg_fraction of id '1' is ''"),
    ],
)
def test_bad_rows_name_the_file_the_row_and_the_fix(tmp_path, row, message):
    write(tmp_path, "0,train,4,4,0.1,x", row)
    with pytest.raises(UserError, match="manifest.csv") as exc:
        read_manifest(tmp_path)
    assert message in str(exc.value) and "imbaseg prepare" in str(exc.value)


def test_duplicate_ids_are_refused(tmp_path):
    write(tmp_path, "7,train,4,4,0.1,x", "7,test,4,4,0.1,y")
    with pytest.raises(UserError, match="lists the id '7' twice"):
        read_manifest(tmp_path)


def test_missing_file_and_columns(tmp_path):
    with pytest.raises(UserError, match="not prepared. Run: imbaseg prepare"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("id,split,height\n1,train,4\n")
    with pytest.raises(UserError, match="lacks the column.*width, fg_fraction, source"):
        read_manifest(tmp_path)


def test_there_is_one_reader():
    """dataset, prepare, evaluation and the figures all call imbaseg.data.manifest.read_manifest."""
    from pathlib import Path

    import imbaseg

    src = Path(imbaseg.__file__).parent
    defined = [p for p in src.rglob("*.py") if "def read_manifest" in p.read_text()]
    assert defined == [src / "data" / "manifest.py"]
