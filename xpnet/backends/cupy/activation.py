"""CuPy ReLU (registered as ``("cupy", RELU_FORWARD)`` and ``RELU_BACKWARD``): one fused
ElementwiseKernel each way, on any strides (an NHWC buffer behind an NCHW view stays as it is)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from .. import kernels
from ..kernels import ReLUForward, register_kernel
from .runtime import load_cupy, on_array_device


class ReLUSaved(NamedTuple):
    """What ``relu_forward`` keeps for ``relu_backward``."""

    mask: Any  # bool, x > 0


@functools.lru_cache(maxsize=None)
def _relu_kernels():
    cupy = load_cupy()
    forward = cupy.ElementwiseKernel(
        "T x", "T y, bool m",
        "m = x > (T)0; y = (m || x != x) ? x : (T)0;",  # a NaN stays NaN, as maximum(x, 0)
        "xpnet_relu_forward")
    backward = cupy.ElementwiseKernel("T g, bool m", "T dx", "dx = m ? g : (T)0;", "xpnet_relu_backward")
    return forward, backward


@register_kernel("cupy", kernels.RELU_FORWARD)
@on_array_device
def relu_forward(x):
    """(maximum(x, 0), x > 0) in one pass: one read of x, one write of each output."""
    y, mask = _relu_kernels()[0](x)
    return ReLUForward(y, ReLUSaved(mask))


@register_kernel("cupy", kernels.RELU_BACKWARD)
@on_array_device
def relu_backward(g, saved):
    """dL/dx = G * [x > 0] as a select (0 where the mask is off, even where G is inf or NaN)."""
    return _relu_kernels()[1](g, saved.mask)
