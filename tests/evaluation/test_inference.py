"""Inference: window placement, Gaussian blending, whole-image path, resizing, flip TTA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from imbaseg.config import from_dict
from imbaseg.evaluation.inference import (
    MIN_WEIGHT,
    InferencePlan,
    Predictor,
    gaussian_weights,
    plan_for,
    prob_fn,
    run_plan,
    sliding_window,
    window_starts,
)


def pointwise_model(seed: int = 0) -> nn.Module:
    """A 1x1 conv: translation-equivariant with no border effects, so windows must equal the whole image."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, 1, 1).eval()


def symmetric_model() -> nn.Module:
    """3x3 conv with kernel outer([1,2,1],[1,2,1])/16 on channel sum: commutes with both flips."""
    m = nn.Conv2d(3, 1, 3, padding=1, bias=True)
    k = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])) / 16
    with torch.no_grad():
        m.weight.copy_(k.expand(1, 3, 3, 3))
        m.bias.fill_(0.1)
    return m.eval()


def gradient_model() -> nn.Module:
    """3x3 horizontal-gradient conv: NOT flip-equivariant, so TTA changes its output."""
    m = nn.Conv2d(3, 1, 3, padding=1, bias=False)
    k = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.5, 2.0], [0.0, 0.0, 0.0]])
    with torch.no_grad():
        m.weight.copy_(k.expand(1, 3, 3, 3))
    return m.eval()


@pytest.mark.parametrize(
    "size, window, overlap, expected",
    [
        (10, 4, 0.5, [0, 2, 4, 6]),  # stride 2: range(0, 6, 2) + the flush end 6
        (10, 4, 0.25, [0, 3, 6]),  # stride int(4*0.75)=3: 0, 3 + end 6
        (8, 4, 0.0, [0, 4]),  # stride 4: range(0, 4, 4)=[0] + end 4
        (4, 4, 0.5, [0]),  # fits
        (3, 4, 0.5, [0]),  # shorter than the window
        (5, 2, 0.9, [0, 1, 2, 3]),  # stride max(1, int(0.2))=1
    ],
)
def test_window_starts(size, window, overlap, expected):
    starts = window_starts(size, window, overlap)
    assert starts == expected
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all()


def test_gaussian_weights_shape_and_values():
    g = gaussian_weights((9, 16)).numpy()
    assert g.shape == (9, 16)
    assert g.max() == pytest.approx(1.0, abs=1e-6)
    assert g.min() >= MIN_WEIGHT - 1e-9
    np.testing.assert_allclose(g, g[::-1, ::-1], atol=1e-7)  # centred
    # separable Gaussian, sigma = 0.125 * side: value at row 0, centre columns (7.5 +- 0.5):
    # exp(-0.5 * (4 / 1.125)^2) * exp(-0.5 * (0.5 / 2)^2)
    ref = np.exp(-0.5 * (4 / 1.125) ** 2) * np.exp(-0.5 * (0.5 / 2.0) ** 2)
    ref_max = np.exp(-0.5 * (0.5 / 2.0) ** 2)  # the max sits at the centre row, next to the even centre
    assert g[0, 7] == pytest.approx(max(ref / ref_max, MIN_WEIGHT), rel=1e-5)


