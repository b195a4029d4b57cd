"""Fixtures of the figure tests (builders in viz_helpers.py)."""

from __future__ import annotations

import numpy as np
import pytest
from viz_helpers import blob, write_prepared, write_run


@pytest.fixture
def two_runs(tmp_path):
    """A 40x60 (H x W) 'synthetic-polyp' of 4 test images; two evaluated runs that differ most on 'c'."""
    h, w = 40, 60
    rng = np.random.default_rng(0)
    masks = {i: blob(h, w, 20, 30, r) for i, r in zip("abcd", (8, 10, 12, 6), strict=True)}
    images = {i: rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for i in masks}
    write_prepared(tmp_path, "synthetic-polyp", {i: (images[i], masks[i]) for i in masks})
    shift = {"a": 1, "b": 2, "c": 0, "d": 1}
    pa = {i: np.roll(m, shift[i], axis=1) for i, m in masks.items()}
    pb = {i: np.roll(m, 1, axis=1) for i, m in masks.items()}
    pb["c"] = np.roll(masks["c"], 9, axis=0)  # run B is far off on 'c' only
    ra = write_run(tmp_path, "synthetic-polyp", "dynamit-batch", "r1", pa, masks)
    rb = write_run(tmp_path, "synthetic-polyp", "boundary-gaussian", "r1", pb, masks)
    return tmp_path, ra, rb, masks
