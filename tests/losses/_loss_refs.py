"""Independent float64 numpy references of every loss, written straight from ../shared/spec/losses.md.

They share no code with imbaseg.losses: loops over images are allowed here, distances come from one
scipy call per image, soft counts are plain sums of p and y, and ``1 - ratio`` is written as such.
``l = y*softplus(-z) + (1-y)*softplus(z)`` is the spec's BCE (``-log p = softplus(-z)``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.special import expit


def sp(x):
    return np.logaddexp(0.0, x)


def sig(z):
    return expit(z)


def bce_l(z, y):
    return y * sp(-z) + (1 - y) * sp(z)


def edt_to(mask2d):
    """Distance of each pixel to the nearest True pixel (None if there is none)."""
    return distance_transform_edt(~mask2d) if mask2d.any() else None


# ----------------------------------------------------------------------------------------- study


def bce(z, y, pos_weight=None):
    pw = 1.0 if pos_weight is None else pos_weight
    return np.mean(pw * y * sp(-z) + (1 - y) * sp(z))


def _dynamit(z, y):
    P = y.sum()
    N = y.size - P
    wp = min(1.0, N / P) if P > 0 else 0.0
    wn = min(1.0, P / N) if N > 0 else 0.0
    return np.mean((y * wp + (1 - y) * wn) * bce_l(z, y))


def dynamit_batch(z, y):
    return _dynamit(z, y)


def dynamit_image(z, y):
    return np.mean([_dynamit(z[i], y[i]) for i in range(len(z))])


def gauss_weight(y, sigma=2.0, eps=1e-6):
    P = y.sum()
    N = y.size - P
    wp = min(1.0, (N + eps) / (P + eps))
    b = (P + eps) / (N + eps)
    w = np.empty_like(y, dtype=np.float64)
    for i in range(len(y)):
        m = y[i, 0] > 0.5
        d = edt_to(m)
        g = np.zeros(m.shape) if d is None else np.exp(-(d**2) / (2 * sigma**2))
        w[i, 0] = np.where(m, wp, np.minimum(1.0, b + g))
    return w


def boundary_gaussian(z, y, sigma=2.0):
    w = gauss_weight(y, sigma)
    return np.mean(y * w * sp(-z) + (1 - y) * w * sp(z))


def _edge_count(t):
    """Pixels of class t (B,H,W bool) with a 4-neighbour outside the class; outside the image is outside."""
    c = 0
    for img in t:
        p = np.pad(img, 1, constant_values=False)
        h, w = img.shape
        for i in range(h):
            for j in range(w):
                if img[i, j] and not (p[i, j + 1] and p[i + 2, j + 1] and p[i + 1, j] and p[i + 1, j + 2]):
                    c += 1
    return c


def dou(z, y, delta=1e-5):
    p = sig(z)
    total = 0.0
    for s, t in ((p, y), (1 - p, 1 - y)):
        S = t.sum()
        C = _edge_count(t[:, 0] > 0.5)
        alpha = min(0.8, 2 * (1 - (C + delta) / (S + delta)) - 1)
        I, Z, Y = (s * t).sum(), (s * s).sum(), (t * t).sum()
        total += (Z + Y - 2 * I + delta) / (Z + Y - (1 + alpha) * I + delta)
    return total / 2


def boundary_dou(z, y, sigma=2.0, lambda_dou=1.0):
    return boundary_gaussian(z, y, sigma) + lambda_dou * dou(z, y)


# ----------------------------------------------------------------------------------------- region


def _counts(p, y, axes):
    return (p * y).sum(axes), (p * (1 - y)).sum(axes), ((1 - p) * y).sum(axes)


def _region(z, y, f, batch=True, include_background=False):
    p = sig(z)
    axes = (0, 1, 2, 3) if batch else (1, 2, 3)
    loss = f(*_counts(p, y, axes))
    if include_background:
        loss = (loss + f(*_counts(1 - p, 1 - y, axes))) / 2
    return np.mean(loss)


def dice(z, y, batch=True, include_background=False, smooth=1e-5):
    return _region(z, y, lambda tp, fp, fn: 1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth), batch,
                   include_background)


def iou(z, y, batch=True, include_background=False, smooth=1e-5):
    f = lambda tp, fp, fn: 1 - (tp + smooth) / (tp + fp + fn + smooth)  # noqa: E731
    return _region(z, y, f, batch, include_background)


def tversky(z, y, alpha=0.3, beta=0.7, batch=True, include_background=False, smooth=1e-5):
    return _region(z, y, lambda tp, fp, fn: 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth), batch,
                   include_background)


def focal_tversky(z, y, alpha=0.3, beta=0.7, gamma=0.75, batch=True, include_background=False, smooth=1e-5):
    f = lambda tp, fp, fn: (1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)) ** gamma  # noqa: E731
    return _region(z, y, f, batch, include_background)


def focal(z, y, alpha=0.25, gamma=2.0):
    p = sig(z)
    pt = np.where(y > 0.5, p, 1 - p)
    at = 1.0 if alpha is None else np.where(y > 0.5, alpha, 1 - alpha)
    log_pt = -bce_l(z, y)
    return np.mean(-at * (1 - pt) ** gamma * log_pt)


def combo(z, y, alpha=0.5, beta=0.5, smooth=1e-5):
    wbce = np.mean(beta * y * sp(-z) + (1 - beta) * (1 - y) * sp(z))
    return alpha * wbce + (1 - alpha) * dice(z, y, smooth=smooth)


def _mti(s, t, delta, smooth, axes):
    tp, fn, fp = (s * t).sum(axes), ((1 - s) * t).sum(axes), (s * (1 - t)).sum(axes)
    return (tp + smooth) / (tp + delta * fn + (1 - delta) * fp + smooth)


def unified_focal(z, y, lambda_=0.5, delta=0.6, gamma=0.5, batch=True, smooth=1e-5, symmetric=False):
    p = sig(z)
    fg_mod = (1 - p) ** gamma if symmetric else 1.0
    focal_part = np.mean(delta * y * fg_mod * sp(-z) + (1 - delta) * (1 - y) * p**gamma * sp(z))
    axes = (0, 1, 2, 3) if batch else (1, 2, 3)
    fg = (1 - _mti(p, y, delta, smooth, axes)) ** (1 - gamma)
    bg = 1 - _mti(1 - p, 1 - y, delta, smooth, axes)
    if symmetric:
        bg = bg ** (1 - gamma)
    tversky_part = np.mean((fg + bg) / 2)
    return lambda_ * focal_part + (1 - lambda_) * tversky_part


def unified_focal_symmetric(z, y, **kw):
    return unified_focal(z, y, symmetric=True, **kw)


# ----------------------------------------------------------------------------------------- cldice


def _pool(x, kh, kw, op, fill):
    """Stride-1 'same' pooling of (B,1,H,W) with window (kh,kw), padding filled with ``fill``."""
    ph, pw = kh // 2, kw // 2
    p = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    h, w = x.shape[2:]
    stack = [p[:, :, i:i + h, j:j + w] for i in range(kh) for j in range(kw)]
    return op(np.stack(stack), axis=0)


def _erode(x):
    return np.minimum(_pool(x, 3, 1, np.min, np.inf), _pool(x, 1, 3, np.min, np.inf))


def _open(x):
    return _pool(_erode(x), 3, 3, np.max, -np.inf)


def soft_skel(x, iters):
    skel = np.maximum(x - _open(x), 0)
    for _ in range(iters):
        x = _erode(x)
        delta = np.maximum(x - _open(x), 0)
        skel = skel + np.maximum(delta - skel * delta, 0)
    return skel


def cldice(z, y, alpha=0.5, iterations=10, smooth=1e-5):
    p = sig(z)
    sp_, sy = soft_skel(p, iterations), soft_skel(y.astype(np.float64), iterations)
    tprec = ((sp_ * y).sum() + smooth) / (sp_.sum() + smooth)
    tsens = ((sy * p).sum() + smooth) / (sy.sum() + smooth)
    cl = 2 * tprec * tsens / (tprec + tsens)
    return (1 - alpha) * dice(z, y, smooth=smooth) + alpha * (1 - cl)


# ----------------------------------------------------------------------------------------- distance


def sdf(y):
    """Kervadec's one_hot2dist: edt(neg)*neg - (edt(pos)-1)*pos; 0 for an empty or full image."""
    out = np.zeros(y.shape)
    for i in range(len(y)):
        pos = y[i, 0] > 0.5
        if pos.any() and not pos.all():
            neg = ~pos
            out[i, 0] = distance_transform_edt(neg) * neg - (distance_transform_edt(pos) - 1) * pos
    return out


