"""The boundary losses' precomputed target terms (``gauss(sigma=S)``, ``boundary_counts``) and the chunked
pixel sums: the loader's inputs equal independent recomputations, the step with them equals the step
without them to float32 rounding (random batches, empty and full masks, sync_stats), and the CPU's
chunked sums equal the whole-tensor path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _loss_cases import make_batch
from scipy.ndimage import distance_transform_edt

import imbaseg.losses._functional as Fn
from imbaseg.errors import UserError
from imbaseg.losses import COUNTS_KEY, boundary_gaussian_weight_map, distance_maps, gauss_key, get_loss
from imbaseg.losses.region import boundary_counts

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PRECOMPUTED_LOSSES = ["boundary-gaussian", "boundary-dou", "dou", "boundary-gaussian(sigma=4)+0.5*dou",
                      "boundary-dou(sigma=3, lambda_dou=0.5)", "boundary+boundary-dou"]
KINDS = ["random", "mixed", "empty", "full", "border", "pixel", "line"]


def loader_inputs(y: torch.Tensor, keys) -> dict[str, torch.Tensor]:
    """What the data loader hands the loss: ``distance_maps`` per image, stacked as a collated batch."""
    maps = [distance_maps(y[i, 0].numpy(), keys) for i in range(len(y))]
    return {k: torch.from_numpy(np.stack([m[k] for m in maps]))[:, None] for k in keys}


def cross_counts(m: np.ndarray) -> np.ndarray:
    """[P, C_fg, C_bg] of one bool mask by the definition: a pixel of a class with a 4-neighbour (or the
    image border) outside its class."""
    out = []
    for cls in (m, ~m):
        p = np.pad(cls, 1, constant_values=False)
        inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        out.append(int(cls.sum() - inner.sum()))
    return np.array([m.sum(), *out], dtype=np.int64)


# ------------------------------------------------------------------ the loader's inputs


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0])
def test_gauss_map_is_the_formula_of_the_exact_distance(kind, sigma):
    y = make_batch(kind, b=4, h=13, w=17, seed=3)[1].numpy()
    for i in range(4):
        m = y[i, 0] > 0.5
        g = distance_maps(m, [gauss_key(sigma)])[gauss_key(sigma)]
        assert g.dtype == np.float32 and g.shape == m.shape
        if not m.any():  # the spec's g = 0: the floor exp(-87) < 2e-38 cannot change a weight b + g
            assert (g == np.float32(np.exp(-87.0))).all()
            continue
        exponent = np.minimum(distance_transform_edt(~m) ** 2 / (2 * sigma**2), 87.0)  # float64
        assert (g[m] == 1).all()
        # float32 d and d^2 carry ~1e-7 relative error into the exponent, i.e. ~1e-7 * exponent into g
        bound = 4e-7 * (1.0 + exponent) * np.exp(-exponent)
        assert (np.abs(g - np.exp(-exponent)) <= bound).all()


def test_gauss_map_of_a_huge_sigma_is_still_zero_without_foreground():
    """sigma = 1e4: EMPTY_DISTANCE alone would leave exp(-1e8/2e8) = 0.61, so g is zeroed outright."""
    empty = np.zeros((5, 6), bool)
    assert (distance_maps(empty, [gauss_key(1e4)])[gauss_key(1e4)] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_boundary_counts_per_image_are_the_definition_and_add_up_to_the_batch(kind):
    y = make_batch(kind, b=4, h=9, w=11, seed=5)[1]
    per_image = [distance_maps(y[i, 0].numpy(), [COUNTS_KEY])[COUNTS_KEY] for i in range(4)]
    for i, c in enumerate(per_image):
        assert c.dtype == np.int64 and c.shape == (3,)
        assert np.array_equal(c, cross_counts(y[i, 0].numpy() > 0.5))
    assert np.array_equal(np.sum(per_image, axis=0), boundary_counts(y.bool()).numpy())


def test_counts_of_tiny_images():
    """Under 3 pixels high or wide every pixel touches the border, so each class's count is its size."""
    m = np.array([[1, 0, 1, 1]], bool)
    assert distance_maps(m, [COUNTS_KEY])[COUNTS_KEY].tolist() == [3, 3, 1]


def test_instances_ask_for_the_terms_of_their_own_parameters():
    assert get_loss("boundary-gaussian").distance_inputs == ("gauss(sigma=2.0)",)
    assert get_loss("boundary-gaussian", sigma=4).distance_inputs == ("gauss(sigma=4.0)",)
    assert get_loss("boundary-dou(sigma=0.5)").distance_inputs == ("gauss(sigma=0.5)", "boundary_counts")
    assert get_loss("dou").distance_inputs == ("boundary_counts",)
    assert gauss_key(1 / 3) == f"gauss(sigma={1 / 3!r})"  # the float round-trips through the key


