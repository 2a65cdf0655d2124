#!/usr/bin/env python
"""Per-layer GPU timing of the CuPy convolution against cuDNN (through PyTorch), split into its parts:
``python scripts/gpu_conv_bench.py`` on a CUDA machine (float32, TF32 off; ``--tf32`` to allow it).

For each layer of AlexNet (227 px) and VGG-16 (32 px) at batch 128: the device time (CUDA events,
median of ``--repeat``) of xpnet's whole forward and backward, of each part (im2col, the forward GEMM,
the output copy with the bias, G's transposing copy, the dW GEMM, a split-K dW, the dX GEMM,
col2im), and of PyTorch's forward and backward on the same shapes.
"""

from __future__ import annotations

import argparse
import statistics
import sys

LAYERS = {  # name: (n, c, h, w, o, k, stride, pad)
    "alex1": (128, 3, 227, 227, 96, 11, 4, 0),
    "alex2": (128, 96, 27, 27, 256, 5, 1, 2),
    "alex3": (128, 256, 13, 13, 384, 3, 1, 1),
    "alex4": (128, 384, 13, 13, 384, 3, 1, 1),
    "vgg64": (128, 64, 32, 32, 64, 3, 1, 1),
    "vgg128": (128, 128, 16, 16, 128, 3, 1, 1),
    "vgg256": (128, 256, 8, 8, 256, 3, 1, 1),
    "vgg512a": (128, 512, 4, 4, 512, 3, 1, 1),
    "vgg512b": (128, 512, 2, 2, 512, 3, 1, 1),
}


def _time(fn, repeat, sync):
    import cupy

    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def _torch_time(fn, repeat):
    import torch

    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def layer(name, spec, repeat, out):
    import cupy
    import torch

    from xpnet.backends.cupy import conv as ck
    from xpnet.nn.functional.conv import conv2d_output_size

    n, c, h, w, o, k, s, p = spec
    pad = ((p, p), (p, p))
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=cupy.float32)
    wt = rng.standard_normal((o, c, k, k), dtype=cupy.float32) * 0.05
    b = rng.standard_normal((o,), dtype=cupy.float32)
    oh, ow = conv2d_output_size((h, w), (k, k), (s, s), pad, (1, 1))
    L = oh * ow
    nb = ck._chunk(c, (k, k), (oh, ow), 4, n, (h, w))
    g = rng.standard_normal((n, o, oh, ow), dtype=cupy.float32)
    sync = cupy.cuda.Device().synchronize
    t = {}
    t["fwd"] = _time(lambda: ck.conv2d_forward(x, wt, b, (s, s), pad, (1, 1), 1, (oh, ow)), repeat, sync)
    _, saved = ck.conv2d_forward(x, wt, b, (s, s), pad, (1, 1), 1, (oh, ow))
    t["bwd"] = _time(lambda: ck.conv2d_backward(g, saved, (True, True, True)), repeat, sync)
    cols = ck._im2col(x, 0, nb, (k, k), (s, s), pad, (1, 1), (oh, ow))
    t["im2col"] = _time(lambda: ck._im2col(x, 0, nb, (k, k), (s, s), pad, (1, 1), (oh, ow)), repeat, sync)
    wmat = wt.reshape(o, -1)
    t["gemm_f"] = _time(lambda: cupy.matmul(wmat, cols), repeat, sync)
    res = cupy.matmul(wmat, cols)
    y = cupy.empty((n, o, oh, ow), dtype=cupy.float32)
    t["out_copy"] = _time(lambda: cupy.add(res.reshape(o, nb, oh, ow).transpose(1, 0, 2, 3), b.reshape(1, o, 1, 1),
                                           out=y[:nb]), repeat, sync)
    gt = cupy.ascontiguousarray(g[:nb].reshape(nb, o, L).transpose(1, 0, 2)).reshape(o, nb * L)
    t["g_copy"] = _time(lambda: cupy.ascontiguousarray(g[:nb].reshape(nb, o, L).transpose(1, 0, 2)), repeat, sync)
    t["gemm_dw"] = _time(lambda: cupy.matmul(gt, cols.T), repeat, sync)
    splits = 8 if nb % 8 == 0 else 1
    if splits > 1:
        ks = nb * L // splits
        g3 = cupy.ascontiguousarray(gt.reshape(o, splits, ks).transpose(1, 0, 2))
        c3 = cupy.ascontiguousarray(cols.reshape(-1, splits, ks).transpose(1, 0, 2))
        t["dw_split8"] = _time(lambda: cupy.matmul(g3, c3.transpose(0, 2, 1)).sum(axis=0), repeat, sync)
        t["dw_split8_cp"] = _time(lambda: cupy.ascontiguousarray(cols.reshape(-1, splits, ks).transpose(1, 0, 2)),
                                  repeat, sync)
    t["gemm_dx"] = _time(lambda: cupy.matmul(wmat.T, gt), repeat, sync)
    dcols = cupy.matmul(wmat.T, gt)
    dx = cupy.empty_like(x)
    t["col2im"] = _time(lambda: ck._CUDA.launch("col2im_chunk", dcols.dtype, nb * c * h * w, dcols, dx, 0, nb, c, h,
                                                w, k, k, oh, ow, s, s, p, p, 1, 1), repeat, sync)
    tx = torch.as_tensor(x.get(), device="cuda").requires_grad_(True)
    tw = torch.as_tensor(wt.get(), device="cuda").requires_grad_(True)
    tb = torch.as_tensor(b.get(), device="cuda").requires_grad_(True)
    tg = torch.as_tensor(g.get(), device="cuda")
    t["torch_fwd"] = _torch_time(lambda: torch.nn.functional.conv2d(tx, tw, tb, s, p), repeat)
    ty = torch.nn.functional.conv2d(tx, tw, tb, s, p)
    t["torch_bwd"] = _torch_time(lambda: torch.autograd.grad(ty, (tx, tw, tb), tg, retain_graph=True), repeat)
    gflop = 2 * n * o * L * c * k * k / 1e9
    chunks = -(-n // nb)
    print(f"{name:8s} chunk {nb:3d}x{chunks} GFLOP/pass {gflop:6.1f}  " +
          "  ".join(f"{key} {val:.3f}" for key, val in t.items()), file=out, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", default=",".join(LAYERS))
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--tf32", action="store_true")
    args = p.parse_args(argv)
    import torch

    import xpnet

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    xpnet.cuda.set_tf32(args.tf32)
    print("times in ms (median of CUDA-event timings); parts are for one chunk of the batch")
    for name in args.layers.split(","):
        layer(name, LAYERS[name], args.repeat, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
