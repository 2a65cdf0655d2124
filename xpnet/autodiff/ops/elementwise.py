"""Elementwise operations: arithmetic, unary maps, maximum/minimum/clip/where, casts, comparisons.

Binary operations broadcast like the Array API; the gradient of a broadcast operand is summed
back to its shape (``unbroadcast``). Python numbers mix with Tensors and get no gradient.
Notation: G = dL/dy, the upstream gradient, of y's shape; products are elementwise.
"""

from __future__ import annotations

import math

from ...backends import backend_of, dtype_name, get_default_dtype, is_float_dtype, kernels, resolve_dtype
from ...backends.kernels import ReLUForward
from ..function import Function
from ..tensor import Tensor
from ._common import add_tangents, expand_to, namespace, namespace_of, raw, unbroadcast

# -- arithmetic -----------------------------------------------------------------------------------


_NUMBER = (int, float, bool)


def _save_operands(ctx, a, b):
    """Record the operands' shapes and dtypes (not the arrays) for unbroadcast in backward."""
    if isinstance(a, _NUMBER):
        ctx.a_shape, ctx.a_dtype = (), None
    else:
        ctx.a_shape, ctx.a_dtype = a.shape, a.dtype
    if isinstance(b, _NUMBER):
        ctx.b_shape, ctx.b_dtype = (), None
    else:
        ctx.b_shape, ctx.b_dtype = b.shape, b.dtype


class Add(Function):
    """y = a + b (broadcast).

    dL/da = unbroadcast(G)        dL/db = unbroadcast(G)
    """

    @staticmethod
    def forward(ctx, a, b):
        _save_operands(ctx, a, b)
        out = a + b
        ctx.out_shape = out.shape
        return out

    @staticmethod
    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(g, ctx.a_shape, ctx.a_dtype) if need_a else None,
                unbroadcast(g, ctx.b_shape, ctx.b_dtype) if need_b else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        return expand_to(add_tangents(ta, tb), ctx.out_shape)


class Sub(Function):
    """y = a - b (broadcast).

    dL/da = unbroadcast(G)        dL/db = -unbroadcast(G)
    """

    @staticmethod
    def forward(ctx, a, b):
        _save_operands(ctx, a, b)
        out = a - b
        ctx.out_shape = out.shape
        return out

    @staticmethod
    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(g, ctx.a_shape, ctx.a_dtype) if need_a else None,
                -unbroadcast(g, ctx.b_shape, ctx.b_dtype) if need_b else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        return expand_to(add_tangents(ta, None if tb is None else -tb), ctx.out_shape)


class Mul(Function):
    """y = a * b (broadcast).

    dL/da = unbroadcast(G * b)        dL/db = unbroadcast(G * a)
    """

    @staticmethod
    def forward(ctx, a, b):
        _save_operands(ctx, a, b)
        ctx.save_for_backward(a, b)
        out = a * b
        ctx.out_shape = out.shape
        return out

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(g * b, ctx.a_shape, ctx.a_dtype) if need_a else None,
                unbroadcast(g * a, ctx.b_shape, ctx.b_dtype) if need_b else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved_tensors
        return expand_to(add_tangents(None if ta is None else ta * b, None if tb is None else a * tb),
                         ctx.out_shape)


