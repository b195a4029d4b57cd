"""Training throughput: the study's plain loop against imbaseg's trainer (eager and compiled), side by side.

    python tests/benchmarks/bench_train.py            # CUDA when available: 288x384, batch 8, U-Net base 64
    python tests/benchmarks/bench_train.py --quick    # CPU-sized smoke run

All three variants train the study's U-Net with the boundary-dou loss on the same prepared synthetic
polyps (prepared at the benchmark size under .bench-work/), in one process:
  (a) plain loop, as the study wrote it: fp32, contiguous tensors, per-image scipy EDT on the host and a
      Python loop for the DoU boundary count, `.item()` every step;
  (b) imbaseg eager: the Trainer's own epoch (bf16 autocast on CUDA, channels_last, distance maps made
      by the loader workers, losses synced once per log interval);
  (c) imbaseg compiled: (b) with torch.compile.
It reports images/s, the fraction of the epoch spent waiting for the next batch, peak GPU memory, the
model FLOPs per image (torch.utils.flop_counter) and the achieved TFLOP/s against a measured matmul peak.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_losses import naive_boundary_dou  # noqa: E402

from imbaseg.config import from_dict  # noqa: E402
from imbaseg.data.dataset import SegDataset  # noqa: E402
from imbaseg.data.loader import build_loader  # noqa: E402
from imbaseg.data.prepare import prepare_dataset  # noqa: E402
from imbaseg.models import create_model  # noqa: E402
from imbaseg.training.trainer import Trainer  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device) -> tuple[float, str]:
    """Measured dense matmul TFLOP/s: bf16 on CUDA, fp32 on CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 5
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12, f"{str(dtype).split('.')[-1]} matmul {n}^3"


def flops_per_image(base: int, size: tuple[int, int]) -> float:
    """Forward + backward FLOPs of one image through the U-Net (counted on CPU, device-independent)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("unet", base_channels=base)
    x = torch.randn(1, 3, *size)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return float(counter.get_total_flops())


def config(root: Path, args, compile_: bool):
    return from_dict(
        {
            "data": {"dataset": "synthetic-polyp", "root": str(root), "num_workers": args.workers},
            "model": {"base_channels": args.base},
            "loss": {"name": "boundary-dou"},
            "optim": {"name": "sgd", "lr": 0.01},
            "train": {
                "epochs": 1,
                "batch_size": args.batch,
                "device": args.device,
                "amp": True,
                "compile": compile_,
                "channels_last": args.channels_last,
                "max_train_batches": args.steps,
                "log_interval": 50,
            },
        }
    )


def plain_loop(root: Path, args, device: torch.device) -> dict:
    """(a) The study's loop: fp32, per-image host EDT and loop DoU, .item() every step."""
    torch.manual_seed(0)
    ds = SegDataset(root / "data" / "prepared" / "synthetic-polyp", "train", augment={})
    dl = build_loader(ds, args.batch, shuffle=True, num_workers=args.workers, seed=0, drop_last=True)
    model = create_model("unet", base_channels=args.base).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run(steps: int) -> tuple[int, float, float]:
        seen, waited, it = 0, 0.0, iter(dl)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            tw = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                it = iter(dl)
                batch = next(it)
            waited += time.perf_counter() - tw
            x, y = batch["image"].to(device), batch["mask"].to(device)
            loss = naive_boundary_dou(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
            seen += x.shape[0]
        sync(device)
        return seen, time.perf_counter() - t0, waited

    run(args.warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seen, elapsed, waited = run(args.steps)
    return {"images_per_s": seen / elapsed, "wait": waited / elapsed, "mem": peak_mem(device)}


def peak_mem(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def imbaseg_epoch(root: Path, args, device: torch.device, compile_: bool) -> dict:
    """(b)/(c) The Trainer's own train_epoch, after warm-up epochs (compilation happens there)."""
    torch.manual_seed(0)
    trainer = Trainer(config(root, args, compile_), run_dir=root / "runs" / f"bench-{int(compile_)}")
    trainer.cfg.train.max_train_batches = args.warmup
    trainer.train_epoch(0)
    if compile_:  # a second warm-up: recompiles for the last (smaller) batch shape happen here
        trainer.train_epoch(1)
    trainer.cfg.train.max_train_batches = args.steps
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stats = trainer.train_epoch(2)
    return {
        "images_per_s": stats["images_per_s"],
        "wait": stats["data_wait_fraction"],
        "mem": peak_mem(device),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU-sized: 64x96, batch 2, base 16, few steps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--base", type=int, default=64)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--no-compile", action="store_true", help="skip variant (c)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="imbaseg variants in contiguous memory format (default: channels_last)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    small = args.quick or not cuda
    args.size = tuple(args.size or ((64, 96) if args.quick else (144, 192) if small else (288, 384)))
    args.batch = args.batch or (2 if small else 8)
    args.base = 16 if args.quick else args.base
    args.steps = args.steps or (4 if args.quick else 10 if small else 60)
    args.warmup = args.warmup or (1 if args.quick else 2 if small else 10)
    args.workers = args.workers if args.workers is not None else (0 if small else 6)
    n = max(40, (args.steps + args.warmup) * args.batch * 10 // 7 + 10)
    root = REPO / ".bench-work" / f"train-{args.size[0]}x{args.size[1]}-n{n}"
    prepare_dataset("synthetic-polyp", root=root, size=args.size, n=n, seed=0)

    print(
        f"# bench_train: U-Net base {args.base}, {args.size[0]}x{args.size[1]}, batch {args.batch}, "
        "boundary-dou, "
        f"{args.steps} timed steps, {args.workers} loader workers"
    )
    print(
        f"# device: {torch.cuda.get_device_name(device) if cuda else platform.processor() or 'cpu'}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    rows = [
        ("(a) plain loop (study)", plain_loop(root, args, device)),
        ("(b) imbaseg eager", imbaseg_epoch(root, args, device, False)),
    ]
    if not args.no_compile:
        try:
            rows.append(("(c) imbaseg compiled", imbaseg_epoch(root, args, device, True)))
        except Exception as exc:  # report, don't hide: compile support varies by platform
            print(f"# (c) compile failed: {exc.__class__.__name__}: {str(exc)[:200]}")
    flops = flops_per_image(args.base, args.size)
    peak, peak_what = matmul_peak(device)
    base = rows[0][1]["images_per_s"]
    print(
        f"# model FLOPs per image (fwd+bwd): {flops / 1e9:.2f} GFLOP; "
        f"measured peak {peak:.1f} TFLOP/s ({peak_what})"
    )
    print("| variant | images/s | x plain | waiting for data | peak GPU mem (GiB) | TFLOP/s | % of peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        tflops = r["images_per_s"] * flops / 1e12
        print(
            f"| {name} | {r['images_per_s']:.1f} | {r['images_per_s'] / base:.2f} | {100 * r['wait']:.1f}% "
            f"| {r['mem']:.2f} | {tflops:.3f} | {100 * tflops / peak:.1f}% |"
        )


if __name__ == "__main__":
    main()
