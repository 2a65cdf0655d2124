"""Activation functions, each one Function over raw arrays.

ReLU, sigmoid, tanh, softmax and log-softmax are the autodiff core's Functions (xpnet.relu, ...);
this module adds leaky ReLU and ELU and the PyTorch-style functional signatures with input checks.

``inplace=`` is accepted everywhere for PyTorch compatibility; results are always computed out of
place (Array-API arrays may be immutable), which gives the same values and gradients.
"""

from __future__ import annotations

from ...autodiff.function import Function
from ...autodiff.ops.elementwise import ReLU, Sigmoid, Tanh, astype
from ...autodiff.ops.reduction import LogSoftmax, Softmax
from ...backends import resolve_dtype
from ._arrays import as_input, namespace, normalize_axis, raw, require_float


class LeakyRelu(Function):
    """y = x for x > 0, a x otherwise (a = negative_slope).

    Backward: dL/dx = dL/dy * (1 if x > 0 else a).
    """

    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        positive = x > 0
        ctx.save_for_backward(positive)
        ctx.slope = negative_slope
        return namespace(x).where(positive, x, x * negative_slope)

    @staticmethod
    def backward(ctx, g):
        (positive,) = ctx.saved_tensors
        return namespace(g).where(positive, g, g * ctx.slope)

    jvp = backward


class Elu(Function):
    """y = x for x > 0, alpha (e^x - 1) otherwise.

    Backward: dL/dx = dL/dy * (1 if x > 0 else y + alpha)   (since d/dx alpha(e^x - 1) = alpha e^x).
    """

    @staticmethod
    def forward(ctx, x, alpha=1.0):
        xp = namespace(x)
        positive = x > 0
        # expm1 of the clipped value: exact near 0, and no overflow in the branch that is discarded
        y = xp.where(positive, x, alpha * xp.expm1(xp.clip(x, max=0.0)))
        ctx.save_for_backward(positive, y)
        ctx.alpha = alpha
        return y

    @staticmethod
    def backward(ctx, g):
        positive, y = ctx.saved_tensors
        return namespace(g).where(positive, g, g * (y + ctx.alpha))

    jvp = backward


def _checked(input, where):
    input = as_input(input, where)
    require_float(input, where)
    return input


def relu(input, inplace: bool = False):
    return ReLU.apply(_checked(input, "relu"))


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False):
    return LeakyRelu.apply(_checked(input, "leaky_relu"), negative_slope=float(negative_slope))


def elu(input, alpha: float = 1.0, inplace: bool = False):
    return Elu.apply(_checked(input, "elu"), alpha=float(alpha))


def sigmoid(input):
    return Sigmoid.apply(_checked(input, "sigmoid"))


def tanh(input):
    return Tanh.apply(_checked(input, "tanh"))


def _prepare_softmax(input, dim, dtype, where):
    input = _checked(input, where)
    data = raw(input)
    if data.ndim == 0:
        raise ValueError(f"{where}: expected an input with at least 1 dimension, got a 0-d array")
    if dtype is not None:
        native = resolve_dtype(namespace(data), dtype)
        if native != data.dtype:
            input = astype(input, native)
    axis = data.ndim - 1 if dim is None else normalize_axis(int(dim), data.ndim, where)
    return input, axis


def softmax(input, dim=None, dtype=None):
    """Softmax along ``dim`` (None: the last dimension); ``dtype`` casts the input first."""
    input, axis = _prepare_softmax(input, dim, dtype, "softmax")
    return Softmax.apply(input, axis=axis)


def log_softmax(input, dim=None, dtype=None):
    """Log-softmax along ``dim`` (None: the last dimension); ``dtype`` casts the input first."""
    input, axis = _prepare_softmax(input, dim, dtype, "log_softmax")
    return LogSoftmax.apply(input, axis=axis)
