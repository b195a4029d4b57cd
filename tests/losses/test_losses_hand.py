"""Hand-computed values on tiny tensors, with the arithmetic in the comments (MONAI's loss-test style).

Example A (1x1x2x2): z = [[ln3, 0], [-ln3, 0]], y = [[1, 0], [0, 0]], so p = [[3/4, 1/2], [1/4, 1/2]].
Useful values: softplus(ln3) = ln4, softplus(-ln3) = ln(4/3), softplus(0) = ln2.
Soft counts of A: TP = 3/4, FP = 1/2 + 1/4 + 1/2 = 5/4, FN = 1/4; background: TP = 7/4, FP = 1/4, FN = 5/4.
"""

from __future__ import annotations

import math

import pytest
import torch

from imbaseg.losses import get_loss

LN2, LN3, LN43 = math.log(2), math.log(3), math.log(4 / 3)
S = 1e-5  # default smooth of the region losses
D = 1e-5  # DoU delta


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)[None, None]


ZA = t([[LN3, 0.0], [-LN3, 0.0]])
YA = t([[1.0, 0.0], [0.0, 0.0]])

# (name, params, z, y, expected)
CASES = [
    # per-pixel l = ln(4/3), ln2, ln(4/3), ln2 -> mean = (ln(4/3) + ln2)/2 = ln(8/3)/2
    ("bce", {}, ZA, YA, (LN43 + LN2) / 2),
    # pos_weight 2 doubles the y=1 term: (2 ln(4/3) + ln2 + ln(4/3) + ln2)/4
    ("bce", {"pos_weight": 2.0}, ZA, YA, (3 * LN43 + 2 * LN2) / 4),
    # P = 1, N = 3: w+ = min(1, 3) = 1, w- = min(1, 1/3) = 1/3 -> (ln(4/3) + (ln2 + ln(4/3) + ln2)/3)/4
    ("dynamit-batch", {}, ZA, YA, (LN43 + (2 * LN2 + LN43) / 3) / 4),
    ("dynamit-image", {}, ZA, YA, (LN43 + (2 * LN2 + LN43) / 3) / 4),
    # 1 - (2*3/4 + s)/(2*3/4 + 5/4 + 1/4 + s) = 1 - 1.5/3 = 0.5
    ("dice", {}, ZA, YA, 1 - (1.5 + S) / (3.0 + S)),
    # with background: bg dice = 1 - (2*7/4 + s)/(7/2 + 1/4 + 5/4 + s) = 1 - 3.5/5 = 0.3 -> (0.5 + 0.3)/2
    ("dice", {"include_background": True}, ZA, YA,
     (1 - (1.5 + S) / (3.0 + S) + 1 - (3.5 + S) / (5.0 + S)) / 2),
    # 1 - (3/4 + s)/(3/4 + 5/4 + 1/4 + s) = 1 - 0.75/2.25 = 2/3
    ("iou", {}, ZA, YA, 1 - (0.75 + S) / (2.25 + S)),
    # 1 - (3/4 + s)/(3/4 + 0.3*5/4 + 0.7*1/4 + s) = 1 - 0.75/1.3 = 0.423077
    ("tversky", {}, ZA, YA, 1 - (0.75 + S) / (1.3 + S)),
    # 0.423077 ** 0.75 = 0.524574
    ("focal-tversky", {}, ZA, YA, (1 - (0.75 + S) / (1.3 + S)) ** 0.75),
    # a_t (1-p_t)^2 l: 0.25*(1/4)^2*ln(4/3) + 0.75*(1/2)^2*ln2 + 0.75*(1/4)^2*ln(4/3) + 0.75*(1/2)^2*ln2, /4
    ("focal", {}, ZA, YA, (0.25 / 16 * LN43 + 0.75 / 4 * LN2 + 0.75 / 16 * LN43 + 0.75 / 4 * LN2) / 4),
    # 0.5 * mean(0.5 l) + 0.5 * dice = 0.25 * ln(8/3)/2 + 0.5 * 0.5
    ("combo", {}, ZA, YA, 0.25 * (LN43 + LN2) / 2 + 0.5 * (1 - (1.5 + S) / (3.0 + S))),
    # L_maF = mean(0.6*ln(4/3), 0.4*(1/2)^0.5*ln2, 0.4*(1/4)^0.5*ln(4/3), 0.4*(1/2)^0.5*ln2) = 0.155562
    # fg: 1 - mTI = 1 - 0.75/(0.75 + 0.6*0.25 + 0.4*1.25) = 1 - 0.75/1.4 -> ^0.5 = 0.681385
    # bg: 1 - mTI = 1 - 1.75/(1.75 + 0.6*1.25 + 0.4*0.25) = 1 - 1.75/2.6 = 0.326923
    # L = 0.5*0.155562 + 0.5*(0.326923 + 0.681385)/2 = 0.329858
    ("unified-focal", {}, ZA, YA,
     0.5 * (0.6 * LN43 + 0.4 * 0.5**0.5 * LN2 * 2 + 0.4 * 0.5 * LN43) / 4
     + 0.5 * ((1 - (1.75 + S) / (2.6 + S)) + (1 - (0.75 + S) / (1.4 + S)) ** 0.5) / 2),
    # symmetric: fg focal term 0.6*(1/4)^0.5*ln(4/3), bg Tversky term 0.326923^0.5 -> 0.380280
    ("unified-focal-symmetric", {}, ZA, YA,
     0.5 * (0.6 * 0.5 * LN43 + 0.4 * 0.5**0.5 * LN2 * 2 + 0.4 * 0.5 * LN43) / 4
     + 0.5 * ((1 - (1.75 + S) / (2.6 + S)) ** 0.5 + (1 - (0.75 + S) / (1.4 + S)) ** 0.5) / 2),
    # DoU on A: fg S=1, C=1 (touches the border) -> alpha = 2(1 - 1) - 1 = -1, I = 3/4,
    # Z = 9/16+1/4+1/16+1/4 = 9/8, Y = 1: L_fg = (9/8 + 1 - 3/2)/(9/8 + 1 - 0) = 5/17;
    # bg: S=3, C=3 -> alpha=-1, I = 7/4, Z = 9/8, Y = 3: L_bg = (9/8 + 3 - 7/2)/(9/8 + 3) = 5/33;
    # L = (5/17 + 5/33)/2 = 0.222995
    ("dou", {}, ZA, YA,
     ((9 / 8 + 1 - 1.5 + D) / (9 / 8 + 1 + D) + (9 / 8 + 3 - 3.5 + D) / (9 / 8 + 3 + D)) / 2),
]


