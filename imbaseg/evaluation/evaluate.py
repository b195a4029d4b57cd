"""``evaluate_run``: a run folder -> per-image metrics, split AUCs and summaries in ``eval/<split>/``.

Resolution (the decision, recorded in summary.json as ``resolution``): the model predicts at its training
scale (the input resized to ``data.size`` when the run trained on resized images, sliding windows of
``data.patch_size`` when it trained on patches; see ``imbaseg.evaluation.inference``), the probabilities
are resized back (bilinear) to the prepared image's native size, and every metric is computed there,
against the native mask and inside the field of view where the dataset has one (DRIVE). ``size="native"``
feeds native pixels instead (sliding windows of the training size: full-resolution DRIVE).

Outputs (a staging folder that replaces ``eval/<split>/`` only when complete; formats in
``imbaseg.evaluation.report``): ``per_image.csv``, ``summary.json``, ``summary.md`` (with the lesion-wise
detection, results by object size and calibration sections), ``reliability.png``,
``predictions/<id>.png`` (0/255, zero outside the FOV) and, when asked, ``probabilities/<id>.npy``
(float16, native size). ``calibrate=True`` first fits a temperature on val (``eval/temperature.json``,
``imbaseg.evaluation.calibrate``) and reports the calibration before and after it. ``evaluate_runs``
evaluates several runs and compares them (``imbaseg.evaluation.comparison``).

Nothing here prints: progress goes to ``progress(stage, done, total)``, results are returned.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imbaseg.data.locate import SplitData, locate_prepared, split_data
from imbaseg.errors import UserError
from imbaseg.evaluation.calibrate import PixelPool, apply_temperature, fit_on_split, write_temperature
from imbaseg.evaluation.report import (
    SizeBins,
    aggregate,
    lesion_section,
    parse_size_bins,
    size_bins,
    size_section,
    write_report,
)
from imbaseg.evaluation.threshold import auto_threshold, parse_threshold
from imbaseg.metrics import EMPTY_CASES, CalibrationCounts, auc_pr, auc_roc, calibration_counts, empty_case
from imbaseg.metrics.calibration import N_BINS
from imbaseg.metrics.lesion import check_lesion_options
from imbaseg.metrics.per_image import measure

AUC_MAX_PIXELS = 40_000_000  # pixels pooled for the split AUCs (~0.3 GB); beyond, a seeded uniform sample
_SCALE = "model's input scale"
RESOLUTION = (
    "metrics at the prepared images' native size: probabilities resized back (bilinear) from the "
    f"{_SCALE}, thresholded, compared with the native mask inside the FOV"
)


def run_prepared(cfg, run_dir, data_root=None) -> Path:
    """The run's prepared dataset: ``data_root`` if given, else under the config's data.root, the
    project the run folder sits in, then $IMBASEG_HOME/cwd (``imbaseg.data.locate.locate_prepared``)."""
    from imbaseg.training.run_dir import RunDir

    roots = (cfg.data.root, RunDir(run_dir).project_root(), None)
    return locate_prepared(cfg.data.dataset, roots, given=data_root)


# ----------------------------------------------------------------------------- one split


def _aucs(pool: PixelPool) -> dict:
    """The split AUCs of the pooled valid pixels (sampled beyond AUC_MAX_PIXELS)."""
    p, y = pool.arrays()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined AUCs (no positive pixel) come back as NaN -> null
        roc, pr = auc_roc(p, y), auc_pr(p, y)
    return {
        "auc_roc": _finite(roc),
        "auc_pr": _finite(pr),
        "auc_pixels": int(p.size),
        "auc_subsampled": pool.subsampled,
    }


@dataclass
class SplitResult:
    """``evaluate_split``'s result: the rows, the AUCs, every target component's area and detection, the
    pooled calibration counts and, with a temperature, the scaled ones and the scaled per-image values."""

    rows: list[dict]
    aucs: dict
    areas: list[np.ndarray] = field(default_factory=list)
    detected: list[np.ndarray] = field(default_factory=list)
    calibration: CalibrationCounts = field(default_factory=CalibrationCounts.zeros)
    scaled: CalibrationCounts | None = None
    scaled_rows: list[dict] = field(default_factory=list)
    bins: SizeBins | None = None


def _list(pair) -> list[int] | None:
    return None if pair is None else [int(v) for v in pair]


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def evaluate_split(
    predictor,
    data: SplitData,
    predictions: Path,
    threshold: float,
    opts: _Options,
    probabilities: Path | None = None,
    progress=None,
    temperature: float | None = None,
) -> SplitResult:
    """Predict, threshold and measure every image of ``data`` with the options ``opts``.

    Writes ``predictions/<id>.png`` and, when ``probabilities`` is a folder, ``<id>.npy`` into it. Each row
    gets its ``size_bin`` once the split's bins are known (``opts.size_bins`` or the tertiles).
    temperature: also measure the calibration of the probabilities scaled by it.
    progress: called as ``progress(done, total)`` after each image.
    """
    from imbaseg.data.io import write_png

    for folder in (predictions, probabilities):
        if folder is not None:
            folder.mkdir(parents=True)
    pool, res = PixelPool(data.pixels, AUC_MAX_PIXELS), SplitResult([], {})
    for index, item_id in enumerate(data.ids):
        image, mask, fov = data.item(item_id)
        probs = predictor.probs(image)
        pred = probs >= threshold
        if fov is not None:
            pred &= fov
        _add_image(res, item_id, pred, probs, mask, fov, opts, temperature)
        write_png(predictions / f"{item_id}.png", pred)
        if probabilities is not None:
            np.save(probabilities / f"{item_id}.npy", probs.astype(np.float16))
        pool.add(index, probs, mask, fov)
        if progress:
            progress(index + 1, len(data.ids))
    bins = size_bins([r["fg_fraction"] for r in res.rows], opts.size_bins)
    for r in res.rows:
        r["size_bin"] = bins.assign(r["fg_fraction"])
    res.aucs, res.bins = _aucs(pool), bins
    return res


def _add_image(res: SplitResult, item_id: str, pred, probs, mask, fov, opts: _Options, temperature) -> None:
    """Measure one image into ``res``: its row, its target components, its calibration counts (and those
    of the probabilities scaled by ``temperature``)."""
    row = {
        "id": item_id,
        "height": mask.shape[0],
        "width": mask.shape[1],
        "fg_fraction": float(mask.mean()),
        "empty_case": empty_case(pred, mask, fov),
    }
    values, match, calib = measure(pred, mask, fov, probs=probs, **opts.metric_options())
    res.rows.append({**row, **values})
    res.areas.append(match.target_areas)
    res.detected.append(match.target_detected)
    res.calibration += calib
    if temperature is not None:
        scaled = calibration_counts(apply_temperature(probs, temperature), mask, fov)
        res.scaled = scaled if res.scaled is None else res.scaled + scaled
        res.scaled_rows.append({"ece": scaled.ece(), "brier": scaled.brier()})


# ----------------------------------------------------------------------------- evaluate_run


@dataclass
class _Options:
    split: str
    checkpoint: str
    threshold: float | str
    tta: bool = False
    save_probabilities: bool = False
    hd_convention: str = "max"
    nsd_tau: float = 2.0
    size: str = "train"
    lesion_overlap: float = 0.0
    min_component: int = 0
    size_bins: list[float] | None = None
    calibrate: bool = False

    def metric_options(self) -> dict:
        """The keyword arguments of ``imbaseg.metrics.per_image.measure`` these options set."""
        return {
            "hd_convention": self.hd_convention,
            "nsd_tau": self.nsd_tau,
            "lesion_overlap": self.lesion_overlap,
            "min_component": self.min_component,
        }


def _check_options(opts: _Options) -> None:
    from imbaseg.metrics import HD_CONVENTIONS
    from imbaseg.training.run_dir import CHECKPOINTS

    if opts.hd_convention not in HD_CONVENTIONS:
        raise UserError(
            f"unknown --hd-convention '{opts.hd_convention}': choose {' or '.join(HD_CONVENTIONS)}"
        )
    from imbaseg.config import check_number

    check_number("evaluate --nsd-tau", opts.nsd_tau)
    if opts.checkpoint not in CHECKPOINTS:
        raise UserError(f"unknown --checkpoint '{opts.checkpoint}': choose best or last")
    opts.lesion_overlap, opts.min_component = check_lesion_options(opts.lesion_overlap, opts.min_component)
    opts.size_bins = parse_size_bins(opts.size_bins)


def _inference_info(opts: _Options, predictor) -> dict:
    plan = predictor.plan
    return {
        "size": opts.size,
        "plan": plan.describe(),
        "resize_to": _list(plan.resize_to),
        "window": _list(plan.window),
        "overlap": plan.overlap,
        "normalize": plan.normalize,
        "device": str(predictor.device),
        "amp": predictor.amp,
    }


def _calibration(res: SplitResult, fit: dict | None, figure: str) -> dict:
    """summary.json's ``calibration``: pooled ECE and Brier with the reliability points, and with a fitted
    temperature (``fit``: temperature.json's content and its path) the same after scaling."""
    c = res.calibration
    out = {
        "bins": N_BINS,
        "pixels": c.pixels,
        "ece": c.ece(),
        "brier": c.brier(),
        "reliability": c.reliability(),
        "figure": figure,
        "temperature": None,
    }
    if fit is not None and res.scaled is not None:
        keep = ("temperature", "fitted_on", "logits", "bce_before", "bce_after", "at_bound", "pixels", "file")
        out["temperature"] = {
            **{k: fit[k] for k in keep if k in fit},
            "per_image_before": {m: float(np.mean([r[m] for r in res.rows])) for m in ("ece", "brier")},
            "pooled_after": {"ece": res.scaled.ece(), "brier": res.scaled.brier()},
            "per_image_after": aggregate(res.scaled_rows, ("ece", "brier")),
            "reliability_after": res.scaled.reliability(),
        }
    return out


def _summary(
    run, data: SplitData, opts: _Options, threshold, search, predictor, res: SplitResult, fit
) -> dict:
    import imbaseg

    cfg, ckpt, rows = run.config, run.checkpoint, res.rows
    cases = Counter(r["empty_case"] for r in rows)
    areas = np.concatenate(res.areas) if res.areas else np.zeros(0, np.int64)
    detected = np.concatenate(res.detected) if res.detected else np.zeros(0, bool)
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
        "resolution": RESOLUTION if opts.size == "train" else RESOLUTION.replace(_SCALE, "native input"),
        "inference": _inference_info(opts, predictor),
        "empty_cases": {c: int(cases.get(c, 0)) for c in EMPTY_CASES},
        **res.aucs,
        "metrics": aggregate(rows),
        "lesion": lesion_section(rows, areas, detected, opts.lesion_overlap, opts.min_component),
        "by_size": size_section(rows, res.bins),
        "calibration": _calibration(res, fit, "reliability.png"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "imbaseg_version": imbaseg.__version__,
    }


def _stage(progress, label: str):
    """``progress(label, done, total)`` as a ``(done, total)`` callback, or None."""
    return None if progress is None else (lambda done, total: progress(label, done, total))


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
    progress=None,
    lesion_overlap: float = 0.0,
    min_component: int = 0,
    size_bins=None,
    calibrate: bool = False,
) -> dict:
    """Evaluate one run folder on ``split``; writes RUN_DIR/eval/<split>/ and returns the summary dict
    (plus ``eval_dir``). threshold: a probability or "auto" (Dice-optimal on the val split, see
    ``imbaseg.evaluation.threshold``). amp: bf16/fp16 autocast on CUDA (off by default: fp32
    probabilities are reproducible). lesion_overlap, min_component: the lesion matching rule
    (``imbaseg.metrics.lesion``). size_bins: inner edges of the foreground-fraction bins ("0.01,0.05" or a
    list; None = tertiles). calibrate: fit a temperature on val first (``imbaseg.evaluation.calibrate``).
    progress: ``progress(stage, done, total)`` per image, stages "threshold search (val)", "temperature
    fit (val)" and "evaluating <split>". See the module doc for the outputs."""
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
        lesion_overlap,
        min_component,
        size_bins,
        bool(calibrate),
    )
    _check_options(opts)
    dev = resolve_device(device)
    run = load_run(run_dir, checkpoint, dev)
    cfg = run.config
    prepared = run_prepared(cfg, run.run_dir, data_root)
    data = split_data(prepared, split, cfg.data.in_channels)
    plan = plan_for(cfg, size, batch_size=batch_size or (8 if dev.type == "cuda" else 2))
    predictor = Predictor(run.model, plan, tta=tta, amp=amp, device=dev)
    search = None
    if opts.threshold == "auto":
        val = _val_split(
            prepared, cfg.data.in_channels, "--threshold auto", "Or pass a number, e.g. --threshold 0.5."
        )
        thr, search = auto_threshold(predictor, val, _stage(progress, "threshold search (val)"))
        if split == "val":
            search["note"] = "tuned on the evaluated split itself: the val numbers are optimistic"
    else:
        thr = opts.threshold
    fit = _fit_temperature(run, opts, prepared, predictor, progress) if opts.calibrate else None
    summary = _run_split(run, data, opts, thr, search, predictor, progress, fit)
    from imbaseg.training.trackers import log_evaluation

    summary["tracking"] = log_evaluation(run.run_dir, summary)  # a tracked run's MLflow run gets the means
    return summary


