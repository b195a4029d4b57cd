"""The spec's cross-checks: >= 200 random pairs (64x64 to 512x512, blobs, thin lines, empty masks) against
MONAI (DiceMetric, MeanIoU, ConfusionMatrixMetric, HausdorffDistanceMetric, SurfaceDistanceMetric,
SurfaceDiceMetric) and medpy (hd95 for the union convention, assd).

MONAI is called as a user would: one-hot single-class tensors (B=1, C=1, H, W), include_background=True
(the only channel is the foreground), distance_metric="euclidean", reduction="none". Where MONAI's value is
undefined (NaN or inf: empty masks, no negatives) the spec's rule applies instead and is tested elsewhere.
"""

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import line

from imbaseg.metrics import compute_metrics, empty_case

monai_metrics = pytest.importorskip("monai.metrics")
medpy_binary = pytest.importorskip("medpy.metric.binary")
torch = pytest.importorskip("torch")

N_PAIRS = 230  # 23 of them with an empty mask: >= 200 pairs where every metric is defined
SPACINGS = [None, None, None, (0.8, 1.25)]  # every 4th pair anisotropic
TAUS = [2.0, 1.0, 3.0]


def blob(rng, shape):
    noise = ndi.gaussian_filter(rng.normal(size=shape), sigma=min(shape) / 12)
    return noise > np.quantile(noise, rng.uniform(0.6, 0.95))


def lines(rng, shape, n):
    m = np.zeros(shape, dtype=bool)
    for _ in range(n):
        r0, r1 = rng.integers(0, shape[0], 2)
        c0, c1 = rng.integers(0, shape[1], 2)
        m[line(r0, c0, r1, c1)] = True
    return m


def perturb(rng, m):
    """A plausible prediction: shifted, dilated or eroded, with some noise."""
    out = np.roll(m, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
    op = rng.integers(3)
    if op == 1:
        out = ndi.binary_dilation(out)
    elif op == 2 and out.sum() > 50:
        out = ndi.binary_erosion(out)
    return out ^ (rng.random(m.shape) < rng.choice([0.0, 0.002, 0.01]))


def make_pair(rng, i):
    if i < 4:
        shape = (512, 512) if i < 2 else (256, 320)
    else:
        shape = tuple(int(s) for s in rng.integers(64, 129, 2))
    kind = i % 10
    if kind in (0, 1, 2, 3, 8):
        gt = blob(rng, shape)
        pred = perturb(rng, gt)
    elif kind in (4, 5):  # thin lines, predicted by nearby thin lines
        gt = lines(rng, shape, int(rng.integers(1, 6)))
        pred = lines(rng, shape, 2) | np.roll(gt, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    elif kind == 6:  # unrelated masks, one touching the border
        gt, pred = blob(rng, shape), lines(rng, shape, 3)
        gt[:, :3] = True
    elif kind == 7:  # sparse pixels
        gt, pred = rng.random(shape) < 0.01, rng.random(shape) < 0.01
    else:  # kind 9: the empty cases in turn (both, GT, prediction)
        gt, pred = blob(rng, shape), blob(rng, shape)
        which = (i // 10) % 3
        if which in (0, 1):
            gt[:] = False
        if which in (0, 2):
            pred[:] = False
    return pred, gt


def monai_values(pred, gt, spacing, tau):
    yp = torch.from_numpy(pred)[None, None].float()
    y = torch.from_numpy(gt)[None, None].float()
    common = dict(include_background=True, reduction="none")
    out = {
        "dice": monai_metrics.DiceMetric(ignore_empty=False, **common)(yp, y),
        "iou": monai_metrics.MeanIoU(ignore_empty=False, **common)(yp, y),
        "hd95": monai_metrics.HausdorffDistanceMetric(percentile=95, **common)(yp, y, spacing=spacing),
        "assd": monai_metrics.SurfaceDistanceMetric(symmetric=True, **common)(yp, y, spacing=spacing),
        "nsd": monai_metrics.SurfaceDiceMetric([tau], **common)(yp, y, spacing=spacing),
    }
    names = ("precision", "recall", "specificity", "accuracy")
    cm = monai_metrics.ConfusionMatrixMetric(metric_name=names, **common)
    cm(yp, y)
    out.update(zip(names, cm.aggregate(), strict=True))
    return {k: float(v.reshape(-1)[0]) for k, v in out.items()}


TOLERANCE = {
    "dice": 1e-6, "iou": 1e-6, "precision": 1e-6, "recall": 1e-6, "specificity": 1e-6, "accuracy": 1e-6,
    "hd95": 1e-3, "assd": 1e-3, "nsd": 1e-6,
}  # fmt: skip


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(2024)
    return [make_pair(rng, i) for i in range(N_PAIRS)]


def test_pairs_cover_the_spec(pairs):
    cases = [empty_case(p, g) for p, g in pairs]
    assert len(pairs) >= 200
    assert {"none", "both_empty", "gt_empty", "pred_empty"} <= set(cases)
    assert any(p.shape == (512, 512) for p, _ in pairs) and min(min(p.shape) for p, _ in pairs) >= 64


def test_agrees_with_monai(pairs):
    compared = dict.fromkeys(TOLERANCE, 0)
    for i, (pred, gt) in enumerate(pairs):
        spacing, tau = SPACINGS[i % len(SPACINGS)], TAUS[i % len(TAUS)]
        ours = compute_metrics(pred, gt, spacing=spacing, nsd_tau=tau)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns about empty masks
            theirs = monai_values(pred, gt, spacing, tau)
        for name, tol in TOLERANCE.items():
            if np.isfinite(theirs[name]):
                assert ours[name] == pytest.approx(theirs[name], abs=tol), (i, name, empty_case(pred, gt))
                compared[name] += 1
    assert min(compared.values()) >= 200, compared  # where both masks are non-empty, all are defined


def test_union_convention_and_assd_agree_with_medpy(pairs):
    compared = 0
    for i, (pred, gt) in enumerate(pairs):
        if empty_case(pred, gt) != "none":
            continue  # medpy raises on empty masks
        spacing = SPACINGS[i % len(SPACINGS)]
        ours = compute_metrics(pred, gt, spacing=spacing, hd_convention="union")
        assert ours["hd95"] == pytest.approx(medpy_binary.hd95(pred, gt, voxelspacing=spacing), abs=1e-3), i
        assert ours["assd"] == pytest.approx(medpy_binary.assd(pred, gt, voxelspacing=spacing), abs=1e-3), i
        compared += 1
    assert compared >= 200
