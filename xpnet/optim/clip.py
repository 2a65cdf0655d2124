"""Gradient clipping, with PyTorch's names and semantics (re-exported by xpnet.nn.utils).

The total norm stays on the gradients' device (no host round trip) unless
``error_if_nonfinite=True`` asks to look at it.
"""

from __future__ import annotations

import math

from ..autodiff.tensor import Tensor
from ..backends import backend_name_of, backend_of, get_backend
from ..backends import transfer as _transfer


def _parameters(parameters) -> list:
    if backend_name_of(parameters) is not None or hasattr(parameters, "grad"):
        return [parameters]
    return list(parameters)


def _grads(parameters) -> list:
    """(parameter, gradient array) for every parameter that has a gradient."""
    out = []
    for p in _parameters(parameters):
        grad = p.grad
        if grad is None:
            continue
        out.append((p, grad if backend_name_of(grad) is not None else grad.data))
    return out


def _set_grad(p, array) -> None:
    # replace the array: the old one may be shared with whoever produced it
    if backend_name_of(p.grad) is not None:
        p.grad = array
    else:
        p.grad.data = array


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients so that their joint norm is at most ``max_norm``; return that norm.

    With G the gradients of all parameters taken as one vector and p = norm_type:

        ‖G‖_p = (Σ_i ‖g_i‖_p^p)^(1/p)      (‖G‖_∞ = max_i max |g_i|)
        g_i ← g_i · min(1, max_norm / (‖G‖_p + 1e-6))

    Returns ‖G‖_p before clipping as a 0-d Tensor on the gradients' device (0 when no parameter
    has a gradient). ``error_if_nonfinite=True`` raises RuntimeError when it is nan or inf.
    """
    norm_type = float(norm_type)
    max_norm = float(max_norm)
    pairs = _grads(parameters)
    if not pairs:
        backend = get_backend()
        return Tensor(backend.xp.asarray(0.0, dtype=backend.default_dtype, device=backend.device))
    first = pairs[0][1]
    xp = backend_of(first).xp
    norms = []
    for _, g in pairs:
        n = backend_of(g).xp.linalg.vector_norm(g, ord=norm_type)
        n = _transfer.to_device(n, backend=backend_of(first))
        norms.append(xp.astype(n, first.dtype))
    stacked = xp.stack(norms)
    if math.isinf(norm_type):
        total = xp.max(stacked) if norm_type > 0 else xp.min(stacked)
    else:
        total = xp.linalg.vector_norm(stacked, ord=norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is non-finite, so it "
            "cannot be clipped; set error_if_nonfinite=False to scale the gradients by it anyway"
        )
    coef = xp.clip(max_norm / (total + 1e-6), max=1.0)
    for p, g in pairs:
        c = _transfer.to_device(coef, backend=backend_of(g))
        _set_grad(p, g * backend_of(g).xp.astype(c, g.dtype))
    return Tensor(total)


def clip_grad_value_(parameters, clip_value) -> None:
    """Clamp every gradient entry into [-clip_value, clip_value] (in place on the parameters)."""
    clip_value = float(clip_value)
    for p, g in _grads(parameters):
        _set_grad(p, backend_of(g).xp.clip(g, min=-clip_value, max=clip_value))
