"""make_figures: the short-run configs, the synthetic fallback and the budget report (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imbaseg.viz import make_figures as mf


@pytest.mark.parametrize("dataset", ["cvc", "isic2018", "drive", "synthetic-polyp"])
@pytest.mark.parametrize("loss", mf.LOSSES)
def test_train_configs_are_valid_and_small(tmp_path, dataset, loss):
    cfg = mf.train_config(dataset, loss, tmp_path, 30)
    assert cfg.model.base_channels == 16 and cfg.train.device == "cpu" and cfg.optim.name == "adamw"
    assert cfg.data.size == mf.TRAIN_SIZE.get(dataset)
    assert cfg.train.epochs == (20 if dataset == "drive" else 30)
    if loss in ("boundary-gaussian", "boundary-dou"):  # the study's sigma per dataset
        assert cfg.loss.params == {"sigma": mf.SIGMA.get(dataset, 2.0)}
    else:
        assert cfg.loss.params == {}


def test_cvc_keeps_its_aspect():
    h, w = mf.TRAIN_SIZE["cvc"]
    assert w / h == pytest.approx(384 / 288)


def test_missing_shared_data_falls_back_to_synthetic(tmp_path):
    used = mf.prepare_all(tmp_path / "work", tmp_path / "no-such-data", quick=True)
    assert list(used) == ["synthetic-polyp", "synthetic-lesion", "synthetic-vessel"]
    assert all("synthetic stand-in" in v for v in used.values())
    assert all((tmp_path / "work" / "data" / "prepared" / n / "manifest.csv").is_file() for n in used)


def test_real_shared_data_is_used_when_present(shared_data):
    for rel in mf.SOURCES.values():
        if not (shared_data / rel).is_dir():
            pytest.skip(f"{shared_data / rel} is absent")
    assert mf.SHARED_DATA.resolve() == shared_data.resolve()


def test_budget_markdown_lists_every_run():
    b = mf.Budget(data={"cvc": "real: x", "synthetic-vessel": "synthetic stand-in"}, epochs=30, threads=1)
    b.runs = [
        mf.RunRecord("cvc", "dou", Path("r"), 30, 61.4, False, 3.2, 0.5),
        mf.RunRecord("synthetic-vessel", "dou", Path("s"), 20, 10.0, True, None, 0.25),
    ]
    b.seconds = 120
    text = mf.budget_markdown(b)
    assert "| cvc | dou | 30 | 61 | 3 | 0.500 |" in text
    assert "| synthetic-vessel | dou | 20 | 10 | reused | 0.250 |" in text
    assert "cvc 144x192" in text and "synthetic-vessel native" in text and "2.0 min" in text


def test_the_second_figure_compares_boundary_gaussian_with_the_combined_boundary_dou_loss(tmp_path):
    """The study's own loss is boundary-dou (Boundary Gaussian + lambda x DoU), not the dou term alone; the
    third column's label says so."""
    from imbaseg.viz.labels import loss_label

    assert mf.FIGURES["BoundaryGaussian_vs_BoundaryDoU"] == ("boundary-gaussian", "boundary-dou")
    assert "dou" not in mf.LOSSES and "boundary-dou" in mf.LOSSES
    cfg = mf.train_config("cvc", "boundary-dou", tmp_path, 30)
    assert cfg.loss.name == "boundary-dou" and cfg.loss.params == {"sigma": 4.0}
    assert loss_label(cfg.loss.name, cfg.loss.params) == "Boundary Gaussian + DoU (σ=4) Loss"


@pytest.mark.parametrize("dataset, size, batch, monitor, sigma", [
    ("cvc", [288, 384], 2, "val_dice", 4.0), ("isic2018", [384, 384], 4, "val_loss", 2.0),
    ("drive", [512, 512], 2, "val_loss", 2.0)])
@pytest.mark.parametrize("loss", mf.LOSSES)
def test_study_profile_runs_the_study_presets(tmp_path, dataset, size, batch, monitor, sigma, loss):
    cfg = mf.study_config(dataset, loss, tmp_path, None)
    assert cfg.model.base_channels == 64 and cfg.data.size == size and cfg.train.batch_size == batch
    assert cfg.optim.name == "sgd" and cfg.optim.lr == 0.1 and cfg.sched.name == "plateau"
    assert cfg.train.epochs == 400 and cfg.train.early_stopping == 20 and cfg.train.monitor == monitor
    assert cfg.train.device == "auto" and cfg.name == mf.STUDY_RUN_NAME and cfg.data.root == str(tmp_path)
    assert cfg.loss.name == loss and cfg.loss.params == ({"sigma": sigma} if loss != "dynamit-batch" else {})
    assert mf.study_config(dataset, loss, tmp_path, 7, "cuda").train.epochs == 7


