"""Surface metrics: analytic lines and discs, a brute-force reference, spacing, field of view, options."""

import math

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, generate_binary_structure
from scipy.spatial.distance import cdist

from imbaseg.errors import UserError
from imbaseg.metrics import compute_metrics, surface, surface_distances, surface_metrics


def disc(shape, cy, cx, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def reference_distances(pred, gt, spacing=(1.0, 1.0)):
    """Brute force: surfaces by scipy erosion (cross, border outside) on the full image, all-pairs cdist."""
    cross = generate_binary_structure(2, 1)
    sp = pred & ~binary_erosion(pred, cross, border_value=0)
    sg = gt & ~binary_erosion(gt, cross, border_value=0)
    cp, cg = np.argwhere(sp) * np.asarray(spacing), np.argwhere(sg) * np.asarray(spacing)
    d = cdist(cp, cg)
    return d.min(axis=1), d.min(axis=0)


def test_surface_pixels_have_a_4_neighbour_outside_and_the_border_counts_as_outside():
    m = np.zeros((7, 7), dtype=bool)
    m[1:6, 1:6] = True
    expected = m.copy()
    expected[2:5, 2:5] = False  # the 5x5 square's ring of 16
    assert np.array_equal(surface(m), expected)
    full = np.ones((4, 5), dtype=bool)
    ring = full.copy()
    ring[1:3, 1:4] = False  # image border pixels are surface
    assert np.array_equal(surface(full), ring)
    # a diagonal neighbour outside does not make a surface pixel: the centre of a plus shape is interior
    plus = np.zeros((3, 3), dtype=bool)
    plus[1, :] = plus[:, 1] = True
    assert not surface(np.pad(plus, 1))[2, 2]


def test_parallel_lines_have_known_hd95_assd_nsd_for_both_conventions():
    # pred = row 0, cols 0..19; GT = row 3, cols 2..21 (1 px lines: every pixel is a surface pixel).
    # pred -> GT: cols 2..19 are 3 away (18 px); col 1 -> (3, 2) is sqrt(10); col 0 -> sqrt(13).
    # GT -> pred is the mirror image. Sorted directed set d (n = 20): 18 x 3, sqrt10, sqrt13.
    # "max": index 0.95 * 19 = 18.05 -> d[18] + 0.05 (d[19] - d[18]) = sqrt10 + 0.05 (sqrt13 - sqrt10).
    # "union": pooled n = 40 = 36 x 3, sqrt10 (36, 37), sqrt13 (38, 39); index 0.95 * 39 = 37.05
    #   -> d[37] + 0.05 (d[38] - d[37]): the same value (the two directions are mirror images).
    # assd = (2 (18 * 3 + sqrt10 + sqrt13)) / 40.
    pred = np.zeros((8, 24), dtype=bool)
    gt = np.zeros((8, 24), dtype=bool)
    pred[0, 0:20] = True
    gt[3, 2:22] = True
    s10, s13 = math.sqrt(10), math.sqrt(13)
    hd_max = hd_union = s10 + 0.05 * (s13 - s10)
    assd = (2 * (18 * 3 + s10 + s13)) / 40
    got = surface_metrics(pred, gt, hd_convention="max", nsd_tau=3.0)
    assert got["hd95"] == pytest.approx(hd_max) and got["assd"] == pytest.approx(assd)
    assert got["nsd"] == pytest.approx(36 / 40)  # distances <= 3: 18 per direction
    assert surface_metrics(pred, gt, hd_convention="union")["hd95"] == pytest.approx(hd_union)
    assert surface_metrics(pred, gt, nsd_tau=2.0)["nsd"] == 0.0
    assert surface_metrics(pred, gt, nsd_tau=3.2)["nsd"] == pytest.approx(38 / 40)


def test_conventions_differ_when_one_direction_has_the_outliers():
    # pred = row 0 cols 0..19; GT = row 2 cols 0..19 plus a stray GT pixel at (7, 0).
    # pred -> GT: all 20 are 2 away -> 95th pct = 2.
    # GT -> pred: 20 x 2 and the stray pixel 7 away (n = 21): index 0.95 * 20 = 19 -> d[19] = 2 ... d[20] = 7,
    #   so the 95th pct is exactly d[19] = 2; with two stray pixels (7, 0), (7, 2): n = 22, index 19.95
    #   -> d[19] + 0.95 (d[20] - d[19]) = 2 + 0.95 * 5 = 6.75. "max" = 6.75.
    # "union": pooled n = 42 (40 x 2, 7, 7): index 0.95 * 41 = 38.95 -> d[38] = d[39] = 2 -> 2.
    pred = np.zeros((8, 20), dtype=bool)
    gt = np.zeros((8, 20), dtype=bool)
    pred[0, :] = True
    gt[2, :] = True
    gt[7, 0] = gt[7, 2] = True
    assert surface_metrics(pred, gt, hd_convention="max")["hd95"] == pytest.approx(6.75)
    assert surface_metrics(pred, gt, hd_convention="union")["hd95"] == pytest.approx(2.0)


@pytest.mark.parametrize("k", [1, 2, 5, 9])
@pytest.mark.parametrize("axis", [0, 1])
def test_discs_shifted_by_k_have_hausdorff_distance_k(k, axis):
    # Disc B = disc A shifted by k. Every A surface pixel a has a + k e in B's surface, so each directed
    # distance is <= k. A's surface pixel farthest from B's centre (on the side opposite the shift) lies
    # r + k from it while every B surface pixel is within r of that centre: its distance is >= k, and the
    # pixel at a + k e reaches k. So the Hausdorff distance (max of both directed maxima) is exactly k.
    shift = (k, 0) if axis == 0 else (0, k)
    a = disc((64, 64), 25, 25, 12)
    b = disc((64, 64), 25 + shift[0], 25 + shift[1], 12)
    d_ab, d_ba = surface_distances(a, b)
    assert max(d_ab.max(), d_ba.max()) == pytest.approx(k)
    ref_ab, ref_ba = reference_distances(a, b)
    hd95 = max(np.percentile(ref_ab, 95), np.percentile(ref_ba, 95))
    assert compute_metrics(a, b)["hd95"] == pytest.approx(hd95) and hd95 <= k


def random_masks(rng, shape):
    kind = rng.integers(3)
    if kind == 0:  # scattered pixels, many touching the border
        return rng.random(shape) < 0.15
    if kind == 1:  # a rectangle, maybe touching the border
        m = np.zeros(shape, dtype=bool)
        y, x = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
        m[y : y + rng.integers(2, shape[0]), x : x + rng.integers(2, shape[1])] = True
        return m
    return disc(shape, rng.integers(shape[0]), rng.integers(shape[1]), rng.integers(1, 9))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0), (1.3, 0.7)])
