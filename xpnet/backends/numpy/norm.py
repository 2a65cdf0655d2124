"""Normalization fast paths of the NumPy backend: batch norm and local response norm.

Each has the contract of the generic code in ``xpnet/nn/functional/norm.py`` and is tested equal to
it. Both work on the (M, C) channels-last matrix (free for (N, C) and NHWC-memory input) in
cache-sized row blocks, split over the workers: batch norm needs one pass for its statistics and one
for the output, and its passes are compiled for float32 and float64 (csrc/norm.c); LRN's channel
window is a contiguous run of each row. Never float64 in a float32 computation: constants are cast
to the array dtype first.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import kernels
from ..kernels import BatchNormForward, BatchNormGrads, LocalResponseNormForward, register_kernel
from . import native
from .layout import column_sums, sum_partials
from .native import ptr
from .runtime import parallel, workspace


class BatchNormSaved(NamedTuple):
    rows: Any  # x as the (M, C) channels-last matrix
    mean: Any  # the mean used (batch statistics in training, running ones in eval)
    invstd: Any  # 1 / sqrt(var + eps)
    gamma: Any
    training: bool
    shape: tuple  # x's shape


class LocalResponseNormSaved(NamedTuple):
    rows: Any  # x as the (M, C) channels-last matrix
    scale: Any  # D^(-beta), (M, C)
    scale_over_d: Any  # D^(-beta-1), (M, C)
    size: int
    alpha: float
    beta: float
    lo: int  # channels before c in its window
    hi: int  # channels after c
    shape: tuple  # x's shape


def _channels_last(x):
    """(M, C) view of x with the channel axis (1) last: free for (N, C) and NHWC-memory input."""
    if x.ndim == 2:
        return x
    xh = np.moveaxis(x, 1, -1)
    return xh.reshape(-1, x.shape[1])  # copies only when x is not channels-last in memory


def _from_channels_last(rows, shape):
    if len(shape) == 2:
        return rows
    moved = rows.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],))
    return np.moveaxis(moved, -1, 1)


# rows per block inside a worker: the few passes over a block hit the cache instead of memory, and the
# blocks are large enough that the per-call Python overhead stays small (1 MiB measured best here)
BN_BLOCK_BYTES = 1 << 20


def _row_blocks(a, b, width, itemsize):
    step = max(1, BN_BLOCK_BYTES // max(1, width * itemsize))
    return [(i, min(b, i + step)) for i in range(a, b, step)]


# -- batch norm --------------------------------------------------------------------------------
def _block_moments(rows, a, b):
    """(count, mean, M2) of rows [a, b): one read of the rows from memory and no cancellation.

    Each cache-sized block is shifted by its own first row (a sample of the data, so the shifted
    values are of the order of the spread, not of the mean) before its sums are taken; the blocks
    merge with Chan's update."""
    c = rows.shape[1]
    dt = rows.dtype.type
    count, mean, m2 = 0, np.zeros(c, dtype=rows.dtype), np.zeros(c, dtype=rows.dtype)
    for i, j in _row_blocks(a, b, c, rows.itemsize):
        block = rows[i:j]
        k = j - i
        shift = block[0].copy()
        shifted = workspace("bn_centered", block.shape, rows.dtype)
        np.subtract(block, shift, out=shifted)
        total = column_sums(shifted)
        squares = np.einsum("ij,ij->j", shifted, shifted)
        mean_shifted = total / dt(k)
        bm2 = np.maximum(squares - total * mean_shifted, dt(0))
        mean, m2, count = _merge_moments(count, mean, m2, k, shift + mean_shifted, bm2)
    return count, mean, m2


def _native_bn_lib(rows):
    """The compiled library for batch norm on ``rows``: a C-contiguous float (M, C) matrix."""
    if rows.dtype not in native.FLOATS or not rows.flags.c_contiguous or rows.shape[0] == 0:
        return None
    return native.library()


def _native_bn_moments(rows, a, b):
    """(count, mean, M2) of rows [a, b) in float64 through xp_bn_moments: sums shifted by row a."""
    c = rows.shape[1]
    k = rows[a].copy()
    total, squares = np.zeros(c), np.zeros(c)
    native.kernel(native.library(), "xp_bn_moments", rows.dtype)(ptr(rows[a]), b - a, c, ptr(k), ptr(total),
                                                                 ptr(squares))
    count = b - a
    return count, k + total / count, np.maximum(squares - total * total / count, 0.0)


def _merge_moments(n1, mean1, m2_1, n2, mean2, m2_2):
    if n1 == 0:
        return mean2, m2_2, n2
    n = n1 + n2
    delta = mean2 - mean1
    dt = mean1.dtype.type
    mean = mean1 + delta * dt(n2 / n)
    m2 = m2_1 + m2_2 + delta * delta * dt(n1 * n2 / n)
    return mean, m2, n


