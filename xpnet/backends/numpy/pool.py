"""Pooling fast paths of the NumPy backend (max and average, forward and backward).

Each has the contract of the generic code in ``xpnet/nn/functional/pool.py`` and is tested equal to
it. Max pooling keeps the argmax offset as uint8, branch-free (masked NumPy operations are several
times slower on the random masks pooling makes); backward routes the gradient with one masked
multiply per offset. Float inputs take the compiled loops (csrc/pool.c) where they apply: channels-last
ones with the channel loop innermost, and (H, W) planes (NCHW, or the few-channel convolution's
channel-major output) with a whole output row swept per kernel offset; both loops vectorize.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import kernels
from ..kernels import PoolForward, register_kernel
from . import native
from .layout import frame_into, like_memory, memory_order, nchw, nhwc, nhwc_strides, unpermute
from .native import ptr
from .runtime import parallel, workspace


class MaxPoolSaved(NamedTuple):
    """What the NumPy max_pool2d_forward keeps: the winning offsets in the pooling layout."""

    arg: Any  # (N', OH, OW, C') winning kernel offset k = i kW + j, uint8 (int32 for 256+ offsets)
    shape: tuple  # x's shape
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    out_hw: tuple
    padded_hw: tuple  # the framed input's (H, W): every window fits
    perm: Any  # None: NHWC layout; else x's memory order of axes (see _pool_layout)


class NativeMaxPoolSaved(NamedTuple):
    """What the compiled max_pool2d_forward keeps: channels-last winning offsets (uint8)."""

    lib: Any
    arg: Any  # (N, C, OH, OW) over NHWC memory
    x: Any  # the input, for its shape and memory order
    geometry: tuple  # (kH, kW, sH, sW, pT, pL, dH, dW) as the C kernels take them


class NativePlanesSaved(NamedTuple):
    """What the compiled max pooling over (H, W) planes keeps (see _pool_layout)."""

    lib: Any
    arg: Any  # (P, OH, OW) winning offsets, uint8, in the planes' order
    shape: tuple  # x's shape
    perm: Any  # x's memory order of axes
    geometry: tuple  # (kH, kW, sH, sW, pT, pL, dH, dW) as the C kernels take them


class AvgPoolSaved(NamedTuple):
    scale: Any  # 1 / the divisor, (OH, OW, 1) or a scalar
    shape: tuple  # x's shape
    kernel: tuple
    stride: tuple
    padding: tuple
    out_hw: tuple
    padded_hw: tuple


def _pool_views(xpad, kernel, stride, dilation, out_hw):
    """One (N, OH, OW, C) strided view of NHWC ``xpad`` per kernel offset, in (i, j) order."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return [xpad[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            for i in range(kernel[0]) for j in range(kernel[1])]


def _pool_padded_shape(h, w, out_hw, kernel, stride, padding, dilation):
    """Padded extent that every window fits in (ceil_mode may need extra rows past the padding)."""
    (oh, ow), (kh, kw), (sh, sw), (dh, dw) = out_hw, kernel, stride, dilation
    (pt, pb), (pl, pr) = padding
    need_h = (oh - 1) * sh + dh * (kh - 1) + 1
    need_w = (ow - 1) * sw + dw * (kw - 1) + 1
    return max(h + pt + pb, need_h), max(w + pl + pr, need_w)


def _max_pool_part(views, y, arg, exact_nan):
    """Running max over the kernel offsets; ``arg`` gets the winning offset. The fast form keeps y by
    np.maximum (NaN-propagating) and moves arg on a strict '>' only; when a NaN reached y the caller
    reruns with ``exact_nan``, which lets every NaN take the window as PyTorch does.

    Branch-free on purpose: masked NumPy operations (np.where, copyto(where=)) run several times
    slower on the random masks pooling produces. Offsets are visited in increasing order and arg is
    the last offset that beat the running max, so arg = max_k(k * [offset k beat it])."""
    np.copyto(y, views[0])
    arg[...] = 0
    better = workspace("pool_better", y.shape, np.bool_)
    step = workspace("pool_step", y.shape, arg.dtype)
    nan = workspace("pool_nan", y.shape, np.bool_) if exact_nan else None
    for k, v in enumerate(views[1:], start=1):
        np.greater(v, y, out=better)
        if exact_nan:
            np.not_equal(v, v, out=nan)
            np.logical_or(better, nan, out=better)
            np.copyto(y, v, where=better)
        else:
            np.maximum(y, v, out=y)
        np.multiply(better, arg.dtype.type(k), out=step)
        np.maximum(arg, step, out=arg)


