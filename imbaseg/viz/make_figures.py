"""``python -m imbaseg.viz.make_figures``: regenerate the README's three figures.

Two profiles (``--profile``):
- ``budget`` (default): short CPU runs. Prepares CVC-ClinicDB, ISIC 2018 and DRIVE from
  ``../shared/data`` (the 20-pair CVC and ISIC samples, the full DRIVE) into a work root (default
  ``.figures-work/``); a dataset whose files are absent is replaced by its synthetic stand-in (polyp,
  lesion, vessel). Trains a small U-Net (16 base channels, AdamW, cosine schedule, reduced sizes).
- ``study``: the study's own settings, meant for a GPU: each dataset's preset (``configs/cvc.yaml``,
  ``drive.yaml``, ``isic.yaml``: U-Net base 64 at the study's size, SGD, plateau schedule, up to 400
  epochs with early stopping; ``--epochs`` caps them), on the full prepared dataset when
  ``<prepared-root>/data/prepared/<name>`` holds one, else on the same data as ``budget``.

Both then draw ``Figures/boundary_weights.png`` (``visualize_weights`` on the prepared images at native
size), train Dynamit batch-wise, Boundary Gaussian and the study's combined Boundary-DoU loss
(``boundary-dou``: Boundary Gaussian + lambda x DoU) on each dataset, evaluate the test split
(``evaluate_run``, which saves the predictions), and render ``Figures/Dynamit_vs_BoundaryGaussian.png``
and ``Figures/BoundaryGaussian_vs_BoundaryDoU.png`` with ``compare`` (each with its
``_comparison.csv/.md``).

A finished run with the same config is reused (``--fresh`` retrains). The budget (sizes, epochs,
seconds per run, test Dice) is printed at the end and returned by ``make_figures``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO / ".." / "shared" / "data"
SOURCES = {"cvc": "samples/CVC-ClinicDB", "isic2018": "samples/ISIC2018", "drive": "DRIVE"}
FALLBACK = {"cvc": "synthetic-polyp", "isic2018": "synthetic-lesion", "drive": "synthetic-vessel"}
SYNTHETIC_N = 60  # images per synthetic stand-in (42/9/9): enough to learn, small enough for the CPU budget
# training sizes [H, W]: CVC keeps its 3:4 frame; DRIVE at the study's 512 would need hours on a CPU
TRAIN_SIZE = {"cvc": [144, 192], "isic2018": [128, 128], "drive": [256, 256]}
SIGMA = {"cvc": 4.0, "isic2018": 2.0, "drive": 2.0}  # the study's presets (configs/*.yaml)
# boundary-dou is the study's combined loss (Boundary Gaussian + lambda x DoU), not the dou term alone
LOSSES = ("dynamit-batch", "boundary-gaussian", "boundary-dou")
SIGMA_LOSSES = ("boundary-gaussian", "boundary-dou")  # the losses that take the dataset's sigma
FIGURES = {
    "Dynamit_vs_BoundaryGaussian": ("dynamit-batch", "boundary-gaussian"),
    "BoundaryGaussian_vs_BoundaryDoU": ("boundary-gaussian", "boundary-dou"),
}
PROFILES = ("budget", "study")
STUDY_DATASETS = ("cvc", "isic2018", "drive")  # each has its preset in configs/ (config.PRESETS)
WEIGHT_SIGMAS = (1.0, 3.0, 6.0, 10.0)
DEFAULT_EPOCHS = 30
# DRIVE's 16 images at 256x256 cost ~3.5x a CVC epoch, and its validation Dice plateaus by epoch 20 of a
# 30-epoch cosine schedule: two thirds of the epochs keep the whole run near 15 minutes on 2 cores
EPOCH_FACTOR = {"drive": 2 / 3, "synthetic-vessel": 2 / 3}
QUICK_EPOCHS = 2
RUN_NAME = "figures"
STUDY_RUN_NAME = "figures-study"


@dataclass
class RunRecord:
    dataset: str
    loss: str
    run_dir: Path
    epochs: int
    train_s: float  # the epochs' wall time from history.csv (also for a reused run)
    reused: bool
    eval_s: float | None = None  # None: the saved evaluation was reused
    test_dice: float | None = None


@dataclass
class Budget:
    data: dict[str, str] = field(default_factory=dict)  # dataset -> where its files came from
    epochs: int | None = 0  # None: the presets' own (study profile)
    threads: int = 1
    profile: str = "budget"
    device: str = "cpu"
    runs: list[RunRecord] = field(default_factory=list)
    seconds: float = 0.0
    figures: list[Path] = field(default_factory=list)


def _prepare(name: str, work: Path, **kwargs) -> None:
    """prepare_dataset into our scratch root; a copy made with other options or inputs is rebuilt."""
    from imbaseg.data.prepare import prepare_dataset
    from imbaseg.errors import UserError
    from imbaseg.paths import prepared_dir

    try:
        prepare_dataset(name, root=work, **kwargs)
    except UserError:
        if not prepared_dir(name, work).exists():
            raise
        prepare_dataset(name, root=work, force=True, **kwargs)


def prepare_all(work: Path, shared: Path, quick: bool, only=None) -> dict[str, str]:
    """Prepare each dataset (or those in ``only``) into ``work``; returns {dataset name: its source}."""
    used = {}
    for name, rel in SOURCES.items():
        if only is not None and name not in only:
            continue
        src = shared / rel
        if src.is_dir():
            _prepare(name, work, source=src)
            used[name] = f"real: {src.resolve()}"
        else:
            synth = FALLBACK[name]
            _prepare(synth, work, n=SYNTHETIC_N // (2 if quick else 1))
            used[synth] = f"synthetic stand-in for {name} ({src} not found)"
    return used


def link_full_prepared(work: Path, prepared_root: Path, shared: Path, quick: bool) -> dict[str, str]:
    """The study profile's data: a dataset prepared in full under ``prepared_root`` is used from there,
    through a link in ``work`` (runs and caches stay in ``work``); the others are prepared from
    ``shared`` as the budget profile does. Returns {dataset name: description of its source}."""
    from imbaseg.paths import prepared_dir

    used, missing = {}, []
    for name in STUDY_DATASETS:
        full, target = prepared_dir(name, prepared_root), prepared_dir(name, work)
        if not (full / "manifest.csv").is_file():
            missing.append(name)
            continue
        if full.resolve() != target.resolve():
            if target.is_symlink():
                target.unlink()
            elif target.exists():  # a sample prepared here earlier: our own scratch copy
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(full.resolve(), target_is_directory=True)
        used[name] = f"full prepared: {full.resolve()}"
    if missing:
        used.update(prepare_all(work, shared, quick, only=missing))
    return used


def epochs_for(dataset: str, epochs: int) -> int:
    return max(1, round(epochs * EPOCH_FACTOR.get(dataset, 1.0)))


def loss_params(dataset: str, loss: str) -> dict:
    """The dataset's sigma (the study's presets) for the losses that take one, else nothing."""
    return {"sigma": SIGMA.get(dataset, 2.0)} if loss in SIGMA_LOSSES else {}


def study_config(dataset: str, loss: str, work: Path, epochs: int | None, device: str = "auto"):
    """The run of ``loss`` on ``dataset`` at the study's settings: the dataset's preset (model, size,
    optimiser, schedule, batch, epochs, early stopping, monitor), ``epochs`` capping its epochs."""
    from imbaseg.config import load_config, preset_for

    preset = preset_for(dataset)
    if preset is None:
        raise ValueError(f"dataset '{dataset}' has no study preset; the study profile has {STUDY_DATASETS}")
    overrides = [("name", STUDY_RUN_NAME), ("data.root", str(work)), ("loss.name", loss),
                 ("loss.terms", None), ("loss.params", loss_params(dataset, loss)), ("train.device", device)]
    if epochs is not None:
        overrides.append(("train.epochs", epochs))
    return load_config(preset, overrides)


def train_config(dataset: str, loss: str, work: Path, epochs: int):
    """The short CPU run of ``loss`` on ``dataset`` (``epochs`` before the per-dataset factor)."""
    from imbaseg.config import from_dict

    params = loss_params(dataset, loss)
    return from_dict(
        {
            "name": RUN_NAME,
            "seed": 42,
            "data": {"dataset": dataset, "root": str(work), "size": TRAIN_SIZE.get(dataset)},
            "model": {"name": "unet", "base_channels": 16},
            "loss": {"name": loss, "params": params},
            "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4},
            "sched": {"name": "cosine"},
            "train": {
                "epochs": epochs_for(dataset, epochs),
                "batch_size": 4,
                "early_stopping": 0,
                "monitor": "val_dice",
                "device": "cpu",
                "amp": False,
                "channels_last": False,
            },
        }
    )


def _finished(run_dir: Path, cfg) -> bool:
    """True when ``run_dir`` holds a completed run of exactly ``cfg``."""
    from imbaseg.errors import UserError
    from imbaseg.training.run_dir import RunDir, load_checkpoint

    folder = RunDir(run_dir)
    try:
        same = folder.config().to_dict() == cfg.to_dict()
        last = load_checkpoint(folder.checkpoint("last")) if same else None
    except UserError:
        return False
    return bool(last) and last["epoch"] >= cfg.train.epochs and not last.get("interrupted")


def train_one(dataset: str, loss: str, work: Path, epochs: int | None, fresh: bool, console,
              profile: str = "budget", device: str = "auto") -> RunRecord:
    from imbaseg.paths import runs_root, safe_name, slug
    from imbaseg.training.trainer import train

    if profile == "study":
        cfg = study_config(dataset, loss, work, epochs, device)
    else:
        cfg = train_config(dataset, loss, work, epochs)
    run_dir = runs_root(work) / safe_name(dataset) / slug(cfg.loss_label) / cfg.name
    reused = not fresh and _finished(run_dir, cfg)
    if not reused:
        shutil.rmtree(run_dir, ignore_errors=True)  # our own stale or partial run: start it over
        result = train(cfg)
        if Path(result.run_dir).resolve() != run_dir.resolve():
            raise RuntimeError(f"expected the run in {run_dir}, the trainer wrote {result.run_dir}")
    epochs_run, seconds = _history(run_dir)
    return RunRecord(dataset, loss, run_dir, epochs_run, seconds, reused)


def _history(run_dir: Path) -> tuple[int, float]:
    """(epochs run, their wall time) from history.csv: early stopping can end a study run early."""
    from imbaseg.training.history import read_history
    from imbaseg.training.run_dir import RunDir

    rows = read_history(RunDir(run_dir))
    return len(rows), sum(float(r.get("seconds") or 0.0) for r in rows)


def evaluate_one(rec: RunRecord, work: Path, device: str = "cpu") -> None:
    """Evaluate the run on its test split (saving the predictions that ``compare`` draws), unless a
    reused run already has that evaluation; records the time and the test Dice."""
    from imbaseg.evaluation.evaluate import evaluate_run
    from imbaseg.evaluation.report import read_summary
    from imbaseg.training.run_dir import RunDir

    rd = RunDir(rec.run_dir)
    if not (rec.reused and rd.evaluated("test")):
        t0 = time.perf_counter()
        evaluate_run(rec.run_dir, split="test", device=device, data_root=work)
        rec.eval_s = time.perf_counter() - t0
    rec.test_dice = read_summary(rd.summary_json("test"))["metrics"]["dice"]["mean"]


def default_threads() -> int:
    """All cores on an idle machine, 1 on a busy one: 2 threads on 2 shared cores run ~5x slower than 1."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] > 0.5 * cores
    except OSError:
        busy = False
    return 1 if busy else cores


