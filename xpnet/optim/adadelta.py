"""Adadelta: steps whose units come from running averages of squared gradients and squared steps."""

from __future__ import annotations

from typing import NamedTuple

from array_api_compat import array_namespace

from .checks import check_real, check_torch_flags
from .optimizer import Optimizer, average_squares_, effective_grad


class AdadeltaScalars(NamedTuple):
    """The numbers of one Adadelta step (``Adadelta.step_scalars``): the group's options."""

    lr: float
    rho: float
    eps: float
    weight_decay: float
    maximize: bool


class Adadelta(Optimizer):
    """Adadelta(params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
    maximize=False, differentiable=False)

    With g_t = dL/dw at w_{t-1} (negated when maximize=True), learning rate η, decay ρ and weight
    decay λ:

        d_t = g_t + λ w_{t-1}
        v_t = ρ v_{t-1} + (1 - ρ) d_t ⊙ d_t                   (running average of squared gradients)
        Δ_t = √(u_{t-1} + ε) / √(v_t + ε) ⊙ d_t               (the step, in the units of w)
        u_t = ρ u_{t-1} + (1 - ρ) Δ_t ⊙ Δ_t                   (running average of squared steps)
        w_t = w_{t-1} - η Δ_t

    v_0 = u_0 = 0, and ε enters inside both square roots, as in PyTorch (Zeiler's rule is η = 1).
    State: ``step``, ``square_avg`` (v), ``acc_delta`` (u). ``foreach`` and ``capturable`` are
    accepted for PyTorch code and change nothing here.
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=differentiable)
        super().__init__(params, defaults)

    def _check_group(self, group, index):
        super()._check_group(group, index)
        check_real("Adadelta", "rho", group["rho"], index, 0.0, 1.0)
        check_real("Adadelta", "eps", group["eps"], index, 0.0)
        check_torch_flags("Adadelta", group, index)

    def init_state(self, w, group):
        xp = array_namespace(w)
        return {"step": 0, "square_avg": xp.zeros_like(w), "acc_delta": xp.zeros_like(w)}

    @staticmethod
    def step_scalars(state, group):
        return AdadeltaScalars(group["lr"], group["rho"], group["eps"], group["weight_decay"], group["maximize"])

    @staticmethod
    def update(w, g, state, group, scalars):
        xp = array_namespace(w)
        rho, eps = scalars.rho, scalars.eps
        d, _ = effective_grad(w, g, scalars.weight_decay, scalars.maximize)
        v, u = state["square_avg"], state["acc_delta"]
        average_squares_(v, d, rho)
        delta = xp.sqrt(u + eps)
        delta /= xp.sqrt(v + eps)
        delta *= d
        average_squares_(u, delta, rho)
        delta *= -scalars.lr
        w += delta  # w + (-η Δ)
        return w
