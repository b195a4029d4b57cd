"""evaluate and predict on a full disk and a read-only folder (real tmpfs), and predict's input checks:
a truncated JPEG or an image above the pixel limit stops it before anything is written."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from bad_files import huge_png, truncated_jpeg
from eval_helpers import DATASET
from PIL import Image
from tmpfs_helpers import Disks, fill, temp_leftovers
from typer.testing import CliRunner

from imbaseg.errors import UserError
from imbaseg.evaluation.evaluate import evaluate_run
from imbaseg.evaluation.predict import predict


@pytest.fixture
def disks():
    d = Disks()
    yield d
    d.unmount_all()


@pytest.fixture
def good_png(tmp_path):
    path = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(path)
    return path


def _cli(*args, env=None):
    from imbaseg.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def test_evaluate_on_a_full_disk_keeps_the_previous_evaluation(disks, tiny_project, tmp_path):
    fs = disks.mount(tmp_path / "fs", "2m")
    run = fs / "runs" / DATASET / "bce" / "tiny"
    shutil.copytree(tiny_project["run"], run)
    evaluate_run(run, device="cpu")
    before = (run / "eval" / "test" / "per_image.csv").read_text()
    fill(fs)
    with pytest.raises(UserError, match="no space left on the device holding .*eval/test"):
        evaluate_run(run, device="cpu", save_probabilities=True)
    assert (run / "eval" / "test" / "per_image.csv").read_text() == before
    assert not (run / "eval" / "test" / "probabilities").exists() and temp_leftovers(fs) == []
    (fs / "filler").unlink()
    disks.readonly(fs)
    with pytest.raises(UserError, match="read-only file system"):
        evaluate_run(run, device="cpu")


def test_predict_on_a_full_disk_writes_nothing(disks, tiny_project, tmp_path, good_png):
    out = disks.mount(tmp_path / "out", "256k")
    (out / "mine.txt").write_text("the user's file")
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(big)
    # 256 kB hold good.png's mask and overlay, not the 400x400 noise overlay (~480 kB as PNG)
    with pytest.raises(UserError, match=f"no space left on the device holding {out}"):
        predict(tiny_project["run"], [good_png, big], out, device="cpu")
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]  # no good_mask.png, no staging folder
    disks.readonly(out)
    with pytest.raises(UserError, match=f"cannot write {out}: the folder is on a read-only file system"):
        predict(tiny_project["run"], [good_png], out, device="cpu")


def test_predict_checks_every_input_in_full_before_writing(tiny_project, tmp_path, good_png):
    """Pillow's verify() passes a truncated JPEG; a full decode does not, and nothing is written."""
    bad = truncated_jpeg(tmp_path / "cut.jpg")
    with Image.open(bad) as im:
        im.verify()  # the header is intact: a cheap check would let it through
    out = tmp_path / "out"
    with pytest.raises(UserError, match="cannot read input image .*cut.jpg.*truncated"):
        predict(tiny_project["run"], [good_png, bad], out, device="cpu")
    assert not out.exists()
    out.mkdir()
    with pytest.raises(UserError, match="cut.jpg"):
        predict(tiny_project["run"], [good_png, bad], out, device="cpu")
    assert list(out.iterdir()) == []  # an existing --out stays as it was


def test_predict_refuses_a_decompression_bomb(tiny_project, tmp_path, good_png, monkeypatch):
    bomb = huge_png(tmp_path / "huge.png")  # 20000 x 12000 = 240 megapixels
    out = tmp_path / "out"
    with pytest.raises(UserError) as exc:
        predict(tiny_project["run"], [good_png, bomb], out, device="cpu")
    text = str(exc.value)
    assert "huge.png" in text and "20000x12000 = 240,000,000 pixels is above the limit of 178,956,970" in text
    assert "--max-pixels N (or IMBASEG_MAX_IMAGE_PIXELS=N)" in text
    assert not out.exists()
    # the limit is one setting: max_pixels (--max-pixels), else IMBASEG_MAX_IMAGE_PIXELS; 52 x 40 = 2080
    with pytest.raises(UserError, match="good.png.* too large: 52x40 = 2,080 pixels .* limit of 2,079"):
        predict(tiny_project["run"], [good_png], out, device="cpu", max_pixels=2079)
    assert len(predict(tiny_project["run"], [good_png], out, device="cpu", max_pixels=2080)) == 1
    monkeypatch.setenv("IMBASEG_MAX_IMAGE_PIXELS", "2000")
    with pytest.raises(UserError, match="above the limit of 2,000 pixels"):
        predict(tiny_project["run"], [good_png], tmp_path / "o2", device="cpu")
    assert len(predict(tiny_project["run"], [good_png], tmp_path / "o3", device="cpu", max_pixels=5000)) == 1
    monkeypatch.setenv("IMBASEG_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(UserError, match="IMBASEG_MAX_IMAGE_PIXELS='lots' is not a positive whole number"):
        predict(tiny_project["run"], [good_png], tmp_path / "o4", device="cpu")
    monkeypatch.delenv("IMBASEG_MAX_IMAGE_PIXELS")
    for bad in (0, -5):  # the same range and message as prepare --max-pixels (config.FLAG_NUMBERS)
        with pytest.raises(UserError, match=f"^--max-pixels must be >= 1, got {bad}$"):
            predict(tiny_project["run"], [good_png], tmp_path / "o5", device="cpu", max_pixels=bad)


def test_predict_max_pixels_flag_reaches_the_library(tiny_project, tmp_path, good_png, monkeypatch):
    import imbaseg.evaluation.predict as pred

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr(pred, "predict", fake)
    res = _cli("predict", tiny_project["run"], good_png, "--out", tmp_path / "o", "--max-pixels", 5000)
    assert res.exit_code == 0, res.output
    assert seen["max_pixels"] == 5000


def test_staging_left_by_a_killed_evaluate_or_predict_goes_at_the_next_one(run_copy, tmp_path, good_png):
    from tmpfs_helpers import dead_pid

    dead = dead_pid()
    eval_stale = run_copy / "eval" / f".test.tmp-{dead}-0123abcd"
    out = tmp_path / "out"
    out_stale = out / f".staged.tmp-{dead}-0123abcd"
    for folder in (eval_stale, out_stale):
        (folder / "predictions").mkdir(parents=True)
    mine = out / ".keep.tmp-notapid"  # a name of the user's that only looks similar stays
    mine.write_text("x")
    evaluate_run(run_copy, device="cpu")
    predict(run_copy, [good_png], out, device="cpu")
    assert not eval_stale.exists() and not out_stale.exists() and mine.exists()
    assert sorted(p.name for p in out.iterdir()) == [".keep.tmp-notapid", "good_mask.png", "good_overlay.png"]
