"""Exact distance maps: both EDT backends against per-image scipy, ``distance_maps`` against the in-forward
computation (bit for bit), the precomputed extras path of every distance loss, and the public weight map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _loss_cases import EDGE_KINDS, blobs, edge_target, make_batch
from _loss_refs import bce_l, gauss_weight
from _loss_refs import sdf as ref_sdf
from scipy.ndimage import distance_transform_edt

import imbaseg.losses.distance as D
from imbaseg.errors import UserError
from imbaseg.losses import (
    DISTANCE_KEYS,
    EMPTY_DISTANCE,
    LOSSES,
    boundary_gaussian_weight_map,
    distance_maps,
    edt,
    get_loss,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def masks(seed=0, b=6, h=13, w=17):
    """Random blobs plus an empty, a full, a one-pixel and a border image."""
    m = blobs(np.random.default_rng(seed), b, h, w)[:, 0] > 0.5
    m[1] = False
    m[2] = True
    m[3] = False
    m[3, 0, w - 1] = True
    m[4, :, 0] = True
    return m


def per_image_scipy(m):
    return np.stack([distance_transform_edt(~x) if x.any() else np.full(x.shape, EMPTY_DISTANCE) for x in m])


@pytest.mark.parametrize("backend", ["scipy", "torch"])
@pytest.mark.parametrize("shape", [(6, 13, 17), (6, 1, 9), (6, 9, 1), (6, 30, 30)])
def test_edt_backends_equal_per_image_scipy_bit_for_bit(backend, shape):
    m = masks(1, *shape)
    got = edt(torch.from_numpy(m), backend=backend)
    assert got.dtype == torch.float32 and tuple(got.shape) == shape
    assert np.array_equal(got.numpy(), per_image_scipy(m).astype(np.float32))


def test_torch_edt_in_several_chunks(monkeypatch):
    monkeypatch.setattr(D, "_CHUNK_ELEMENTS", 3 * 17 * 17)  # three rows per chunk
    m = masks(2)
    got = edt(torch.from_numpy(m), backend="torch").numpy()
    assert np.array_equal(got, per_image_scipy(m).astype(np.float32))


@pytest.mark.parametrize("backend", ["scipy", "torch"])
@pytest.mark.parametrize("max_distance", [1.0, 4.5, 13.2])
def test_truncated_edt_is_exact_up_to_max_distance(backend, max_distance):
    """max_distance: exact below it, and some value above it elsewhere (never a wrong small distance)."""
    m = masks(5, 5, 40, 37)
    exact = per_image_scipy(m).astype(np.float32)
    got = edt(torch.from_numpy(m), backend=backend, max_distance=max_distance).numpy()
    near = exact <= max_distance
    assert near.any() and (~near).any()
    assert np.array_equal(got[near], exact[near])
    assert (got[~near] > max_distance).all()


def test_edt_all_empty_batch_and_4d_input():
    m = torch.zeros(3, 1, 5, 6, dtype=torch.bool)
    got = edt(m)
    assert got.shape == (3, 1, 5, 6) and bool((got == EMPTY_DISTANCE).all())
    assert bool((edt(m, backend="torch") == EMPTY_DISTANCE).all())
    with pytest.raises(ValueError, match="backend"):
        edt(m, backend="cupy")


@cuda
def test_torch_edt_on_cuda_equals_scipy():
    m = masks(3, 8, 97, 131)
    got = edt(torch.from_numpy(m).cuda()).cpu().numpy()
    assert np.array_equal(got, per_image_scipy(m).astype(np.float32))


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_distance_maps_equal_the_in_forward_maps(kind):
    y = edge_target(kind, 4, 11, 14, np.random.default_rng(0))
    yb = torch.from_numpy(y > 0.5)
    batch = D.target_maps(yb, DISTANCE_KEYS)
    for i in range(4):
        for mask in (y[i, 0] > 0.5, (y[i, 0] * 255).astype(np.uint8), y[i, 0]):
            maps = distance_maps(mask, DISTANCE_KEYS)
            for key in DISTANCE_KEYS:
                assert maps[key].dtype == np.float32 and maps[key].shape == (11, 14)
                assert np.array_equal(maps[key], batch[key][i, 0].numpy()), (kind, i, key)


def test_distance_map_conventions():
    y = edge_target("mixed", 4, 10, 10, np.random.default_rng(1))  # empty, full, one pixel, blob
    maps = [distance_maps(y[i, 0], DISTANCE_KEYS) for i in range(4)]
    assert (maps[0]["dist_fg"] == EMPTY_DISTANCE).all() and (maps[0]["dist_bg"] == 0).all()
    assert (maps[1]["dist_bg"] == EMPTY_DISTANCE).all() and (maps[1]["dist_fg"] == 0).all()
    assert (maps[0]["sdf"] == 0).all() and (maps[1]["sdf"] == 0).all()
    assert maps[2]["dist_fg"][3, 3] == 0 and maps[2]["dist_fg"][0, 0] == np.float32(np.sqrt(18))
    assert np.allclose(np.stack([m["sdf"] for m in maps])[:, None], ref_sdf(y), rtol=0, atol=1e-6)


def test_distance_maps_errors():
    with pytest.raises(UserError, match="Did you mean 'dist_fg'"):
        distance_maps(np.zeros((4, 4), bool), ["dist_gf"])
    with pytest.raises(ValueError, match=r"one \(H, W\) mask"):
        distance_maps(np.zeros((1, 4, 4), bool), ["dist_fg"])
    assert list(distance_maps(np.ones((3, 3)), "sdf")) == ["sdf"]


def _extras(y, keys):
    maps = [distance_maps(y[i, 0].numpy(), keys) for i in range(len(y))]
    return {k: torch.from_numpy(np.stack([m[k] for m in maps]))[:, None] for k in keys}


DISTANCE_LOSSES = [n for n, c in LOSSES.items() if c.distance_inputs]
DISTANCE_LOSSES.append("boundary+hausdorff-dt+0.5*boundary-dou")


@pytest.mark.parametrize("name", DISTANCE_LOSSES)
@pytest.mark.parametrize("kind", ["random", "mixed", "border"])
def test_precomputed_extras_give_the_same_loss_and_gradient(name, kind):
    """The distance maps handed in give bit-identical results. (The target terms that the losses ask the
    loader for, ``distance_inputs``, are checked to float32 rounding in test_losses_precomputed.py.)"""
    z, y = make_batch(kind, b=4, h=12, w=15, seed=4)
    loss = get_loss(name)
    z1, z2 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    inside = loss(z1, y)
    handed = loss(z2, y, **_extras(y, DISTANCE_KEYS))
    assert handed.item() == inside.item()
    inside.backward()
    handed.backward()
    assert torch.equal(z1.grad, z2.grad)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_boundary_gaussian_truncated_in_forward_maps_give_identical_weights(sigma):
    """40x44 images: the in-forward EDT is exact only up to 13.2 sigma; the weights are bit-identical."""
    z, y = make_batch("mixed", b=4, h=40, w=44, seed=9)
    y[3, 0, 30:, :] = 0  # far background in the blob image
    w_inside = boundary_gaussian_weight_map(y, sigma=sigma)
    w_handed = boundary_gaussian_weight_map(y, sigma=sigma, dist_fg=_extras(y, ["dist_fg"])["dist_fg"])
    assert torch.equal(w_inside, w_handed)
    loss = get_loss("boundary-dou", sigma=sigma)
    assert loss(z, y).item() == loss(z, y, **_extras(y, ["dist_fg"])).item()


def test_extras_of_the_wrong_shape_are_refused():
    z, y = make_batch("random", b=2, h=8, w=8)
    with pytest.raises(ValueError, match="extra input 'dist_fg' must be a tensor of shape"):
        get_loss("boundary-gaussian")(z, y, dist_fg=torch.zeros(2, 8, 8))


def test_weight_map_matches_the_reference_and_drives_the_loss():
    z, y = make_batch("mixed", b=4, h=12, w=12, seed=8)
    w = boundary_gaussian_weight_map(y, sigma=3.0)
    assert w.shape == y.shape and w.dtype == torch.float32
    ref = gauss_weight(y.double().numpy(), sigma=3.0)
    assert np.allclose(w.numpy(), ref, rtol=1e-6, atol=0)
    # the loss is the mean of this map times the BCE: one implementation for the loss and the figure
    expected = (w.double().numpy() * bce_l(z.double().numpy(), y.double().numpy())).mean()
    assert get_loss("boundary-gaussian", sigma=3.0)(z, y).item() == pytest.approx(expected, rel=1e-5)
    w2 = boundary_gaussian_weight_map(y, sigma=3.0, dist_fg=_extras(y, ["dist_fg"])["dist_fg"])
    assert torch.equal(w, w2)


def test_weight_map_of_one_mask():
    """(H, W) numpy or tensor -> (H, W): a batch of one, so P and N are the image's counts."""
    m = np.zeros((9, 9), np.uint8)
    m[3:6, 3:6] = 255
    w = boundary_gaussian_weight_map(m, sigma=2.0)
    assert w.shape == (9, 9) and w.dtype == torch.float32
    assert np.allclose(w.numpy(), gauss_weight((m > 0)[None, None].astype(np.float64))[0, 0], rtol=1e-6)
    assert torch.equal(boundary_gaussian_weight_map(torch.from_numpy(m > 0)), w)
    assert w[4, 4] == 1.0  # w+ = min(1, 72/9)
    assert w[0, 0] == pytest.approx(9 / 72 + np.exp(-18 / 8), rel=1e-6)  # corner: d^2 = 3^2 + 3^2
    with pytest.raises(ValueError, match=r"\(H, W\) or \(B, 1, H, W\)"):
        boundary_gaussian_weight_map(np.zeros((2, 3, 3)))
    with pytest.raises(UserError, match="sigma must be > 0"):
        boundary_gaussian_weight_map(m, sigma=0)