def test_bad_precomputed_keys_are_user_errors():
    m = np.zeros((4, 4), bool)
    for key in ("gauss(sigma=0)", "gauss(sigma=-1)", "gauss(sigma=abc)", "gauss(sigma=inf)", "gauss()"):
        with pytest.raises(UserError, match=r"gauss\(sigma=S\) with a number S > 0"):
            distance_maps(m, [key])
    with pytest.raises(UserError, match="Did you mean 'boundary_counts'"):
        distance_maps(m, ["boundary_count"])


def test_malformed_counts_are_refused():
    z, y = make_batch("random", b=2, h=8, w=8)
    dou = get_loss("dou")
    with pytest.raises(ValueError, match="integer tensor of shape"):
        dou(z, y, boundary_counts=torch.zeros(2, 1, 3))  # float
    with pytest.raises(ValueError, match="integer tensor of shape"):
        dou(z, y, boundary_counts=torch.zeros(3, 1, 3, dtype=torch.long))  # wrong batch
    with pytest.raises(ValueError, match="must be a tensor of shape"):
        get_loss("boundary-gaussian")(z, y, **{gauss_key(2.0): torch.zeros(2, 8, 8)})


# ------------------------------------------------------------------ the step with them, and without


def _loss_and_grad(loss, z, y, extras):
    z = z.clone().requires_grad_(True)
    value = loss(z, y, **extras)
    value.backward()
    return value.detach(), z.grad


