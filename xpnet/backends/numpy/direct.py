"""Direct NHWC convolutions (csrc/direct.c), float32: small images with a few dozen channels.

On an 8x8 image a 16->32 3x3 convolution is a (N*64, 144) x (144, 32) product: im2col copies nine
times the input to make it, and the BLAS spends its time packing a matrix only 32 columns wide (the
convnet of ``xpnet bench --small``: 0.75 ms forward against PyTorch's 0.26). The compiled loops read
the zero-framed NHWC input in place instead, with a block of output positions times one or two
vectors of output channels in registers (see csrc/direct.c); the weight gradient keeps a block of
input channels times the output-channel vectors, the input gradient of a stride-1 convolution is the
same forward loop over the framed G with the flipped, transposed kernel (as im2col.Stride1InputGrad).

conv.py asks ``direct_library`` first; it answers for float32, one group, and convolutions whose
products are too narrow or too short for the GEMM path to win (``DIRECT_MAX_CHANNELS``,
``DIRECT_MAX_PIXELS``, measured below). Output channels go in vectors of the library's width
(``native.vector_floats``: 16 with AVX-512, else 8), the weights padded with zero columns to whole vectors. Held equal to the generic code by
tests/backends/test_backends_conv.py.
"""

from __future__ import annotations

import numpy as np

from . import native, runtime
from .im2col import group_weights
from .layout import column_sums, nchw, nhwc, sum_partials
from .native import ptr
from .runtime import split_count, workspace

# Where the direct loops beat im2col + OpenBLAS: forward + backward of one 3x3, pad-1 layer at batch
# 64, float32, in us, direct / GEMM path (two sweeps of ``python scripts/conv_paths.py`` on the
# 2-core Sapphire Rapids VM, AVX-512): 16->32 on 8x8 810-909 / 1979-2226, 32->32 on 8x8
# 1297-1586 / 2802-3166, 64->64 on 8x8 4949-5339 / 6372-8048, 16->32 on 16x16 4179-5847 /
# 4136-8085, 32->32 on 16x16 5985-6332 / 6653-13966, 64->64 on 16x16 26041-32800 / 20640-36122
# (noise either way), 128->128 on 8x8 23316-28968 / 17105-21273, 64->64 on 32x32 108534-131821 /
# 76327-76070. So: at most 64 output channels on at most 16x16 outputs; VGG-small's 64-channel
# 14x14 layers (the default ``xpnet train`` model) took its step from 124-140 to 102-113 ms.
DIRECT_MAX_CHANNELS = 64
DIRECT_MAX_PIXELS = 256
# up to 8x8 outputs with any number of input channels, beyond that at most DIRECT_MAX_CHANNELS of them
# too (direct / GEMM / Winograd, same script and machine: 128->64 on 8x8 6171 / 8670 / 6793, 256->64
# on 8x8 11876 / 15444 / 11810, 512->32 on 8x8 11435 / 19083 / 15838, but 128->32 on 16x16 23256 /
# 19788 / 16866)
DIRECT_ANY_INPUTS_MAX_PIXELS = 64


def direct_library(w, stride, dilation, groups, dtype, out_hw):
    """The compiled library when this convolution runs direct (see the module docstring), else None."""
    if dtype != np.float32 or groups != 1:
        return None
    pixels = out_hw[0] * out_hw[1]
    if w.shape[0] > DIRECT_MAX_CHANNELS or pixels > DIRECT_MAX_PIXELS:
        return None
    if pixels > DIRECT_ANY_INPUTS_MAX_PIXELS and w.shape[1] > DIRECT_MAX_CHANNELS:
        return None
    return native.library()