@pytest.mark.parametrize("name,params,z,y,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_hand_computed_value(name, params, z, y, expected):
    assert get_loss(name, **params)(z, y).item() == pytest.approx(expected, rel=1e-5)


def test_boundary_gaussian_row():
    """1x5 row y = [1,0,0,0,0], z = 0 (l = ln2 everywhere), sigma = 2.

    P = 1, N = 4: w+ = min(1, 4) = 1, b = (1+eps)/(4+eps) ~ 1/4; d = 1, 2, 3, 4 on the background,
    g = exp(-d^2/8) = 0.882497, 0.606531, 0.324652, 0.135335;
    w- = min(1, b+g) = 1, 0.856531, 0.574652, 0.385335.
    L = ln2 * (1 + 1 + 0.856531 + 0.574652 + 0.385335)/5 = 0.529082.
    """
    z, y = torch.zeros(1, 1, 1, 5), t([[1.0, 0, 0, 0, 0]])
    b = (1 + 1e-6) / (4 + 1e-6)
    expected = LN2 * (1 + sum(min(1.0, b + math.exp(-d * d / 8)) for d in (1, 2, 3, 4))) / 5
    assert expected == pytest.approx(0.529082, abs=1e-6)
    assert get_loss("boundary-gaussian")(z, y).item() == pytest.approx(expected, rel=1e-6)
    # sigma = 1: g = exp(-d^2/2) = 0.606531, 0.135335, 0.011109, 0.000335
    #   -> w- = 0.856531, 0.385335, 0.261109, 0.250335
    expected1 = LN2 * (1 + sum(min(1.0, b + math.exp(-d * d / 2)) for d in (1, 2, 3, 4))) / 5
    assert get_loss("boundary-gaussian", sigma=1.0)(z, y).item() == pytest.approx(expected1, rel=1e-6)


def test_dou_alpha_from_the_boundary_ratio():
    """5x5 image, 3x3 foreground block in the middle, z = 0 (p = 1/2).

    fg: S = 9, C = 8 (all but the centre touch the background) -> alpha = 2(1 - 8/9) - 1 = -7/9;
    I = 9/2, Z = 25/4, Y = 9 -> L_fg = (25/4 + 9 - 9)/(25/4 + 9 - (2/9)(9/2)) = 6.25/14.25 = 0.438596.
    bg: S = 16, C = 16 (the ring touches the image border) -> alpha = -1; I = 8, Z = 25/4, Y = 16 ->
    L_bg = 6.25/22.25 = 0.280899. L = 0.359748.
    """
    y = torch.zeros(1, 1, 5, 5)
    y[..., 1:4, 1:4] = 1
    a = 2 * (1 - (8 + D) / (9 + D)) - 1
    l_fg = (6.25 + D) / (6.25 + 9 - (1 + a) * 4.5 + D)
    l_bg = (6.25 + D) / (6.25 + 16 - 0 * 8 + D)
    assert (l_fg + l_bg) / 2 == pytest.approx(0.359748, abs=1e-6)
    assert get_loss("dou")(torch.zeros(1, 1, 5, 5), y).item() == pytest.approx((l_fg + l_bg) / 2, rel=1e-6)


def test_dou_alpha_is_truncated_at_0_8():
    """42x42 image, 40x40 block: S = 1600, C = 4*40 - 4 = 156 -> 2(1 - 156/1600) - 1 = 0.805 -> alpha = 0.8.

    z = 0: fg I = 800, Z = 1764/4 = 441, Y = 1600 -> L_fg = 441/(441 + 1600 - 1.8*800) = 441/601;
    bg: S = C = 164 (the border ring) -> alpha = -1 -> L_bg = 441/(441 + 164) = 441/605. L = 0.731351.
    """
    y = torch.zeros(1, 1, 42, 42)
    y[..., 1:41, 1:41] = 1
    expected = ((441 + D) / (441 + 1600 - 1.8 * 800 + D) + (441 + D) / (441 + 164 + D)) / 2
    assert expected == pytest.approx(0.731351, abs=1e-6)
    assert get_loss("dou")(torch.zeros(1, 1, 42, 42), y).item() == pytest.approx(expected, rel=1e-6)


def test_boundary_dou_is_the_sum_of_its_parts():
    """boundary-dou(sigma=1, lambda_dou=0.5) on the 1x5 row = boundary-gaussian(sigma=1) + 0.5 * dou.

    DoU of the row, z = 0: fg S = 1, C = 1 -> alpha = -1; I = 1/2, Z = 5/4, Y = 1 ->
    L_fg = (5/4 + 1 - 1)/(5/4 + 1 - 0) = 5/9; bg S = 4, C = 4 (a one-pixel-high image: every pixel touches
    the border) -> alpha = -1; I = 2, Y = 4 -> L_bg = (5/4 + 4 - 4)/(5/4 + 4) = 5/21.
    dou = (5/9 + 5/21)/2 = 25/63.
    """
    z, y = torch.zeros(1, 1, 1, 5), t([[1.0, 0, 0, 0, 0]])
    b = (1 + 1e-6) / (4 + 1e-6)
    gauss = LN2 * (1 + sum(min(1.0, b + math.exp(-d * d / 2)) for d in (1, 2, 3, 4))) / 5
    dou = ((1.25 + D) / (2.25 + D) + (1.25 + D) / (5.25 + D)) / 2
    assert dou == pytest.approx(25 / 63, rel=1e-4)
    loss = get_loss("boundary-dou", sigma=1.0, lambda_dou=0.5)
    assert loss(z, y).item() == pytest.approx(gauss + 0.5 * dou, rel=1e-6)
    assert loss.last_terms["boundary-gaussian"].item() == pytest.approx(gauss, rel=1e-6)
    assert loss.last_terms["dou"].item() == pytest.approx(dou, rel=1e-6)


def test_cldice_on_a_row():
    """1x3 row y = [0,1,0], z = [0, ln3, -ln3] -> p = [1/2, 3/4, 1/4].

    iterations = 0: erode(p) = [min(1/2,3/4), min(all), min(3/4,1/4)] = [1/2, 1/4, 1/4] (the vertical pool
    of a one-row image is the identity), open = dilate(erode) = [1/2, 1/2, 1/4], skel_p = relu(p - open) =
    [0, 1/4, 0]; erode(y) = 0 -> skel_y = y. Tprec = (1/4)/(1/4) = 1, Tsens = (3/4)/1 = 3/4,
    clDice = 2*0.75/1.75 = 6/7. dice: TP = 3/4, FP = 3/4, FN = 1/4 -> 1 - 1.5/2.5 = 0.4.
    L = 0.5*0.4 + 0.5*(1 - 6/7) = 0.271429.
    iterations = 1: x1 = erode(p) = [1/2, 1/4, 1/4], open(x1) = [1/4]*3, delta = [1/4, 0, 0],
    skel_p = [0,1/4,0] + relu(delta - skel*delta) = [1/4, 1/4, 0] -> Tprec = (1/4)/(1/2) = 1/2; Tsens = 3/4;
    clDice = 2*(3/8)/(5/4) = 0.6 -> L = 0.5*0.4 + 0.5*0.4 = 0.4.
    """
    z, y = t([[0.0, LN3, -LN3]]), t([[0.0, 1.0, 0.0]])
    dice = 1 - (1.5 + S) / (2.5 + S)
    cl0 = 2 * 1 * 0.75 / 1.75
    expected0 = 0.5 * dice + 0.5 * (1 - cl0)
    assert get_loss("cldice", iterations=0)(z, y).item() == pytest.approx(expected0, rel=1e-4)
    cl1 = 2 * 0.5 * 0.75 / 1.25
    expected1 = 0.5 * dice + 0.5 * (1 - cl1)
    assert get_loss("cldice", iterations=1)(z, y).item() == pytest.approx(expected1, rel=1e-4)


def test_boundary_loss_on_a_row():
    """1x5 row y = [0,1,1,1,0]: phi = [1, 0, -1, 0, 1] (outside: distance to the object; inside: -(d_bg - 1)).

    z = [ln3, 0, 0, 0, 0] -> p = [3/4, 1/2, 1/2, 1/2, 1/2]; sum(p*phi) = 3/4 - 1/2 + 1/2 = 3/4; mean = 0.15.
    """
    z, y = t([[LN3, 0.0, 0.0, 0.0, 0.0]]), t([[0.0, 1, 1, 1, 0]])
    assert get_loss("boundary")(z, y).item() == pytest.approx(0.15, rel=1e-6)


def test_hausdorff_dt_on_a_row():
    """1x5 row y = [0,1,1,0,0], z = [ln3, ln3, -ln3, -ln3, 0] -> p = [3/4, 3/4, 1/4, 1/4, 1/2], prediction
    mask (z > 0) = [1,1,0,0,0].
    d_y (distance to the other class) = [1, 1, 1, 1, 2]; d_p = [2, 1, 1, 2, 3].
    (p-y)^2 = [9/16, 1/16, 9/16, 1/16, 1/4]; d_y^2 + d_p^2 = [5, 2, 2, 5, 13].
    sum = (45 + 2 + 18 + 5 + 52)/16 = 122/16 -> mean = 7.625/5 = 1.525.
    """
    z, y = t([[LN3, LN3, -LN3, -LN3, 0.0]]), t([[0.0, 1, 1, 0, 0]])
    assert get_loss("hausdorff-dt")(z, y).item() == pytest.approx(1.525, rel=1e-6)
    # alpha = 1: d_y + d_p = [3, 2, 2, 3, 5] -> (27 + 2 + 18 + 3 + 20)/16/5 = 70/80 = 0.875
    assert get_loss("hausdorff-dt", alpha=1.0)(z, y).item() == pytest.approx(0.875, rel=1e-6)


def test_lovasz_on_a_row():
    """1x3 row y = [1,0,0], z = [0.5, 0.2, -1]: errors 1 - z*(2y-1) = [0.5, 1.2, 0.0].

    Sorted: [1.2 (bg), 0.5 (fg), 0.0 (bg)], gt = [0,1,0]; intersection = 1 - cumsum(gt) = [1,0,0];
    union = 1 + cumsum(1-gt) = [2,2,3]; jaccard = [1/2, 1, 1] -> grad = [1/2, 1/2, 0].
    L = 1.2*0.5 + 0.5*0.5 + 0 = 0.85.
    """
    assert get_loss("lovasz")(t([[0.5, 0.2, -1.0]]), t([[1.0, 0, 0]])).item() == pytest.approx(0.85, rel=1e-6)


def test_dynamit_degenerate_batches_give_zero():
    """No foreground: w+ = 0 (P = 0) and w- = min(1, 0/N) = 0 -> L = 0, as published. Full: likewise."""
    z = torch.randn(2, 1, 4, 4)
    for y in (torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)):
        assert get_loss("dynamit-batch")(z, y).item() == 0.0
        assert get_loss("dynamit-image")(z, y).item() == 0.0


