"""Temperature scaling: recovering a known temperature, the stored eval/temperature.json and its checks,
evaluate --calibrate end to end (numbers recomputed from the saved probabilities), predict's use."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from imbaseg.errors import UserError
from imbaseg.evaluation.calibrate import (
    apply_temperature,
    fit_temperature,
    mean_bce,
    parse_temperature,
    read_temperature,
    resolve_temperature,
    scaled_threshold,
    to_logits,
)
from imbaseg.metrics import calibration_counts


def calibrated_sample(k: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Logits z on a grid, each repeated k times with round(k sigmoid(z)) positives: labels drawn exactly
    from sigmoid(z), without sampling noise, so the best temperature for z is 1."""
    z = np.linspace(-4.5, 4.5, 181)
    pos = np.rint(k / (1 + np.exp(-z))).astype(int)
    logits = np.repeat(z, k)
    labels = np.concatenate([np.arange(k) < n for n in pos])
    return logits, labels


def test_temperature_recovers_logits_scaled_by_three():
    z, y = calibrated_sample()
    t1, _ = fit_temperature(z, y)
    assert t1 == pytest.approx(1.0, abs=1e-3)
    t, info = fit_temperature(3 * z, y)  # over-confident by a factor 3
    assert t == pytest.approx(3.0, abs=1e-2)
    assert info["bce_after"] < info["bce_before"] and not info["at_bound"]
    assert info["bce_after"] == pytest.approx(mean_bce(3 * z, y, t))
    # the same through probabilities, as evaluate sees them (clipped at 1e-6: |3z| <= 13.5 is inside)
    probs = (1 / (1 + np.exp(-3 * z))).astype(np.float32)
    t_probs, _ = fit_temperature(to_logits(probs), y)
    assert t_probs == pytest.approx(3.0, abs=1e-2)
    t_soft, _ = fit_temperature(z / 2, y)  # under-confident: T < 1
    assert t_soft == pytest.approx(0.5, abs=1e-2)


def test_temperature_minimises_the_bce():
    z, y = calibrated_sample(500)
    t, _ = fit_temperature(2 * z, y)
    for other in (t * 0.97, t * 1.03):
        assert mean_bce(2 * z, y, other) > mean_bce(2 * z, y, t)


def test_fit_needs_both_classes_and_finite_logits():
    with pytest.raises(UserError, match="both foreground and background"):
        fit_temperature(np.zeros(10), np.zeros(10, bool))
    with pytest.raises(UserError, match="NaN"):
        fit_temperature(np.array([np.nan, 1.0]), np.array([True, False]))


def test_apply_temperature_and_the_equivalent_threshold():
    p = np.array([1e-9, 0.1, 0.3, 0.5, 0.7, 0.99, 1.0], np.float32)
    assert apply_temperature(p, 1.0) == pytest.approx(np.clip(p, 1e-6, 1 - 1e-6), abs=1e-7)
    scaled = apply_temperature(p, 2.0)
    assert scaled[3] == pytest.approx(0.5) and np.all(np.diff(scaled) >= 0)  # monotone, 0.5 stays 0.5
    assert scaled[1] == pytest.approx(1 / (1 + math.sqrt(9)), abs=1e-6)  # logit(0.1)/2 -> 1/(1+3)
    rng = np.random.default_rng(0)
    probs = rng.random(10_000).astype(np.float32)
    for t, thr in ((2.0, 0.3), (0.5, 0.7), (3.0, 0.5)):
        np.testing.assert_array_equal(apply_temperature(probs, t) >= thr, probs >= scaled_threshold(thr, t))


def test_parse_and_resolve_temperature(tmp_path):
    assert parse_temperature(None) is None and parse_temperature("AUTO") == "auto"
    assert parse_temperature("1.5") == 1.5
    for bad in ("0", "-1", "nan", "inf", "warm"):
        with pytest.raises(UserError, match="--temperature"):
            parse_temperature(bad)
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    with pytest.raises(UserError, match=r"temperature.json not found.*--calibrate"):
        resolve_temperature(run, "auto", "best", 3)
    (run / "eval" / "temperature.json").write_text("{not json")
    with pytest.raises(UserError, match="not readable JSON"):
        read_temperature(run)
    (run / "eval" / "temperature.json").write_text(json.dumps({"temperature": -2}))
    with pytest.raises(UserError, match="no positive 'temperature'"):
        read_temperature(run)
    stored = {"temperature": 1.7, "checkpoint": {"which": "best", "epoch": 3}}
    (run / "eval" / "temperature.json").write_text(json.dumps(stored))
    assert resolve_temperature(run, "auto", "best", 3) == 1.7
    assert resolve_temperature(run, "2.5", "last", 9) == 2.5  # a number needs no file
    with pytest.raises(UserError, match=r"fitted for checkpoint best \(epoch 3\), not last \(epoch 9\)"):
        resolve_temperature(run, "auto", "last", 9)


# ----------------------------------------------------------------------------- evaluate --calibrate


