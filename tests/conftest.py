"""Shared fixtures: the real data folder and a tiny synthetic prepared dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data next to the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A project root holding data/prepared/synthetic-polyp with 24 images of 32x32 (16/4/4)."""
    from imbaseg.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("tiny-root")
    prepare_dataset("synthetic-polyp", root=root, n=24, size=(32, 32), seed=3)
    return root


@pytest.fixture(autouse=True, scope="session")
def _threads():
    """The one place tests pin torch threads: tiny tensors run faster on one intra-op thread, and on a busy
    2-core machine two threads spin-wait on each other (measured 10-20x slower for tiny models)."""
    import torch

    torch.set_num_threads(int(os.environ.get("IMBASEG_TEST_THREADS", "1")))
    yield
