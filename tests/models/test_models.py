"""Model registry, the study's U-Net and the timm U-Net: shapes, parameters, init, errors, offline weights."""

from __future__ import annotations

import copy
import math
import socket
import time

import numpy as np
import pytest
import torch
from torch import nn

from imbaseg.errors import UserError
from imbaseg.models import MODELS, count_parameters, create_model, model_names, model_params
from imbaseg.models import timm_unet as tu
from imbaseg.models.unet import crop_to, pad_to_multiple

SMALL_DECODER = (32, 16, 16, 8, 8)  # keeps the timm tests fast; the default widths are tested once
# The two models as the tests build them: small widths, one grey input channel.
SMALL = {
    "unet": dict(in_channels=1, base_channels=8),
    "timm-unet": dict(in_channels=1, encoder="resnet18", decoder_channels=SMALL_DECODER),
}


@pytest.fixture(scope="module")
def small_models():
    torch.manual_seed(0)
    return {name: create_model(name, **kw) for name, kw in SMALL.items()}


def test_registry_is_a_plain_dict_of_both_models():
    assert type(MODELS) is dict
    assert model_names() == ["timm-unet", "unet"]
    assert model_params("unet") == {"in_channels": 3, "base_channels": 64}
    assert model_params("timm-unet") == {
        "encoder": "resnet34",
        "pretrained": False,
        "in_channels": 3,
        "decoder_channels": (256, 128, 64, 32, 16),
    }


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("size", [(97, 131), (1, 1), (33, 64)])
def test_output_is_one_logit_channel_at_input_size(small_models, name, size):
    model = small_models[name].eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 1, *size)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_timm_unet_default_decoder_and_rgb_input():
    model = create_model("timm-unet", encoder="resnet18").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 45, 70))
    assert out.shape == (1, 1, 45, 70)
    assert [b[0].out_channels for b in model.blocks] == [256, 128, 64, 32]
    assert model.final[0].out_channels == 16 and model.multiple == 32


def test_timm_unet_takes_only_as_many_decoder_widths_as_encoder_stages():
    # convnext_atto has 4 feature stages (reductions 4..32): of (32, 16, 16, 8, 8) the fifth width is dropped.
    model = create_model("timm-unet", encoder="convnext_atto", in_channels=1, decoder_channels=SMALL_DECODER)
    assert [b[0].out_channels for b in model.blocks] == [32, 16, 16]
    assert model.final[0].out_channels == 8 and model.first_reduction == 4
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 50, 37)).shape == (1, 1, 50, 37)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gradients_reach_every_parameter(small_models, name):
    model = small_models[name].train()
    model.zero_grad()
    with torch.no_grad():  # timm zero-inits each residual block's last BN gamma, which blocks the branch's
        for m in model.modules():  # gradient at init by design; give those gammas a value first
            if isinstance(m, nn.BatchNorm2d) and torch.count_nonzero(m.weight) == 0:
                m.weight.fill_(1.0)
    torch.manual_seed(1)
    x, target = torch.randn(2, 1, 40, 36), torch.rand(2, 1, 40, 36)
    nn.functional.binary_cross_entropy_with_logits(model(x), target).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


def unet_param_formula(c: int, i: int) -> int:
    """Parameters of the U-Net with base width c and i input channels, derived by hand.

    DoubleConv(a, b): conv 9ab + b (bias), IN 2b, conv 9b^2 + b, IN 2b          = 9ab + 9b^2 + 6b
    inc = DoubleConv(i, c)                                                       = 9ic + 9c^2 + 6c
    down_k = DoubleConv(2^(k-1) c, 2^k c), k = 1..4: 9*2^(2k-1) c^2 + 9*4^k c^2 + 6*2^k c
                                                                                 = 13.5*4^k c^2 + 6*2^k c
        summed (4+16+64+256 = 340, 2+4+8+16 = 30)                                = 4590 c^2 + 180 c
    up_j = ConvT(2b -> b, 2x2): 8b^2 + b, then DoubleConv(2b, b): 27b^2 + 6b,     = 35 b^2 + 7 b
        b = 2^j c, j = 0..3 (1+4+16+64 = 85, 1+2+4+8 = 15)                       = 2975 c^2 + 105 c
    head = 1x1 conv c -> 1                                                       = c + 1
    total = (9 + 4590 + 2975) c^2 + (9i + 6 + 180 + 105 + 1) c + 1             = 7574 c^2 + (9i + 292) c + 1
    """
    return 7574 * c * c + (9 * i + 292) * c + 1