def test_study_profile_without_a_gpu_asks_for_one(tmp_path, capsys):
    import torch

    from imbaseg.errors import UserError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="needs a GPU.*--device cpu"):
        mf.make_figures(tmp_path / "w", tmp_path / "f", profile="study")
    assert mf.main(["--profile", "study", "--root", str(tmp_path / "w")]) == 2
    assert "needs a GPU" in capsys.readouterr().err
    assert not (tmp_path / "w").exists() and not (tmp_path / "f").exists()


def _fake_prepared(root: Path, name: str) -> Path:
    folder = root / "data" / "prepared" / name
    folder.mkdir(parents=True)
    (folder / "manifest.csv").write_text("id,split,height,width,fg_fraction,source\n")
    return folder


def test_study_profile_uses_the_full_prepared_datasets_when_present(tmp_path):
    full_root, work = tmp_path / "project", tmp_path / "work"
    full = {n: _fake_prepared(full_root, n) for n in mf.STUDY_DATASETS}
    stale = work / "data" / "prepared" / "cvc"
    stale.mkdir(parents=True)  # a sample prepared in the work root before: replaced by the link
    used = mf.link_full_prepared(work, full_root, tmp_path / "no-shared-data", quick=True)
    assert list(used) == list(mf.STUDY_DATASETS)
    for name, folder in full.items():
        link = work / "data" / "prepared" / name
        assert link.is_symlink() and link.resolve() == folder.resolve()
        assert used[name] == f"full prepared: {folder.resolve()}"
    assert (full_root / "data" / "prepared" / "cvc" / "manifest.csv").is_file()  # the real data untouched
    # the work root IS the project root: its datasets are used in place, nothing linked or removed
    again = mf.link_full_prepared(full_root, full_root, tmp_path / "no-shared-data", quick=True)
    assert again == used and not (full_root / "data" / "prepared" / "cvc").is_symlink()


def test_study_profile_budget_text():
    b = mf.Budget(data={"drive": "full prepared: /x"}, epochs=5, profile="study", device="cuda")
    b.runs = [mf.RunRecord("drive", "boundary-dou", Path("r"), 5, 30.0, False, 2.0, 0.7)]
    text = mf.budget_markdown(b)
    assert "study's presets" in text and "at most 5 epochs" in text and "on cuda" in text
    assert "| drive | boundary-dou | 5 | 30 | 2 | 0.700 |" in text


@pytest.mark.slow
def test_study_profile_end_to_end_on_a_tiny_prepared_dataset(tiny_root, tmp_path, monkeypatch):
    """The whole study path (link the full prepared data, train with the preset, evaluate, draw both
    comparisons) on the tiny synthetic polyps, whose preset (configs/synthetic.yaml) is CPU-sized."""
    import csv

    monkeypatch.setattr(mf, "STUDY_DATASETS", ("synthetic-polyp",))
    b = mf.make_figures(tmp_path / "work", tmp_path / "figs", epochs=1, profile="study", device="cpu",
                        prepared_root=tiny_root, threads=1, shared=tmp_path / "no-shared-data")
    full = (tiny_root / "data" / "prepared" / "synthetic-polyp").resolve()
    assert b.data == {"synthetic-polyp": f"full prepared: {full}"}
    assert [(r.loss, r.epochs) for r in b.runs] == [(loss, 1) for loss in mf.LOSSES]
    for r in b.runs:
        assert r.run_dir.name == mf.STUDY_RUN_NAME and r.run_dir.is_relative_to(tmp_path / "work")
        assert r.test_dice is not None
    assert sorted(p.name for p in b.figures) == ["BoundaryGaussian_vs_BoundaryDoU.png",
                                                  "Dynamit_vs_BoundaryGaussian.png", "boundary_weights.png"]
    with open(tmp_path / "figs" / "BoundaryGaussian_vs_BoundaryDoU_comparison.csv", newline="") as f:
        labels = {row["label"] for row in csv.DictReader(f)}
    assert labels == {"Boundary Gaussian Loss", "Boundary Gaussian + DoU Loss"}  # the column titles
    assert not list(tiny_root.glob(f"runs/*/*/{mf.STUDY_RUN_NAME}"))  # the runs stay in the work root