@pytest.mark.parametrize(
    "window, overlap, batch", [((16, 24), 0.5, 3), ((7, 5), 0.25, 1), ((32, 32), 0.5, 4)]
)
def test_sliding_window_equals_whole_image_for_pointwise_model(window, overlap, batch):
    model = pointwise_model()
    x = torch.randn(3, 37, 53)
    fn = prob_fn(model)
    with torch.no_grad():
        whole = fn(x[None])[0]
        tiled = sliding_window(fn, x, window, overlap, batch)
    assert tiled.shape == (1, 37, 53)
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_blending_is_the_gaussian_weighted_mean_of_windows():
    """Each window predicts a constant (its index); the blend must equal sum(g*v)/sum(g) per pixel."""
    H, W, win, overlap = 20, 26, (8, 10), 0.5
    calls = []

    def fn(batch):
        out = torch.empty(batch.shape[0], 1, *batch.shape[-2:])
        for i in range(batch.shape[0]):
            out[i] = float(len(calls))
            calls.append(1)
        return out

    got = sliding_window(fn, torch.zeros(3, H, W), win, overlap, batch_size=2)[0].numpy()
    g = gaussian_weights(win).numpy().astype(np.float64)
    num, den, k = np.zeros((H, W)), np.zeros((H, W)), 0
    for y in window_starts(H, win[0], overlap):  # row-major order, as the implementation batches them
        for x in window_starts(W, win[1], overlap):
            num[y : y + win[0], x : x + win[1]] += g * k
            den[y : y + win[0], x : x + win[1]] += g
            k += 1
    assert (
        len(calls) == k == 4 * 5
    )  # rows: stride 4 -> 0, 4, 8 + end 12; cols: stride 5 -> 0, 5, 10, 15 + end 16
    np.testing.assert_allclose(got, num / den, rtol=1e-5, atol=1e-5)


def test_blending_constant_prediction_stays_constant():
    def fn(batch):
        return torch.full((batch.shape[0], 1, *batch.shape[-2:]), 0.3)

    out = sliding_window(fn, torch.zeros(1, 41, 29), (16, 16), 0.5, 5)
    torch.testing.assert_close(out, torch.full((1, 41, 29), 0.3), atol=1e-6, rtol=0)


def test_tta_of_flip_equivariant_model_equals_no_tta():
    model = symmetric_model()
    x = torch.randn(2, 3, 17, 22)
    with torch.no_grad():
        torch.testing.assert_close(prob_fn(model, tta=True)(x), prob_fn(model)(x), atol=1e-6, rtol=0)


def test_tta_is_mean_over_the_four_flips():
    model = gradient_model()
    x = torch.randn(1, 3, 12, 15)
    with torch.no_grad():
        plain = prob_fn(model)
        ref = (
            plain(x)
            + plain(x.flip(-1)).flip(-1)
            + plain(x.flip(-2)).flip(-2)
            + plain(x.flip(-2, -1)).flip(-2, -1)
        ) / 4
        tta = prob_fn(model, tta=True)(x)
    torch.testing.assert_close(tta, ref, atol=1e-6, rtol=0)
    assert (tta - plain(x)).abs().max() > 1e-3  # the model is not equivariant, so TTA matters


class CountingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = pointwise_model()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.conv(x)


def test_whole_image_path_for_small_inputs_and_windows_for_large(monkeypatch):
    from imbaseg.evaluation import inference

    model = CountingModel()
    fn = prob_fn(model)
    with torch.no_grad():
        out = run_plan(fn, torch.randn(3, 30, 40), InferencePlan(window=(32, 48)))
        assert out.shape == (1, 30, 40) and model.shapes == [(1, 3, 30, 40)]
        model.shapes.clear()
        run_plan(fn, torch.randn(3, 70, 40), InferencePlan(window=(32, 48), batch_size=2))
        # rows: 0,16,32,38 (4 windows of 32 over 70); cols: the whole 40 -> 4 windows in 2 batches
        assert model.shapes == [(2, 3, 32, 40), (2, 3, 32, 40)]
        model.shapes.clear()
        model.shapes.clear()
        run_plan(fn, torch.randn(3, 100, 100), InferencePlan(max_whole_pixels=100 * 100))
        assert model.shapes == [(1, 3, 100, 100)]  # exactly at the limit: whole
        model.shapes.clear()
        monkeypatch.setattr(inference, "FALLBACK_WINDOW", (64, 64))
        out = run_plan(fn, torch.randn(3, 101, 100), InferencePlan(max_whole_pixels=100 * 100, batch_size=4))
        assert out.shape == (1, 101, 100)
        # rows 0, 32 + end 37; cols 0, 32 + end 36: 9 windows of 64x64 in batches of 4, 4, 1
        assert model.shapes == [(4, 3, 64, 64), (4, 3, 64, 64), (1, 3, 64, 64)]


