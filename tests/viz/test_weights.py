"""visualize-weights: the panels are the loss library's weight map, the sample choice, fallbacks, errors."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner
from viz_helpers import blob, write_prepared

from imbaseg.cli import viz_cmds
from imbaseg.cli.common import user_errors
from imbaseg.data.prepare import prepare_dataset
from imbaseg.errors import UserError
from imbaseg.losses import boundary_gaussian_weight_map
from imbaseg.viz.weights import Sample, choose_datasets, pick_id, render_weights, visualize_weights


def _sample(h=48, w=64, name="cvc"):
    rng = np.random.default_rng(1)
    mask = blob(h, w, 20, 30, 9) | blob(h, w, 40, 55, 3)
    return Sample(name, "s1", rng.integers(0, 255, (h, w, 3), dtype=np.uint8), mask)


def test_weight_panels_are_the_loss_library_function():
    s = _sample()
    sigmas = [1, 3, 6, 10]
    fig, _ = render_weights([s], sigmas)
    weight_axes = fig.axes[2:6]
    for ax, sigma in zip(weight_axes, sigmas, strict=True):
        (im,) = ax.get_images()
        expected = boundary_gaussian_weight_map(s.mask, sigma=float(sigma)).numpy()
        np.testing.assert_array_equal(np.asarray(im.get_array()), expected)
        assert im.get_clim() == (0.0, 1.0) and im.get_interpolation() == "nearest"
        assert ax.get_title() == f"σ = {sigma}"
    # the mask panel: the mask itself, no resampling blur
    (mask_im,) = fig.axes[1].get_images()
    np.testing.assert_array_equal(np.asarray(mask_im.get_array()), s.mask.astype(np.uint8))
    assert mask_im.get_interpolation() == "nearest"
    # one shared colorbar from 0 to 1
    cbar = [ax for ax in fig.axes if ax.get_label() == "colorbar"]
    assert len(cbar) == 1 and tuple(cbar[0].get_ylim()) == (0.0, 1.0)


def test_weight_map_by_hand_on_a_line():
    # 1x5 row, foreground at x=0: P=1, N=4 -> w+ = min(1, 4/1) = 1, b = 1/4 (eps negligible);
    # background weight min(1, 0.25 + exp(-d^2 / 2)) for d = 1..4 at sigma 1.
    mask = np.array([[1, 0, 0, 0, 0]], dtype=bool)
    fig, maps = render_weights([Sample("cvc", "x", np.zeros((1, 5), np.uint8), mask)], [1])
    d = np.arange(1, 5)
    expected = np.concatenate([[1.0], np.minimum(1.0, 0.25 + np.exp(-(d**2) / 2.0))])
    np.testing.assert_allclose(maps[0][0][0], expected, rtol=1e-5)


def test_rows_keep_the_image_aspect():
    # CVC is 4:3 (W:H); a square sample in the other row keeps 1:1
    fig, _ = render_weights([_sample(288, 384), _sample(64, 64, "isic2018")], [2])
    w_in, h_in = fig.get_size_inches()
    for ax, (h, w) in ((fig.axes[0], (288, 384)), (fig.axes[3], (64, 64))):
        box = ax.get_position()
        assert (box.height * h_in) / (box.width * w_in) == pytest.approx(h / w, rel=0.02)


def _manifest_root(tmp_path, fractions):
    """Prepared 'cvc' with one image per foreground fraction in ``fractions`` (masks of k of 100 pixels)."""
    samples = {}
    for k, f in enumerate(fractions):
        mask = np.zeros((10, 10), bool)
        mask.flat[: int(round(f * 100))] = True
        samples[f"i{k}"] = (np.zeros((10, 10), np.uint8), mask)
    write_prepared(tmp_path, "cvc", samples)
    return tmp_path / "data" / "prepared" / "cvc"


@pytest.mark.parametrize(
    "fractions,expected",
    [
        ([0.10, 0.30, 0.20, 0.50, 0.40], "i1"),  # sorted 0.1 0.2 0.3 0.4 0.5 -> the median 0.3 is i1
        ([0.40, 0.10, 0.30, 0.20], "i3"),  # even count: the lower middle 0.2 (i3)
        ([0.20, 0.20, 0.20], "i1"),  # ties: sorted by id i0 i1 i2 -> the middle one
    ],
)
def test_pick_id_is_the_median_foreground_fraction(tmp_path, fractions, expected):
    assert pick_id(_manifest_root(tmp_path, fractions)) == expected


def test_pick_id_given_and_unknown(tmp_path):
    prepared = _manifest_root(tmp_path, [0.1, 0.2])
    assert pick_id(prepared, "i0") == "i0"
    with pytest.raises(UserError, match="Did you mean 'i1'"):
        pick_id(prepared, "I1x")


def test_fallback_to_synthetic_and_prepared_real_first(tmp_path):
    for name in ("synthetic-polyp", "synthetic-lesion", "synthetic-vessel"):
        prepare_dataset(name, root=tmp_path, n=3, size=(32, 32))
    assert [n for n, _ in choose_datasets(None, tmp_path)] == [
        "synthetic-polyp",
        "synthetic-lesion",
        "synthetic-vessel",
    ]
    _manifest_root(tmp_path, [0.2, 0.3])  # now a real dataset (cvc) is prepared: only it is drawn
    assert [n for n, _ in choose_datasets(None, tmp_path)] == ["cvc"]


def test_named_dataset_errors(tmp_path):
    with pytest.raises(UserError, match="Did you mean 'drive'"):
        choose_datasets(["drivee"], tmp_path)
    with pytest.raises(UserError, match="imbaseg prepare drive"):
        choose_datasets(["drive"], tmp_path)
    with pytest.raises(UserError, match="--sigma"):
        render_weights([_sample()], [0])
    _manifest_root(tmp_path, [0.2, 0.3])
    with pytest.raises(UserError, match="one id per dataset"):
        visualize_weights([2], ["cvc"], ids=["i0", "i1"], root=tmp_path)


def test_visualize_weights_writes_png_and_pdf_of_the_expected_size(tmp_path):
    _manifest_root(tmp_path, [0.2, 0.3, 0.5])
    out = visualize_weights([1, 3], ["cvc"], root=tmp_path)
    assert out["png"] == tmp_path / "Figures" / "boundary_weights.png" and out["samples"] == [("cvc", "i1")]
    with Image.open(out["png"]) as im:
        size = im.size
    w_in, h_in = out["figsize"]
    assert size == (round(w_in * 200), round(h_in * 200))
    assert out["pdf"].read_bytes()[:5] == b"%PDF-"


def _app():
    app = typer.Typer()
    for name, fn in (("visualize-weights", viz_cmds.visualize_weights), ("compare", viz_cmds.compare)):
        app.command(name, **fn.typer_command_kwargs)(user_errors(fn))
    return app


def test_cli_space_separated_sigmas_and_errors(tmp_path):
    _manifest_root(tmp_path, [0.2, 0.3, 0.5])
    out = tmp_path / "w.png"
    res = CliRunner().invoke(
        _app(),
        [
            "visualize-weights",
            "--sigma",
            "2",
            "5",
            "--dataset",
            "cvc",
            "--id",
            "i2",
            "--out",
            str(out),
            "--root",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    assert out.is_file() and out.with_suffix(".pdf").is_file() and "cvc #i2" in res.output
    res = CliRunner().invoke(_app(), ["visualize-weights", "--dataset", "isic2018", "--root", str(tmp_path)])
    assert res.exit_code == 2 and "imbaseg prepare isic2018" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(
        _app(), ["visualize-weights", "--out", str(tmp_path / "w.jpg"), "--root", str(tmp_path)]
    )
    assert res.exit_code == 2 and "give a .png path" in res.output
