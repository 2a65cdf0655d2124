"""Finite-difference checks of gradients: ``numerical_grad`` and ``gradcheck``.

A test tool, and host-side code: it perturbs host NumPy copies of the inputs one element at a
time and uploads each copy back to the input's own backend and device, so it works unchanged on
every backend. The function under test always runs on that backend; only the bookkeeping (the
perturbation, the scalar it differentiates, the comparison) happens in float64 on the host.

Step rule (central differences): for each element, h = eps · max(1, |x|) with
eps = eps_machine(dtype)^(1/3) (about 6.1e-6 in float64, 4.9e-3 in float32) unless given; the
difference quotient divides by the step actually represented in the input's dtype.
"""

from __future__ import annotations

import numpy as np

from ..backends import backend_name_of, backend_of, is_float_dtype, to_numpy
from ..backends import unwrap as _raw
from . import function as _function
from .tensor import Tensor


class GradcheckError(RuntimeError):
    """An analytic gradient disagrees with its finite-difference estimate."""


def _as_tuple(values):
    if isinstance(values, (tuple, list)):
        return tuple(values), False
    return (values,), True


def _is_float_input(x):
    data = _raw(x)
    return backend_name_of(data) is not None and is_float_dtype(data.dtype)


def _checked(inputs):
    """Floating inputs that require grad; when none does, every floating input."""
    wanted = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad and _is_float_input(x)]
    if not wanted:
        wanted = [i for i, x in enumerate(inputs) if _is_float_input(x)]
    return wanted


def _eps_base(dtype, eps):
    if eps is not None:
        return float(eps)
    return float(np.finfo(np.dtype(_host_dtype_name(dtype))).eps) ** (1.0 / 3.0)


def _host_dtype_name(dtype):
    from ..backends import dtype_name

    name = dtype_name(dtype)
    return "float32" if name == "bfloat16" else name  # NumPy has no bfloat16; its eps is coarser still


def _rebuild(original, host):
    """``host`` uploaded to ``original``'s backend and device, wrapped like ``original``."""
    data = _raw(original)
    uploaded = backend_of(data).from_host(host.copy())
    return Tensor(uploaded) if isinstance(original, Tensor) else uploaded


def _scalar(out, projection):
    """<projection, f(...)> in float64 on the host."""
    if not isinstance(out, Tensor) and backend_name_of(out) is None:
        raise TypeError(f"f must return a Tensor or an array, got {type(out).__name__}")
    values = to_numpy(_raw(out)).astype(np.float64)
    if projection is None:
        return float(values.sum())
    return float((projection * values).sum())


def _numerical(f, inputs, checked, eps, projection):
    """Host float64 gradients of <projection, f> with respect to each checked input."""
    results = {}
    args = list(inputs)
    with _function.no_grad():
        for i in checked:
            original = inputs[i]
            data = _raw(original)
            host = to_numpy(data).copy()
            flat = host.reshape(-1)
            base = _eps_base(data.dtype, eps)
            grad = np.zeros(host.shape, dtype=np.float64)
            grad_flat = grad.reshape(-1)
            for k in range(flat.size):
                value = flat[k]
                step = base * max(1.0, abs(float(value)))
                flat[k] = value + step
                upper = flat[k]
                args[i] = _rebuild(original, host)
                f_plus = _scalar(f(*args), projection)
                flat[k] = value - step
                lower = flat[k]
                args[i] = _rebuild(original, host)
                f_minus = _scalar(f(*args), projection)
                flat[k] = value
                grad_flat[k] = (f_plus - f_minus) / (float(upper) - float(lower))
            args[i] = original
            results[i] = grad
    return results


