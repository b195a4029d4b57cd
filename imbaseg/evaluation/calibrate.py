"""Temperature scaling: one temperature T fitted on the val split, stored in ``eval/temperature.json``.

Logits are the logit of the pipeline's probabilities clipped to [1e-6, 1 - 1e-6], not the network's raw
outputs: the probabilities are what evaluate measures (after resizing back to the native size and TTA
averaging, both done on probabilities), so T scales exactly those. Scaled: ``p_T = sigmoid(logit(p) / T)``.
T is the minimiser of the mean binary cross-entropy of ``logits / T`` over the valid (FOV) pixels of val
(a seeded uniform sample beyond ``TEMPERATURE_MAX_PIXELS``), by bounded Brent search over log T in
[log 0.01, log 100] (scipy ``minimize_scalar``). T > 1 softens over-confident probabilities.

Thresholding commutes with the scaling at 0.5 (``p_T >= 0.5`` iff ``p >= 0.5``), so evaluate's masks
and mask metrics are those of the unscaled probabilities; T changes the calibration numbers, and the
masks of ``predict --temperature`` only at thresholds other than 0.5.

- ``PixelPool``: a split's valid pixels (probabilities, labels), sampled beyond a cap (also the AUCs' pool);
- ``fit_temperature(logits, labels)`` -> (T, info); ``apply_temperature(probs, T)``; ``to_logits``;
  ``scaled_threshold(t, T)`` (the same mask from the unscaled probabilities);
- ``fit_on_split(predictor, data)`` -> info; ``write_temperature`` / ``read_temperature`` /
  ``resolve_temperature`` (``predict --temperature auto|T``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from imbaseg.errors import UserError

EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before the logit: |logit| <= 13.8
T_BOUNDS = (0.01, 100.0)
TEMPERATURE_MAX_PIXELS = 10_000_000  # val pixels used for the fit; beyond, a seeded uniform sample
LOGITS_NOTE = "logit of the probabilities clipped to [1e-6, 1 - 1e-6]"


class PixelPool:
    """Valid-pixel probabilities and labels of a split, sampled uniformly (seeded) beyond ``cap`` pixels."""

    def __init__(self, total_pixels: int, cap: int, seed: int = 0):
        self.fraction = min(1.0, cap / max(1, total_pixels))
        self.seed, self.probs, self.labels = seed, [], []

    @property
    def subsampled(self) -> bool:
        return self.fraction < 1.0

    def add(self, index: int, probs: np.ndarray, mask: np.ndarray, valid) -> None:
        p, y = (probs, mask) if valid is None else (probs[valid], mask[valid])
        p, y = p.ravel(), y.ravel()
        if self.subsampled:
            keep = np.random.default_rng([self.seed, index]).random(p.size) < self.fraction
            p, y = p[keep], y[keep]
        self.probs.append(p.astype(np.float32))
        self.labels.append(y)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(probs float32, labels bool), 1-D, every image's pixels in turn."""
        if not self.probs:
            return np.zeros(0, np.float32), np.zeros(0, bool)
        return np.concatenate(self.probs), np.concatenate(self.labels)


def to_logits(probs) -> np.ndarray:
    """float64 logit of the probabilities clipped to [EPS, 1 - EPS], same shape."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """float32 ``sigmoid(to_logits(probs) / T)``, same shape; T = 1 returns the clipped probabilities."""
    z = to_logits(probs) / float(temperature)
    return (0.5 * (1 + np.tanh(0.5 * z))).astype(np.float32)  # the sigmoid, without overflow


def scaled_threshold(threshold: float, temperature: float) -> float:
    """The threshold on the unscaled probabilities that gives the mask ``p_T >= threshold``:
    sigmoid(logit(p) / T) >= t  <=>  p >= sigmoid(T logit(t)) (both sides monotone; exact up to the clip)."""
    z = float(temperature) * math.log(threshold / (1 - threshold))
    return 1 / (1 + math.exp(-z))


def mean_bce(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits / T)`` against bool labels (stable softplus form)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return float(np.logaddexp(0.0, z).mean() - z[labels].sum() / z.size)


def fit_temperature(logits, labels) -> tuple[float, dict]:
    """(T, info) minimising ``mean_bce(logits, labels, T)``; logits (N,) float, labels (N,) bool.

    UserError without both a foreground and a background pixel (any T would do, or none).
    info: bce_before (T = 1), bce_after, at_bound (the optimum reached the search bounds).
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if z.size != y.size:
        raise UserError(f"logits and labels must have the same size, got {z.size} and {y.size}.")
    if not y.any() or y.all():
        raise UserError(
            "cannot fit a temperature: the val pixels must hold both foreground and background; "
            "check the val split's masks"
        )
    if not np.isfinite(z).all():
        raise UserError("cannot fit a temperature: the logits contain NaN or infinite values")
    pos_sum = float(z[y].sum())

    def loss(log_t: float) -> float:
        zt = z * math.exp(-log_t)
        return float(np.logaddexp(0.0, zt).mean()) - pos_sum * math.exp(-log_t) / z.size

    lo, hi = math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1])
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
    t = float(math.exp(res.x))
    info = {
        "bce_before": loss(0.0),
        "bce_after": float(res.fun),
        "at_bound": bool(min(res.x - lo, hi - res.x) < 1e-3),
    }
    return t, info


