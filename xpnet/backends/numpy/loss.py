"""Loss fast paths of the NumPy backend: softmax cross-entropy with class-index targets.

The generic CrossEntropyLoss (xpnet/nn/functional/loss.py) builds a one-hot coefficient matrix in some
twenty small NumPy calls, most of a (64, 10) batch's time. Here one compiled call per direction
(csrc/loss.c, float32 and float64, about 3 us and 1 us for that batch) computes log p, the per-row losses
and the count of kept rows, then the gradient from log p. Without the library (or for other dtypes, or
no classes), fewer whole-array NumPy calls with the same results: the generic code's operations on the
one-hot's nonzero entries only.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..kernels import CrossEntropyForward, register_kernel
from . import native
from .native import ptr


def _kept(t, n_classes, ignore_index):
    """Whether each row's target (int64, contiguous) is a class: 0 <= t < C in one comparison (a
    negative t read as unsigned is huge), and not ignore_index."""
    return (t.view(np.uint64) < n_classes) & (t != ignore_index)


def _forward_numpy(x, t, ignore_index):
    """The compiled forward's contract in NumPy: log p as the generic code computes it, and -log p at
    the target (0 on ignored rows; the other classes add nothing, even where log p is -inf or NaN)."""
    log_p = x - x.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    kept = _kept(t, x.shape[1], ignore_index)
    rows = np.flatnonzero(kept)
    bad = -1
    if rows.size < t.size:
        outside = np.flatnonzero(~kept & (t != ignore_index))
        bad = int(outside[0]) if outside.size else -1
    losses = np.zeros(t.size, dtype=x.dtype)
    losses[rows] = -log_p[rows, t[rows]]
    return CrossEntropyForward(losses, int(rows.size), bad, log_p)


@register_kernel("numpy", kernels.CROSS_ENTROPY_FORWARD)
def cross_entropy_forward(x, target, ignore_index):
    """Softmax cross-entropy of logits ``x`` (M, C) at int ``target`` (M,): CrossEntropyForward(rows,
    count, bad, log p), the contract of kernels.CROSS_ENTROPY_FORWARD."""
    t = np.ascontiguousarray(target, dtype=np.int64)
    lib = native.library() if x.dtype in native.FLOATS and x.shape[1] else None
    if lib is None:
        return _forward_numpy(x, t, ignore_index)
    x = np.ascontiguousarray(x)
    m, c = x.shape
    log_p = np.empty((m, c), dtype=x.dtype)
    rows = np.empty(m, dtype=x.dtype)
    out = np.empty(2, dtype=np.int64)
    native.kernel(lib, "xp_ce_fwd", x.dtype)(ptr(x), ptr(t), m, c, ignore_index, ptr(log_p), ptr(rows), ptr(out))
    count, bad = out.tolist()
    return CrossEntropyForward(rows, count, bad, log_p)


@register_kernel("numpy", kernels.CROSS_ENTROPY_BACKWARD)
def cross_entropy_backward(scale, log_p, target, ignore_index):
    """dx_ic = s_i (p_ic - [c = t_i]) on rows with a class target, s_i 0 p_ic on the others: the
    contract of kernels.CROSS_ENTROPY_BACKWARD; ``scale`` is one value or one per row (M,)."""
    t = np.ascontiguousarray(target, dtype=np.int64)
    s = np.asarray(scale, dtype=log_p.dtype)
    lib = native.library() if log_p.dtype in native.FLOATS and s.ndim <= 1 else None
    if lib is None:
        dx = np.exp(log_p)
        kept = _kept(t, log_p.shape[1], ignore_index)
        rows = np.flatnonzero(kept)
        if rows.size < t.size:
            dx[~kept] *= 0  # as the generic p (sum of a zero row): NaN stays NaN, inf becomes NaN
        dx[rows, t[rows]] -= 1
        dx *= s[:, None] if s.ndim else s
        return dx
    log_p = np.ascontiguousarray(log_p)
    m, c = log_p.shape
    dx = np.empty((m, c), dtype=log_p.dtype)
    stride = s.strides[0] // s.itemsize if s.ndim else 0
    native.kernel(lib, "xp_ce_bwd", log_p.dtype)(ptr(log_p), ptr(t), m, c, ignore_index, ptr(s), stride,
                                                  ptr(dx))
    return dx
