"""Elementwise operations: arithmetic, unary maps, ReLU, casts (comparisons and selection: compare.py).

Binary operations broadcast like the Array API; the gradient of a broadcast operand is summed
back to its shape (``unbroadcast``). Python numbers mix with Tensors and get no gradient.
Notation: G = dL/dy, the upstream gradient, of y's shape; products are elementwise.
"""

from __future__ import annotations

import math

from ...backends import backend_of, is_float_dtype, kernels, resolve_dtype
from ...backends.kernels import ReLUForward
from ..function import Function
from ._common import add_tangents, check_operands, expand_to, namespace, out_shape, raw, save_operands, unbroadcast

# -- arithmetic -----------------------------------------------------------------------------------


class Add(Function):
    """y = a + b (broadcast).

    dL/da = unbroadcast(G)        dL/db = unbroadcast(G)
    """

    @staticmethod
    def forward(ctx, a, b):
        save_operands(ctx, a, b)
        out = a + b
        return out

    @staticmethod
    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        ga = unbroadcast(g, ctx.a_shape, ctx.a_dtype) if need_a else None
        if not need_b:
            return ga, None
        if need_a and ctx.b_shape == ctx.a_shape and ctx.b_dtype == ctx.a_dtype:
            return ga, ga  # operands of one shape and dtype: one reduction serves both
        return ga, unbroadcast(g, ctx.b_shape, ctx.b_dtype)

    @staticmethod
    def jvp(ctx, ta, tb):
        return expand_to(add_tangents(ta, tb), out_shape(ctx))


class Sub(Function):
    """y = a - b (broadcast).

    dL/da = unbroadcast(G)        dL/db = -unbroadcast(G)
    """

    @staticmethod
    def forward(ctx, a, b):
        save_operands(ctx, a, b)
        out = a - b
        return out

    @staticmethod
    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(g, ctx.a_shape, ctx.a_dtype) if need_a else None,
                -unbroadcast(g, ctx.b_shape, ctx.b_dtype) if need_b else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        return expand_to(add_tangents(ta, None if tb is None else -tb), out_shape(ctx))


class Mul(Function):
    """y = a * b (broadcast).

    dL/da = unbroadcast(G * b)        dL/db = unbroadcast(G * a)
    """

    @staticmethod
    def forward(ctx, a, b):
        save_operands(ctx, a, b)
        ctx.save_for_backward(a, b)
        out = a * b
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
                         out_shape(ctx))


class Div(Function):
    """y = a / b (broadcast).

    dL/da = unbroadcast(G / b)        dL/db = -unbroadcast(G * a / b²) = -unbroadcast(G * y / b)
    """

    @staticmethod
    def forward(ctx, a, b):
        save_operands(ctx, a, b)
        out = a / b
        ctx.save_for_backward(b, out)
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
        return expand_to(tangent / b, out_shape(ctx))


class Pow(Function):
    """y = a ** b (broadcast; either may be a Python number).

    dL/da = unbroadcast(G * b * a^(b-1))
    dL/db = unbroadcast(G * y * ln a)   (taken as 0 where a = 0, the limit for b > 0)
    """

    @staticmethod
    def forward(ctx, a, b):
        save_operands(ctx, a, b)
        out = a ** b
        ctx.save_for_backward(a, b, out)
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
                                      None if tb is None else tb * y * Pow._log_a(a)), out_shape(ctx))


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


# -- public functions -----------------------------------------------------------------------------


def add(a, b):
    """a + b with broadcasting.        dL/da = unbroadcast(G), dL/db = unbroadcast(G)"""
    return Add.apply(a, b)


def sub(a, b):
    """a - b with broadcasting.        dL/da = unbroadcast(G), dL/db = -unbroadcast(G)"""
    return Sub.apply(a, b)


def mul(a, b):
    """a * b with broadcasting.        dL/da = unbroadcast(G b), dL/db = unbroadcast(G a)"""
    return Mul.apply(a, b)


def div(a, b):
    """a / b with broadcasting (true division).        dL/da = unbroadcast(G / b),
    dL/db = -unbroadcast(G a / b²)"""
    return Div.apply(a, b)


subtract, multiply, divide, true_divide = sub, mul, div, div


def pow(a, b):  # noqa: A001 - the operator's name, as in torch.pow
    """a ** b: Tensor ** number, Tensor ** Tensor or number ** Tensor.
    dL/da = unbroadcast(G b a^(b-1)), dL/db = unbroadcast(G y ln a)"""
    check_operands("pow", a, b)
    return Pow.apply(a, b)


power = pow


def neg(x):
    """-x.        dL/dx = -G"""
    return Neg.apply(x)


negative = neg


def exp(x):
    """e^x elementwise.        dL/dx = G * y"""
    return Exp.apply(x)


def log(x):
    """Natural logarithm elementwise.        dL/dx = G / x"""
    return Log.apply(x)


def sqrt(x):
    """Square root elementwise.        dL/dx = G / (2 y)"""
    return Sqrt.apply(x)


def abs(x):  # noqa: A001
    """|x| elementwise.        dL/dx = G * sign(x)   (0 at x = 0, as PyTorch)"""
    return Abs.apply(x)


def tanh(x):
    """Hyperbolic tangent elementwise.        dL/dx = G * (1 - y²)"""
    return Tanh.apply(x)


def sigmoid(x):
    """1 / (1 + e^(-x)) elementwise, without overflow.        dL/dx = G * y (1 - y)"""
    return Sigmoid.apply(x)


def relu(x):
    """max(x, 0) elementwise (NaN stays NaN).        dL/dx = G * [x > 0]"""
    return ReLU.apply(x)


def square(x):
    """x² elementwise.        dL/dx = 2 x G"""
    return Square.apply(x)


def astype(x, dtype):
    """``x`` cast to ``dtype`` (an xpnet dtype, a name or a native dtype); differentiable between
    floating dtypes (dL/dx = G cast back to x's dtype), a constant otherwise."""
    data = raw(x)
    xp = namespace(data)
    native = resolve_dtype(xp, dtype)
    if is_float_dtype(native) and is_float_dtype(data.dtype):
        return AsType.apply(x, dtype=native)
    return AsTypeNoGrad.apply(x, dtype=native)


# the differentiable functions; the Function classes stay importable from this module
__all__ = [
    "add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "abs", "tanh", "sigmoid",
    "relu", "square", "astype", "subtract", "multiply", "divide", "true_divide", "power", "negative",
]
