"""compare: colours in the saved PNG, Dice titles from per_image.csv, selection, tables, errors, CLI."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import typer
from PIL import Image
from scipy.stats import wilcoxon
from typer.testing import CliRunner
from viz_helpers import write_prepared, write_run

from imbaseg.cli import viz_cmds
from imbaseg.cli.common import user_errors
from imbaseg.errors import UserError
from imbaseg.evaluation.comparison import label_runs, load_evaluated
from imbaseg.evaluation.report import read_per_image
from imbaseg.metrics import summarize
from imbaseg.viz import colors
from imbaseg.viz.compare import (
    MIN_PANEL_IN,
    Row,
    compare,
    load_figure_run,
    load_row,
    render_comparison,
    select_ids,
)
from imbaseg.viz.grid import save_figure


def _png(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _pixel(fig, ax, png, x, y):
    """RGB of the saved PNG at data coordinates (x=column, y=row) of ``ax``."""
    px, py = ax.transData.transform((x, y))
    return tuple(int(v) for v in png[int(round(png.shape[0] - py)), int(round(px))])


# ----------------------------------------------------------------------------- colours


def test_error_map_colours_and_field_of_view():
    target = np.array([[1, 1, 0, 0]], dtype=bool)
    pred = np.array([[1, 0, 1, 0]], dtype=np.uint8) * 255  # 0/255 like a saved prediction
    rgb = colors.error_map(pred, target)
    assert [tuple(c) for c in rgb[0]] == [(0, 255, 0), (255, 0, 255), (255, 0, 0), (0, 0, 0)]  # TP FN FP TN
    valid = np.array([[1, 1, 1, 0]], dtype=bool)
    assert tuple(colors.error_map(pred, target, valid)[0, 3]) == colors.OUTSIDE
    with pytest.raises(ValueError, match="differ"):
        colors.error_map(pred, target[:, :3])


def test_saved_png_shows_tp_green_fp_red_fn_magenta(tmp_path):
    # 40x60 target = left half; the prediction covers the top half: top-left TP, top-right FP,
    # bottom-left FN, bottom-right TN. Each quadrant is 20x30 image pixels, >= 60 PNG pixels wide.
    h, w = 40, 60
    target = np.zeros((h, w), bool)
    target[:, :30] = True
    pred = np.zeros((h, w), bool)
    pred[:20, :] = True
    image = np.full((h, w, 3), 128, np.uint8)
    row = Row("cvc", "x", image, target, None, [pred], [0.5], ["Dice Loss"])
    fig, axes = render_comparison([row])
    png_path, _ = save_figure(fig, tmp_path / "probe.png")
    png = _png(png_path)
    ax = axes[0][2]
    expected = {(15, 10): (0, 255, 0), (45, 10): (255, 0, 0), (15, 30): (255, 0, 255), (45, 30): (0, 0, 0)}
    for (x, y), rgb in expected.items():
        assert _pixel(fig, ax, png, x, y) == rgb, (x, y)
    # no blur: a pixel one image-pixel from the TP/FP edge is still pure green / red
    assert _pixel(fig, ax, png, 29.2, 10) == (0, 255, 0) and _pixel(fig, ax, png, 30.8, 10) == (255, 0, 0)


def test_png_pixel_size_is_figsize_times_dpi(two_runs):
    root, ra, rb, _ = two_runs
    out = compare([ra, rb], n=2, out=root / "Figures" / "cmp.png", root=root)
    with Image.open(out["png"]) as im:
        size = im.size
    assert out["pdf"].is_file() and out["pdf"].read_bytes()[:5] == b"%PDF-"
    w_in, h_in = out["figsize"]
    assert out["dpi"] == 200 and size == (round(w_in * 200), round(h_in * 200))
    # 4 columns of minimum-width panels (the 60-px images are narrower than that) plus margins
    assert 4 * MIN_PANEL_IN < w_in < 4 * MIN_PANEL_IN + 1.5


# ----------------------------------------------------------------------------- titles and labels


def test_titles_carry_the_loss_label_and_the_dice_of_per_image_csv(two_runs):
    root, ra, rb, _ = two_runs
    runs = [load_figure_run(r, root=root) for r in (ra, rb)]
    label_runs([r.run for r in runs])
    fig, axes = render_comparison([load_row(runs, i) for i in ("a", "c")])
    for r, sample_id in enumerate(("a", "c")):
        assert axes[r][0].get_title() == "Original" and axes[r][1].get_title() == "Ground truth"
        for k, run in enumerate((ra, rb)):
            with open(run / "eval" / "test" / "per_image.csv") as f:
                dice = {row["id"]: float(row["dice"]) for row in csv.DictReader(f)}[sample_id]
            title = axes[r][2 + k].get_title()
            assert title.endswith(f"Dice={dice:.3f}")
    assert axes[0][2].get_title().startswith("Dynamit Batch-Wise Loss")
    assert axes[0][3].get_title().startswith("Boundary Gaussian Loss")


def test_labels_one_per_run_or_per_column_and_disambiguation(two_runs):
    root, ra, rb, masks = two_runs
    runs = [load_evaluated(r) for r in (ra, rb)]
    assert label_runs(runs, ["A", "B"]) == ["A", "B"] == [r.label for r in runs]
    with pytest.raises(UserError, match="--labels"):
        label_runs(runs, ["A", "B", "C"])
    # two runs of the same loss: parameters are added, then the folder name
    rc = write_run(
        root,
        "synthetic-polyp",
        "boundary-gaussian",
        "r2",
        {i: m for i, m in masks.items()},
        masks,
        params={"sigma": 4},
    )
    rd = write_run(
        root,
        "synthetic-polyp",
        "boundary-gaussian",
        "r3",
        {i: m for i, m in masks.items()},
        masks,
        params={"sigma": 4},
    )
    runs = [load_evaluated(r) for r in (rb, rc, rd)]
    assert label_runs(runs) == [
        "Boundary Gaussian Loss",
        "Boundary Gaussian (σ=4) Loss (r2)",
        "Boundary Gaussian (σ=4) Loss (r3)",
    ]


# ----------------------------------------------------------------------------- selection


# Dice of two runs on five images:      gap = |a - b|   mean
DICE = np.array(
    [
        [0.90, 0.80],  # id1    0.10           0.85
        [0.50, 0.90],  # id2    0.40           0.70
        [0.60, 0.60],  # id3    0.00           0.60
        [0.95, 0.55],  # id4    0.40 (tie)     0.75
        [0.20, 0.30],
    ]
)  # id5   0.10           0.25
IDS = ["id1", "id2", "id3", "id4", "id5"]


@pytest.mark.parametrize(
    "mode,n,expected",
    [
        ("gap", 1, ["id2"]),  # id2 and id4 tie at 0.40: the smaller id first
        ("gap", 3, ["id2", "id4", "id1"]),  # then the 0.10 tie: id1 before id5
        ("best", 2, ["id1", "id4"]),
        ("worst", 2, ["id5", "id3"]),
        ("median", 1, ["id2"]),  # means 0.25 0.6 0.7 0.75 0.85 -> median 0.70
        ("gap", 9, ["id2", "id4", "id1", "id5", "id3"]),  # n beyond the count: all of them
    ],
)
def test_select_ids_table(mode, n, expected):
    assert select_ids(IDS, DICE, mode, n) == expected


def test_select_ids_rejects_bad_mode_and_n():
    with pytest.raises(UserError, match="Did you mean 'gap'"):
        select_ids(IDS, DICE, "gapp", 1)
    with pytest.raises(UserError, match="--n"):
        select_ids(IDS, DICE, "gap", 0)


def test_default_gap_picks_the_image_where_runs_differ_most(two_runs):
    root, ra, rb, _ = two_runs
    out = compare([ra, rb], out=root / "F" / "x.png", root=root)
    assert out["rows"] == [("synthetic-polyp", "c")]
    out = compare([ra, rb], ids=["b", "a"], out=root / "F" / "y.png", root=root)
    assert out["rows"] == [("synthetic-polyp", "b"), ("synthetic-polyp", "a")]
    with pytest.raises(UserError, match="Did you mean 'a'"):
        compare([ra, rb], select="ids", ids=["A"], out=root / "F" / "z.png", root=root)


def test_rows_grouped_by_dataset_in_the_order_given(two_runs):
    root, ra, rb, masks = two_runs
    img = np.zeros((40, 60, 3), np.uint8)
    write_prepared(root, "synthetic-lesion", {"q": (img, masks["a"]), "r": (img, masks["b"])})
    other = {"q": masks["a"], "r": masks["b"]}
    la = write_run(root, "synthetic-lesion", "dynamit-batch", "r1", other, other)
    lb = write_run(
        root, "synthetic-lesion", "boundary-gaussian", "r1", {"q": masks["b"], "r": masks["b"]}, other
    )
    out = compare([la, ra, lb, rb], out=root / "F" / "g.png", root=root)
    assert [d for d, _ in out["rows"]] == ["synthetic-lesion", "synthetic-polyp"]
    assert out["labels"] == ["Dynamit Batch-Wise Loss"] * 2 + ["Boundary Gaussian Loss"] * 2


# ----------------------------------------------------------------------------- tables


def test_tables_match_summarize_and_scipy_wilcoxon(two_runs):
    root, ra, rb, _ = two_runs
    out = compare([ra, rb], out=root / "Figures" / "t.png", root=root)
    assert out["csv"].name == "t_comparison.csv" and out["md"].name == "t_comparison.md"
    with open(out["csv"]) as f:
        rows = list(csv.DictReader(f))
    a, b = (
        read_per_image(ra / "eval" / "test" / "per_image.csv"),
        read_per_image(rb / "eval" / "test" / "per_image.csv"),
    )
    for label, per_image in (("Dynamit Batch-Wise Loss", a), ("Boundary Gaussian Loss", b)):
        for m in ("dice", "iou", "hd95"):
            s = summarize(per_image.column(m))
            got = next(r for r in rows if r["label"] == label and r["metric"] == m)
            assert float(got["mean"]) == pytest.approx(s["mean"], rel=1e-9)
            assert float(got["ci_low"]) == pytest.approx(s["ci_low"], rel=1e-9)
            assert float(got["ci_high"]) == pytest.approx(s["ci_high"], rel=1e-9)
    got = next(r for r in rows if r["metric"] == "dice" and r["p_value"])
    assert got["label"] == "Boundary Gaussian Loss" and got["reference"] == "Dynamit Batch-Wise Loss"
    x, y = a.column("dice", list("abcd")), b.column("dice", list("abcd"))
    assert float(got["p_value"]) == pytest.approx(wilcoxon(y, x).pvalue, rel=1e-9)
    assert next(r for r in rows if r["metric"] == "hd95")["direction"] == "lower"
    md = out["md"].read_text()
    assert "| Dynamit Batch-Wise Loss (reference) |" in md and "| Boundary Gaussian Loss | Dice |" in md


# ----------------------------------------------------------------------------- errors


def test_errors_for_missing_runs_eval_and_checkpoint(two_runs):
    root, ra, rb, _ = two_runs
    with pytest.raises(UserError, match="run folder not found"):
        compare([root / "runs" / "nope"], root=root)
    with pytest.raises(UserError, match="not a run folder"):
        compare([root / "runs"], root=root)
    shutil.rmtree(rb / "eval")
    with pytest.raises(UserError, match=r"no evaluation of the test split .* run imbaseg evaluate .* first"):
        compare([ra, rb], root=root)
    with pytest.raises(UserError, match="same run folder"):
        compare([ra, ra], root=root)


def test_stale_prediction_size_is_a_user_error(two_runs):
    root, ra, rb, _ = two_runs
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(ra / "eval" / "test" / "predictions" / "a.png")
    with pytest.raises(UserError, match="rerun imbaseg evaluate"):
        compare([ra, rb], ids=["a"], root=root)


# ----------------------------------------------------------------------------- CLI


def _app():
    app = typer.Typer()
    for name, fn in (("visualize-weights", viz_cmds.visualize_weights), ("compare", viz_cmds.compare)):
        app.command(name, **fn.typer_command_kwargs)(user_errors(fn))
    return app


def test_cli_compare_with_space_separated_labels(two_runs):
    root, ra, rb, _ = two_runs
    out = root / "Figures" / "cli.png"
    res = CliRunner().invoke(
        _app(),
        [
            "compare",
            str(ra),
            str(rb),
            "--labels",
            "Loss A",
            "Loss B",
            "--n",
            "2",
            "--out",
            str(out),
            "--root",
            str(root),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (
        out.is_file()
        and out.with_suffix(".pdf").is_file()
        and (root / "Figures" / "cli_comparison.md").is_file()
    )
    md = (root / "Figures" / "cli_comparison.md").read_text()
    assert "| Loss A (reference) |" in md and "| Loss B | Dice |" in md


def test_cli_compare_error_is_one_red_line(two_runs):
    root, ra, _, _ = two_runs
    res = CliRunner().invoke(_app(), ["compare", str(ra), "--select", "worstt", "--root", str(root)])
    assert res.exit_code == 2
    assert "Did you mean 'worst'" in res.output and "Traceback" not in res.output


def test_expand_variadic():
    f = viz_cmds.expand_variadic
    names = {"--sigma", "--ids"}
    assert f(["--sigma", "1", "3", "--out", "x"], names) == ["--sigma", "1", "--sigma", "3", "--out", "x"]
    assert f(["r1", "--ids", "a", "b"], names) == ["r1", "--ids", "a", "--ids", "b"]
    assert f(["--sigma", "-1", "2"], names) == [
        "--sigma",
        "-1",
        "--sigma",
        "2",
    ]  # a negative number is a value
    assert f(["--sigma", "1", "--", "2"], names) == ["--sigma", "1", "--", "2"]


def test_compare_names_the_evaluate_command_when_predictions_are_missing(tiny_root, tmp_path):
    from imbaseg.config import from_dict
    from imbaseg.evaluation.evaluate import evaluate_run
    from imbaseg.training.trainer import train

    cfg = from_dict(
        {
            "name": "viz-compare",
            "data": {"dataset": "synthetic-polyp", "root": str(tiny_root)},
            "model": {"base_channels": 4},
            "loss": {"name": "dice"},
            "optim": {"name": "adamw", "lr": 1e-3},
            "train": {"epochs": 1, "max_train_batches": 1, "device": "cpu", "amp": False},
        }
    )
    run = train(cfg).run_dir
    assert not (run / "eval").exists()
    command = f"imbaseg evaluate {run} --split test --data-root {tiny_root}"
    with pytest.raises(UserError, match=f"run {command} first"):
        compare([run], out=tmp_path / "one.png", root=tiny_root)
    assert not (run / "eval").exists()  # compare never evaluates
    evaluate_run(run, split="test", device="cpu", data_root=tiny_root)
    (
        run
        / "eval"
        / "test"
        / "predictions"
        / sorted(read_per_image(run / "eval" / "test" / "per_image.csv").ids)[0]
    ).with_suffix(".png").unlink()
    with pytest.raises(UserError, match=f"no saved prediction for 1 image.* run {command} first"):
        compare([run], out=tmp_path / "one.png", root=tiny_root)
    evaluate_run(run, split="test", device="cpu", data_root=tiny_root)
    out = compare([run], out=tmp_path / "one.png", root=tiny_root)
    assert out["labels"] == ["Dice Loss"] and out["png"].is_file() and out["csv"].is_file()


def test_cli_compare_without_predictions_is_one_line_with_the_command(two_runs):
    root, ra, rb, _ = two_runs
    shutil.rmtree(rb / "eval" / "test" / "predictions")
    res = CliRunner().invoke(_app(), ["compare", str(ra), str(rb), "--root", str(root)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "imbaseg evaluate" in res.output and "--split test" in res.output


def test_real_app_takes_space_separated_values(tmp_path):
    """The issue's `--sigma 1 3 6 10` through imbaseg's own app (needs the VariadicCommand registration)."""
    from imbaseg.cli.main import app

    mask = np.zeros((32, 48), bool)
    mask[8:20, 10:30] = True
    write_prepared(tmp_path, "cvc", {"k": (np.zeros((32, 48, 3), np.uint8), mask)})
    out = tmp_path / "w.png"
    res = CliRunner().invoke(
        app,
        [
            "visualize-weights",
            "--sigma",
            "1",
            "3",
            "6",
            "10",
            "--dataset",
            "cvc",
            "--out",
            str(out),
            "--root",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, (
        "register the command with app.command(name, **fn.typer_command_kwargs): " + res.output
    )
    assert out.is_file()


def test_long_titles_are_wrapped_and_never_overlap():
    h, w = 40, 60
    target = np.zeros((h, w), bool)
    target[10:30, 10:40] = True
    labels = [
        "Boundary Gaussian (σ=4) + 0.5 × Boundary DoU Loss",
        "Symmetric Unified Focal Loss",
        "Dice Loss",
    ]
    row = Row("cvc", "x", np.zeros((h, w, 3), np.uint8), target, None, [target] * 3, [1.0] * 3, labels)
    fig, axes = render_comparison([row])
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in axes[0]]
    panels = [ax.get_window_extent(renderer) for ax in axes[0]]
    for box, panel in zip(boxes, panels, strict=True):
        assert box.width <= panel.width  # each title within its panel's width
    for left, right in zip(boxes[:-1], boxes[1:], strict=True):
        assert left.x1 < right.x0  # neighbours do not touch
    assert axes[0][2].get_title().count("\n") == 2  # the compound label took two lines, then the Dice