def make_figures(
    work: str | Path | None = None,
    figures: str | Path = "Figures",
    epochs: int | None = None,
    quick: bool = False,
    fresh: bool = False,
    shared: str | Path = SHARED_DATA,
    threads: int | None = None,
    console=None,
    profile: str = "budget",
    device: str | None = None,
    prepared_root: str | Path = ".",
) -> Budget:
    """Prepare, train, evaluate and render the three figures into ``figures``. Returns the budget.

    profile: "budget" (short CPU runs) or "study" (the presets, on ``device``, default "auto"; a study
    run without a GPU needs ``device="cpu"`` said outright). epochs: None = the profile's default (the
    presets' own for "study"); quick: 2 epochs.
    """
    import torch

    from imbaseg.errors import UserError
    from imbaseg.viz.compare import compare
    from imbaseg.viz.weights import visualize_weights

    if profile not in PROFILES:
        raise UserError(f"unknown figures profile '{profile}'; choose {' or '.join(PROFILES)}.")
    study = profile == "study"
    device = device or ("auto" if study else "cpu")
    if study and device == "auto" and not torch.cuda.is_available():
        raise UserError("the study profile trains U-Net base 64 at the study's sizes for up to 400 epochs: "
                        "it needs a GPU and none was found; pass --device cpu to run it on the CPU anyway "
                        "(days), or use the default budget profile.")
    t_start = time.perf_counter()
    work = Path(work or (".figures-work/study" if study else ".figures-work")).resolve()
    figures = Path(figures)
    if quick:
        epochs = epochs or QUICK_EPOCHS
    budget = Budget(epochs=epochs if study else epochs or DEFAULT_EPOCHS,
                    threads=threads or default_threads(), profile=profile, device=device)
    torch.set_num_threads(budget.threads)
    if study:
        budget.data = link_full_prepared(work, Path(prepared_root), Path(shared), quick)
    else:
        budget.data = prepare_all(work, Path(shared), quick)
    names = list(budget.data)
    say = console.print if console is not None else print
    w = visualize_weights(WEIGHT_SIGMAS, names, out=figures / "boundary_weights.png", root=work)
    budget.figures.append(w["png"])
    say(f"wrote {w['png']}")
    runs: dict[tuple[str, str], RunRecord] = {}
    for name in names:
        for loss in LOSSES:
            shown = budget.epochs if study else epochs_for(name, budget.epochs)
            say(f"training {loss} on {name} ({shown or 'the preset'} epochs, {profile} profile)")
            rec = train_one(name, loss, work, budget.epochs, fresh, None, profile, device)
            evaluate_one(rec, work, device)
            runs[(name, loss)] = rec
            say(
                f"  {rec.run_dir}: {rec.train_s:.0f} s training{' (reused)' if rec.reused else ''}, "
                f"test Dice {rec.test_dice:.3f}"
            )
    budget.runs = list(runs.values())
    for stem, pair in FIGURES.items():
        dirs = [runs[(name, loss)].run_dir for name in names for loss in pair]
        c = compare(dirs, split="test", n=1, select="gap", out=figures / f"{stem}.png", root=work)
        budget.figures.append(c["png"])
        say(f"wrote {c['png']} ({', '.join(f'{d} #{i}' for d, i in c['rows'])})")
    budget.seconds = time.perf_counter() - t_start
    return budget


