"""Convolution fast paths of the NumPy backend (``conv2d_forward``, ``conv2d_backward``).

Each has the contract of the generic code in ``xpnet/nn/functional/conv.py`` and is tested equal to
it (tests/backends/test_backends_conv.py). Which way a convolution runs:

* few channels, stride 1, one group: on channel-major planes, compiled for float32 (planar.py);
* float32, one group, at most 64 output channels on images of at most 16x16 outputs: the compiled
  direct NHWC loops (direct.py; a strided one's input gradient by col2im);
* 3x3, stride 1, both channel counts and the output large enough: Winograd F(2x2, 3x3) (winograd.py);
* everything else: NHWC im2col + one GEMM per cache-sized batch chunk (im2col.py), the batch split
  over the worker threads (runtime.py). The outputs made here live in NHWC memory (an NCHW view of
  an NHWC buffer); elementwise ops keep that layout, so the next layer gets its channels-last view
  for free and its GEMM output is the next NHWC activation.

The backward uses the same way as the forward: dW = sum over images of X_col^T G (each worker sums
its images, then the partial sums add), db = column sums of G, dX as a stride-1 convolution or by
col2im.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import kernels
from ..kernels import ConvForward, ConvGrads, register_kernel
from .direct import direct_conv_forward, direct_grads, direct_library
from .im2col import (Col2ImInputGrad, Stride1InputGrad, chunk, conv_gemm, framed_part, group_weights, im2col,
                     patches, shared_padded)
from .layout import column_sums, nchw, nhwc
from .planar import on_planes, planar_conv_backward, planar_conv_forward
from .runtime import parallel, workspace
from .winograd import Winograd, winograd_library


class ConvSaved(NamedTuple):
    """What conv2d_forward keeps for conv2d_backward."""

    x: Any
    w: Any
    out_hw: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int


@register_kernel("numpy", kernels.CONV2D_FORWARD)
def conv2d_forward(x, w, b, stride, padding, dilation, groups, out_hw):
    """Convolution forward: y (N, O, OH, OW) over NHWC memory (channel-major planes for few channels)
    and the saved state; ``out_hw`` = (OH, OW) as the caller computed it. The batch is split over the
    worker threads; each frames, im2cols and multiplies its own images."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    oh, ow = out_hw = tuple(out_hw)
    saved = ConvSaved(x, w, out_hw, stride, padding, dilation, groups)
    if on_planes(w, stride, groups):
        return ConvForward(planar_conv_forward(x, w, b, padding, dilation, out_hw), saved)
    lib = direct_library(w, stride, dilation, groups, x.dtype, out_hw)
    if lib is not None:
        return ConvForward(direct_conv_forward(lib, x, w, b, stride, padding, dilation, out_hw), saved)
    lib = winograd_library(w, stride, dilation, groups, x.dtype, out_hw)
    if lib is not None:
        wino, y = Winograd(lib, w, b, out_hw), np.empty((n, oh, ow, o), dtype=x.dtype)
        parallel(lambda n0, n1: wino.images(nhwc(x), padding[0][0], padding[1][0], y, n0, n1), n, blas=True,
                 elements=n * oh * ow * (9 * c + o))
        return ConvForward(nchw(y), saved)
    xh = nhwc(x)
    shared = shared_padded(xh.shape, padding, x.dtype, "conv_xpad")
    wmats = group_weights(w, groups)
    y = np.empty((n, oh, ow, o), dtype=x.dtype)
    rows = y.reshape(n * oh * ow, o)

    def work(n0, n1):
        xpad = framed_part(xh, padding, n0, n1, shared)
        part_rows = rows[n0 * oh * ow:n1 * oh * ow]
        for gi in range(groups):
            view = patches(xpad[..., gi * cg:(gi + 1) * cg], (kh, kw), stride, dilation, out_hw)
            if groups == 1:
                conv_gemm(view, wmats[0], part_rows, (kh, kw), cg, "conv_cols", bias=b)
            else:
                out = workspace("conv_group_out", ((n1 - n0) * oh * ow, og), x.dtype)
                conv_gemm(view, wmats[gi], out, (kh, kw), cg, "conv_cols",
                          bias=None if b is None else b[gi * og:(gi + 1) * og])
                part_rows[:, gi * og:(gi + 1) * og] = out

    parallel(work, n, blas=True, elements=n * oh * ow * (kh * kw * cg + o))
    return ConvForward(nchw(y), saved)


