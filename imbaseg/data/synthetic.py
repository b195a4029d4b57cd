"""Procedural datasets that mimic the study's three challenges, deterministic from a seed.

- ``synthetic-polyp``: 1-3 sharp-edged irregular superellipses (3-15% foreground) with their own hue,
  fine texture and a dark rim, among soft-edged distractor blobs of other colours.
- ``synthetic-vessel``: thin branching vessel trees 1-4 px wide (about 10% of the image) inside a
  circular field of view (written to ``fov/``), with an optic disc, dark haemorrhage-like spots
  and bright exudate-like spots as distractors.
- ``synthetic-lesion``: one diffuse low-contrast lesion with a fuzzy border (10-30% foreground; the
  mask is the 0.5 level of the blur), with hairs, freckles and reflections as distractors.

All three add smooth texture, a strong illumination gradient and noise, so no global intensity
threshold solves them (tests/data/test_synthetic.py measures it). Sample ``i`` of seed ``s`` is drawn
from ``default_rng([s, i])``: it does not depend on ``n``, and the same seed gives identical bytes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from imbaseg.errors import UserError

DEFAULT_SIZE = (128, 128)  # (H, W): small enough for the CPU demo, big enough for 1-4 px vessels
DEFAULT_N = {"synthetic-polyp": 200, "synthetic-vessel": 100, "synthetic-lesion": 200}  # 70/15/15 splits
GENERATOR_VERSION = 1  # bump when the pictures change, so prepared copies count as outdated
FG_RANGE = {
    "synthetic-polyp": (0.03, 0.15),
    "synthetic-vessel": (0.07, 0.13),
    "synthetic-lesion": (0.10, 0.30),
}


# --- shared pieces -------------------------------------------------------------------------------


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:h, 0:w].astype(np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise (H, W), zero mean, unit std; ``sigma`` in pixels sets the grain.

    Filtered in the Fourier domain (periodic borders): one FFT pair instead of an 8-sigma kernel.
    """
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    gain = np.exp(-2 * np.pi**2 * sigma**2 * (fy**2 + fx**2))
    f = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((h, w), dtype=np.float32)) * gain, s=(h, w))
    return ((f - f.mean()) / (f.std() + 1e-8)).astype(np.float32)


def _noise(rng, shape, std):
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def illumination(rng: np.random.Generator, h: int, w: int, strength: float = 0.35) -> np.ndarray:
    """Multiplicative light (H, W) around 1: a random linear ramp plus an off-centre vignette."""
    yy, xx = _grid(h, w)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    cy, cx = rng.uniform(-0.3, 0.3, 2)
    vignette = (yy - cy) ** 2 + (xx - cx) ** 2
    light = 1.0 + strength * (1.6 * ramp - 1.4 * vignette + 0.1)
    return np.clip(light, 0.35, 1.4).astype(np.float32)


def superellipse(rng, yy, xx, cy, cx, a, b, jag: float = 0.08, reach: float = 1.3) -> np.ndarray:
    """Normalised radius (H, W) of an irregular rotated superellipse: inside where <= 1.

    Exponent p in [1.8, 3.5] (rounded to boxy), boundary wobble from 3 angular harmonics of
    amplitude up to ``jag``. Computed only in the box that can hold radii <= ``reach``; 9.0 elsewhere.
    """
    t, p = rng.uniform(0, np.pi), rng.uniform(1.8, 3.5)
    amps, phases = rng.uniform(0, jag, 3), rng.uniform(0, 2 * np.pi, 3)
    half = reach * np.sqrt(2) * max(a, b) * (1 + 3 * jag) + 2
    h, w = yy.shape
    y0, y1 = int(max(cy - half, 0)), int(min(cy + half + 1, h))
    x0, x1 = int(max(cx - half, 0)), int(min(cx + half + 1, w))
    out = np.full((h, w), 9.0, np.float32)
    if y0 >= y1 or x0 >= x1:
        return out
    dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
    u = (dx * np.cos(t) + dy * np.sin(t)) / a
    v = (-dx * np.sin(t) + dy * np.cos(t)) / b
    rho = (np.abs(u) ** p + np.abs(v) ** p) ** (1 / p)
    theta = np.arctan2(v, u)
    wobble = 1.0
    for k, amp, phase in zip((2, 3, 5), amps, phases, strict=True):
        wobble = wobble + amp * np.cos(k * theta + phase)
    out[y0:y1, x0:x1] = rho / wobble
    return out


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _tint(base, rng, spread):
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-spread, spread, 3), 0.05, 1.0).astype(
        np.float32
    )


