"""evaluate_run end to end on a tiny trained run: files, columns, summary, recomputed metrics, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import (
    DATASET,
    SPECS,
    fit_tiny,
    make_prepared,
    native_mask,
    read_rows,
    save_run,
    tiny_config,
)

from imbaseg.data.io import read_mask
from imbaseg.errors import UserError
from imbaseg.evaluation import evaluate as ev
from imbaseg.evaluation.evaluate import evaluate_run, evaluate_runs
from imbaseg.evaluation.report import PER_IMAGE_COLUMNS, summarize_defined
from imbaseg.evaluation.threshold import THRESHOLD_GRID
from imbaseg.metrics import (
    LESION_COUNT_NAMES,
    MASK_METRIC_NAMES,
    METRIC_NAMES,
    auc_roc,
    compute_metrics,
    paired_wilcoxon,
    summarize,
)

TEST_IDS = [f"img{k:02d}" for k, s in enumerate(SPECS) if s[0] == "test"]


def test_evaluate_files_columns_and_recomputed_metrics(run_copy, tiny_project):
    root = tiny_project["root"]
    s = evaluate_run(run_copy, split="test", device="cpu", save_probabilities=True)
    out = run_copy / "eval" / "test"
    assert Path(s["eval_dir"]) == out
    for name in ("per_image.csv", "summary.json", "summary.md"):
        assert (out / name).is_file()
    assert not [p for p in (run_copy / "eval").iterdir() if p.name.startswith(".")]  # no temp folder left
    rows = read_rows(out / "per_image.csv")
    assert tuple(rows[0]) == PER_IMAGE_COLUMNS
    assert [r["id"] for r in rows] == TEST_IDS
    probs_all, masks_all, fovs_all = [], [], []
    for r in rows:
        mask, fov = native_mask(root, "masks", r["id"]), native_mask(root, "fov", r["id"])
        pred = read_mask(out / "predictions" / f"{r['id']}.png")
        assert pred.shape == mask.shape == (int(r["height"]), int(r["width"]))  # native size, not 32x32
        assert set(np.unique(pred)) <= {0, 255}
        assert not pred[~fov].any()  # zero outside the field of view
        probs = np.load(out / "probabilities" / f"{r['id']}.npy")
        ref = compute_metrics(pred > 0, mask, fov, probs=probs.astype(np.float32))
        for m in (*MASK_METRIC_NAMES, *LESION_COUNT_NAMES):
            value = float(r[m]) if r[m] != "" else float("nan")  # an undefined lesion recall is left empty
            assert value == pytest.approx(ref[m], abs=1e-7, nan_ok=True), m
        for m in ("ece", "brier"):  # from float32 probabilities in evaluate, float16 copies here
            assert float(r[m]) == pytest.approx(ref[m], abs=2e-3), m
        assert float(r["fg_fraction"]) == pytest.approx(mask.mean(), abs=1e-9)
        assert probs.dtype == np.float16 and probs.shape == mask.shape
        np.testing.assert_array_equal(
            (probs.astype(np.float32) >= 0.5) & fov, pred > 0
        )  # up to float16 rounding
        probs_all.append(probs.astype(np.float32))
        masks_all.append(mask)
        fovs_all.append(fov)
    assert rows[-1]["empty_case"] in ("gt_empty", "both_empty")  # img11 has no foreground

    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "threshold",
        "tta",
        "hd_convention",
        "checkpoint",
        "empty_cases",
        "auc_roc",
        "auc_pr",
        "metrics",
        "resolution",
        "inference",
        "fov",
        "n_images",
    ):
        assert key in summary, key
    assert summary["checkpoint"]["which"] == "best" and summary["checkpoint"]["epoch"] == 7
    assert summary["threshold"] == 0.5 and summary["tta"] is False and summary["hd_convention"] == "max"
    assert summary["fov"] is True and summary["n_images"] == 3
    assert sum(summary["empty_cases"].values()) == 3
    assert summary["empty_cases"][rows[-1]["empty_case"]] >= 1
    assert summary["inference"]["resize_to"] == [32, 32]
    for m in METRIC_NAMES:
        values = [float(r[m]) if r[m] != "" else float("nan") for r in rows]
        expected = summarize_defined(values) if m == "lesion_recall" else summarize(values)
        assert summary["metrics"][m] == pytest.approx(expected), m
    # the split AUC pools the valid pixels of every image (from float32 probabilities; float16 copies here)
    assert summary["auc_roc"] == pytest.approx(auc_roc(probs_all, masks_all, fovs_all), abs=2e-3)
    assert summary["auc_roc"] > 0.9  # the tiny model separates bright discs from background
    md = (out / "summary.md").read_text()
    assert "| dice |" in md and "threshold: 0.5" in md and "epoch 7" in md


def test_rerun_replaces_only_when_complete(run_copy, monkeypatch):
    evaluate_run(run_copy, split="test", device="cpu")
    out = run_copy / "eval" / "test"
    before = (out / "summary.json").read_text()
    calls = []
    real = ev.measure

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(ev, "measure", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        evaluate_run(run_copy, split="test", device="cpu", threshold=0.3)
    assert (out / "summary.json").read_text() == before  # the previous evaluation is untouched
    assert sorted(p.name for p in (run_copy / "eval").iterdir()) == ["test"]  # no temp folder left
    monkeypatch.setattr(ev, "measure", real)
    evaluate_run(run_copy, split="test", device="cpu", threshold=0.3)
    assert json.loads((out / "summary.json").read_text())["threshold"] == 0.3


def test_auto_threshold_is_dice_optimal_on_val(run_copy, tiny_project):
    from imbaseg.evaluation.inference import Predictor, plan_for

    s = evaluate_run(run_copy, split="test", device="cpu", threshold="auto")
    assert s["threshold_mode"] == "auto" and s["threshold"] in THRESHOLD_GRID
    search = s["threshold_search"]
    assert search["split"] == "val" and len(search["dice"]) == len(THRESHOLD_GRID)
    # independent reference: compute_metrics on every val image at every grid threshold
    root, cfg = tiny_project["root"], tiny_project["cfg"]
    pred = Predictor(tiny_project["model"], plan_for(cfg), device="cpu")
    val_ids = [f"img{k:02d}" for k, sp in enumerate(SPECS) if sp[0] == "val"]
    from imbaseg.data.io import read_image

    probs = [
        pred.probs(read_image(root / "data" / "prepared" / DATASET / "images" / f"{i}.png")) for i in val_ids
    ]
    ref = [
        np.mean(
            [
                compute_metrics(p >= t, native_mask(root, "masks", i), native_mask(root, "fov", i))["dice"]
                for p, i in zip(probs, val_ids, strict=True)
            ]
        )
        for t in THRESHOLD_GRID
    ]
    np.testing.assert_allclose(search["dice"], ref, atol=1e-6)
    assert s["threshold"] == max(
        THRESHOLD_GRID, key=lambda t: (round(ref[THRESHOLD_GRID.index(t)], 6), -abs(t - 0.5))
    )
    assert search["best_dice"] >= ref[THRESHOLD_GRID.index(0.5)] - 1e-9
    assert search["best_dice"] > 0.5  # a sensible threshold on a learnable toy problem


def test_native_size_mode_and_tta(run_copy):
    s = evaluate_run(run_copy, split="val", device="cpu", size="native", tta=True, hd_convention="union")
    assert s["inference"]["resize_to"] is None and s["inference"]["window"] == [32, 32]
    assert s["tta"] is True and s["hd_convention"] == "union" and s["n_images"] == 3
    assert (run_copy / "eval" / "val" / "per_image.csv").is_file()


def test_several_runs_write_a_comparison(tiny_project, tmp_path):
    cfg = tiny_project["cfg"]
    a = save_run(tmp_path / "runs" / DATASET / "bce" / "a", cfg, tiny_project["model"])
    b = save_run(tmp_path / "runs" / DATASET / "bce" / "b", cfg, fit_tiny(cfg, steps=15, seed=1))
    out = tmp_path / "cmp"
    res = evaluate_runs([a, b], out=out, split="test", device="cpu")
    assert [Path(s["eval_dir"]) for s in res["runs"]] == [a / "eval" / "test", b / "eval" / "test"]
    assert res["files"] == (out / "comparison.csv", out / "comparison.md")
    rows = [r for r in read_rows(out / "comparison.csv") if r["size_bin"] == "all"]  # whole split
    # the same loss twice: the readable label gets the folder name to tell the runs apart
    assert {r["label"] for r in rows} == {"BCE Loss (a)", "BCE Loss (b)"}
    assert {r["metric"] for r in rows} == set(METRIC_NAMES) and len(rows) == 2 * len(METRIC_NAMES)
    for r in rows:
        s = res["runs"][0 if r["label"].endswith("(a)") else 1]["metrics"][r["metric"]]
        # each run's mean and CI in the comparison are its summary.json numbers
        assert (float(r["mean"]), float(r["ci_low"]), float(r["ci_high"])) == pytest.approx(
            (s["mean"], s["ci_low"], s["ci_high"]), rel=1e-9
        )
    (test,) = [r for r in rows if r["metric"] == "dice" and r["p_value"]]
    da = [float(r["dice"]) for r in read_rows(a / "eval" / "test" / "per_image.csv")]
    db = [float(r["dice"]) for r in read_rows(b / "eval" / "test" / "per_image.csv")]
    assert test["reference"] == "BCE Loss (a)" and test["n_images"] == "3"
    assert float(test["p_value"]) == pytest.approx(paired_wilcoxon(db, da))
    assert float(test["p_holm"]) == float(test["p_value"])  # one comparison: Holm changes nothing
    md = (out / "comparison.md").read_text()
    assert "BCE Loss (a) (reference)" in md and "| BCE Loss (b) | Dice |" in md and "Wilcoxon" in md


def test_comparison_default_folder_and_duplicate_runs(run_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("IMBASEG_HOME", str(tmp_path / "home"))
    with pytest.raises(UserError, match="twice"):
        evaluate_runs([run_copy, run_copy], device="cpu")
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    res = evaluate_runs([run_copy, other], split="test", device="cpu")
    csv_path, md_path = res["files"]
    out = csv_path.parent
    assert out.parent == tmp_path / "home" / "runs" and out.name.startswith("comparison-")
    assert csv_path.is_file() and md_path.is_file()
    (dice,) = [r for r in res["comparison"].rows() if r["metric"] == "dice" and r["p_value"] is not None]
    assert dice["p_value"] == 1.0  # identical runs: all differences zero


# ----------------------------------------------------------------------------- bad input


def test_run_folder_without_checkpoint(tmp_path):
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(UserError, match=r"no checkpoints/best\.pt"):
        evaluate_run(tmp_path / "empty-run", device="cpu")
    with pytest.raises(UserError, match="run folder not found"):
        evaluate_run(tmp_path / "nope", device="cpu")


def test_checkpoint_from_a_different_model_config(tiny_project, tmp_path):
    cfg8 = tiny_config(tiny_project["root"])
    cfg8.model.base_channels = 8  # the config says width 8, the weights are width 4
    run = save_run(tmp_path / "mixed", cfg8, tiny_project["model"])
    with pytest.raises(UserError, match="does not match the model"):
        evaluate_run(run, device="cpu")


def test_split_that_does_not_exist(run_copy):
    with pytest.raises(
        UserError, match=r"split 'validation' does not exist.*Available splits: train, val, test"
    ):
        evaluate_run(run_copy, split="validation", device="cpu")


def test_auto_threshold_without_val_split(tmp_path, tiny_project):
    specs = [s for s in SPECS if s[0] != "val"]
    make_prepared(tmp_path, specs=specs)
    run = save_run(
        tmp_path / "runs" / DATASET / "bce" / "noval", tiny_config(tmp_path), tiny_project["model"]
    )
    with pytest.raises(UserError, match="--threshold auto needs a val split"):
        evaluate_run(run, threshold="auto", device="cpu")


def test_prepared_dataset_that_moved(tiny_project, tmp_path):
    moved = tmp_path / "moved-project"
    shutil.copytree(tiny_project["root"] / "data", moved / "data")
    cfg = tiny_config(tmp_path / "old-place")  # the config remembers a root that no longer exists
    run = save_run(tmp_path / "elsewhere" / "run", cfg, tiny_project["model"])
    with pytest.raises(
        UserError, match=r"prepared dataset 'tiny-fov' not found: expected .*old-place.*--data-root"
    ):
        evaluate_run(run, device="cpu")
    with pytest.raises(UserError, match="--data-root .* holds no data/prepared/tiny-fov"):
        evaluate_run(run, device="cpu", data_root=tmp_path / "wrong")
    for given in (moved, moved / "data", moved / "data" / "prepared" / DATASET):  # each spelling is accepted
        s = evaluate_run(run, device="cpu", data_root=given)
        assert s["prepared_dir"] == str(moved / "data" / "prepared" / DATASET) or Path(
            s["prepared_dir"]
        ).samefile(moved / "data" / "prepared" / DATASET)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": "high"}, "bad --threshold"),
        ({"threshold": 1.5}, "strictly between"),
        ({"hd_convention": "mean"}, "hd-convention"),
        ({"nsd_tau": 0}, "nsd-tau"),
        ({"checkpoint": "final"}, "best or last"),
        ({"size": "full"}, "size mode"),
    ],
)
def test_bad_options(run_copy, kwargs, match):
    with pytest.raises(UserError, match=match):
        evaluate_run(run_copy, device="cpu", **kwargs)