def test_boundary_gaussian_without_foreground_keeps_the_base_weight():
    """No foreground: P = 0 -> b = eps/(N+eps), g = 0 -> w- = b: L = b * mean(softplus(z)); z = 0, N = 16."""
    b = 1e-6 / (16 + 1e-6)
    loss = get_loss("boundary-gaussian")(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    assert loss.item() == pytest.approx(b * LN2, rel=1e-5)


def test_dynamit_batch_and_image_weights_differ():
    """Two images: A (P=1, N=3) and y2 = [[1,1],[0,0]], z2 = 0 (P=2, N=2, l = ln2 everywhere).

    dynamit-image: A -> (ln(4/3) + (2 ln2 + ln(4/3))/3)/4 as above; image 2 -> w+ = w- = 1 -> ln2;
    then the mean of both.
    dynamit-batch: P = 3, N = 5 -> w+ = 1, w- = 3/5:
    (ln(4/3) + 3/5 (ln2 + ln(4/3) + ln2) + 2 ln2 + 3/5 * 2 ln2) / 8.
    """
    z = torch.cat([ZA, torch.zeros(1, 1, 2, 2)])
    y = torch.cat([YA, t([[1.0, 1.0], [0.0, 0.0]])])
    image_a = (LN43 + (2 * LN2 + LN43) / 3) / 4
    assert get_loss("dynamit-image")(z, y).item() == pytest.approx((image_a + LN2) / 2, rel=1e-6)
    batch = (LN43 + 0.6 * (2 * LN2 + LN43) + 2 * LN2 + 0.6 * 2 * LN2) / 8
    assert get_loss("dynamit-batch")(z, y).item() == pytest.approx(batch, rel=1e-6)


@pytest.mark.parametrize("shape", [(3, 9, 11), (2, 1, 7), (2, 2, 2), (2, 7, 1), (1, 3, 3)])
def test_boundary_count_equals_the_cross_convolution(shape):
    """C of the DoU loss = pixels of the class whose 3x3-cross conv (zero padding) is below 5."""
    import torch.nn.functional as F

    from imbaseg.losses.region import boundary_counts

    gen = torch.Generator().manual_seed(sum(shape))
    m = torch.rand(shape, generator=gen) < 0.6
    kernel = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    counts = []
    for cls in (m, ~m):
        t_ = cls[:, None].float()
        conv = F.conv2d(t_, kernel, padding=1)
        counts.append(int(((conv < 5) & cls[:, None]).sum()))
    pos, c_fg, c_bg = boundary_counts(m[:, None]).tolist()
    assert (pos, c_fg, c_bg) == (int(m.sum()), counts[0], counts[1])