@register_kernel("numpy", kernels.BATCH_NORM_FORWARD)
def batch_norm_forward(x, gamma, beta, mean, var, training, eps):
    """Returns (y, saved, batch_mean, batch_var); batch statistics are biased (divide by m) and are
    None in eval mode, where ``mean``/``var`` (running statistics) are used.

    On the (M, C) channels-last matrix, split over the workers and, inside each, in cache-sized row
    blocks: one pass for the statistics (per-block moments merged stably), one for
    y = x * (gamma/sigma) + (beta - mean * gamma/sigma). Backward recomputes x - mean block by block,
    so nothing but x itself (alive anyway) is kept."""
    rows = _channels_last(x)
    m, c = rows.shape
    dt = x.dtype.type
    lib = _native_bn_lib(rows)
    if training:
        moments = _native_bn_moments if lib is not None else _block_moments
        count, mean, m2 = 0, None, None
        for n2, mean2, m2_2 in parallel(lambda a, b: moments(rows, a, b), m, blas=True, elements=rows.size):
            mean, m2, count = (mean2, m2_2, n2) if count == 0 else _merge_moments(count, mean, m2, n2, mean2, m2_2)
        mean, var = mean.astype(x.dtype), (m2 / m).astype(x.dtype)
    invstd = 1 / np.sqrt(var + dt(eps))
    scale = invstd if gamma is None else invstd * gamma
    shift = -mean * scale if beta is None else beta - mean * scale
    y = np.empty_like(rows)

    if lib is not None:  # the compiled loops read C arrays of the rows' type
        scale, shift = (np.ascontiguousarray(v, dtype=rows.dtype) for v in (scale, shift))

    def finish(a, b):
        if lib is not None:
            native.kernel(lib, "xp_bn_affine", rows.dtype)(ptr(rows[a]), b - a, c, ptr(scale), ptr(shift),
                                                           ptr(y[a]))
            return
        for i, j in _row_blocks(a, b, c, rows.itemsize):
            np.multiply(rows[i:j], scale, out=y[i:j])
            np.add(y[i:j], shift, out=y[i:j])

    parallel(finish, m, elements=rows.size)
    saved = BatchNormSaved(rows, mean, invstd, gamma, training, x.shape)
    return BatchNormForward(_from_channels_last(y, x.shape), saved, (mean if training else None),
                            (var if training else None))


@register_kernel("numpy", kernels.BATCH_NORM_BACKWARD)
def batch_norm_backward(g, saved: BatchNormSaved, needs):
    """With x_c = x - mean and x_hat = x_c / sigma: sum(g), sum(g x_c) in one blocked pass, then
    dx = a g + b x_c + c per channel (a = gamma/sigma, b = -a sum(g x_hat) / (m sigma), c = -a sum(g)/m
    in training; dx = a g in eval) in a second, x_c rebuilt block by block in cache."""
    rows, mean, invstd, gamma, training, shape = saved
    need_x, need_gamma, need_beta = needs
    grows = _channels_last(g)
    m, c = grows.shape
    dt = g.dtype.type

    same = grows.dtype == rows.dtype and grows.flags.c_contiguous
    lib = _native_bn_lib(rows) if same else None
    if lib is not None:
        mean = np.ascontiguousarray(mean, dtype=rows.dtype)

    def sums(a, b):
        if lib is not None:
            sg, sgx = np.zeros(c), np.zeros(c)
            native.kernel(lib, "xp_bn_grad_sums", grows.dtype)(ptr(grows[a]), ptr(rows[a]), b - a, c, ptr(mean),
                                                               ptr(sg), ptr(sgx))
            return sg, sgx
        sg = np.zeros(c, dtype=grows.dtype)
        sgx = np.zeros(c, dtype=grows.dtype)
        for i, j in _row_blocks(a, b, c, grows.itemsize):
            centered = workspace("bn_centered", (j - i, c), rows.dtype)
            np.subtract(rows[i:j], mean, out=centered)
            sg += column_sums(grows[i:j])
            sgx += np.einsum("ij,ij->j", grows[i:j], centered)
        return sg, sgx

    parts = parallel(sums, m, blas=True, elements=grows.size)
    sum_g = sum_partials([p[0] for p in parts]).astype(grows.dtype)
    sum_gx = sum_partials([p[1] for p in parts]).astype(grows.dtype) * invstd  # sum(g * x_hat)
    dx = None
    if need_x:
        scale = invstd if gamma is None else gamma * invstd
        out = np.empty_like(grows)
        if training:
            coef_x = -scale * sum_gx * invstd / dt(m)
            shift = -scale * sum_g / dt(m)

            if lib is not None:
                scale, coef_x, shift = (np.ascontiguousarray(v, dtype=rows.dtype) for v in (scale, coef_x, shift))

            def finish(a, b):
                if lib is not None:
                    native.kernel(lib, "xp_bn_grad", grows.dtype)(ptr(grows[a]), ptr(rows[a]), b - a, c, ptr(mean),
                                                                  ptr(scale), ptr(coef_x), ptr(shift), ptr(out[a]))
                    return
                for i, j in _row_blocks(a, b, c, grows.itemsize):
                    centered = workspace("bn_centered", (j - i, c), rows.dtype)
                    np.subtract(rows[i:j], mean, out=centered)
                    np.multiply(centered, coef_x, out=centered)
                    np.add(centered, shift, out=centered)
                    np.multiply(grows[i:j], scale, out=out[i:j])
                    np.add(out[i:j], centered, out=out[i:j])
        else:
            def finish(a, b):
                np.multiply(grows[a:b], scale, out=out[a:b])

        parallel(finish, m, elements=grows.size)
        dx = _from_channels_last(out, shape)
    return BatchNormGrads(dx, (sum_gx if need_gamma else None), (sum_g if need_beta else None))