def _padded_columns(lib, m):
    """(rows, Op) float32 C-contiguous: ``m`` with zero columns up to a whole number of vectors."""
    cols = m.shape[-1]
    width = native.vector_floats(lib)
    op = -(-cols // width) * width
    if op == cols:
        return np.ascontiguousarray(m, dtype=np.float32)
    out = np.zeros(m.shape[:-1] + (op,), dtype=np.float32)
    out[..., :cols] = m
    return out


def _framed(lib, src, padding, name):
    """NHWC ``src`` zero-framed into a C-contiguous buffer by xp_frame_nhwc (from any strides: an
    NCHW array is transposed on the way), or src itself when it already is one. ``padding``:
    ((top, bottom), (left, right)); negative values crop."""
    (pt, pb), (pl, pr) = padding
    if pt == pb == pl == pr == 0 and src.flags.c_contiguous:
        return src
    n, h, w, c = src.shape
    buf = workspace(name, (n, h + pt + pb, w + pl + pr, c), np.float32)
    s = [st // src.itemsize for st in src.strides]
    lib.xp_frame_nhwc(ptr(src), *s, n, h, w, c, ptr(buf), buf.shape[1], buf.shape[2], pt, pl, _parts(n, buf.size))
    return buf


def _offsets(kernel, dilation, wp, c):
    kh, kw = kernel
    dh, dw = dilation
    return np.array([(i * dh * wp + j * dw) * c for i in range(kh) for j in range(kw)], dtype=np.int64)


def _parts(items, macs):
    return max(1, min(items, split_count(macs, runtime.CONV_PARALLEL_MIN_MACS)))


def _conv(lib, xpad, wmat, bias, kernel, stride, dilation, out_hw, y):
    """y (N, OH, OW, O) = the convolution of framed NHWC ``xpad`` with ``wmat`` ((kH kW C, O), rows in
    (i, j, c) order) (+ bias)."""
    n, hp, wp, c = xpad.shape
    oh, ow = out_hw
    o = wmat.shape[1]
    off = _offsets(kernel, dilation, wp, c)
    parts = _parts(n * oh * ow, n * oh * ow * wmat.size)
    wpad = _padded_columns(lib, wmat)
    bias = None if bias is None else _padded_columns(lib, bias)
    lib.xp_direct_conv(ptr(xpad), hp, wp, c, ptr(off), off.size, ptr(wpad), o, wpad.shape[1],
                       None if bias is None else ptr(bias), n, oh, ow, stride[0], stride[1], ptr(y), parts)
    return y


def direct_conv_forward(lib, x, w, b, stride, padding, dilation, out_hw):
    """y (N, O, OH, OW) over NHWC memory."""
    n = x.shape[0]
    o, _, kh, kw = w.shape
    xpad = _framed(lib, nhwc(x), padding, "direct_xpad")
    y = np.empty((n, out_hw[0], out_hw[1], o), dtype=np.float32)
    return nchw(_conv(lib, xpad, group_weights(w, 1)[0], b, (kh, kw), stride, dilation, out_hw, y))


def direct_weight_grad(lib, gh, x, w, stride, padding, dilation, out_hw):
    """dW (O, C, kH, kW) from the C-contiguous NHWC output gradient ``gh``; each part of the images
    sums its own partial, added in order."""
    o, c, kh, kw = w.shape
    n = x.shape[0]
    oh, ow = out_hw
    xpad = _framed(lib, nhwc(x), padding, "direct_xpad")
    _, hp, wp, _ = xpad.shape
    off = _offsets((kh, kw), dilation, wp, c)
    parts = _parts(n, n * oh * ow * w.size)  # images: part p's partial is the sum over its images
    dw_parts = np.zeros((parts, kh * kw * c, o), dtype=np.float32)
    lib.xp_direct_conv_dw(ptr(xpad), hp, wp, c, ptr(off), off.size, ptr(gh), o, n, oh, ow, stride[0], stride[1],
                          ptr(dw_parts), parts)
    return np.ascontiguousarray(sum_partials(list(dw_parts)).reshape(kh, kw, c, o).transpose(3, 2, 0, 1))


def direct_input_grad(lib, gh, w, xshape, padding, dilation):
    """dx (N, C, H, W) over NHWC memory of a stride-1 convolution: the framed G correlated with W
    flipped in (i, j) and transposed in (o, c)."""
    o, c, kh, kw = w.shape
    n, _, h, wd = xshape
    (pt, _), (pl, _) = padding
    dh, dw = dilation
    oh, ow = gh.shape[1:3]
    # G framed so that every input pixel sees all taps: (H + D_h (kH - 1), W + D_w (kW - 1)) in all
    top, left = dh * (kh - 1) - pt, dw * (kw - 1) - pl
    gpad = _framed(lib, gh, ((top, h + dh * (kh - 1) - top - oh), (left, wd + dw * (kw - 1) - left - ow)),
                   "direct_gpad")
    wflip = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)).reshape(kh * kw * o, c)
    dxh = np.empty((n, h, wd, c), dtype=np.float32)
    return nchw(_conv(lib, gpad, wflip, None, (kh, kw), (1, 1), dilation, (h, wd), dxh))


def direct_grads(lib, g, x, w, stride, padding, dilation, out_hw, needs):
    """(dx or None, dW, db) of direct_conv_forward; dx None also when it must come another way (a
    strided convolution: col2im, see conv.py)."""
    need_x, need_w, need_b = needs
    gh = np.ascontiguousarray(nhwc(g))
    db = column_sums(gh.reshape(-1, w.shape[0])) if need_b else None
    dw = direct_weight_grad(lib, gh, x, w, stride, padding, dilation, out_hw) if need_w else None
    dx = None
    if need_x and tuple(stride) == (1, 1):
        dx = direct_input_grad(lib, gh, w, x.shape, padding, dilation)
    return dx, dw, db
