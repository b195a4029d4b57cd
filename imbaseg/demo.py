"""``make demo``: the whole study in miniature on the built-in synthetic polyps, on CPU.

It runs the same commands a user would type (printed before each step): prepare the data, train
two losses, evaluate both on the test split, and render the weight-map and comparison figures.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

LOSSES = ("dynamit-batch", "boundary-gaussian")  # the study's baseline and its boundary-aware loss


def imbaseg(*args: str) -> None:
    """Run ``imbaseg ARGS`` as a user would, echoing the command; stop the demo on failure."""
    print(f"\n\033[1m$ imbaseg {' '.join(shlex.quote(a) for a in args)}\033[0m", flush=True)
    done = subprocess.run([sys.executable, "-m", "imbaseg", *args])
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def main() -> None:
    start = time.time()
    stamp = time.strftime("demo-%Y%m%d-%H%M%S")
    config = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"
    if not config.is_file():
        raise SystemExit(f"configs/synthetic.yaml not found next to the package ({config})")
    os.environ.setdefault("MPLBACKEND", "Agg")
    imbaseg("prepare", "synthetic-polyp")
    runs = []
    for loss in LOSSES:
        imbaseg("train", "--config", str(config), "--loss", loss, "--name", stamp, "--no-progress")
        runs.append(Path("runs") / "synthetic-polyp" / loss / stamp)
    figures = Path("runs") / "demo-figures" / stamp
    imbaseg("evaluate", *map(str, runs), "--split", "test", "--out", str(figures))
    imbaseg(
        "visualize-weights",
        "--sigma",
        "1",
        "3",
        "6",
        "10",
        "--dataset",
        "synthetic-polyp",
        "--out",
        str(figures / "boundary_weights.png"),
    )
    imbaseg(
        "compare",
        *map(str, runs),
        "--split",
        "test",
        "--n",
        "2",
        "--out",
        str(figures / "DynamitBatch_vs_BoundaryGaussian.png"),
    )
    print("\n\033[1mDemo results (test split, synthetic-polyp)\033[0m")
    for run in runs:
        summary = json.loads((run / "eval" / "test" / "summary.json").read_text())
        dice = summary["metrics"]["dice"]
        print(
            f"  {run.parent.name:<20} test Dice {dice['mean']:.3f} "
            f"(95% CI {dice['ci_low']:.3f}-{dice['ci_high']:.3f}, n={dice['n']})   {run}"
        )
    print(f"  figures: {figures}/boundary_weights.png, {figures}/DynamitBatch_vs_BoundaryGaussian.png")
    print(f"  comparison table: {figures}/comparison.md")
    print(f"  total time: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
