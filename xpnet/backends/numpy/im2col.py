"""The im2col + GEMM machinery of the NHWC convolutions, and their input gradients (conv.py runs them;
planar.py borrows the column-matrix chunking and col2im).

* im2col by ``as_strided`` into a reused, cache-sized workspace, a batch chunk at a time, followed
  by one sgemm per chunk; the column matrix is never saved (backward rebuilds it), which keeps peak
  memory near the activations themselves. In NHWC a receptive-field row of the column matrix is one
  contiguous run of kW*C values; few-channel inputs build the transposed matrix instead.
* The input gradient of a stride-1 convolution is itself a convolution (of the zero-framed output
  gradient with the flipped, transposed kernel): again im2col + sgemm, no scatter (Stride1InputGrad,
  through Winograd where that applies). Strided convolutions fold the column gradient back by one
  slice-add per kernel offset (Col2ImInputGrad).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .layout import frame_into, nchw
from .runtime import workspace
from .winograd import Winograd, winograd_library

# A batch chunk's column matrix is kept near this size so that im2col's output is still in cache
# when the GEMM reads it (measured on a 2-core EPYC: 2-8 MiB all within a few percent).
CHUNK_BYTES = 4 << 20


def patches(xpad, kernel, stride, dilation, out_hw):
    """Read-only (N, OH, OW, kH, kW, C) view of NHWC ``xpad``: every receptive field, no copy."""
    sn, sh, sw, sc = xpad.strides
    return as_strided(xpad, (xpad.shape[0], out_hw[0], out_hw[1], kernel[0], kernel[1], xpad.shape[3]),
                      (sn, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1], sc),
                      writeable=False)


def chunk(n, rows_per_image, row_elems, itemsize):
    """Images per chunk: the chunk's column matrix about CHUNK_BYTES."""
    return max(1, min(n, CHUNK_BYTES // max(1, rows_per_image * row_elems * itemsize)))


def im2col(patch_view, n0, n1, name):
    """The column matrix of images [n0, n1) as a (rows, kH*kW*C) matrix, copied into a workspace.

    Stored rows-major when a receptive-field row (kW*C values, contiguous in NHWC) is the longer
    run; for few channels (a 5x5 kernel over 1 channel: runs of 5) it is stored as the transpose
    (kH*kW*C, rows), where each copied run is an output row (OW values) instead, and returned as a
    transposed view: BLAS takes either form without a copy."""
    _, oh, ow, kh, kw, c = patch_view.shape
    if kw * c >= ow or ow < 8:
        cols = workspace(name, (n1 - n0, oh, ow, kh, kw, c), patch_view.dtype)
        np.copyto(cols, patch_view[n0:n1])
        return cols.reshape((n1 - n0) * oh * ow, kh * kw * c)
    cols_t = workspace(name, (kh, kw, c, n1 - n0, oh, ow), patch_view.dtype)
    np.copyto(cols_t, patch_view[n0:n1].transpose(3, 4, 5, 0, 1, 2))
    return cols_t.reshape(kh * kw * c, (n1 - n0) * oh * ow).T


def conv_gemm(patch_view, wmat, out_rows, kernel, c, name, bias=None):
    """out_rows[(n, p, q), :] = patches[n, p, q].ravel() @ wmat (+ bias), a cache-sized batch chunk at a
    time; the bias is added to each chunk while it is still in cache."""
    n, oh, ow = patch_view.shape[:3]
    kc = kernel[0] * kernel[1] * c
    nb = chunk(n, oh * ow, kc, patch_view.itemsize)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        out = out_rows[n0 * oh * ow:n1 * oh * ow]
        np.matmul(im2col(patch_view, n0, n1, name), wmat, out=out)
        if bias is not None:
            np.add(out, bias, out=out)


def framed_part(src, padding, n0, n1, shared):
    """Images [n0, n1) of NHWC ``src`` with their zero frame (written into the shared buffer)."""
    (pt, pb), (pl, pr) = padding
    if pt == pb == pl == pr == 0:
        return src[n0:n1]
    return frame_into(shared[n0:n1], src[n0:n1], pt, pl)


def shared_padded(shape_nhwc, padding, dtype, name):
    (pt, pb), (pl, pr) = padding
    if pt == pb == pl == pr == 0:
        return None
    n, h, w, c = shape_nhwc
    return workspace(name, (n, h + pt + pb, w + pl + pr, c), dtype)


def group_weights(w, groups):
    """W_mat per group, rows in (i, j, c) order to match the patch layout: (kH*kW*C/G, O/G)."""
    o, cg, kh, kw = w.shape
    og = o // groups
    return [np.ascontiguousarray(w[g * og:(g + 1) * og].transpose(2, 3, 1, 0)).reshape(kh * kw * cg, og)
            for g in range(groups)]


class Stride1InputGrad:
    """dL/dx of a stride-1 convolution as a convolution: frame G (NHWC) with zeros so that every input
    pixel sees all kernel taps, then correlate with W flipped in (i, j) and transposed in (o, c):
        dx[n, h, w, c] = sum_{i', j', o} G_pad[n, h + i'D_h, w + j'D_w, o] W[o, c, kH-1-i', kW-1-j']
    Called per batch part from the backward workers."""

    def __init__(self, gh, w, xshape, padding, dilation, groups):
        n, c, h, wd = xshape
        o, cg, kh, kw = w.shape
        og = o // groups
        (pt, _), (pl, _) = padding
        self.gh, self.geometry = gh, (h, wd, c, cg, og, kh, kw, groups)
        self.dilation = dilation
        self.offset = (dilation[0] * (kh - 1) - pt, dilation[1] * (kw - 1) - pl)
        self.gpad = workspace("conv_gpad", (n, h + dilation[0] * (kh - 1), wd + dilation[1] * (kw - 1), o), gh.dtype)
        # rows in (i', j', o) order: the flipped kernel, output channels as the reduced dimension
        self.wflip = [np.ascontiguousarray(w[g * og:(g + 1) * og, :, ::-1, ::-1].transpose(2, 3, 0, 1))
                      .reshape(kh * kw * og, cg) for g in range(groups)]
        self.dxh = np.empty((n, h, wd, c), dtype=gh.dtype)
        lib = winograd_library(w, (1, 1), dilation, groups, gh.dtype, (h, wd))
        self.wino = None if lib is None else Winograd(
            lib, np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)), None, (h, wd))

    def __call__(self, n0, n1):
        h, wd, c, cg, og, kh, kw, groups = self.geometry
        if self.wino is not None:
            self.wino.images(self.gh, *self.offset, self.dxh, n0, n1)
            return
        gpad = frame_into(self.gpad[n0:n1], self.gh[n0:n1], *self.offset)
        rows = self.dxh[n0:n1].reshape(-1, c)
        for gi in range(groups):
            view = patches(gpad[..., gi * og:(gi + 1) * og], (kh, kw), (1, 1), self.dilation, (h, wd))
            if groups == 1:
                conv_gemm(view, self.wflip[0], rows, (kh, kw), og, "conv_cols")
            else:
                out = workspace("conv_group_dx", ((n1 - n0) * h * wd, cg), self.gh.dtype)
                conv_gemm(view, self.wflip[gi], out, (kh, kw), og, "conv_cols")
                rows[:, gi * cg:(gi + 1) * cg] = out

    def result(self):
        return nchw(self.dxh)


