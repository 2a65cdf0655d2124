"""Reductions (sum, mean, max, min, var, std, argmax, argmin, logsumexp) and softmax/log_softmax.

Every reduction takes the Array-API spelling ``axis=``/``keepdims=`` and PyTorch's
``dim=``/``keepdim=``. Notation: G = dL/dy; Ĝ is G reshaped to the keepdims shape and broadcast
back over the reduced axes; N is the number of elements reduced into each output element.
"""

from __future__ import annotations

import math
import numbers

from ...backends import get_default_dtype, is_float_dtype, resolve_dtype
from ..function import Function
from ..tensor import Tensor
from . import return_types
from ._common import (keepdims_shape, namespace, normalize_axis, normalize_dim, pick_axis,
                      pick_keepdims, raw)
from .compare import maximum, minimum
from .gather_scatter import Gather
from .shape import reshape


def _setup(ctx, x, axis, keepdims):
    ctx.in_shape = tuple(x.shape)
    ctx.axes = axis
    ctx.keep_shape = keepdims_shape(ctx.in_shape, axis)
    ctx.keepdims = keepdims
    ctx.count = math.prod(ctx.in_shape[a] for a in axis)


def _spread(ctx, g):
    """Ĝ: the upstream gradient broadcast back over the reduced axes."""
    xp = namespace(g)
    if tuple(g.shape) != ctx.keep_shape:
        g = xp.reshape(g, ctx.keep_shape)
    return xp.broadcast_to(g, ctx.in_shape)


def _fold(ctx, y):
    """A keepdims-shaped reduction result in the shape the caller asked for."""
    if ctx.keepdims:
        return y
    return namespace(y).reshape(y, tuple(s for i, s in enumerate(ctx.in_shape) if i not in ctx.axes))