def fit_on_split(predictor, data, progress=None) -> dict:
    """Fit T on every valid pixel of ``data`` (a ``SplitData``, normally val); returns the info that
    ``write_temperature`` stores. progress: ``progress(done, total)`` after each image."""
    pool = PixelPool(data.pixels, TEMPERATURE_MAX_PIXELS)
    for index, item_id in enumerate(data.ids):
        image, mask, fov = data.item(item_id)
        pool.add(index, predictor.probs(image), mask, fov)
        if progress:
            progress(index + 1, len(data.ids))
    probs, labels = pool.arrays()
    t, info = fit_temperature(to_logits(probs), labels)
    return {
        "temperature": t,
        "fitted_on": data.split,
        "criterion": "mean binary cross-entropy of logits / T over the valid pixels",
        "logits": LOGITS_NOTE,
        "bounds": list(T_BOUNDS),
        "pixels": int(probs.size),
        "subsampled": pool.subsampled,
        **info,
    }


# ----------------------------------------------------------------------------- eval/temperature.json


def write_temperature(run_dir, info: dict, checkpoint: dict, tta: bool, size: str) -> Path:
    """Write ``eval/temperature.json`` atomically: ``info`` plus the checkpoint ({which, epoch}), TTA and
    the inference size it was fitted with. Returns its path."""
    from imbaseg.paths import atomic_write_text
    from imbaseg.training.run_dir import RunDir

    path = RunDir(run_dir).temperature_json()
    data = {
        **info,
        "checkpoint": checkpoint,
        "tta": tta,
        "size": size,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def read_temperature(run_dir) -> dict:
    """``eval/temperature.json``; UserError naming the file and the command that writes it."""
    from imbaseg.training.run_dir import RunDir

    path = RunDir(run_dir).temperature_json()
    fix = f"run imbaseg evaluate {run_dir} --calibrate first, or pass a number"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found: no temperature was fitted for this run; {fix}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not readable JSON ({exc}); {fix}") from exc
    t = data.get("temperature") if isinstance(data, dict) else None
    if not isinstance(t, (int, float)) or not (math.isfinite(t) and t > 0):
        raise UserError(f"{path} holds no positive 'temperature'; {fix}")
    return data


def parse_temperature(value) -> float | str | None:
    """None, 'auto' or a finite number > 0; UserError otherwise."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not (math.isfinite(t) and t > 0):
        raise UserError(
            f"bad --temperature '{value}': give auto (the one evaluate --calibrate fitted) or a number > 0"
        )
    return t


def resolve_temperature(run_dir, value, checkpoint: str, epoch) -> float | None:
    """The temperature ``predict`` applies: None (none), a given number, or for 'auto' the stored one,
    refused (UserError) when it was fitted for another checkpoint or epoch than the one in use."""
    value = parse_temperature(value)
    if value != "auto":
        return value
    data = read_temperature(run_dir)
    fitted = data.get("checkpoint") or {}
    if (fitted.get("which"), fitted.get("epoch")) != (checkpoint, epoch):
        raise UserError(
            f"the stored temperature was fitted for checkpoint {fitted.get('which')} (epoch "
            f"{fitted.get('epoch')}), not {checkpoint} (epoch {epoch}): rerun imbaseg evaluate {run_dir} "
            f"--calibrate --checkpoint {checkpoint}, or pass a number"
        )
    return float(data["temperature"])