class Col2ImInputGrad:
    """dL/dx for strided convolutions: dX_col = G W_mat^T per chunk, then one slice-add per kernel offset
    into the zero-framed input gradient (col2im). Called per batch part from the backward workers."""

    def __init__(self, grows, w, xshape, out_hw, stride, padding, dilation, groups):
        n, c, h, wd = xshape
        (pt, pb), (pl, pr) = padding
        self.grows, self.w, self.xshape, self.out_hw = grows, w, xshape, out_hw
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.wmats = group_weights(w, groups)
        self.dxpad = np.zeros((n, h + pt + pb, wd + pl + pr, c), dtype=grows.dtype)

    def __call__(self, n0, n1):
        o, cg, kh, kw = self.w.shape
        og = o // self.groups
        oh, ow = self.out_hw
        (sh, sw), (dh, dwl) = self.stride, self.dilation
        kc = kh * kw * cg
        nb = chunk(n1 - n0, oh * ow, kc, self.grows.itemsize)
        for gi in range(self.groups):
            gsel = self.grows[:, gi * og:(gi + 1) * og]
            for a in range(n0, n1, nb):
                z = min(n1, a + nb)
                dcols = workspace("conv_cols", ((z - a) * oh * ow, kc), self.grows.dtype)
                np.matmul(gsel[a * oh * ow:z * oh * ow], self.wmats[gi].T, out=dcols)
                dcols = dcols.reshape(z - a, oh, ow, kh, kw, cg)
                block = self.dxpad[a:z, :, :, gi * cg:(gi + 1) * cg]
                for i in range(kh):
                    for j in range(kw):
                        target = block[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dwl:j * dwl + sw * (ow - 1) + 1:sw]
                        np.add(target, dcols[:, :, :, i, j], out=target)

    def result(self):
        n, c, h, wd = self.xshape
        (pt, _), (pl, _) = self.padding
        return nchw(self.dxpad[:, pt:pt + h, pl:pl + wd])