def _pool_layout(x):
    """(images, perm): the 4-D (batch, H, W, channels) array the pooling kernels work on, and what
    maps results back (see _from_pool_layout). In general x's NHWC view (perm None); when H and W
    are innermost in memory (NCHW, or the channel-major planes of the few-channel convolution) each
    (H, W) plane is an image of one channel, (P, H, W, 1) in memory order: the offsets' views then
    run along image rows instead of hopping over the channels, and the output keeps x's layout."""
    flat, perm = memory_order(x)
    if flat is not None and perm[2:] == [2, 3]:
        return flat.reshape(-1, x.shape[2], x.shape[3], 1), perm
    return nhwc(x), None


def _from_pool_layout(images, perm, shape):
    """An (N, C, H', W') array from pooling-layout ``images`` (see _pool_layout); ``shape`` is x's."""
    if perm is None:
        return nchw(images)
    lead = tuple(shape[d] for d in perm[:2])
    return unpermute(images.reshape(lead + images.shape[1:3]), perm)


def _to_pool_layout(g, perm):
    """The gradient in the layout _pool_layout chose for the forward input (a copy where g differs)."""
    if perm is None:
        return nhwc(g)
    moved = g.transpose(perm)
    return moved.reshape(-1, g.shape[2], g.shape[3], 1)


@register_kernel("numpy", kernels.MAX_POOL2D_FORWARD)
def max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw):
    """Running max over kernel offsets in NHWC or on (H, W) planes (see _pool_layout), the images
    split over the workers; the winning offset (the first maximum; a NaN wins, as in PyTorch) is kept
    as uint8 for backward."""
    channels_last = x.strides[1] == x.itemsize and x.shape[1] > 1
    lib = native.library() if channels_last and x.dtype in native.FLOATS and kernel[0] * kernel[1] < 256 else None
    if lib is not None:
        return _native_max_pool_forward(lib, x, kernel, stride, padding, dilation, out_hw)
    xh, perm = _pool_layout(x)
    if perm is not None and x.dtype in native.FLOATS and kernel[0] * kernel[1] < 256:
        lib = native.library()
        if lib is not None:
            return _native_planes_forward(lib, xh, x.shape, perm, kernel, stride, padding, dilation, out_hw)
    n, h, w, c = xh.shape
    hp, wp = _pool_padded_shape(h, w, out_hw, kernel, stride, padding, dilation)
    (pt, _), (pl, _) = padding
    framed = workspace("pool_xpad", (n, hp, wp, c), x.dtype) if (hp, wp) != (h, w) else None
    oh, ow = out_hw
    y = np.empty((n, oh, ow, c), dtype=x.dtype)
    arg = np.empty((n, oh, ow, c), dtype=np.uint8 if kernel[0] * kernel[1] < 256 else np.int32)

    def work(n0, n1):
        src = xh[n0:n1] if framed is None else frame_into(framed[n0:n1], xh[n0:n1], pt, pl, value=-np.inf)
        views = _pool_views(src, kernel, stride, dilation, out_hw)
        _max_pool_part(views, y[n0:n1], arg[n0:n1], exact_nan=False)
        if not np.isfinite(np.add.reduce(y[n0:n1], axis=None)):
            if np.isnan(y[n0:n1]).any():
                _max_pool_part(views, y[n0:n1], arg[n0:n1], exact_nan=True)
            if framed is not None:  # a window of -inf: its first input element wins, never the padding
                np.copyto(arg[n0:n1], _first_inside(h, w, kernel, stride, padding, dilation, out_hw),
                          where=y[n0:n1] == -np.inf)

    parallel(work, n, elements=x.size)
    saved = MaxPoolSaved(arg, x.shape, kernel, stride, padding, dilation, out_hw, (hp, wp), perm)
    return PoolForward(_from_pool_layout(y, perm, x.shape), saved)


def _first_inside(h, w, kernel, stride, padding, dilation, out_hw):
    """(OH, OW, 1) uint8: each window's first kernel offset that meets the input, not the padding
    (rows and columns are independent: the first inside row's first inside column)."""
    def first(size, out, k, s, pad, d):
        pos = np.arange(out)[:, None] * s - pad + np.arange(k)[None, :] * d
        return np.argmax((pos >= 0) & (pos < size), axis=1)

    rows = first(h, out_hw[0], kernel[0], stride[0], padding[0][0], dilation[0])
    cols = first(w, out_hw[1], kernel[1], stride[1], padding[1][0], dilation[1])
    return (rows[:, None] * kernel[1] + cols[None, :]).astype(np.uint8)[:, :, None]


