"""``evaluate_run``: a run folder -> per-image metrics, split AUCs and summaries in ``eval/<split>/``.

Resolution (the decision, recorded in summary.json as ``resolution``): the model predicts at its training
scale (the input resized to ``data.size`` when the run trained on resized images, sliding windows of
``data.patch_size`` when it trained on patches; see ``imbaseg.evaluation.inference``), the probabilities
are resized back (bilinear) to the prepared image's native size, and every metric is computed there,
against the native mask and inside the field of view where the dataset has one (DRIVE). ``size="native"``
feeds native pixels instead (sliding windows of the training size: full-resolution DRIVE).

Outputs (written into a temp folder that replaces ``eval/<split>/`` only when complete): ``per_image.csv``,
``summary.json``, ``summary.md``, ``predictions/<id>.png`` (0/255, zero outside the FOV) and, when asked,
``probabilities/<id>.npy`` (float16, native size).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imbaseg.errors import UserError
from imbaseg.metrics import EMPTY_CASES, METRIC_NAMES, auc_pr, auc_roc, compute_metrics, empty_case, summarize
from imbaseg.metrics.overlap import overlap_from_counts

THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95: the auto-threshold search
AUC_MAX_PIXELS = 40_000_000  # pixels pooled for the split AUCs (~0.3 GB); beyond, a seeded uniform sample
RESOLUTION = (
    "metrics at the prepared images' native size: probabilities resized back (bilinear) from the "
    "model's input scale, thresholded, compared with the native mask inside the FOV"
)
PER_IMAGE_COLUMNS = ("id", "height", "width", "fg_fraction", "empty_case", *METRIC_NAMES)


# ----------------------------------------------------------------------------- the data of a run


@dataclass
class SplitData:
    prepared: Path
    split: str
    ids: list[str]
    has_fov: bool
    in_channels: int
    pixels: int  # sum of height * width over the split (from the manifest)

    def item(self, item_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """uint8 image (H, W, C), bool mask (H, W), bool FOV (H, W) or None, at the native size."""
        from imbaseg.data.dataset import decode_item

        planes = decode_item(self.prepared, item_id, self.in_channels, self.has_fov)
        c = self.in_channels
        fov = planes[..., c + 1] > 0 if self.has_fov else None
        return np.ascontiguousarray(planes[..., :c]), planes[..., c] > 0, fov


def prepared_name(dataset: str) -> str:
    """The folder name ``imbaseg prepare`` uses for ``dataset`` (aliases resolved: isic -> isic2018)."""
    from imbaseg.data.sources import ALIASES
    from imbaseg.paths import safe_name

    return safe_name(ALIASES.get(str(dataset).lower(), str(dataset)))


def _root_candidates(cfg, run_dir: Path, data_root) -> list[Path]:
    from imbaseg.paths import prepared_dir

    name = prepared_name(cfg.data.dataset)
    if data_root is not None:
        r = Path(data_root).expanduser()
        # the project root, its data/ folder, data/prepared/, or the dataset folder itself
        return [prepared_dir(name, r), r / "prepared" / name, r / name] + ([r] if r.name == name else [])
    found = [prepared_dir(name, cfg.data.root)]
    parents = run_dir.resolve().parents
    if len(parents) >= 4:  # runs/<dataset>/<loss>/<name>: the project root is 4 levels up
        found.append(prepared_dir(name, parents[3]))
    found.append(prepared_dir(name, None))
    return found


def locate_prepared(cfg, run_dir: str | os.PathLike, data_root=None) -> Path:
    """The run's prepared dataset: --data-root if given, else the config's data.root, the project the run
    folder sits in, then $IMBASEG_HOME/cwd. UserError saying where it was expected when none has it."""
    candidates = _root_candidates(cfg, Path(run_dir), data_root)
    for c in candidates:
        if (c / "manifest.csv").is_file():
            return c
    name = prepared_name(cfg.data.dataset)
    hint = (
        f"--data-root {data_root} holds no data/prepared/{name}"
        if data_root is not None
        else f"the run's config has data.root={cfg.data.root!r}"
    )
    raise UserError(
        f"prepared dataset '{name}' not found: expected {candidates[0]} ({hint}). If it moved, pass "
        f"--data-root PATH (the folder holding data/prepared/{name}); "
        f"if it is gone, run imbaseg prepare {name}."
    )


def split_data(prepared: Path, split: str, in_channels: int) -> SplitData:
    """ids, FOV flag and pixels of ``split``; UserError listing the available splits if it is absent."""
    from imbaseg.data.dataset import SegDataset
    from imbaseg.data.manifest import read_manifest
    from imbaseg.data.splits import SPLITS

    rows = read_manifest(prepared).to_dict("records")
    available = [s for s in SPLITS if s in {r["split"] for r in rows}]
    if split not in available:
        from imbaseg.errors import suggestion

        raise UserError(
            f"split '{split}' does not exist in {prepared / 'manifest.csv'}.{suggestion(split, available)} "
            f"Available splits: {', '.join(available) or 'none'}; pass one with --split."
        )
    ds = SegDataset(prepared, split, in_channels=in_channels, cache=False)
    pixels = sum(_pixels(r) for r in rows if r["split"] == split)
    return SplitData(prepared, split, list(ds.ids), bool(ds.has_fov), in_channels, pixels)


def _pixels(row: dict) -> int:
    """height * width of a manifest row; 0 when the columns are missing (only the AUC sampling uses it)."""
    try:
        return int(row["height"]) * int(row["width"])
    except (KeyError, TypeError, ValueError):
        return 0


# ----------------------------------------------------------------------------- threshold search


def threshold_counts(probs: np.ndarray, mask: np.ndarray, valid, grid=THRESHOLD_GRID) -> np.ndarray:
    """(len(grid), 4) confusion counts (TP, FP, FN, TN) of ``probs >= t`` for each t, inside ``valid``."""
    p = probs if valid is None else probs[valid]
    y = mask if valid is None else mask[valid]
    pos, neg = np.sort(p[y].ravel()), np.sort(p[~y].ravel())
    t = np.asarray(grid, dtype=p.dtype)
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    return np.stack([tp, fp, pos.size - tp, neg.size - fp], axis=1).astype(np.int64)


def best_threshold(counts: list[np.ndarray], grid=THRESHOLD_GRID) -> tuple[float, list[float]]:
    """The grid value with the highest mean per-image Dice (ties: the one nearest 0.5), and the Dice curve.

    Mean per-image Dice (empty-mask rules included) is what the summary reports, so it is what we optimise.
    """
    curve = [
        float(np.mean([overlap_from_counts(*map(int, c[k]))["dice"] for c in counts]))
        for k in range(len(grid))
    ]
    best = max(range(len(grid)), key=lambda k: (round(curve[k], 12), -abs(grid[k] - 0.5)))
    return float(grid[best]), curve


def auto_threshold(predictor, data: SplitData, progress=None) -> tuple[float, dict]:
    counts = []
    for item_id in data.ids:
        image, mask, fov = data.item(item_id)
        counts.append(threshold_counts(predictor.probs(image), mask, fov))
        if progress:
            progress()
    thr, curve = best_threshold(counts)
    info = {
        "split": data.split,
        "criterion": "mean per-image dice",
        "grid": list(THRESHOLD_GRID),
        "dice": [round(v, 6) for v in curve],
        "best_dice": round(max(curve), 6),
    }
    return thr, info


def parse_threshold(value) -> float | str:
    """The string 'auto' or a float in (0, 1); UserError otherwise."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise UserError(f"bad --threshold '{value}': give a number between 0 and 1, or auto") from None
    if not 0.0 < t < 1.0:
        raise UserError(f"bad --threshold {t}: it must lie strictly between 0 and 1 (or be auto)")
    return t


