"""imbaseg export: the ONNX (onnxruntime, CPU) and TorchScript graphs against predict on the run folder.

The reference is ``Predictor.probs`` / ``predict`` on the run folder (torch, eager). The graphs hold the
preprocessing, so they see the raw uint8 image: real images of several sizes (DRIVE 584x565, a CVC frame
288x384, a 333x517 crop) and synthetic odd and tiny sizes.

TorchScript runs aten's own resize: probabilities within 1e-4 and identical masks, always. ONNX computes
the antialiased resize as matrix products (``resize_matrices``), equal to aten's up to float32 rounding
(<= 6e-5 grey levels measured); the resized image is then rounded to uint8 as ``imbaseg.data.resize``
does, so a value that lies within that rounding of a .5 grey level can round the other way, and the
network turns one grey level into a larger change of the probabilities (README "Export" has the measured
numbers). The ONNX checks state exactly that: within 1e-4 when no resized value is within 1e-4 of a .5
grey level (``near_ties`` = 0, e.g. every native-size run), and masks that differ only where the
probabilities' difference can cross the threshold; the counts are printed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from eval_helpers import DATASET, save_run
from PIL import Image
from typer.testing import CliRunner

from imbaseg.cli.common import user_errors
from imbaseg.cli.eval_cmds import predict as predict_cmd
from imbaseg.cli.export_cmd import export as export_cmd
from imbaseg.data.dataset import to_channels
from imbaseg.data.io import read_image, read_mask
from imbaseg.errors import UserError
from imbaseg.evaluation.export import ExportedModel, export_run, pad_like_model, read_exported
from imbaseg.evaluation.inference import Predictor, plan_for

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'imbaseg[onnx]') is not installed")

app = typer.Typer()
app.command("export")(user_errors(export_cmd))
app.command("predict")(user_errors(predict_cmd))
runner = CliRunner()
TOL = 1e-4  # probabilities: onnxruntime's kernels differ from torch's by float32 rounding (measured <= 1e-5)


def one_red_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def runs(tiny_project, tmp_path_factory) -> dict:
    """The trained tiny run (resized to 32x32 in training) and the same weights as a native-size run."""
    import copy

    root = tmp_path_factory.mktemp("export-runs")
    resize = root / "runs" / DATASET / "bce" / "resize"
    shutil.copytree(tiny_project["run"], resize)
    cfg = copy.deepcopy(tiny_project["cfg"])
    cfg.data.size = None
    native = save_run(root / "runs" / DATASET / "bce" / "native", cfg, tiny_project["model"])
    return {"resize": (resize, tiny_project["cfg"]), "native": (native, cfg), "model": tiny_project["model"]}


@pytest.fixture(scope="module")
def exports(runs) -> dict:
    """Every run x format as probabilities, and the resized run's masks (thresholds inside)."""
    out = {}
    for kind in ("resize", "native"):
        for fmt in ("onnx", "torchscript"):
            suffix = ".onnx" if fmt == "onnx" else ".pt"
            path = runs[kind][0] / "export" / f"probs{suffix}"
            out[kind, fmt, "probabilities"] = export_run(runs[kind][0], fmt, out=path, probabilities=True)
    for fmt in ("onnx", "torchscript"):
        out["resize", fmt, "mask"] = export_run(runs["resize"][0], fmt)
    return out


def synthetic_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {f"{h}x{w}": rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for h, w in [(45, 61), (7, 5), (16, 16), (17, 40)]}  # odd, below the multiple, at it, one side


@pytest.fixture(scope="module")
def real_images(shared_data) -> dict[str, np.ndarray]:
    drive = shared_data / "DRIVE" / "test" / "images" / "01_test.tif"
    cvc = shared_data / "samples" / "CVC-ClinicDB" / "Original" / "1.tif"
    if not drive.is_file() or not cvc.is_file():
        pytest.skip(f"DRIVE 01_test.tif or CVC-ClinicDB 1.tif not found under {shared_data}")
    fundus = read_image(drive)
    images = {"drive": fundus, "cvc": read_image(cvc), "odd": fundus[100:433, 20:537]}
    assert [a.shape[:2] for a in images.values()] == [(584, 565), (288, 384), (333, 517)]
    return images