def _val_split(prepared: Path, in_channels: int, flag: str, fix: str) -> SplitData:
    try:
        return split_data(prepared, "val", in_channels)
    except UserError as exc:
        raise UserError(f"{flag} needs a val split: {exc} {fix}") from exc


def _fit_temperature(run, opts: _Options, prepared: Path, predictor, progress) -> dict:
    """Fit the temperature on val, write ``eval/temperature.json``; its content plus ``file``."""
    val = _val_split(prepared, run.config.data.in_channels, "--calibrate", "Leave --calibrate out.")
    info = fit_on_split(predictor, val, _stage(progress, "temperature fit (val)"))
    if opts.split == "val":
        info["note"] = "fitted on the evaluated split itself: the scaled val numbers are optimistic"
    ckpt = {"which": opts.checkpoint, "epoch": run.checkpoint.get("epoch")}
    path = write_temperature(run.run_dir, info, ckpt, opts.tta, opts.size)
    return {**info, "file": str(path)}


def _run_split(
    run, data: SplitData, opts: _Options, thr: float, search, predictor, progress, fit=None
) -> dict:
    """Fill a staging folder that replaces ``eval/<split>/`` whole once every file is written; the
    names inside it are RunDir's."""
    from imbaseg.paths import staged_dir
    from imbaseg.training.run_dir import RunDir
    from imbaseg.viz.reliability import save_reliability

    rd, split = RunDir(run.run_dir), data.split
    target = rd.eval_dir(split)
    with staged_dir(target) as tmp:

        def staged(path: Path) -> Path:
            return tmp / path.relative_to(target)

        res = evaluate_split(
            predictor,
            data,
            staged(rd.predictions_dir(split)),
            thr,
            opts,
            staged(rd.probabilities_dir(split)) if opts.save_probabilities else None,
            _stage(progress, f"evaluating {split}"),
            None if fit is None else fit["temperature"],
        )
        summary = _summary(run, data, opts, thr, search, predictor, res, fit)
        summary["calibration"]["figure"] = rd.reliability_png(split).name
        t = None if fit is None else fit["temperature"]
        title = f"{summary['loss']} on {summary['dataset']} {split} ({len(res.rows)} images)"
        save_reliability(staged(rd.reliability_png(split)), res.calibration, res.scaled, title, t)
        files = (rd.per_image_csv(split), rd.summary_json(split), rd.summary_md(split))
        write_report(res.rows, summary, *map(staged, files))
    return {**summary, "eval_dir": str(target)}


