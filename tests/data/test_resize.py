"""The one resize pair: antialiased bilinear images, nearest masks; prepare, the loader cache and inference
all produce exactly what these two functions produce."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imbaseg.data.resize import resize_image_antialiased, resize_mask_nearest

RNG = np.random.default_rng(7)
IMAGE = RNG.integers(0, 256, (61, 83, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [(30, 40), (17, 83), (120, 160), (61, 40)])
def test_image_follows_pillow_bilinear_within_one_grey_level(size):
    """Pillow's BILINEAR also widens its triangle filter when shrinking: an independent implementation."""
    out = resize_image_antialiased(IMAGE, size)
    ref = np.asarray(Image.fromarray(IMAGE).resize(size[::-1], Image.BILINEAR))
    assert out.shape == (*size, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_shrinking_is_antialiased():
    """A 1-px checkerboard shrunk 4x is mid-grey everywhere; plain bilinear would sample 0s and 255s."""
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    out = resize_image_antialiased(board, (16, 16))
    assert out.shape == (16, 16) and np.abs(out.astype(int) - 128).max() <= 1


def test_grey_and_constant_images_and_the_identity():
    grey = IMAGE[..., 0]
    assert resize_image_antialiased(grey, (20, 30)).shape == (20, 30)
    flat = np.full((40, 50, 3), 77, np.uint8)
    assert (resize_image_antialiased(flat, (13, 29)) == 77).all()
    assert resize_image_antialiased(IMAGE, IMAGE.shape[:2]) is IMAGE
    ro = IMAGE.copy()
    ro.flags.writeable = False  # a memory-mapped cache is read-only
    assert resize_image_antialiased(ro, (10, 10)).shape == (10, 10, 3)


@pytest.mark.parametrize("size", [(20, 30), (150, 90), (61, 83)])
def test_masks_are_nearest_at_pixel_centres_like_pillow(size):
    mask = RNG.random((61, 83)) > 0.7
    out = resize_mask_nearest(mask, size)
    ref = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size[::-1], Image.NEAREST)) > 127
    assert out.dtype == bool and out.shape == size and (out == ref).all()
    labels = RNG.integers(0, 3, (61, 83)).astype(np.uint8)
    assert set(np.unique(resize_mask_nearest(labels, (30, 30)))) <= {0, 1, 2}


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="two positive integers"):
        resize_image_antialiased(IMAGE, (0, 10))


def test_prepare_and_the_loader_cache_use_the_pair(tmp_path):
    """A folder dataset prepared at 24x32 holds exactly resize_image_antialiased(raw); the loader's cache
    resized to 12x16 from the prepared PNG holds exactly resize_image_antialiased(prepared)."""
    from imbaseg.data.dataset import SegDataset
    from imbaseg.data.io import read_image, read_mask
    from imbaseg.data.prepare import prepare

    images, masks = tmp_path / "img", tmp_path / "msk"
    images.mkdir(), masks.mkdir()
    raw = {}
    for i in range(6):
        img = RNG.integers(0, 256, (50, 70, 3), dtype=np.uint8)
        mask = np.zeros((50, 70), np.uint8)
        mask[10 + i : 30, 20 : 40 + i] = 255
        Image.fromarray(img).save(images / f"c{i}.png")
        Image.fromarray(mask).save(masks / f"c{i}.png")
        raw[f"c{i}"] = (img, mask > 127)
    res = prepare("folder", root=tmp_path, images=images, masks=masks, size=(24, 32))
    for key, (img, mask) in raw.items():
        got = read_image(res.path / "images" / f"{key}.png")
        assert (got == resize_image_antialiased(img, (24, 32))).all()
        got = read_mask(res.path / "masks" / f"{key}.png") > 127
        assert (got == resize_mask_nearest(mask, (24, 32))).all()
    ds = SegDataset(res.path, "train", size=(12, 16))
    for i, item_id in enumerate(ds.ids):
        prepared = read_image(res.path / "images" / f"{item_id}.png")
        assert (ds.raw(i)["image"] == resize_image_antialiased(prepared, (12, 16))).all()
