"""predict on new images: masks at the input's size, overlays, the run's threshold, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imbaseg.data.dataset import to_channels
from imbaseg.data.io import read_image, read_mask
from imbaseg.errors import UserError
from imbaseg.evaluation.inference import Predictor, plan_for
from imbaseg.evaluation.predict import CONTOUR, TINT, TINT_ALPHA, overlay, predict


@pytest.fixture
def real_pngs(shared_data, tmp_path) -> list[Path]:
    """Two real images converted to PNG: a DRIVE fundus (565x584 TIFF) and an ISIC lesion (JPG)."""
    drive = shared_data / "DRIVE" / "training" / "images" / "21_training.tif"
    isic = sorted((shared_data / "samples" / "ISIC2018").rglob("ISIC_*.jpg"))
    if not drive.is_file() or not isic:
        pytest.skip(f"DRIVE or ISIC sample images not found under {shared_data}")
    folder = tmp_path / "inputs"
    folder.mkdir()
    out = []
    for src, name in ((drive, "fundus.png"), (isic[0], "lesion.png")):
        Image.fromarray(read_image(src)).save(folder / name)
        out.append(folder / name)
    return out


def test_predict_two_real_pngs(tiny_project, real_pngs, tmp_path):
    run, cfg = tiny_project["run"], tiny_project["cfg"]
    out = tmp_path / "out"
    results = predict(run, real_pngs, out, device="cpu")
    assert [Path(r["input"]).name for r in results] == ["fundus.png", "lesion.png"]
    ref_predictor = Predictor(tiny_project["model"], plan_for(cfg), device="cpu")
    for f, r in zip(real_pngs, results, strict=True):
        image = read_image(f)
        mask = read_mask(out / f"{f.stem}_mask.png")
        assert (
            mask.shape == image.shape[:2] == (r["height"], r["width"])
        )  # native size, e.g. 584x565 for DRIVE
        assert set(np.unique(mask)) <= {0, 255}
        ref = ref_predictor.probs(to_channels(image, cfg.data.in_channels)) >= cfg.train.threshold
        np.testing.assert_array_equal(mask > 0, ref)
        assert r["fg_fraction"] == pytest.approx(ref.mean())
        ov = np.asarray(Image.open(out / f"{f.stem}_overlay.png"))
        assert ov.shape == (*image.shape[:2], 3)
        np.testing.assert_array_equal(ov, overlay(image, mask > 0))
    assert read_mask(out / "fundus_mask.png").shape == (584, 565)


def test_overlay_tint_and_contour():
    image = np.full((7, 8), 100, np.uint8)  # grey input is replicated to RGB
    mask = np.zeros((7, 8), bool)
    mask[1:6, 2:7] = True  # 5x5 square: its 16 border pixels are the contour, the 3x3 inside is tinted
    ov = overlay(image, mask)
    assert ov.shape == (7, 8, 3)
    np.testing.assert_array_equal(ov[~mask], np.full((int((~mask).sum()), 3), 100))
    inner = np.rint(
        (1 - TINT_ALPHA) * 100 + TINT_ALPHA * TINT
    )  # e.g. red: 0.65*100 + 0.35*255 = 154.25 -> 154
    np.testing.assert_array_equal(ov[2:5, 3:6].reshape(-1, 3), np.tile(inner, (9, 1)))
    edge = mask.copy()
    edge[2:5, 3:6] = False
    np.testing.assert_array_equal(ov[edge], np.tile(CONTOUR, (16, 1)))


def test_predict_folder_threshold_and_force(tiny_project, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (25, 20), dtype=np.uint8)).save(folder / "b.jpg")  # grey JPG
    (folder / "notes.txt").write_text("not an image")  # ignored inside a folder
    out = tmp_path / "out"
    res = predict(tiny_project["run"], [folder], out, threshold=0.05, device="cpu")
    assert [Path(r["input"]).name for r in res] == ["a.png", "b.jpg"]
    assert read_mask(out / "b_mask.png").shape == (25, 20)
    with pytest.raises(UserError, match="already exists; use --force"):
        predict(tiny_project["run"], [folder], out, device="cpu")
    res2 = predict(tiny_project["run"], [folder], out, threshold=0.95, device="cpu", force=True)
    assert res2[0]["fg_fraction"] <= res[0]["fg_fraction"]  # a higher threshold never adds foreground


@pytest.mark.parametrize(
    "case", ["missing", "unreadable", "empty_folder", "not_image", "same_stem", "threshold"]
)
def test_predict_bad_inputs(tiny_project, tmp_path, case):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    out = tmp_path / "out"
    kwargs = {}
    if case == "missing":
        inputs, match = [tmp_path / "nope.png"], "does not exist"
    elif case == "unreadable":
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        inputs, match = [good, bad], "cannot read input image .*broken.png"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        inputs, match = [tmp_path / "empty"], "holds no images"
    elif case == "not_image":
        (tmp_path / "x.csv").write_text("a,b\n")
        inputs, match = [tmp_path / "x.csv"], "not an image file"
    elif case == "same_stem":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "good.jpg")
        inputs, match = [good, tmp_path / "good.jpg"], "would both write good_mask.png"
    else:
        inputs, match, kwargs = [good], "strictly between 0 and 1", {"threshold": 1.0}
    with pytest.raises(UserError, match=match):
        predict(tiny_project["run"], inputs, out, device="cpu", **kwargs)
    assert not out.exists() or not any(out.iterdir())  # nothing written before the check failed


@pytest.mark.parametrize(
    "value,message",
    [
        ("auto", "auto needs validation masks"),
        ("1.5", "strictly between 0"),
        ("x", "give a number between 0 and 1"),
    ],
)
def test_predict_threshold_errors(value, message):
    from imbaseg.evaluation.predict import _check_threshold

    with pytest.raises(UserError, match=message):
        _check_threshold(value)