# ----------------------------------------------------------------------------- several runs


def evaluate_runs(run_dirs, out=None, progress=None, metrics=None, **options) -> dict:
    """``evaluate_run`` on each run folder, then (two or more runs) the comparison files
    (``imbaseg.evaluation.comparison``, of ``metrics``: default all) in ``out`` (default
    ``runs/comparison-<timestamp>/``).

    Returns {"runs": [summaries], "comparison": Comparison or None, "files": (csv, md) or None}.
    progress: ``progress(stage, done, total)``; with several runs a stage starts with the run's folder.
    """
    from imbaseg.evaluation.comparison import (
        check_distinct,
        check_metric_names,
        compare_runs,
        comparison_files,
        default_comparison_dir,
        write_comparison,
    )

    run_dirs = check_distinct(run_dirs)
    check_metric_names(metrics)  # before the evaluations, not after them
    summaries = []
    for r in run_dirs:
        prefixed = progress
        if progress is not None and len(run_dirs) > 1:
            prefixed = lambda stage, d, t, name=r.name: progress(f"{name}: {stage}", d, t)  # noqa: E731
        summaries.append(evaluate_run(r, progress=prefixed, **options))
    if len(summaries) < 2:
        return {"runs": summaries, "comparison": None, "files": None}
    comparison = compare_runs(run_dirs, options.get("split", "test"), metrics=metrics)
    files = write_comparison(comparison, *comparison_files(out or default_comparison_dir()))
    return {"runs": summaries, "comparison": comparison, "files": files}
