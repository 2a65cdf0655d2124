"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay."""

from __future__ import annotations

from typing import NamedTuple

from array_api_compat import array_namespace

from ..backends import kernels
from .optimizer import Optimizer, effective_grad


class SGDScalars(NamedTuple):
    """The numbers of one SGD step (``SGD.step_scalars``): the group's options."""

    lr: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    maximize: bool


class SGD(Optimizer):
    """SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False)

    With w the parameters, g_t = dL/dw at w_{t-1} (its negative when maximize=True), learning
    rate η, momentum μ, dampening τ and weight decay λ:

        d_t = g_t + λ w_{t-1}
        b_1 = d_1,   b_t = μ b_{t-1} + (1 - τ) d_t          (only when μ ≠ 0)
        u_t = d_t + μ b_t  (nesterov)   |   b_t  (μ ≠ 0)   |   d_t  (μ = 0)
        w_t = w_{t-1} - η u_t

    As in PyTorch the first step copies the gradient into the buffer (no dampening), and the
    velocity is applied as w ← w - η b (not b ← μ b + η g). State: ``momentum_buffer`` (μ ≠ 0).
    ``fused=None`` uses a backend fast path where one is registered (``sgd_step_group``: one call for
    a whole group; else ``sgd_step`` per parameter); False never.
    Every step writes w_t into the parameter's own array (see xpnet.optim.optimizer).
    """

    kernel_name = kernels.SGD_STEP
    group_kernel_name = kernels.SGD_STEP_GROUP  # the scalars are the group's options alone

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, fused=fused)
        super().__init__(params, defaults)

    def _check_group(self, group, index):
        super()._check_group(group, index)
        if group["momentum"] < 0:
            raise ValueError(f"SGD: invalid momentum={group['momentum']!r} in group {index}; expected momentum >= 0")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"SGD: Nesterov momentum requires momentum > 0 and dampening = 0, got momentum="
                f"{group['momentum']!r}, dampening={group['dampening']!r} in group {index}"
            )

    @staticmethod
    def step_scalars(state, group):
        return SGDScalars(group["lr"], group["momentum"], group["dampening"], group["weight_decay"],
                          group["nesterov"], group["maximize"])

    @staticmethod
    def update(w, g, state, group, scalars):
        lr, mu = scalars.lr, scalars.momentum
        d, owned = effective_grad(w, g, scalars.weight_decay, scalars.maximize)
        if mu != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = array_namespace(d).asarray(d, copy=True)
            else:
                buf *= mu
                buf += d if scalars.dampening == 0 else (1 - scalars.dampening) * d
            state["momentum_buffer"] = buf
            if scalars.nesterov:
                if owned:
                    d += mu * buf
                else:
                    d = d + mu * buf
                    owned = True
            else:
                d, owned = buf, False
        if owned:
            d *= -lr
        else:
            d = d * -lr
        w += d  # w + (-η u): the same sum as (-η u) + w
        return w