def test_unet_parameter_count_matches_the_hand_derivation():
    # c = 64, i = 3: 7574*4096 + 319*64 + 1 = 31_023_104 + 20_416 + 1 = 31_043_521
    assert unet_param_formula(64, 3) == 31_043_521
    assert count_parameters(create_model("unet")) == 31_043_521
    for c, i in [(8, 1), (5, 3), (16, 4)]:
        model = create_model("unet", base_channels=c, in_channels=i)
        assert count_parameters(model) == unet_param_formula(c, i)


def test_count_parameters_trainable_only():
    model = create_model("unet", base_channels=4, in_channels=1)
    model.head.requires_grad_(False)  # 4 weights + 1 bias
    assert count_parameters(model) - count_parameters(model, trainable_only=True) == 5


def test_unet_xavier_uniform_init_and_zero_biases():
    torch.manual_seed(0)
    model = create_model("unet", base_channels=16, in_channels=3)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 2 * 9 + 4 + 1  # 9 DoubleConvs, 4 transposed convs, the head
    for m in convs:
        assert torch.count_nonzero(m.bias) == 0
        # fan_in + fan_out = (in + out) * k*k, the same for Conv2d (out, in, k, k) and ConvT (in, out, k, k)
        a, b, kh, kw = m.weight.shape
        bound = math.sqrt(6.0 / ((a + b) * kh * kw))  # U(-bound, bound): std = bound / sqrt(3)
        assert m.weight.abs().max() <= bound
        if m.weight.numel() >= 2000:  # the sample std is within a few % of the population std
            assert m.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 18 and all(n.affine and torch.all(n.weight == 1) for n in norms)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_eval_mode_is_deterministic_and_init_is_seeded(name):
    torch.manual_seed(3)
    a = create_model(name, **SMALL[name]).eval()
    torch.manual_seed(3)
    b = create_model(name, **SMALL[name]).eval()
    x = torch.randn(2, 1, 29, 41)
    with torch.no_grad():
        out = a(x)
        assert torch.equal(out, a(x))
        assert torch.equal(out, b(x))


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
def test_channels_last_matches_contiguous(small_models, name, dtype, tol):
    # float64 isolates layout bugs (which give O(1) errors) from summation-order rounding: 1e-5 absolute.
    # float32: oneDNN's channels_last convs sum in another order and InstanceNorm amplifies low-variance
    # channels, ~2e-5 of the output scale on resnet18 here; 1e-4 of the scale still catches any layout bug.
    model = copy.deepcopy(small_models[name]).eval().to(dtype)
    x = torch.randn(2, 1, 40, 45, dtype=dtype)
    with torch.no_grad():
        ref = model(x)
        model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    atol = tol if dtype == torch.float64 else tol * ref.abs().max().item()
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)


def test_unet_under_cpu_autocast_bf16(small_models):
    model = small_models["unet"].eval()
    x = torch.randn(1, 1, 32, 40)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (1, 1, 32, 40) and torch.isfinite(out.float()).all()
    with torch.no_grad():
        ref = model(x)
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05  # bf16 keeps ~3 digits


def test_unet_compiles_as_one_graph():
    # fullgraph=True fails on any graph break; the eager backend skips code generation (no C compiler needed).
    model = create_model("unet", base_channels=4, in_channels=1).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(1, 1, 37, 21)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_pad_to_multiple_matches_numpy_reflect_and_crop_undoes_it():
    x = torch.arange(2 * 3 * 20 * 37, dtype=torch.float32).reshape(2, 3, 20, 37)
    padded = pad_to_multiple(x, 16)  # 20 -> 32 (pad 12), 37 -> 48 (pad 11), both < the side: reflect
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 12), (0, 11)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), ref)
    assert torch.equal(crop_to(padded, 20, 37), x)


@pytest.mark.parametrize(
    "side, multiple, padded",
    # ceil to the multiple, but at least 2 * multiple: 97 -> 7*16 = 112, 131 -> 9*16 = 144, 1 -> 32, 65 -> 96
    [(1, 16, 32), (16, 16, 32), (32, 16, 32), (33, 16, 48), (97, 16, 112), (131, 16, 144), (65, 32, 96)],
)
def test_pad_to_multiple_sizes(side, multiple, padded):
    assert pad_to_multiple(torch.zeros(1, 1, side, side), multiple).shape[-2:] == (padded, padded)


