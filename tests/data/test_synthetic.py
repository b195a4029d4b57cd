"""Synthetic datasets: foreground ranges, field of view, determinism, and that no threshold solves them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import skeletonize

from imbaseg.data import synthetic as syn
from imbaseg.data.manifest import read_manifest
from imbaseg.data.prepare import prepare, prepare_dataset
from imbaseg.errors import UserError

N = 30  # samples per check: enough to hit the tails of the ranges, fast on 2 cores


@pytest.fixture(scope="module")
def samples():
    return {name: [syn.sample(name, i, seed=7) for i in range(N)] for name in syn.GENERATORS}


@pytest.mark.parametrize(
    "name, lo, hi",
    [("synthetic-polyp", 0.03, 0.15), ("synthetic-vessel", 0.07, 0.13), ("synthetic-lesion", 0.10, 0.30)],
)
def test_foreground_ranges(samples, name, lo, hi):
    fractions = np.array([m.mean() for _, m, _ in samples[name]])
    assert lo <= fractions.min() and fractions.max() <= hi
    for img, mask, _ in samples[name]:
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8 and mask.dtype == bool


def test_polyp_is_one_to_three_sharp_blobs(samples):
    for _, mask, fov in samples["synthetic-polyp"]:
        assert fov is None
        assert 1 <= ndimage.label(mask)[1] <= 3


def test_vessel_fov_and_thinness(samples):
    for img, mask, fov in samples["synthetic-vessel"]:
        assert (
            fov is not None and 0.55 < fov.mean() < 0.75
        )  # circle of radius 0.47*128: pi*60.2^2/128^2 = 0.69
        assert not mask[~fov].any()  # vessels only inside the field of view
        assert img[~fov].max() < 16  # black outside, as in fundus photographs
    # thin: local width = 2 * (distance to background at the skeleton) - 1, pooled over the images
    widths = np.concatenate(
        [2 * ndimage.distance_transform_edt(m)[skeletonize(m)] - 1 for _, m, _ in samples["synthetic-vessel"]]
    )
    assert (
        np.percentile(widths, 50) <= 2 and np.percentile(widths, 99) <= 5
    )  # measured: 1 and 4.7 (junctions)
    assert widths.min() >= 1


def test_lesion_is_one_blob_with_fuzzy_border(samples):
    for img, mask, _ in samples["synthetic-lesion"]:
        assert ndimage.label(mask)[1] <= 3  # one lesion; noise in the border may detach a crumb
        grey = img.astype(float).mean(axis=2)
        edge = mask ^ ndimage.binary_erosion(mask)
        outside_ring = ndimage.binary_dilation(mask, iterations=3) & ~mask
        # low contrast across the border: well under a third of the 0..255 range
        assert abs(grey[edge].mean() - grey[outside_ring].mean()) < 40


def _best_threshold_dice(images, masks) -> float:
    """Best dataset-level Dice of ``channel > t`` or ``channel < t`` over t, for R, G, B and grey."""
    x = np.stack(images).astype(np.int64)
    y = np.stack(masks)
    best = 0.0
    for chan in (x[..., 0], x[..., 1], x[..., 2], np.rint(x.mean(axis=-1)).astype(np.int64)):
        fg = np.bincount(chan[y], minlength=256)
        bg = np.bincount(chan[~y], minlength=256)
        for tp, fp in (
            (np.cumsum(fg[::-1])[::-1], np.cumsum(bg[::-1])[::-1]),
            (np.cumsum(fg), np.cumsum(bg)),
        ):
            best = max(best, float((2 * tp / (y.sum() + tp + fp)).max()))
    return best


def test_best_threshold_dice_helper_on_a_solvable_case():
    masks = [np.zeros((8, 8), bool) for _ in range(2)]
    masks[0][2:5, 2:5] = True
    images = [np.where(m[..., None], 200, 50).astype(np.uint8).repeat(3, axis=2) for m in masks]
    assert _best_threshold_dice(images, masks) == 1.0


@pytest.mark.parametrize("name", list(syn.GENERATORS))
def test_no_global_threshold_solves_it(samples, name):
    imgs = [s[0] for s in samples[name]]
    masks = [s[1] for s in samples[name]]
    assert _best_threshold_dice(imgs, masks) < 0.6  # measured: polyp ~0.48, vessel ~0.25, lesion ~0.42


def test_sample_is_deterministic_and_independent_of_n():
    a = syn.sample("synthetic-polyp", 5, seed=3)
    b = syn.sample("synthetic-polyp", 5, seed=3)
    c = syn.sample("synthetic-polyp", 5, seed=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_prepared_bytes_identical_for_same_seed(tmp_path):
    roots = [tmp_path / "a", tmp_path / "b"]
    dirs = [prepare_dataset("synthetic-vessel", root=r, n=6, size=(64, 64), seed=9) for r in roots]
    files = sorted(p.relative_to(dirs[0]) for p in dirs[0].rglob("*.png"))
    assert len(files) == 18  # 6 images + 6 masks + 6 fov
    for rel in files + [dirs[0] / "manifest.csv"]:
        assert (dirs[0] / rel).read_bytes() == (dirs[1] / rel).read_bytes()
    df = read_manifest(dirs[0])
    assert list(df["split"]) == ["train"] * 4 + ["val"] + ["test"]  # split_counts(6, 70/15/15) = 4/1/1


def test_prepare_synthetic_defaults_and_rerun(tmp_path):
    res = prepare("synthetic-polyp", root=tmp_path, n=20, size=(48, 64))
    assert res.counts == {"train": 14, "val": 3, "test": 3} and not res.up_to_date
    df = read_manifest(res.path)
    assert set(df["height"]) == {48} and set(df["width"]) == {64}
    assert res.path.name == "synthetic-polyp" and not (res.path / "fov").exists()
    assert prepare("synthetic-polyp", root=tmp_path, n=20, size=(48, 64)).up_to_date
    with pytest.raises(UserError, match="--force"):
        prepare("synthetic-polyp", root=tmp_path, n=30, size=(48, 64))
    assert prepare("synthetic-polyp", root=tmp_path, n=30, size=(48, 64), force=True).counts["train"] == 21


def test_bad_synthetic_options(tmp_path):
    with pytest.raises(UserError, match="out of range"):
        prepare("synthetic-lesion", root=tmp_path, size=(8, 8))
    with pytest.raises(UserError, match="too small"):
        prepare("synthetic-lesion", root=tmp_path, n=2)
    with pytest.raises(UserError, match="unknown parameter 'images'"):
        prepare("synthetic-lesion", root=tmp_path, images="x")