@register_kernel("numpy", kernels.CONV2D_BACKWARD)
def conv2d_backward(g, saved: ConvSaved, needs):
    """The backward of conv2d_forward: on channel-major planes where the forward ran there (see
    planar.py), else in NHWC (see nhwc_conv_backward)."""
    if on_planes(saved.w, saved.stride, saved.groups):
        dx, dw, db = planar_conv_backward(g, saved.x, saved.w, saved.padding, saved.dilation, saved.out_hw, needs)
        if needs[1] and not np.isfinite(dw).all():
            # a non-finite input value met only by a wide row's extra column (0 * inf): the exact sums
            dw = nhwc_conv_backward(g, saved, (False, True, False)).dw
        return ConvGrads(dx, dw, db)
    lib = direct_library(saved.w, saved.stride, saved.dilation, saved.groups, g.dtype, saved.out_hw)
    if lib is not None and saved.x.dtype == g.dtype:
        dx, dw, db = direct_grads(lib, g, saved.x, saved.w, saved.stride, saved.padding, saved.dilation,
                                  saved.out_hw, needs)
        if needs[0] and dx is None:
            dx = nhwc_conv_backward(g, saved, (True, False, False)).dx
        return ConvGrads(dx, dw, db)
    return nhwc_conv_backward(g, saved, needs)


def nhwc_conv_backward(g, saved: ConvSaved, needs):
    """dW = sum over images of X_col^T G (each worker sums its images, then the partial sums add),
    db = column sums of G, dX as a stride-1 convolution or by col2im (see im2col.py)."""
    x, w, (oh, ow), stride, padding, dilation, groups = saved
    need_x, need_w, need_b = needs
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    kc = kh * kw * cg
    gh = nhwc(g)
    if not gh.flags.c_contiguous:
        gh = np.ascontiguousarray(gh)  # free when g came from an NHWC layer
    grows = gh.reshape(n * oh * ow, o)
    xh = nhwc(x)
    shared_x = shared_padded(xh.shape, padding, x.dtype, "conv_xpad") if need_w else None
    input_grad = None
    if need_x:
        input_grad = (Stride1InputGrad(gh, w, (n, c, h, wd), padding, dilation, groups) if stride == (1, 1)
                      else Col2ImInputGrad(grows, w, (n, c, h, wd), (oh, ow), stride, padding, dilation, groups))
    lib = winograd_library(w, stride, dilation, groups, g.dtype, (oh, ow)) if need_w else None
    wino = None if lib is None else Winograd(lib, w, None, (oh, ow))

    def work(n0, n1):
        db_part = column_sums(grows[n0 * oh * ow:n1 * oh * ow]) if need_b else None
        dw_parts = None
        if wino is not None:
            dw_parts = [wino.weight_grad_part(xh, gh, padding[0][0], padding[1][0], n0, n1)]
        elif need_w:
            xpad = framed_part(xh, padding, n0, n1, shared_x)
            nb = chunk(n1 - n0, oh * ow, kc, x.itemsize)
            dw_parts = []
            for gi in range(groups):
                view = patches(xpad[..., gi * cg:(gi + 1) * cg], (kh, kw), stride, dilation, (oh, ow))
                gsel = grows[:, gi * og:(gi + 1) * og]
                acc = np.empty((kc, og), dtype=w.dtype)
                part = workspace("conv_dw_part", (kc, og), w.dtype)
                for a in range(0, n1 - n0, nb):
                    z = min(n1 - n0, a + nb)
                    cols = im2col(view, a, z, "conv_cols")
                    rows = gsel[(n0 + a) * oh * ow:(n0 + z) * oh * ow]
                    np.matmul(cols.T, rows, out=acc if a == 0 else part)
                    if a:
                        np.add(acc, part, out=acc)
                dw_parts.append(acc)
        if input_grad is not None:
            input_grad(n0, n1)
        return db_part, dw_parts

    results = parallel(work, n, blas=True, elements=n * oh * ow * (kc + o))
    db = dw = None
    if need_b:
        db = results[0][0]
        for r in results[1:]:
            db = db + r[0]
    if need_w:
        dw = np.empty_like(w)
        for gi in range(groups):
            acc = results[0][1][gi]
            for r in results[1:]:
                np.add(acc, r[1][gi], out=acc)
            if wino is not None:
                acc = wino.weight_grad(acc)
            dw[gi * og:(gi + 1) * og] = acc.reshape(kh, kw, cg, og).transpose(3, 2, 0, 1)
    dx = input_grad.result() if input_grad is not None else None
    return ConvGrads(dx, dw, db)
