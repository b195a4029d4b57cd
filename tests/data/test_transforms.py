"""Joint augmentation: defaults, config errors, exact flips, binary and aligned masks, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from imbaseg.data.transforms import (
    AugmentConfig,
    augment_config,
    build_augment,
    gaussian_kernel1d,
    separable_blur,
)
from imbaseg.errors import UserError

OFF = {"vflip_p": 0.0, "hflip_p": 0.0, "shift_scale_rotate_p": 0.0, "elastic_p": 0.0,
       "brightness_contrast_p": 0.0}
GEOMETRY = {**OFF, "vflip_p": 1.0, "hflip_p": 1.0, "shift_scale_rotate_p": 1.0, "elastic_p": 1.0}
EVERYTHING = {**GEOMETRY, "brightness_contrast_p": 1.0}


def _only(**on):
    return build_augment({**OFF, **on})


def _sample(h=48, w=64, seed=0):
    """Random image in [0, 1], an ellipse mask and a different (disk) fov, uint8 (1, H, W)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, h, w, generator=g)
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - h * 0.4) ** 2 / (h * 0.2) ** 2 + (xx - w * 0.6) ** 2 / (w * 0.25) ** 2) <= 1
    fov = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (0.45 * h) ** 2
    as_t = lambda a: torch.from_numpy(a.astype(np.uint8))[None]  # noqa: E731
    return image, as_t(mask), as_t(fov)


def test_defaults_are_the_study_settings():
    cfg = AugmentConfig()
    # table: every augmentation p=0.15 (the study); magnitudes = albumentations ShiftScaleRotate defaults
    expected = {"enabled": True, "vflip_p": 0.15, "hflip_p": 0.15, "shift_scale_rotate_p": 0.15,
                "elastic_p": 0.15, "brightness_contrast_p": 0.15, "shift_limit": 0.0625, "scale_limit": 0.1,
                "rotate_limit": 15.0, "brightness_limit": 0.2, "contrast_limit": 0.2,
                "elastic_alpha": 50.0, "elastic_sigma": 5.0}
    for key, value in expected.items():
        assert getattr(cfg, key) == value, key
    assert augment_config(None) == cfg
    assert augment_config({"hflip_p": 1}).hflip_p == 1.0
    assert augment_config(AugmentConfig(rotate_limit=30)).rotate_limit == 30


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"hflp_p": 0.5}, ["hflp_p", "Did you mean 'hflip_p'"]),
        ({"rotation": 10}, ["rotation", "rotate_limit"]),
        ({"vflip_p": 1.5}, ["vflip_p", "[0, 1]"]),
        ({"shift_limit": -0.1}, ["shift_limit", ">= 0"]),
        ({"scale_limit": 1.0}, ["scale_limit", "< 1"]),
        ({"elastic_alpha": "big"}, ["elastic_alpha", "number"]),
        ({"enabled": "yes"}, ["enabled", "true or false"]),
    ],
)
def test_bad_config_raises_user_error(bad, words):
    with pytest.raises(UserError) as err:
        build_augment(bad)
    for word in words:
        assert word in str(err.value)


def test_bad_config_type():
    with pytest.raises(UserError, match="mapping"):
        build_augment(["hflip"])


@pytest.mark.parametrize("key, dims", [("hflip_p", [-1]), ("vflip_p", [-2])])
def test_flips_are_exact(key, dims):
    image, mask, fov = _sample()
    out = _only(**{key: 1.0})(image, mask, fov, seed=0)
    for got, ref in zip(out, (image, mask, fov), strict=True):
        assert torch.equal(got, ref.flip(dims))
    both = _only(hflip_p=1.0, vflip_p=1.0)(image, mask, fov, seed=0)
    assert torch.equal(both[0], image.flip([-1, -2])) and torch.equal(both[1], mask.flip([-1, -2]))


def test_disabled_is_identity():
    image, mask, fov = _sample()
    aug = build_augment({**EVERYTHING, "enabled": False})
    out = aug(image, mask, fov, seed=1)
    assert out[0] is image and out[1] is mask and out[2] is fov


@pytest.mark.parametrize("seed", range(8))
def test_masks_stay_binary_and_shapes_dtypes_kept(seed):
    image, mask, fov = _sample(seed=seed)
    out_image, out_mask, out_fov = build_augment(EVERYTHING)(image, mask, fov, seed=seed)
    assert out_image.shape == image.shape and out_image.dtype == torch.float32
    for got in (out_mask, out_fov):
        assert got.shape == mask.shape and got.dtype == torch.uint8
        assert set(got.unique().tolist()) <= {0, 1}
    assert 0.0 <= out_image.min() and out_image.max() <= 1.0  # brightness/contrast clamps like uint8 did
    # without fov
    _, m2, f2 = build_augment(EVERYTHING)(image, mask, None, seed=seed)
    assert f2 is None and torch.equal(m2, out_mask)


