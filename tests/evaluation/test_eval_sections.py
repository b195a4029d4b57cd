"""evaluate's new sections on the tiny run: lesion-wise detection, results by object size, calibration, the
reliability diagram; their CLI flags; and the comparison layer per size bin and with undefined values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from eval_helpers import DATASET, fit_tiny, native_mask, read_rows, save_run
from PIL import Image
from scipy import ndimage as ndi
from typer.testing import CliRunner

from imbaseg.cli.common import user_errors
from imbaseg.cli.eval_cmds import evaluate
from imbaseg.data.io import read_mask
from imbaseg.errors import UserError
from imbaseg.evaluation.comparison import (
    Entry,
    EvaluatedRun,
    compare_groups,
    comparison_csv,
    comparison_markdown,
    load_evaluated,
    make_group,
)
from imbaseg.evaluation.evaluate import evaluate_run, evaluate_runs
from imbaseg.evaluation.report import PerImage, read_per_image, summarize_defined
from imbaseg.metrics import METRIC_NAMES, summarize
from imbaseg.metrics.stats import analyse, bootstrap_draws, higher_is_better

app = typer.Typer()
app.command("evaluate")(user_errors(evaluate))
app.command("other")(lambda: None)
runner = CliRunner()
EIGHT = np.ones((3, 3), bool)


def test_lesion_size_and_calibration_sections(run_copy, tiny_project):
    root = tiny_project["root"]
    s = evaluate_run(run_copy, split="test", device="cpu")
    out = run_copy / "eval" / "test"
    rows = read_rows(out / "per_image.csv")
    # lesion counts per image: scipy's 8-connected labels of the saved prediction and the mask in the FOV
    areas, hits = [], []
    for r in rows:
        mask, fov = native_mask(root, "masks", r["id"]), native_mask(root, "fov", r["id"])
        pred = read_mask(out / "predictions" / f"{r['id']}.png") > 0
        lt, nt = ndi.label(mask & fov, structure=EIGHT)
        lp, npred = ndi.label(pred & fov, structure=EIGHT)
        hit = [bool((pred & (lt == k)).any()) for k in range(1, nt + 1)]
        fp = sum(1 for k in range(1, npred + 1) if not (mask & fov & (lp == k)).any())
        assert (int(r["lesion_targets"]), int(r["lesion_predicted"]), int(r["lesion_fp"])) == (nt, npred, fp)
        assert int(r["lesion_detected"]) == sum(hit)
        areas += [int((lt == k).sum()) for k in range(1, nt + 1)]
        hits += hit
    le = s["lesion"]
    for key in ("targets", "detected", "missed", "predicted", "fp"):
        assert le[key] == sum(int(r[f"lesion_{key}"]) for r in rows), key
    assert le["recall"] == pytest.approx(le["detected"] / le["targets"])
    assert le["rule"] == "any overlapping pixel" and le["min_component"] == 0 and le["connectivity"] == 8
    t1, t2 = np.quantile(areas, [1 / 3, 2 / 3])
    assert le["by_area"]["thresholds"] == pytest.approx([t1, t2])
    small = [h for a, h in zip(areas, hits, strict=True) if a <= t1]
    assert le["by_area"]["classes"][0]["targets"] == len(small)
    assert le["by_area"]["classes"][0]["detected"] == sum(small)
    # by object size: tertiles of the non-empty targets' fg_fraction; per-bin summaries of the rows
    fg = {r["id"]: float(r["fg_fraction"]) for r in rows}
    manifest = {
        r["id"]: float(r["fg_fraction"])
        for r in read_rows(root / "data" / "prepared" / DATASET / "manifest.csv")
    }
    assert all(abs(fg[i] - manifest[i]) < 1e-6 for i in fg)  # the manifest's fg_fraction, unrounded
    edges = np.quantile([v for v in fg.values() if v > 0], [1 / 3, 2 / 3])
    bs = s["by_size"]
    assert bs["rule"] == "tertiles" and bs["edges"] == pytest.approx([0.0, *edges, 1.0])
    for r in rows:
        v = fg[r["id"]]
        want = "empty" if v == 0 else ("small" if v <= edges[0] else "medium" if v <= edges[1] else "large")
        assert r["size_bin"] == want
    for b in bs["bins"]:
        mine = [r for r in rows if r["size_bin"] == b["bin"]]
        assert b["n"] == len(mine)
        if mine:
            assert b["metrics"]["dice"] == pytest.approx(summarize([float(r["dice"]) for r in mine]))
    # calibration: pooled numbers and the diagram
    cal = s["calibration"]
    assert cal["bins"] == 15 and cal["temperature"] is None and cal["figure"] == "reliability.png"
    assert sum(b["n"] for b in cal["reliability"]) == cal["pixels"] == s["auc_pixels"]
    with Image.open(out / "reliability.png") as im:
        assert im.format == "PNG" and im.size[0] > 500
    md = (out / "summary.md").read_text()
    for head in ("## Lesion-wise detection", "## Results by object size", "## Calibration", "| lesion_f1 |"):
        assert head in md, head


def test_lesion_options_and_given_size_bins(run_copy):
    s = evaluate_run(
        run_copy, split="test", device="cpu", lesion_overlap=0.5, min_component=5, size_bins="0.05,0.08"
    )
    assert s["lesion"]["overlap"] == 0.5 and s["lesion"]["min_component"] == 5
    assert ">= 0.5" in s["lesion"]["rule"]
    assert s["by_size"]["rule"] == "given" and s["by_size"]["edges"] == [0.0, 0.05, 0.08, 1.0]
    assert [b["bin"] for b in s["by_size"]["bins"]][-3:] == ["small", "medium", "large"]
    for r in read_rows(run_copy / "eval" / "test" / "per_image.csv"):
        v = float(r["fg_fraction"])
        assert r["size_bin"] == (
            "empty" if v == 0 else "small" if v <= 0.05 else "medium" if v <= 0.08 else "large"
        )


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--lesion-overlap", "1.5"], "--lesion-overlap"),
        (["--min-component", "-2"], "--min-component"),
        (["--size-bins", "0.2,0.1"], "--size-bins"),
        (["--size-bins", "abc"], "--size-bins"),
        (["--metric", "lesion_f2"], "unknown metric 'lesion_f2'. Did you mean"),
    ],
)
def test_bad_flags_are_one_red_line_and_write_nothing(run_copy, flags, match):
    r = runner.invoke(app, ["evaluate", str(run_copy), "--device", "cpu", *flags])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0], r.stderr
    assert not (run_copy / "eval").exists()


def test_cli_flags_reach_the_summary_and_the_terminal(run_copy):
    r = runner.invoke(
        app,
        ["evaluate", str(run_copy), "--device", "cpu", "--lesion-overlap", "0.5", "--min-component", "3",
         "--size-bins", "0.07", "--calibrate", "--metric", "ece"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "--metric is used only when several runs are compared" in r.output
    s = json.loads((run_copy / "eval" / "test" / "summary.json").read_text())
    assert (s["lesion"]["overlap"], s["lesion"]["min_component"]) == (0.5, 3)
    assert s["by_size"]["edges"] == [0.0, 0.07, 1.0] and s["calibration"]["temperature"]["fitted_on"] == "val"
    for text in (
        "lesions (one predicted component covers >= 0.5",
        "by object size",
        "calibration (",
        "with T =",
    ):
        assert text in r.output, text


def test_evaluate_several_runs_compares_chosen_metrics_per_size_bin(tiny_project, tmp_path):
    cfg = tiny_project["cfg"]
    a = save_run(tmp_path / "runs" / DATASET / "bce" / "a", cfg, tiny_project["model"])
    b = save_run(tmp_path / "runs" / DATASET / "bce" / "b", cfg, fit_tiny(cfg, steps=15, seed=1))
    res = evaluate_runs(
        [a, b], out=tmp_path / "cmp", split="test", device="cpu", metrics=["lesion_f1", "ece"]
    )
    rows = read_rows(tmp_path / "cmp" / "comparison.csv")
    assert {r["metric"] for r in rows} == {"lesion_f1", "ece"}
    assert {r["direction"] for r in rows if r["metric"] == "ece"} == {"lower"}
    bins = res["comparison"].bins[0]
    assert [b for b, _ in bins] == ["empty", "small", "large"]  # one image each: the tertiles of two targets
    per_bin = [r for r in rows if r["size_bin"] == "small" and r["metric"] == "lesion_f1"]
    assert [int(r["n_images"]) for r in per_bin] == [1, 1]
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "### By object size" in md and "### Lesion recall by component area" in md
    assert "| run | Lesion F1 | ECE |" in md  # the chosen metrics, readable titles
    # imbaseg compare --metric: the same choice for the figure's tables and the terminal
    from imbaseg.cli import viz_cmds

    viz = typer.Typer()
    viz.command("compare", **viz_cmds.compare.typer_command_kwargs)(user_errors(viz_cmds.compare))
    viz.command("other")(lambda: None)
    out = tmp_path / "fig" / "ab.png"
    r = runner.invoke(viz, ["compare", str(a), str(b), "--metric", "ece", "lesion_fp", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "p Holm (ece)" in r.output and "FP components" in r.output
    assert {row["metric"] for row in read_rows(out.with_name("ab_comparison.csv"))} == {"ece", "lesion_fp"}
    r = runner.invoke(viz, ["compare", str(a), str(b), "--metric", "eec", "--out", str(out)])
    assert r.exit_code == 2 and "Did you mean 'ece'" in r.stderr


# ----------------------------------------------------------------------------- the comparison layer


def fake(name: str, values: dict[str, dict[str, float]], bins=None, loss="dice") -> EvaluatedRun:
    """A run with per-image ``values`` {metric: {id: value}} and size bins {id: bin}."""
    ids = sorted(next(iter(values.values())))
    cols = {m: np.array([v[i] for i in ids], dtype=float) for m, v in values.items()}
    size_bins = None if bins is None else [bins[i] for i in ids]
    per_image = PerImage(Path(name) / "per_image.csv", ids, cols, size_bins)
    loss_cfg = {"name": loss, "params": {}, "terms": None}
    return EvaluatedRun(Path("runs") / "d" / loss / name, "test", "d", loss_cfg, per_image, label=name)


IDS = [f"i{k}" for k in range(8)]
BINS = dict(zip(IDS, ["small"] * 3 + ["large"] * 3 + ["empty"] * 2, strict=True))


def test_size_bins_are_tested_like_the_whole_split():
    rng = np.random.default_rng(0)
    runs = [fake(n, {"dice": dict(zip(IDS, rng.random(8), strict=True))}, BINS) for n in ("a", "b", "c")]
    g = make_group("d", "test", [Entry(r.label, [r]) for r in runs])
    c = compare_groups([g], metrics=("dice",), n_boot=500)
    assert [b for b, _ in c.bins[0]] == ["empty", "small", "large"]
    for b, ids in c.bins[0]:
        direct = analyse(g.array("dice", ids), bootstrap_draws(1, len(ids), 500, 0), 0, True)
        st = c.size[(0, b, "dice")]
        np.testing.assert_array_equal(st.ci_low, direct.ci_low)
        np.testing.assert_array_equal(st.p_holm, direct.p_holm)  # Holm over the runs, within the bin
    csv_rows = list(csv.DictReader(comparison_csv(c).splitlines()))
    assert [r["size_bin"] for r in csv_rows] == ["all"] * 3 + ["empty"] * 3 + ["small"] * 3 + ["large"] * 3


def test_runs_with_different_bins_are_refused_and_runs_without_bins_skip_them():
    values = {"dice": dict.fromkeys(IDS, 0.5)}
    other = dict(BINS, i0="large")
    g = make_group(
        "d", "test", [Entry("a", [fake("a", values, BINS)]), Entry("b", [fake("b", values, other)])]
    )
    with pytest.raises(UserError, match=r"put image 'i0' in different size bins"):
        compare_groups([g], metrics=("dice",), n_boot=50)
    g = make_group("d", "test", [Entry("a", [fake("a", values, BINS)]), Entry("b", [fake("b", values)])])
    assert compare_groups([g], metrics=("dice",), n_boot=50).bins[0] is None


def test_undefined_values_are_compared_where_every_run_has_one():
    nan = float("nan")
    a = {"lesion_recall": dict(zip(IDS, [0.5, nan, 1.0, 0.2, nan, 0.9, 0.4, 0.3], strict=True))}
    b = {"lesion_recall": dict(zip(IDS, [0.6, 0.7, nan, 0.1, nan, 0.8, 0.5, 0.9], strict=True))}
    g = make_group("d", "test", [Entry("a", [fake("a", a)]), Entry("b", [fake("b", b)])])
    st = compare_groups([g], metrics=("lesion_recall",), n_boot=300).stats[(0, "lesion_recall")]
    keep = ["i0", "i3", "i5", "i6", "i7"]  # defined in both runs
    direct = analyse(g.array("lesion_recall", keep), bootstrap_draws(1, 5, 300, 0), 0, True)
    assert st.n_images == 5
    np.testing.assert_array_equal(st.mean, direct.mean)
    np.testing.assert_array_equal(st.p, direct.p)
    none = {"lesion_recall": dict.fromkeys(IDS, nan)}
    g = make_group("d", "test", [Entry("a", [fake("a", none)]), Entry("b", [fake("b", none)])])
    c = compare_groups([g], metrics=("lesion_recall",), n_boot=50)
    assert c.stats[(0, "lesion_recall")].n_images == 0
    assert all(r["mean"] is None for r in c.rows()) and "n/a" in comparison_markdown(c)
    # one run alone: its summary's mean over the defined values, with the count left out
    s = summarize_defined(list(a["lesion_recall"].values()))
    assert (
        s["n"] == 6
        and s["n_undefined"] == 2
        and s["mean"] == pytest.approx(np.nanmean(list(a["lesion_recall"].values())))
    )


def test_directions_and_metric_names():
    for m in ("ece", "brier", "lesion_fp", "lesion_missed", "hd95", "assd"):
        assert higher_is_better(m) is False, m
    for m in ("lesion_recall", "lesion_precision", "lesion_f1", "lesion_detected", "dice"):
        assert higher_is_better(m) is True, m
    g = make_group("d", "test", [Entry("a", [fake("a", {"dice": dict.fromkeys(IDS, 0.5)})])])
    with pytest.raises(UserError, match="unknown metric 'eec'. Did you mean 'ece'"):
        compare_groups([g], metrics=("eec",))
    with pytest.raises(
        UserError, match=r"has no 'ece' column .* imbaseg evaluate runs/d/dice/a --split test"
    ):
        compare_groups([g], metrics=("ece",))
    assert compare_groups([g], n_boot=20).metrics == ("dice",)  # only what every run has


def test_an_older_per_image_csv_is_read_without_the_new_columns(run_copy):
    evaluate_run(run_copy, split="test", device="cpu")
    path = run_copy / "eval" / "test" / "per_image.csv"
    rows = read_rows(path)
    old = ("id", "height", "width", "fg_fraction", "empty_case", *METRIC_NAMES[:10])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    pi = read_per_image(path)
    assert pi.metrics == METRIC_NAMES[:10] and pi.size_bins is None
    assert load_evaluated(run_copy).per_image.metrics == METRIC_NAMES[:10]
    with pytest.raises(UserError, match="lacks the column"):
        read_per_image(path, ("dice", "ece"))
