"""The comparison layer: the same numbers through ``evaluate RUN...`` and ``compare``, the single-run CI,
groups for the study (S seeds), labels, and what it refuses."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import DATASET, fit_tiny, save_run

from imbaseg.errors import UserError
from imbaseg.evaluation.comparison import (
    COLUMNS,
    Entry,
    EvaluatedRun,
    compare_groups,
    compare_runs,
    comparison_csv,
    group_runs,
    label_runs,
    make_group,
)
from imbaseg.evaluation.evaluate import evaluate_runs
from imbaseg.evaluation.report import PerImage
from imbaseg.metrics import METRIC_NAMES
from imbaseg.metrics.stats import analyse, bootstrap_draws


@pytest.fixture(scope="module")
def two_evaluated(tiny_project, tmp_path_factory):
    """Two evaluated runs of tiny-fov (different weights) and evaluate_runs' result."""
    root = tmp_path_factory.mktemp("cmp")
    cfg = tiny_project["cfg"]
    a = save_run(root / "runs" / DATASET / "bce" / "a", cfg, tiny_project["model"])
    b = save_run(root / "runs" / DATASET / "bce" / "b", cfg, fit_tiny(cfg, steps=15, seed=1))
    res = evaluate_runs([a, b], out=root / "cmp", split="test", device="cpu")
    return root, a, b, res


def test_evaluate_and_compare_write_the_same_comparison(two_evaluated):
    from imbaseg.viz.compare import compare

    root, a, b, res = two_evaluated
    fig = compare([a, b], out=root / "Figures" / "ab.png")
    csv_eval, md_eval = res["files"]
    assert fig["csv"].read_text() == csv_eval.read_text()  # one format, the same numbers
    assert fig["md"].read_text() == md_eval.read_text()
    with open(csv_eval, newline="") as f:
        rows = list(csv.DictReader(f))
    bins = {r["size_bin"] for r in rows}
    assert tuple(rows[0]) == COLUMNS and len(rows) == 2 * len(METRIC_NAMES) * len(bins)
    assert "all" in bins and len(bins) > 1  # the whole split, then each object-size bin


def test_single_run_ci_in_the_comparison_equals_its_summary_bit_for_bit(two_evaluated):
    _, _, _, res = two_evaluated
    c = res["comparison"]
    for metric in METRIC_NAMES:
        st = c.stats[(0, metric)]
        for k, summary in enumerate(res["runs"]):
            s = summary["metrics"][metric]
            assert (st.mean[k], st.ci_low[k], st.ci_high[k]) == (s["mean"], s["ci_low"], s["ci_high"]), metric
            assert (st.image_sd[k], st.median[k]) == (s["std"], s["median"]), metric


def test_compare_runs_reads_back_what_evaluate_wrote(two_evaluated):
    _, a, b, res = two_evaluated
    again = compare_runs([a, b], "test")
    assert comparison_csv(again) == comparison_csv(res["comparison"])
    rows = [r for r in again.rows() if r["metric"] == "hd95"]
    assert {r["direction"] for r in rows} == {"lower"}
    assert [r["label"] for r in rows] == ["BCE Loss (a)", "BCE Loss (b)"]  # one loss: the folder tells apart
    with pytest.raises(UserError, match=r"no evaluation of the val split .*imbaseg evaluate .* --split val"):
        compare_runs([a, b], "val")


# ----------------------------------------------------------------------------- groups without files


def fake_run(name: str, values: dict[str, float], loss: str = "dice", dataset: str = "d", params=None):
    ids = list(values)
    per_image = PerImage(Path(name) / "per_image.csv", ids, {"dice": np.array(list(values.values()))})
    loss_cfg = {"name": loss, "params": params or {}, "terms": None}
    return EvaluatedRun(Path("runs") / dataset / loss / name, "test", dataset, loss_cfg, per_image)