class Div(Function):
    """y = a / b (broadcast).

    dL/da = unbroadcast(G / b)        dL/db = -unbroadcast(G * a / b²) = -unbroadcast(G * y / b)
    """

    @staticmethod
    def forward(ctx, a, b):
        _save_operands(ctx, a, b)
        out = a / b
        ctx.save_for_backward(b, out)
        ctx.out_shape = out.shape
        return out

    @staticmethod
    def backward(ctx, g):
        b, y = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = g / b
        return (unbroadcast(ga, ctx.a_shape, ctx.a_dtype) if need_a else None,
                unbroadcast(-(ga * y), ctx.b_shape, ctx.b_dtype) if need_b else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        b, y = ctx.saved_tensors
        tangent = add_tangents(ta, None if tb is None else -(y * tb))
        return expand_to(tangent / b, ctx.out_shape)


class Pow(Function):
    """y = a ** b (broadcast; either may be a Python number).

    dL/da = unbroadcast(G * b * a^(b-1))
    dL/db = unbroadcast(G * y * ln a)   (taken as 0 where a = 0, the limit for b > 0)
    """

    @staticmethod
    def forward(ctx, a, b):
        _save_operands(ctx, a, b)
        out = a ** b
        ctx.save_for_backward(a, b, out)
        ctx.out_shape = out.shape
        return out

    @staticmethod
    def _da(a, b, y):
        """∂y/∂a = b a^(b-1); for the exponents 0 and 2 without 0 · a^(-1) or a power."""
        if isinstance(b, (int, float)):
            if b == 0:
                return y * 0
            if b == 2:
                return 2 * a
            return b * a ** (b - 1)
        return b * a ** (b - 1)

    @staticmethod
    def _log_a(a):
        if isinstance(a, (int, float)):
            return math.log(a) if a > 0 else (0.0 if a == 0 else math.nan)
        xp = namespace(a)
        safe = xp.where(a == 0, xp.ones_like(a), a)
        return xp.where(a == 0, xp.zeros_like(a), xp.log(safe))

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = gb = None
        if need_a:
            ga = unbroadcast(g * Pow._da(a, b, y), ctx.a_shape, ctx.a_dtype)
        if need_b:
            gb = unbroadcast(g * y * Pow._log_a(a), ctx.b_shape, ctx.b_dtype)
        return ga, gb

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b, y = ctx.saved_tensors
        return expand_to(add_tangents(None if ta is None else ta * Pow._da(a, b, y),
                                      None if tb is None else tb * y * Pow._log_a(a)), ctx.out_shape)


class Neg(Function):
    """y = -x.        dL/dx = -G"""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g

    @staticmethod
    def jvp(ctx, t):
        return -t


# -- unary maps -----------------------------------------------------------------------------------


class Exp(Function):
    """y = exp(x).        dL/dx = G * y"""

    @staticmethod
    def forward(ctx, x):
        y = namespace(x).exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y

    @staticmethod
    def jvp(ctx, t):
        (y,) = ctx.saved_tensors
        return t * y


class Log(Function):
    """y = ln x.        dL/dx = G / x"""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return namespace(x).log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x

    jvp = backward


class Sqrt(Function):
    """y = √x.        dL/dx = G / (2 y)"""

    @staticmethod
    def forward(ctx, x):
        y = namespace(x).sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g / (2 * y)

    jvp = backward


class Abs(Function):
    """y = |x|.        dL/dx = G * sign(x)   (sign(0) = 0, as in PyTorch)"""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return namespace(x).abs(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * namespace(x).sign(x)

    jvp = backward


class Tanh(Function):
    """y = tanh x.        dL/dx = G * (1 - y²)"""

    @staticmethod
    def forward(ctx, x):
        y = namespace(x).tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)

    jvp = backward


class Sigmoid(Function):
    """y = σ(x) = 1 / (1 + e^(-x)), computed as e^(-|x|)-based branches so it never overflows.

    dL/dx = G * y * (1 - y)
    """

    @staticmethod
    def forward(ctx, x):
        xp = namespace(x)
        e = xp.exp(-xp.abs(x))
        inv = 1 / (1 + e)
        y = xp.where(x >= 0, inv, e * inv)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (y * (1 - y))

    jvp = backward


class ReLU(Function):
    """y = max(x, 0).        dL/dx = G * [x > 0]

    Forward, generic or a backend's ``relu_forward`` kernel: ``ReLUForward(y, saved)``, with saved what
    the matching backward needs: the mask [x > 0] here; a kernel may keep y itself (y > 0 exactly
    where x > 0), as PyTorch does."""

    forward_kernel = kernels.RELU_FORWARD
    backward_kernel = kernels.RELU_BACKWARD

    @staticmethod
    def forward(ctx, x):
        fast = backend_of(x).kernel(ReLU.forward_kernel)
        if fast is not None:
            y, saved = fast(x)
        else:
            # maximum, not where: a NaN input stays NaN (PyTorch)
            y, saved = ReLUForward(namespace(x).maximum(x, 0), x > 0)
        ctx.save_for_backward(saved)
        return y

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        fast = backend_of(g).kernel(ReLU.backward_kernel)
        if fast is not None:
            return fast(g, mask)
        return namespace(g).where(mask, g, namespace(g).zeros_like(g))

    jvp = backward


class Square(Function):
    """y = x².        dL/dx = 2 x G"""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * (x * g)

    jvp = backward


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
        _save_operands(ctx, a, b)
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
        _save_operands(ctx, a, b)
        xp = namespace_of(a, b, cond)
        if isinstance(a, _NUMBER) and isinstance(b, _NUMBER):
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


class AsType(Function):
    """y = x cast to another floating dtype.        dL/dx = G cast back to x's dtype"""

    @staticmethod
    def forward(ctx, x, dtype=None):
        xp = namespace(x)
        ctx.in_dtype = x.dtype
        ctx.out_dtype = dtype
        return xp.astype(x, dtype, copy=True)

    @staticmethod
    def backward(ctx, g):
        return namespace(g).astype(g, ctx.in_dtype)

    @staticmethod
    def jvp(ctx, t):
        return namespace(t).astype(t, ctx.out_dtype)


class AsTypeNoGrad(Function):
    """y = x cast to a non-floating dtype: piecewise constant, so it carries no gradient."""

    differentiable = False

    @staticmethod
    def forward(ctx, x, dtype=None):
        return namespace(x).astype(x, dtype, copy=True)


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


def _check_operands(op, a, b):
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        if isinstance(a, (int, float, bool)) and isinstance(b, (int, float, bool)):
            raise TypeError(f"{op}: expected at least one Tensor or array, got {type(a).__name__} "
                            f"and {type(b).__name__}")


def add(a, b):
    """a + b with broadcasting."""
    return Add.apply(a, b)


def sub(a, b):
    """a - b with broadcasting."""
    return Sub.apply(a, b)


def mul(a, b):
    """a * b with broadcasting."""
    return Mul.apply(a, b)


def div(a, b):
    """a / b with broadcasting (true division)."""
    return Div.apply(a, b)


subtract, multiply, divide, true_divide = sub, mul, div, div


def pow(a, b):  # noqa: A001 - the operator's name, as in torch.pow
    """a ** b: Tensor ** number, Tensor ** Tensor or number ** Tensor."""
    _check_operands("pow", a, b)
    return Pow.apply(a, b)


power = pow


def neg(x):
    """-x."""
    return Neg.apply(x)


negative = neg


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def abs(x):  # noqa: A001
    return Abs.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def relu(x):
    return ReLU.apply(x)


def square(x):
    return Square.apply(x)


def maximum(a, b):
    """Elementwise maximum (broadcast); at a tie the gradient is split evenly."""
    _check_operands("maximum", a, b)
    return Maximum.apply(a, b)


def minimum(a, b):
    """Elementwise minimum (broadcast); at a tie the gradient is split evenly."""
    _check_operands("minimum", a, b)
    return Minimum.apply(a, b)


def clip(x, min=None, max=None):  # noqa: A002 - PyTorch's keyword names
    """Clamp ``x`` into [min, max]; either bound may be None, a number or a Tensor.

    Tensor bounds are differentiable (computed as ``minimum(maximum(x, min), max)``).
    """
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


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b`` (broadcast); ``a``/``b`` may be numbers."""
    cond = raw(condition)
    if isinstance(cond, (int, float, bool)) or cond.dtype != namespace(cond).bool:
        raise TypeError(f"where: condition must be a boolean Tensor or array, got "
                        f"{type(cond).__name__ if isinstance(cond, (int, float, bool)) else dtype_name(cond.dtype)}")
    return Where.apply(cond, a, b)


def astype(x, dtype):
    """``x`` cast to ``dtype`` (an xpnet dtype, a name or a native dtype); differentiable between
    floating dtypes, a constant otherwise."""
    data = raw(x)
    xp = namespace(data)
    native = resolve_dtype(xp, dtype)
    if is_float_dtype(native) and is_float_dtype(data.dtype):
        return AsType.apply(x, dtype=native)
    return AsTypeNoGrad.apply(x, dtype=native)


def eq(a, b):
    """a == b elementwise: a boolean Tensor without gradient (so are ne, lt, le, gt, ge)."""
    _check_operands("eq", a, b)
    return Equal.apply(a, b)


def ne(a, b):
    _check_operands("ne", a, b)
    return NotEqual.apply(a, b)


def lt(a, b):
    _check_operands("lt", a, b)
    return Less.apply(a, b)


def le(a, b):
    _check_operands("le", a, b)
    return LessEqual.apply(a, b)


def gt(a, b):
    _check_operands("gt", a, b)
    return Greater.apply(a, b)


def ge(a, b):
    _check_operands("ge", a, b)
    return GreaterEqual.apply(a, b)


equal, not_equal, less, less_equal, greater, greater_equal = eq, ne, lt, le, gt, ge

# the differentiable functions; the Function classes stay importable from this module
__all__ = [
    "add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "abs", "tanh", "sigmoid",
    "relu", "square", "maximum", "minimum", "clip", "clamp", "where", "astype", "eq", "ne",
    "lt", "le", "gt", "ge", "subtract", "multiply", "divide", "true_divide", "power",
    "negative", "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
]
