"""Measure how far xpnet's dense layers, activations and losses are from PyTorch.

    python scripts/nn_vs_torch.py [--backend numpy|array_api_strict] [--dtype float64|float32] [--seed 0]

Each case runs forward and backward (with one random upstream gradient) in both libraries from the
same inputs and weights, and the script prints the largest absolute difference over the output and
every gradient (input, target where differentiable, weight, bias), and the largest of those
differences relative to the largest magnitude of the array it belongs to.
Convolution, pooling and normalization are measured by their own tests (tests/nn/test_conv*.py, ...).
"""

from __future__ import annotations

import argparse

import numpy as np

import xpnet
import xpnet.nn as nn
import xpnet.nn.functional as F


def _layer_case(name, make, torch_make, shape):
    return name, ("layer", make, torch_make, shape)


def _cases(torch):
    tnn = torch.nn
    tF = torch.nn.functional
    return [
        _layer_case("Linear (N, D)", lambda: nn.Linear(256, 128), lambda: tnn.Linear(256, 128), (64, 256)),
        _layer_case("Linear (B, T, D)", lambda: nn.Linear(64, 32), lambda: tnn.Linear(64, 32), (8, 16, 64)),
        _layer_case("Linear no bias", lambda: nn.Linear(64, 32, bias=False),
                    lambda: tnn.Linear(64, 32, bias=False), (32, 64)),
        _layer_case("Flatten", lambda: nn.Flatten(), lambda: tnn.Flatten(), (16, 8, 4, 4)),
        _layer_case("ReLU", lambda: nn.ReLU(), lambda: tnn.ReLU(), (64, 512)),
        _layer_case("LeakyReLU(0.1)", lambda: nn.LeakyReLU(0.1), lambda: tnn.LeakyReLU(0.1), (64, 512)),
        _layer_case("ELU", lambda: nn.ELU(), lambda: tnn.ELU(), (64, 512)),
        _layer_case("Sigmoid", lambda: nn.Sigmoid(), lambda: tnn.Sigmoid(), (64, 512)),
        _layer_case("Tanh", lambda: nn.Tanh(), lambda: tnn.Tanh(), (64, 512)),
        _layer_case("Softmax(dim=1)", lambda: nn.Softmax(dim=1), lambda: tnn.Softmax(dim=1), (64, 1000)),
        _layer_case("LogSoftmax(dim=1)", lambda: nn.LogSoftmax(dim=1), lambda: tnn.LogSoftmax(dim=1), (64, 1000)),
        ("MSELoss", ("pair", F.mse_loss, tF.mse_loss, {})),
        ("L1Loss", ("pair", F.l1_loss, tF.l1_loss, {})),
        ("BCELoss", ("pair", F.binary_cross_entropy, tF.binary_cross_entropy, {"probabilities": True})),
        ("BCEWithLogitsLoss pos_weight", ("pair", F.binary_cross_entropy_with_logits,
                                          tF.binary_cross_entropy_with_logits, {"pos_weight": True})),
        ("CrossEntropyLoss", ("class", F.cross_entropy, tF.cross_entropy, {})),
        ("CrossEntropyLoss weight+ignore+smoothing",
         ("class", F.cross_entropy, tF.cross_entropy, {"weight": True, "ignore_index": 3, "label_smoothing": 0.1})),
        ("NLLLoss weight", ("class", F.nll_loss, tF.nll_loss, {"weight": True, "log_probs": True})),
        ("MultiMarginLoss p=2", ("class", F.multi_margin_loss, tF.multi_margin_loss, {"p": 2, "margin": 0.5})),
    ]


def _up(backend, host, dtype):
    return xpnet.Tensor(backend.from_host(host.astype(dtype)), requires_grad=True)


def _compare(pairs):
    abs_err = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in pairs)
    # normwise: elementwise relative errors explode where a gradient is ~0 (saturated tanh) and say little
    rel_err = max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)) if a.size else 0.0 for a, b in pairs)
    return abs_err, rel_err


