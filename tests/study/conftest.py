"""Fixtures of the study report tests: a fake evaluated study (no training) and its report, made once."""

from __future__ import annotations

import numpy as np
import pytest
from report_helpers import fake_study, write_study

DATASETS = ("synthetic-polyp", "synthetic-vessel")
LOSSES = ("bce", "dice", "boundary-gaussian(sigma=4)")
SEEDS = (43, 7, 12)  # not ascending on purpose: the report sorts them
N_IMAGES = 15
BOOT = 300


def tied_values(dataset_k: int, loss_k: int, seed: int, n: int) -> dict[str, np.ndarray]:
    """Values on a coarse grid (2 decimals), so that per-image values tie across losses and some paired
    differences are zero; loss 1 clearly better than loss 0 in dice and hd95, loss 2 in between."""
    rng = np.random.default_rng(100 * dataset_k + 10 * loss_k + seed)
    base = np.random.default_rng(dataset_k).uniform(0.5, 0.9, n)
    shift = (0.0, 0.06, 0.03)[loss_k]
    dice = np.clip(base + shift + rng.choice([-0.02, 0.0, 0.0, 0.02], n), 0, 1).round(2)
    return {
        "dice": dice,
        "hd95": (40 * (1 - dice) + rng.choice([0.0, 0.5], n)).round(1),
        "iou": (dice / (2 - dice)).round(3),
    }


@pytest.fixture(scope="session")
def fake_project(tmp_path_factory):
    """{root, study}: every cell of a 2 datasets x 3 losses x 3 seeds study evaluated (fake, 15 images)."""
    from imbaseg.study.spec import load_study

    root = tmp_path_factory.mktemp("study-root")
    path = write_study(
        root / "study.yaml",
        DATASETS,
        LOSSES,
        SEEDS,
        name="fake",
        reference="dice",
        metrics=["dice", "hd95", "iou"],
    )
    study = load_study(path)
    fake_study(study, root, n=N_IMAGES, values=tied_values)
    return {"root": root, "study": study, "path": path}


@pytest.fixture(scope="session")
def fake_report(fake_project):
    """write_report of the fake study (dice and hd95, 300 replicates, no figures)."""
    from imbaseg.study.report import write_report

    return write_report(
        fake_project["study"],
        metrics=["dice", "hd95"],
        boot=BOOT,
        seed=3,
        root=fake_project["root"],
        figures=False,
    )