# ----------------------------------------------------------------------------- one split


class _AucPool:
    """Valid-pixel probabilities and labels of a split, sampled uniformly (seeded) beyond AUC_MAX_PIXELS."""

    def __init__(self, total_pixels: int, cap: int = AUC_MAX_PIXELS, seed: int = 0):
        self.fraction = min(1.0, cap / max(1, total_pixels))
        self.seed, self.probs, self.labels = seed, [], []

    def add(self, index: int, probs: np.ndarray, mask: np.ndarray, valid) -> None:
        p, y = (probs, mask) if valid is None else (probs[valid], mask[valid])
        p, y = p.ravel(), y.ravel()
        if self.fraction < 1.0:
            keep = np.random.default_rng([self.seed, index]).random(p.size) < self.fraction
            p, y = p[keep], y[keep]
        self.probs.append(p.astype(np.float32))
        self.labels.append(y)

    def aucs(self) -> dict:
        p, y = np.concatenate(self.probs), np.concatenate(self.labels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined AUCs (no positive pixel) come back as NaN -> null
            roc, pr = auc_roc(p, y), auc_pr(p, y)
        return {
            "auc_roc": _finite(roc),
            "auc_pr": _finite(pr),
            "auc_pixels": int(p.size),
            "auc_subsampled": self.fraction < 1.0,
        }


def _list(pair) -> list[int] | None:
    return None if pair is None else [int(v) for v in pair]


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def evaluate_split(
    predictor,
    data: SplitData,
    out: Path,
    threshold: float,
    hd_convention: str,
    nsd_tau: float,
    save_probabilities: bool,
    progress=None,
) -> tuple[list[dict], dict]:
    """Predict, threshold, measure and save every image of ``data`` into ``out``; (rows, auc dict)."""
    from imbaseg.data.io import write_png

    (out / "predictions").mkdir(parents=True)
    if save_probabilities:
        (out / "probabilities").mkdir()
    pool, rows = _AucPool(data.pixels), []
    for index, item_id in enumerate(data.ids):
        image, mask, fov = data.item(item_id)
        probs = predictor.probs(image)
        pred = probs >= threshold
        if fov is not None:
            pred &= fov
        row = {
            "id": item_id,
            "height": mask.shape[0],
            "width": mask.shape[1],
            "fg_fraction": float(mask.mean()),
            "empty_case": empty_case(pred, mask, fov),
        }
        row.update(compute_metrics(pred, mask, fov, hd_convention=hd_convention, nsd_tau=nsd_tau))
        rows.append(row)
        write_png(out / "predictions" / f"{item_id}.png", pred)
        if save_probabilities:
            np.save(out / "probabilities" / f"{item_id}.npy", probs.astype(np.float16))
        pool.add(index, probs, mask, fov)
        if progress:
            progress()
    return rows, pool.aucs()


# ----------------------------------------------------------------------------- writing


def _fmt(v) -> str:
    return format(v, ".10g") if isinstance(v, float) else str(v)


def per_image_csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PER_IMAGE_COLUMNS)
    for r in rows:
        w.writerow([_fmt(r[c]) for c in PER_IMAGE_COLUMNS])
    return buf.getvalue()