def near_ties(image: np.ndarray, size) -> int:
    """Resized values (aten, float32) within 1e-4 of a .5 grey level: where another float32 summation order
    may round to the other uint8 value. 0 without a resize (``size`` None)."""
    import torch
    import torch.nn.functional as F

    if size is None:
        return 0
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()
    r = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return int(((r - r.floor() - 0.5).abs() < 1e-4).sum())


def check_probabilities(exports, runs, kind, fmt, images):
    model = ExportedModel(exports[kind, fmt, "probabilities"]["file"], "cpu")
    cfg = runs[kind][1]
    predictor = Predictor(runs["model"], plan_for(cfg), device="cpu")
    for name, image in images.items():
        ref = predictor.probs(to_channels(image, 3))
        got = model.run(image[None])[0]
        assert got.shape == image.shape[:2] and got.dtype == np.float32, name
        worst, ties = float(np.abs(got - ref).max()), near_ties(image, cfg.data.size)
        print(f"{kind} {fmt} {name}: largest |p - p_ref| {worst:.2e}, near ties {ties}")
        if fmt == "torchscript" or ties == 0:
            assert worst < TOL, name


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", ["resize", "native"])
def test_probabilities_match_the_run_folder_on_odd_and_tiny_sizes(exports, runs, kind, fmt):
    check_probabilities(exports, runs, kind, fmt, synthetic_images())


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", ["resize", "native"])
def test_probabilities_match_the_run_folder_on_real_images(exports, runs, kind, fmt, real_images):
    check_probabilities(exports, runs, kind, fmt, real_images)