@pytest.mark.parametrize("name", PRECOMPUTED_LOSSES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync_stats", [False, True])
def test_precomputed_inputs_give_the_in_forward_loss_and_gradient(name, kind, sync_stats):
    """Random batches, empty/full masks; sync_stats=True runs its code path (no process group here: the
    2-process test is in test_losses_distributed.py). The counts are exact; the Gaussian is the same
    formula on the same distances, so at most float32 rounding apart."""
    loss = get_loss(name) if not sync_stats or "+" in name else get_loss(name, sync_stats=True)
    for seed in range(2):
        z, y = make_batch(kind, b=4, h=14, w=17, seed=seed)
        inside, g_inside = _loss_and_grad(loss, z, y, {})
        handed, g_handed = _loss_and_grad(loss, z, y, loader_inputs(y, loss.distance_inputs))
        assert torch.isfinite(handed)
        assert handed.item() == pytest.approx(inside.item(), rel=2e-6, abs=1e-9), (name, kind, seed)
        torch.testing.assert_close(g_handed, g_inside, rtol=2e-5, atol=1e-10)


@pytest.mark.parametrize("kind", ["random", "full"])
def test_the_weight_map_of_precomputed_terms_equals_the_public_map(kind):
    """Foreground-majority batches (full) take the lerp branch (P > N), the others the clamp alone."""
    from imbaseg.losses.balanced import gaussian_weight_terms

    _, y = make_batch(kind, b=3, h=10, w=12, seed=1)
    if kind == "full":
        y[0, 0, :2] = 0  # some background, P > N
    g = loader_inputs(y, [gauss_key(2.0)])[gauss_key(2.0)]
    terms = gaussian_weight_terms(y, None, None, 2.0, gauss=g)
    assert terms.fix_fg == (kind == "full")
    torch.testing.assert_close(terms.full(y), boundary_gaussian_weight_map(y, sigma=2.0), rtol=2e-6, atol=0)


def test_clamp_alone_equals_clamp_then_lerp_when_foreground_is_the_minority():
    """P <= N: min(1, b + g) is already w+ = 1 on foreground (g = 1 there), bit for bit."""
    _, y = make_batch("random", b=3, h=16, w=16, seed=2)
    assert y.mean() < 0.5
    g = loader_inputs(y, [gauss_key(2.0)])[gauss_key(2.0)]
    base, w_pos = torch.tensor(0.1), torch.tensor(1.0)
    clamp = Fn.ClampedWeight(g, base, w_pos, fix_fg=False).full(y)
    lerp = Fn.ClampedWeight(g, base, w_pos, fix_fg=True).full(y)
    assert torch.equal(clamp, lerp)


# ------------------------------------------------------------------ chunks (CPU) against the whole tensor


SUMS_LOSSES = ["bce", "dynamit-batch", "dynamit-image", "boundary-gaussian", "dou", "boundary-dou",
               "boundary-dou(sigma=3)+0.5*dou"]


@pytest.mark.parametrize("name", SUMS_LOSSES)
@pytest.mark.parametrize("kind", ["random", "mixed", "full"])
@pytest.mark.parametrize("precomputed", [False, True])
def test_chunked_sums_equal_the_whole_tensor_path(monkeypatch, name, kind, precomputed):
    """A chunk of 37 pixels splits a 4x14x17 batch into 26 chunks, the last one short."""
    z, y = make_batch(kind, b=4, h=14, w=17, seed=7)
    loss = get_loss(name)
    extras = loader_inputs(y, getattr(loss, "distance_inputs", ())) if precomputed else {}
    whole, g_whole = _loss_and_grad(loss, z, y, extras)
    monkeypatch.setattr(Fn, "_CHUNK", 37)
    chunked, g_chunked = _loss_and_grad(loss, z, y, extras)
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-6)
    torch.testing.assert_close(g_chunked, g_whole, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("bce, error, weight", [(True, True, "none"), (True, True, "tensor"),
                                                (True, True, "clamped"), (True, True, "clamped-lerp"),
                                                (True, False, "tensor"), (True, False, "none"),
                                                (False, True, "none")])
def test_chunked_pixel_sums_pass_gradcheck(monkeypatch, bce, error, weight):
    monkeypatch.setattr(Fn, "_CHUNK", 23)
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(2, 1, 7, 9, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = (torch.rand(2, 1, 7, 9, generator=g) < 0.3).double()
    raw = torch.rand(2, 1, 7, 9, generator=g, dtype=torch.float64)
    w = {"none": None, "tensor": raw,
         "clamped": Fn.ClampedWeight(raw, torch.tensor(0.3, dtype=torch.float64),
                                     torch.tensor(1.0, dtype=torch.float64), False),
         "clamped-lerp": Fn.ClampedWeight(raw, torch.tensor(0.3, dtype=torch.float64),
                                          torch.tensor(0.7, dtype=torch.float64), True)}[weight]
    coeffs = torch.tensor([1.0, -0.5, 2.0, 0.25][: int(bce) + 3 * int(error)], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: Fn.pixel_sums(t, y, w, bce=bce, error=error) @ coeffs, (z,))


def test_chunked_sums_are_closer_to_float64_than_one_float32_pass(monkeypatch):
    """Chunk sums accumulate in float64: at 8x1x256x256 they stay at float32 rounding of the exact sum."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 1, 256, 256, generator=g) * 2
    y = (torch.rand(8, 1, 256, 256, generator=g) < 0.1).float()
    got = Fn.pixel_sums(z, y, bce=True, error=True)
    ref = Fn.pixel_sums(z.double(), y.double(), bce=True, error=True)
    assert Fn._CHUNK < z.numel()
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=0)


def test_reference_bce_of_the_chunked_path():
    """An independent check at a size that takes several chunks: F.binary_cross_entropy_with_logits."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(3, 1, 300, 300, generator=g) * 3
    y = (torch.rand(3, 1, 300, 300, generator=g) < 0.2).float()
    assert z.numel() > 2 * Fn._CHUNK
    ref = F.binary_cross_entropy_with_logits(z.double(), y.double())
    assert get_loss("bce")(z, y).item() == pytest.approx(ref.item(), rel=1e-6)


# ------------------------------------------------------------------ through the real loader


@pytest.mark.parametrize("name, workers", [("boundary-dou", 1), ("boundary-gaussian(sigma=4)+0.5*dou", 0)])
def test_the_loader_hands_the_losses_their_precomputed_inputs(tiny_root, name, workers):
    """The loader (a real worker process for one of them) computes the terms of the augmented masks; the
    loss with them equals the loss computing them itself."""
    from imbaseg.data.dataset import SegDataset
    from imbaseg.data.loader import build_loader

    loss = get_loss(name)
    ds = SegDataset(tiny_root / "data" / "prepared" / "synthetic-polyp", "train",
                    augment={"hflip_p": 0.5, "vflip_p": 0.5, "shift_scale_rotate_p": 0.5},
                    distance_keys=loss.distance_inputs)
    batch = next(iter(build_loader(ds, 4, shuffle=True, num_workers=workers, seed=0, drop_last=True)))
    for key in loss.distance_inputs:
        counts = key == COUNTS_KEY
        assert batch[key].dtype == (torch.int64 if counts else torch.float32)
        assert tuple(batch[key].shape) == ((4, 1, 3) if counts else (4, 1, 32, 32))
    y = batch["mask"]
    z = torch.randn(y.shape, generator=torch.Generator().manual_seed(0)) * 3
    extras = {k: batch[k] for k in loss.distance_inputs}
    handed, g_handed = _loss_and_grad(loss, z, y, extras)
    inside, g_inside = _loss_and_grad(loss, z, y, {})
    assert handed.item() == pytest.approx(inside.item(), rel=2e-6)
    torch.testing.assert_close(g_handed, g_inside, rtol=2e-5, atol=1e-10)


def test_a_bad_key_fails_when_the_dataset_is_made(tiny_root):
    from imbaseg.data.dataset import SegDataset

    with pytest.raises(UserError, match=r"gauss\(sigma=S\)"):
        SegDataset(tiny_root / "data" / "prepared" / "synthetic-polyp", "train",
                   distance_keys=("gauss(sigma=0)",))


# ------------------------------------------------------------------ CUDA (run by make gpu-check)


@cuda
@pytest.mark.parametrize("name", PRECOMPUTED_LOSSES)
@pytest.mark.parametrize("kind", ["random", "mixed", "full"])
def test_precomputed_on_cuda_equals_in_forward_on_cuda_and_cpu(name, kind):
    """On a GPU: the torch EDT in forward, the whole-tensor sums, the lerp branch always taken; the step
    with the precomputed inputs never waits for the host."""
    z, y = make_batch(kind, b=4, h=40, w=44, seed=11)
    loss = get_loss(name)
    extras = {k: v.cuda() for k, v in loader_inputs(y, loss.distance_inputs).items()}
    cpu, g_cpu = _loss_and_grad(loss, z, y, {})
    inside, g_inside = _loss_and_grad(loss, z.cuda(), y.cuda(), {})
    _loss_and_grad(loss, z.cuda(), y.cuda(), extras)  # warm-up: lazy CUDA init may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        handed, g_handed = _loss_and_grad(loss, z.cuda(), y.cuda(), extras)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for value, grad in ((inside, g_inside), (handed, g_handed)):
        assert value.item() == pytest.approx(cpu.item(), rel=1e-5)
        torch.testing.assert_close(grad.cpu(), g_cpu, rtol=1e-4, atol=1e-9)


def test_softplus_from_the_sigmoid_is_within_two_ulp():
    """The fused sums take softplus(s) from e = sigmoid(s) with one log1p; against float64 softplus over
    the whole float32 range of logits that matter (|s| <= 88), zero and the signs included."""
    s = torch.cat([torch.linspace(-88, 88, 200_001), torch.tensor([0.0, -1e-7, 1e-7, -1e-30, 1e-30])])
    got = Fn.softplus_of_signed(s.clone(), torch.sigmoid(s)).double()
    ref = F.softplus(s.double())
    ulp = torch.finfo(torch.float32).eps * ref.abs() + 2.0**-149  # below 1.2e-38 the spacing is fixed
    assert ((got - ref).abs() <= 2 * ulp).all()
    assert Fn.softplus_of_signed(torch.tensor([float("nan")]), torch.tensor([float("nan")])).isnan().all()


# ------------------------------------------------------------------ the GPU path, run on the CPU


@pytest.mark.parametrize("name", SUMS_LOSSES)
@pytest.mark.parametrize("kind", ["random", "mixed", "full"])
def test_the_gpu_path_on_the_cpu_equals_the_host_path(monkeypatch, name, kind):
    """``on_host`` False takes the GPU's code (whole-tensor ops, F.softplus, the foreground always
    overwritten with w+, 0-d tensor factors in backward) here; it must give the host path's numbers."""
    z, y = make_batch(kind, b=4, h=14, w=17, seed=12)
    loss = get_loss(name)
    for extras in ({}, loader_inputs(y, getattr(loss, "distance_inputs", ()))):
        monkeypatch.setattr(Fn, "_CHUNK", 37)  # several chunks on the host path
        host, g_host = _loss_and_grad(loss, z, y, extras)
        with monkeypatch.context() as m:
            m.setattr(Fn, "on_host", lambda t: False)
            gpu, g_gpu = _loss_and_grad(loss, z, y, extras)
        assert gpu.item() == pytest.approx(host.item(), rel=1e-6)
        torch.testing.assert_close(g_gpu, g_host, rtol=1e-5, atol=1e-10)


def test_the_gpu_path_traces_into_one_graph(monkeypatch):
    """No host reads on the GPU path: dynamo captures boundary-dou with its precomputed inputs whole, so
    torch.compile can fuse its ~80 small ops (bench_losses --compile times that on CUDA)."""
    import torch._dynamo as dynamo

    monkeypatch.setattr(Fn, "on_host", lambda t: False)
    z, y = make_batch("random", b=2, h=16, w=16, seed=1)
    loss = get_loss("boundary-dou")
    extras = loader_inputs(y, loss.distance_inputs)
    try:
        explained = dynamo.explain(lambda z, y, ex: loss(z, y, **ex))(z.requires_grad_(True), y, extras)
    finally:
        dynamo.reset()
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
