"""imbaseg export at the study's width: export time, agreement with predict on the run folder, and speed.

    python tests/benchmarks/bench_export.py            # U-Net base 64, CVC preset (288x384) and native size
    python tests/benchmarks/bench_export.py --quick    # base 8, one round (a smoke run)
    python tests/benchmarks/bench_export.py --device cuda   # on the GPU: TorchScript, and onnxruntime with
                                                            # its CUDA provider when installed (else CPU)

A run folder is made with fresh (seeded) weights: agreement and speed do not depend on training, and
untrained probabilities sit near 0.5, the hardest case for "identical masks". For each plan (resized to
288x384 as the CVC preset trains, and native size), on real images (DRIVE 584x565, a CVC frame 288x384,
a 333x517 crop of DRIVE; noise when ../shared/data is absent): the largest |p - p_ref| of each export
against ``Predictor.probs`` on the run folder, the mask pixels that differ at threshold 0.5 (and how far
the furthest of them is from it), and the median seconds per image over interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"


def images() -> dict[str, np.ndarray]:
    from imbaseg.data.io import read_image

    drive, cvc = DATA / "DRIVE" / "test" / "images" / "01_test.tif", DATA / "samples" / "CVC-ClinicDB" / \
        "Original" / "1.tif"
    if drive.is_file() and cvc.is_file():
        fundus = read_image(drive)
        return {"DRIVE 584x565": fundus, "CVC 288x384": read_image(cvc),
                "crop 333x517": fundus[100:433, 20:537]}
    rng = np.random.default_rng(0)
    return {f"noise {h}x{w}": rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for h, w in [(584, 565), (288, 384), (333, 517)]}


def has_onnx() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def load(path, fmt: str, device: str):
    """The exported model on ``device``; onnxruntime without its CUDA provider falls back to the CPU."""
    from imbaseg.errors import UserError
    from imbaseg.evaluation.export import ExportedModel

    if fmt == "torchscript":
        return ExportedModel(path, device), f"torch {device}"
    try:
        return ExportedModel(path, device), f"onnxruntime {device}"
    except UserError as exc:
        print(f"# onnxruntime on {device}: {exc}; timed on the CPU instead")
        return ExportedModel(path, "cpu"), "onnxruntime cpu"


def make_run(folder: Path, base: int, size) -> tuple[Path, object, torch.nn.Module]:
    from imbaseg.config import from_dict, save_config
    from imbaseg.training.run_dir import build_model, save_checkpoint

    cfg = from_dict({"data": {"dataset": "cvc", "size": size}, "model": {"base_channels": base},
                     "loss": {"name": "boundary-gaussian", "params": {"sigma": 4}},
                     "train": {"device": "cpu"}})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save_config(cfg, folder / "config.yaml")
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1},
                    folder / "checkpoints" / "best.pt")
    return folder, cfg, model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    from imbaseg.data.dataset import to_channels
    from imbaseg.evaluation.export import export_run
    from imbaseg.evaluation.inference import Predictor, plan_for

    base, rounds = (8, 1) if args.quick else (64, args.rounds)
    dev = torch.device(args.device)
    imgs = images()
    print(f"U-Net base {base}, {torch.get_num_threads()} threads, device {dev}, torch {torch.__version__}")
    print("| plan | path | export s | largest abs(p - p_ref) | mask pixels differing (furthest from 0.5) "
          "| s/image (" + ", ".join(imgs) + ") |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for plan_name, size in (("resized 288x384", [288, 384]), ("native", None)):
            run, cfg, model = make_run(Path(tmp) / plan_name.split()[0], base, size)
            predictor = Predictor(model, plan_for(cfg), device=dev)
            refs = {k: predictor.probs(to_channels(v, 3)) for k, v in imgs.items()}
            paths = {f"predict (run folder, {dev.type})": lambda a, pr=predictor: pr.probs(a)}
            rows = {}
            for fmt, suffix in (("torchscript", ".pt"), ("onnx", ".onnx")):
                if fmt == "onnx" and not has_onnx():
                    print(f"# onnx: onnx or onnxruntime is not installed here; {plan_name} has no onnx row")
                    continue
                t0 = time.perf_counter()
                info = export_run(run, fmt, out=run / f"m{suffix}", probabilities=True)
                rows[fmt] = time.perf_counter() - t0
                model_file, where = load(info["file"], fmt, args.device)
                paths[f"{fmt} ({where})"] = lambda a, m=model_file: m.run(a[None])[0]
            times: dict[str, dict[str, list]] = {k: {n: [] for n in imgs} for k in paths}
            worst, differ, far = {}, {}, {}
            for _ in range(rounds):
                for path, fn in paths.items():
                    for name, image in imgs.items():
                        if dev.type == "cuda":
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        got = fn(image)
                        if dev.type == "cuda":
                            torch.cuda.synchronize()
                        times[path][name].append(time.perf_counter() - t0)
                        off = (got >= 0.5) != (refs[name] >= 0.5)
                        worst[path] = max(worst.get(path, 0.0), float(np.abs(got - refs[name]).max()))
                        differ[path] = differ.get(path, 0) + int(off.sum())
                        if off.any():
                            far[path] = max(far.get(path, 0.0), float(np.abs(refs[name][off] - 0.5).max()))
            for path in paths:
                fmt = path.split()[0]
                med = ", ".join(f"{statistics.median(times[path][n]):.3f}" for n in imgs)
                d = differ[path] // rounds
                print(f"| {plan_name} | {path} | {rows.get(fmt, 0):.1f} | {worst[path]:.1e} | {d}"
                      + (f" ({far[path]:.1e})" if d else "") + f" | {med} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