@register_kernel("numpy", kernels.MAX_POOL2D_BACKWARD)
def max_pool2d_backward(g, saved):
    """Each offset's view of dx takes g where that offset won: one masked multiply per offset when the
    windows tile the input exactly, a masked multiply-add otherwise (windows may overlap). dx has the
    forward input's layout."""
    if isinstance(saved, NativeMaxPoolSaved):
        return _native_max_pool_backward(g, saved)
    if isinstance(saved, NativePlanesSaved):
        return _native_planes_backward(g, saved)
    arg, shape, kernel, stride, padding, dilation, out_hw, (hp, wp), perm = saved
    h, w = shape[2:]
    n, c = arg.shape[0], arg.shape[3]
    gh = _to_pool_layout(g, perm)
    tiles = (dilation == (1, 1) and tuple(stride) == tuple(kernel)
             and (hp, wp) == (out_hw[0] * kernel[0], out_hw[1] * kernel[1]))
    dx = (np.empty if tiles else np.zeros)((n, hp, wp, c), dtype=g.dtype)

    def work(n0, n1):
        part_arg, part_g = arg[n0:n1], gh[n0:n1]
        hit = workspace("pool_hit", part_arg.shape, np.bool_)
        share = None if tiles else workspace("pool_share", part_arg.shape, g.dtype)
        for k, v in enumerate(_pool_views(dx[n0:n1], kernel, stride, dilation, out_hw)):
            np.equal(part_arg, k, out=hit)
            if tiles:
                np.multiply(part_g, hit, out=v)
            else:  # branch-free masked add (see _max_pool_part)
                np.multiply(part_g, hit, out=share)
                np.add(v, share, out=v)

    parallel(work, n, elements=dx.size)
    (pt, _), (pl, _) = padding
    return _from_pool_layout(dx[:, pt:pt + h, pl:pl + w], perm, shape)


def _native_max_pool_forward(lib, x, kernel, stride, padding, dilation, out_hw):
    """xp_max_pool_fwd on channels-last x: y and the winning offsets (uint8) channels-last too, the
    images over the workers."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = nchw(np.empty((n, oh, ow, c), dtype=x.dtype))
    arg = nchw(np.empty((n, oh, ow, c), dtype=np.uint8))
    xs, ys = nhwc_strides(x), nhwc_strides(y)
    geometry = (kernel[0], kernel[1], stride[0], stride[1], padding[0][0], padding[1][0], dilation[0], dilation[1])
    fwd = native.kernel(lib, "xp_max_pool_fwd", x.dtype)

    def work(n0, n1):
        fwd(ptr(x) + n0 * x.strides[0], ptr(xs), n1 - n0, h, w, c, ptr(y) + n0 * y.strides[0],
            ptr(arg) + n0 * arg.strides[0], ptr(ys), oh, ow, *geometry)

    parallel(work, n, elements=x.size)
    return PoolForward(y, NativeMaxPoolSaved(lib, arg, x, geometry))


def _native_max_pool_backward(g, saved: NativeMaxPoolSaved):
    """xp_max_pool_bwd: each window's g added to its winning input element; dx in x's memory order."""
    lib, arg, x, geometry = saved
    n, c, oh, ow = g.shape
    kh, kw, sh, sw, pt, pl, dh, dw = geometry
    # windows that tile x exactly: the kernel writes every element of dx, no zeroing pass first
    tiles = (kh, kw, pt, pl, dh, dw) == (sh, sw, 0, 0, 1, 1) and x.shape[2:] == (oh * kh, ow * kw)
    tiles = tiles and x.strides[1] == x.itemsize
    dx = like_memory(x, x.shape, g.dtype, fill=None if tiles else 0)
    if tiles and g.strides[1] != g.itemsize:  # (a Flatten's NCHW gradient) channels-last: the vector loop
        g = nchw(np.ascontiguousarray(nhwc(g)))
    gs, args, dxs = nhwc_strides(g), nhwc_strides(arg), nhwc_strides(dx)
    bwd = native.kernel(lib, "xp_max_pool_bwd", g.dtype)

    def work(n0, n1):
        bwd(ptr(g) + n0 * g.strides[0], ptr(gs), ptr(arg) + n0 * arg.strides[0], ptr(args), n1 - n0, oh, ow,
            c, ptr(dx) + n0 * dx.strides[0], ptr(dxs), *geometry, int(tiles))

    parallel(work, n, elements=dx.size)
    return dx


def _native_planes_forward(lib, planes, shape, perm, kernel, stride, padding, dilation, out_hw):
    """xp_max_pool_planes_fwd over the (P, H, W, 1) C-contiguous planes of _pool_layout: y and the
    winning offsets (uint8) as (P, OH, OW) planes, y returned in x's memory order."""
    count, h, w = planes.shape[:3]
    oh, ow = out_hw
    y = np.empty((count, oh, ow, 1), dtype=planes.dtype)
    arg = np.empty((count, oh, ow), dtype=np.uint8)
    geometry = (kernel[0], kernel[1], stride[0], stride[1], padding[0][0], padding[1][0], dilation[0], dilation[1])
    native.kernel(lib, "xp_max_pool_planes_fwd", planes.dtype)(ptr(planes), h * w, w, count, h, w, ptr(y), ptr(arg),
                                                               oh, ow, *geometry)
    return PoolForward(_from_pool_layout(y, perm, shape), NativePlanesSaved(lib, arg, shape, perm, geometry))