def run_case(kind, spec, backend, dtype, rng, torch):
    tdtype = getattr(torch, dtype)
    if kind == "layer":
        make, torch_make, shape = spec
        with xpnet.use_backend(backend.name, backend.device):
            layer = make().to(dtype=dtype)
        ref = torch_make().to(tdtype)
        with torch.no_grad():
            for p, tp in zip(layer.parameters(), ref.parameters()):
                tp.copy_(torch.from_numpy(xpnet.to_numpy(p)))
        x_host = rng.standard_normal(shape) * 2
        x, xt = _up(backend, x_host, dtype), torch.tensor(x_host.astype(dtype), requires_grad=True)
        y, yt = layer(x), ref(xt)
        g = rng.standard_normal(yt.shape).astype(dtype)
        y.backward(backend.from_host(g))
        yt.backward(torch.from_numpy(g))
        pairs = [(xpnet.to_numpy(y), yt.detach().numpy()), (xpnet.to_numpy(x.grad), xt.grad.numpy())]
        pairs += [(xpnet.to_numpy(p.grad), tp.grad.numpy()) for p, tp in zip(layer.parameters(), ref.parameters())]
        return _compare(pairs)
    fn, torch_fn, options = spec
    if kind == "pair":
        x_host = rng.uniform(0.02, 0.98, (64, 100)) if options.get("probabilities") else rng.standard_normal((64, 100)) * 3
        t_host = rng.uniform(0, 1, (64, 100))
        x, t = _up(backend, x_host, dtype), _up(backend, t_host, dtype)
        xt = torch.tensor(x_host.astype(dtype), requires_grad=True)
        tt = torch.tensor(t_host.astype(dtype), requires_grad=True)
        extra, textra = {}, {}
        if options.get("pos_weight"):
            pw = rng.uniform(0.5, 2.0, 100).astype(dtype)
            extra["pos_weight"], textra["pos_weight"] = backend.from_host(pw), torch.from_numpy(pw)
        y, yt = fn(x, t, **extra), torch_fn(xt, tt, **textra)
        y.backward()
        yt.backward()
        return _compare([(xpnet.to_numpy(y), yt.detach().numpy()), (xpnet.to_numpy(x.grad), xt.grad.numpy()),
                         (xpnet.to_numpy(t.grad), tt.grad.numpy())])
    n, c = 128, 10
    x_host = rng.standard_normal((n, c)) * 3
    if options.get("log_probs"):
        x_host = x_host - np.log(np.exp(x_host).sum(axis=1, keepdims=True))
    t_host = rng.integers(0, c, n)
    kwargs = {k: v for k, v in options.items() if k in ("ignore_index", "label_smoothing", "p", "margin")}
    extra, textra = dict(kwargs), dict(kwargs)
    if options.get("weight"):
        w = rng.uniform(0.2, 2.0, c).astype(dtype)
        extra["weight"], textra["weight"] = backend.from_host(w), torch.from_numpy(w)
    x, xt = _up(backend, x_host, dtype), torch.tensor(x_host.astype(dtype), requires_grad=True)
    y = fn(x, backend.from_host(t_host), **extra)
    yt = torch_fn(xt, torch.from_numpy(t_host), **textra)
    y.backward()
    yt.backward()
    return _compare([(xpnet.to_numpy(y), yt.detach().numpy()), (xpnet.to_numpy(x.grad), xt.grad.numpy())])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "array_api_strict"])
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    backend = xpnet.get_backend(args.backend)
    rng = np.random.default_rng(args.seed)
    xpnet.manual_seed(args.seed)
    print(f"xpnet vs torch {torch.__version__}, {args.dtype}, backend {backend}: forward + backward")
    print(f"{'case':<42} {'max abs error':>14} {'max rel error':>14}")
    for name, (kind, *spec) in _cases(torch):
        abs_err, rel_err = run_case(kind, spec, backend, args.dtype, rng, torch)
        print(f"{name:<42} {abs_err:>14.3e} {rel_err:>14.3e}")


if __name__ == "__main__":
    main()
