"""Comparisons and selection: maximum, minimum, clip, where, and eq/ne/lt/le/gt/ge.

Binary operations broadcast like the Array API; the gradient of a broadcast operand is summed
back to its shape (``unbroadcast``). Python numbers mix with Tensors and get no gradient. The
comparisons give boolean Tensors without gradient. Notation: G = dL/dy, products are elementwise.
"""

from __future__ import annotations

import builtins

from ...backends import dtype_name, get_default_dtype, is_float_dtype, resolve_dtype
from ..function import Function
from ..tensor import Tensor
from ._common import (NUMBER, add_tangents, check_operands, expand_to, namespace, namespace_of, normalize_axis,
                      pick_axis, pick_keepdims, raw, save_operands, unbroadcast)

# -- maximum / minimum / clip / where -------------------------------------------------------------


def _as_operand(v, like):
    """A Python number as a 0-d array of ``like``'s dtype (where() needs arrays on every side)."""
    if isinstance(v, (int, float, bool)):
        xp = namespace(like)
        return xp.asarray(v, dtype=like.dtype, device=like.device)
    return v


def _extreme_masks(a, b, larger: bool):
    """Weights of a and b in max(a, b) (or min): 1 for the winner, 1/2 each at a tie (PyTorch)."""
    xp = namespace(a)
    wins = (a > b) if larger else (a < b)
    wa = xp.astype(wins, a.dtype) + 0.5 * xp.astype(a == b, a.dtype)
    return wa, 1 - wa


class _Extreme(Function):
    larger = True

    @classmethod
    def _forward(cls, ctx, a, b):
        save_operands(ctx, a, b)
        xp = namespace_of(a, b)
        a_arr, b_arr = _as_operand(a, b), _as_operand(b, a)
        out = xp.maximum(a_arr, b_arr) if cls.larger else xp.minimum(a_arr, b_arr)
        ctx.save_for_backward(a_arr, b_arr)
        ctx.out_shape = out.shape
        return out

    @classmethod
    def _backward(cls, ctx, g):
        a, b = ctx.saved_tensors
        wa, wb = _extreme_masks(a, b, cls.larger)
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(g * wa, ctx.a_shape, ctx.a_dtype) if need_a else None,
                unbroadcast(g * wb, ctx.b_shape, ctx.b_dtype) if need_b else None)

    @classmethod
    def _jvp(cls, ctx, ta, tb):
        a, b = ctx.saved_tensors
        wa, wb = _extreme_masks(a, b, cls.larger)
        return expand_to(add_tangents(None if ta is None else ta * wa, None if tb is None else tb * wb),
                         ctx.out_shape)


class Maximum(_Extreme):
    """y = max(a, b) elementwise (broadcast).

    dL/da = unbroadcast(G * w)   dL/db = unbroadcast(G * (1 - w)),  w = [a > b] + ½ [a = b]
    (a tie splits the gradient evenly, as PyTorch does).
    """

    larger = True

    @staticmethod
    def forward(ctx, a, b):
        return Maximum._forward(ctx, a, b)

    @staticmethod
    def backward(ctx, g):
        return Maximum._backward(ctx, g)

    @staticmethod
    def jvp(ctx, ta, tb):
        return Maximum._jvp(ctx, ta, tb)


class Minimum(_Extreme):
    """y = min(a, b) elementwise (broadcast).

    dL/da = unbroadcast(G * w)   dL/db = unbroadcast(G * (1 - w)),  w = [a < b] + ½ [a = b]
    """

    larger = False

    @staticmethod
    def forward(ctx, a, b):
        return Minimum._forward(ctx, a, b)

    @staticmethod
    def backward(ctx, g):
        return Minimum._backward(ctx, g)

    @staticmethod
    def jvp(ctx, ta, tb):
        return Minimum._jvp(ctx, ta, tb)