def test_a_batch_equals_its_images_one_by_one(exports):
    """Dynamic N as well as H, W: a batch of three 50x70 images gives each image's own output."""
    batch = np.random.default_rng(2).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    for fmt in ("onnx", "torchscript"):
        model = ExportedModel(exports["resize", fmt, "probabilities"]["file"], "cpu")
        whole = model.run(batch)
        for k in range(3):
            np.testing.assert_allclose(whole[k], model.run(batch[k : k + 1])[0], atol=1e-6)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_predict_with_the_exported_model_writes_the_run_folders_masks(exports, runs, fmt, real_images,
                                                                     tmp_path):
    """imbaseg predict MODEL (mask graph, threshold inside) against imbaseg predict RUN_DIR."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, image in {**real_images, **synthetic_images()}.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    run, cfg = runs["resize"]
    a, b = tmp_path / "run", tmp_path / "model"
    r = runner.invoke(app, ["predict", str(run), str(folder), "-o", str(a), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["predict", exports["resize", fmt, "mask"]["file"], str(folder), "-o", str(b)])
    assert r.exit_code == 0, r.output
    predictor = Predictor(runs["model"], plan_for(cfg), device="cpu")
    probs = ExportedModel(exports["resize", fmt, "probabilities"]["file"])
    differ = 0
    for f in sorted(folder.iterdir()):
        ref, got = read_mask(a / f"{f.stem}_mask.png"), read_mask(b / f"{f.stem}_mask.png")
        assert got.shape == ref.shape and set(np.unique(got)) <= {0, 255}
        off = ref != got
        if off.any():  # only where the probabilities' difference crosses the threshold
            image = read_image(f)
            p = predictor.probs(to_channels(image, 3))
            ties = near_ties(image, cfg.data.size)
            band = TOL if ties == 0 else np.abs(probs.run(image[None])[0] - p).max()
            assert np.abs(p[off] - cfg.train.threshold).max() <= band, f.name
        differ += int(off.sum())
        assert (b / f"{f.stem}_overlay.png").is_file()
    print(f"{fmt}: {differ} mask pixels differ from predict on the run folder")
    if fmt == "torchscript":
        assert differ == 0


def test_temperature_and_threshold_inside_the_graph(runs, tmp_path):
    """--temperature 2 --threshold 0.3: the mask of predict RUN_DIR --temperature 2 --threshold 0.3, and
    probabilities sigmoid(logit(p) / 2) (imbaseg.evaluation.calibrate.apply_temperature)."""
    from imbaseg.evaluation.calibrate import apply_temperature
    from imbaseg.evaluation.predict import predict

    run, cfg = runs["resize"]
    mask_file = export_run(run, "torchscript", out=tmp_path / "m.pt", temperature="2", threshold=0.3)["file"]
    prob_file = export_run(run, "torchscript", out=tmp_path / "p.pt", temperature=2.0, probabilities=True)
    image = np.random.default_rng(8).integers(0, 256, (41, 57, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    predict(run, [tmp_path / "x.png"], tmp_path / "out", threshold=0.3, temperature="2", device="cpu")
    want = read_mask(tmp_path / "out" / "x_mask.png")
    np.testing.assert_array_equal(ExportedModel(mask_file).run(image[None])[0], want)
    p = Predictor(runs["model"], plan_for(cfg), device="cpu").probs(image)
    got = ExportedModel(prob_file["file"]).run(image[None])[0]
    assert np.abs(got - apply_temperature(p, 2.0)).max() < TOL
    assert prob_file["temperature"] == 2.0 and prob_file["threshold"] == cfg.train.threshold


def test_grey_run_and_float_input(tiny_project, tmp_path):
    """A 1-channel run: the graph takes the luminance of the RGB input as to_channels does; --dtype
    float32: float images, resized as floats (no rounding to uint8), as Predictor does for float input."""
    import copy

    import torch

    from imbaseg.training.run_dir import build_model

    cfg = copy.deepcopy(tiny_project["cfg"])
    cfg.data.in_channels = 1
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    run = save_run(tmp_path / "grey", cfg, model)
    image = np.random.default_rng(3).integers(0, 256, (37, 29, 3), dtype=np.uint8)
    predictor = Predictor(model, plan_for(cfg), device="cpu")
    grey = export_run(run, "torchscript", probabilities=True)
    got = ExportedModel(grey["file"]).run(image[None])[0]
    assert np.abs(got - predictor.probs(to_channels(image, 1))).max() < TOL
    flt = export_run(run, "onnx", out=tmp_path / "f.onnx", probabilities=True, dtype="float32")
    lum = to_channels(image, 1).astype(np.float32)
    got = ExportedModel(flt["file"]).run(np.repeat(lum, 3, axis=-1)[None])[0]
    assert np.abs(got - predictor.probs(lum)).max() < TOL


def test_sidecar_and_embedded_description(exports, runs):
    info = exports["resize", "onnx", "mask"]
    sidecar = json.loads(Path(info["sidecar"]).read_text())
    assert Path(info["file"]) == runs["resize"][0] / "export" / "best.onnx"
    assert Path(info["sidecar"]).name == "best.onnx.json"
    cfg = runs["resize"][1]
    assert sidecar["threshold"] == cfg.train.threshold and sidecar["temperature"] is None
    assert sidecar["training_size"] == [32, 32] and sidecar["dataset"] == DATASET
    assert sidecar["loss"] == "bce" and sidecar["imbaseg_version"]
    assert "z-score" in sidecar["normalization"] and sidecar["opset"] == 17
    assert sidecar["input"]["dtype"] == "uint8" and sidecar["output"]["name"] == "mask"
    assert read_exported(info["file"]) == sidecar  # the same description inside the model file
    ts = exports["resize", "torchscript", "mask"]
    assert read_exported(ts["file"])["format"] == "torchscript" and ts["opset"] is None
    assert exports["native", "onnx", "probabilities"]["training_size"] is None


@pytest.mark.parametrize("h", [1, 5, 15, 16, 17, 31, 32, 33, 47, 64, 65])
def test_the_graphs_padding_is_the_models(h):
    import torch

    from imbaseg.models.unet import pad_to_multiple

    for w in (1, 9, 16, 17, 33, 48):
        x = torch.randn(1, 2, h, w)
        torch.testing.assert_close(pad_like_model(x, 16), pad_to_multiple(x, 16), rtol=0, atol=0)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--format", "onnxx"], "unknown export format 'onnxx'. Did you mean 'onnx'?"),
        (["--opset", "99"], "--opset 99 is not supported here"),
        (["--opset", "10"], "writes opsets 11 to 20"),
        (["--checkpoint", "middle"], "unknown checkpoint 'middle'"),
        (["--dtype", "int16"], "unknown --dtype 'int16'"),
        (["--out", "model.onnx.txt"], "a onnx export is a .onnx file"),
        (["--temperature", "-1"], "bad --temperature '-1'"),
    ],
)
def test_export_errors_are_one_red_line(runs, args, expected):
    assert expected in one_red_line(runner.invoke(app, ["export", str(runs["resize"][0]), *args]))


def test_missing_checkpoint_existing_file_and_patch_runs(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["resize"][0], run, ignore=shutil.ignore_patterns("export"))
    (run / "checkpoints" / "best.pt").unlink()
    line = one_red_line(runner.invoke(app, ["export", str(run), "-f", "torchscript"]))
    assert "has no checkpoints/best.pt" in line and "--checkpoint last" in line
    r = runner.invoke(app, ["export", str(run), "-f", "torchscript", "--checkpoint", "last"])
    assert r.exit_code == 0, r.output
    assert "export/last.pt" in r.output.replace("\\", "/")
    line = one_red_line(runner.invoke(app, ["export", str(run), "-f", "torchscript", "--checkpoint", "last"]))
    assert "already exists; use --force" in line
    assert runner.invoke(app, ["export", str(run), "-f", "torchscript", "--checkpoint", "last",
                               "--force"]).exit_code == 0
    cfg = runs["resize"][1]
    patch = save_run(tmp_path / "patch", type(cfg)(**{**cfg.__dict__}), runs["model"])
    text = (patch / "config.yaml").read_text().replace("patch_size: null", "patch_size:\n  - 16\n  - 16")
    (patch / "config.yaml").write_text(text)
    patch_ckpt = patch / "checkpoints" / "best.pt"
    from imbaseg.config import load_config
    from imbaseg.training.run_dir import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(patch_ckpt)
    ckpt["config"] = load_config(patch / "config.yaml").to_dict()
    save_checkpoint(ckpt, patch_ckpt)
    assert "sliding windows" in one_red_line(runner.invoke(app, ["export", str(patch)]))


def test_predict_refuses_what_an_export_fixed_and_foreign_files(exports, runs, tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(synthetic_images()["45x61"]).save(image)
    mask_model = exports["resize", "onnx", "mask"]["file"]
    for flags, expected in [(["--tta"], "--tta apply to a run folder"),
                            (["--temperature", "2"], "--temperature apply to a run folder"),
                            (["--threshold", "0.3"], "export it with --probabilities")]:
        line = one_red_line(runner.invoke(app, ["predict", mask_model, str(image), "-o", str(tmp_path / "o"),
                                                *flags]))
        assert expected in line
    probs = exports["resize", "onnx", "probabilities"]["file"]
    r = runner.invoke(app, ["predict", probs, str(image), "-o", str(tmp_path / "p"), "--threshold", "0.3"])
    assert r.exit_code == 0, r.output
    got = read_mask(tmp_path / "p" / "x_mask.png") > 0
    np.testing.assert_array_equal(got, ExportedModel(probs).run(read_image(image)[None])[0] >= 0.3)
    checkpoint = runs["resize"][0] / "checkpoints" / "best.pt"  # a checkpoint is not an export
    r = runner.invoke(app, ["predict", str(checkpoint), str(image), "-o", str(tmp_path / "c")])
    line = one_red_line(r)
    assert "cannot load" in line and "as an exported imbaseg model" in line
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(Path(mask_model).read_bytes()[:1000])
    line = one_red_line(runner.invoke(app, ["predict", str(broken), str(image), "-o", str(tmp_path / "b")]))
    assert "cannot load" in line
    assert not (tmp_path / "c").exists() and not (tmp_path / "b").exists()  # nothing written
    with pytest.raises(UserError, match="not found"):
        ExportedModel(tmp_path / "missing.onnx")