@pytest.mark.parametrize("seed", range(6))
def test_mask_stays_aligned_with_painted_region(seed):
    """Paint the mask region in a constant colour; after p=1 geometry the mask still covers exactly
    the painted pixels, except for bilinear/nearest disagreement in a 1-px band at the edges."""
    _, mask, fov = _sample(seed=seed)
    image = torch.full((3, 48, 64), 0.2)
    image[:, mask[0] > 0] = 0.9
    out_image, out_mask, _ = build_augment(GEOMETRY)(image, mask, fov, seed=seed)
    painted = out_image[0].numpy() > 0.55  # midway between 0.2 and 0.9 (padding is 0)
    m = out_mask[0].numpy() > 0
    assert m.sum() > 100  # the ellipse (~ pi*9.6*16 = 480 px) did not leave the frame
    disagree = painted ^ m
    band = ndimage.binary_dilation(m) & ~ndimage.binary_erosion(m)  # 1 px either side of the edge
    assert not (disagree & ~band).any()
    assert disagree.sum() < 0.35 * band.sum()


def test_fov_gets_the_same_geometry_as_the_mask():
    """Swapping mask and fov swaps the outputs exactly: both receive the same warp, with nearest."""
    image, mask, fov = _sample()
    aug = build_augment(GEOMETRY)
    for seed in range(4):
        _, m1, f1 = aug(image, mask, fov, seed=seed)
        _, m2, f2 = aug(image, fov, mask, seed=seed)
        assert torch.equal(m1, f2) and torch.equal(f1, m2)
        assert not torch.equal(f1, fov)


def test_brightness_contrast_touches_the_image_only():
    image, mask, fov = _sample()
    out_image, out_mask, out_fov = _only(brightness_contrast_p=1.0)(image, mask, fov, seed=3)
    assert torch.equal(out_mask, mask) and torch.equal(out_fov, fov)
    assert not torch.allclose(out_image, image)
    assert 0.0 <= out_image.min() and out_image.max() <= 1.0


def test_same_seed_same_result_and_global_rng_untouched():
    image, mask, fov = _sample()
    aug = build_augment(EVERYTHING)
    state = torch.get_rng_state()
    a = aug(image, mask, fov, seed=11)
    b = aug(image, mask, fov, seed=11)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = aug(image, mask, fov, seed=12)
    assert not torch.equal(a[0], c[0])


def test_probability_is_respected():
    """vflip_p=0.15 over 400 seeds: 60 expected flips, binomial sd = sqrt(400*0.15*0.85) = 7.1."""
    image, mask, fov = _sample(h=8, w=8)
    aug = _only(vflip_p=0.15)
    flips = sum(torch.equal(aug(image, mask, None, seed=s)[0], image.flip(-2)) for s in range(400))
    assert 60 - 4 * 7.1 < flips < 60 + 4 * 7.1


@pytest.mark.parametrize("sigma", [1.0, 2.5, 5.0])
def test_separable_blur_matches_torchvision(sigma):
    from torchvision.transforms.v2 import functional as F

    field = torch.rand(1, 1, 40, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1
    k = int(8 * sigma + 1)
    k += 1 - k % 2
    ref = F.gaussian_blur(field, [k, k], [sigma, sigma])
    assert torch.allclose(separable_blur(field, sigma), ref, atol=1e-6)
    # the 1-D kernel is a normalised Gaussian of std sigma pixels: w(1)/w(0) = exp(-1 / (2 sigma^2))
    w = gaussian_kernel1d(k, sigma)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (w[k // 2 + 1] / w[k // 2]).item() == pytest.approx(np.exp(-1 / (2 * sigma**2)), rel=1e-5)


def test_elastic_field_matches_torchvision_elastic():
    from torchvision.transforms import v2

    from imbaseg.data.transforms import _separable_elastic

    image = torch.rand(3, 48, 64)
    ours = _separable_elastic()(alpha=50.0, sigma=5.0)
    ref = v2.ElasticTransform(alpha=50.0, sigma=5.0)
    torch.manual_seed(5)
    d_ours = ours.make_params([image])["displacement"]
    torch.manual_seed(5)
    d_ref = ref.make_params([image])["displacement"]
    assert d_ours.shape == (1, 48, 64, 2)
    assert torch.allclose(d_ours, d_ref, atol=1e-6)
