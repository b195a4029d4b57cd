"""The download and prepare Typer commands, on a local app that registers them (cli/main.py is the lead's)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from imbaseg.cli.data_cmds import download, prepare
from imbaseg.data.manifest import read_manifest
from imbaseg.errors import UserError

app = typer.Typer()
app.command("download")(download)
app.command("prepare")(prepare)
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_download_instructions_then_import_then_prepare(shared_data, tmp_path):
    res = invoke("download", "drive", "--root", tmp_path)
    assert res.exit_code == 0 and "drive.grand-challenge.org" in res.output
    res = invoke("download", "drive", "--root", tmp_path, "--from", shared_data / "DRIVE")
    assert res.exit_code == 0 and "DRIVE: linked from" in res.output
    assert (tmp_path / "data" / "raw" / "drive" / "DRIVE").is_symlink()
    res = invoke("prepare", "drive", "--root", tmp_path, "--size", 64, 64)
    assert res.exit_code == 0, res.output
    assert "Prepared" in res.output and "16 train / 4 val / 20 test" in res.output
    assert "Class imbalance" in res.output and "│ test  │     20 │" in res.output
    res = invoke("prepare", "drive", "--root", tmp_path, "--size", 64, 64)
    assert res.exit_code == 0 and "is up to date" in res.output
    df = read_manifest(tmp_path / "data" / "prepared" / "drive")
    assert set(df["height"]) == {64} and (tmp_path / "data" / "prepared" / "drive" / "fov").is_dir()


def test_prepare_synthetic_options_and_errors(tmp_path):
    res = invoke("prepare", "synthetic-vessel", "--root", tmp_path, "--n", 8, "--size", 48, 48, "--seed", 5)
    assert res.exit_code == 0, res.output
    assert "6 train / 1 val / 1 test" in res.output
    res = invoke("prepare", "synthetic-vessel", "--root", tmp_path, "--n", 9)
    assert isinstance(res.exception, UserError) and "--force" in str(res.exception)
    res = invoke("prepare", "drive", "--root", tmp_path, "--split-by-sequence")
    assert isinstance(res.exception, UserError) and "split_by_sequence" in str(res.exception)
    res = invoke("prepare", "synthetic-poly", "--root", tmp_path)
    assert isinstance(res.exception, UserError) and "Did you mean 'synthetic-polyp'" in str(res.exception)


def test_prepare_folder_with_skip_bad_lists_skipped(shared_data, tmp_path):
    images, masks = tmp_path / "img", tmp_path / "msk"
    images.mkdir()
    masks.mkdir()
    base = shared_data / "samples" / "ISIC2018"
    for f in sorted((base / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))[:5]:
        (images / f.name).symlink_to(f)
        m = base / "ISIC2018_Task1_Training_GroundTruth" / f"{f.stem}_segmentation.png"
        (masks / m.name).symlink_to(m)
    (images / "extra.png").write_bytes(b"\x89PNG broken")
    res = invoke("prepare", "folder", "--root", tmp_path, "--images", images, "--masks", masks)
    assert isinstance(res.exception, UserError) and "extra.png: missing mask" in str(res.exception)
    res = invoke(
        "prepare",
        "folder",
        "--root",
        tmp_path,
        "--images",
        images,
        "--masks",
        masks,
        "--skip-bad",
        "--name",
        "mine",
    )
    assert res.exit_code == 0, res.output
    assert "Skipped 1 bad file(s)" in res.output and "extra.png" in res.output
    assert len(read_manifest(tmp_path / "data" / "prepared" / "mine")) == 5


def test_help_is_fast_and_torch_free():
    code = (
        "import sys, imbaseg.cli.data_cmds, imbaseg.data.prepare, imbaseg.data.download; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    res = invoke("prepare", "--help")
    assert res.exit_code == 0 and "--split-by-sequence" in res.output and "--skip-bad" in res.output


@pytest.mark.parametrize("dataset", ["synthetic-lesion", "folder"])
def test_download_refusals(tmp_path, dataset):
    res = invoke("download", dataset, "--root", tmp_path, "--from", tmp_path)
    assert isinstance(res.exception, UserError)


def test_download_over_another_source_is_one_line_and_exit_2(shared_data, tmp_path):
    import zipfile

    from imbaseg.cli.common import user_errors

    guarded = typer.Typer()
    guarded.command("download")(user_errors(download))
    guarded.command("prepare")(user_errors(prepare))
    zips = []
    for name, n in (("A.zip", 3), ("B.zip", 2)):  # two archives whose top folder is DRIVE/
        zips.append(tmp_path / name)
        with zipfile.ZipFile(zips[-1], "w") as zf:
            for sub in ("images", "1st_manual", "mask"):
                for f in sorted((shared_data / "DRIVE" / "training" / sub).iterdir())[:n]:
                    zf.write(f, f"DRIVE/training/{sub}/{f.name}")
    args = ["download", "drive", "--root", str(tmp_path), "--from"]
    assert runner.invoke(guarded, [*args, str(zips[0])]).exit_code == 0
    res = runner.invoke(guarded, [*args, str(zips[1])])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "A.zip" in lines[0] and "--force" in lines[0], res.output
    assert runner.invoke(guarded, [*args, str(zips[1]), "--force"]).exit_code == 0


def test_prepare_cvc_by_sequence_reports_the_closest_pair(shared_data, tmp_path):
    from imbaseg.cli.common import user_errors

    guarded = typer.Typer()
    guarded.command("prepare")(user_errors(prepare))
    guarded.command("download")(user_errors(download))
    sample = shared_data / "samples" / "CVC-ClinicDB"
    args = ["prepare", "cvc", "--root", str(tmp_path), "--source", str(sample), "--size", "48", "64"]
    res = runner.invoke(guarded, [*args, "--split-by-sequence", "--sequence-threshold", "2"])
    assert res.exit_code == 2 and "--sequence-threshold 2.0 is out of range" in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) == 1
    res = runner.invoke(guarded, [*args, "--split-by-sequence"])
    text = " ".join(res.output.split())  # the console wraps long notes
    assert res.exit_code == 0, res.output
    assert "split by sequence: 20 near-duplicate groups (largest 1)" in text
    assert "13/3/4 frames (target 13/3/4); closest frames in different splits:" in text
    res = runner.invoke(guarded, [*args, "--name", "cvc-random"])
    assert res.exit_code == 0 and "random split: 0 near-duplicate pair(s)" in " ".join(res.output.split())