def test_evaluate_calibrate_end_to_end(run_copy, tiny_project):
    from eval_helpers import DATASET

    from imbaseg.data.io import read_image, read_mask
    from imbaseg.evaluation.evaluate import evaluate_run
    from imbaseg.evaluation.inference import Predictor, plan_for

    s = evaluate_run(run_copy, split="test", device="cpu", calibrate=True, save_probabilities=True)
    stored = json.loads((run_copy / "eval" / "temperature.json").read_text())
    assert stored["fitted_on"] == "val" and stored["checkpoint"] == {"which": "best", "epoch": 7}
    assert stored["logits"].startswith("logit of the probabilities clipped")
    # independent refit: the val probabilities of the same model, every valid pixel
    root, cfg = tiny_project["root"], tiny_project["cfg"]
    predictor = Predictor(tiny_project["model"], plan_for(cfg), device="cpu")
    prepared = root / "data" / "prepared" / DATASET
    val_ids = ["img06", "img07", "img08"]
    probs, labels = [], []
    for i in val_ids:
        fov = read_mask(prepared / "fov" / f"{i}.png") > 127
        probs.append(predictor.probs(read_image(prepared / "images" / f"{i}.png"))[fov])
        labels.append((read_mask(prepared / "masks" / f"{i}.png") > 127)[fov])
    t, _ = fit_temperature(to_logits(np.concatenate(probs)), np.concatenate(labels))
    assert stored["temperature"] == pytest.approx(t, rel=1e-5)
    # before and after on test, recomputed from the saved float16 probabilities
    cal = s["calibration"]
    before = after = None
    for i in ("img09", "img10", "img11"):
        p = np.load(run_copy / "eval" / "test" / "probabilities" / f"{i}.npy").astype(np.float32)
        y = read_mask(prepared / "masks" / f"{i}.png") > 127
        fov = read_mask(prepared / "fov" / f"{i}.png") > 127
        b, a = calibration_counts(p, y, fov), calibration_counts(apply_temperature(p, t), y, fov)
        before, after = (b, a) if before is None else (before + b, after + a)
    assert cal["ece"] == pytest.approx(before.ece(), abs=3e-3)
    assert cal["temperature"]["pooled_after"]["ece"] == pytest.approx(after.ece(), abs=3e-3)
    assert cal["temperature"]["pooled_after"]["brier"] == pytest.approx(after.brier(), abs=1e-3)
    assert cal["temperature"]["temperature"] == stored["temperature"]
    md = (run_copy / "eval" / "test" / "summary.md").read_text()
    assert "## Calibration" in md and "Temperature scaling: T = " in md and "scaled by T" in md
    # a new evaluation of val replaces eval/val/ whole but keeps the temperature beside it
    evaluate_run(run_copy, split="val", device="cpu")
    assert json.loads((run_copy / "eval" / "temperature.json").read_text()) == stored


def test_calibrate_without_a_val_split_is_one_clear_error(tmp_path):
    from eval_helpers import SPECS, fit_tiny, make_prepared, save_run, tiny_config

    from imbaseg.evaluation.evaluate import evaluate_run

    root = tmp_path / "root"
    make_prepared(root, specs=[s for s in SPECS if s[0] != "val"])
    cfg = tiny_config(root)
    run = save_run(root / "runs" / "tiny-fov" / "bce" / "noval", cfg, fit_tiny(cfg, steps=2))
    with pytest.raises(UserError, match=r"--calibrate needs a val split.*Leave --calibrate out"):
        evaluate_run(run, split="test", device="cpu", calibrate=True)
    assert not (run / "eval" / "temperature.json").exists()


def test_predict_applies_a_given_or_the_stored_temperature(run_copy, tiny_project, tmp_path):
    from eval_helpers import DATASET

    from imbaseg.data.io import read_image, read_mask
    from imbaseg.evaluation.evaluate import evaluate_run
    from imbaseg.evaluation.inference import Predictor, plan_for
    from imbaseg.evaluation.predict import predict

    root, cfg = tiny_project["root"], tiny_project["cfg"]
    image = root / "data" / "prepared" / DATASET / "images" / "img09.png"
    probs = Predictor(tiny_project["model"], plan_for(cfg), device="cpu").probs(read_image(image))
    res = predict(run_copy, [image], tmp_path / "a", device="cpu", threshold=0.3, temperature="2.5")
    assert res[0]["temperature"] == 2.5 and res[0]["threshold"] == 0.3
    got = read_mask(res[0]["mask"]) > 0
    want = apply_temperature(probs, 2.5) >= 0.3  # independent: scale, then threshold
    assert got.any() and np.count_nonzero(got != want) <= 2  # float32 rounding right at the threshold
    assert np.count_nonzero(got != (probs >= 0.3)) > 0  # the temperature changed the mask at 0.3
    with pytest.raises(UserError, match="--calibrate first"):
        predict(run_copy, [image], tmp_path / "b", device="cpu", temperature="auto")
    assert not (tmp_path / "b").exists()
    evaluate_run(run_copy, split="val", device="cpu", calibrate=True)
    t = read_temperature(run_copy)["temperature"]
    res = predict(run_copy, [image], tmp_path / "c", device="cpu", threshold=0.3, temperature="auto")
    assert res[0]["temperature"] == t
    with pytest.raises(UserError, match=r"fitted for checkpoint best \(epoch 7\), not last"):
        predict(run_copy, [image], tmp_path / "d", device="cpu", checkpoint="last", temperature="auto")
