"""RMSprop: steps scaled by a running average of squared gradients (optionally centred)."""

from __future__ import annotations

from typing import NamedTuple

from array_api_compat import array_namespace

from ..backends import kernels
from .optimizer import Optimizer, average_squares_, effective_grad


class RMSpropScalars(NamedTuple):
    """The numbers of one RMSprop step (``RMSprop.step_scalars``): the group's options."""

    lr: float
    alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool
    maximize: bool


class RMSprop(Optimizer):
    """RMSprop(params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False)

    With g_t = dL/dw at w_{t-1} (negated when maximize=True), learning rate η, smoothing α,
    weight decay λ and momentum μ:

        d_t = g_t + λ w_{t-1}
        v_t = α v_{t-1} + (1 - α) d_t ⊙ d_t
        m_t = α m_{t-1} + (1 - α) d_t                       (centered only)
        σ_t = √(v_t - m_t ⊙ m_t) + ε   (centered)   |   √v_t + ε
        b_t = μ b_{t-1} + d_t / σ_t,   w_t = w_{t-1} - η b_t          (μ > 0)
        w_t = w_{t-1} - η d_t / σ_t                                   (μ = 0)

    ε is added after the square root, as in PyTorch; v_0 = m_0 = b_0 = 0. State: ``step``,
    ``square_avg`` (v), ``grad_avg`` (m, centered), ``momentum_buffer`` (b, μ > 0).
    """

    kernel_name = kernels.RMSPROP_STEP

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, *,
                 maximize=False, fused=None):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize, fused=fused)
        super().__init__(params, defaults)

    def _check_group(self, group, index):
        super()._check_group(group, index)
        for key in ("alpha", "eps", "momentum"):
            if group[key] < 0:
                raise ValueError(f"RMSprop: invalid {key}={group[key]!r} in group {index}; expected >= 0")

    def init_state(self, w, group):
        xp = array_namespace(w)
        state = {"step": 0, "square_avg": xp.zeros_like(w)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = xp.zeros_like(w)
        if group["centered"]:
            state["grad_avg"] = xp.zeros_like(w)
        return state

    @staticmethod
    def step_scalars(state, group):
        return RMSpropScalars(group["lr"], group["alpha"], group["eps"], group["weight_decay"], group["momentum"],
                              group["centered"], group["maximize"])

    @staticmethod
    def update(w, g, state, group, scalars):
        xp = array_namespace(w)
        alpha, mu = scalars.alpha, scalars.momentum
        d, _ = effective_grad(w, g, scalars.weight_decay, scalars.maximize)
        v = state["square_avg"]
        average_squares_(v, d, alpha)
        if scalars.centered:
            m = state["grad_avg"]
            m *= alpha
            m += (1 - alpha) * d
            sigma = xp.sqrt(v - m * m)
        else:
            sigma = xp.sqrt(v)
        sigma += scalars.eps
        if mu > 0:
            b = state["momentum_buffer"]
            b *= mu
            b += d / sigma
            out = b * -scalars.lr
        else:
            out = d / sigma
            out *= -scalars.lr
        w += out  # w + (-η u): the same sum as (-η u) + w
        return w
