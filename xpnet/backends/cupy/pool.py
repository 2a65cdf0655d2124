"""CuPy 2-D max and average pooling (registered as ``("cupy", MAX_POOL2D_FORWARD)`` etc.).

One thread per output window (``pool.cu``): max pooling keeps the argmax as an int32 offset in the
H*W plane (the first maximum; a NaN wins, as in PyTorch); the backward passes scatter with atomicAdd.
Same contracts as the generic code in ``xpnet/nn/functional/pool.py``; tested equal to it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import kernels
from ..kernels import PoolForward, register_kernel
from .runtime import CudaSource, batch_slices, compute_dtype, load_cupy, on_array_device

_CUDA = CudaSource("pool.cu")


class MaxPoolSaved(NamedTuple):
    """What ``max_pool2d_forward`` keeps for ``max_pool2d_backward``."""

    argmax: Any  # int32 (N, C, OH, OW): offset of each window's maximum in its H*W plane, -1 for none
    input_shape: tuple  # (N, C, H, W)
    compute_dtype: Any
    dtype: Any  # the caller's dtype


class AvgPoolSaved(NamedTuple):
    """What ``avg_pool2d_forward`` keeps for ``avg_pool2d_backward``."""

    launch_args: tuple  # the geometry arguments of both kernels (_avg_args)
    input_shape: tuple  # (N, C, H, W)
    compute_dtype: Any
    dtype: Any  # the caller's dtype


@register_kernel("cupy", kernels.MAX_POOL2D_FORWARD)
@on_array_device
def max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw):
    cupy = load_cupy()
    dtype = x.dtype
    xc = cupy.ascontiguousarray(x, dtype=compute_dtype(dtype))
    n, c, h, w = xc.shape
    oh, ow = out_hw
    y = cupy.empty((n, c, oh, ow), dtype=xc.dtype)
    arg = cupy.empty((n, c, oh, ow), dtype=cupy.int32)
    for i0, i1 in batch_slices(n, c * oh * ow):
        _CUDA.launch("max_pool_forward", xc.dtype, (i1 - i0) * c * oh * ow, xc[i0:i1], y[i0:i1], arg[i0:i1], h, w,
                     kernel[0], kernel[1], oh, ow, stride[0], stride[1], padding[0][0], padding[1][0], dilation[0],
                     dilation[1])
    saved = MaxPoolSaved(arg, (n, c, h, w), xc.dtype, dtype)
    return PoolForward(y if y.dtype == dtype else y.astype(dtype), saved)


@register_kernel("cupy", kernels.MAX_POOL2D_BACKWARD)
@on_array_device
def max_pool2d_backward(g, saved):
    cupy = load_cupy()
    arg, (n, c, h, w), ct, dtype = saved.argmax, saved.input_shape, saved.compute_dtype, saved.dtype
    gc = cupy.ascontiguousarray(g, dtype=ct)
    dx = cupy.zeros((n, c, h, w), dtype=ct)
    ohw = arg.shape[2] * arg.shape[3]
    for i0, i1 in batch_slices(n, c * ohw):
        _CUDA.launch("max_pool_backward", ct, (i1 - i0) * c * ohw, gc[i0:i1], arg[i0:i1], dx[i0:i1], h * w, ohw)
    return dx if dx.dtype == dtype else dx.astype(dtype)


def _avg_args(h, w, kernel, stride, padding, out_hw, count_include_pad, divisor_override):
    return (h, w, kernel[0], kernel[1], out_hw[0], out_hw[1], stride[0], stride[1], padding[0][0], padding[1][0],
            padding[0][1], padding[1][1], int(bool(count_include_pad)), int(divisor_override or 0))


@register_kernel("cupy", kernels.AVG_POOL2D_FORWARD)
@on_array_device
def avg_pool2d_forward(x, kernel, stride, padding, out_hw, count_include_pad, divisor_override=None):
    cupy = load_cupy()
    dtype = x.dtype
    xc = cupy.ascontiguousarray(x, dtype=compute_dtype(dtype))
    n, c, h, w = xc.shape
    y = cupy.empty((n, c) + tuple(out_hw), dtype=xc.dtype)
    args = _avg_args(h, w, kernel, stride, padding, out_hw, count_include_pad, divisor_override)
    for i0, i1 in batch_slices(n, y.size // max(1, n)):
        _CUDA.launch("avg_pool_forward", xc.dtype, (i1 - i0) * (y.size // n), xc[i0:i1], y[i0:i1], *args)
    saved = AvgPoolSaved(args, (n, c, h, w), xc.dtype, dtype)
    return PoolForward(y if y.dtype == dtype else y.astype(dtype), saved)


@register_kernel("cupy", kernels.AVG_POOL2D_BACKWARD)
@on_array_device
def avg_pool2d_backward(g, saved):
    cupy = load_cupy()
    args, (n, c, h, w), ct, dtype = saved.launch_args, saved.input_shape, saved.compute_dtype, saved.dtype
    gc = cupy.ascontiguousarray(g, dtype=ct)
    dx = cupy.zeros((n, c, h, w), dtype=ct)
    for i0, i1 in batch_slices(n, gc.size // max(1, n)):
        _CUDA.launch("avg_pool_backward", ct, (i1 - i0) * (gc.size // n), gc[i0:i1], dx[i0:i1], *args)
    return dx if dx.dtype == dtype else dx.astype(dtype)
