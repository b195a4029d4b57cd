"""Loss speed: forward+backward time of every registered loss as a ratio to plain BCE, side by side.

    python tests/benchmarks/bench_losses.py            # 8x1x384x384, CPU (and CUDA when available)
    python tests/benchmarks/bench_losses.py --quick    # a smoke run: 2x1x128x128, few repeats

The batch holds a blob and a thin curve per image. Candidates are timed in interleaved rounds (one
fwd+bwd each per round, in a shuffled order) so that load on a shared machine hits all alike; the table
reports the median and the best (min) time of each, and both ratios to ``F.binary_cross_entropy_with_logits``
(on a busy shared machine the min ratio is the steadier one).
Losses that take target-only inputs get more rows: "in forward" (everything computed in the step: on
CUDA the on-device EDT), "precomputed" (what the trainer does: the loss's ``distance_inputs``, made by
``distance_maps`` in the data-loader workers; for boundary-gaussian/boundary-dou the Gaussian term and
the DoU counts) and, where those differ, "distance maps handed in" (the plain ``dist_fg`` map only).
The "straightforward" rows are the per-image implementations of the original study: scipy EDT on the
host image by image, and a Python loop of per-image conv2d calls for the DoU boundary count.

    python tests/benchmarks/bench_losses.py --threads 1 --cpu-clock --losses boundary-gaussian,boundary-dou
    python tests/benchmarks/bench_losses.py --device cuda --json losses.json   # as make gpu-check runs it
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from imbaseg.losses import LOSSES, distance_maps, get_loss  # noqa: E402


def make_batch(b: int, size: int, device: str, seed: int = 0):
    """Logits ~ N(0, 2^2) and a target with one ellipse and one 1-2 px wide sine curve per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    y = np.zeros((b, 1, size, size), np.float32)
    for i in range(b):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        ry, rx = rng.uniform(0.04, 0.12, 2) * size
        y[i, 0][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
        amp, freq, phase = size * 0.1, rng.uniform(1, 3), rng.uniform(0, 6.3)
        row = rng.uniform(0.2, 0.8) * size
        curve = row + amp * np.sin(freq * 2 * np.pi * xx[0] / size + phase)
        width = 1 + i % 2
        for x in range(size):
            r = int(curve[x])
            y[i, 0, max(r, 0):min(r + width, size), x] = 1
    z = rng.normal(0, 2, y.shape).astype(np.float32)
    return torch.from_numpy(z).to(device), torch.from_numpy(y).to(device)


def precomputed(y: torch.Tensor, keys) -> dict[str, torch.Tensor]:
    ycpu = y.cpu().numpy()
    maps = [distance_maps(ycpu[i, 0], keys) for i in range(len(ycpu))]
    return {k: torch.from_numpy(np.stack([m[k] for m in maps]))[:, None].to(y.device) for k in keys}


# ------------------------------------------------------------------ the study's straightforward versions


def naive_boundary_gaussian(z, y, sigma=2.0, eps=1e-6):
    """Per-image scipy EDT on the host, then the weighted BCE (a host round trip on CUDA)."""
    yn = y.detach().cpu().numpy()
    pos = float(yn.sum())
    neg = yn.size - pos
    w_pos, base = min(1.0, (neg + eps) / (pos + eps)), (pos + eps) / (neg + eps)
    w = np.empty_like(yn)
    for i in range(len(yn)):
        m = yn[i, 0] > 0.5
        g = np.exp(-distance_transform_edt(~m) ** 2 / (2 * sigma**2)) if m.any() else 0.0
        w[i, 0] = np.where(m, w_pos, np.minimum(1.0, base + g))
    w = torch.from_numpy(w).to(z.device)
    return (w * F.binary_cross_entropy_with_logits(z, y, reduction="none")).mean()


_CROSS = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]])