def size_text(dataset: str) -> str:
    size = TRAIN_SIZE.get(dataset)
    return f"{size[0]}x{size[1]}" if size else "native"


def budget_markdown(b: Budget) -> str:
    """The budget as a Markdown paragraph and table, for the README."""
    if b.profile == "study":
        cap = f"at most {b.epochs} epochs" if b.epochs else "the presets' epochs"
        training = (
            "Training: the study's presets (configs/cvc.yaml, isic.yaml, drive.yaml: U-Net base 64 at the "
            f"study's size, SGD, plateau schedule, early stopping), {cap}, on {b.device}, seed 42; "
            "test metrics at the prepared images' native size."
        )
    else:
        training = (
            "Training: U-Net with 16 base channels, AdamW (lr 1e-3, weight decay 1e-4), cosine schedule, "
            "batch 4, no early stopping, "
            f"CPU ({b.threads} thread(s)), seed 42, best validation Dice checkpoint; training sizes (H x W) "
            + ", ".join(f"{k} {size_text(k)}" for k in b.data)
            + "; test metrics at the prepared images' native size."
        )
    lines = [
        "Data: " + "; ".join(f"{k} ({v})" for k, v in b.data.items()) + ".",
        "",
        training,
        "",
        "| dataset | loss | epochs | training (s) | test evaluation (s) | test Dice |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in b.runs:
        dice = "-" if r.test_dice is None else f"{r.test_dice:.3f}"
        ev = "reused" if r.eval_s is None else f"{r.eval_s:.0f}"
        lines.append(f"| {r.dataset} | {r.loss} | {r.epochs} | {r.train_s:.0f} | {ev} | {dice} |")
    lines += ["", f"Total wall time: {b.seconds / 60:.1f} min."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from imbaseg.errors import UserError

    p = argparse.ArgumentParser(
        prog="python -m imbaseg.viz.make_figures", description=__doc__.splitlines()[0]
    )
    p.add_argument("--profile", choices=PROFILES, default="budget",
                   help="budget: short CPU runs (default); study: the study's presets, on a GPU")
    p.add_argument("--root", default=None,
                   help="work root for data and runs (default .figures-work; study: .figures-work/study)")
    p.add_argument("--figures", default="Figures", help="where the figures go (default: Figures/)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per run (budget default {DEFAULT_EPOCHS}; study: caps the presets' 400)")
    p.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK_EPOCHS} epochs")
    p.add_argument("--fresh", action="store_true", help="retrain even when a finished run exists")
    p.add_argument("--data", default=str(SHARED_DATA), help="the shared real data folder")
    p.add_argument("--prepared-root", default=".",
                   help="study: a project root whose data/prepared/<name> holds full datasets (default .)")
    p.add_argument("--device", default=None, help="budget: cpu (default); study: auto (default), cuda, cpu")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: 1 on a busy machine)"
    )
    a = p.parse_args(argv)
    if a.epochs is not None and a.epochs < 1:
        p.error("--epochs must be at least 1")
    try:
        b = make_figures(a.root, a.figures, a.epochs, a.quick, a.fresh, a.data, a.threads, None, a.profile,
                         a.device, a.prepared_root)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(budget_markdown(b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