# -- local response norm ------------------------------------------------------------------------
def _lrn_power(d, beta, out):
    """out = d^(-beta), by square roots for AlexNet's 0.75 (and 0.5, 1): pow is several times slower."""
    if beta == 0.75:
        np.sqrt(d, out=out)
        root = workspace("lrn_root", d.shape, d.dtype)
        np.sqrt(out, out=root)
        np.multiply(out, root, out=out)
        np.reciprocal(out, out=out)
    elif beta == 0.5:
        np.sqrt(d, out=out)
        np.reciprocal(out, out=out)
    elif beta == 1.0:
        np.reciprocal(d, out=out)
    else:
        np.power(d, d.dtype.type(-beta), out=out)


def _window_sum_rows(src, before, after, out, name):
    """out[:, c] = sum_{c' = c - before}^{c + after} src[:, c'] over the channel (last) axis of a row
    block, zero outside the channels: a zero-framed copy, then one shifted add per window position."""
    rows, c = src.shape
    framed = workspace(name, (rows, c + before + after), src.dtype)
    framed[:, :before] = 0
    framed[:, before + c:] = 0
    framed[:, before:before + c] = src
    np.copyto(out, framed[:, 0:c])
    for t in range(1, before + after + 1):
        np.add(out, framed[:, t:t + c], out=out)


@register_kernel("numpy", kernels.LOCAL_RESPONSE_NORM_FORWARD)
def local_response_norm_forward(x, size, alpha, beta, k):
    """LRN on the channels-last (M, C) matrix in row blocks over the workers: the channel window is a
    contiguous run of each row. Saves x, D^(-beta) and D^(-beta-1) (see LocalResponseNormFunction)."""
    rows = _channels_last(x)
    m, c = rows.shape
    dt = x.dtype.type
    lo, hi = size // 2, (size - 1) // 2
    y, scale, scale_over_d = np.empty_like(rows), np.empty_like(rows), np.empty_like(rows)

    def work(a, b):
        for i, j in _row_blocks(a, b, c + size, rows.itemsize):
            d = workspace("lrn_d", (j - i, c), rows.dtype)
            sq = workspace("lrn_sq", (j - i, c), rows.dtype)
            np.multiply(rows[i:j], rows[i:j], out=sq)
            _window_sum_rows(sq, lo, hi, d, "lrn_framed")
            np.multiply(d, dt(alpha / size), out=d)
            np.add(d, dt(k), out=d)
            _lrn_power(d, beta, scale[i:j])
            np.divide(scale[i:j], d, out=scale_over_d[i:j])
            np.multiply(rows[i:j], scale[i:j], out=y[i:j])

    parallel(work, m, elements=rows.size * size)
    saved = LocalResponseNormSaved(rows, scale, scale_over_d, size, alpha, beta, lo, hi, x.shape)
    return LocalResponseNormForward(_from_channels_last(y, x.shape), saved)


@register_kernel("numpy", kernels.LOCAL_RESPONSE_NORM_BACKWARD)
def local_response_norm_backward(g, saved: LocalResponseNormSaved):
    rows, scale, scale_over_d, size, alpha, beta, lo, hi, shape = saved
    grows = _channels_last(g)
    m, c = grows.shape
    coef = g.dtype.type(2.0 * alpha * beta / size)
    dx = np.empty_like(grows)

    def work(a, b):
        for i, j in _row_blocks(a, b, c + size, grows.itemsize):
            u = workspace("lrn_u", (j - i, c), grows.dtype)
            back = workspace("lrn_back", (j - i, c), grows.dtype)
            np.multiply(grows[i:j], rows[i:j], out=u)
            np.multiply(u, scale_over_d[i:j], out=u)
            _window_sum_rows(u, hi, lo, back, "lrn_framed")
            np.multiply(back, rows[i:j], out=back)
            np.multiply(back, coef, out=back)
            np.multiply(grows[i:j], scale[i:j], out=dx[i:j])
            np.subtract(dx[i:j], back, out=dx[i:j])

    parallel(work, m, elements=grows.size * size)
    return _from_channels_last(dx, shape)
