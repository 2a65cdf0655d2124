"""Adam and AdamW (decoupled weight decay), with AMSGrad and an option to drop bias correction."""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from ..backends import kernels
from .optimizer import Optimizer, effective_grad


def adam_scalars(step, group):
    """Host-side constants of step t: (step size η/(1-β1^t), √(1-β2^t), w scale 1-ηλ or 1)."""
    lr = group["lr"]
    beta1, beta2 = group["betas"]
    if group["bias_correction"]:
        step_size = lr / (1 - beta1 ** step)
        bc2_sqrt = math.sqrt(1 - beta2 ** step)
    else:
        step_size, bc2_sqrt = lr, 1.0
    decay = group["weight_decay"]
    w_scale = 1 - lr * decay if group["decoupled_weight_decay"] and decay != 0 else 1.0
    return step_size, bc2_sqrt, w_scale


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
    bias_correction=True, *, maximize=False, decoupled_weight_decay=False)

    With g_t = dL/dw at w_{t-1} (negated when maximize=True), learning rate η, decay rates β1, β2
    and weight decay λ:

        d_t = g_t + λ w_{t-1}           (Adam: λ enters the gradient, an L2 penalty)
        w'  = (1 - η λ) w_{t-1}          (AdamW: decoupled decay; then d_t = g_t, otherwise w' = w_{t-1})
        m_t = β1 m_{t-1} + (1 - β1) d_t
        v_t = β2 v_{t-1} + (1 - β2) d_t ⊙ d_t
        v̂_t = max(v̂_{t-1}, v_t)  (amsgrad)   |   v_t
        w_t = w' - η/(1 - β1^t) · m_t / (√v̂_t / √(1 - β2^t) + ε)

    ε is added after the square root, as in PyTorch. ``bias_correction=False`` (an xpnet extra, to
    compare the two as the course notes do) drops both corrections:
    w_t = w' - η m_t / (√v̂_t + ε). State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v),
    ``max_exp_avg_sq`` (amsgrad).
    """

    kernel_name = kernels.ADAM_STEP

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 bias_correction=True, *, maximize=False, decoupled_weight_decay=False, fused=None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        bias_correction=bias_correction, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay, fused=fused)
        super().__init__(params, defaults)

    def _check_group(self, group, index):
        super()._check_group(group, index)
        name = type(self).__name__
        betas = group["betas"]
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{name}: invalid betas={betas!r} in group {index}; expected two values in [0, 1)")
        if group["eps"] < 0:
            raise ValueError(f"{name}: invalid eps={group['eps']!r} in group {index}; expected eps >= 0")

    def init_state(self, w, group):
        xp = array_namespace(w)
        state = {"step": 0, "exp_avg": xp.zeros_like(w), "exp_avg_sq": xp.zeros_like(w)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = xp.zeros_like(w)
        return state

    @staticmethod
    def update(w, g, state, group):
        xp = array_namespace(w)
        beta1, beta2 = group["betas"]
        coupled = 0 if group["decoupled_weight_decay"] else group["weight_decay"]
        d, _ = effective_grad(w, g, coupled, group["maximize"])
        step_size, bc2_sqrt, w_scale = adam_scalars(state["step"], group)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * d
        v *= beta2
        sq = d * d
        sq *= 1 - beta2
        v += sq
        if group["amsgrad"]:
            v = xp.maximum(state["max_exp_avg_sq"], v)
            state["max_exp_avg_sq"] = v
        denom = xp.sqrt(v)
        if bc2_sqrt != 1.0:
            denom /= bc2_sqrt
        denom += group["eps"]
        out = m / denom
        out *= -step_size
        out += w if w_scale == 1.0 else w * w_scale
        return out


class AdamW(Adam):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=False,
    bias_correction=True): Adam with decoupled weight decay, w' = (1 - η λ) w_{t-1} before the
    Adam step and no λ in the gradient (see Adam for the whole rule)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 bias_correction=True, *, maximize=False, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         bias_correction=bias_correction, maximize=maximize, decoupled_weight_decay=True,
                         fused=fused)
