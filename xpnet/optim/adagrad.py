"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

from typing import NamedTuple

from array_api_compat import array_namespace

from ..backends import kernels
from .optimizer import Optimizer, effective_grad


class AdagradScalars(NamedTuple):
    """The numbers of one Adagrad step (``Adagrad.step_scalars``); ``clr`` = η / (1 + (t - 1) κ), the
    decayed learning rate of this step t."""

    lr: float
    lr_decay: float
    weight_decay: float
    eps: float
    initial_accumulator_value: float
    maximize: bool
    clr: float


class Adagrad(Optimizer):
    """Adagrad(params, lr=0.01, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10)

    With g_t = dL/dw at w_{t-1} (negated when maximize=True), learning rate η, decay κ
    (lr_decay), weight decay λ and s_0 = initial_accumulator_value:

        d_t = g_t + λ w_{t-1}
        η_t = η / (1 + (t - 1) κ)
        s_t = s_{t-1} + d_t ⊙ d_t
        w_t = w_{t-1} - η_t d_t / (√s_t + ε)

    ε is added after the square root, as in PyTorch. State: ``step`` (t), ``sum`` (s_t).
    """

    kernel_name = kernels.ADAGRAD_STEP

    def __init__(self, params, lr=0.01, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, *,
                 maximize=False, fused=None):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize,
                        fused=fused)
        super().__init__(params, defaults)

    def _check_group(self, group, index):
        super()._check_group(group, index)
        for key in ("lr_decay", "initial_accumulator_value", "eps"):
            if group[key] < 0:
                raise ValueError(f"Adagrad: invalid {key}={group[key]!r} in group {index}; expected >= 0")

    def init_state(self, w, group):
        xp = array_namespace(w)
        return {"step": 0, "sum": xp.full(w.shape, group["initial_accumulator_value"], dtype=w.dtype,
                                          device=w.device)}

    @staticmethod
    def step_scalars(state, group):
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        return AdagradScalars(group["lr"], group["lr_decay"], group["weight_decay"], group["eps"],
                              group["initial_accumulator_value"], group["maximize"], clr)

    @staticmethod
    def update(w, g, state, group, scalars):
        xp = array_namespace(w)
        d, _ = effective_grad(w, g, scalars.weight_decay, scalars.maximize)
        s = state["sum"]
        s += d * d
        std = xp.sqrt(s)
        std += scalars.eps
        out = d / std
        out *= -scalars.clr
        w += out  # w + (-η_t d/σ): the same sum as (-η_t d/σ) + w
        return w
