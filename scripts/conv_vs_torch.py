"""Measure how far xpnet's convolution, pooling and normalization layers are from PyTorch.

    python scripts/conv_vs_torch.py [--backend numpy|array_api_strict] [--dtype float64|float32]

Each case runs forward and backward (one random upstream gradient) in both libraries from the same
input and weights, and prints the largest absolute difference over the output and every gradient
(input, weight, bias) and, for BatchNorm, the running statistics after the step. Conv2d runs over a
grid of kernel/stride/padding/dilation/groups; the row shows the worst case of the grid.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import xpnet
import xpnet.nn as nn

CONV_GRID = [  # (in, out, kernel, stride, padding, dilation, groups, H, W)
    (3, 8, 3, 1, 1, 1, 1, 12, 12), (4, 6, (3, 2), 2, 1, 1, 1, 11, 9), (4, 4, 5, 3, 2, 1, 1, 13, 12),
    (4, 6, 3, 1, 2, 2, 1, 10, 10), (4, 8, 3, 1, 1, 1, 2, 9, 9), (4, 4, 3, 2, 1, 1, 4, 9, 8),
    (3, 4, 11, 4, 2, 1, 1, 31, 31), (2, 3, 2, 1, "same", 1, 1, 7, 8), (6, 4, 1, 1, 0, 1, 1, 5, 5),
]


def _pairs(torch):
    tnn = torch.nn
    conv = [(f"Conv2d{g}", lambda g=g: nn.Conv2d(g[0], g[1], g[2], g[3], g[4], g[5], g[6]),
             lambda g=g: tnn.Conv2d(g[0], g[1], g[2], g[3], g[4], g[5], g[6]), (2, g[0], g[7], g[8]))
            for g in CONV_GRID]
    return conv + [
        ("MaxPool2d(2)", lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2), (2, 3, 8, 8)),
        ("MaxPool2d(3, 2, 1, ceil_mode)", lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
         lambda: tnn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 3, 10, 9)),
        ("MaxPool2d(3, 1, 1, dilation=2)", lambda: nn.MaxPool2d(3, 1, 1, 2), lambda: tnn.MaxPool2d(3, 1, 1, 2),
         (2, 3, 9, 9)),
        ("AvgPool2d(3, 2, 1)", lambda: nn.AvgPool2d(3, 2, 1), lambda: tnn.AvgPool2d(3, 2, 1), (2, 3, 9, 8)),
        ("AvgPool2d(3, 2, 1, no pad count)", lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
         lambda: tnn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 9, 8)),
        ("AdaptiveAvgPool2d((4, 5))", lambda: nn.AdaptiveAvgPool2d((4, 5)), lambda: tnn.AdaptiveAvgPool2d((4, 5)),
         (2, 3, 9, 11)),
        ("BatchNorm2d train", lambda: nn.BatchNorm2d(4), lambda: tnn.BatchNorm2d(4), (3, 4, 5, 6)),
        ("BatchNorm1d train", lambda: nn.BatchNorm1d(4), lambda: tnn.BatchNorm1d(4), (7, 4)),
        ("BatchNorm2d eval", lambda: nn.BatchNorm2d(4).eval(), lambda: tnn.BatchNorm2d(4).eval(), (3, 4, 5, 6)),
        ("LocalResponseNorm(5)", lambda: nn.LocalResponseNorm(5, alpha=0.5),
         lambda: tnn.LocalResponseNorm(5, alpha=0.5), (2, 7, 4, 4)),
    ]


def _max_diff(a, b):
    if not np.size(a):
        return 0.0
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def measure(backend_name, dtype, seed=0):
    import torch

    rng = np.random.default_rng(seed)
    tdtype = getattr(torch, dtype)
    rows = {}
    with xpnet.use_backend(backend_name) as backend:
        for name, make, torch_make, shape in _pairs(torch):
            layer, ref = make().to(dtype=dtype), torch_make().to(tdtype)
            with torch.no_grad():  # the same random weights (and affine parameters) on both sides
                for (_, p), (_, tp) in zip(layer.named_parameters(), ref.named_parameters()):
                    host = rng.standard_normal(tuple(p.shape)) * 0.5
                    p.copy_(backend.from_host(host.astype(dtype)))
                    tp.copy_(torch.from_numpy(host))
            x_host = rng.standard_normal(shape).astype(dtype) * 2
            x = xpnet.Tensor(backend.from_host(x_host), requires_grad=True)
            xt = torch.tensor(x_host, requires_grad=True)
            y, yt = layer(x), ref(xt)
            g = rng.standard_normal(tuple(yt.shape)).astype(dtype)
            y.backward(backend.from_host(g))
            yt.backward(torch.from_numpy(g))
            diffs = [_max_diff(xpnet.to_numpy(y), yt.detach().numpy()),
                     _max_diff(xpnet.to_numpy(x.grad), xt.grad.numpy())]
            for (_, p), (_, tp) in zip(layer.named_parameters(), ref.named_parameters()):
                diffs.append(_max_diff(xpnet.to_numpy(p.grad), tp.grad.numpy()))
            for key in ("running_mean", "running_var"):
                if key in layer.state_dict():
                    diffs.append(_max_diff(xpnet.to_numpy(layer.state_dict()[key]), ref.state_dict()[key].numpy()))
            label = "Conv2d (grid of 9)" if name.startswith("Conv2d") else name
            rows[label] = max(rows.get(label, 0.0), max(diffs))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "array_api_strict"])
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Using padding='same'")  # torch's note on even kernels
    rows = measure(args.backend, args.dtype, args.seed)
    print(f"xpnet vs PyTorch, {args.backend}, {args.dtype}: largest |difference| over output, gradients, running stats")
    for name, diff in rows.items():
        print(f"  {name:34s} {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
