"""Running sums, products and norms: cumsum, prod, norm.

Notation as in reduction.py: G = dL/dy; Ĝ is G reshaped to the keepdims shape and broadcast back
over the reduced axes; ŷ likewise for the result y.
"""

from __future__ import annotations

import math

from ...backends import dtype_name, is_float_dtype
from ..function import Function
from ._common import keepdims_shape, namespace, normalize_axis, normalize_dim, pick_axis, pick_keepdims, raw
from .elementwise import astype
from .rearrange import clone
from .reduction import _fold, _setup, _spread
from .shape import permute, reshape


def _integer_to_int64(x, dtype):
    """``x`` cast to ``dtype`` if given; bool and integer inputs count in int64, as in PyTorch."""
    if dtype is not None:
        return astype(x, dtype)
    data = raw(x)
    if is_float_dtype(data.dtype) or dtype_name(data.dtype) == "int64":
        return x
    return astype(x, "int64")


class CumSum(Function):
    """y_i = Σ_{j ≤ i} x_j along one axis.

    dL/dx_j = Σ_{i ≥ j} G_i   (a cumulative sum of G from the far end: flip(cumsum(flip(G))))
    """

    @staticmethod
    def forward(ctx, x, axis=0):
        ctx.axis = axis
        return namespace(x).cumulative_sum(x, axis=axis)

    @staticmethod
    def backward(ctx, g):
        xp = namespace(g)
        a = ctx.axis
        return xp.flip(xp.cumulative_sum(xp.flip(g, axis=a), axis=a), axis=a)

    @staticmethod
    def jvp(ctx, t):
        return namespace(t).cumulative_sum(t, axis=ctx.axis)


def _cut(x, axis, start, stop):
    return x[tuple(slice(start, stop) if k == axis else slice(None) for k in range(x.ndim))]


def _product_of_others(x, axis):
    """Π_{j≠i} x_j along ``axis`` for every i, as (product before i) × (product after i): two
    cumulative products, no division, so exact when some x_j is 0."""
    xp = namespace(x)
    n = x.shape[axis]
    before = _cut(xp.cumulative_prod(x, axis=axis, include_initial=True), axis, 0, n)
    reverse = xp.cumulative_prod(xp.flip(x, axis=axis), axis=axis, include_initial=True)
    return before * xp.flip(_cut(reverse, axis, 0, n), axis=axis)


