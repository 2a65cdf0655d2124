"""Per-layer forward+backward time of xpnet's conv, pooling and batch norm against PyTorch (CPU).

    python scripts/conv_bench.py [--reps 7] [--batch 64]

The layers of a VGG-style CIFAR block (batch 64, 3x32x32 -> conv64-conv64-pool-conv128-conv128-pool-
conv256-conv256-pool), plus batch norm at each width, float32, PyTorch with its default threads.
Each repetition times xpnet and then PyTorch on the same input, one right after the other, so
machine noise hits both; the minimum over repetitions is reported, with the ratio
torch_time / xpnet_time (above 1: xpnet is faster). Inputs are channels-last in memory for xpnet,
as its own layers produce them, and NCHW-contiguous for PyTorch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

LAYERS = [("conv", 3, 64, 32), ("conv", 64, 64, 32), ("pool", 64, 64, 32), ("conv", 64, 128, 16),
          ("conv", 128, 128, 16), ("pool", 128, 128, 16), ("conv", 128, 256, 8), ("conv", 256, 256, 8),
          ("pool", 256, 256, 8), ("bn", 64, 64, 32), ("bn", 128, 128, 16), ("bn", 256, 256, 8)]


def _case(kind, c, o, h, batch, rng):
    import torch
    import torch.nn.functional as TF

    import xpnet
    import xpnet.nn.functional as F

    host = rng.standard_normal((batch, c, h, h)).astype(np.float32)
    channels_last = np.ascontiguousarray(host.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    need_x = c != 3  # the first layer's input needs no gradient, as in training
    x = xpnet.Tensor(channels_last, requires_grad=need_x)
    xt = torch.tensor(host, requires_grad=need_x)
    if kind == "conv":
        w_host = (rng.standard_normal((o, c, 3, 3)) * 0.05).astype(np.float32)
        w, b = xpnet.Tensor(w_host, requires_grad=True), xpnet.Tensor(np.zeros(o, np.float32), requires_grad=True)
        wt, bt = torch.tensor(w_host, requires_grad=True), torch.zeros(o, requires_grad=True)
        return (lambda: F.conv2d(x, w, b, padding=1)), (lambda: TF.conv2d(xt, wt, bt, padding=1))
    if kind == "pool":
        return (lambda: F.max_pool2d(x, 2)), (lambda: TF.max_pool2d(xt, 2))
    gamma, beta = (xpnet.Tensor(np.full(c, v, np.float32), requires_grad=True) for v in (1.0, 0.0))
    rm, rv = xpnet.Tensor(np.zeros(c, np.float32)), xpnet.Tensor(np.ones(c, np.float32))
    gt, btt = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    rmt, rvt = torch.zeros(c), torch.ones(c)
    return ((lambda: F.batch_norm(x, rm, rv, gamma, beta, training=True)),
            (lambda: TF.batch_norm(xt, rmt, rvt, gt, btt, training=True)))


def run(reps=7, batch=64, stream=print):
    import torch

    rng = np.random.default_rng(0)
    totals = [0.0, 0.0]
    rows = []
    for kind, c, o, h in LAYERS:
        fx, ft = _case(kind, c, o, h, batch, rng)
        y = fx()
        g = np.ascontiguousarray(np.ones(y.shape, np.float32).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        gt = torch.ones(y.shape)
        best = [float("inf")] * 4
        for rep in range(reps + 1):
            t0 = time.perf_counter()
            y = fx()
            t1 = time.perf_counter()
            y.backward(g)
            t2 = time.perf_counter()
            yt = ft()
            t3 = time.perf_counter()
            yt.backward(gt)
            t4 = time.perf_counter()
            if rep:  # the first round warms up both
                best = [min(a, b) for a, b in zip(best, (t1 - t0, t2 - t0, t3 - t2, t4 - t2))]
        totals[0] += best[1]
        totals[1] += best[3]
        rows.append((kind, c, o, h, best))
        stream(f"{kind:4s} {c:3d}->{o:3d} @{h:2d}x{h:<2d}  xpnet fwd {best[0] * 1e3:6.1f} "
               f"fwd+bwd {best[1] * 1e3:6.1f} ms  | torch fwd {best[2] * 1e3:6.1f} "
               f"fwd+bwd {best[3] * 1e3:6.1f} ms  | ratio {best[3] / best[1]:.2f}")
    stream(f"sum of fwd+bwd: xpnet {totals[0] * 1e3:.0f} ms, torch {totals[1] * 1e3:.0f} ms, "
           f"ratio {totals[1] / totals[0]:.2f}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    import torch

    import xpnet
    from xpnet.backends.numpy import runtime

    print(f"xpnet {xpnet.__version__} (numpy kernels, {runtime.NUM_WORKERS} "
          f"workers) vs PyTorch {torch.__version__} ({torch.get_num_threads()} threads), batch {args.batch}")
    run(args.reps, args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
