"""The new evaluation sections on real images: a few DRIVE images (vessels, field of view) and CVC-ClinicDB
frames (polyps) from ../shared/data, a tiny quickly fitted U-Net, and the lesion counts and calibration
recomputed independently from the saved predictions and probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_helpers import fit_tiny, save_run
from scipy import ndimage as ndi

from imbaseg.data.io import read_image, read_mask
from imbaseg.metrics import CalibrationCounts, calibration_counts

EIGHT = np.ones((3, 3), bool)
SPLITS = ["train"] * 3 + ["val"] * 2 + ["test"] * 3
DRIVE_SPLITS = ["train"] * 2 + ["val"] * 2 + ["test"] * 2  # 565x584 each: fewer keep the test short


def drive_samples(shared):
    base = shared / "DRIVE" / "training"
    for k, split in zip(range(21, 27), DRIVE_SPLITS, strict=True):
        image = read_image(base / "images" / f"{k}_training.tif")
        mask = read_mask(base / "1st_manual" / f"{k}_manual1.gif") > 127
        fov = read_mask(base / "mask" / f"{k}_training_mask.gif") > 127
        yield f"{k}", image, mask, fov, split


def cvc_samples(shared):
    base = shared / "samples" / "CVC-ClinicDB"
    names = sorted((base / "Original").glob("*.tif"), key=lambda p: int(p.stem))[: len(SPLITS)]
    for path, split in zip(names, SPLITS, strict=True):
        mask = read_mask(base / "Ground Truth" / path.name) > 127
        yield path.stem, read_image(path), mask, None, split


def prepared_run(root, name, samples):
    """A prepared dataset ``name`` under ``root`` from ``samples`` and a tiny run fitted on it."""
    from imbaseg.config import from_dict
    from imbaseg.data.prepared import PreparedWriter
    from imbaseg.paths import prepared_dir

    samples = list(samples)
    with_fov = samples[0][3] is not None
    with PreparedWriter(prepared_dir(name, root), with_fov=with_fov) as w:
        rows = [w.write_sample(i, img, m, f, split=s, source="shared") for i, img, m, f, s in samples]
        w.commit(rows, {"name": name})
    cfg = from_dict(
        {
            "name": "tiny",
            "data": {"dataset": name, "root": str(root), "size": [32, 32]},
            "model": {"base_channels": 4},
            "loss": {"name": "bce"},
            "train": {"device": "cpu"},
        }
    )
    return save_run(root / "runs" / name / "bce" / "tiny", cfg, fit_tiny(cfg, steps=30))


@pytest.mark.parametrize("dataset", ["drive", "cvc"])
def test_new_sections_on_real_samples(shared_data, tmp_path, dataset):
    from imbaseg.evaluation.evaluate import evaluate_run

    samples = drive_samples if dataset == "drive" else cvc_samples
    try:
        data = list(samples(shared_data))
    except FileNotFoundError as exc:
        pytest.skip(f"{dataset} sample files not found under {shared_data}: {exc}")
    run = prepared_run(tmp_path, dataset, data)
    s = evaluate_run(run, split="test", device="cpu", calibrate=True, save_probabilities=True)
    out = run / "eval" / "test"
    before, n_targets, n_fp = CalibrationCounts.zeros(), 0, 0
    for item_id, _, mask, fov, split in data:
        if split != "test":
            continue
        fov = np.ones_like(mask) if fov is None else fov
        pred = read_mask(out / "predictions" / f"{item_id}.png") > 0
        lt, nt = ndi.label(mask & fov, structure=EIGHT)
        lp, npred = ndi.label(pred & fov, structure=EIGHT)
        n_targets += nt
        n_fp += sum(1 for k in range(1, npred + 1) if not (mask & fov & (lp == k)).any())
        probs = np.load(out / "probabilities" / f"{item_id}.npy").astype(np.float32)
        before += calibration_counts(probs, mask, fov)
    assert (s["lesion"]["targets"], s["lesion"]["fp"]) == (n_targets, n_fp)
    assert s["calibration"]["ece"] == pytest.approx(before.ece(), abs=3e-3)
    assert s["calibration"]["brier"] == pytest.approx(before.brier(), abs=1e-3)
    t = s["calibration"]["temperature"]
    assert t["fitted_on"] == "val" and 0.01 < t["temperature"] < 100 and t["bce_after"] <= t["bce_before"]
    assert s["fov"] is (dataset == "drive")
    assert sum(b["n"] for b in s["by_size"]["bins"]) == sum(1 for d in data if d[4] == "test")
    md = (out / "summary.md").read_text()
    heads = ("## Lesion-wise detection", "Lesion recall by target component", "## Results by object size")
    for head in (*heads, "## Calibration", "Temperature scaling: T ="):
        assert head in md, head
    assert (out / "reliability.png").stat().st_size > 10_000
    assert json.loads((run / "eval" / "temperature.json").read_text())["temperature"] == t["temperature"]
