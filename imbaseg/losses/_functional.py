"""The shared math of the loss library: input preparation, stable BCE, fused pixel sums, soft counts.

Conventions (see ../shared/spec/losses.md):
- ``z`` are logits ``(B, 1, H, W)`` in the compute dtype (float32; float64 only for gradcheck),
  ``y`` the target as 0/1 floats of the compute dtype and ``yb`` the bool target (``mask_of``).
- ``s = (1 - 2y) * z`` is the "signed error logit": the per-pixel BCE is ``softplus(s)`` (equal to
  ``softplus(z) - y*z`` for y in {0,1}, with no cancellation at |z| = 50) and ``e = sigmoid(s)`` is
  ``|p - y|`` (``1 - p`` on foreground, ``p`` on background), computed without rounding ``p`` first.
- Counts are exact: float32 sums of 0/1 values below 2^24 pixels (float64 above), ``count_nonzero`` of
  bool masks; ratios of counts are formed in float64 and then cast.
- Nothing here calls ``.item()``, ``.cpu()`` or numpy, so CUDA runs stay on the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from imbaseg.errors import UserError

DIMS_BATCH = (0, 1, 2, 3)
DIMS_IMAGE = (1, 2, 3)


def compute_dtype(logits: Tensor) -> torch.dtype:
    """float64 stays float64 (gradcheck); every other float dtype (fp16, bf16, fp32) computes in float32."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def prepare(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check shapes and return ``(z, y, yb)``: logits in the compute dtype, the target as 0/1 floats, and
    the bool target when it came as bool (else None: ``mask_of`` makes it only for losses that need it).

    logits: float ``(B, 1, H, W)``. target: same shape, bool/int/float with values in {0, 1}; nonzero is
    foreground wherever a mask is needed. No value check: it would need a host sync on CUDA.
    """
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise TypeError("loss inputs must be torch tensors (logits, target)")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a float tensor, got {logits.dtype}")
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must have shape (B, 1, H, W), got {tuple(logits.shape)}")
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(f"target shape {tuple(target.shape)} differs from logits shape "
                         f"{tuple(logits.shape)}")
    dtype = compute_dtype(logits)
    z = logits.to(dtype)
    if target.dtype == torch.bool:
        return z, target.to(dtype), target
    if target.dtype == dtype:
        return z, target, None
    yb = target.bool()
    return z, yb.to(dtype), yb


def mask_of(y: Tensor, yb: Tensor | None) -> Tensor:
    """The bool target: ``yb`` when known, else ``y != 0`` (``.bool()``: ~6x faster than ``>`` on CPU)."""
    return yb if yb is not None else y.bool()


def count_pos(y: Tensor, dims=None) -> Tensor:
    """Exact ``sum(y)`` of a 0/1 float target: float32 while the count fits in 24 bits, else float64."""
    dtype = None if y.numel() < 2**24 else torch.float64  # float32 holds every integer below 2^24
    return y.sum(dtype=dtype) if dims is None else y.sum(dims, dtype=dtype)


def extra_map(extras: dict, key: str, like: Tensor) -> Tensor | None:
    """The precomputed per-pixel map ``extras[key]`` in ``like``'s dtype, or None when absent."""
    value = extras.get(key)
    if value is None:
        return None
    if not isinstance(value, Tensor) or tuple(value.shape) != tuple(like.shape):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"extra input '{key}' must be a tensor of shape {tuple(like.shape)}, got {shape}")
    return value.to(device=like.device, dtype=like.dtype)


def extra_counts(extras: dict, key: str, like: Tensor) -> Tensor | None:
    """The batch total ``(K,)`` int64 of the precomputed per-image counts ``extras[key]`` ``(B, 1, K)`` or
    ``(B, K)`` (the loader's collated ``(1, K)`` items), on ``like``'s device; None when absent."""
    value = extras.get(key)
    if value is None:
        return None
    ok = isinstance(value, Tensor) and value.dim() in (2, 3) and value.shape[0] == like.shape[0]
    if not ok or (value.dim() == 3 and value.shape[1] != 1) or value.is_floating_point():
        shape = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"extra input '{key}' must be an integer tensor of shape ({like.shape[0]}, 1, K), "
                         f"got {shape}")
    return value.reshape(value.shape[0], -1).sum(0).to(device=like.device)


def signed(x: Tensor, y: Tensor) -> Tensor:
    """``(1 - 2y) x``: ``-x`` on foreground, ``x`` on background (exact, one fused pass)."""
    return torch.addcmul(x, y, x, value=-2.0)


