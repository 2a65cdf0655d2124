"""NAdam: Adam with Nesterov momentum, under Dozat's decaying momentum schedule."""

from __future__ import annotations

import numbers
from typing import NamedTuple

from array_api_compat import array_namespace

from ..backends import to_numpy
from .checks import check_betas, check_bool, check_real, check_torch_flags
from .adam import lerp_moments
from .optimizer import Optimizer


class NAdamScalars(NamedTuple):
    """The numbers of one NAdam step (``NAdam.step_scalars``) at step t.

    ``mu``/``mu_next`` are the momentum coefficients μ_t and μ_{t+1}; ``mu_product`` is
    Π_{i<=t} μ_i (the new value of the state ``mu_product``); ``grad_coef`` = -η (1 - μ_t) / (1 -
    Π_{i<=t} μ_i) and ``avg_coef`` = -η μ_{t+1} / (1 - Π_{i<=t+1} μ_i) weigh the gradient and the
    first moment; ``bias_correction2`` = 1 - β2^t."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled: bool
    maximize: bool
    mu: float
    mu_next: float
    mu_product: float
    grad_coef: float
    avg_coef: float
    bias_correction2: float


def momentum_coefficient(beta1: float, momentum_decay: float, step: int) -> float:
    """μ_t = β1 (1 - ½ · 0.96^(t ψ)), Dozat's warming-up momentum (ψ = momentum_decay)."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


class NAdam(Optimizer):
    """NAdam(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
    decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
    differentiable=False)

    With g_t = dL/dw at w_{t-1} (negated when maximize=True), learning rate η, decay rates β1, β2,
    weight decay λ and momentum decay ψ:

        d_t = g_t + λ w_{t-1}           (NAdam: λ enters the gradient, an L2 penalty)
        w'  = (1 - η λ) w_{t-1}          (decoupled_weight_decay: then d_t = g_t; otherwise w' = w_{t-1})
        μ_t = β1 (1 - ½ · 0.96^(t ψ)),   P_t = μ_1 μ_2 ... μ_t
        m_t = β1 m_{t-1} + (1 - β1) d_t
        v_t = β2 v_{t-1} + (1 - β2) d_t ⊙ d_t
        σ_t = √(v_t / (1 - β2^t)) + ε
        w_t = w' - η (1 - μ_t)/(1 - P_t) · d_t / σ_t - η μ_{t+1}/(1 - P_t μ_{t+1}) · m_t / σ_t

    The last line is Nesterov's look-ahead: the current gradient enters with this step's weight,
    the running average with the next step's. ε is added after the square root, as in PyTorch.
    State: ``step``, ``mu_product`` (P_t, a Python float: PyTorch keeps a 0-d tensor there, which
    ``load_state_dict`` accepts), ``exp_avg`` (m), ``exp_avg_sq`` (v). ``foreach`` and
    ``capturable`` are accepted for PyTorch code and change nothing here.
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable)
        super().__init__(params, defaults)

    def _check_group(self, group, index):
        super()._check_group(group, index)
        check_betas("NAdam", group["betas"], index)
        check_real("NAdam", "eps", group["eps"], index, 0.0)
        check_real("NAdam", "momentum_decay", group["momentum_decay"], index, 0.0)
        check_bool("NAdam", "decoupled_weight_decay", group["decoupled_weight_decay"], index)
        check_torch_flags("NAdam", group, index)

    def init_state(self, w, group):
        xp = array_namespace(w)
        return {"step": 0, "mu_product": 1.0, "exp_avg": xp.zeros_like(w), "exp_avg_sq": xp.zeros_like(w)}

    @staticmethod
    def step_scalars(state, group):
        beta1, beta2 = group["betas"]
        step, lr = state["step"], group["lr"]
        mu = momentum_coefficient(beta1, group["momentum_decay"], step)
        mu_next = momentum_coefficient(beta1, group["momentum_decay"], step + 1)
        mu_product = state["mu_product"] * mu
        grad_coef = -lr * (1.0 - mu) / (1.0 - mu_product)
        avg_coef = (-lr * mu_next) / (1.0 - mu_product * mu_next)
        return NAdamScalars(lr, beta1, beta2, group["eps"], group["weight_decay"],
                            bool(group["decoupled_weight_decay"]), group["maximize"], mu, mu_next, mu_product,
                            grad_coef, avg_coef, 1 - beta2 ** step)

    @staticmethod
    def update(w, g, state, group, scalars):
        xp = array_namespace(w)
        d, m, v = lerp_moments(w, g, state, scalars)
        denom = xp.sqrt(v / scalars.bias_correction2)
        denom += scalars.eps
        out = d / denom
        out *= scalars.grad_coef
        w += out
        out = m / denom
        out *= scalars.avg_coef
        w += out
        state["mu_product"] = scalars.mu_product  # a host number: replaced, not updated in place
        return w

    def load_state_dict(self, state_dict):
        """As ``Optimizer.load_state_dict``; a ``mu_product`` saved as a 0-d array or tensor (as
        PyTorch saves it) becomes a Python float."""
        if isinstance(state_dict, dict) and isinstance(state_dict.get("state"), dict):
            state = {}
            for key, entry in state_dict["state"].items():
                if isinstance(entry, dict) and "mu_product" in entry:
                    entry = {**entry, "mu_product": _as_float(entry["mu_product"], key)}
                state[key] = entry
            state_dict = {**state_dict, "state": state}
        super().load_state_dict(state_dict)


def _as_float(value, key) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    try:
        host = to_numpy(value)
        if host.size != 1:
            raise ValueError
        return float(host.reshape(()).item())
    except (TypeError, ValueError):
        raise ValueError(f"NAdam.load_state_dict: state 'mu_product' of parameter index {key} must be a number "
                         f"(or a one-element array), got {type(value).__name__}") from None