def test_weight_map_uses_batch_statistics():
    """Two images: the batch map differs from the single-image maps (P, N pooled), as the loss uses them."""
    y = torch.zeros(2, 1, 8, 8)
    y[0, 0, 2:6, 2:6] = 1
    y[1, 0, 0, 0] = 1
    batch = boundary_gaussian_weight_map(y)
    alone = boundary_gaussian_weight_map(y[:1])
    p, n = 17.0, 111.0  # pixel (0, 7) of image 0: nearest foreground (2, 5), d^2 = 2^2 + 2^2 = 8
    assert batch[0, 0, 0, 7].item() == pytest.approx(min(1, p / n + np.exp(-8 / 8)), rel=1e-6)
    assert alone[0, 0, 0, 7].item() == pytest.approx(min(1, 16 / 48 + np.exp(-8 / 8)), rel=1e-6)
    assert not torch.equal(batch[:1], alone)


def test_large_sigma_still_zeroes_g_for_images_without_foreground():
    """sigma = 1e4: exp(-EMPTY_DISTANCE^2/2s^2) is not 0, so g is masked explicitly (spec: g = 0)."""
    y = torch.zeros(2, 1, 4, 4)
    y[0, 0, 1, 1] = 1
    w = boundary_gaussian_weight_map(y, sigma=1e4)
    b = (1 + 1e-6) / (31 + 1e-6)
    assert torch.allclose(w[1], torch.full((1, 4, 4), b), rtol=1e-6)
