"""imbaseg.data.splits: counts, seeded splits, and sequence detection calibrated on real CVC frames."""

from __future__ import annotations

import numpy as np
import pytest

from imbaseg.data import splits as sp
from imbaseg.data.io import read_image
from imbaseg.data.prepare import thumbnail
from imbaseg.errors import UserError


@pytest.mark.parametrize(
    "n, fractions, expected",
    [
        # CVC proportions 392/98/122 of 612: n=20 -> 12.81 / 3.20 / 3.99 -> floors 12/3/3, the 2 left go to
        # the largest remainders (.99 test, .81 train) -> 13/3/4
        (20, sp.CVC_FRACTIONS, (13, 3, 4)),
        (612, sp.CVC_FRACTIONS, (392, 98, 122)),  # exact by construction
        (200, sp.DEFAULT_FRACTIONS, (140, 30, 30)),
        (10, sp.DEFAULT_FRACTIONS, (7, 2, 1)),  # 7 / 1.5 / 1.5: tie broken by position -> val
        (3, sp.DEFAULT_FRACTIONS, (1, 1, 1)),  # 2.1/.45/.45 -> 2/1/0 -> an empty split borrows one -> 1/1/1
        (0, sp.DEFAULT_FRACTIONS, (0, 0, 0)),
    ],
)
def test_split_counts_table(n, fractions, expected):
    assert sp.split_counts(n, fractions) == expected
    assert sum(expected) == n


def test_cvc_counts_and_bad_input():
    assert sp.cvc_counts(612) == (392, 98, 122)
    assert sp.cvc_counts(20) == (13, 3, 4)
    with pytest.raises(UserError):
        sp.split_counts(-1, (1, 1))


def test_random_split_is_seeded_and_exact():
    ids = [str(i) for i in range(50)]
    a = sp.random_split(ids, (30, 10, 10), seed=42)
    assert a == sp.random_split(ids, (30, 10, 10), seed=42)
    assert a != sp.random_split(ids, (30, 10, 10), seed=43)
    assert [list(a.values()).count(s) for s in sp.SPLITS] == [30, 10, 10]
    with pytest.raises(ValueError):
        sp.random_split(ids, (1, 1, 1), 0)


def test_hold_out():
    ids = [f"{i:02d}_training" for i in range(21, 41)]
    out = sp.hold_out(ids, 4, seed=42)
    assert sorted(out) == sorted(ids) and list(out.values()).count("val") == 4


def test_group_split_keeps_groups_together():
    groups = [g for g in range(30) for _ in range(1 + g % 5)]  # 30 groups of 1..5 frames, 90 frames
    labels = sp.group_split(groups, sp.cvc_counts(len(groups)), seed=42)
    for g in set(groups):
        assert len({lab for lab, gg in zip(labels, groups, strict=True) if gg == g}) == 1
    counts = [labels.count(s) for s in sp.SPLITS]
    target = sp.cvc_counts(len(groups))  # (58, 14, 18)
    assert all(abs(c - t) <= 5 for c, t in zip(counts, target, strict=True))  # within one group of target


def _frames(shared_data):
    folder = shared_data / "samples" / "CVC-ClinicDB" / "Original"
    return [read_image(p) for p in sorted(folder.glob("*.tif"), key=lambda p: int(p.stem))]


def test_sequence_threshold_separates_motion_from_different_frames(shared_data):
    frames = _frames(shared_data)
    thumbs = [thumbnail(f) for f in frames]
    different = [sp.frame_difference(a, b) for i, a in enumerate(thumbs) for b in thumbs[i + 1 :]]
    # the same frame panned by 16 px and brightened 10%: what a slowly moving colonoscope produces
    moved = [
        sp.frame_difference(t, thumbnail(np.clip(np.roll(f, (8, 16), (0, 1)) * 1.1, 0, 255).astype(np.uint8)))
        for t, f in zip(thumbs, frames, strict=True)
    ]
    assert max(moved) < sp.SEQUENCE_THRESHOLD < min(different)
    assert np.percentile(different, 5) > 1.4 * sp.SEQUENCE_THRESHOLD


def test_sequence_groups_on_simulated_video(shared_data):
    """4 'sequences' of 3-6 panning frames built from 4 sample frames -> 4 groups, split whole."""
    frames = _frames(shared_data)[:4]
    video, truth = [], []
    for g, (f, length) in enumerate(zip(frames, (3, 6, 4, 5), strict=True)):
        for k in range(length):
            video.append(thumbnail(np.roll(f, (2 * k, 4 * k), (0, 1))))
            truth.append(g)
    assert sp.sequence_groups(video) == truth
    labels = sp.group_split(truth, sp.cvc_counts(len(truth)), seed=42)
    for g in range(4):
        assert len({lab for lab, t in zip(labels, truth, strict=True) if t == g}) == 1
