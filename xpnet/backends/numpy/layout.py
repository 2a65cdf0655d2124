"""Memory layouts the NumPy kernels share: NCHW views of NHWC memory, zero-framed copies, memory order.

Arrays keep the NCHW shape at the interface, but the outputs made by the kernels live in NHWC memory
(an NCHW view of an NHWC buffer), or in channel-major planes for the few-channel convolutions; the
helpers here move between those views without copying where they can.
"""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def nhwc(x):
    """The channels-last view of an NCHW array (no copy)."""
    return x.transpose(0, 2, 3, 1)


def nchw(x):
    return x.transpose(0, 3, 1, 2)


def frame_into(buf, src, top, left, value=0):
    """Copy NHWC ``src`` into ``buf`` at (top, left) and set only the frame around it to ``value``.

    ``src`` may overhang ``buf`` (negative ``top`` or a tail past the end): it is cropped.
    """
    n, hb, wb, c = buf.shape
    _, hs, ws, _ = src.shape
    r0, r1 = max(top, 0), min(top + hs, hb)
    c0, c1 = max(left, 0), min(left + ws, wb)
    if r0 > 0:
        buf[:, :r0] = value
    if r1 < hb:
        buf[:, r1:] = value
    if c0 > 0:
        buf[:, r0:r1, :c0] = value
    if c1 < wb:
        buf[:, r0:r1, c1:] = value
    if r1 > r0 and c1 > c0:
        np.copyto(buf[:, r0:r1, c0:c1], src[:, r0 - top:r1 - top, c0 - left:c1 - left])
    return buf


def memory_order(a):
    """``a`` with its axes permuted into memory order (C-contiguous then) and the permutation, or
    (None, None) when its elements do not fill one dense block (a strided slice)."""
    perm = sorted(range(a.ndim), key=lambda d: -abs(a.strides[d]))
    flat = a.transpose(perm)
    if not flat.flags.c_contiguous:
        return None, None
    return flat, perm


def unpermute(a, perm):
    inverse = [0] * len(perm)
    for i, d in enumerate(perm):
        inverse[d] = i
    return a.transpose(inverse)


def like_memory(x, shape, dtype, fill=None):
    """A new array of logical ``shape`` with x's memory order of axes (NCHW, NHWC, channel-major...)."""
    _, perm = memory_order(x)
    perm = perm or list(range(x.ndim))
    a = (np.empty if fill is None else np.zeros)([shape[d] for d in perm], dtype=dtype)
    return unpermute(a, perm)


def nhwc_strides(a):
    """Element strides of an (N, C, H, W) array in (N, H, W, C) order, as the C kernels take them."""
    s = [st // a.itemsize for st in a.strides]
    return np.array([s[0], s[2], s[3], s[1]], dtype=np.int64)


def column_sums(block):
    """Column sums of a (rows, C) block as one BLAS GEMV (several times faster than sum(axis=0))."""
    store = getattr(_local, "ones", None)
    if store is None:
        store = _local.ones = {}
    ones = store.get(block.dtype)
    if ones is None or ones.shape[0] < block.shape[0]:
        ones = store[block.dtype] = np.ones(block.shape[0], dtype=block.dtype)
    return np.matmul(ones[:block.shape[0]], block)


def sum_partials(parts):
    """The sum of the workers' partial results, added in order."""
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total