def naive_dou(z, y, delta=1e-5):
    """Sun et al.'s _adaptive_size, binary: a Python loop of per-image conv2d for the boundary count."""
    p = torch.sigmoid(z)
    kernel = _CROSS.to(z.device).view(1, 1, 3, 3)
    loss = 0.0
    for s, t in ((p, y), (1 - p, 1 - y)):
        conv = torch.zeros_like(t)
        for i in range(t.shape[0]):
            conv[i] = F.conv2d(t[i:i + 1], kernel, padding=1)[0]
        conv = conv * t
        conv[conv == 5] = 0
        c, size = torch.count_nonzero(conv), torch.count_nonzero(t)
        alpha = min(2 * (1 - (c + delta) / (size + delta)) - 1, 0.8)
        inter, ysum, zsum = (s * t).sum(), (t * t).sum(), (s * s).sum()
        loss = loss + (zsum + ysum - 2 * inter + delta) / (zsum + ysum - (1 + alpha) * inter + delta)
    return loss / 2


def naive_boundary_dou(z, y):
    return naive_boundary_gaussian(z, y) + naive_dou(z, y)


# ------------------------------------------------------------------ timing


def candidates(z, y, only: set[str] | None = None):
    """(label, variant, fn) with fn() -> scalar loss; BCE first. ``only``: registry names to keep."""
    rows = [("BCE (torch)", "F.binary_cross_entropy_with_logits",
             lambda: F.binary_cross_entropy_with_logits(z, y))]
    for name, cls in LOSSES.items():
        if only is not None and name not in only:
            continue
        loss = get_loss(name)
        keys = loss.distance_inputs
        rows.append((name, "in forward" if keys else "", lambda loss=loss: loss(z, y)))
        if keys:
            extras = precomputed(y, keys)
            rows.append((name, f"precomputed: {', '.join(keys)}",
                         lambda loss=loss, ex=extras: loss(z, y, **ex)))
        if cls.distance_inputs and tuple(cls.distance_inputs) != tuple(keys):
            maps = precomputed(y, cls.distance_inputs)
            rows.append((name, f"distance maps handed in: {', '.join(cls.distance_inputs)}",
                         lambda loss=loss, ex=maps: loss(z, y, **ex)))
    straightforward = [("boundary-gaussian", "straightforward: per-image scipy on host",
                        lambda: naive_boundary_gaussian(z, y)),
                       ("dou", "straightforward: per-image conv loop", lambda: naive_dou(z, y)),
                       ("boundary-dou", "straightforward: both", lambda: naive_boundary_dou(z, y))]
    return rows + [r for r in straightforward if only is None or r[0] in only]


def compiled_rows(z, y, only: set[str] | None = None):
    """``torch.compile``d BCE and boundary losses (precomputed inputs), compiled and warmed up here; a
    failure is printed and its row left out. On a GPU an eager loss is many small kernel launches at this
    size; compiled, inductor fuses them, which is what ``--compile`` training gets for the model."""
    specs = [("BCE (torch)", "compiled", lambda: F.binary_cross_entropy_with_logits(z, y))]
    for name in ("boundary-gaussian", "boundary-dou"):
        if only is None or name in only:
            loss = get_loss(name)
            extras = precomputed(y, loss.distance_inputs)
            specs.append((name, "precomputed, compiled", lambda loss=loss, ex=extras: loss(z, y, **ex)))
    rows = []
    for label, variant, fn in specs:
        try:
            compiled = torch.compile(fn)
            for _ in range(2):
                z.grad = None
                compiled().backward()
            rows.append((label, variant, compiled))
        except Exception as exc:  # report, don't hide: compile support varies by platform
            print(f"(torch.compile of {label} failed: {exc.__class__.__name__}: {str(exc)[:160]})")
    return rows


def time_all(rows, z, repeats: int, device: str, seed: int = 0, clock=time.perf_counter):
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = {i: [] for i in range(len(rows))}
    order = list(range(len(rows)))
    rng = random.Random(seed)
    for r in range(repeats + 1):  # round 0 warms up
        rng.shuffle(order)
        for i in order:
            z.grad = None
            sync()
            t0 = clock()
            rows[i][2]().backward()
            sync()
            if r:
                times[i].append(clock() - t0)
    return [(statistics.median(times[i]), min(times[i])) for i in range(len(rows))]