def test_pad_to_multiple_floor_and_zero_fallback():
    exact = torch.randn(1, 1, 48, 64)
    assert pad_to_multiple(exact, 16) is exact  # already a multiple and >= 32: untouched
    tiny = torch.ones(1, 1, 5, 40)
    padded = pad_to_multiple(tiny, 16)  # 5 -> 32 (pad 27 >= 5: reflect undefined, zeros), 40 -> 48
    assert padded.shape == (1, 1, 32, 48)
    assert padded[..., :5, :40].eq(1).all()
    assert padded[..., 5:, :].eq(0).all() and padded[..., 40:].eq(0).all()


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "name, kwargs, fragment",
    [
        ("unett", {}, "Did you mean 'unet'?"),
        ("timm_unet", {}, "Did you mean 'timm-unet'?"),
        ("unet", {"base_channel": 8}, "Did you mean 'base_channels'?"),
        ("timm-unet", {"encoders": "resnet18"}, "Did you mean 'encoder'?"),
        ("timm-unet", {"encoder": "resnt18"}, "Did you mean 'resnet18'?"),
        ("timm-unet", {"encoder": "efficientnet-b0"}, "Did you mean 'efficientnet_b0'?"),
        ("unet", {"base_channels": 0}, "base_channels must be a positive integer"),
        ("unet", {"in_channels": "3"}, "in_channels must be a positive integer"),
        ("timm-unet", {"encoder": "resnet18", "decoder_channels": (8, 8)}, "needs 5 widths"),
        ("timm-unet", {"encoder": "resnet18", "decoder_channels": "16"}, "must be a list of ints"),
        ("timm-unet", {"decoder_channels": (16, 0)}, "decoder_channels must be a positive integer"),
        ("timm-unet", {"in_channels": 0}, "in_channels must be a positive integer"),
        ("timm-unet", {"pretrained": "yes"}, "pretrained must be true or false"),
    ],
)
def test_user_errors_are_one_line_with_the_fix(name, kwargs, fragment):
    with pytest.raises(UserError) as info:
        create_model(name, **kwargs)
    message = str(info.value)
    assert fragment in message and "\n" not in message


# ------------------------------------------------------------------------------------ pretrained weights
@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """HF and torch-hub caches in tmp_path, the user's offline flag off: nothing cached, nothing real used."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch"))
    for var in tu.PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _no_network(*args, **kwargs):
    raise OSError("network is unreachable (blocked by the test)")


def test_pretrained_offline_is_a_quick_clear_error(empty_caches, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _no_network)  # the probe's only way out
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        create_model("timm-unet", encoder="resnet18", pretrained=True)
    elapsed = time.perf_counter() - start
    assert str(info.value) == (
        "could not download pretrained weights for resnet18 (offline?); use --set model.pretrained=false "
        "or place the weights in the HF/torch cache"
    )
    # Not a timing benchmark: huggingface_hub's retries take ~45 s here; this path takes well under 1 s.
    assert elapsed < 20


def test_pretrained_with_hf_hub_offline_never_probes(empty_caches, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(tu, "can_reach", lambda *a, **k: pytest.fail("probed the network in offline mode"))
    with pytest.raises(UserError, match="could not download pretrained weights for resnet18"):
        create_model("timm-unet", encoder="resnet18", pretrained=True)
    assert constants.HF_HUB_OFFLINE is True  # restored, not left forced


def test_pretrained_weights_load_from_the_hf_cache_without_network(empty_caches, monkeypatch):
    """A cached snapshot of timm/resnet18.a1_in1k (here: seeded random weights) loads with no network."""
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    torch.manual_seed(7)
    state = timm.create_model("resnet18").state_dict()
    commit = "0" * 40
    repo = empty_caches / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    weights = repo / "snapshots" / commit / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, weights)
    monkeypatch.setattr(tu, "can_reach", lambda *a, **k: pytest.fail("probed the network with a warm cache"))

    model = create_model("timm-unet", encoder="resnet18", pretrained=True, decoder_channels=SMALL_DECODER)
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.encoder.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    assert constants.HF_HUB_OFFLINE is False  # the cache-only attempt restores the flag


def test_can_reach_reports_refused_connections(monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _no_network)
    assert tu.can_reach("huggingface.co", 443) is False