class Clip(Function):
    """y = min(max(x, lo), hi) for Python-number bounds (either may be None).

    dL/dx = G * [lo ≤ x ≤ hi]   (the bounds pass the gradient, as PyTorch's clamp does)
    """

    @staticmethod
    def forward(ctx, x, min=None, max=None):
        xp = namespace(x)
        inside = None
        if min is not None:
            inside = x >= min
        if max is not None:
            upper = x <= max
            inside = upper if inside is None else xp.logical_and(inside, upper)
        ctx.save_for_backward(inside)
        if min is None and max is None:
            return x + 0  # a fresh array: the output must not alias the input
        return xp.clip(x, min, max)

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        if inside is None:
            return g
        xp = namespace(g)
        return xp.where(inside, g, xp.zeros_like(g))

    jvp = backward


class Where(Function):
    """y = where(c, a, b): a where the condition c holds, b elsewhere (broadcast).

    dL/da = unbroadcast(G * [c])        dL/db = unbroadcast(G * [not c])
    """

    @staticmethod
    def forward(ctx, cond, a, b):
        save_operands(ctx, a, b)
        xp = namespace_of(a, b, cond)
        if isinstance(a, NUMBER) and isinstance(b, NUMBER):
            # both branches are numbers: a float result takes the default float dtype, as factories do
            floaty = isinstance(a, float) or isinstance(b, float)
            dtype = resolve_dtype(xp, get_default_dtype() if floaty else "int64")
            a_arr = xp.asarray(a, dtype=dtype, device=cond.device)
            b_arr = xp.asarray(b, dtype=dtype, device=cond.device)
        else:
            a_arr, b_arr = _as_operand(a, b), _as_operand(b, a)
        out = xp.where(cond, a_arr, b_arr)
        ctx.save_for_backward(cond)
        ctx.out_shape = out.shape
        return out

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        xp = namespace(g)
        zero = xp.zeros_like(g)
        _, need_a, need_b = ctx.needs_input_grad
        return (None,
                unbroadcast(xp.where(cond, g, zero), ctx.a_shape, ctx.a_dtype) if need_a else None,
                unbroadcast(xp.where(cond, zero, g), ctx.b_shape, ctx.b_dtype) if need_b else None)

    @staticmethod
    def jvp(ctx, tc, ta, tb):
        (cond,) = ctx.saved_tensors
        shape = ctx.out_shape
        ref = ta if ta is not None else tb
        xp = namespace(ref)
        zero = xp.zeros(shape, dtype=ref.dtype, device=ref.device)
        ta = zero if ta is None else expand_to(ta, shape)
        tb = zero if tb is None else expand_to(tb, shape)
        return xp.where(cond, ta, tb)


# -- comparisons (no gradient) --------------------------------------------------------------------


def _comparison(name, symbol, method, reflected):
    def forward(ctx, a, b):
        if isinstance(a, (int, float, bool)):
            return getattr(b, reflected)(a)
        return getattr(a, method)(b)

    doc = f"y = (a {symbol} b) elementwise, a boolean array. Piecewise constant: no gradient flows."
    cls = type(name, (Function,), {"__doc__": doc, "differentiable": False,
                                   "forward": staticmethod(forward)})
    return cls


Equal = _comparison("Equal", "==", "__eq__", "__eq__")
NotEqual = _comparison("NotEqual", "!=", "__ne__", "__ne__")
Less = _comparison("Less", "<", "__lt__", "__gt__")
LessEqual = _comparison("LessEqual", "<=", "__le__", "__ge__")
Greater = _comparison("Greater", ">", "__gt__", "__lt__")
GreaterEqual = _comparison("GreaterEqual", ">=", "__ge__", "__le__")


# -- public functions -----------------------------------------------------------------------------


def maximum(a, b):
    """Elementwise maximum (broadcast); at a tie the gradient is split evenly."""
    check_operands("maximum", a, b)
    return Maximum.apply(a, b)


def minimum(a, b):
    """Elementwise minimum (broadcast); at a tie the gradient is split evenly."""
    check_operands("minimum", a, b)
    return Minimum.apply(a, b)


