"""The fixed problem the optimizer tests share (imported by the test_optim_* files).

Least squares with a bias: L(W, c) = ½ mean((A W + c - B)²) over a fixed data set, float64, two
parameters (W of shape (4, 2), c of shape (2,)). Gradients are written out here for xpnet (over the
backend's arrays) and taken by autograd for PyTorch, so the two sides share nothing but the data.
"""

from __future__ import annotations

import numpy as np

import xpnet
import xpnet.optim

_rng = np.random.default_rng(7)
A = _rng.normal(size=(12, 4))
B = _rng.normal(size=(12, 2))
W0 = _rng.normal(size=(4, 2))
C0 = np.array([0.3, -0.2])
STEPS = 50

# (id, optimizer class name, options): every option of every optimizer is switched on in some case
CASES = [
    ("sgd", "SGD", dict(lr=0.1)),
    ("sgd-momentum", "SGD", dict(lr=0.1, momentum=0.9)),
    ("sgd-dampening", "SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("sgd-nesterov", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("sgd-weight-decay", "SGD", dict(lr=0.1, momentum=0.5, weight_decay=0.05)),
    ("sgd-maximize", "SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.05, maximize=True)),
    ("adagrad", "Adagrad", dict(lr=0.1)),
    ("adagrad-lr-decay", "Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("adagrad-weight-decay", "Adagrad", dict(lr=0.1, weight_decay=0.05)),
    ("adagrad-accumulator", "Adagrad", dict(lr=0.1, initial_accumulator_value=0.2, eps=1e-3)),
    ("adagrad-maximize", "Adagrad", dict(lr=0.1, weight_decay=0.05, maximize=True)),
    ("rmsprop", "RMSprop", dict(lr=0.01)),
    ("rmsprop-alpha-eps", "RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-3)),
    ("rmsprop-momentum", "RMSprop", dict(lr=0.01, momentum=0.8)),
    ("rmsprop-centered", "RMSprop", dict(lr=0.01, centered=True)),
    ("rmsprop-centered-momentum", "RMSprop", dict(lr=0.01, centered=True, momentum=0.8, weight_decay=0.05)),
    ("rmsprop-maximize", "RMSprop", dict(lr=0.01, momentum=0.5, maximize=True)),
    ("adam", "Adam", dict(lr=0.05)),
    ("adam-betas-eps", "Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3)),
    ("adam-weight-decay", "Adam", dict(lr=0.05, weight_decay=0.1)),
    ("adam-amsgrad", "Adam", dict(lr=0.05, amsgrad=True)),
    ("adam-maximize", "Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("adam-no-bias-correction", "Adam", dict(lr=0.05, bias_correction=False)),
    ("adam-no-bias-correction-amsgrad", "Adam", dict(lr=0.05, bias_correction=False, amsgrad=True,
                                                     weight_decay=0.1)),
    ("adamw", "AdamW", dict(lr=0.05)),
    ("adamw-weight-decay-amsgrad", "AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    ("adamw-maximize", "AdamW", dict(lr=0.05, maximize=True)),
    ("adamw-no-bias-correction", "AdamW", dict(lr=0.05, weight_decay=0.3, bias_correction=False)),
]
TORCH_CASES = [case for case in CASES if "bias_correction" not in case[2]]  # our extra has no torch twin


def sign_of(options) -> float:
    """maximize=True cases climb -L, so every trajectory descends L and stays bounded."""
    return -1.0 if options.get("maximize") else 1.0


def set_grads(w, c, sign):
    """Write dL/dW and dL/dc (times sign) into w.grad and c.grad, over w's own namespace."""
    xp = w.backend.xp
    a = w.backend.asarray(A)
    b = w.backend.asarray(B)
    r = xp.matmul(a, w.data) + c.data - b
    scale = sign / r.size
    w.grad = xpnet.Tensor(xp.matmul(a.mT, r) * scale)
    c.grad = xpnet.Tensor(xp.sum(r, axis=0) * scale)


def xpnet_params():
    return (xpnet.tensor(W0.copy(), requires_grad=True), xpnet.tensor(C0.copy(), requires_grad=True))


def run_xpnet(name, options, steps=STEPS, params=None, optimizer=None):
    """The trajectory [(W_t, c_t) as NumPy] of xpnet's optimizer on the current backend."""
    w, c = params if params is not None else xpnet_params()
    opt = optimizer if optimizer is not None else getattr(xpnet.optim, name)([w, c], **options)
    sign = sign_of(opt.param_groups[0])
    out = []
    for _ in range(steps):
        set_grads(w, c, sign)
        opt.step()
        out.append((xpnet.to_numpy(w.data).copy(), xpnet.to_numpy(c.data).copy()))  # steps update in place
    return out


def _torch_run(name, options, steps):
    """(trajectory, optimizer, w, c) of torch.optim's ``name``, gradients by torch autograd."""
    import torch

    a, b = torch.from_numpy(A), torch.from_numpy(B)
    w = torch.tensor(W0, requires_grad=True)
    c = torch.tensor(C0, requires_grad=True)
    opt = getattr(torch.optim, name)([w, c], **options)
    sign = sign_of(options)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = sign * 0.5 * ((a @ w + c - b) ** 2).mean()
        loss.backward()
        opt.step()
        out.append((w.detach().numpy().copy(), c.detach().numpy().copy()))
    return out, opt, w, c


def run_torch(name, options, steps=STEPS):
    """The same trajectory with torch.optim, gradients by torch autograd."""
    return _torch_run(name, options, steps)[0]


def continue_from_torch(name, options, steps=10):
    """(xpnet optimizer, (w, c)): xpnet's ``name`` over parameters holding torch.optim's values
    after ``steps`` steps of the trajectory, with torch's ``state_dict`` loaded (its defaults, as
    a ported program constructs it)."""
    _, topt, tw, tc = _torch_run(name, options, steps)
    w = xpnet.tensor(tw.detach().numpy().copy(), requires_grad=True)
    c = xpnet.tensor(tc.detach().numpy().copy(), requires_grad=True)
    opt = getattr(xpnet.optim, name)([w, c])
    opt.load_state_dict(topt.state_dict())
    return opt, (w, c)


# PyTorch's defaults per optimizer and each rule written out in NumPy float64: the reference the
# trajectory and update-rule tests compare against
DEFAULTS = {
    "SGD": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    "Adagrad": dict(lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                    maximize=False),
    "RMSprop": dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                    maximize=False),
    "Adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                 bias_correction=True),
    "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=False, maximize=False,
                  bias_correction=True),
}


def reference_step(name, o, w, g, s, t):
    """One step of each rule in plain NumPy float64, straight from the formulas; s is the state."""
    g = -g if o["maximize"] else g
    if name == "SGD":
        d = g + o["weight_decay"] * w
        if o["momentum"]:
            s["b"] = d.copy() if t == 1 else o["momentum"] * s["b"] + (1 - o["dampening"]) * d
            d = d + o["momentum"] * s["b"] if o["nesterov"] else s["b"]
        return w - o["lr"] * d
    if name == "Adagrad":
        d = g + o["weight_decay"] * w
        s["sum"] = s.get("sum", np.full_like(w, o["initial_accumulator_value"])) + d * d
        lr_t = o["lr"] / (1 + (t - 1) * o["lr_decay"])
        return w - lr_t * d / (np.sqrt(s["sum"]) + o["eps"])
    if name == "RMSprop":
        a = o["alpha"]
        d = g + o["weight_decay"] * w
        s["v"] = a * s.get("v", 0.0) + (1 - a) * d * d
        if o["centered"]:
            s["m"] = a * s.get("m", 0.0) + (1 - a) * d
            sigma = np.sqrt(s["v"] - s["m"] ** 2) + o["eps"]
        else:
            sigma = np.sqrt(s["v"]) + o["eps"]
        if o["momentum"] > 0:
            s["b"] = o["momentum"] * s.get("b", 0.0) + d / sigma
            return w - o["lr"] * s["b"]
        return w - o["lr"] * d / sigma
    # Adam, AdamW
    b1, b2 = o["betas"]
    lam = o["weight_decay"]
    if name == "AdamW":
        w = w * (1 - o["lr"] * lam)
        d = g
    else:
        d = g + lam * w
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * d
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * d * d
    v = s["v"]
    if o["amsgrad"]:
        s["vmax"] = np.maximum(s.get("vmax", 0.0), s["v"])
        v = s["vmax"]
    if o["bias_correction"]:
        m_hat = s["m"] / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
    else:
        m_hat, v_hat = s["m"], v
    return w - o["lr"] * m_hat / (np.sqrt(v_hat) + o["eps"])
