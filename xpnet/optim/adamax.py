"""Adamax: Adam with the infinity norm in place of the root mean square of past gradients."""

from __future__ import annotations

from typing import NamedTuple

from array_api_compat import array_namespace

from .checks import check_betas, check_real, check_torch_flags
from .optimizer import Optimizer, effective_grad


class AdamaxScalars(NamedTuple):
    """The numbers of one Adamax step (``Adamax.step_scalars``); ``clr`` = η / (1 - β1^t), the
    bias-corrected learning rate of this step t."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    maximize: bool
    clr: float


class Adamax(Optimizer):
    """Adamax(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
    maximize=False, differentiable=False, capturable=False)

    With g_t = dL/dw at w_{t-1} (negated when maximize=True), learning rate η, decay rates β1, β2
    and weight decay λ:

        d_t = g_t + λ w_{t-1}
        m_t = β1 m_{t-1} + (1 - β1) d_t
        u_t = max(β2 u_{t-1}, |d_t| + ε)                      (elementwise: a decaying infinity norm)
        w_t = w_{t-1} - η/(1 - β1^t) · m_t / u_t

    m_0 = u_0 = 0; only the first moment needs a bias correction, since u_t is a maximum, not an
    average. ε enters inside the maximum, as in PyTorch, so u_t > 0 from the first step on.
    State: ``step``, ``exp_avg`` (m), ``exp_inf`` (u). ``foreach`` and ``capturable`` are
    accepted for PyTorch code and change nothing here.
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults)

    def _check_group(self, group, index):
        super()._check_group(group, index)
        check_betas("Adamax", group["betas"], index)
        check_real("Adamax", "eps", group["eps"], index, 0.0)
        check_torch_flags("Adamax", group, index)

    def init_state(self, w, group):
        xp = array_namespace(w)
        return {"step": 0, "exp_avg": xp.zeros_like(w), "exp_inf": xp.zeros_like(w)}

    @staticmethod
    def step_scalars(state, group):
        beta1, beta2 = group["betas"]
        clr = group["lr"] / (1 - beta1 ** state["step"])
        return AdamaxScalars(group["lr"], beta1, beta2, group["eps"], group["weight_decay"], group["maximize"], clr)

    @staticmethod
    def update(w, g, state, group, scalars):
        xp = array_namespace(w)
        d, _ = effective_grad(w, g, scalars.weight_decay, scalars.maximize)
        m, u = state["exp_avg"], state["exp_inf"]
        m += (1 - scalars.beta1) * (d - m)  # β1 m + (1 - β1) d, written as PyTorch's lerp computes it
        u *= scalars.beta2
        bound = xp.abs(d)
        bound += scalars.eps
        u[...] = xp.maximum(u, bound)  # in place: the state array stays the same object
        out = m / u
        out *= -scalars.clr
        w += out  # w + (-clr m/u)
        return w
