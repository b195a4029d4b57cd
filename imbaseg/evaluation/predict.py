"""``predict``: apply a trained run to new images (no masks): ``<stem>_mask.png`` and ``<stem>_overlay.png``.

Inputs are image files (PNG, JPG, TIFF, ...) or folders of them (not recursive). Each image gets the
dataset's preprocessing (RGB or grey as the run trained, resize to the training size, per-image z-score;
see ``imbaseg.evaluation.inference``); the mask comes back at the input's own size, 0/255. The overlay is
the image with the mask tinted and its contour drawn.

Nothing is written unless everything can be: every input is decoded in full before the model runs (a
truncated JPEG fails there, which Pillow's ``verify`` would pass; an image above the pixel limit is a
bad input too, see ``imbaseg.data.io``), and the outputs are written into a hidden staging folder inside
``--out`` that is moved into place only when every file is complete (a full disk: one line, no file).

Instead of a run folder, ``run_dir`` may be a model file written by ``imbaseg export`` (``.onnx``, run
by onnxruntime, or TorchScript ``.pt``): the graph holds the preprocessing and the threshold
(``imbaseg.evaluation.export``), so predict only reads the images and writes what the graph returns.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from imbaseg.errors import UserError

TINT = np.array([255, 40, 40], dtype=np.float32)  # red, well visible on fundus, endoscopy and skin images
TINT_ALPHA = 0.35  # opacity of the tint inside the mask
CONTOUR = np.array([255, 255, 0], dtype=np.uint8)  # yellow outline


def collect_inputs(inputs) -> list[Path]:
    """Image files from files and folders (sorted within a folder); UserError for missing or empty ones."""
    from imbaseg.data.io import IMAGE_SUFFIXES, is_image_file

    files: list[Path] = []
    for given in inputs:
        p = Path(given).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and is_image_file(f))
            if not found:
                raise UserError(
                    f"folder '{p}' holds no images ({', '.join(IMAGE_SUFFIXES)}); pass image files or "
                    "another folder"
                )
            files += found
        elif p.is_file():
            if not is_image_file(p):
                raise UserError(f"'{p}' is not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
            files.append(p)
        else:
            raise UserError(f"input '{p}' does not exist; pass image files or folders of images")
    if not files:
        raise UserError("no input images given: pass image files or folders")
    _check_unique_stems(files)
    return files


def _check_unique_stems(files: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen and seen[f.stem].resolve() != f.resolve():
            raise UserError(
                f"'{seen[f.stem]}' and '{f}' would both write {f.stem}_mask.png; "
                "predict them into different --out folders"
            )
        seen[f.stem] = f


def read_input(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) via ``imbaseg.data.io.read_image`` (every pixel decoded); UserError
    naming an unreadable file, or one above the pixel limit ``max_pixels`` (``io.pixel_limit``)."""
    from imbaseg.data.io import ImageTooLarge, read_image

    try:
        return read_image(path, max_pixels=max_pixels)
    except ImageTooLarge as exc:
        raise UserError(
            f"input image '{path}' is too large: {exc.reason}. If it is genuine, raise the limit with "
            "--max-pixels N (or IMBASEG_MAX_IMAGE_PIXELS=N); otherwise leave it out."
        ) from exc
    except UserError as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise UserError(
            f"cannot read input image '{path}': {reason}. Convert it to PNG or leave it out."
        ) from exc