def bce_map(z: Tensor, y: Tensor) -> Tensor:
    """Per-pixel BCE ``l(z, y) = softplus(z) - y*z``, computed as ``softplus((1-2y) z)``."""
    return F.softplus(signed(z, y))


def error_prob(z: Tensor, y: Tensor) -> Tensor:
    """``|p - y| = sigmoid((1-2y) z)``: ``1-p`` on foreground, ``p`` on background, without cancellation."""
    return torch.sigmoid(signed(z, y))


def softplus_of_signed(s: Tensor, e: Tensor) -> Tensor:
    """``softplus(s)`` given ``e = sigmoid(s)``, as ``relu(s) - log1p(-min(e, 1 - e))``; overwrites ``s``.

    One log1p instead of softplus's exp and log1p (~30% less time on a CPU, measured), within 2 ulp of
    the exact value: for s <= 0 it is ``-log1p(-e)``; for s > 0, ``1 - e`` is exact (e >= 1/2) and off
    by e's rounding (< 2^-25) from ``sigmoid(-s)``, which moves a value >= log 2 by < 1 ulp.
    """
    t = torch.rsub(e, 1.0)
    torch.minimum(e, t, out=t)
    return s.clamp_min_(0.0).sub_(torch.log1p(t.neg_()))


def pow_exp(x: Tensor, a: float) -> Tensor:
    """``x ** a`` for x >= 0 with value exactly 0 and a finite (zero) gradient at x = 0 when 0 < a < 1."""
    positive = x > 0
    safe = torch.where(positive, x, torch.ones_like(x))
    return torch.where(positive, safe.pow(a), torch.zeros_like(x))


# --------------------------------------------------------------------------------------------------
# Fused pixel sums: the hot path of bce, dynamit-*, boundary-gaussian, dou and boundary-dou.
#
# On the CPU the pixels go through in chunks of _CHUNK: the temporaries of a chunk are small and stay in
# cache, instead of a dozen 4.7 MB tensors (8x1x384x384) streamed through memory. Measured on the shared
# 2-core VM (one thread, process CPU time, 40 interleaved rounds, load ~10): boundary-dou with its
# precomputed inputs 1.45x BCE in chunks against 2.15x whole (median); the best rounds are equal (1.45
# vs 1.48), so what the chunks buy is robustness to other jobs sharing the caches. Each chunk's sums
# are added in float64, also more accurate than one float32 dot over a million pixels (MKL's sdot was
# 1e-5 off in relative terms at 8x1x384x384). On a GPU the whole tensor is one chunk (launches cost).

_CHUNK = 1 << 17  # CPU pixels per chunk: 512 KiB of float32 per temporary (the L2 of a core is ~1 MiB)


def on_host(t: Tensor) -> bool:
    """True for CPU tensors, where reading a value costs nothing: the losses then take data-dependent
    shortcuts and work in chunks. Elsewhere (a GPU) they never wait for the device and use whole-tensor
    ops. The one switch between the two paths, so that tests can run the GPU path on a CPU."""
    return t.device.type == "cpu"


