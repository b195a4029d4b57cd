"""Fixtures for the evaluation tests: a tiny prepared dataset with a field of view and a tiny trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from eval_helpers import DATASET, fit_tiny, make_prepared, save_run, tiny_config


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> dict:
    """{root, run (trained), cfg, untrained}: the run lives at root/runs/tiny-fov/bce/tiny."""
    root = tmp_path_factory.mktemp("eval-root")
    make_prepared(root)
    cfg = tiny_config(root)
    model = fit_tiny(cfg, steps=40)
    run = save_run(root / "runs" / DATASET / "bce" / "tiny", cfg, model)
    return {"root": root, "run": run, "cfg": cfg, "model": model}


@pytest.fixture
def run_copy(tiny_project, tmp_path) -> Path:
    """A private copy of the trained run folder (tests write eval/ into it)."""
    dst = tmp_path / "runs" / DATASET / "bce" / "tiny"
    shutil.copytree(tiny_project["run"], dst)
    return dst