def clip(x, min=None, max=None):  # noqa: A002 - PyTorch's keyword names
    """Clamp ``x`` into [min, max]; either bound may be None, a number or a Tensor.

    Tensor bounds are differentiable (computed as ``minimum(maximum(x, min), max)``).
    dL/dx = G [min ≤ x ≤ max]; Tensor bounds get G where they bind."""
    if isinstance(min, Tensor) or isinstance(max, Tensor) or _is_array(min) or _is_array(max):
        out = x
        if min is not None:
            out = maximum(out, min)
        if max is not None:
            out = minimum(out, max)
        return out
    return Clip.apply(x, min=min, max=max)


clamp = clip


def _is_array(v):
    return v is not None and not isinstance(v, (int, float, bool)) and hasattr(v, "shape")


def where(condition, a=None, b=None):
    """``a`` where ``condition`` holds, else ``b`` (broadcast); ``a``/``b`` may be numbers.
    dL/da = unbroadcast(G [c]), dL/db = unbroadcast(G [not c]). ``where(condition)`` alone is
    ``nonzero(condition, as_tuple=True)``: one int64 index Tensor per dimension, as torch."""
    cond = raw(condition)
    if isinstance(cond, (int, float, bool)) or cond.dtype != namespace(cond).bool:
        if a is None and b is None and not isinstance(cond, (int, float, bool)):
            condition = NotEqual.apply(condition, 0)  # torch.where(x): the nonzero entries
            cond = raw(condition)
        else:
            got = type(cond).__name__ if isinstance(cond, (int, float, bool)) else dtype_name(cond.dtype)
            raise TypeError(f"where: condition must be a boolean Tensor or array, got {got}")
    if a is None and b is None:
        return NonZero.apply(condition)
    if a is None or b is None:
        raise TypeError("where: give both branches (where(condition, a, b)) or neither (where(condition))")
    return Where.apply(cond, a, b)


class NonZero(Function):
    """(i_0, i_1, ...) = the coordinates of the True entries, one int64 array per dimension, in
    row-major order. No gradient."""

    differentiable = False

    @staticmethod
    def forward(ctx, x):
        xp = namespace(x)
        if x.ndim == 0:
            x = xp.reshape(x, (1,))
        return tuple(xp.astype(i, xp.int64) for i in xp.nonzero(x))


def _comparison_function(name, function_class, symbol):
    """The public ``name(a, b)`` of a comparison: operands checked, then ``function_class``."""

    def compare(a, b):
        check_operands(name, a, b)
        return function_class.apply(a, b)

    compare.__name__ = compare.__qualname__ = name
    compare.__doc__ = f"a {symbol} b elementwise: a boolean Tensor without gradient."
    return compare


eq = _comparison_function("eq", Equal, "==")
ne = _comparison_function("ne", NotEqual, "!=")
lt = _comparison_function("lt", Less, "<")
le = _comparison_function("le", LessEqual, "<=")
gt = _comparison_function("gt", Greater, ">")
ge = _comparison_function("ge", GreaterEqual, ">=")
not_equal, less, less_equal, greater, greater_equal = ne, lt, le, gt, ge


# -- closeness, special values, logical reductions (no gradient) ----------------------------------


def _same_kind(a, b):
    """Both operands as arrays, floating (isclose's tolerance arithmetic needs floats, and strict
    namespaces refuse int-float mixes): a number takes the other's float dtype, integers float64."""
    xp = namespace_of(a, b)
    ref = b if isinstance(a, NUMBER) else a
    number_dtype = ref.dtype if is_float_dtype(ref.dtype) else xp.float64
    a, b = (xp.asarray(v, dtype=number_dtype, device=ref.device) if isinstance(v, NUMBER) else v for v in (a, b))
    if not is_float_dtype(a.dtype):
        a = xp.astype(a, b.dtype if is_float_dtype(b.dtype) else xp.float64)
    if not is_float_dtype(b.dtype):
        b = xp.astype(b, a.dtype)
    return xp, a, b


