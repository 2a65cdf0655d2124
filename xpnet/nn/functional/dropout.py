"""Inverted dropout: zero each element with probability p at train time, scale survivors by 1/(1-p)."""

from __future__ import annotations

from ...autodiff.function import Function
from ...autodiff.tensor import Tensor
from ...backends import backend_of
from ._arrays import as_input, raw, require_float


class Dropout(Function):
    """y = x * m / (1 - p), m_i ~ Bernoulli(1 - p) drawn from the backend's seeded generator.

    ``scaled_mask`` (= m / (1 - p), drawn by the caller) is a raw array, not differentiated.
    Backward: dL/dx = dL/dy * m / (1 - p).
    """

    @staticmethod
    def forward(ctx, x, scaled_mask):
        ctx.save_for_backward(scaled_mask)
        return x * scaled_mask

    @staticmethod
    def backward(ctx, g):
        (scaled_mask,) = ctx.saved_tensors
        return g * scaled_mask, None

    @staticmethod
    def jvp(ctx, t, _):
        (scaled_mask,) = ctx.saved_tensors
        return t * scaled_mask


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Inverted dropout (``inplace`` is accepted for PyTorch compatibility; computed out of place).

    In eval (``training=False``) or with ``p == 0`` the input comes back unchanged; ``p == 1``
    zeroes everything.
    """
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability p must be between 0 and 1, got {p}")
    input = as_input(input, "dropout")
    if not training or p == 0.0:
        return input if isinstance(input, Tensor) else Tensor(input)
    require_float(input, "dropout")
    x = raw(input)
    backend = backend_of(x)
    if p == 1.0:
        scaled_mask = backend.xp.zeros_like(x)
    else:
        scaled_mask = backend.rng.bernoulli(tuple(x.shape), 1.0 - p, dtype=x.dtype) * (1.0 / (1.0 - p))
    return Dropout.apply(input, scaled_mask)