def output_paths(file: Path, out_dir: Path) -> tuple[Path, Path]:
    return out_dir / f"{file.stem}_mask.png", out_dir / f"{file.stem}_overlay.png"


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): ``image`` (grey or RGB uint8), ``mask`` tinted, its 4-neighbour contour drawn."""
    from scipy import ndimage

    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]
    out = rgb.astype(np.float32)
    out[mask] = (1 - TINT_ALPHA) * out[mask] + TINT_ALPHA * TINT
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    out[edge] = CONTOUR
    return out


def _check_outputs(files: list[Path], out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out '{out_dir}' is a file; give a folder")
    if force:
        return
    for f in files:
        for p in output_paths(f, out_dir):
            if p.exists():
                raise UserError(f"'{p}' already exists; use --force to overwrite it or choose another --out")


def predict(
    run_dir,
    inputs,
    out_dir,
    checkpoint: str = "best",
    threshold: float | None = None,
    tta: bool = False,
    device: str = "auto",
    size: str = "train",
    force: bool = False,
    amp: bool = False,
    progress=None,
    temperature=None,
    max_pixels: int | None = None,
) -> list[dict]:
    """Segment new images with a trained run. threshold None uses the run's train.threshold.

    run_dir: a run folder, or a model file from ``imbaseg export`` (.onnx, .pt; see the module doc: then
    checkpoint is not used, and tta, size, amp and temperature are refused).

    temperature: None, a number > 0 or "auto" (the one ``evaluate --calibrate`` stored for this checkpoint,
    ``imbaseg.evaluation.calibrate``): the mask is then ``sigmoid(logit(p) / T) >= threshold``, computed as
    ``p >= scaled_threshold(threshold, T)`` (the same mask; at threshold 0.5 no mask changes).

    Returns one dict per image: input, mask, overlay (paths), height, width, fg_fraction, threshold.
    progress: called as ``progress(done, total)`` after each image. max_pixels: the largest input
    (H x W) read, default ``imbaseg.data.io.pixel_limit()``. Nothing is written when any input is bad,
    when a check fails or when the disk fills (see the module doc).
    """
    from imbaseg.data.io import pixel_limit
    from imbaseg.evaluation.export import is_exported

    files = collect_inputs(inputs)
    out_dir = Path(out_dir)
    _check_outputs(files, out_dir, force)
    limit = pixel_limit(max_pixels)
    for f in files:
        read_input(f, limit)  # a full decode: nothing is written when one input is bad
    if is_exported(run_dir):
        mask_of, thr, temp = _exported_masks(run_dir, device, threshold, temperature, tta, size, amp)
    else:
        mask_of, thr, temp = _run_masks(run_dir, checkpoint, device, threshold, temperature, tta, size, amp)
    created = not out_dir.exists()
    try:
        results = _write_all(files, out_dir, mask_of, limit, progress)
        return [{**r, "threshold": thr, "temperature": temp} for r in results]
    except BaseException:
        if created:  # a folder made here and left empty by the failure goes too
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def _run_masks(run_dir, checkpoint, device, threshold, temperature, tta, size, amp):
    """``(mask_of, threshold, temperature)`` of a run folder: ``mask_of(image)`` -> (H, W) bool."""
    from imbaseg.data.dataset import to_channels
    from imbaseg.evaluation.calibrate import resolve_temperature, scaled_threshold
    from imbaseg.evaluation.inference import Predictor, plan_for
    from imbaseg.training.device import resolve_device
    from imbaseg.training.run_dir import load_run

    dev = resolve_device(device)
    run = load_run(run_dir, checkpoint, dev)
    cfg = run.config
    thr = cfg.train.threshold if threshold is None else _check_threshold(threshold)
    temp = resolve_temperature(run_dir, temperature, checkpoint, run.checkpoint.get("epoch"))
    raw = thr if temp is None else scaled_threshold(thr, temp)
    predictor = Predictor(run.model, plan_for(cfg, size), tta=tta, amp=amp, device=dev)
    return (lambda image: predictor.probs(to_channels(image, cfg.data.in_channels)) >= raw), thr, temp


def _exported_masks(path, device, threshold, temperature, tta, size, amp):
    """``(mask_of, threshold, temperature)`` of a model file from ``imbaseg export``. The graph holds the
    preprocessing, the threshold and any temperature; only a probabilities export takes --threshold."""
    from imbaseg.data.dataset import to_channels
    from imbaseg.evaluation.export import ExportedModel

    given = [flag for flag, on in (("--tta", tta), ("--size native", size != "train"), ("--amp", amp),
                                   ("--temperature", temperature is not None)) if on]
    if given:
        raise UserError(f"{' and '.join(given)} apply to a run folder; {path} runs as it was exported "
                        "(export again with imbaseg export --temperature, or predict with the run folder)")
    model = ExportedModel(path, device)
    info = model.info
    if not model.probabilities:
        if threshold is not None:
            raise UserError(f"{path} was exported with its threshold {info['threshold']} inside; export it "
                            "with --probabilities to choose the threshold here")
        return (lambda image: model.run(to_channels(image, 3)[None])[0] > 127), info["threshold"], \
            info.get("temperature")
    thr = info["threshold"] if threshold is None else _check_threshold(threshold)
    return (lambda image: model.run(to_channels(image, 3)[None])[0] >= thr), thr, info.get("temperature")


def _write_all(files, out_dir: Path, mask_of, limit, progress) -> list[dict]:
    """Predict every file into a staging folder in ``out_dir``; move the files into place at the end."""
    from imbaseg.data.io import encode_png
    from imbaseg.paths import staged_files

    results = []
    with staged_files(out_dir) as stage:
        for k, f in enumerate(files):
            image = read_input(f, limit)
            mask = mask_of(image)
            mask_path, overlay_path = output_paths(f, out_dir)
            (stage / mask_path.name).write_bytes(encode_png(mask.astype(np.uint8) * 255))
            (stage / overlay_path.name).write_bytes(encode_png(overlay(image, mask)))
            results.append({
                "input": str(f),
                "mask": str(mask_path),
                "overlay": str(overlay_path),
                "height": int(mask.shape[0]),
                "width": int(mask.shape[1]),
                "fg_fraction": float(mask.mean()),
            })
            if progress:
                progress(k + 1, len(files))
    return results


def _check_threshold(t) -> float:
    """A float in (0, 1): evaluate's parser, without 'auto' (new images have no validation masks)."""
    from imbaseg.evaluation.threshold import parse_threshold

    value = parse_threshold(t)
    if value == "auto":
        raise UserError(
            "bad --threshold auto for predict: give a number between 0 and 1 (auto needs validation masks)"
        )
    return value
