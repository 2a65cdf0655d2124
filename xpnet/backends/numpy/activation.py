"""Activation fast paths of the NumPy backend: ReLU forward and backward.

The outputs keep the input's memory layout (an NCHW view of NHWC memory stays one, channel-major
planes stay planes), so the next layer's layout trick survives the activation. Compiled for float32
and float64 (csrc/activation.c): NumPy's maximum runs ~4x slower than a vectorized loop here; the
compiled forward keeps its output y for the backward instead of a mask (y > 0 exactly where x > 0,
as PyTorch keeps). Without the library, one pass over cache-sized blocks split over the workers.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .. import kernels
from ..kernels import ReLUForward, register_kernel
from . import native, runtime
from .layout import memory_order, unpermute
from .native import ptr
from .runtime import parallel, split_count

# elementwise work is split into blocks this many elements long, small enough that a block read by
# one ufunc is still in cache when the next reads it
ELEMENTWISE_BLOCK = 1 << 17


def _native_elementwise(fn, *arrays):
    """fn(pointers..., count) over C-contiguous arrays of one size; split over the workers only when
    each part holds runtime.ELEMENTWISE_PARALLEL_MIN elements (memory-bound: a second thread rarely
    pays), else one call from here with no closure."""
    size = arrays[0].size
    if split_count(size, runtime.ELEMENTWISE_PARALLEL_MIN) <= 1:
        fn(*[ptr(x) for x in arrays], size)
        return
    addresses = [ptr(x) for x in arrays]
    items = [x.itemsize for x in arrays]

    def part(a, b):
        fn(*[p + a * i for p, i in zip(addresses, items)], b - a)

    parallel(part, size, elements=size, min_elements=runtime.ELEMENTWISE_PARALLEL_MIN)


def _blocks(fn, size, quiet=False):
    """fn(a, b) over ELEMENTWISE_BLOCK-long blocks of range(size), the blocks split over the workers;
    ``quiet``: floating-point warnings off in every worker (NumPy's error state is per thread)."""
    nblocks = -(-size // ELEMENTWISE_BLOCK)

    def work(i0, i1):
        with (np.errstate(all="ignore") if quiet else contextlib.nullcontext()):
            for i in range(i0, i1):
                fn(i * ELEMENTWISE_BLOCK, min(size, (i + 1) * ELEMENTWISE_BLOCK))

    parallel(work, nblocks, elements=size, min_elements=runtime.ELEMENTWISE_PARALLEL_MIN)


@register_kernel("numpy", kernels.RELU_FORWARD)
def relu_forward(x):
    """(maximum(x, 0), x > 0) in one pass over ``x``, block by block while it is in cache, split over
    the workers; the outputs keep ``x``'s memory layout (an NCHW view of NHWC stays one). Compiled:
    (y, y), the output standing in for the mask (see relu_backward), one read and one write. The
    saved value is that one array (the mask or y), bare: relu_backward tells them apart by dtype."""
    flat, perm = memory_order(x)
    lib = native.library() if x.dtype in native.FLOATS and flat is not None else None
    if lib is not None:
        y = np.empty(flat.shape, dtype=x.dtype)
        _native_elementwise(native.kernel(lib, "xp_relu_fwd", x.dtype), flat, y)
        y = unpermute(y, perm)
        return ReLUForward(y, y)
    if flat is None or split_count(x.size, runtime.ELEMENTWISE_PARALLEL_MIN) <= 1:
        return ReLUForward(np.maximum(x, np.zeros((), dtype=x.dtype)), x > 0)
    src = flat.reshape(-1)
    y = np.empty(flat.shape, dtype=x.dtype)
    mask = np.empty(flat.shape, dtype=bool)
    yf, mf = y.reshape(-1), mask.reshape(-1)
    zero = np.zeros((), dtype=x.dtype)

    def block(a, b):
        np.maximum(src[a:b], zero, out=yf[a:b])
        np.greater(src[a:b], zero, out=mf[a:b])

    _blocks(block, src.size)
    return ReLUForward(unpermute(y, perm), unpermute(mask, perm))


@register_kernel("numpy", kernels.RELU_BACKWARD)
def relu_backward(g, mask):
    """G * [x > 0] as one multiply by the boolean mask: about ten times faster than ``where`` on the
    random masks ReLU makes. 0 * inf would leave NaN where the generic ``where`` leaves 0, so a
    non-finite result (seen through its sum) falls back to ``where``. From the compiled forward,
    ``mask`` is the output y itself (x > 0 exactly where y > 0): xp_relu_bwd selects G where y > 0."""
    gflat, perm = memory_order(g)
    same_layout = gflat is not None and mask.strides == tuple(s * mask.itemsize // g.itemsize for s in g.strides)
    if mask.dtype != np.bool_:  # the output of the compiled forward
        lib = native.library() if same_layout and g.dtype == mask.dtype else None
        if lib is not None:
            out = np.empty(gflat.shape, dtype=g.dtype)
            _native_elementwise(native.kernel(lib, "xp_relu_bwd", g.dtype), gflat, mask.transpose(perm), out)
            return unpermute(out, perm)
        mask = mask > 0
        same_layout = False
    if same_layout and split_count(g.size, runtime.ELEMENTWISE_PARALLEL_MIN) > 1:
        # same layout: block by block over the workers, each block's sum taken while it is in cache
        out = np.empty(gflat.shape, dtype=g.dtype)
        src, msrc, dst = gflat.reshape(-1), mask.transpose(perm).reshape(-1), out.reshape(-1)
        finite = [True]

        def block(a, b):
            np.multiply(src[a:b], msrc[a:b], out=dst[a:b])
            if not np.isfinite(dst[a:b].sum()):
                finite[0] = False

        _blocks(block, src.size, quiet=True)
        if finite[0]:
            return unpermute(out, perm)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            out = np.multiply(g, mask)
            if np.isfinite(out.sum()):
                return out
    return np.where(mask, g, np.zeros((), dtype=g.dtype))
