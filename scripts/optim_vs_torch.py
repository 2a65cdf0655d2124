"""Measure how far xpnet's optimizers drift from torch.optim on one fixed problem.

    python scripts/optim_vs_torch.py [--steps 50] [--backend numpy|array_api_strict] [--dtype float64]

Least squares with a bias, L(W, c) = ½ mean((A W + c - B)²), from the same start in both libraries
(float64 by default). Every option of every optimizer is exercised by some case; for each optimizer
the script prints the largest absolute and relative difference of the parameters over all its cases
and all steps, then the worst case.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

import xpnet
import xpnet.optim

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.05, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.05)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.2, eps=1e-3, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-3)),
    ("RMSprop", dict(lr=0.01, momentum=0.8)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.8, weight_decay=0.05, maximize=True)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.05, maximize=True)),
]


def problem():
    rng = np.random.default_rng(7)
    return rng.normal(size=(12, 4)), rng.normal(size=(12, 2)), rng.normal(size=(4, 2)), np.array([0.3, -0.2])


def run_xpnet(name, options, steps, backend, dtype):
    A, B, W0, C0 = problem()
    sign = -1.0 if options.get("maximize") else 1.0
    with xpnet.use_backend(backend) as b:
        xp = b.xp
        a, bb = b.asarray(A, dtype=dtype), b.asarray(B, dtype=dtype)
        w = xpnet.Tensor(b.asarray(W0, dtype=dtype), requires_grad=True)
        c = xpnet.Tensor(b.asarray(C0, dtype=dtype), requires_grad=True)
        opt = getattr(xpnet.optim, name)([w, c], **options)
        out = []
        for _ in range(steps):
            r = xp.matmul(a, w.data) + c.data - bb
            scale = sign / r.size
            w.grad = xpnet.Tensor(xp.matmul(a.mT, r) * scale)
            c.grad = xpnet.Tensor(xp.sum(r, axis=0) * scale)
            opt.step()
            out.append(np.concatenate([xpnet.to_numpy(w).ravel(), xpnet.to_numpy(c).ravel()]))
    return np.stack(out)


def run_torch(name, options, steps, dtype):
    import torch

    A, B, W0, C0 = problem()
    tdtype = getattr(torch, dtype)
    a, b = torch.tensor(A, dtype=tdtype), torch.tensor(B, dtype=tdtype)
    w = torch.tensor(W0, dtype=tdtype, requires_grad=True)
    c = torch.tensor(C0, dtype=tdtype, requires_grad=True)
    opt = getattr(torch.optim, name)([w, c], **options)
    sign = -1.0 if options.get("maximize") else 1.0
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (sign * 0.5 * ((a @ w + c - b) ** 2).mean()).backward()
        opt.step()
        out.append(np.concatenate([w.detach().numpy().ravel(), c.detach().numpy().ravel()]))
    return np.stack(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    args = parser.parse_args(argv)
    worst = defaultdict(lambda: (0.0, 0.0, None))
    for name, options in CASES:
        ours = run_xpnet(name, options, args.steps, args.backend, args.dtype)
        theirs = run_torch(name, options, args.steps, args.dtype)
        diff = np.abs(ours - theirs)
        max_abs = float(diff.max())
        max_rel = float((diff / np.maximum(np.abs(theirs), 1e-300)).max())
        prev_abs, prev_rel, _ = worst[name]
        worst[name] = (max(prev_abs, max_abs), max(prev_rel, max_rel),
                       options if max_rel >= prev_rel else worst[name][2])
    print(f"xpnet {xpnet.__version__} vs torch, {args.steps} steps, {args.dtype}, backend {args.backend}")
    print(f"{'optimizer':<10} {'max |diff|':>12} {'max rel diff':>13}  worst case")
    for name, (max_abs, max_rel, options) in worst.items():
        print(f"{name:<10} {max_abs:12.3e} {max_rel:13.3e}  {options}")


if __name__ == "__main__":
    main()
