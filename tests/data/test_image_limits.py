"""Very large images: a decompression bomb is a bad file with a clear reason, in prepare (with and
without --skip-bad) and in io; --max-pixels / IMBASEG_MAX_IMAGE_PIXELS raise the limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from bad_files import huge_png
from PIL import Image
from typer.testing import CliRunner

from imbaseg.data.io import read_image, read_mask
from imbaseg.data.prepare import prepare
from imbaseg.errors import UserError

BOMB_REASON = "too large: 20000x12000 = 240,000,000 pixels is above the limit of 178,956,970 pixels"


def _folder(tmp_path: Path, sizes) -> tuple[Path, Path]:
    """images/ and masks/ of random RGB images (one disc each) at ``sizes`` (H, W), ids im0, im1, ..."""
    images, masks = tmp_path / "raw" / "images", tmp_path / "raw" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"im{k}.png")
        yy, xx = np.mgrid[:h, :w]
        disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (min(h, w) / 4) ** 2
        Image.fromarray(disc.astype(np.uint8) * 255).save(masks / f"im{k}.png")
    return images, masks


def _cli(*args, env=None):
    from imbaseg.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400", **(env or {})})


def test_io_checks_the_size_before_decoding(tmp_path):
    from imbaseg.data.io import DEFAULT_MAX_PIXELS, ImageTooLarge

    bomb = huge_png(tmp_path / "huge.png")
    for read in (read_image, read_mask):
        with pytest.raises(ImageTooLarge, match="20000x12000 = 240,000,000 pixels") as exc:
            read(bomb)
        assert exc.value.reason.startswith("20000x12000") and "--max-pixels N" in str(exc.value)
    # the TIFF fallback (tifffile: 3 samples tagged greyscale, which Pillow refuses) has the same limit
    tif = tmp_path / "cvc.tif"
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    tifffile.imwrite(tif, rgb, photometric="minisblack", planarconfig="contig")
    assert read_image(tif).shape == (30, 40, 3)
    with pytest.raises(ImageTooLarge, match="40x30 = 1,200 pixels is above the limit of 1,199"):
        read_image(tif, max_pixels=1199)
    assert DEFAULT_MAX_PIXELS == 178_956_970  # Pillow's own refusal threshold, 2 x 89,478,485


def test_prepare_reports_a_decompression_bomb_as_a_bad_file(tmp_path):
    images, masks = _folder(tmp_path, [(40, 52)] * 6)
    huge_png(images / "huge.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "huge.png")
    with pytest.raises(UserError, match=f"1 bad file\\(s\\) in folder: .*huge.png: {BOMB_REASON}"):
        prepare("folder", root=tmp_path, images=images, masks=masks, workers=1)
    listing = (tmp_path / "data" / "prepared" / "folder.problems.txt").read_text()
    assert "huge.png\t" + BOMB_REASON in listing
    res = prepare("folder", root=tmp_path, images=images, masks=masks, skip_bad=True, workers=1)
    assert sum(res.counts.values()) == 6 and [Path(f).name for f, _ in res.skipped] == ["huge.png"]
    assert res.skipped[0][1].startswith(BOMB_REASON)


def test_prepare_cli_skip_bad_and_max_pixels(tmp_path, monkeypatch):
    images, masks = _folder(tmp_path, [(40, 52)] * 5 + [(60, 80)])  # im5: 4,800 pixels
    base = ("prepare", "folder", "--images", images, "--masks", masks, "--root", tmp_path, "--workers", 1)
    res = _cli(*base, "--max-pixels", 4000, "--skip-bad")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "Skipped 1 bad file" in text and "im5.png" in text and "80x60 = 4,800 pixels" in text
    res = _cli(*base, "--max-pixels", 4000, "--force")
    assert res.exit_code == 2 and "1 bad file(s)" in res.output and "Traceback" not in res.output
    res = _cli(*base, "--force")  # the default limit takes them all
    assert res.exit_code == 0, res.output
    assert "Skipped" not in res.output
    monkeypatch.setenv("IMBASEG_MAX_IMAGE_PIXELS", "4000")
    with pytest.raises(UserError, match="im5.png: too large"):
        prepare("folder", root=tmp_path, images=images, masks=masks, force=True, workers=1)
    assert _cli(*base, "--max-pixels", 0).exit_code == 2  # a limit must be a positive number of pixels