def boundary(z, y):
    return np.mean(sig(z) * sdf(y))


def _field(m):
    """Karimi/JunMa: edt(fg) + edt(bg) per image, 0 when the mask is empty or full."""
    out = np.zeros(m.shape)
    for i in range(len(m)):
        fg = m[i, 0]
        if fg.any() and not fg.all():
            out[i, 0] = distance_transform_edt(fg) + distance_transform_edt(~fg)
    return out


def hausdorff_dt(z, y, alpha=2.0):
    p = sig(z)
    d = _field(y > 0.5) ** alpha + _field(z > 0) ** alpha
    return np.mean((p - y) ** 2 * d)


# ----------------------------------------------------------------------------------------- lovasz


def _lovasz_grad(gt_sorted):
    gts = gt_sorted.sum()
    intersection = gts - np.cumsum(gt_sorted)
    union = gts + np.cumsum(1 - gt_sorted)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz(z, y):
    """Berman's lovasz_hinge(per_image=True), one image at a time."""
    losses = []
    for i in range(len(z)):
        logits, labels = z[i].ravel(), y[i].ravel()
        errors = 1.0 - logits * (2 * labels - 1)
        order = np.argsort(-errors, kind="stable")
        losses.append(np.dot(np.maximum(errors[order], 0), _lovasz_grad(labels[order])))
    return np.mean(losses)


REFERENCES = {
    "bce": bce,
    "dynamit-batch": dynamit_batch,
    "dynamit-image": dynamit_image,
    "boundary-gaussian": boundary_gaussian,
    "dou": dou,
    "boundary-dou": boundary_dou,
    "dice": dice,
    "iou": iou,
    "tversky": tversky,
    "focal-tversky": focal_tversky,
    "focal": focal,
    "combo": combo,
    "unified-focal": unified_focal,
    "unified-focal-symmetric": unified_focal_symmetric,
    "cldice": cldice,
    "boundary": boundary,
    "hausdorff-dt": hausdorff_dt,
    "lovasz": lovasz,
}
