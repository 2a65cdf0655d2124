"""RAdam: Adam whose adaptive step is switched on, and scaled, by a variance-rectification term."""

from __future__ import annotations

from typing import NamedTuple

from array_api_compat import array_namespace

from .checks import check_betas, check_bool, check_real, check_torch_flags
from .adam import lerp_moments
from .optimizer import Optimizer

# the adaptive step is used once the length of the approximated simple moving average exceeds this
RECTIFICATION_THRESHOLD = 5.0


class RAdamScalars(NamedTuple):
    """The numbers of one RAdam step (``RAdam.step_scalars``) at step t.

    ``rho_t`` is the length of the approximated simple moving average ρ_t; ``rectified`` says
    whether ρ_t > 5 (the adaptive step is taken), and ``rect`` is then the rectification r_t
    (1.0 otherwise, unused); ``bias_correction1``/``bias_correction2`` are 1 - β1^t and 1 - β2^t."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled: bool
    maximize: bool
    bias_correction1: float
    bias_correction2: float
    rho_t: float
    rectified: bool
    rect: float


class RAdam(Optimizer):
    """RAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
    *, foreach=None, maximize=False, capturable=False, differentiable=False)

    With g_t = dL/dw at w_{t-1} (negated when maximize=True), learning rate η, decay rates β1, β2
    and weight decay λ:

        d_t = g_t + λ w_{t-1}           (RAdam: λ enters the gradient, an L2 penalty)
        w'  = (1 - η λ) w_{t-1}          (decoupled_weight_decay: then d_t = g_t; otherwise w' = w_{t-1})
        m_t = β1 m_{t-1} + (1 - β1) d_t
        v_t = β2 v_{t-1} + (1 - β2) d_t ⊙ d_t
        m̂_t = m_t / (1 - β1^t)
        ρ_∞ = 2/(1 - β2) - 1,   ρ_t = ρ_∞ - 2 t β2^t / (1 - β2^t)
        r_t = √( (ρ_t - 4)(ρ_t - 2) ρ_∞ / ((ρ_∞ - 4)(ρ_∞ - 2) ρ_t) )
        w_t = w' - η m̂_t · √(1 - β2^t) / (√v_t + ε) · r_t        (ρ_t > 5: the variance is tractable)
        w_t = w' - η m̂_t                                          (ρ_t <= 5: SGD with momentum)

    Early on, too few gradients stand behind v_t for the adaptive step to be trusted, and RAdam
    takes plain momentum steps instead of a warm-up schedule. ε is added after the square root, as
    in PyTorch. State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v). ``foreach`` and
    ``capturable`` are accepted for PyTorch code and change nothing here.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                 *, foreach=None, maximize=False, capturable=False, differentiable=False):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, maximize=maximize, foreach=foreach, capturable=capturable,
                        decoupled_weight_decay=decoupled_weight_decay, differentiable=differentiable)
        super().__init__(params, defaults)

    def _check_group(self, group, index):
        super()._check_group(group, index)
        check_betas("RAdam", group["betas"], index)
        check_real("RAdam", "eps", group["eps"], index, 0.0)
        check_bool("RAdam", "decoupled_weight_decay", group["decoupled_weight_decay"], index)
        check_torch_flags("RAdam", group, index)

    def init_state(self, w, group):
        xp = array_namespace(w)
        return {"step": 0, "exp_avg": xp.zeros_like(w), "exp_avg_sq": xp.zeros_like(w)}

    @staticmethod
    def step_scalars(state, group):
        beta1, beta2 = group["betas"]
        step = state["step"]
        bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
        rectified = rho_t > RECTIFICATION_THRESHOLD
        rect = 1.0
        if rectified:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        return RAdamScalars(group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                            bool(group["decoupled_weight_decay"]), group["maximize"], bias_correction1,
                            bias_correction2, rho_t, rectified, rect)

    @staticmethod
    def update(w, g, state, group, scalars):
        xp = array_namespace(w)
        d, m, v = lerp_moments(w, g, state, scalars)
        out = m / scalars.bias_correction1  # m̂
        out *= scalars.lr
        if scalars.rectified:
            denom = xp.sqrt(v)
            denom += scalars.eps
            out *= scalars.bias_correction2 ** 0.5 / denom
            out *= scalars.rect
        w -= out
        return w
