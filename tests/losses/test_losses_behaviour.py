"""The behaviour list of the spec, parametrized over the registry: a new loss is tested by being registered.

Finite values and gradients in every edge case, autocast, perfect < random and off-by-one, gradcheck,
input types, batch consistency, and (on CUDA only) no host synchronisation inside forward/backward.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _loss_cases import ALL_LOSSES, EDGE_KINDS, blobs, make_batch

from imbaseg.losses import LOSSES, get_loss

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_finite_value_and_gradient_in_every_edge_case(name):
    loss = get_loss(name)
    for kind in EDGE_KINDS:
        for logits in ("random", "pm50", "perfect50"):
            for b in (1, 4):
                z, y = make_batch(kind, b=b, h=9, w=10, seed=b, logits=logits)
                z.requires_grad_(True)
                value = loss(z, y)
                value.backward()
                where = (kind, logits, b)
                assert value.dtype == torch.float32 and value.shape == (), where
                assert torch.isfinite(value), where
                assert torch.isfinite(z.grad).all(), where


def _target(b=2, h=24, w=24, seed=0):
    return torch.tensor(blobs(np.random.default_rng(seed), b, h, w, frac=0.12))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_perfect_prediction_beats_random_and_off_by_one(name):
    y = _target()
    perfect = torch.where(y > 0.5, 20.0, -20.0)
    shifted = torch.where(torch.roll(y, 1, dims=3) > 0.5, 20.0, -20.0)
    random = torch.randn(y.shape, generator=torch.Generator().manual_seed(0)) * 2
    loss = get_loss(name)
    best = loss(perfect, y).item()
    assert best < loss(random, y).item()
    assert best < loss(shifted, y).item()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bf16_autocast_at_512_agrees_with_fp32(name):
    """Logits from a conv under CPU bf16 autocast: the loss is float32, equals the fp32 loss of the same
    (bf16-rounded) logits, and is within bf16 rounding of the loss of the fp32 conv."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 512, 512, generator=gen)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    torch.nn.init.constant_(conv.weight, 0.4)
    y = _target(1, 512, 512, seed=2)
    loss = get_loss(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(x)
        amp = loss(logits, y)
    assert logits.dtype == torch.bfloat16 and amp.dtype == torch.float32
    amp.backward()
    assert torch.isfinite(amp) and all(torch.isfinite(p.grad).all() for p in conv.parameters())
    same = loss(logits.detach().float(), y)
    assert amp.item() == pytest.approx(same.item(), rel=1e-5, abs=1e-7)
    full = loss(conv(x).detach(), y)
    assert amp.item() == pytest.approx(full.item(), rel=3e-2, abs=1e-4)


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_cuda_autocast_at_512_agrees_with_fp32(name, dtype):
    x = torch.randn(2, 1, 512, 512, device="cuda")
    conv = torch.nn.Conv2d(1, 1, 3, padding=1).cuda()
    y = _target(2, 512, 512, seed=2).cuda()
    loss = get_loss(name)
    with torch.autocast("cuda", dtype=dtype):
        logits = conv(x)
        amp = loss(logits, y)
    assert logits.dtype == dtype and amp.dtype == torch.float32
    amp.backward()
    assert torch.isfinite(amp) and all(torch.isfinite(p.grad).all() for p in conv.parameters())
    assert amp.item() == pytest.approx(loss(logits.detach().float(), y).item(), rel=1e-5, abs=1e-7)
    assert amp.item() == pytest.approx(loss(conv(x).detach(), y).item(), rel=3e-2, abs=1e-4)


@cuda
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_cuda_matches_cpu_and_never_syncs_with_the_host(name):
    z, y = make_batch("mixed", b=4, h=40, w=33, seed=2)
    cpu = get_loss(name)(z, y)
    zc = z.cuda().requires_grad_(True)
    yc = y.cuda()
    loss = get_loss(name)
    loss(zc, yc)  # warm-up: lazy CUDA init may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        value = loss(zc, yc)
        value.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert value.item() == pytest.approx(cpu.item(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", [n for n, c in LOSSES.items() if c.differentiable])
def test_gradcheck_float64(name):
    gen = torch.Generator().manual_seed(3)
    y = torch.tensor(blobs(np.random.default_rng(4), 2, 6, 7, frac=0.3), dtype=torch.float64)
    z = (torch.randn(y.shape, generator=gen, dtype=torch.float64) * 1.5).requires_grad_(True)
    loss = get_loss(name)
    out = loss(z, y)
    assert out.dtype == torch.float64
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_target_dtypes_and_unknown_extras(name):
    z, y = make_batch("random", b=2, h=11, w=9, seed=6)
    loss = get_loss(name)
    ref = loss(z, y)
    assert loss(z, y.bool()).item() == ref.item()
    assert loss(z, y.to(torch.uint8)).item() == ref.item()
    assert loss(z, y.long(), unknown_extra=torch.zeros(3), other=None).item() == ref.item()
    assert loss(z.half(), y).dtype == torch.float32


@pytest.mark.parametrize("name", ["dynamit-image", "lovasz", "dice(batch=false)", "iou(batch=false)",
                                  "focal-tversky(batch=false)", "unified-focal(batch=false)"])
def test_per_image_losses_are_the_mean_over_images(name):
    """Vectorised over the batch: equals the mean of the single-image values."""
    z, y = make_batch("mixed", b=4, h=10, w=10, seed=7)
    loss = get_loss(name)
    singles = torch.stack([loss(z[i:i + 1], y[i:i + 1]) for i in range(4)])
    assert loss(z, y).item() == pytest.approx(singles.mean().item(), rel=1e-5)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bad_shapes_raise(name):
    loss = get_loss(name)
    with pytest.raises(ValueError, match="shape"):
        loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="float"):
        loss(torch.zeros(2, 1, 4, 4, dtype=torch.long), torch.zeros(2, 1, 4, 4))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_distance_inputs_are_known_keys(name):
    from imbaseg.losses import DISTANCE_KEYS, distance_maps

    assert set(LOSSES[name].distance_inputs) <= set(DISTANCE_KEYS)  # on the class: the maps it accepts
    loss = get_loss(name)
    assert isinstance(loss.last_terms, dict)
    made = distance_maps(np.zeros((4, 4), bool), loss.distance_inputs)  # what it asks the loader for
    assert list(made) == list(loss.distance_inputs)
