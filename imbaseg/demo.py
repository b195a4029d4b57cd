"""``make demo``: the whole study in miniature on the built-in synthetic polyps, on CPU.

It runs the same commands a user would type (printed before each step): prepare the data, train
two losses, evaluate each on the test split (saving its predictions), then render the weight-map
figure and the comparison figure, whose ``_comparison.csv``/``.md`` is the demo's one comparison table.
"""

from __future__ import annotations

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
    for run in runs:
        imbaseg("evaluate", str(run), "--split", "test")
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
    figure = figures / "DynamitBatch_vs_BoundaryGaussian.png"
    imbaseg("compare", *map(str, runs), "--split", "test", "--n", "2", "--out", str(figure))
    report(runs, figures, figure)
    print(f"  total time: {time.time() - start:.0f} s")


def report(runs: list[Path], figures: Path, figure: Path) -> None:
    """The demo's numbers, read back through the library's own readers (summary.json, comparison)."""
    from imbaseg.evaluation.comparison import compare_runs
    from imbaseg.evaluation.report import read_summary
    from imbaseg.training.run_dir import RunDir

    print("\n\033[1mDemo results (test split, synthetic-polyp)\033[0m")
    for run in runs:
        s = read_summary(RunDir(run).summary_json("test"))
        dice, f1, ece = (s["metrics"][m] for m in ("dice", "lesion_f1", "ece"))
        print(
            f"  {run.parent.name:<20} test Dice {dice['mean']:.3f} "
            f"(95% CI {dice['ci_low']:.3f}-{dice['ci_high']:.3f}, n={dice['n']}), "
            f"lesion F1 {f1['mean']:.3f}, ECE {ece['mean']:.4f}   {run}"
        )
    row = next(r for r in compare_runs(runs, "test", metrics=("dice",)).rows() if r["p_value"] is not None)
    print(
        f"  {row['label']} vs {row['reference']}: median Dice difference {row['median_diff']:+.3f} "
        f"(95% CI {row['diff_ci_low']:+.3f} to {row['diff_ci_high']:+.3f}), paired Wilcoxon p = "
        f"{row['p_value']:.2g}, r = {row['effect_r']:+.2f}"
    )
    print(f"  figures: {figures}/boundary_weights.png, {figure}")
    print(f"  comparison table: {figure.with_name(figure.stem + '_comparison.md')} (and .csv)")


if __name__ == "__main__":
    main()