def test_resize_plan_returns_native_size():
    model = pointwise_model()
    fn = prob_fn(model)
    x = torch.randn(3, 37, 50)
    with torch.no_grad():
        out = run_plan(fn, x, InferencePlan(resize_to=(16, 16)))
        assert out.shape == (1, 37, 50)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        # a constant image gives a constant prediction whatever the resizing
        const = run_plan(fn, torch.ones(3, 37, 50), InferencePlan(resize_to=(16, 16)))
        expected = fn(torch.ones(1, 3, 1, 1))[0, 0, 0, 0]
        torch.testing.assert_close(const, torch.full_like(const, float(expected)), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "data, mode, resize, window",
    [
        ({"size": [64, 48]}, "train", (64, 48), None),
        ({"size": [64, 48], "patch_size": [32, 32]}, "train", (64, 48), (32, 32)),
        ({"patch_size": [32, 32]}, "train", None, (32, 32)),
        ({}, "train", None, None),
        ({"size": [64, 48]}, "native", None, (64, 48)),
        ({"size": [64, 48], "patch_size": [32, 32]}, "native", None, (32, 32)),
    ],
)
def test_plan_for_config(data, mode, resize, window):
    plan = plan_for(from_dict({"data": data}), mode)
    assert plan.resize_to == resize and plan.window == window
    assert plan.normalize == ("window" if "patch_size" in data else "image")  # patches were z-scored alone


def test_plan_for_bad_mode():
    from imbaseg.errors import UserError

    with pytest.raises(UserError, match="size mode"):
        plan_for(from_dict({}), "full")


def test_predictor_numpy_output_and_amp_off_on_cpu():
    pred = Predictor(pointwise_model(), InferencePlan(), amp=True, device="cpu")
    assert pred.amp is False
    p = pred.probs(np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8))
    assert p.shape == (9, 11) and p.dtype == np.float32


def test_predictor_preprocessing_matches_the_dataset():
    """uint8 -> resize_image_antialiased -> dataset.zscore -> model -> bilinear back to native size."""
    from imbaseg.data.dataset import zscore
    from imbaseg.data.resize import resize_image_antialiased as resize_image

    model = pointwise_model(3)
    img = np.random.default_rng(1).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    got = Predictor(model, InferencePlan(resize_to=(16, 20)), device="cpu").probs(img)
    small = torch.from_numpy(resize_image(img, (16, 20))).permute(2, 0, 1).float()
    with torch.no_grad():
        ref = torch.sigmoid(model(zscore(small)[None]))
        ref = torch.nn.functional.interpolate(ref, size=(30, 44), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)


def test_predictor_window_normalisation_zscores_each_window():
    """Two halves of different contrast, tiled by two non-overlapping windows: each is z-scored alone."""
    from imbaseg.data.dataset import zscore

    model = pointwise_model(4)
    rng = np.random.default_rng(2)
    img = np.concatenate([rng.integers(0, 60, (24, 16, 3)), rng.integers(100, 256, (24, 16, 3))], 1).astype(
        np.uint8
    )
    plan = InferencePlan(window=(24, 16), overlap=0.0, normalize="window")
    got = Predictor(model, plan, device="cpu").probs(img)
    t = torch.from_numpy(img).permute(2, 0, 1).float()
    with torch.no_grad():
        halves = [torch.sigmoid(model(zscore(t[:, :, s])[None]))[0, 0] for s in (slice(0, 16), slice(16, 32))]
    np.testing.assert_allclose(got, torch.cat(halves, 1).numpy(), atol=1e-5)
    whole = Predictor(model, InferencePlan(window=(24, 16), overlap=0.0), device="cpu").probs(img)
    assert np.abs(whole - got).max() > 1e-2  # per-image z-score differs: the option matters


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    plan = InferencePlan(window=(32, 32))
    cpu = Predictor(pointwise_model(), plan, device="cpu").probs(x)
    gpu = Predictor(pointwise_model(), plan, device="cuda").probs(x)
    gpu_amp = Predictor(pointwise_model(), plan, amp=True, device="cuda").probs(x)
    np.testing.assert_allclose(gpu, cpu, atol=1e-5)
    np.testing.assert_allclose(gpu_amp, cpu, atol=2e-2)