def chunk_bounds(n: int, host: bool) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)``: chunks of ``_CHUNK`` on the host, one elsewhere."""
    step = _CHUNK if host else max(n, 1)
    return [(i, min(n, i + step)) for i in range(0, n, step)]


class ClampedWeight:
    """A weight map made chunk by chunk inside the pixel sums' own pass: ``min(1, base + g)``, then
    ``w_pos`` on foreground when ``fix_fg`` (lerp with weight y in {0, 1}: exact at both ends).

    g: flat ``(n,)`` tensor; base, w_pos: 0-d tensors of g's dtype. ``full(y)`` gives the whole map.
    """

    __slots__ = ("g", "base", "w_pos", "fix_fg")

    def __init__(self, g: Tensor, base: Tensor, w_pos: Tensor, fix_fg: bool):
        self.g, self.base, self.w_pos, self.fix_fg = g.reshape(-1), base, w_pos, fix_fg

    def chunk(self, i: int, j: int, y: Tensor, out: Tensor) -> Tensor:
        torch.add(self.g[i:j], self.base, out=out).clamp_max_(1.0)
        return out.lerp_(self.w_pos.expand_as(out), y) if self.fix_fg else out

    def full(self, y: Tensor) -> Tensor:
        return self.chunk(0, self.g.numel(), y.reshape(-1), torch.empty_like(self.g)).view(y.shape)


class _PixelSums(torch.autograd.Function):
    """Sums over all pixels, with one hand-written backward instead of a dozen autograd nodes.

    Outputs a vector: ``[sum(w * softplus(s))]`` if ``want_bce``, then ``[sum(e^2), sum(y*e), sum(e)]``
    if ``want_error``; ``s = (1-2y) z``, ``e = sigmoid(s)``, ``w`` a per-pixel weight (None = 1; a flat
    tensor, or a ``ClampedWeight``). Gradient: ``d/dz = (1-2y) e [g0 w + (1-e)(2 e g1 + y g2 + g3)]``.
    """

    @staticmethod
    def forward(ctx, z, y, w, want_bce: bool, want_error: bool):
        zf, yf = z.reshape(-1), y.reshape(-1)
        host = on_host(zf)
        bounds = chunk_bounds(zf.numel(), host)
        e = torch.empty_like(zf)
        parts = zf.new_empty((len(bounds), int(want_bce) + 3 * int(want_error)))
        # a ClampedWeight is made chunk by chunk into one map, kept for backward (cheaper than twice)
        made = zf.new_empty(zf.numel()) if want_bce and isinstance(w, ClampedWeight) else None
        for row, (i, j) in zip(parts, bounds, strict=True):
            zc, yc, ec = zf[i:j], yf[i:j], e[i:j]
            s = signed(zc, yc)
            torch.sigmoid(s, out=ec)
            if want_bce:  # CPU: one log1p instead of exp + log1p; GPU: one kernel instead of six
                sp = softplus_of_signed(s, ec) if host else F.softplus(s)
                if made is not None:
                    torch.dot(sp, w.chunk(i, j, yc, made[i:j]), out=row[0])
                elif w is not None:
                    torch.dot(sp, w[i:j], out=row[0])
                else:
                    torch.sum(sp, 0, out=row[0])
            if want_error:
                k = int(want_bce)
                torch.dot(ec, ec, out=row[k])
                torch.dot(ec, yc, out=row[k + 1])
                torch.sum(ec, 0, out=row[k + 2])
        ctx.want, ctx.weight, ctx.bounds = (want_bce, want_error), made if made is not None else w, bounds
        ctx.save_for_backward(e, yf)
        ctx.shape = z.shape
        if len(bounds) == 1:
            return parts[0]
        return parts.sum(0, dtype=torch.float64).to(zf.dtype)

    @staticmethod
    def backward(ctx, grad):
        e, y = ctx.saved_tensors
        w = ctx.weight if ctx.want[0] else None
        if len(ctx.bounds) > 1:
            out = _backward_chunks(e, y, w, grad, ctx.want, ctx.bounds)
        else:
            out = _backward_whole(e, y, w, grad, *ctx.want)
        return out.view(ctx.shape), None, None, None, None


def _backward_whole(e: Tensor, y: Tensor, w: Tensor | None, grad: Tensor, want_bce: bool,
                    want_error: bool) -> Tensor:
    """The gradient in whole-tensor ops with 0-d tensor factors: no host sync on a GPU."""
    if want_error:
        g = grad[1:] if want_bce else grad
        acc = torch.addcmul(g[2], y, g[1]).addcmul_(e, 2.0 * g[0])  # 2 e g1 + y g2 + g3
        acc.addcmul_(acc, e, value=-1.0)  # times (1 - e)
        if want_bce:
            acc = acc.addcmul_(w, grad[0]) if w is not None else acc.add_(grad[0])
        acc.mul_(e)
    else:
        acc = e * grad[0] if w is None else torch.mul(w, grad[0]).mul_(e)
    return acc.addcmul_(y, acc, value=-2.0)  # times (1 - 2y), in place


def _backward_chunks(e: Tensor, y: Tensor, w, grad: Tensor, want: tuple[bool, bool],
                     bounds: list[tuple[int, int]]) -> Tensor:
    """The same gradient chunk by chunk (CPU), with the factors as Python numbers (no sync on a CPU)."""
    want_bce, want_error = want
    g = grad.tolist()
    g0 = g[0] if want_bce else 0.0
    out = torch.empty_like(e)
    tmp = e.new_empty(bounds[0][1])
    g1, g2, g3 = g[-3:] if want_error else (0.0, 0.0, 0.0)
    g3_t = e.new_tensor(g3)
    for i, j in bounds:
        ec, yc, oc, a = e[i:j], y[i:j], out[i:j], tmp[: j - i]
        wc = None if w is None else w[i:j]
        if want_error:
            torch.add(g3_t, ec, alpha=2.0 * g1, out=a).add_(yc, alpha=g2)  # 2 e g1 + y g2 + g3
            torch.ops.aten.sigmoid_backward.grad_input(a, ec, grad_input=oc)  # times e (1 - e)
            if want_bce:
                oc.addcmul_(wc, ec, value=g0) if wc is not None else oc.add_(ec, alpha=g0)
        elif wc is None:
            torch.mul(ec, g0, out=oc)
        else:
            torch.mul(wc, ec, out=oc).mul_(g0)
        oc.addcmul_(yc, oc, value=-2.0)  # times (1 - 2y), in place
    return out


def pixel_sums(z: Tensor, y: Tensor, w: Tensor | ClampedWeight | None = None, *, bce: bool = True,
               error: bool = False) -> Tensor:
    """Vector ``[sum(w*l)]`` (if ``bce``) followed by ``[sum(e^2), sum(y e), sum(e)]`` (if ``error``).

    ``l`` is the per-pixel BCE from logits and ``e = |p - y|``. Differentiable in ``z`` only. ``w``: a
    tensor of z's shape, a ``ClampedWeight`` (made per chunk), or None (1).
    """
    if not (bce or error):
        raise ValueError("pixel_sums needs bce or error")
    if isinstance(w, Tensor):
        w = w.to(z.dtype).reshape(-1)
    return _PixelSums.apply(z, y, w, bce, error)


def weighted_bce_mean(z: Tensor, y: Tensor, w: Tensor | ClampedWeight | None = None) -> Tensor:
    """``(1/|O|) sum(w * l(z, y))`` over all pixels of the batch (w = 1 when None)."""
    return pixel_sums(z, y, w, bce=True)[0] / z.numel()


# --------------------------------------------------------------------------------------------------
# Soft counts for the region losses.


def soft_counts(z: Tensor, y: Tensor, dims) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Soft ``(TP, FP, FN, P)`` reduced over ``dims``; FP and FN come from ``e = |p - y|`` (no cancellation).

    ``TP = sum(p y) = P - FN`` where ``P = sum(y)``; the background class has ``TP_bg = N - FP``,
    ``FP_bg = FN``, ``FN_bg = FP``.
    """
    e = error_prob(z, y)
    fn = (e * y).sum(dims)
    fp = (e * (1.0 - y)).sum(dims)
    pos = y.sum(dims)
    return pos - fn, fp, fn, pos