def numerical_grad(f, inputs, eps=None, cotangent=None):
    """Central-difference gradient of ``f(*inputs)`` with respect to its floating inputs.

    For a non-scalar output, the gradient of <cotangent, f> (default: all ones, i.e. of the sum
    of f's elements). Returns, per input, a Tensor on that input's backend and dtype (None for a
    non-floating input), bare for a bare input. See the module docstring for the step rule.
    """
    inputs, single = _as_tuple(inputs)
    checked = [i for i, x in enumerate(inputs) if _is_float_input(x)]
    projection = None if cotangent is None else to_numpy(_raw(cotangent)).astype(np.float64)
    grads = _numerical(f, inputs, checked, eps, projection)
    out = []
    for i, x in enumerate(inputs):
        if i not in grads:
            out.append(None)
            continue
        data = _raw(x)
        backend = backend_of(data)
        out.append(Tensor(backend.xp.astype(backend.from_host(grads[i]), data.dtype)))
    return out[0] if single else tuple(out)


def gradcheck(f, inputs, eps=None, atol=1e-5, rtol=1e-3, seed=0):
    """Check reverse-mode gradients of ``f(*inputs)`` against central differences.

    Checked inputs: the floating-point Tensors with ``requires_grad``; when none has it, every
    floating input. A non-scalar output is reduced to the scalar <u, f> with a fixed random
    projection u ~ N(0, 1) (from ``seed``): one backward pass checks the whole vector-Jacobian
    product uᵀJ, which differs from the true one for a wrong Jacobian with probability one.
    An element passes when |analytic - numeric| <= atol + rtol · |numeric|.

    Returns True, or raises ``GradcheckError`` naming the input index, the element index and both
    values of the worst element (the one that exceeds its tolerance by the most).
    """
    inputs, _ = _as_tuple(inputs)
    checked = _checked(inputs)
    if not checked:
        raise TypeError("gradcheck: f has no floating-point input to check")

    leaves = list(inputs)
    for i in checked:
        data = _raw(inputs[i])
        leaf = Tensor._wrap(data)
        leaf.requires_grad = True
        leaves[i] = leaf
    with _function.enable_grad():
        out = f(*leaves)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: f must return a Tensor, got {type(out).__name__}")

    backend = backend_of(out.data)
    if out.numel() == 1:
        projection_host = np.ones(out.shape, dtype=np.float64)
    else:
        projection_host = np.random.default_rng(seed).standard_normal(out.shape)
    projection = None
    if is_float_dtype(out.dtype):
        xp = backend.xp
        # reshape: an upload may not keep a 0-d shape on every backend
        projection = xp.reshape(xp.astype(backend.from_host(projection_host), out.data.dtype), out.shape)
    # the numeric side uses u exactly as the device saw it (after rounding to f's dtype)
    projection_host = to_numpy(projection).astype(np.float64) if projection is not None else projection_host
    if out.requires_grad:
        out.backward(projection)

    numeric = _numerical(f, inputs, checked, eps, projection_host)
    worst = None
    for i in checked:
        leaf = leaves[i]
        analytic = (to_numpy(leaf.grad.data).astype(np.float64) if leaf.grad is not None
                    else np.zeros(numeric[i].shape))
        excess = np.abs(analytic - numeric[i]) - (atol + rtol * np.abs(numeric[i]))
        excess = np.where(np.isnan(analytic) | np.isnan(numeric[i]), np.inf, excess)
        if excess.size == 0:
            continue
        k = int(np.argmax(excess))
        if excess.reshape(-1)[k] > 0 and (worst is None or excess.reshape(-1)[k] > worst[0]):
            index = np.unravel_index(k, excess.shape)
            worst = (excess.reshape(-1)[k], i, tuple(int(v) for v in index),
                     float(analytic.reshape(-1)[k]), float(numeric[i].reshape(-1)[k]))
    if worst is not None:
        _, i, index, a, n = worst
        raise GradcheckError(
            f"gradcheck: input {i}, element {index}: analytic gradient {a:.10g}, numeric {n:.10g} "
            f"(|difference| {abs(a - n):.3g} > atol {atol:g} + rtol {rtol:g} * |numeric|)"
        )
    return True


__all__ = ["GradcheckError", "gradcheck", "numerical_grad"]