class Prod(Function):
    """y = Π x along one axis.

    dL/dx_i = Ĝ Π_{j≠i} x_j   (the product of the others from two cumulative products, exact
    where some x_j = 0; no y / x_i)
    """

    @staticmethod
    def forward(ctx, x, axis=0, keepdims=False):
        _setup(ctx, x, (axis,), keepdims)
        ctx.axis = axis
        ctx.save_for_backward(x)
        return namespace(x).prod(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _spread(ctx, g) * _product_of_others(x, ctx.axis)

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return namespace(t).sum(t * _product_of_others(x, ctx.axis), axis=ctx.axis, keepdims=ctx.keepdims)


class VectorNorm(Function):
    """y = (Σ_axes |x|^p)^(1/p); p = inf: max |x|; p = -inf: min |x|; p = 0: the count of x ≠ 0.

    dL/dx = Ĝ * w, with ŷ the norm broadcast back over the axes and
      p = 2: w = x / ŷ;   p = 1: w = sign(x);   p = 0: w = 0;
      p = ±inf: w = sign(x) [|x| = ŷ] / #{|x| = ŷ}   (ties share the gradient evenly);
      otherwise: w = sign(x) |x|^(p-1) / ŷ^(p-1);
    and w = 0 wherever ŷ = 0 or x = 0 (PyTorch's subgradient at the origin).
    """

    @staticmethod
    def forward(ctx, x, ord=2.0, axis=(), keepdims=False):
        _setup(ctx, x, axis, keepdims)
        ctx.ord = ord
        xp = namespace(x)
        every = len(axis) == x.ndim
        y = xp.linalg.vector_norm(x, axis=None if every else axis, keepdims=True, ord=ord)
        if every:
            y = xp.reshape(y, ctx.keep_shape)
        ctx.save_for_backward(x, y)
        return _fold(ctx, y)

    @staticmethod
    def _weights(ctx):
        x, y = ctx.saved_tensors
        xp = namespace(x)
        p = ctx.ord
        if p == 0:
            return xp.zeros_like(x)
        if p == 1:
            return xp.sign(x)
        zero = y == 0
        safe = xp.where(zero, xp.ones_like(y), y)
        if p == 2:
            return x / safe  # where ŷ = 0 every x of the group is 0, so w = 0 there
        magnitude = xp.abs(x)
        if math.isinf(p):
            hit = xp.astype(xp.logical_or(magnitude == y, xp.isnan(magnitude)), x.dtype)
            return xp.sign(x) * hit / xp.sum(hit, axis=ctx.axes, keepdims=True)
        # |x|^(p-1) taken at |x| = 1 where x = 0 (sign(x) = 0 there): no 0 * inf for p < 1
        magnitude = xp.where(magnitude == 0, xp.ones_like(magnitude), magnitude)
        scaled = xp.sign(x) * magnitude ** (p - 1)
        return xp.where(zero, xp.zeros_like(y), 1 / safe ** (p - 1)) * scaled

    @staticmethod
    def backward(ctx, g):
        return _spread(ctx, g) * VectorNorm._weights(ctx)

    @staticmethod
    def jvp(ctx, t):
        return namespace(t).sum(t * VectorNorm._weights(ctx), axis=ctx.axes, keepdims=ctx.keepdims)


# -- public functions -----------------------------------------------------------------------------


def cumsum(input, dim, *, dtype=None):  # noqa: A002
    """Running sums along ``dim``, as ``torch.cumsum`` (bool and integer inputs sum in int64).
    dL/dx_j = Σ_{i ≥ j} G_i."""
    data = raw(input)
    if data.ndim == 0:
        normalize_dim(dim, 1, "cumsum")
        return clone(_integer_to_int64(input, dtype))
    d = normalize_dim(dim, data.ndim, "cumsum")
    return CumSum.apply(_integer_to_int64(input, dtype), axis=d)


def prod(input, dim=None, keepdim=None, *, axis=None, keepdims=None, dtype=None):  # noqa: A002
    """Product over ``dim`` (all entries when None; the Array API's ``axis`` may be a tuple), as
    ``torch.prod`` (bool and integer inputs multiply in int64). dL/dx_i = Ĝ Π_{j≠i} x_j, exact
    with zeros."""
    axis = pick_axis("prod", axis, dim)
    keep = pick_keepdims("prod", keepdims, keepdim)
    x = _integer_to_int64(input, dtype)
    shape = tuple(raw(x).shape)
    axes = normalize_axis(axis, len(shape), "prod")
    if not axes:
        return clone(x)
    if len(axes) == 1:
        return Prod.apply(x, axis=axes[0], keepdims=keep)
    # several axes (all of them when None): moved to the end, merged into one, reduced
    rest = [a for a in range(len(shape)) if a not in axes]
    if rest and list(axes) != list(range(len(rest), len(shape))):
        x = permute(x, rest + list(axes))
    merged = math.prod(shape[a] for a in axes)
    y = Prod.apply(reshape(x, tuple(shape[a] for a in rest) + (merged,)), axis=len(rest), keepdims=False)
    return reshape(y, keepdims_shape(shape, axes)) if keep else y


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):  # noqa: A002
    """The vector p-norm over ``dim`` (all entries when None), as ``torch.norm``: ``p`` a number,
    ``inf``/``-inf``, or ``'fro'`` (the 2-norm); the nuclear norm is not provided.
    dL/dx = Ĝ x / ŷ for p = 2 (0 where the norm is 0); see VectorNorm for every p."""
    if p is None or (isinstance(p, str) and p == "fro"):
        order = 2.0
    elif isinstance(p, str):
        raise ValueError(f"norm: p={p!r} is not supported; use a number, inf, -inf or 'fro'")
    else:
        order = float(p)
    x = input if dtype is None else astype(input, dtype)
    data = raw(x)
    if not is_float_dtype(data.dtype):
        raise TypeError(f"norm: expected a floating-point Tensor, got dtype {dtype_name(data.dtype)}")
    axes = normalize_axis(dim, data.ndim, "norm")
    return VectorNorm.apply(x, ord=order, axis=axes, keepdims=bool(keepdim))


__all__ = ["cumsum", "prod", "norm"]
