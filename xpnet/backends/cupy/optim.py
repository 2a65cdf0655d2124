"""CuPy fast paths for the optimizer updates: one ElementwiseKernel launch per parameter.

Each kernel computes the update of the generic Array-API rule it replaces (``SGD.update``,
``Adagrad.update``, ``RMSprop.update``, ``Adam.update`` in xpnet/optim/), in the same order of
operations and in the parameter's dtype, reading g once and updating the parameter and the state in
place in one pass (the generic code makes a temporary per arithmetic step).

The contract of every ``*_step(w, g, state, group, scalars)``: ``scalars`` is the NamedTuple of
hyperparameters and host constants that the optimizer computed for this step (bias corrections,
decayed rates: no rule is written twice); the new parameter values are written into ``w``, which is
returned; ``g`` is never written. A kernel that cannot run for these arrays returns None, and the
optimizer runs its generic rule.

The kernel bodies are short ElementwiseKernel snippets, kept here because they are assembled per
option (momentum, Nesterov, centred, AMSGrad); tests/optim/test_optim_kernel_bodies.py compiles them
with g++. CuPy is imported when a kernel is first built, so registering these costs nothing without it.
"""

from __future__ import annotations

import functools
import math

from .. import kernels
from ..kernels import register_kernel

# d = ±g + λ w: the effective gradient of every rule (λ = 0 skips the term, as the generic code does)
_GRAD = "T d = sign * g; if (wd != (T)0) d = wd * w + d;"
_NATIVE = ("float32", "float64")


def _runs(w, g) -> bool:
    """Whether these kernels take the arrays: float32 or float64, g of w's dtype."""
    return str(w.dtype) in _NATIVE and g.dtype == w.dtype


def _scalar(w, value):
    """A host scalar of w's dtype, so a float32 kernel computes in float32 as the generic code does."""
    return w.dtype.type(value)


def _sign(scalars):
    return -1.0 if scalars.maximize else 1.0


@functools.lru_cache(maxsize=None)
def _elementwise(in_params: str, out_params: str, body: str, name: str):
    import cupy

    return cupy.ElementwiseKernel(in_params, out_params, body, name)


def _sgd_kernel(momentum: bool, nesterov: bool):
    if not momentum:
        return _elementwise("T g, T sign, T wd, T lr", "T w", _GRAD + " w = w - lr * d;", "xpnet_sgd")
    update = "d + mu * b" if nesterov else "b"
    body = (_GRAD + " T b = first ? d : (buf * mu + damp1 * d); buf = b;"
            f" w = w - lr * ({update});")
    return _elementwise("T g, T sign, T wd, T lr, T mu, T damp1, int32 first", "T w, T buf", body,
                        f"xpnet_sgd_momentum{'_nesterov' if nesterov else ''}")


@register_kernel("cupy", kernels.SGD_STEP)
def sgd_step(w, g, state, group, scalars):
    """Fused SGD: the rule of xpnet.optim.SGD in one kernel."""
    if not _runs(w, g):
        return None
    import cupy

    s = scalars
    with w.device:
        common = (g, _scalar(w, _sign(s)), _scalar(w, s.weight_decay), _scalar(w, s.lr))
        if s.momentum == 0:
            _sgd_kernel(False, False)(*common, w)
            return w
        buf = state.get("momentum_buffer")
        first = buf is None
        if first:
            buf = cupy.empty_like(w)
        kernel = _sgd_kernel(True, bool(s.nesterov))
        kernel(*common, _scalar(w, s.momentum), _scalar(w, 1 - s.dampening), cupy.int32(1 if first else 0), w, buf)
        state["momentum_buffer"] = buf
        return w


@register_kernel("cupy", kernels.ADAGRAD_STEP)
def adagrad_step(w, g, state, group, scalars):
    """Fused Adagrad: the rule of xpnet.optim.Adagrad in one kernel (``scalars.clr`` is η_t)."""
    if not _runs(w, g):
        return None
    s = scalars
    body = _GRAD + " s = s + d * d; T std = sqrt(s) + eps; w = w - clr * (d / std);"
    kernel = _elementwise("T g, T sign, T wd, T clr, T eps", "T w, T s", body, "xpnet_adagrad")
    with w.device:
        kernel(g, _scalar(w, _sign(s)), _scalar(w, s.weight_decay), _scalar(w, s.clr), _scalar(w, s.eps), w,
               state["sum"])
    return w


