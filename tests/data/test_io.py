"""imbaseg.data.io: reading the real files, unreadable files, and what counts as a binary mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from imbaseg.data.io import (
    UnreadableImage,
    binarize,
    header_size,
    mask_problem,
    nonbinary_fraction,
    read_image,
    read_mask,
    write_png,
)


def test_cvc_tiff_tagged_grey_reads_as_rgb(shared_data):
    path = shared_data / "samples" / "CVC-ClinicDB" / "Original" / "1.tif"
    with pytest.raises(UnidentifiedImageError):  # the reason io needs tifffile: Pillow refuses these files
        Image.open(path).load()
    img = read_image(path)
    assert img.shape == (288, 384, 3) and img.dtype == np.uint8
    assert header_size(path) is None  # Pillow cannot parse the header either
    mask = read_mask(shared_data / "samples" / "CVC-ClinicDB" / "Ground Truth" / "1.tif")
    assert mask.shape == (288, 384)
    # 1.tif has 6.5% of pixels strictly between 0 and 255 (JPEG-like noise near 0, anti-aliased edges) ...
    assert ((mask > 0) & (mask < 255)).mean() > 0.05
    assert mask_problem(mask) is None  # ... and still counts as binary


def test_drive_lzw_tiff_and_gifs(shared_data):
    img = read_image(shared_data / "DRIVE" / "training" / "images" / "21_training.tif")
    assert img.shape == (584, 565, 3)  # LZW-compressed: decoded by Pillow, no imagecodecs needed
    vessels = read_mask(shared_data / "DRIVE" / "training" / "1st_manual" / "21_manual1.gif")
    assert vessels.shape == (584, 565) and set(np.unique(vessels)) == {0, 255}


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_truncated_file_names_the_file(tmp_path, suffix):
    rng = np.random.default_rng(0)
    path = tmp_path / f"bad{suffix}"
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage) as err:
        read_image(path)
    assert str(path) in str(err.value) and "--skip-bad" in str(err.value)


def test_not_an_image_and_missing(tmp_path):
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(UnreadableImage, match="x.png"):
        read_image(tmp_path / "x.png")
    with pytest.raises(UnreadableImage, match="does not exist"):
        read_image(tmp_path / "nope.png")


def test_modes_palette_alpha_16bit_and_grey_rgb(tmp_path):
    p = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.save(tmp_path / "p.png")
    assert read_mask(tmp_path / "p.png").tolist() == [[0, 255], [255, 0]]  # red label -> max channel
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (4, 4, 3)
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "16.png")
    assert read_mask(tmp_path / "16.png").tolist() == [[0, 255]]  # 65535 / 65535 * 255
    grey = np.repeat(np.arange(16, dtype=np.uint8).reshape(4, 4, 1), 3, axis=2)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (4, 4)  # equal channels collapse to grey


def _disk(n=64, r=20):
    yy, xx = np.mgrid[0:n, 0:n]
    return np.hypot(yy - n / 2, xx - n / 2)  # distance to the centre


def test_binary_rules_table():
    d = _disk()
    clean = np.where(d <= 20, 255, 0).astype(np.uint8)
    # anti-aliased: a linear ramp 1.5 px wide across the edge -> mid values only next to the edge
    aa = (np.clip(20.75 - d, 0, 1.5) / 1.5 * 255).astype(np.uint8)
    noisy = np.clip(clean.astype(int) + np.random.default_rng(0).integers(-20, 21, clean.shape), 0, 255)
    gradient = np.tile(np.linspace(0, 255, 64), (64, 1)).astype(np.uint8)  # a photo-like ramp
    labels = np.where(d <= 10, 2, np.where(d <= 20, 1, 0)).astype(np.uint8)
    assert mask_problem(clean) is None
    assert mask_problem(aa) is None and ((aa > 31) & (aa < 224)).mean() > 0.01  # >1% ambiguous, all at edges
    assert mask_problem(noisy.astype(np.uint8)) is None
    assert "grey levels" in mask_problem(gradient)
    # column j holds 255*j/63: ambiguous (32..223) for j = 8..55 (48 columns); > 127 from j = 32, so the
    # edge is column 32 and the 2-px band around it (columns 30..34) is excused: 48 - 5 = 43 of 64 columns
    assert nonbinary_fraction(gradient) == pytest.approx(43 / 64)
    assert "label values {0, 1, 2}" in mask_problem(labels)


def test_binarize_threshold_and_label_masks():
    assert binarize(np.array([[0, 127, 128, 255]], np.uint8)).tolist() == [[False, False, True, True]]
    assert binarize(np.array([[0, 1, 1]], np.uint8)).tolist() == [[False, True, True]]  # 0/1 label mask
    assert not binarize(np.zeros((3, 3), np.uint8)).any()


def test_write_png_roundtrip(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    write_png(tmp_path / "i.png", img)
    write_png(tmp_path / "m.png", img[..., 0] > 100)
    assert np.array_equal(read_image(tmp_path / "i.png"), img)
    assert set(np.unique(read_mask(tmp_path / "m.png"))) <= {0, 255}
    with pytest.raises(ValueError):
        write_png(tmp_path / "f.png", img.astype(np.float32))
