"""CuPy fast paths for the optimizer updates: one ElementwiseKernel launch per parameter.

Each kernel computes the update of the generic Array-API rule it replaces (``SGD.update``,
``Adagrad.update``, ``RMSprop.update``, ``Adam.update`` in xpnet/optim/), in the same order of
operations and in the parameter's dtype, reading w and g once and writing the new parameter and
the state in one pass (the generic code makes a temporary per arithmetic step). Host constants
(bias corrections, decayed rates) are computed by the same formulas as in the generic code.

CuPy is imported when a kernel is first built, so registering these costs nothing without it.
"""

from __future__ import annotations

import functools
import math

from . import kernels
from .kernels import register_kernel

# d = ±g + λ w: the effective gradient of every rule (λ = 0 skips the term, as the generic code does)
_GRAD = "T d = sign * g; if (wd != (T)0) d = wd * w + d;"


def _scalar(w, value):
    """A host scalar of w's dtype, so a float32 kernel computes in float32 as the generic code does."""
    return w.dtype.type(value)


@functools.lru_cache(maxsize=None)
def _elementwise(in_params: str, out_params: str, body: str, name: str):
    import cupy

    return cupy.ElementwiseKernel(in_params, out_params, body, name)


def _sgd_kernel(momentum: bool, nesterov: bool):
    if not momentum:
        return _elementwise("T w, T g, T sign, T wd, T lr", "T w_out",
                            _GRAD + " w_out = w - lr * d;", "xpnet_sgd")
    update = "d + mu * b" if nesterov else "b"
    body = (_GRAD + " T b = first ? d : (buf * mu + damp1 * d); buf = b;"
            f" w_out = w - lr * ({update});")
    return _elementwise("T w, T g, T sign, T wd, T lr, T mu, T damp1, int32 first", "T w_out, T buf", body,
                        f"xpnet_sgd_momentum{'_nesterov' if nesterov else ''}")


@register_kernel("cupy", kernels.SGD_STEP)
def sgd_step(w, g, state, group):
    """Fused SGD: the rule of xpnet.optim.SGD in one kernel."""
    import cupy

    sign = -1.0 if group["maximize"] else 1.0
    with w.device:
        common = (w, g, _scalar(w, sign), _scalar(w, group["weight_decay"]), _scalar(w, group["lr"]))
        w_out = cupy.empty_like(w)
        if group["momentum"] == 0:
            _sgd_kernel(False, False)(*common, w_out)
            return w_out
        buf = state.get("momentum_buffer")
        first = buf is None
        if first:
            buf = cupy.empty_like(w)
        kernel = _sgd_kernel(True, bool(group["nesterov"]))
        kernel(*common, _scalar(w, group["momentum"]), _scalar(w, 1 - group["dampening"]),
               cupy.int32(1 if first else 0), w_out, buf)
        state["momentum_buffer"] = buf
        return w_out


@register_kernel("cupy", kernels.ADAGRAD_STEP)
def adagrad_step(w, g, state, group):
    """Fused Adagrad: the rule of xpnet.optim.Adagrad in one kernel."""
    import cupy

    body = _GRAD + " s = s + d * d; T std = sqrt(s) + eps; w_out = w - clr * (d / std);"
    kernel = _elementwise("T w, T g, T sign, T wd, T clr, T eps", "T w_out, T s", body, "xpnet_adagrad")
    clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
    sign = -1.0 if group["maximize"] else 1.0
    with w.device:
        w_out = cupy.empty_like(w)
        kernel(w, g, _scalar(w, sign), _scalar(w, group["weight_decay"]), _scalar(w, clr),
               _scalar(w, group["eps"]), w_out, state["sum"])
    return w_out


def _rmsprop_kernel(centered: bool, momentum: bool):
    outs = ["T w_out", "T v"]
    body = [_GRAD, "v = v * alpha + (d * d) * one_m_alpha;"]
    if centered:
        outs.append("T m")
        body.append("m = m * alpha + one_m_alpha * d; T sigma = sqrt(v - m * m) + eps;")
    else:
        body.append("T sigma = sqrt(v) + eps;")
    if momentum:
        outs.append("T b")
        body.append("b = b * mu + d / sigma; w_out = w - lr * b;")
    else:
        body.append("w_out = w - lr * (d / sigma);")
    name = f"xpnet_rmsprop{'_centered' if centered else ''}{'_momentum' if momentum else ''}"
    return _elementwise("T w, T g, T sign, T wd, T lr, T alpha, T one_m_alpha, T eps, T mu", ", ".join(outs),
                        " ".join(body), name)