# --- polyp ---------------------------------------------------------------------------------------


def _polyp_mask(rng, yy, xx, h, w) -> np.ndarray:
    """Union of 1-3 sharp blobs with total area in 3-15% (target drawn from 4-13%)."""
    for _attempt in range(20):
        k = int(rng.integers(1, 4))
        target = rng.uniform(0.04, 0.13) * h * w
        shares = rng.dirichlet(np.full(k, 2.0))
        params = []
        for s in shares:
            area = max(s * target, 0.004 * h * w)
            ratio = rng.uniform(0.6, 1.0)
            a = np.sqrt(area / np.pi / ratio)
            m = a + 2
            params.append(
                (
                    rng.uniform(m, max(m + 1, h - m)),
                    rng.uniform(m, max(m + 1, w - m)),
                    a,
                    a * ratio,
                    rng.integers(2**31),
                )
            )
        scale = 1.0
        for _fit in range(4):
            mask = np.zeros((h, w), bool)
            for cy, cx, a, b, sub in params:
                mask |= superellipse(np.random.default_rng(sub), yy, xx, cy, cx, a * scale, b * scale) <= 1
            frac = mask.mean()
            if 0.03 <= frac <= 0.15 and abs(frac * h * w - target) < 0.15 * target:
                break
            scale *= np.sqrt(target / max(frac * h * w, 1.0))
        if 0.03 <= frac <= 0.15:
            return mask
    raise RuntimeError("could not draw a polyp mask in the 3-15% range")


def make_polyp(rng: np.random.Generator, size=DEFAULT_SIZE):
    """(image uint8 (H, W, 3), mask bool (H, W), None). Pinkish mucosa with vessels and folds."""
    h, w = size
    yy, xx = _grid(h, w)
    mucosa = _tint((0.72, 0.40, 0.36), rng, 0.05)
    tex = 0.07 * smooth_noise(rng, h, w, 1.5) + 0.10 * smooth_noise(rng, h, w, 6)
    folds = np.clip(smooth_noise(rng, h, w, 10), 0, None)
    img = mucosa[None, None] * (1 + tex[..., None] - 0.25 * folds[..., None])

    # distractors: 1-4 soft-edged blobs, darker/purplish or bright pale, any brightness
    for _ in range(int(rng.integers(1, 5))):
        r = rng.uniform(0.05, 0.13) * min(h, w)
        rho = superellipse(rng, yy, xx, rng.uniform(0, h), rng.uniform(0, w), r, r * rng.uniform(0.6, 1), 0.1)
        soft = np.clip((1.25 - rho) / 0.5, 0, 1) ** 1.5
        colour = _tint(rng.choice([(0.45, 0.22, 0.35), (0.85, 0.62, 0.62), (0.55, 0.30, 0.20)]), rng, 0.05)
        img = img * (1 - soft[..., None]) + colour[None, None] * soft[..., None] * (1 + tex[..., None])

    mask = _polyp_mask(rng, yy, xx, h, w)
    polyp = _tint((0.85, 0.58, 0.38), rng, 0.05)
    grain = 0.10 * smooth_noise(rng, h, w, 0.7)
    dome = 1 + 0.15 * smooth_noise(rng, h, w, 8)
    inside = polyp[None, None] * (dome + grain)[..., None]
    img = np.where(mask[..., None], inside, img)
    outside_dist = ndimage.distance_transform_edt(~mask)
    rim = np.clip(1.0 - (outside_dist - 0.5) / 1.5, 0, 1) * (outside_dist > 0)
    img = img * (1 - 0.45 * rim[..., None])

    img = img * illumination(rng, h, w, 0.6)[..., None]
    img = img + _noise(rng, img.shape, 0.03)
    return _to_uint8(img), mask, None


# --- vessel --------------------------------------------------------------------------------------


def _branch_path(rng, start, angle, length):
    """Points (L, 2) of a smooth random walk with 1 px steps from ``start`` heading ``angle``."""
    turn = np.cumsum(rng.normal(0, 0.06, length)) + rng.normal(0, 0.004) * np.arange(length)
    theta = angle + turn
    steps = np.stack([np.sin(theta), np.cos(theta)], axis=1)
    return start + np.cumsum(steps, axis=0)


