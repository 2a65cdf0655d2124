"""CuPy local response normalisation across channels (registered as
``("cupy", LOCAL_RESPONSE_NORM_FORWARD)`` and ``LOCAL_RESPONSE_NORM_BACKWARD``).

One thread per (image, pixel) walks the channels (``norm.cu``): neighbouring threads hold
neighbouring pixels, so every read and write is coalesced. Batch norm has no CuPy kernel (the generic
Array-API code runs). Same contract as ``lrn_forward_generic``; tested equal to it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import kernels
from ..kernels import LocalResponseNormForward, register_kernel
from .runtime import CudaSource, batch_slices, compute_dtype, load_cupy, on_array_device

_CUDA = CudaSource("norm.cu")


class LocalResponseNormSaved(NamedTuple):
    """What ``local_response_norm_forward`` keeps for its backward (arrays in the compute dtype)."""

    x: Any
    scale: Any  # D^(-beta)
    denom: Any  # D = k + (alpha / n) sum of squares over the channel window
    channels: int
    hw: int  # pixels per channel plane
    lo: int  # channels below c in c's window
    hi: int  # channels above c
    coef: float  # 2 alpha beta / n
    dtype: Any  # the caller's dtype


@register_kernel("cupy", kernels.LOCAL_RESPONSE_NORM_FORWARD)
@on_array_device
def local_response_norm_forward(x, size, alpha, beta, k):
    """(y, saved): one thread per (image, pixel) sums each channel window directly (no running sum,
    so no cancellation), and keeps D^(-beta) and D for the backward."""
    cupy = load_cupy()
    dtype = x.dtype
    xc = cupy.ascontiguousarray(x, dtype=compute_dtype(dtype))
    n, c = xc.shape[0], xc.shape[1]
    hw = xc.size // max(1, n * c)
    y, scale, denom = (cupy.empty_like(xc) for _ in range(3))
    t = xc.dtype.type
    lo, hi = size // 2, (size - 1) // 2
    for i0, i1 in batch_slices(n, hw):
        _CUDA.launch("lrn_forward", xc.dtype, (i1 - i0) * hw, xc[i0:i1], y[i0:i1], scale[i0:i1], denom[i0:i1], c,
                     hw, lo, hi, t(alpha / size), t(beta), t(k))
    saved = LocalResponseNormSaved(xc, scale, denom, c, hw, lo, hi, 2.0 * alpha * beta / size, dtype)
    return LocalResponseNormForward(y if y.dtype == dtype else y.astype(dtype), saved)


@register_kernel("cupy", kernels.LOCAL_RESPONSE_NORM_BACKWARD)
@on_array_device
def local_response_norm_backward(g, saved):
    """dL/dx_j = g_j D_j^(-beta) - (2 alpha beta / n) x_j sum_{c = j-hi}^{j+lo} g_c x_c D_c^(-beta) / D_c,
    one thread per (image, pixel) walking the channels (see LocalResponseNormFunction)."""
    cupy = load_cupy()
    xc, scale, denom, dtype = saved.x, saved.scale, saved.denom, saved.dtype
    c, hw, lo, hi, coef = saved.channels, saved.hw, saved.lo, saved.hi, saved.coef
    gc = cupy.ascontiguousarray(g, dtype=xc.dtype)
    dx = cupy.empty_like(xc)
    n = xc.shape[0]
    for i0, i1 in batch_slices(n, hw):
        _CUDA.launch("lrn_backward", xc.dtype, (i1 - i0) * hw, gc[i0:i1], xc[i0:i1], scale[i0:i1], denom[i0:i1],
                     dx[i0:i1], c, hw, lo, hi, xc.dtype.type(coef))
    return dx if dx.dtype == dtype else dx.astype(dtype)