@register_kernel("cupy", kernels.RMSPROP_STEP)
def rmsprop_step(w, g, state, group):
    """Fused RMSprop: the rule of xpnet.optim.RMSprop in one kernel."""
    import cupy

    centered, momentum = bool(group["centered"]), group["momentum"] > 0
    kernel = _rmsprop_kernel(centered, momentum)
    sign = -1.0 if group["maximize"] else 1.0
    alpha = group["alpha"]
    with w.device:
        w_out = cupy.empty_like(w)
        outs = [w_out, state["square_avg"]]
        if centered:
            outs.append(state["grad_avg"])
        if momentum:
            outs.append(state["momentum_buffer"])
        kernel(w, g, _scalar(w, sign), _scalar(w, group["weight_decay"]), _scalar(w, group["lr"]),
               _scalar(w, alpha), _scalar(w, 1 - alpha), _scalar(w, group["eps"]),
               _scalar(w, group["momentum"]), *outs)
    return w_out


def _adam_scalars(step, group):
    # the same host constants as xpnet.optim.adam.adam_scalars (kept here: backends sit below optim)
    lr = group["lr"]
    beta1, beta2 = group["betas"]
    if group["bias_correction"]:
        step_size, bc2_sqrt = lr / (1 - beta1 ** step), math.sqrt(1 - beta2 ** step)
    else:
        step_size, bc2_sqrt = lr, 1.0
    decay = group["weight_decay"]
    w_scale = 1 - lr * decay if group["decoupled_weight_decay"] and decay != 0 else 1.0
    return step_size, bc2_sqrt, w_scale


def _adam_kernel(amsgrad: bool):
    outs = "T w_out, T m, T v, T vmax" if amsgrad else "T w_out, T m, T v"
    # NaN in either operand propagates, as xp.maximum does
    pick = ("vmax = (vmax != vmax || vmax >= v) ? vmax : v; T vhat = vmax;" if amsgrad else "T vhat = v;")
    body = (_GRAD + " m = m * beta1 + one_m_beta1 * d; v = v * beta2 + (d * d) * one_m_beta2; " + pick +
            " T denom = sqrt(vhat) / bc2_sqrt + eps; w_out = w * w_scale - step_size * (m / denom);")
    return _elementwise("T w, T g, T sign, T wd, T beta1, T one_m_beta1, T beta2, T one_m_beta2, T bc2_sqrt, "
                        "T eps, T step_size, T w_scale", outs, body,
                        f"xpnet_adam{'_amsgrad' if amsgrad else ''}")


@register_kernel("cupy", kernels.ADAM_STEP)
def adam_step(w, g, state, group):
    """Fused Adam / AdamW: the rule of xpnet.optim.Adam in one kernel."""
    import cupy

    step_size, bc2_sqrt, w_scale = _adam_scalars(state["step"], group)
    beta1, beta2 = group["betas"]
    coupled = 0 if group["decoupled_weight_decay"] else group["weight_decay"]
    sign = -1.0 if group["maximize"] else 1.0
    amsgrad = bool(group["amsgrad"])
    kernel = _adam_kernel(amsgrad)
    with w.device:
        w_out = cupy.empty_like(w)
        outs = [w_out, state["exp_avg"], state["exp_avg_sq"]]
        if amsgrad:
            outs.append(state["max_exp_avg_sq"])
        kernel(w, g, _scalar(w, sign), _scalar(w, coupled), _scalar(w, beta1), _scalar(w, 1 - beta1),
               _scalar(w, beta2), _scalar(w, 1 - beta2), _scalar(w, bc2_sqrt), _scalar(w, group["eps"]),
               _scalar(w, step_size), _scalar(w, w_scale), *outs)
    return w_out
