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
    if loss == "boundary-gaussian":  # the study's sigma per dataset
        assert cfg.loss.params == {"sigma": mf.SIGMA.get(dataset, 2.0)}


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