_OFF_Y, _OFF_X = (g.ravel()[None] for g in np.mgrid[-3:4, -3:4])  # the 7x7 window a disc of width <= 5 needs


def _stamp(coverage, points, widths):
    """Max-accumulate anti-aliased discs of diameter ``widths`` at ``points`` (N, 2) into ``coverage``."""
    h, w = coverage.shape
    py = np.rint(points[:, 0])[:, None] + _OFF_Y
    px = np.rint(points[:, 1])[:, None] + _OFF_X
    d = np.hypot(py - points[:, :1], px - points[:, 1:])
    val = np.clip(widths[:, None] / 2 + 0.5 - d, 0, 1)
    ok = (py >= 0) & (py < h) & (px >= 0) & (px < w) & (val > 0)
    np.maximum.at(coverage, (py[ok].astype(int), px[ok].astype(int)), val[ok])


def _vessel_tree(rng, h, w, fov, disc, target):
    """Coverage (H, W) of branching vessels from the optic disc, grown until ``target`` of the pixels."""
    coverage = np.zeros((h, w), np.float32)
    scale = min(h, w) / 128
    queue = []
    for base in rng.uniform(0, 2 * np.pi, 1) + np.linspace(0, 2 * np.pi, 6, endpoint=False):
        queue.append((np.asarray(disc, np.float32), base + rng.normal(0, 0.2), rng.uniform(3.0, 4.0)))
    while queue:
        start, angle, width = queue.pop(0)
        length = int(rng.uniform(35, 90) * scale * (width / 4) ** 0.5)
        pts = _branch_path(rng, start, angle, max(length, 8))
        iy, ix = (
            np.clip(np.rint(pts[:, 0]), 0, h - 1).astype(int),
            np.clip(np.rint(pts[:, 1]), 0, w - 1).astype(int),
        )
        inside = fov[iy, ix] & (pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)
        stop = int(np.argmin(inside)) if not inside.all() else len(pts)
        pts = pts[:stop]
        if len(pts) < 3:
            continue
        widths = np.linspace(width, max(width * 0.75, 1.0), len(pts))
        _stamp(coverage, pts, widths)
        if (coverage >= 0.5).mean() >= target:
            break
        for j in rng.integers(len(pts) // 4, len(pts), size=int(rng.integers(1, 4))):
            child = max(widths[j] * rng.uniform(0.55, 0.8), 1.0)
            queue.append((pts[j], angle + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1), child))
        if not queue and (coverage >= 0.5).mean() < target:  # grow a fresh trunk
            queue.append((np.asarray(disc, np.float32), rng.uniform(0, 2 * np.pi), rng.uniform(2.5, 4.0)))
    return coverage * fov


