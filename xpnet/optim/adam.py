"""Adam and AdamW (decoupled weight decay), with AMSGrad and an option to drop bias correction."""

from __future__ import annotations

import math
from typing import NamedTuple

from array_api_compat import array_namespace

from ..backends import kernels
from .optimizer import Optimizer, average_squares_, effective_grad


class AdamScalars(NamedTuple):
    """The numbers of one Adam/AdamW step (``Adam.step_scalars``).

    ``bias_correction1``/``bias_correction2`` are 1 - β1^t and 1 - β2^t for this step t (both 1.0
    with ``bias_correction=False``); ``decoupled`` is AdamW's decay w' = (1 - ηλ) w instead of λ w in
    the gradient."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled: bool
    amsgrad: bool
    maximize: bool
    bias_correction1: float
    bias_correction2: float


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
    def step_scalars(state, group):
        beta1, beta2 = group["betas"]
        step = state["step"]
        if group["bias_correction"]:
            bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
        else:
            bias_correction1 = bias_correction2 = 1.0
        return AdamScalars(group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                           bool(group["decoupled_weight_decay"]), bool(group["amsgrad"]), group["maximize"],
                           bias_correction1, bias_correction2)

    @staticmethod
    def update(w, g, state, group, scalars):
        xp = array_namespace(w)
        lr, beta1, beta2, decay = scalars.lr, scalars.beta1, scalars.beta2, scalars.weight_decay
        d, _ = effective_grad(w, g, 0 if scalars.decoupled else decay, scalars.maximize)
        step_size = lr / scalars.bias_correction1  # η/(1-β1^t)
        bc2_sqrt = math.sqrt(scalars.bias_correction2)  # √(1-β2^t)
        w_scale = 1 - lr * decay if scalars.decoupled and decay != 0 else 1.0
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * d
        average_squares_(v, d, beta2)
        if scalars.amsgrad:
            v = xp.maximum(state["max_exp_avg_sq"], v)
            state["max_exp_avg_sq"] = v
        denom = xp.sqrt(v)
        if bc2_sqrt != 1.0:
            denom /= bc2_sqrt
        denom += scalars.eps
        out = m / denom
        out *= -step_size
        if w_scale != 1.0:
            w *= w_scale
        w += out  # w' + (-step): the same sum as (-step) + w'
        return w


class AdamW(Adam):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=False,
    bias_correction=True): Adam with decoupled weight decay, w' = (1 - η λ) w_{t-1} before the
    Adam step and no λ in the gradient (see Adam for the whole rule)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 bias_correction=True, *, maximize=False, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         bias_correction=bias_correction, maximize=maximize, decoupled_weight_decay=True,
                         fused=fused)


def lerp_moments(w, g, state, scalars):
    """The start of a NAdam or RAdam step, in place: AdamW's decay w <- (1 - lr wd) w when
    ``scalars.decoupled``, d = g (+ wd w otherwise; negated with maximize), m <- m + (1 - b1)(d - m)
    (PyTorch's lerp form of b1 m + (1 - b1) d) and v <- b2 v + (1 - b2) d * d. Returns (d, m, v)."""
    decay, decoupled = scalars.weight_decay, scalars.decoupled
    if decoupled and decay != 0:
        w *= 1 - scalars.lr * decay
    d, _ = effective_grad(w, g, 0 if decoupled else decay, scalars.maximize)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m += (1 - scalars.beta1) * (d - m)
    average_squares_(v, d, scalars.beta2)
    return d, m, v