def tversky_complement(tp: Tensor, fp: Tensor, fn: Tensor, a: float, b: float, smooth: float) -> Tensor:
    """``1 - (TP+s)/(TP + a FP + b FN + s)``, written as ``(a FP + b FN)/(TP + a FP + b FN + s)``.

    The two forms are equal; the second has no cancellation when the prediction is nearly perfect.
    """
    err = a * fp + b * fn
    return err / (tp + err + smooth)


def dice_complement(tp: Tensor, fp: Tensor, fn: Tensor, smooth: float) -> Tensor:
    """``1 - (2TP+s)/(2TP+FP+FN+s)`` written as ``(FP+FN)/(2TP+FP+FN+s)``."""
    err = fp + fn
    return err / (2.0 * tp + err + smooth)


def background_counts(tp: Tensor, fp: Tensor, fn: Tensor, pos: Tensor,
                      total: float) -> tuple[Tensor, Tensor, Tensor]:
    """Counts of the background class from the foreground ones: ``(N - FP, FN, FP)``."""
    return (total - pos) - fp, fn, fp


# --------------------------------------------------------------------------------------------------
# Batch statistics across ranks.


def distributed_active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def sync_sum(t: Tensor, grad: bool = False) -> Tensor:
    """All-reduce (SUM) ``t`` over the default process group; identity when not distributed.

    ``grad=True`` uses ``torch.distributed.nn.functional.all_reduce``, whose backward all-reduces the
    incoming gradient, so terms built on global sums keep their gradient.
    """
    if not distributed_active():
        return t
    if grad:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    t = t.detach().clone()
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def check(condition: bool, owner: str, message: str) -> None:
    """Raise a UserError ``loss 'owner': message`` unless ``condition``."""
    if not condition:
        raise UserError(f"loss '{owner}': {message}")