class IsClose(Function):
    """y = |a - b| <= atol + rtol |b|, or a = b (equal infinities), or both NaN when equal_nan.
    Piecewise constant: no gradient."""

    differentiable = False

    @staticmethod
    def forward(ctx, a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
        xp, a, b = _same_kind(a, b)
        finite = xp.logical_and(xp.isfinite(a), xp.isfinite(b))
        zero = xp.zeros_like(a)
        a0, b0 = xp.where(finite, a, zero), xp.where(finite, b, zero)  # no inf - inf
        close = xp.logical_and(xp.abs(a0 - b0) <= atol + rtol * xp.abs(b0), finite)
        close = xp.logical_or(close, a == b)
        if equal_nan:
            close = xp.logical_or(close, xp.logical_and(xp.isnan(a), xp.isnan(b)))
        return close


class _Test(Function):
    """y = test(x) elementwise (isnan, isfinite, isinf): a boolean array. No gradient."""

    differentiable = False

    @staticmethod
    def forward(ctx, x, test="isnan"):
        return getattr(namespace(x), test)(x)


class _Logical(Function):
    """y = all(x) or any(x) over the axes: a boolean array. No gradient."""

    differentiable = False

    @staticmethod
    def forward(ctx, x, which="all", axis=(), keepdims=False):
        xp = namespace(x)
        return getattr(xp, which)(x, axis=axis, keepdims=keepdims)


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):  # noqa: A002
    """|input - other| <= atol + rtol |other| elementwise (equal infinities count as close; NaNs
    only with ``equal_nan``), as ``torch.isclose``: a boolean Tensor without gradient."""
    check_operands("isclose", input, other)
    return IsClose.apply(input, other, rtol=rtol, atol=atol, equal_nan=equal_nan)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):  # noqa: A002
    """True when ``isclose`` holds for every element (after broadcasting), as ``torch.allclose``."""
    return builtins.bool(_Logical.apply(isclose(input, other, rtol, atol, equal_nan), which="all", axis=None))


def equal(input, other):  # noqa: A002
    """True when both have the same shape and the same values (NaN equals nothing), as
    ``torch.equal``: a Python bool. (The Array API's elementwise ``equal`` is ``eq``.)"""
    a, b = raw(input), raw(other)
    if tuple(a.shape) != tuple(b.shape):
        return False
    same = Equal.apply(input, other) if a.dtype == b.dtype else IsClose.apply(input, other, rtol=0.0, atol=0.0)
    return builtins.bool(_Logical.apply(same, which="all", axis=None))


def isnan(input):  # noqa: A002
    """input != input elementwise: a boolean Tensor without gradient."""
    return _Test.apply(input, test="isnan")


def isfinite(input):  # noqa: A002
    """Neither infinite nor NaN, elementwise: a boolean Tensor without gradient."""
    return _Test.apply(input, test="isfinite")


def isinf(input):  # noqa: A002
    """+inf or -inf elementwise: a boolean Tensor without gradient."""
    return _Test.apply(input, test="isinf")


def _logical(which, input, dim, keepdim, axis, keepdims):
    data = raw(input)
    axis = pick_axis(which, axis, dim)
    axes = normalize_axis(axis, data.ndim, which)
    if data.dtype != namespace(data).bool:
        input = NotEqual.apply(input, 0)  # torch: a number counts as True when nonzero
    return _Logical.apply(input, which=which, axis=axes, keepdims=pick_keepdims(which, keepdims, keepdim))


def all(input, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001,A002
    """Whether every element (along ``dim``: an int, a tuple or all axes) is True or nonzero, as
    ``torch.all``: a boolean Tensor without gradient."""
    return _logical("all", input, dim, keepdim, axis, keepdims)


def any(input, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001,A002
    """Whether some element (along ``dim``) is True or nonzero, as ``torch.any``: a boolean Tensor
    without gradient."""
    return _logical("any", input, dim, keepdim, axis, keepdims)


__all__ = [
    "maximum", "minimum", "clip", "clamp", "where", "eq", "ne", "lt", "le", "gt", "ge", "equal",
    "not_equal", "less", "less_equal", "greater", "greater_equal", "isclose", "allclose", "isnan",
    "isfinite", "isinf", "all", "any",
]
