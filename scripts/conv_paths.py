"""Which way a NumPy-backend convolution should run: one layer's forward + backward through the compiled
direct NHWC loops (numpy/direct.py), through im2col + GEMM (numpy/im2col.py) and, for 3x3 kernels,
through Winograd F(2x2, 3x3) (numpy/winograd.py), next to PyTorch.

    python scripts/conv_paths.py [N,C,HW,O[,K,PAD] ...]

Each argument is a layer (batch, input channels, image side, output channels, kernel 3, padding 1 by
default); with none, the sweep that set direct.DIRECT_MAX_CHANNELS and DIRECT_MAX_PIXELS. Float32,
the input and gradient channels-last as the backend's own layers make them. Printed: microseconds of
each (the best of 5 rounds; Winograd only for 3x3) and gemm / direct (above 1: the direct loops are
faster).
"""

from __future__ import annotations

import sys
import time

import numpy as np

SWEEP = ["64,16,8,32", "64,32,8,32", "64,64,8,64", "64,128,8,128", "64,16,16,32", "64,32,16,32", "64,64,16,64",
         "64,32,32,32", "64,64,32,64", "16,32,8,32", "64,128,8,256", "64,256,8,256", "64,128,16,128"]


def _best(fn, reps):
    fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps * 1e6)
    return best


def layer(n, c, hw, o, k=3, pad=1):
    import torch

    from xpnet.backends.numpy import conv, direct, winograd

    rng = np.random.default_rng(0)
    x = np.ascontiguousarray(rng.standard_normal((n, hw, hw, c), dtype=np.float32)).transpose(0, 3, 1, 2)
    w = (rng.standard_normal((o, c, k, k)) * 0.1).astype(np.float32)
    b = np.zeros(o, np.float32)
    oh = hw + 2 * pad - k + 1
    g = rng.standard_normal((n, oh, oh, o), dtype=np.float32).transpose(0, 3, 1, 2)
    args = ((1, 1), ((pad, pad), (pad, pad)), (1, 1), 1, (oh, oh))

    def ours():
        fwd = conv.conv2d_forward(x, w, b, *args)
        conv.conv2d_backward(g, fwd.saved, (True, True, True))

    reps = max(3, int(3e8 / (n * oh * oh * o * c * k * k * 3)))
    saved = (direct.DIRECT_MAX_CHANNELS, direct.DIRECT_MAX_PIXELS, winograd.WINOGRAD_MIN_CHANNELS,
             winograd.WINOGRAD_MIN_PIXELS)
    try:
        direct.DIRECT_MAX_CHANNELS, direct.DIRECT_MAX_PIXELS = 1 << 30, 1 << 30
        t_direct = _best(ours, reps)
        direct.DIRECT_MAX_CHANNELS = 0
        winograd.WINOGRAD_MIN_CHANNELS = 1 << 30
        t_gemm = _best(ours, reps)
        winograd.WINOGRAD_MIN_CHANNELS, winograd.WINOGRAD_MIN_PIXELS = 1, 1
        t_wino = _best(ours, reps) if k == 3 else float("nan")
    finally:
        (direct.DIRECT_MAX_CHANNELS, direct.DIRECT_MAX_PIXELS, winograd.WINOGRAD_MIN_CHANNELS,
         winograd.WINOGRAD_MIN_PIXELS) = saved
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    wt, bt = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    gt = torch.tensor(np.ascontiguousarray(g))

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        torch.nn.functional.conv2d(xt, wt, bt, 1, pad).backward(gt)

    t_torch = _best(theirs, reps)
    print(f"batch {n:3d} {c:4d}->{o:4d} on {hw:3d}x{hw:<3d} k{k}: direct {t_direct:9.1f}  gemm {t_gemm:9.1f}  "
          f"winograd {t_wino:9.1f}  torch {t_torch:9.1f} us  gemm/direct {t_gemm / t_direct:.2f}", flush=True)


def main(argv=None):
    from xpnet.backends.numpy import native

    if native.library() is None:
        sys.exit(f"conv_paths: no compiled kernels ({native.status()})")
    for spec in (argv if argv is not None else sys.argv[1:]) or SWEEP:
        layer(*(int(v) for v in spec.split(",")))


if __name__ == "__main__":
    main()
