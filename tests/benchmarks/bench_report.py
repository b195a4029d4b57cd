"""Speed of ``imbaseg study report`` at the loss study's size, on fake evaluated cells (no training).

    python tests/benchmarks/bench_report.py [--datasets 3] [--losses 8] [--seeds 3] [--images 200]
                                            [--boot 10000] [--metrics dice iou hd95 assd nsd] [--keep DIR]

The issue's budget: 3 datasets x 8 losses x 3 seeds x 200 images with 10,000 bootstrap replicates in under
30 s on 2 cores. Writes the cells through the test helper (tests/study/report_helpers.py: per_image.csv and
summary.json by evaluate's writer, status.json finished), then times ``write_report`` whole (reading the
cells, the statistics, the four rankings, the tables and the three figures) with a breakdown by stage.
--keep DIR: build the project there and keep it (to look at the figures).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "study"))

from report_helpers import fake_study, write_study  # noqa: E402

PAPER_LOSSES = (
    "dynamit-batch",
    "dynamit-image",
    "boundary-gaussian",
    "boundary-dou",
    "dice(batch=false)",
    "focal",
    "tversky",
    "bce",
)
DATASETS = ("synthetic-polyp", "synthetic-vessel", "synthetic-lesion", "cvc", "drive", "isic2018")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", type=int, default=3)
    p.add_argument("--losses", type=int, default=8)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--boot", type=int, default=10_000)
    p.add_argument("--metrics", nargs="+", default=["dice", "iou", "hd95", "assd", "nsd"])
    p.add_argument("--keep", type=Path, default=None)
    a = p.parse_args(argv)
    losses = (PAPER_LOSSES * 4)[: a.losses] if a.losses <= len(PAPER_LOSSES) else None
    if losses is None:
        p.error(f"--losses at most {len(PAPER_LOSSES)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = a.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        from imbaseg.study.spec import load_study

        t0 = time.perf_counter()
        path = write_study(
            root / "bench.yaml",
            DATASETS[: a.datasets],
            losses,
            tuple(range(1, a.seeds + 1)),
            name="bench",
            metrics=a.metrics,
        )
        study = load_study(path)
        fake_study(study, root, n=a.images)
        setup = time.perf_counter() - t0
        run(study, root, a, setup)
    return 0


def run(study, root: Path, a, setup: float) -> None:
    import scipy.stats  # noqa: F401  (imported outside the timing, as in any long-lived process)

    from imbaseg.study.report import write_report

    stages: dict[str, list[float]] = {}
    last = [time.perf_counter(), time.process_time()]

    def progress(stage, done, total):
        now = [time.perf_counter(), time.process_time()]
        acc = stages.setdefault(stage, [0.0, 0.0])
        acc[0], acc[1] = acc[0] + now[0] - last[0], acc[1] + now[1] - last[1]
        last[:] = now

    t0, c0 = time.perf_counter(), time.process_time()
    last[:] = [t0, c0]
    res = write_report(study, boot=a.boot, root=root, progress=progress)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    n_cells = a.datasets * a.losses * a.seeds
    print(
        f"{a.datasets} datasets x {a.losses} losses x {a.seeds} seeds x {a.images} images, {a.boot:,} "
        f"replicates, metrics {', '.join(a.metrics)}  (fake cells written in {setup:.1f} s)"
    )
    print("  stage            wall s   CPU s  (wall includes waiting on a busy machine)")
    for stage in ("reading cells", "statistics", "figures"):
        wall, used = stages.get(stage, [0.0, 0.0])
        print(f"  {stage:<14} {wall:8.2f} {used:7.2f}")
    print(f"  total write_report: {total:.2f} s wall, {cpu:.2f} s CPU ({n_cells} cells) -> {res.out_dir}")


if __name__ == "__main__":
    sys.exit(main())
