"""Per-image metric speed: imbaseg vs MONAI vs medpy on the same masks, side by side, plus agreement.

    python tests/benchmarks/bench_metrics.py [--quick] [--n 100] [--seed 0]

Masks: --n pairs of 512x512 blobs and --n pairs of vessel-like curves (default 100 each; --quick: 10).
Each prediction is its GT shifted, thickened or thinned, with boundary noise and missed or extra pieces;
its probabilities are the prediction blurred (Gaussian, sigma 2), float32.
  ours     imbaseg.metrics.compute_metrics(pred, gt, probs=...): the whole per-image set, 15 metrics
           (dice ... cldice, lesion recall/precision/F1, ECE, Brier) and the lesion counts
  ours-10  the set before the lesion and calibration metrics (dice ... nsd, cldice), timed side by side
           with ``ours`` (alternating, best of --repeat); "new/old" is ours / ours-10
  lesion, calib  the lesion matching (both masks labelled) and ECE + Brier alone
  ours-sd  dice, iou, ..., hd95, assd, nsd (no clDice): the set MONAI computes
  MONAI    DiceMetric + HausdorffDistanceMetric(percentile=95) + SurfaceDistanceMetric(symmetric) +
           SurfaceDiceMetric([2.0]) on (1, 1, H, W) tensors
  medpy    dc + hd95 + assd
torch runs with one thread (MONAI's many small ops only slow down with more on a shared machine).
Agreement: max |ours - MONAI| for dice, hd95 (max convention), assd, nsd; max |ours - medpy| for dc,
hd95 (union convention), assd.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from imbaseg.metrics import compute_metrics  # noqa: E402
from imbaseg.metrics.calibration import calibration_metrics  # noqa: E402
from imbaseg.metrics.lesion import lesion_metrics  # noqa: E402
from imbaseg.metrics.overlap import overlap_metrics  # noqa: E402
from imbaseg.metrics.surface import surface_metrics  # noqa: E402
from imbaseg.metrics.topology import cldice  # noqa: E402

SIZE = 512


def blob_pair(rng):
    noise = ndi.gaussian_filter(rng.normal(size=(SIZE, SIZE)), sigma=rng.uniform(12, 30))
    gt = noise > np.quantile(noise, rng.uniform(0.75, 0.97))
    pred = np.roll(gt, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
    pred = ndi.binary_dilation(pred, iterations=int(rng.integers(1, 3))) if rng.random() < 0.5 else pred
    edge = ndi.binary_dilation(gt, iterations=3) & ~ndi.binary_erosion(gt, iterations=3)
    wobble = ndi.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 3) > 0.15
    return pred ^ (edge & wobble), gt


def curve(rng, n_steps=700):
    """A smooth random walk with momentum: the centre line of one vessel."""
    pos = rng.uniform(0, SIZE, 2)
    angle = rng.uniform(0, 2 * np.pi)
    turns = np.cumsum(ndi.gaussian_filter1d(rng.normal(0, 0.25, n_steps), 5))
    steps = np.stack([np.sin(angle + turns), np.cos(angle + turns)], axis=1)
    pts = np.rint(pos + np.cumsum(steps, axis=0)).astype(int)
    return pts[((pts >= 0) & (pts < SIZE)).all(axis=1)]


def vessel_pair(rng):
    gt = np.zeros((SIZE, SIZE), dtype=bool)
    pred = np.zeros_like(gt)
    for _ in range(int(rng.integers(6, 14))):
        pts = curve(rng)
        width = int(rng.integers(0, 3))
        one = np.zeros_like(gt)
        one[pts[:, 0], pts[:, 1]] = True
        one = ndi.binary_dilation(one, iterations=width) if width else one
        gt |= one
        if rng.random() < 0.85:  # most vessels found, a little shifted, sometimes thinner or thicker
            found = np.roll(one, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
            if rng.random() < 0.3:
                found = ndi.binary_dilation(found)
            pred |= found
    for _ in range(int(rng.integers(0, 4))):  # spurious short segments
        pts = curve(rng, n_steps=80)
        pred[pts[:, 0], pts[:, 1]] = True
    return pred, gt


def time_per_image(fn, pairs):
    start = time.perf_counter()
    results = [fn(p, g) for p, g in pairs]
    return (time.perf_counter() - start) / len(pairs) * 1e3, results


def monai_fn():
    import torch
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric

    common = dict(include_background=True, reduction="none")
    dice = DiceMetric(ignore_empty=False, **common)
    hd = HausdorffDistanceMetric(percentile=95, **common)
    sd = SurfaceDistanceMetric(symmetric=True, **common)
    nsd = SurfaceDiceMetric([2.0], **common)

    def run(pred, gt):
        yp, y = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float()
        return {k: float(m(yp, y)) for k, m in (("dice", dice), ("hd95", hd), ("assd", sd), ("nsd", nsd))}

    return run


def medpy_fn():
    from medpy.metric import binary

    def run(pred, gt):
        return {"dice": binary.dc(pred, gt), "hd95": binary.hd95(pred, gt), "assd": binary.assd(pred, gt)}

    return run


def ours_sd(pred, gt):
    return {**overlap_metrics(pred, gt), **surface_metrics(pred, gt)}


def ours_10(pred, gt):
    """The per-image set as it was before the lesion and calibration metrics."""
    return {**overlap_metrics(pred, gt), **surface_metrics(pred, gt), "cldice": cldice(pred, gt)}


def soft(pred):
    return np.clip(ndi.gaussian_filter(pred.astype(np.float32), 2), 0, 1)


def side_by_side(pairs, repeat: int):
    """(ms old, ms new, ms lesion, ms calibration) per image, best of ``repeat`` alternating rounds."""
    triples = [(p, g, soft(p)) for p, g in pairs]
    fns = {
        "old": lambda p, g, s: ours_10(p, g),
        "new": lambda p, g, s: compute_metrics(p, g, probs=s),
        "lesion": lambda p, g, s: lesion_metrics(p, g),
        "calib": lambda p, g, s: calibration_metrics(s, g),
    }
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for key, fn in fns.items():
            start = time.perf_counter()
            for p, g, s in triples:
                fn(p, g, s)
            best[key] = min(best[key], (time.perf_counter() - start) / len(triples) * 1e3)
    return best["old"], best["new"], best["lesion"], best["calib"]


def max_diff(a, b, keys):
    return {k: max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True)) for k in keys}


def bench(name, pairs, repeat: int = 3):
    ms_old, ms_new, ms_lesion, ms_calib = side_by_side(pairs, repeat)
    ms_ours, ours = time_per_image(compute_metrics, pairs)
    ms_sd, _ = time_per_image(ours_sd, pairs)
    ms_monai, monai = time_per_image(monai_fn(), pairs)
    ms_medpy, medpy = time_per_image(medpy_fn(), pairs)
    union = [
        surface_metrics(p, g, hd_convention="union") | {"dice": ours[i]["dice"]}
        for i, (p, g) in enumerate(pairs)
    ]
    print(f"\n{name}: {len(pairs)} pairs of {SIZE}x{SIZE}")
    print(
        f"  per-image set: ours-10 {ms_old:.2f} ms, ours {ms_new:.2f} ms: new/old {ms_new / ms_old:.2f}x "
        f"(lesion matching {ms_lesion:.2f} ms, ECE + Brier {ms_calib:.2f} ms)"
    )
    print(f"  {'':10}{'ms/image':>10}{'vs ours':>10}{'vs ours-sd':>12}")
    for label, ms in (("ours", ms_ours), ("ours-sd", ms_sd), ("MONAI", ms_monai), ("medpy", ms_medpy)):
        print(f"  {label:10}{ms:10.2f}{ms / ms_ours:10.2f}x{ms / ms_sd:11.2f}x")
    diff_monai = max_diff(ours, monai, ("dice", "hd95", "assd", "nsd"))
    diff_medpy = max_diff(union, medpy, ("dice", "hd95", "assd"))
    print("  max |ours - MONAI|: " + ", ".join(f"{k} {v:.2e}" for k, v in diff_monai.items()))
    print("  max |ours(union) - medpy|: " + ", ".join(f"{k} {v:.2e}" for k, v in diff_medpy.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 pairs of each kind")
    parser.add_argument("--n", type=int, default=100, help="pairs of each kind (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds of the side-by-side timing")
    args = parser.parse_args(argv)
    n = 10 if args.quick else args.n
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # MONAI's empty-mask warnings, deprecations
    rng = np.random.default_rng(args.seed)
    blobs = [blob_pair(rng) for _ in range(n)]
    vessels = [vessel_pair(rng) for _ in range(n)]
    print("per-image metrics, one process, same masks; ratios > 1 mean slower than ours")
    bench("blobs", blobs, args.repeat)
    bench("vessel-like curves", vessels, args.repeat)


if __name__ == "__main__":
    main()
