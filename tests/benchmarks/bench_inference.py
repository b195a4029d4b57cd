"""Inference throughput at DRIVE size (584x565 RGB) for the study's U-Net (base 64): images/s per path.

    python tests/benchmarks/bench_inference.py            # CPU, and CUDA (fp32 and AMP) when available
    python tests/benchmarks/bench_inference.py --quick    # a smoke run: CPU, 2 paths, 1 round

Every row runs ``Predictor.probs`` on the same uint8 image (preprocessing, inference, blending and the
resize back included), so the numbers are what ``imbaseg evaluate`` pays per image before the metrics.
Rows are timed in interleaved rounds (one image each per round, in a shuffled order) so that load on a
shared machine hits all alike; the table reports the median time, images/s, and the ratio to the
whole-image row of the same device. Sliding windows cost more than one whole-image pass because the
overlapping windows cover the image about (1 / (1 - overlap))^2 times.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
DRIVE_IMAGE = REPO / ".." / "shared" / "data" / "DRIVE" / "test" / "images" / "01_test.tif"
SIZE = (584, 565)  # DRIVE (H, W)


def drive_image() -> np.ndarray:
    """A real DRIVE fundus when the shared data is there, else noise of the same size (speed is the same)."""
    if DRIVE_IMAGE.is_file():
        from imbaseg.data.io import read_image

        return read_image(DRIVE_IMAGE)
    return np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)


def plans(quick: bool, batch: int) -> dict[str, tuple]:
    """name -> (InferencePlan, tta)."""
    from imbaseg.evaluation.inference import InferencePlan

    rows = {
        "whole image 584x565": (InferencePlan(), False),
        f"sliding 512x512, overlap 0.5, batch {batch}": (
            InferencePlan(window=(512, 512), batch_size=batch),
            False,
        ),
    }
    if not quick:
        rows["resized to 512x512 (study)"] = (InferencePlan(resize_to=(512, 512)), False)
        rows[f"sliding 256x256, overlap 0.5, batch {batch}"] = (
            InferencePlan(window=(256, 256), batch_size=batch),
            False,
        )
        rows[f"sliding 128x128, overlap 0.5, batch {4 * batch}"] = (
            InferencePlan(window=(128, 128), batch_size=4 * batch, normalize="window"),
            False,
        )
        rows["whole image + flip TTA (x4)"] = (InferencePlan(), True)
    return rows


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_device(model, image, device: torch.device, amp: bool, quick: bool, rounds: int) -> list[tuple]:
    from imbaseg.evaluation.inference import Predictor

    batch = 8 if device.type == "cuda" else 2
    predictors = {
        name: Predictor(model, plan, tta=tta, amp=amp, device=device)
        for name, (plan, tta) in plans(quick, batch).items()
    }
    if not (quick and device.type == "cpu"):
        for p in predictors.values():  # warm-up: allocator, cuDNN autotuning, lazy init
            p.probs(image)
    times = {name: [] for name in predictors}
    order = list(predictors)
    for r in range(rounds):
        random.Random(r).shuffle(order)
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            predictors[name].probs(image)
            sync(device)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[next(iter(predictors))])
    label = f"{device.type}{' AMP' if predictors[next(iter(predictors))].amp else ''}"
    return [(label, name, statistics.median(t), statistics.median(t) / base) for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU only, 2 paths, 1 round, no warm-up")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed rounds (default 3 on CPU, 10 on CUDA)"
    )
    parser.add_argument("--base-channels", type=int, default=64, help="U-Net width (the study's 64)")
    args = parser.parse_args()

    from imbaseg.models import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("unet", in_channels=3, base_channels=args.base_channels).eval()
    image = drive_image()
    print(
        f"U-Net base {args.base_channels}, image {image.shape[1]}x{image.shape[0]}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    setups = [(torch.device("cpu"), False)]
    if torch.cuda.is_available() and not args.quick:
        setups += [(torch.device("cuda"), False), (torch.device("cuda"), True)]
    rows = []
    for device, amp in setups:
        rounds = args.rounds or (1 if args.quick else (10 if device.type == "cuda" else 3))
        rows += bench_device(model, image, device, amp, args.quick, rounds)
    print(f"\n{'device':<9} {'path':<40} {'s/image':>9} {'images/s':>9} {'x time of whole':>16}")
    for label, name, t, ratio in rows:
        print(f"{label:<9} {name:<40} {t:>9.4f} {1 / t:>9.2f} {ratio:>16.2f}")


if __name__ == "__main__":
    main()
