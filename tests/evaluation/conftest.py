"""Fixtures for the evaluation tests: a tiny prepared dataset with a field of view and a tiny trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from eval_helpers import DATASET, fit_tiny, make_prepared, save_run, tiny_config


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine two threads contend and run tiny models ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> dict:
    """{root, run (trained), cfg, untrained}: the run lives at root/runs/tiny-fov/bce/tiny."""
    root = tmp_path_factory.mktemp("eval-root")
    make_prepared(root)
    cfg = tiny_config(root)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_torch_thread (a session fixture is set up before module ones)
    try:
        model = fit_tiny(cfg, steps=40)
    finally:
        torch.set_num_threads(before)
    run = save_run(root / "runs" / DATASET / "bce" / "tiny", cfg, model)
    return {"root": root, "run": run, "cfg": cfg, "model": model}


@pytest.fixture
def run_copy(tiny_project, tmp_path) -> Path:
    """A private copy of the trained run folder (tests write eval/ into it)."""
    dst = tmp_path / "runs" / DATASET / "bce" / "tiny"
    shutil.copytree(tiny_project["run"], dst)
    return dst