def make_vessel(rng: np.random.Generator, size=DEFAULT_SIZE):
    """(image uint8 (H, W, 3), mask bool (H, W), fov bool (H, W)): a fundus-like picture."""
    h, w = size
    yy, xx = _grid(h, w)
    cy, cx = h / 2 + rng.uniform(-2, 2), w / 2 + rng.uniform(-2, 2)
    radius = 0.47 * min(h, w)
    r = np.hypot(yy - cy, xx - cx)
    fov = r <= radius
    side = rng.choice([-1, 1])
    disc = (cy + rng.uniform(-0.1, 0.1) * radius, cx + side * rng.uniform(0.25, 0.4) * radius)

    retina = _tint((0.78, 0.36, 0.16), rng, 0.05)
    tex = 0.05 * smooth_noise(rng, h, w, 1.2) + 0.08 * smooth_noise(rng, h, w, 5)
    img = retina[None, None] * (1 + tex[..., None])
    disc_r = 0.11 * min(h, w)
    d_disc = np.hypot(yy - disc[0], xx - disc[1]) / disc_r
    glow = np.clip(1.3 - d_disc, 0, 1)[..., None]
    img = img * (1 - glow) + _tint((0.95, 0.80, 0.55), rng, 0.04)[None, None] * glow

    for _ in range(int(rng.integers(2, 7))):  # dark haemorrhage-like spots and pale exudates
        rr = rng.uniform(1.5, 4.0) * min(h, w) / 128
        blob = np.exp(-((yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2) / (2 * rr**2))
        img = img * (1 - 0.55 * blob[..., None]) if rng.random() < 0.6 else img + 0.3 * blob[..., None]

    target = rng.uniform(0.085, 0.115)
    coverage = _vessel_tree(rng, h, w, fov, disc, target)
    contrast = rng.uniform(0.35, 0.55)
    darken = np.asarray([0.55, 1.0, 0.9], np.float32) * contrast
    img = img * (1 - coverage[..., None] * darken[None, None])

    img = (
        img
        * illumination(rng, h, w, 0.5)[..., None]
        * np.clip(1.15 - 0.5 * (r / radius) ** 4, 0, 1)[..., None]
    )
    img = img + _noise(rng, img.shape, 0.025)
    img = img * fov[..., None] + _noise(rng, img.shape, 0.01) * ~fov[..., None]
    return _to_uint8(img), coverage >= 0.5, fov


# --- lesion --------------------------------------------------------------------------------------


def _hair(rng, h, w, img):
    pts = _branch_path(
        rng,
        np.array([rng.uniform(0, h), rng.uniform(0, w)], np.float32),
        rng.uniform(0, 2 * np.pi),
        int(rng.uniform(0.4, 1.0) * max(h, w)),
    )
    cover = np.zeros((h, w), np.float32)
    _stamp(cover, pts, np.full(len(pts), rng.uniform(0.8, 1.6)))
    return img * (1 - 0.7 * cover[..., None])


def make_lesion(rng: np.random.Generator, size=DEFAULT_SIZE):
    """(image uint8 (H, W, 3), mask bool (H, W), None): skin with one fuzzy low-contrast lesion."""
    h, w = size
    yy, xx = _grid(h, w)
    skin = _tint((0.86, 0.66, 0.56), rng, 0.05)
    tex = 0.04 * smooth_noise(rng, h, w, 1.0) + 0.06 * smooth_noise(rng, h, w, 7)
    img = skin[None, None] * (1 + tex[..., None])

    for _attempt in range(20):
        frac = rng.uniform(0.12, 0.27)
        a = np.sqrt(frac * h * w / np.pi / rng.uniform(0.65, 1.0))
        b = frac * h * w / np.pi / a
        rho = superellipse(
            rng,
            yy,
            xx,
            h / 2 + rng.uniform(-0.12, 0.12) * h,
            w / 2 + rng.uniform(-0.12, 0.12) * w,
            a,
            b,
            jag=0.12,
        )
        rho = rho * (1 + 0.08 * smooth_noise(rng, h, w, 4))
        mask = rho <= 1
        if 0.10 <= mask.mean() <= 0.30:
            break
    else:
        raise RuntimeError("could not draw a lesion mask in the 10-30% range")
    softness = rng.uniform(0.18, 0.3)
    level = 1 / (1 + np.exp(np.clip((rho - 1) / softness * 4, -30, 30)))  # 0.5 exactly on the border
    contrast = rng.uniform(0.25, 0.45)
    pigment = _tint((0.50, 0.33, 0.26), rng, 0.05) * (1 + 0.12 * smooth_noise(rng, h, w, 2))[..., None]
    blend = (contrast * level)[..., None]
    img = img * (1 - blend) + pigment * blend

    for _ in range(int(rng.integers(2, 6))):  # freckles: small soft dark spots
        rr = rng.uniform(1.5, 4) * min(h, w) / 128
        blob = np.exp(-((yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2) / (2 * rr**2))
        img = img * (1 - 0.35 * blob[..., None])
    for _ in range(int(rng.integers(0, 4))):
        img = _hair(rng, h, w, img)

    img = img * illumination(rng, h, w, 0.5)[..., None]
    img = img + _noise(rng, img.shape, 0.025)
    return _to_uint8(img), mask, None


GENERATORS = {"synthetic-polyp": make_polyp, "synthetic-vessel": make_vessel, "synthetic-lesion": make_lesion}


def check_size(size) -> tuple[int, int]:
    if size is None:
        return DEFAULT_SIZE
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h < 32 or w < 32 or h > 2048 or w > 2048:
        raise UserError(f"synthetic image size {h}x{w} is out of range: use 32..2048 for both H and W.")
    return h, w


def sample(name: str, index: int, seed: int = 42, size=DEFAULT_SIZE):
    """Sample ``index`` of dataset ``name``: (image uint8, mask bool, fov bool or None)."""
    rng = np.random.default_rng([int(seed), int(index)])
    return GENERATORS[name](rng, check_size(size))