def _native_planes_backward(g, saved: NativePlanesSaved):
    """xp_max_pool_planes_bwd: dx as (P, H, W) planes in x's memory order, each window's g added to its
    winner (written outright when the windows tile the planes)."""
    lib, arg, shape, perm, geometry = saved
    count, oh, ow = arg.shape
    h, w = shape[2:]
    kh, kw, sh, sw, pt, pl, dh, dw = geometry
    tiles = (kh, kw, pt, pl, dh, dw) == (sh, sw, 0, 0, 1, 1) and (h, w) == (oh * kh, ow * kw)
    gp = np.ascontiguousarray(_to_pool_layout(g, perm))
    dx = (np.empty if tiles else np.zeros)((count, h, w, 1), dtype=g.dtype)
    native.kernel(lib, "xp_max_pool_planes_bwd", g.dtype)(ptr(gp), ptr(arg), count, oh, ow, ptr(dx), h * w, w, h, w,
                                                          *geometry, int(tiles))
    return _from_pool_layout(dx, perm, shape)


def _avg_divisor(h, w, kernel, stride, padding, dilation, out_hw, count_include_pad, dtype):
    """Per-window divisor (OH, OW, 1): kH*kW, less what falls outside input+padding (ceil_mode) or,
    without count_include_pad, outside the input."""
    (pt, pb), (pl, pr) = padding
    hp, wp = _pool_padded_shape(h, w, out_hw, kernel, stride, padding, dilation)
    mask = np.zeros((1, hp, wp, 1), dtype=dtype)
    if count_include_pad:
        mask[:, :h + pt + pb, :w + pl + pr] = 1
    else:
        mask[:, pt:pt + h, pl:pl + w] = 1
    total = np.zeros((1, out_hw[0], out_hw[1], 1), dtype=dtype)
    for v in _pool_views(mask, kernel, stride, dilation, out_hw):
        total += v
    return np.maximum(total, 1)[0]


@register_kernel("numpy", kernels.AVG_POOL2D_FORWARD)
def avg_pool2d_forward(x, kernel, stride, padding, out_hw, count_include_pad, divisor_override=None):
    n, c, h, w = x.shape
    dilation = (1, 1)
    hp, wp = _pool_padded_shape(h, w, out_hw, kernel, stride, padding, dilation)
    xh = nhwc(x)
    (pt, _), (pl, _) = padding
    framed = workspace("pool_xpad", (n, hp, wp, c), x.dtype) if (hp, wp) != (h, w) else None
    if divisor_override:
        scale = np.asarray(1.0 / divisor_override, dtype=x.dtype)
    else:
        scale = np.reciprocal(_avg_divisor(h, w, kernel, stride, padding, dilation, out_hw, count_include_pad,
                                           x.dtype))
    y = np.empty((n, out_hw[0], out_hw[1], c), dtype=x.dtype)

    def work(n0, n1):
        src = xh[n0:n1] if framed is None else frame_into(framed[n0:n1], xh[n0:n1], pt, pl)
        views = _pool_views(src, kernel, stride, dilation, out_hw)
        part = y[n0:n1]
        np.copyto(part, views[0])
        for v in views[1:]:
            np.add(part, v, out=part)
        np.multiply(part, scale, out=part)

    parallel(work, n, elements=x.size)
    saved = AvgPoolSaved(scale, x.shape, kernel, stride, padding, out_hw, (hp, wp))
    return PoolForward(nchw(y), saved)


@register_kernel("numpy", kernels.AVG_POOL2D_BACKWARD)
def avg_pool2d_backward(g, saved: AvgPoolSaved):
    scale, (n, c, h, w), kernel, stride, padding, out_hw, (hp, wp) = saved
    gh = nhwc(g)
    dx = np.zeros((n, hp, wp, c), dtype=g.dtype)

    def work(n0, n1):
        gs = gh[n0:n1] * scale
        for v in _pool_views(dx[n0:n1], kernel, stride, (1, 1), out_hw):
            np.add(v, gs, out=v)

    parallel(work, n, elements=dx.size)
    (pt, _), (pl, _) = padding
    return nchw(dx[:, pt:pt + h, pl:pl + w])