def aggregate(rows: list[dict]) -> dict[str, dict]:
    """summarize() of each metric over the rows (mean, std, median, bootstrap 95% CI, n)."""
    return {m: summarize([r[m] for r in rows]) for m in METRIC_NAMES}


def _mean_ci(a: dict) -> str:
    return f"{a['mean']:.4f} [{a['ci_low']:.4f}, {a['ci_high']:.4f}]"


def _num(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def summary_markdown(s: dict) -> str:
    lines = [
        f"# Evaluation of {s['run_dir']} on {s['split']}",
        "",
        f"- dataset: {s['dataset']}, loss: {s['loss']}, model: {s['model']}, images: {s['n_images']}",
        f"- checkpoint: {s['checkpoint']['which']} (epoch {s['checkpoint']['epoch']})",
        f"- threshold: {s['threshold']} ({s['threshold_mode']}), TTA: {s['tta']}, "
        f"HD convention: {s['hd_convention']}, NSD tau: {s['nsd_tau']} px",
        f"- inference: {s['inference']['plan']} on {s['inference']['device']} (AMP {s['inference']['amp']})",
        f"- {s['resolution']}; field of view: {'yes' if s['fov'] else 'none'}",
        f"- auc_roc: {_num(s['auc_roc'])}, auc_pr: {_num(s['auc_pr'])} (pooled over {s['auc_pixels']} valid "
        f"pixels{', sampled' if s['auc_subsampled'] else ''})",
        "- empty-mask cases: " + ", ".join(f"{k} {v}" for k, v in s["empty_cases"].items()),
        "",
        "| metric | mean | 95% CI | std | median | n |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m, a in s["metrics"].items():
        lines.append(
            f"| {m} | {a['mean']:.4f} | [{a['ci_low']:.4f}, {a['ci_high']:.4f}] | {a['std']:.4f} "
            f"| {a['median']:.4f} | {a['n']} |"
        )
    return "\n".join(lines) + "\n"


def swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the complete ``tmp`` folder to ``target``, replacing a previous one only now."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def summary_table(s: dict, title: str | None = None):
    """A rich Table: mean and 95% CI per metric, plus the split AUCs."""
    from rich.table import Table

    t = Table(
        title=title or f"{s['run_dir']} - {s['split']} ({s['n_images']} images, threshold {s['threshold']})"
    )
    for col in ("metric", "mean", "95% CI", "median"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for m, a in s["metrics"].items():
        t.add_row(m, f"{a['mean']:.4f}", f"[{a['ci_low']:.4f}, {a['ci_high']:.4f}]", f"{a['median']:.4f}")
    t.add_row("auc_roc", _num(s["auc_roc"]), "", "")
    t.add_row("auc_pr", _num(s["auc_pr"]), "", "")
    return t


# ----------------------------------------------------------------------------- evaluate_run


@dataclass
class _Options:
    split: str
    checkpoint: str
    threshold: float | str
    tta: bool
    save_probabilities: bool
    hd_convention: str
    nsd_tau: float
    size: str


def _progress(console, total: int, label: str):
    """(context manager, advance callable) of a transient rich progress bar; no-ops without a console."""
    import contextlib

    if console is None:
        return contextlib.nullcontext(), None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = prog.add_task(label, total=total)
    return prog, lambda: prog.advance(task)


def _predict_pass(console, label: str, data: SplitData, fn):
    bar, advance = _progress(console, len(data.ids), label)
    with bar:
        return fn(advance)


def _summary(run, data: SplitData, opts: _Options, threshold, search, predictor, rows, aucs) -> dict:
    import imbaseg

    cfg, ckpt = run.config, run.checkpoint
    cases = Counter(r["empty_case"] for r in rows)
    plan = predictor.plan
    return {
        "run_dir": str(run.run_dir),
        "dataset": cfg.data.dataset,
        "loss": cfg.loss_label,
        "model": cfg.model.name,
        "split": data.split,
        "n_images": len(rows),
        "prepared_dir": str(data.prepared),
        "checkpoint": {
            "which": opts.checkpoint,
            "file": str(run.checkpoint_file),
            "epoch": ckpt.get("epoch"),
        },
        "threshold": threshold,
        "threshold_mode": "auto" if search else "fixed",
        "threshold_search": search,
        "tta": opts.tta,
        "hd_convention": opts.hd_convention,
        "nsd_tau": opts.nsd_tau,
        "fov": data.has_fov,
        "resolution": RESOLUTION
        if opts.size == "train"
        else RESOLUTION.replace("model's input scale", "native input"),
        "inference": {
            "size": opts.size,
            "plan": plan.describe(),
            "resize_to": _list(plan.resize_to),
            "window": _list(plan.window),
            "overlap": plan.overlap,
            "normalize": plan.normalize,
            "device": str(predictor.device),
            "amp": predictor.amp,
        },
        "empty_cases": {c: int(cases.get(c, 0)) for c in EMPTY_CASES},
        **aucs,
        "metrics": aggregate(rows),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "imbaseg_version": imbaseg.__version__,
    }


def _write_outputs(tmp: Path, rows: list[dict], summary: dict) -> None:
    from imbaseg.paths import atomic_write_text

    atomic_write_text(tmp / "per_image.csv", per_image_csv(rows))
    atomic_write_text(tmp / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(tmp / "summary.md", summary_markdown(summary))


def _check_options(opts: _Options) -> None:
    from imbaseg.metrics import HD_CONVENTIONS
    from imbaseg.training.run_dir import CHECKPOINTS

    if opts.hd_convention not in HD_CONVENTIONS:
        raise UserError(
            f"unknown --hd-convention '{opts.hd_convention}': choose {' or '.join(HD_CONVENTIONS)}"
        )
    if not (isinstance(opts.nsd_tau, (int, float)) and opts.nsd_tau > 0):
        raise UserError(f"--nsd-tau must be a positive number of pixels, got {opts.nsd_tau}")
    if opts.checkpoint not in CHECKPOINTS:
        raise UserError(f"unknown --checkpoint '{opts.checkpoint}': choose best or last")


def evaluate_run(
    run_dir,
    split: str = "test",
    checkpoint: str = "best",
    threshold: float | str = 0.5,
    tta: bool = False,
    save_probabilities: bool = False,
    hd_convention: str = "max",
    nsd_tau: float = 2.0,
    device: str = "auto",
    data_root=None,
    size: str = "train",
    amp: bool = False,
    batch_size: int | None = None,
    console=None,
) -> dict:
    """Evaluate one run folder on ``split``; writes RUN_DIR/eval/<split>/ and returns the summary dict
    (plus ``eval_dir``). threshold: a probability or "auto" (Dice-optimal on the val split, see
    ``best_threshold``). amp: bf16/fp16 autocast on CUDA (off by default: fp32 probabilities are
    reproducible, AMP is opt-in). See the module doc for the outputs."""
    from imbaseg.evaluation.inference import Predictor, plan_for
    from imbaseg.training.device import resolve_device
    from imbaseg.training.run_dir import load_run

    opts = _Options(
        split,
        checkpoint,
        parse_threshold(threshold),
        tta,
        save_probabilities,
        hd_convention,
        float(nsd_tau),
        size,
    )
    _check_options(opts)
    dev = resolve_device(device)
    run = load_run(run_dir, checkpoint, dev)
    cfg = run.config
    prepared = locate_prepared(cfg, run.run_dir, data_root)
    data = split_data(prepared, split, cfg.data.in_channels)
    plan = plan_for(cfg, size, batch_size=batch_size or (8 if dev.type == "cuda" else 2))
    predictor = Predictor(run.model, plan, tta=tta, amp=amp, device=dev)
    search = None
    if opts.threshold == "auto":
        val = _val_split(prepared, cfg.data.in_channels)
        thr, search = _predict_pass(
            console, "threshold search (val)", val, lambda adv: auto_threshold(predictor, val, adv)
        )
        if split == "val":
            search["note"] = "tuned on the evaluated split itself: the val numbers are optimistic"
    else:
        thr = opts.threshold
    return _run_split(run, data, opts, thr, search, predictor, console)


def _val_split(prepared: Path, in_channels: int) -> SplitData:
    try:
        return split_data(prepared, "val", in_channels)
    except UserError as exc:
        raise UserError(
            f"--threshold auto needs a val split: {exc} Or pass a number, e.g. --threshold 0.5."
        ) from exc


def _run_split(run, data: SplitData, opts: _Options, thr: float, search, predictor, console) -> dict:
    from imbaseg.data.prepared import remove_stale_temps

    target = Path(run.run_dir) / "eval" / data.split
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)  # temp folders of killed evaluations (their process is gone)
    tmp = target.with_name(f".{data.split}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        rows, aucs = _predict_pass(
            console,
            f"evaluating {data.split}",
            data,
            lambda adv: evaluate_split(
                predictor, data, tmp, thr, opts.hd_convention, opts.nsd_tau, opts.save_probabilities, adv
            ),
        )
        summary = _summary(run, data, opts, thr, search, predictor, rows, aucs)
        _write_outputs(tmp, rows, summary)
        swap_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if console is not None:
        console.print(summary_table(summary))
        console.print(f"wrote {target}")
    return {**summary, "eval_dir": str(target)}


# ----------------------------------------------------------------------------- several runs


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Short unique names: each run folder relative to the common parent (``<dataset>/<loss>/<name>``)."""
    paths = [Path(p).resolve() for p in run_dirs]
    try:
        common = Path(os.path.commonpath(paths))
    except ValueError:  # different drives
        return [str(p) for p in paths]
    labels = [str(p.relative_to(common)) if p != common else p.name for p in paths]
    return [lab or p.name for lab, p in zip(labels, paths, strict=True)]


def read_per_image(eval_dir: Path) -> dict[str, dict[str, float]]:
    """per_image.csv as {id: {metric: value}}."""
    import csv

    with open(Path(eval_dir) / "per_image.csv", newline="", encoding="utf-8") as f:
        return {r["id"]: {m: float(r[m]) for m in METRIC_NAMES} for r in csv.DictReader(f)}


def pairwise_tests(summaries: list[dict], labels: list[str], metric: str = "dice") -> list[dict]:
    """Paired Wilcoxon p-value of ``metric`` between each pair of runs, on their common image ids.

    Runs on different datasets or splits share no images: their p-value is None.
    """
    from imbaseg.metrics import paired_wilcoxon

    values = [read_per_image(Path(s["eval_dir"])) for s in summaries]
    out = []
    for i in range(len(summaries)):
        for j in range(i + 1, len(summaries)):
            same = all(summaries[i][k] == summaries[j][k] for k in ("dataset", "split"))
            common = sorted(set(values[i]) & set(values[j])) if same else []
            a = np.array([values[i][k][metric] for k in common])
            b = np.array([values[j][k][metric] for k in common])
            p = paired_wilcoxon(a, b) if len(common) else None
            out.append(
                {
                    "run_a": labels[i],
                    "run_b": labels[j],
                    "metric": metric,
                    "n_common": len(common),
                    "mean_a": float(a.mean()) if len(common) else None,
                    "mean_b": float(b.mean()) if len(common) else None,
                    "p_value": p,
                }
            )
    return out


def comparison_csv(summaries: list[dict], labels: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["run", "run_dir", "dataset", "loss", "split", "checkpoint", "threshold", "tta", "n"]
    w.writerow(
        head
        + [f"{m}_{k}" for m in METRIC_NAMES for k in ("mean", "ci_low", "ci_high")]
        + ["auc_roc", "auc_pr"]
    )
    for s, lab in zip(summaries, labels, strict=True):
        row = [
            lab,
            s["run_dir"],
            s["dataset"],
            s["loss"],
            s["split"],
            s["checkpoint"]["which"],
            s["threshold"],
            s["tta"],
            s["n_images"],
        ]
        row += [_fmt(s["metrics"][m][k]) for m in METRIC_NAMES for k in ("mean", "ci_low", "ci_high")]
        w.writerow(row + ["" if s[k] is None else _fmt(s[k]) for k in ("auc_roc", "auc_pr")])
    return buf.getvalue()


def comparison_markdown(summaries: list[dict], labels: list[str], tests: list[dict]) -> str:
    lines = [
        "# Comparison",
        "",
        "Mean [95% bootstrap CI] per image; p: paired Wilcoxon signed-rank on per-image "
        f"{tests[0]['metric'] if tests else 'dice'} over the common images.",
        "",
        "| run | split | n | " + " | ".join(METRIC_NAMES) + " | auc_roc | auc_pr |",
        "| --- " * (5 + len(METRIC_NAMES)) + "|",
    ]
    for s, lab in zip(summaries, labels, strict=True):
        cells = [_mean_ci(s["metrics"][m]) for m in METRIC_NAMES]
        lines.append(
            f"| {lab} | {s['split']} | {s['n_images']} | "
            + " | ".join(cells)
            + f" | {_num(s['auc_roc'])} | {_num(s['auc_pr'])} |"
        )
    lines += [
        "",
        "| run A | run B | common images | mean A | mean B | p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in tests:
        lines.append(
            f"| {t['run_a']} | {t['run_b']} | {t['n_common']} | {_num(t['mean_a'])} | {_num(t['mean_b'])} "
            f"| {'n/a' if t['p_value'] is None else format(t['p_value'], '.3g')} |"
        )
    return "\n".join(lines) + "\n"


def compare_summaries(summaries: list[dict], out_dir, console=None) -> dict:
    """Write comparison.csv and comparison.md into ``out_dir`` (and print with a console)."""
    from imbaseg.paths import atomic_write_text

    out_dir = Path(out_dir)
    labels = run_labels([Path(s["run_dir"]) for s in summaries])
    tests = pairwise_tests(summaries, labels)
    atomic_write_text(out_dir / "comparison.csv", comparison_csv(summaries, labels))
    atomic_write_text(out_dir / "comparison.md", comparison_markdown(summaries, labels, tests))
    if console is not None:
        console.print(comparison_table(summaries, labels, tests))
        console.print(f"wrote {out_dir / 'comparison.csv'} and comparison.md")
    return {"out_dir": str(out_dir), "labels": labels, "tests": tests}


def comparison_table(summaries: list[dict], labels: list[str], tests: list[dict]):
    from rich.table import Table

    t = Table(title="comparison: dice mean [95% CI], paired Wilcoxon p vs the first run")
    for col in ("run", "n", "dice", "hd95", "cldice", "p (dice)"):
        t.add_column(col, justify="left" if col == "run" else "right")
    p_first = {x["run_b"]: x["p_value"] for x in tests if x["run_a"] == labels[0]}
    for s, lab in zip(summaries, labels, strict=True):
        cells = [_mean_ci(s["metrics"][m]) for m in ("dice", "hd95", "cldice")]
        p = p_first.get(lab)
        t.add_row(lab, str(s["n_images"]), *cells, "-" if p is None else f"{p:.3g}")
    return t


def default_comparison_dir() -> Path:
    """``runs/comparison-<timestamp>`` under the project root ($IMBASEG_HOME or the current directory)."""
    from imbaseg.paths import runs_root

    return runs_root() / f"comparison-{time.strftime('%Y%m%d-%H%M%S')}"


def evaluate_runs(run_dirs, out=None, console=None, **options) -> dict:
    """``evaluate_run`` on each run folder, then (two or more runs) the comparison files in ``out``
    (default ``runs/comparison-<timestamp>/``). Returns {"runs": [summaries], "comparison": {...} or None}."""
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise UserError("no run folder given: pass one or more RUN_DIRs")
    if len({p.resolve() for p in run_dirs}) != len(run_dirs):
        raise UserError("the same run folder is given twice; pass each run once")
    summaries = [evaluate_run(r, console=console, **options) for r in run_dirs]
    comparison = None
    if len(summaries) > 1:
        comparison = compare_summaries(summaries, Path(out) if out else default_comparison_dir(), console)
    return {"runs": summaries, "comparison": comparison}