def test_group_array_orders_images_as_text_and_seeds_as_given():
    # ids in different file orders; sorted as text: "img10" < "img2"
    s1 = fake_run("s1", {"img2": 0.2, "img10": 0.1, "img3": 0.3})
    s2 = fake_run("s2", {"img3": 0.6, "img2": 0.5, "img10": 0.4})
    t1 = fake_run("t1", {"img10": 0.7, "img2": 0.8, "img3": 0.9}, loss="bce")
    t2 = fake_run("t2", {"img2": 0.9, "img3": 1.0, "img10": 0.8}, loss="bce")
    g = make_group("d", "test", [Entry("Dice", [s1, s2]), Entry("BCE", [t1, t2])])
    assert g.ids == ["img10", "img2", "img3"] and g.n_seeds == 2
    m = g.array("dice")
    assert m.shape == (2, 2, 3)
    np.testing.assert_array_equal(m[0], [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    np.testing.assert_array_equal(m[1], [[0.7, 0.8, 0.9], [0.8, 0.9, 1.0]])
    # compare_groups is analyse with the group's fresh draws: the study's S > 1 path
    c = compare_groups([g], metrics=("dice",), n_boot=200)
    direct = analyse(m, bootstrap_draws(2, 3, 200, 0))
    np.testing.assert_array_equal(c.stats[(0, "dice")].ci_low, direct.ci_low)
    rows = c.rows()
    assert [r["n_seeds"] for r in rows] == [2, 2] and rows[1]["run"] == "runs/d/bce/t1;runs/d/bce/t2"


def test_identical_runs_in_a_group_give_p_one_and_a_zero_width_difference():
    a = fake_run("a", {"x": 0.5, "y": 0.7, "z": 0.9})
    b = fake_run("b", {"x": 0.5, "y": 0.7, "z": 0.9})
    label_runs([a, b])
    row = compare_groups(group_runs([a, b]), metrics=("dice",), n_boot=100).rows()[1]
    assert row["p_value"] == row["p_holm"] == 1.0 and row["effect_r"] == 0.0
    assert row["median_diff"] == row["diff_ci_low"] == row["diff_ci_high"] == 0.0


def test_groups_follow_dataset_and_split_and_refuse_different_images():
    a = fake_run("a", {"x": 0.5, "y": 0.7}, dataset="cvc")
    b = fake_run("b", {"p": 0.5}, dataset="drive")
    c = fake_run("c", {"x": 0.6, "y": 0.6}, dataset="cvc", loss="bce")
    label_runs([a, b, c])
    groups = group_runs([a, b, c])
    assert [(g.dataset, [e.label for e in g.entries]) for g in groups] == [
        ("cvc", ["Dice Loss", "BCE Loss"]),
        ("drive", ["Dice Loss"]),
    ]
    d = fake_run("d", {"x": 0.6, "w": 0.6}, dataset="cvc", loss="bce")
    with pytest.raises(UserError, match=r"different images of cvc/test \(e.g. 'w' is in one only\)"):
        group_runs([a, d])
    with pytest.raises(UserError, match="same number of runs"):
        make_group("cvc", "test", [Entry("A", [a]), Entry("C", [c, d])])
    label_runs([a, c], ["X", "X"])  # --labels X X: the tables could not tell the runs apart
    with pytest.raises(UserError, match="label 'X' is given to two runs of cvc/test"):
        group_runs([a, c])


def test_labels_are_unique_within_a_group():
    runs = [fake_run("r1", {"x": 0.1}), fake_run("r1", {"x": 0.2}, dataset="d"), fake_run("r2", {"x": 0.3})]
    runs[1].run_dir = Path("other") / "r1"  # same loss, same folder name: the path tells them apart
    labels = label_runs(runs)
    assert labels[2] == "Dice Loss (r2)" and len(set(labels)) == 3
    assert labels[0] == "Dice Loss (runs/d/dice/r1)" and labels[1] == "Dice Loss (other/r1)"