def _rmsprop_kernel(centered: bool, momentum: bool):
    outs = ["T w", "T v"]
    body = [_GRAD, "v = v * alpha + (d * d) * one_m_alpha;"]
    if centered:
        outs.append("T m")
        body.append("m = m * alpha + one_m_alpha * d; T sigma = sqrt(v - m * m) + eps;")
    else:
        body.append("T sigma = sqrt(v) + eps;")
    if momentum:
        outs.append("T b")
        body.append("b = b * mu + d / sigma; w = w - lr * b;")
    else:
        body.append("w = w - lr * (d / sigma);")
    name = f"xpnet_rmsprop{'_centered' if centered else ''}{'_momentum' if momentum else ''}"
    return _elementwise("T g, T sign, T wd, T lr, T alpha, T one_m_alpha, T eps, T mu", ", ".join(outs),
                        " ".join(body), name)


@register_kernel("cupy", kernels.RMSPROP_STEP)
def rmsprop_step(w, g, state, group, scalars):
    """Fused RMSprop: the rule of xpnet.optim.RMSprop in one kernel."""
    if not _runs(w, g):
        return None
    s = scalars
    centered, momentum = bool(s.centered), s.momentum > 0
    kernel = _rmsprop_kernel(centered, momentum)
    with w.device:
        outs = [w, state["square_avg"]]
        if centered:
            outs.append(state["grad_avg"])
        if momentum:
            outs.append(state["momentum_buffer"])
        kernel(g, _scalar(w, _sign(s)), _scalar(w, s.weight_decay), _scalar(w, s.lr), _scalar(w, s.alpha),
               _scalar(w, 1 - s.alpha), _scalar(w, s.eps), _scalar(w, s.momentum), *outs)
    return w


def _adam_kernel(amsgrad: bool):
    outs = "T w, T m, T v, T vmax" if amsgrad else "T w, T m, T v"
    # NaN in either operand propagates, as xp.maximum does
    pick = ("vmax = (vmax != vmax || vmax >= v) ? vmax : v; T vhat = vmax;" if amsgrad else "T vhat = v;")
    body = (_GRAD + " m = m * beta1 + one_m_beta1 * d; v = v * beta2 + (d * d) * one_m_beta2; " + pick +
            " T denom = sqrt(vhat) / bc2_sqrt + eps; w = w * w_scale - step_size * (m / denom);")
    return _elementwise("T g, T sign, T wd, T beta1, T one_m_beta1, T beta2, T one_m_beta2, T bc2_sqrt, "
                        "T eps, T step_size, T w_scale", outs, body,
                        f"xpnet_adam{'_amsgrad' if amsgrad else ''}")


@register_kernel("cupy", kernels.ADAM_STEP)
def adam_step(w, g, state, group, scalars):
    """Fused Adam / AdamW: the rule of xpnet.optim.Adam in one kernel. The bias corrections
    1 - β1^t and 1 - β2^t come in ``scalars`` (1 where the group turns them off)."""
    if not _runs(w, g):
        return None
    s = scalars
    step_size = s.lr / s.bias_correction1
    bc2_sqrt = math.sqrt(s.bias_correction2)
    w_scale = 1 - s.lr * s.weight_decay if s.decoupled and s.weight_decay != 0 else 1.0
    coupled = 0 if s.decoupled else s.weight_decay
    amsgrad = bool(s.amsgrad)
    kernel = _adam_kernel(amsgrad)
    with w.device:
        outs = [w, state["exp_avg"], state["exp_avg_sq"]]
        if amsgrad:
            outs.append(state["max_exp_avg_sq"])
        kernel(g, _scalar(w, _sign(s)), _scalar(w, coupled), _scalar(w, s.beta1), _scalar(w, 1 - s.beta1),
               _scalar(w, s.beta2), _scalar(w, 1 - s.beta2), _scalar(w, bc2_sqrt), _scalar(w, s.eps),
               _scalar(w, step_size), _scalar(w, w_scale), *outs)
    return w