def test_distances_equal_brute_force_reference(spacing):
    rng = np.random.default_rng(11)
    for _ in range(25):
        shape = tuple(rng.integers(6, 40, size=2))
        pred, gt = random_masks(rng, shape), random_masks(rng, shape)
        if not (pred.any() and gt.any()):
            continue
        d_pg, d_gp = surface_distances(pred, gt, spacing=spacing)
        ref_pg, ref_gp = reference_distances(pred, gt, spacing)
        np.testing.assert_allclose(d_pg, ref_pg, atol=1e-9)
        np.testing.assert_allclose(d_gp, ref_gp, atol=1e-9)
        union = np.percentile(np.concatenate([ref_pg, ref_gp]), 95)
        got = surface_metrics(pred, gt, spacing=spacing, hd_convention="union")
        assert got["hd95"] == pytest.approx(union)
        assert got["assd"] == pytest.approx(np.concatenate([ref_pg, ref_gp]).mean())


def test_spacing_scales_distances():
    # the parallel lines 3 rows apart (all distances 3 in pixels) with spacing (dy, dx) = (0.5, 4): 1.5
    pred = np.zeros((8, 10), dtype=bool)
    gt = np.zeros((8, 10), dtype=bool)
    pred[1, :] = True
    gt[4, :] = True
    got = surface_metrics(pred, gt, spacing=(0.5, 4.0), nsd_tau=1.5)
    assert got == pytest.approx({"hd95": 1.5, "assd": 1.5, "nsd": 1.0})
    assert surface_metrics(pred, gt, spacing=2.0)["hd95"] == pytest.approx(6.0)


def test_field_of_view_cuts_masks_before_surfaces():
    # Predictions outside the FOV are ignored; the FOV edge acts like the image border.
    gt = disc((40, 40), 20, 12, 6)
    fov = disc((40, 40), 20, 20, 17)
    pred = gt.copy()
    pred[:, 38:] = True  # a false positive band, outside the FOV (which ends at column 37)
    assert surface_metrics(pred, gt)["hd95"] > 10
    inside = surface_metrics(pred, gt, valid=fov)
    assert inside == {"hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    # documented: with valid, the metrics equal those of the masks cut to valid
    pred2 = pred | disc((40, 40), 25, 22, 5)
    assert surface_metrics(pred2, gt, valid=fov) == surface_metrics(pred2 & fov, gt & fov)
    # a mask that lies only outside the FOV is an empty mask there
    assert surface_metrics(pred2 & ~fov, gt, valid=fov)["nsd"] == 0.0


def test_bad_options_raise_user_error_with_suggestion():
    m = disc((16, 16), 8, 8, 3)
    with pytest.raises(UserError, match="Did you mean 'union'"):
        compute_metrics(m, m, hd_convention="unoin")
    with pytest.raises(UserError, match="nsd_tau"):
        compute_metrics(m, m, nsd_tau=-1)
    with pytest.raises(UserError, match="nsd_tau"):
        compute_metrics(m, m, nsd_tau=float("nan"))
    with pytest.raises(UserError, match="spacing"):
        compute_metrics(m, m, spacing=(1.0, 0.0))
    with pytest.raises(UserError, match="spacing"):
        compute_metrics(m, m, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(m, np.zeros_like(m))