def check_straightforward(z, y) -> float:
    """The study's versions compute the same numbers (max relative difference)."""
    pairs = [(naive_boundary_gaussian, "boundary-gaussian"), (naive_dou, "dou"),
             (naive_boundary_dou, "boundary-dou")]
    return max(abs(f(z, y).item() / get_loss(n)(z, y).item() - 1) for f, n in pairs)


def loader_cost(y: torch.Tensor, keys=("dist_fg",), repeats: int = 5) -> float:
    """Milliseconds per image of ``distance_maps`` (what each data-loader worker adds per item)."""
    mask = y[0, 0].cpu().numpy() > 0.5
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        distance_maps(mask, keys)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def bench(device: str, b: int, size: int, repeats: int, cpu_clock: bool = False,
          only: set[str] | None = None, compile_: bool = False) -> dict:
    z, y = make_batch(b, size, device)
    z.requires_grad_(True)
    rows = candidates(z, y, only) + (compiled_rows(z, y, only) if compile_ else [])
    clock = time.process_time if cpu_clock and device == "cpu" else time.perf_counter
    stats = time_all(rows, z, repeats, device, clock=clock)
    (base_med, base_min), fg = stats[0], y.mean().item()
    clock_name = "process CPU time" if clock is time.process_time else "wall-clock time"
    agree, worker_ms = check_straightforward(z, y), loader_cost(y)
    print(f"\n### {device.upper()}: batch {b}x1x{size}x{size} (foreground {fg:.2%}), "
          f"{torch.get_num_threads()} threads, {repeats} interleaved rounds, {clock_name}")
    print(f"straightforward versions agree with the library to {agree:.1e} "
          f"(max rel diff); distance_maps(dist_fg) in a loader worker: {worker_ms:.1f} ms per image\n")
    print("| loss | distance maps / variant | median ms | x BCE (median) | x BCE (min) |")
    print("| --- | --- | ---: | ---: | ---: |")
    table = []
    for (label, variant, _), (t_med, t_min) in zip(rows, stats, strict=True):
        ratios = f"{t_med / base_med:.2f} | {t_min / base_min:.2f}"
        print(f"| {label} | {variant} | {t_med * 1e3:.2f} | {ratios} |")
        table.append({"loss": label, "variant": variant, "median_ms": t_med * 1e3, "min_ms": t_min * 1e3,
                      "x_bce_median": t_med / base_med, "x_bce_min": t_min / base_min})
    return {"device": device, "batch": [b, 1, size, size], "threads": torch.get_num_threads(),
            "rounds": repeats, "clock": clock_name, "foreground": fg, "straightforward_max_rel_diff": agree,
            "loader_ms_per_image_dist_fg": worker_ms, "rows": table}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2x1x128x128, 3 rounds")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads (CPU)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--cpu-clock", action="store_true",
                    help="CPU: time with the process CPU clock (with --threads 1 it ignores load from other "
                         "processes on a shared machine; wall-clock is the default)")
    ap.add_argument("--losses", default=None, help="comma-separated registry names to time (BCE always)")
    ap.add_argument("--json", default=None, help="also write the tables to this JSON file")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile'd BCE, boundary-gaussian and boundary-dou (meant for CUDA)")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.repeats = 2, 128, 3
    only = None
    if args.losses:
        only = {n.strip() for n in args.losses.split(",") if n.strip()}
        unknown = only - set(LOSSES)
        if unknown:
            ap.error(f"unknown loss(es) {sorted(unknown)}; choose from {', '.join(LOSSES)}")
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"# imbaseg loss benchmark - torch {torch.__version__}, {cpu}, {os.cpu_count()} CPUs")
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    results = []
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("\n(CUDA not available: GPU table not measured)")
            continue
        results.append(bench(device, args.batch, args.size, args.repeats, args.cpu_clock, only, args.compile))
    if args.json:
        meta = {"torch": torch.__version__, "cpu": cpu, "cpus": os.cpu_count(),
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
        Path(args.json).write_text(json.dumps({"meta": meta, "tables": results}, indent=1))


if __name__ == "__main__":
    main()
