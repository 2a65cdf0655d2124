"""CuPy convolution (registered as ``("cupy", CONV2D_FORWARD)`` and ``CONV2D_BACKWARD``).

One CUDA kernel (``conv.cu``) writes the column matrix of a batch chunk as (C*kH*kW, n*OH*OW), so a
single cuBLAS GEMM per group covers the whole chunk; backward reuses it for dW = G X_col^T and folds
dX_col = W^T G back with a gather kernel (each input pixel sums the taps that read it: no atomics,
deterministic). Same contract as the generic ``conv2d_forward_generic``; tested equal to it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import kernels
from ..kernels import ConvForward, ConvGrads, register_kernel
from . import runtime
from .runtime import CudaSource, compute_dtype, load_cupy, on_array_device

_CUDA = CudaSource("conv.cu")

# column-matrix budget per batch chunk on the GPU
CHUNK_BYTES = 256 << 20
IM2COL_ROWS = 32  # column-matrix rows written per thread


class ConvSaved(NamedTuple):
    """What ``conv2d_forward`` keeps for ``conv2d_backward``."""

    x: Any  # the input, contiguous, in the compute dtype
    w: Any  # the weights, likewise
    out_hw: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    dtype: Any  # the caller's dtype, which the gradients are cast back to


def _im2col(x, n0, nb, kernel, stride, padding, dilation, out_hw):
    cupy = load_cupy()
    _, c, h, w = x.shape
    (kh, kw), (oh, ow) = kernel, out_hw
    cols = cupy.empty((c * kh * kw, nb * oh * ow), dtype=x.dtype)
    rows = c * kh * kw
    _CUDA.launch_tiles("im2col_tile", x.dtype, rows, nb * oh * ow, max(IM2COL_ROWS, -(-rows // 65535)), x, cols,
                       int(n0), nb, c, h, w, kh, kw, oh, ow, stride[0], stride[1], padding[0][0], padding[1][0],
                       dilation[0], dilation[1])
    return cols


def _chunk(c, kernel, out_hw, itemsize, n, in_hw=(1, 1)):
    """Images per batch chunk: the column matrix stays near CHUNK_BYTES, and both it and the chunk's
    input gradient under 2^31 elements (the kernels' 32-bit indices)."""
    per_image = c * kernel[0] * kernel[1] * out_hw[0] * out_hw[1]
    cap = runtime.INT_MAX // max(1, per_image, c * in_hw[0] * in_hw[1])
    return max(1, min(n, CHUNK_BYTES // max(1, per_image * itemsize), cap))


def _grouped_matmul(a, b, groups, transpose_b=False):
    """Per group g: a[g] @ b_g (or b_g^T), stacked along rows. ``a`` is (G, M, K) (or (M_total, K)
    for transpose_b), ``b`` a 2-D (G*K, N) (or (G*N, K)) matrix; one plain GEMM when G == 1."""
    cupy = load_cupy()
    if transpose_b:  # a (G*M, W), b (G*K, W): out (G*M, K) = per group a_g @ b_g^T
        if groups == 1:
            return cupy.matmul(a, b.T)
        m, k = a.shape[0] // groups, b.shape[0] // groups
        out = cupy.matmul(a.reshape(groups, m, a.shape[1]), b.reshape(groups, k, b.shape[1]).transpose(0, 2, 1))
        return out.reshape(groups * m, k)
    if groups == 1:
        return cupy.matmul(a[0], b)
    g, m, k = a.shape
    return cupy.matmul(a, b.reshape(g, k, b.shape[1])).reshape(g * m, b.shape[1])


@register_kernel("cupy", kernels.CONV2D_FORWARD)
@on_array_device
def conv2d_forward(x, w, b, stride, padding, dilation, groups, out_hw):
    """y (N, O, OH, OW): per batch chunk, im2col into (C*kH*kW, n*OH*OW), then one GEMM per group."""
    cupy = load_cupy()
    dtype = x.dtype
    ct = compute_dtype(dtype)
    xc = cupy.ascontiguousarray(x, dtype=ct)
    wc = cupy.ascontiguousarray(w, dtype=ct)
    n, c, h, wd = xc.shape
    o, cg, kh, kw = wc.shape
    og = o // groups
    oh, ow = out_hw
    wmat = wc.reshape(groups, og, cg * kh * kw)
    y = cupy.empty((n, o, oh, ow), dtype=ct)
    bias = None if b is None else b.astype(ct, copy=False).reshape(1, o, 1, 1)
    nb = _chunk(c, (kh, kw), (oh, ow), xc.itemsize, n, (h, wd))
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        cols = _im2col(xc, n0, n1 - n0, (kh, kw), stride, padding, dilation, (oh, ow))
        out = _grouped_matmul(wmat, cols, groups)  # (O, n*L)
        view = out.reshape(o, n1 - n0, oh, ow).transpose(1, 0, 2, 3)
        if bias is None:
            y[n0:n1] = view
        else:
            cupy.add(view, bias, out=y[n0:n1])  # the layout change and the bias in one pass
    saved = ConvSaved(xc, wc, (oh, ow), stride, padding, dilation, groups, dtype)
    return ConvForward(y if y.dtype == dtype else y.astype(dtype), saved)


@register_kernel("cupy", kernels.CONV2D_BACKWARD)
@on_array_device
def conv2d_backward(g, saved, needs):
    """Per batch chunk, with G as (O, n*L) and X_col the chunk's column matrix:
        dL/dW = G X_col^T (per group)    dL/db = G 1    dX_col = W^T G, folded back by col2im."""
    cupy = load_cupy()
    xc, wc, (oh, ow), stride, padding, dilation, groups = (saved.x, saved.w, saved.out_hw, saved.stride,
                                                           saved.padding, saved.dilation, saved.groups)
    need_x, need_w, need_b = needs
    ct = xc.dtype
    gc = cupy.ascontiguousarray(g, dtype=ct)
    n, c, h, wd = xc.shape
    o, cg, kh, kw = wc.shape
    og = o // groups
    ck = cg * kh * kw
    db = dw = None
    dx = cupy.empty((n, c, h, wd), dtype=ct) if need_x else None
    wmat = wc.reshape(groups, og, ck)
    wmat_t = wmat.transpose(0, 2, 1)  # (G, CgK, Og)
    nb = _chunk(c, (kh, kw), (oh, ow), xc.itemsize, n, (h, wd))
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        cols_width = (n1 - n0) * oh * ow
        # G of the chunk as (O, n*L), matching the column order (n, oh, ow)
        gt = cupy.ascontiguousarray(gc[n0:n1].reshape(n1 - n0, o, oh * ow).transpose(1, 0, 2)).reshape(
            o, cols_width)
        if need_b:
            part = gt.sum(axis=1)  # contiguous rows: a faster reduction than over (N, H, W) of G
            db = part if db is None else db + part
        if need_w:
            cols = _im2col(xc, n0, n1 - n0, (kh, kw), stride, padding, dilation, (oh, ow))
            part = _grouped_matmul(gt, cols, groups, transpose_b=True)  # (O, CgK)
            dw = part if dw is None else dw + part
            del cols
        if need_x:
            dcols = _grouped_matmul(wmat_t, gt, groups)  # (C*kH*kW, n*L)
            _CUDA.launch("col2im_chunk", ct, (n1 - n0) * c * h * wd, dcols, dx, int(n0), n1 - n0, c, h, wd, kh, kw,
                         oh, ow, stride[0], stride[1], padding[0][0], padding[1][0], dilation[0], dilation[1])
    if need_w:
        dw = dw.reshape(o, cg, kh, kw)
    dtype = saved.dtype
    cast = (lambda a: a if a is None or a.dtype == dtype else a.astype(dtype))
    return ConvGrads(cast(dx), cast(dw), cast(db))
