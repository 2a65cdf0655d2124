"""Regularization penalties and gradient clipping for training loops.

``l1_penalty(params) = sum |w|`` and ``l2_penalty(params) = sum w^2 / 2``. The 1/2 in the L2
penalty makes its gradient w itself: ``loss + lam * l2_penalty(model.parameters())`` adds
``lam * w`` to each gradient, the same update as ``weight_decay=lam`` in ``optim.SGD``.
"""

from __future__ import annotations

from ..autodiff.function import Function
from ..autodiff.tensor import Tensor
from ..backends import dtype_name, get_backend
from .functional._arrays import namespace
from ..optim.clip import clip_grad_norm_, clip_grad_value_  # noqa: F401  -- PyTorch's nn.utils names
from .module import Module


class L1Penalty(Function):
    """P = sum_k sum_i |w_k,i| over every parameter array w_k.

    Backward: dP/dw_k = sign(w_k) G  (0 where w = 0).
    """

    @staticmethod
    def forward(ctx, *params):
        ctx.save_for_backward(*params)
        total = None
        for w in params:
            term = namespace(w).sum(namespace(w).abs(w))
            total = term if total is None else total + term
        return total

    @staticmethod
    def backward(ctx, g):
        return tuple(namespace(w).sign(w) * g for w in ctx.saved_tensors)


class L2Penalty(Function):
    """P = 1/2 sum_k sum_i w_k,i^2 over every parameter array w_k.

    Backward: dP/dw_k = w_k G.
    """

    @staticmethod
    def forward(ctx, *params):
        ctx.save_for_backward(*params)
        total = None
        for w in params:
            term = namespace(w).sum(w * w)
            total = term if total is None else total + term
        return total * 0.5

    @staticmethod
    def backward(ctx, g):
        return tuple(w * g for w in ctx.saved_tensors)


def _collect(params, where):
    if isinstance(params, Module):
        params = params.parameters()
    elif isinstance(params, Tensor):
        params = [params]
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: element {i} is a {type(p).__name__}, expected a Tensor or Parameter")
    dtypes = {dtype_name(p.dtype) for p in params}
    if len(dtypes) > 1:
        raise TypeError(f"{where}: parameters have mixed dtypes {sorted(dtypes)}; cast the model to one dtype")
    return params


def _zero():
    backend = get_backend()
    return Tensor(backend.xp.zeros((), dtype=backend.default_dtype, device=backend.device))


def l1_penalty(params) -> Tensor:
    """sum |w| over ``params`` (an iterable of Tensors, or a Module), differentiable."""
    params = _collect(params, "l1_penalty")
    return L1Penalty.apply(*params) if params else _zero()


def l2_penalty(params) -> Tensor:
    """sum w^2 / 2 over ``params`` (an iterable of Tensors, or a Module), differentiable; the 1/2
    makes the gradient w (see the module docstring)."""
    params = _collect(params, "l2_penalty")
    return L2Penalty.apply(*params) if params else _zero()


__all__ = ["l1_penalty", "l2_penalty", "clip_grad_norm_", "clip_grad_value_"]
