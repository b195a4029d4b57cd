"""train.trackers: TensorBoard and MLflow for real (the installed packages), read back with their own readers.

TensorBoard's events are read with ``EventAccumulator`` and compared with history.csv (float32, as the
event files store them); the MLflow store is queried with ``MlflowClient`` (float64, exact). Also: the
validation grid's colours recomputed from the saved weights, a resume after a SIGKILL continuing the same
TensorBoard folder and MLflow run, failures that warn once and let the run finish, evaluate's test metrics,
and rank 0 alone under torchrun.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_trainer import read_history, tiny_cfg
from typer.testing import CliRunner

from imbaseg.config import add_trackers, from_dict, load_config
from imbaseg.errors import UserError
from imbaseg.training.trainer import TrainerCallbacks, train

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
pytest.importorskip("mlflow", reason="the mlflow extra is not installed")

DRIVER = Path(__file__).with_name("train_driver.py")
RUNS = ("runs", "synthetic-polyp", "bce")


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow store made once: creating its tables takes 5-17 s here, copying it nothing."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def new_root(tiny_root: Path, parent: Path, template: Path) -> Path:
    """A project root sharing tiny_root's prepared data, with its own (empty) mlflow.db."""
    root = parent / "project"
    root.mkdir()
    (root / "data").symlink_to(tiny_root / "data")
    shutil.copy(template, root / "mlflow.db")
    return root


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def leaves(d: dict, prefix: str = "") -> dict:
    """The config's leaves as MLflow params (text), flattened here independently of the library."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


# ----------------------------------------------------------------------------- config


def test_the_registry_checks_names_with_a_suggestion():
    with pytest.raises(UserError, match="unknown tracker 'tensorbord' in train.trackers. Did you mean "
                                        "'tensorboard'"):
        from_dict({"train": {"trackers": ["tensorbord"]}})
    with pytest.raises(UserError, match="names 'mlflow' twice"):
        from_dict({"train": {"trackers": ["mlflow", "mlflow"]}})
    with pytest.raises(UserError, match="train.image_grid_every' must be >= 0"):
        from_dict({"train": {"image_grid_every": -1}})
    cfg = from_dict({"train": {"trackers": ["mlflow"]}})
    cfg = add_trackers(cfg, ["tensorboard", "mlflow", "tensorboard"])
    assert cfg.train.trackers == ["mlflow", "tensorboard"]
    with pytest.raises(UserError, match="Did you mean 'mlflow'"):
        add_trackers(from_dict({}), ["mlfow"])


def test_tracker_flag_adds_to_the_config():
    from imbaseg.cli.main import app

    r = CliRunner().invoke(app, ["train", "--dataset", "synthetic-polyp", "--tracker", "mlflow", "--tracker",
                                 "tensorboard", "--set", "train.trackers=[mlflow]", "--print-config"])
    assert r.exit_code == 0, r.output
    assert "trackers:\n  - mlflow\n  - tensorboard\n" in r.output
    r = CliRunner().invoke(app, ["train", "--dataset", "synthetic-polyp", "--tracker", "tensorbord",
                                 "--print-config"])
    assert r.exit_code == 2 and "Did you mean 'tensorboard'" in r.output


def test_a_missing_package_fails_before_the_run_folder_exists(tiny_root, tmp_path, monkeypatch,
                                                              mlflow_template):
    import importlib.util

    root = new_root(tiny_root, tmp_path, mlflow_template)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install 'imbaseg\[mlflow\]'"):
        train(tiny_cfg(root, name="no-mlflow", train={"trackers": ["mlflow"]}))
    assert not (root / "runs").exists()


# ----------------------------------------------------------------------------- one tracked run


@pytest.fixture(scope="module")
def tracked(tiny_root, tmp_path_factory, mlflow_template) -> dict:
    """3 epochs through the CLI with --tracker tensorboard --tracker mlflow, the grid at epoch 3 only."""
    from imbaseg.cli.main import app

    root = new_root(tiny_root, tmp_path_factory.mktemp("tracked"), mlflow_template)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    r = CliRunner().invoke(app, [
        "train", "--dataset", "synthetic-polyp", "--root", str(root), "--loss", "dice+bce", "--epochs", "3",
        "--device", "cpu", "--no-progress", "--name", "tracked", "--tracker", "tensorboard", "--tracker",
        "mlflow", "--set", "data.size=[32,32]", "--set", "model.base_channels=4", "--set",
        "train.early_stopping=0", "--set", "train.image_grid_every=3", "--set", "train.batch_size=4"])
    assert r.exit_code == 0, r.output
    assert "tracking failed" not in r.output
    run = root / "runs" / "synthetic-polyp" / "dice+bce" / "tracked"
    return {"root": root, "run": run, "cfg": load_config(run / "config.yaml"),
            "tracking": json.loads((run / "tracking.json").read_text())}


def test_tensorboard_scalars_equal_history_csv(tracked):
    run = tracked["run"]
    rows = read_history(run)
    ea = events(run)
    columns = [c for c in rows[0] if c != "epoch"]
    assert {"train_bce", "train_dice", "lr", "seconds"} <= set(columns)
    for c in columns:
        got = [(e.step, e.value) for e in ea.Scalars(c)]
        assert got == [(int(r["epoch"]), float(np.float32(float(r[c])))) for r in rows], c
    rates = ea.Scalars("images_per_s")
    assert [e.step for e in rates] == [1, 2, 3] and all(e.value > 0 for e in rates)
    assert tracked["tracking"]["tensorboard"] == {"log_dir": "tensorboard", "epoch": 3}


def test_tensorboard_holds_the_config_as_text_and_hparams(tracked):
    from tensorboard.plugins.hparams import plugin_data_pb2

    ea = events(tracked["run"])
    text = ea.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "dataset: synthetic-polyp" in text and "- tensorboard" in text
    content = ea.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    cfg = tracked["cfg"]
    assert hp["optim.lr"].number_value == pytest.approx(cfg.optim.lr)
    assert hp["loss.name"].string_value == "dice+bce" and hp["train.epochs"].number_value == 3
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val_dice", "val_loss"}


def test_the_validation_grid_recomputed_from_last_pt(tracked):
    """Grid at epoch 3 (= last.pt's weights): image | target | TP green, FP red, FN magenta, TN black,
    the prediction recomputed here from the checkpoint and the val split."""
    import torch
    from PIL import Image

    from imbaseg.data.dataset import SegDataset
    from imbaseg.paths import prepared_dir
    from imbaseg.training.run_dir import load_run

    run, cfg = tracked["run"], tracked["cfg"]
    grids = events(run).Images("val/grid")
    assert [g.step for g in grids] == [3]  # image_grid_every=3
    grid = np.asarray(Image.open(io.BytesIO(grids[0].encoded_image_string)).convert("RGB"))
    assert grid.shape == (4 * 34 - 2, 3 * 34 - 2, 3)  # 4 rows of 32x32 cells, 2-pixel separators
    model = load_run(run, "last").model
    ds = SegDataset(prepared_dir("synthetic-polyp", tracked["root"]), "val", size=(32, 32))
    for k in range(4):
        cell = [grid[k * 34 : k * 34 + 32, j * 34 : j * 34 + 32] for j in range(3)]
        raw = ds.raw(k)
        np.testing.assert_array_equal(cell[0], raw["image"])
        np.testing.assert_array_equal(cell[1], np.repeat(raw["mask"][..., None] * 255, 3, -1))
        with torch.no_grad():
            pred = (torch.sigmoid(model(ds[k]["image"][None]))[0, 0] > cfg.train.threshold).numpy()
        t = raw["mask"]
        want = np.zeros((32, 32, 3), np.uint8)
        want[pred & t], want[pred & ~t], want[~pred & t] = (0, 255, 0), (255, 0, 0), (255, 0, 255)
        np.testing.assert_array_equal(cell[2], want)


def test_mlflow_params_metrics_and_artifacts(tracked, tmp_path):
    run, cfg, root = tracked["run"], tracked["cfg"], tracked["root"]
    state = tracked["tracking"]["mlflow"]
    assert state["tracking_uri"] == f"sqlite:///{root.resolve() / 'mlflow.db'}" and state["epoch"] == 3
    c = client(root)
    mrun = c.get_run(state["run_id"])
    assert mrun.info.status == "FINISHED" and mrun.info.run_name == "tracked"
    assert c.get_experiment(mrun.info.experiment_id).name == "imbaseg-synthetic-polyp"
    assert mrun.data.params == leaves(cfg.to_dict())
    rows = read_history(run)
    for column in [c for c in rows[0] if c != "epoch"]:
        got = sorted((m.step, m.value) for m in c.get_metric_history(state["run_id"], column))
        assert got == [(int(r["epoch"]), float(r[column])) for r in rows], column
    assert len(c.get_metric_history(state["run_id"], "images_per_s")) == 3
    names = {a.path for a in c.list_artifacts(state["run_id"])}
    assert names == {"config.yaml", "history.png", "checkpoints"}
    best = c.list_artifacts(state["run_id"], "checkpoints")
    assert [(a.path, a.file_size) for a in best] == [("checkpoints/best.pt",
                                                       (run / "checkpoints" / "best.pt").stat().st_size)]
    got = c.download_artifacts(state["run_id"], "config.yaml", str(tmp_path))
    assert Path(got).read_bytes() == (run / "config.yaml").read_bytes()
    assert str(root.resolve() / "mlruns") in mrun.info.artifact_uri  # beside mlflow.db, not in the cwd


def test_evaluate_logs_the_test_metrics_to_the_same_mlflow_run(tracked, tmp_path):
    from imbaseg.evaluation.evaluate import evaluate_run
    from imbaseg.training.trackers import log_evaluation

    run, root = tracked["run"], tracked["root"]
    summary = evaluate_run(run, "test", device="cpu")
    run_id = tracked["tracking"]["mlflow"]["run_id"]
    assert summary["tracking"]["mlflow"] == run_id
    c = client(root)
    metrics = c.get_run(run_id).data.metrics
    assert metrics["test_dice"] == summary["metrics"]["dice"]["mean"]
    assert metrics["test_hd95"] == summary["metrics"]["hd95"]["mean"]
    assert summary["tracking"]["metrics"] == sum(k.startswith("test_") for k in metrics)
    assert [a.path for a in c.list_artifacts(run_id, "eval/test")] == ["eval/test/summary.json"]

    untracked = tmp_path / "untracked"
    untracked.mkdir()
    assert log_evaluation(untracked, summary) is None
    (untracked / "tracking.json").write_text(json.dumps(
        {"mlflow": {"run_id": run_id, "tracking_uri": f"sqlite:///{tmp_path / 'a-file' / 'x.db'}"}}))
    (tmp_path / "a-file").write_text("not a folder")
    note = log_evaluation(untracked, summary)
    assert set(note) == {"warning"} and note["warning"].startswith("mlflow: the test metrics were not logged")


# ----------------------------------------------------------------------------- resume, failures, ranks


def test_a_resume_after_a_kill_continues_the_same_folder_and_run(tiny_root, tmp_path, mlflow_template):
    """SIGKILL after last.pt of epoch 2, before best.pt and before the trackers hear of epoch 2; the resume
    logs epoch 2 from the checkpoint's history, then 3: each epoch once, in one folder and one MLflow run."""
    from imbaseg.config import save_config

    root = new_root(tiny_root, tmp_path, mlflow_template)
    cfg = tiny_cfg(root, name="killed", train={"epochs": 3, "monitor": "val_loss",
                                                "trackers": ["tensorboard", "mlflow"]})
    save_config(cfg, tmp_path / "cfg.yaml")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(IMBASEG_HOME=str(root), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(DRIVER), "kill-between", "2", "--", "--config",
                           str(tmp_path / "cfg.yaml"), "--no-progress"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = root.joinpath(*RUNS, "killed")
    before = json.loads((run / "tracking.json").read_text())
    assert before["tensorboard"]["epoch"] == 1 and before["mlflow"]["epoch"] == 1
    assert client(root).get_run(before["mlflow"]["run_id"]).info.status == "RUNNING"  # killed: never ended

    said = []
    train(cfg, resume=run, callbacks=TrainerCallbacks(on_message=lambda text, level: said.append(text)))
    assert not [s for s in said if "tracking failed" in s]
    rows = read_history(run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    ea = events(run)
    for column in ("train_loss", "val_loss", "val_dice", "lr"):
        assert [(e.step, e.value) for e in ea.Scalars(column)] == [
            (int(r["epoch"]), float(np.float32(float(r[column])))) for r in rows], column
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per session
    after = json.loads((run / "tracking.json").read_text())
    run_id = before["mlflow"]["run_id"]
    assert after["mlflow"]["run_id"] == run_id and after["mlflow"]["epoch"] == 3
    c = client(root)
    assert sorted(e.name for e in c.search_experiments()) == ["Default", "imbaseg-synthetic-polyp"]
    assert len(c.search_runs([c.get_run(run_id).info.experiment_id])) == 1
    history = sorted((m.step, m.value) for m in c.get_metric_history(run_id, "val_loss"))
    assert history == [(int(r["epoch"]), float(r["val_loss"])) for r in rows]
    assert c.get_run(run_id).info.status == "FINISHED"


def test_failing_trackers_warn_once_and_the_run_finishes(tiny_root, tmp_path, monkeypatch, mlflow_template):
    """An MLflow store that cannot be created (its folder is a file), and TensorBoard raising from epoch 2
    on: one warning each, the run completes with its files, tracking.json keeps what was logged."""
    from imbaseg.training import trackers

    root = new_root(tiny_root, tmp_path, mlflow_template)
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    log_epoch = trackers.TensorBoardTracker.log_epoch

    def broken_from_epoch_2(self, report, preview=None):
        if report["epoch"] >= 2:
            raise OSError(28, "No space left on device")
        return log_epoch(self, report, preview)

    monkeypatch.setattr(trackers.TensorBoardTracker, "log_epoch", broken_from_epoch_2)
    said = []
    cfg = tiny_cfg(root, name="failing", train={"epochs": 3, "trackers": ["tensorboard", "mlflow"]})
    result = train(cfg, callbacks=TrainerCallbacks(on_message=lambda text, level: said.append((level, text))))
    assert result.stopped == "completed" and len(read_history(result.run_dir)) == 3
    warnings = [t for level, t in said if "tracking failed" in t]
    assert len(warnings) == 2, said
    assert warnings[0].startswith("mlflow tracking failed while starting (")
    assert warnings[1] == ("tensorboard tracking failed while logging epoch 2 (OSError: [Errno 28] No space "
                           "left on device); the run goes on without it")
    assert all(level == "warning" for level, t in said if "tracking failed" in t)
    assert "tensorboard tracking failed" in (result.run_dir / "train.log").read_text()
    assert json.loads((result.run_dir / "tracking.json").read_text()) == {
        "tensorboard": {"log_dir": "tensorboard", "epoch": 1}}
    assert [e.step for e in events(result.run_dir).Scalars("val_loss")] == [1]


def test_a_run_stopped_by_sigterm_is_killed_in_mlflow(tiny_root, tmp_path, mlflow_template):
    """A real SIGTERM to this process in epoch 2: the run saves and stops; its MLflow run gets the artifacts
    so far and the status KILLED (FINISHED once resumed to the end)."""
    root = new_root(tiny_root, tmp_path, mlflow_template)

    def sigterm_in_epoch_2(epoch, done, total, loss, rate):
        if (epoch, done) == (2, 1):
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = tiny_cfg(root, name="stopped", train={"epochs": 2, "trackers": ["mlflow"]})
    result = train(cfg, callbacks=TrainerCallbacks(on_batch=sigterm_in_epoch_2))
    assert result.stopped == "interrupted" and result.signal == signal.SIGTERM
    state = json.loads((result.run_dir / "tracking.json").read_text())["mlflow"]
    c = client(root)
    assert c.get_run(state["run_id"]).info.status == "KILLED" and state["epoch"] == 1
    names = {a.path for a in c.list_artifacts(state["run_id"])}
    assert names == {"config.yaml", "history.png", "checkpoints"}
    train(cfg, resume=result.run_dir)
    assert c.get_run(state["run_id"]).info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(state["run_id"], "val_loss")] == [1, 2]


@pytest.mark.slow
def test_under_torchrun_rank_0_alone_tracks(tiny_root, tmp_path, mlflow_template):
    root = new_root(tiny_root, tmp_path, mlflow_template)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(IMBASEG_HOME=str(root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "imbaseg", "train", "--dataset", "synthetic-polyp", "--loss", "bce", "--epochs", "2", "--device",
           "cpu", "--no-progress", "--name", "ddp", "--tracker", "tensorboard", "--tracker", "mlflow",
           "--set", "data.size=[32,32]", "--set", "model.base_channels=4", "--set",
           "train.max_train_batches=1", "--set", "train.batch_size=2", "--set", "train.early_stopping=0"]
    out = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = root.joinpath(*RUNS, "ddp")
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert [e.step for e in events(run).Scalars("val_dice")] == [1, 2]
    c = client(root)
    experiment = c.get_experiment_by_name("imbaseg-synthetic-polyp")
    runs = c.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == json.loads((run / "tracking.json").read_text())[
        "mlflow"]["run_id"]
    assert len(c.get_metric_history(runs[0].info.run_id, "val_dice")) == 2
