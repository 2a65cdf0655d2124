"""Matrix product with the Array-API (NumPy) rules: batched, broadcast, 1-D operands promoted."""

from __future__ import annotations

from ..function import Function
from ._common import add_tangents, namespace, raw, shape_of, unbroadcast


class MatMul(Function):
    """y = a @ b, batched over leading axes (broadcast), for a (..., n, k) and b (..., k, m).

    dL/da = unbroadcast(G bᵀ)        dL/db = unbroadcast(aᵀ G)

    A 1-D a (k,) acts as the row (1, k) and a 1-D b (k,) as the column (k, 1); the inserted axis
    is removed from y, and from the gradients (for two 1-D vectors y = a·b, dL/da = G b).
    """

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: operands must have at least one dimension, got shapes "
                             f"{shape_of(a)} and {shape_of(b)}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: inner dimensions differ: a has shape {shape_of(a)} and b has "
                             f"shape {shape_of(b)} (a's last axis must equal b's "
                             f"{'second-to-last' if b.ndim > 1 else 'only'} axis)")
        ctx.save_for_backward(a, b)
        ctx.a_dtype, ctx.b_dtype = a.dtype, b.dtype
        return namespace(a).matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        xp = namespace(g)
        need_a, need_b = ctx.needs_input_grad
        a2 = xp.reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
        b2 = xp.reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
        # g with the axes that 1-D promotion removed put back: (..., n, m)
        if a.ndim == 1 and b.ndim == 1:
            g2 = xp.reshape(g, (1, 1))
        elif a.ndim == 1:
            g2 = xp.reshape(g, tuple(g.shape[:-1]) + (1, g.shape[-1]))
        elif b.ndim == 1:
            g2 = xp.reshape(g, tuple(g.shape) + (1,))
        else:
            g2 = g
        ga = gb = None
        if need_a:
            ga = unbroadcast(xp.matmul(g2, xp.matrix_transpose(b2)), a2.shape, ctx.a_dtype)
            if a.ndim == 1:
                ga = xp.reshape(ga, a.shape)
        if need_b:
            gb = unbroadcast(xp.matmul(xp.matrix_transpose(a2), g2), b2.shape, ctx.b_dtype)
            if b.ndim == 1:
                gb = xp.reshape(gb, b.shape)
        return ga, gb

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved_tensors
        xp = namespace(a)
        # each term already has the output's shape: ta is shaped like a, tb like b
        return add_tangents(None if ta is None else xp.matmul(ta, b),
                            None if tb is None else xp.matmul(a, tb))


def matmul(a, b):
    """a @ b with NumPy's rules: (..., n, k) @ (..., k, m) -> (..., n, m), batch axes broadcast,
    a 1-D operand promoted to a row (left) or a column (right) and its axis dropped again.
    dL/da = unbroadcast(G bᵀ), dL/db = unbroadcast(aᵀ G)."""
    for operand in (a, b):
        if not hasattr(raw(operand), "shape"):
            raise TypeError(f"matmul: expected Tensors or arrays, got {type(operand).__name__}")
    return MatMul.apply(a, b)


# the differentiable functions; the Function classes stay importable from this module
__all__ = [
    "matmul",
]