class Sum(Function):
    """y = Σ_axes x.        dL/dx = Ĝ

    A boolean input counts its True values (int64), as in PyTorch.
    """

    @staticmethod
    def forward(ctx, x, axis=(), keepdims=False):
        _setup(ctx, x, axis, keepdims)
        xp = namespace(x)
        if x.dtype == xp.bool:
            x = xp.astype(x, xp.int64)
        return xp.sum(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return _spread(ctx, g)

    @staticmethod
    def jvp(ctx, t):
        return namespace(t).sum(t, axis=ctx.axes, keepdims=ctx.keepdims)


class Mean(Function):
    """y = (1/N) Σ_axes x.        dL/dx = Ĝ / N

    A boolean or integer input is averaged in the default float dtype (``(pred == y).mean()``
    is an accuracy), the same on every backend.
    """

    @staticmethod
    def forward(ctx, x, axis=(), keepdims=False):
        _setup(ctx, x, axis, keepdims)
        xp = namespace(x)
        if not is_float_dtype(x.dtype):
            x = xp.astype(x, resolve_dtype(xp, get_default_dtype()))
        return xp.mean(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return _spread(ctx, g) / ctx.count

    @staticmethod
    def jvp(ctx, t):
        return namespace(t).mean(t, axis=ctx.axes, keepdims=ctx.keepdims)


class _Extremum(Function):
    """Shared code of Max and Min: the gradient goes to the elements equal to the extremum."""

    @staticmethod
    def _run(ctx, x, axis, keepdims, reducer):
        _setup(ctx, x, axis, keepdims)
        m = reducer(x, axis=axis, keepdims=True)
        ctx.save_for_backward(x, m)
        return _fold(ctx, m)

    @staticmethod
    def _weights(ctx):
        x, m = ctx.saved_tensors
        xp = namespace(x)
        hit = xp.astype(x == m, x.dtype)
        return hit / xp.sum(hit, axis=ctx.axes, keepdims=True)

    @staticmethod
    def backward(ctx, g):
        return _spread(ctx, g) * _Extremum._weights(ctx)

    @staticmethod
    def jvp(ctx, t):
        return namespace(t).sum(t * _Extremum._weights(ctx), axis=ctx.axes, keepdims=ctx.keepdims)


class Max(_Extremum):
    """y = max_axes x.

    dL/dx = Ĝ * [x = y] / #{x = y}   (ties share the gradient evenly, like torch.amax)
    """

    @staticmethod
    def forward(ctx, x, axis=(), keepdims=False):
        return _Extremum._run(ctx, x, axis, keepdims, namespace(x).max)


class Min(_Extremum):
    """y = min_axes x.

    dL/dx = Ĝ * [x = y] / #{x = y}   (ties share the gradient evenly, like torch.amin)
    """

    @staticmethod
    def forward(ctx, x, axis=(), keepdims=False):
        return _Extremum._run(ctx, x, axis, keepdims, namespace(x).min)


class Var(Function):
    """y = Σ_axes (x - x̄)² / (N - c), x̄ the mean over the axes, c the correction.

    dL/dx = Ĝ * 2 (x - x̄) / (N - c)
    (the x̄ term drops out of the gradient because Σ (x - x̄) = 0)
    """

    @staticmethod
    def forward(ctx, x, axis=(), keepdims=False, correction=1):
        _setup(ctx, x, axis, keepdims)
        xp = namespace(x)
        d = x - xp.mean(x, axis=axis, keepdims=True)
        ctx.denominator = ctx.count - correction
        ctx.save_for_backward(d)
        return xp.sum(d * d, axis=axis, keepdims=keepdims) / ctx.denominator

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        return _spread(ctx, g) * d * (2 / ctx.denominator)

    @staticmethod
    def jvp(ctx, t):
        (d,) = ctx.saved_tensors
        return namespace(t).sum(d * t, axis=ctx.axes, keepdims=ctx.keepdims) * (2 / ctx.denominator)


class Std(Function):
    """y = √(Σ_axes (x - x̄)² / (N - c)).

    dL/dx = Ĝ * (x - x̄) / ((N - c) ŷ)   (ŷ: y broadcast like Ĝ)
    """

    @staticmethod
    def forward(ctx, x, axis=(), keepdims=False, correction=1):
        _setup(ctx, x, axis, keepdims)
        xp = namespace(x)
        d = x - xp.mean(x, axis=axis, keepdims=True)
        ctx.denominator = ctx.count - correction
        y = xp.sqrt(xp.sum(d * d, axis=axis, keepdims=True) / ctx.denominator)
        ctx.save_for_backward(d, y)
        return _fold(ctx, y)

    @staticmethod
    def backward(ctx, g):
        d, y = ctx.saved_tensors
        return _spread(ctx, g) * (d / (y * ctx.denominator))

    @staticmethod
    def jvp(ctx, t):
        d, y = ctx.saved_tensors
        return namespace(t).sum(t * (d / (y * ctx.denominator)), axis=ctx.axes, keepdims=ctx.keepdims)


class LogSumExp(Function):
    """y = log Σ_axes exp(x), computed as m + log Σ exp(x - m) with m = max x (no overflow).

    dL/dx = Ĝ * exp(x - ŷ) = Ĝ * softmax(x)
    """

    @staticmethod
    def forward(ctx, x, axis=(), keepdims=False):
        _setup(ctx, x, axis, keepdims)
        xp = namespace(x)
        m = xp.max(x, axis=axis, keepdims=True)
        # a slice of all -inf (or an inf) would make x - m NaN; shift by 0 there instead
        m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
        y = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
        ctx.save_for_backward(x, y)
        return _fold(ctx, y)

    @staticmethod
    def _softmax(ctx):
        x, y = ctx.saved_tensors
        return namespace(x).exp(x - y)

    @staticmethod
    def backward(ctx, g):
        return _spread(ctx, g) * LogSumExp._softmax(ctx)

    @staticmethod
    def jvp(ctx, t):
        return namespace(t).sum(t * LogSumExp._softmax(ctx), axis=ctx.axes, keepdims=ctx.keepdims)


class Softmax(Function):
    """y_i = exp(x_i - m) / Σ_j exp(x_j - m) along one axis (m = max, for stability).

    dL/dx = y * (G - Σ_axis G y)
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        xp = namespace(x)
        e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
        y = e / xp.sum(e, axis=axis, keepdims=True)
        ctx.axis = axis
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        xp = namespace(g)
        return y * (g - xp.sum(g * y, axis=ctx.axis, keepdims=True))

    jvp = backward


class LogSoftmax(Function):
    """y = x - logsumexp(x) along one axis.

    dL/dx = G - softmax(x) * Σ_axis G
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        xp = namespace(x)
        shifted = x - xp.max(x, axis=axis, keepdims=True)
        y = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
        ctx.axis = axis
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        xp = namespace(g)
        return g - xp.exp(y) * xp.sum(g, axis=ctx.axis, keepdims=True)

    @staticmethod
    def jvp(ctx, t):
        (y,) = ctx.saved_tensors
        xp = namespace(t)
        return t - xp.sum(xp.exp(y) * t, axis=ctx.axis, keepdims=True)


class ArgMax(Function):
    """y = index of the largest element along one axis (or of the flattened input). No gradient."""

    differentiable = False

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        return namespace(x).argmax(x, axis=axis, keepdims=keepdims)


class ArgMin(Function):
    """y = index of the smallest element along one axis (or of the flattened input). No gradient."""

    differentiable = False

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        return namespace(x).argmin(x, axis=axis, keepdims=keepdims)


# -- public functions -----------------------------------------------------------------------------


def _reduce(cls, op, x, axis, keepdims, dim, keepdim, **config):
    axis = pick_axis(op, axis, dim)
    keepdims = pick_keepdims(op, keepdims, keepdim)
    axes = normalize_axis(axis, raw(x).ndim, op)
    return cls.apply(x, axis=axes, keepdims=keepdims, **config)


def sum(x, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001
    """Σ over ``axis`` (int, tuple or None for all); PyTorch's ``dim``/``keepdim`` also work.
    dL/dx = Ĝ (G broadcast back over the reduced axes)."""
    return _reduce(Sum, "sum", x, axis, keepdims, dim, keepdim)


def mean(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """Mean over ``axis`` (int, tuple or None for all).
    dL/dx = Ĝ / N."""
    return _reduce(Mean, "mean", x, axis, keepdims, dim, keepdim)


def _is_dim(v):
    """An axis number (a Python or NumPy integer, not a bool)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _extreme(op, cls, pair, pick, elementwise, x, dim, keepdim, axis, keepdims):
    """torch.max/min: (x) overall, (x, other) elementwise, (x, dim) values and indices; the Array
    API's axis= (an int or a tuple) and a tuple dim give values only, like amax/amin."""
    if dim is not None and not _is_dim(dim) and not isinstance(dim, (tuple, list)):
        if hasattr(raw(dim), "shape"):  # torch.max(a, b): the elementwise maximum
            if keepdim is not None or axis is not None or keepdims is not None:
                raise TypeError(f"{op}: keepdim/axis do not apply to the elementwise {op}(a, b)")
            return elementwise(x, dim)
        raise TypeError(f"{op}: dim must be an int (or a Tensor for the elementwise {op}), got "
                        f"{type(dim).__name__}")
    if dim is not None and _is_dim(dim):
        if axis is not None and axis != dim:
            raise TypeError(f"{op}: got both axis={axis!r} and dim={dim!r}; pass one of them")
        keep = pick_keepdims(op, keepdims, keepdim)
        data = raw(x)
        if data.ndim == 0:  # torch accepts dim 0 or -1 here: the value itself, at index 0
            normalize_axis(dim, 0, op)
            xp = namespace(data)
            return pair(reshape(x, ()), Tensor._wrap(xp.zeros((), dtype=xp.int64, device=data.device)))
        d = normalize_dim(dim, data.ndim, op)
        indices = pick.apply(x, axis=d, keepdims=True)
        values = Gather.apply(x, indices.data, dim=d)
        if not keep:
            folded = tuple(n for i, n in enumerate(data.shape) if i != d)
            values, indices = reshape(values, folded), reshape(indices, folded)
        return pair(values, indices)
    return _reduce(cls, op, x, axis, keepdims, dim, keepdim)


def max(x, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001
    """Largest values, as ``torch.max``: ``max(x)`` over everything; ``max(x, dim)`` (an int,
    positional or ``dim=``) the named pair ``(values, indices)`` along dim (indices of the first
    maximum; ``keepdim`` keeps the axis); ``max(x, other)`` the elementwise maximum. The Array
    API's ``axis=`` (an int or a tuple) gives values only, as ``amax``.

    Backward: max(x) and axis= reductions share G evenly among tied maxima (Max);
    max(x, dim).values sends G to the returned index only (a gather's gradient), as PyTorch.
    """
    return _extreme("max", Max, return_types.max, ArgMax, maximum, x, dim, keepdim, axis, keepdims)


def min(x, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001
    """Smallest values, as ``torch.min``: ``min(x)``, ``min(x, dim)`` -> ``(values, indices)``,
    ``min(x, other)`` elementwise; ``axis=`` gives values only (``amin``). Gradients as ``max``."""
    return _extreme("min", Min, return_types.min, ArgMin, minimum, x, dim, keepdim, axis, keepdims)


def amax(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """Largest values over ``dim`` (an int, a tuple, or all axes when None or ()), values only,
    as ``torch.amax``. dL/dx = Ĝ [x = ŷ] / #{x = ŷ} (ties share evenly)."""
    dim = None if dim == () else dim
    return _reduce(Max, "amax", x, axis, keepdims, dim, keepdim)


def amin(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """Smallest values over ``dim`` (an int, a tuple, or all axes), values only, as ``torch.amin``.
    dL/dx = Ĝ [x = ŷ] / #{x = ŷ}."""
    dim = None if dim == () else dim
    return _reduce(Min, "amin", x, axis, keepdims, dim, keepdim)


def _correction(op, correction, unbiased):
    if unbiased is not None:
        if correction is not None and correction != (1 if unbiased else 0):
            raise TypeError(f"{op}: got both correction={correction} and unbiased={unbiased}")
        return 1 if unbiased else 0
    return 1 if correction is None else correction


def var(x, axis=None, keepdims=None, *, correction=None, unbiased=None, dim=None, keepdim=None):
    """Variance over ``axis``: Σ (x - x̄)² / (N - correction).

    The default is PyTorch's: ``correction=1`` (the unbiased, Bessel-corrected estimate), whereas
    ``numpy.var`` and the Array API default to 0. ``unbiased=False`` (PyTorch's older spelling)
    means ``correction=0``; ``unbiased=True`` means ``correction=1``.
    dL/dx = Ĝ 2 (x - x̄) / (N - correction)."""
    return _reduce(Var, "var", x, axis, keepdims, dim, keepdim,
                   correction=_correction("var", correction, unbiased))


def std(x, axis=None, keepdims=None, *, correction=None, unbiased=None, dim=None, keepdim=None):
    """Standard deviation over ``axis``, √var; same ``correction=1`` default as ``var``.
    dL/dx = Ĝ (x - x̄) / ((N - correction) ŷ)."""
    return _reduce(Std, "std", x, axis, keepdims, dim, keepdim,
                   correction=_correction("std", correction, unbiased))


def logsumexp(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """log Σ exp(x) over ``axis`` (all axes when None), without overflow.
    dL/dx = Ĝ softmax(x)."""
    return _reduce(LogSumExp, "logsumexp", x, axis, keepdims, dim, keepdim)


def softmax(x, axis=-1, *, dim=None):
    """exp(x) / Σ exp(x) along one axis (the last by default), numerically stable.
    dL/dx = y (G - Σ G y)."""
    axis = normalize_dim(axis if dim is None else dim, raw(x).ndim, "softmax")
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1, *, dim=None):
    """x - logsumexp(x) along one axis (the last by default), numerically stable.
    dL/dx = G - softmax(x) Σ G."""
    axis = normalize_dim(axis if dim is None else dim, raw(x).ndim, "log_softmax")
    return LogSoftmax.apply(x, axis=axis)


def _arg(cls, op, x, axis, keepdims, dim, keepdim):
    axis = pick_axis(op, axis, dim)
    if axis is not None:
        axis = normalize_dim(axis, raw(x).ndim, op)
    return cls.apply(x, axis=axis, keepdims=pick_keepdims(op, keepdims, keepdim))


def argmax(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """Index of the largest element along ``axis`` (of the flattened input when None); int64.
    Piecewise constant: no gradient."""
    return _arg(ArgMax, "argmax", x, axis, keepdims, dim, keepdim)


def argmin(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """Index of the smallest element along ``axis`` (of the flattened input when None); int64.
    Piecewise constant: no gradient."""
    return _arg(ArgMin, "argmin", x, axis, keepdims, dim, keepdim)


# the differentiable functions; the Function classes stay importable from this module
__all__ = [
    "sum", "mean", "max", "min", "amax", "amin", "var", "std", "logsumexp", "softmax",
    "log_softmax", "argmax", "argmin",
]
