"""Few-channel stride-1 convolutions (LeNet's 1->6 and 6->16 layers) on channel-major planes.

NHWC rows are a handful of values long for such convolutions, so they work on (C, N, H, W) planes
instead, with output rows computed as wide as the padded input so that every column-matrix row is one
contiguous run of a plane (PlanarConv). Compiled, float32 ones run as direct loops over the same wide
rows (WideConv, csrc/conv.c; LeNet-5's step 15.7 -> 12.2 ms). ReLU keeps any layout and max pooling
works on the planes when they are innermost, so the planes pass from one narrow convolution to the
next. conv.py decides which convolutions run here (``on_planes``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import native, runtime
from .im2col import Col2ImInputGrad, chunk
from .layout import column_sums, frame_into, nhwc, sum_partials
from .native import ptr
from .runtime import parallel, split_count, workspace

# both channel counts at most this: such narrow convolutions are bound by im2col's short copies and
# by GEMMs a few columns wide in NHWC, not by arithmetic (LeNet's 1->6 and 6->16 layers). At 32
# channels NHWC wins again: the default `xpnet train` model (32-channel convs, then batch norm) ran
# 150 ms a step through NHWC against 204 ms through planes.
PLANAR_MAX_CHANNELS = 16


def on_planes(w, stride, groups):
    """Whether a convolution runs on channel-major planes (see PlanarConv)."""
    return (groups == 1 and tuple(stride) == (1, 1)
            and w.shape[0] <= PLANAR_MAX_CHANNELS and w.shape[1] <= PLANAR_MAX_CHANNELS)


class PlanarConv:
    """A stride-1, one-group convolution on channel-major planes with wide output rows.

    The zero-framed input lives in a (C, N, Hp + 1, Wp) buffer: one plane per (channel, image) and a
    spare zero row. Every output row is computed Wp wide instead of OW, so that output (p, q) of
    image n meets kernel offset (i, j) at plane position (p + i D_h) Wp + (q + j D_w): for each
    (c, i, j, n) the OH * Wp outputs read ONE contiguous run of the plane, starting at
    i D_h Wp + j D_w. The column matrix X_col (C kH kW, N OH Wp), rows in W's own (c, i, j) order, is
    thus a copy of long runs, and Y = W_mat X_col (W_mat = W as (O, C kH kW)) comes out channel-major.
    The Wp - OW extra outputs of a row are dropped (forward) or get a zero gradient (backward); the
    spare row keeps the last row's extra reads inside its plane.
    """

    def __init__(self, x, w, padding, dilation, out_hw):
        self.n, self.c, self.h, self.w = x.shape
        self.o, _, kh, kw = w.shape
        (self.pt, pb), (self.pl, pr) = padding
        self.hp, self.wp = self.h + self.pt + pb, self.w + self.pl + pr
        self.kernel, self.dilation = (kh, kw), dilation
        self.oh, self.ow = out_hw
        self.row = self.oh * self.wp  # wide outputs per image
        self.plane = (self.hp + 1) * self.wp
        self.ckk = self.c * kh * kw
        self.wmat = w.reshape(self.o, self.ckk)
        self.x, self.dtype = x, x.dtype
        self.xpad = None

    def frame_input(self, n0, n1):
        """Images [n0, n1) of x into their zero-framed planes (the buffer is shared by the workers)."""
        if self.xpad is None:
            raise RuntimeError("frame_input before share_input")
        frame_into(self.xpad[:, n0:n1].transpose(1, 2, 3, 0), nhwc(self.x[n0:n1]), self.pt, self.pl)

    def share_input(self):
        self.xpad = workspace("planar_xpad", (self.c, self.n, self.hp + 1, self.wp), self.dtype)

    def runs(self, buf, writeable=False):
        """(C, kH, kW, N, OH Wp) view of plane buffer ``buf``: [c, i, j, n] is the run of plane (c, n)
        that offset (i, j) meets (made once per call: as_strided costs microseconds)."""
        it = buf.itemsize
        (dh, dw), wp, plane = self.dilation, self.wp, self.plane
        return as_strided(buf, (self.c,) + self.kernel + (self.n, self.row),
                          (self.n * plane * it, dh * wp * it, dw * it, plane * it, it), writeable=writeable)

    def columns(self, runs, a, z):
        """X_col of images [a, z): (C kH kW, (z - a) OH Wp), copied from ``runs`` into a workspace."""
        cols = workspace("planar_cols", (self.c,) + self.kernel + (z - a, self.row), self.dtype)
        np.copyto(cols, runs[:, :, :, a:z])
        return cols.reshape(self.ckk, -1)

    def fold(self, runs, dcols, a, z):
        """col2im: add offset (i, j)'s rows of dX_col (C kH kW, (z - a) OH Wp) into its runs of the
        zero-started planes (``runs`` of the dx buffer); one add of contiguous runs per offset."""
        kh, kw = self.kernel
        parts = dcols.reshape(self.c, kh, kw, z - a, self.row)
        for i in range(kh):
            for j in range(kw):
                target = runs[:, i, j, a:z]
                np.add(target, parts[:, i, j], out=target)

    def chunk(self, count):
        return chunk(count, self.row, self.ckk + self.o, self.dtype.itemsize)


def _round_up(v, m):
    return -(-v // m) * m


class WideConv:
    """Geometry of the compiled few-channel convolution (csrc/conv.c), float32 only.

    Each image's zero-framed channels are planes of row width Wp, ``plane`` elements apart (an
    (N, C, plane) buffer); the output is computed Wp wide per row, P = OH Wp positions, rounded up
    to ``p16`` for the 16-wide vector loops, so output (r, s) is wide position r Wp + s and kernel
    offset (i, j) is tap offset i D_h Wp + j D_w (the largest, ``reach``). The output gradient lives
    in a (N, O, gplane) buffer, zero except G itself at ``reach`` + (r Wp + s): read from there it is
    the wide G of the weight gradient (zero on the extra columns), read with the flipped kernel's
    offsets it is the zero-framed G of the input gradient (a stride-1 convolution's dx is the
    correlation of the framed G with W flipped and transposed); a row's negative column offsets wrap
    into the previous row's zero extra columns. The input gradient is computed for the interior
    rows only, from wide position ``q0`` = pt Wp, ``q16`` positions."""

    def __init__(self, xshape, w, padding, dilation, out_hw):
        self.n, self.c, self.h, self.w = xshape
        self.o, _, kh, kw = w.shape
        (self.pt, pb), (self.pl, pr) = padding
        dh, dw = dilation
        self.hp, self.wp = self.h + self.pt + pb, self.w + self.pl + pr
        self.oh, self.ow = out_hw
        self.offsets = np.array([i * dh * self.wp + j * dw for i in range(kh) for j in range(kw)], dtype=np.int64)
        self.reach = int(self.offsets[-1])
        self.p = self.oh * self.wp
        self.p16 = _round_up(self.p, 16)
        self.plane = _round_up(max(self.hp * self.wp, self.p16 + self.reach), 8)
        self.q0, self.q16 = self.pt * self.wp, _round_up(self.h * self.wp, 16)
        self.gplane = _round_up(max(self.reach + self.p16, self.q0 + self.q16 + self.reach), 8)
        self.kk = kh * kw

    def taps(self, channels, plane):
        """Offsets of the flattened (channel, i, j) taps in a buffer of ``plane``-long planes."""
        return (np.arange(channels, dtype=np.int64)[:, None] * plane + self.offsets[None, :]).reshape(-1)

    def frame_planes(self, lib, buf, x, parts):
        """The images of x into their zero-framed planes of ``buf`` (N, C, plane), in ``parts``."""
        _frame(lib, x, buf, self.wp, 0, self.pt, self.pl, parts)

    def frame_grad(self, lib, buf, g, parts, sums=None):
        """G into the (N, O, gplane) buffer, at ``reach`` + wide position, zero elsewhere, in ``parts``;
        ``sums`` (float64, (parts, O)): row p += the sums per channel of part p's images."""
        _frame(lib, g, buf, self.wp, self.reach, 0, 0, parts, sums)

    def images_per_block(self, per_image):
        return max(1, (256 << 10) // max(1, per_image * 4))


def _frame(lib, src, dst, row, head, top, left, parts, sums=None):
    """xp_frame: each (image, channel) plane of ``src`` into its zero-framed plane of ``dst``."""
    n, c, h, w = src.shape
    s = [st // src.itemsize for st in src.strides]
    lib.xp_frame(ptr(src), *s, n, c, h, w, ptr(dst), dst.strides[0] // dst.itemsize, dst.shape[2], row, head,
                 top, left, None if sums is None else ptr(sums), parts)


def _native_conv_forward(lib, x, w, b, padding, dilation, out_hw):
    """y (N, O, OH, OW), NCHW-contiguous, through xp_frame and xp_conv_wide; the images split over the
    compiled kernels' own threads (runtime.CONV_PARALLEL_MIN_MACS per part)."""
    wc = WideConv(x.shape, w, padding, dilation, out_hw)
    n, c, o = wc.n, wc.c, wc.o
    parts = min(n, split_count(n * wc.p * c * wc.kk * o, runtime.CONV_PARALLEL_MIN_MACS))
    planes = workspace("wide_x", (n, c, wc.plane), x.dtype)
    taps = wc.taps(c, wc.plane)
    wmat = np.ascontiguousarray(w.reshape(o, -1))
    bias = None if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    y = np.empty((n, o, wc.oh, wc.ow), dtype=x.dtype)
    wc.frame_planes(lib, planes, x, parts)
    scratch = workspace("wide_out", (parts, o, wc.p16), x.dtype)
    lib.xp_conv_wide(ptr(planes), c * wc.plane, ptr(taps), taps.size, ptr(wmat), o,
                     None if bias is None else ptr(bias), wc.p16, wc.oh, wc.wp, 0, wc.ow, ptr(scratch), o * wc.p16,
                     ptr(y), o * wc.oh * wc.ow, wc.oh * wc.ow, n, parts)
    return y


def _native_conv_backward(lib, g, x, w, padding, dilation, out_hw, needs):
    """dW through xp_conv_wide_dw, dx through xp_conv_wide over the framed G with the flipped,
    transposed kernel (see WideConv); db the sums of G, taken while framing it. Each part of the images
    (over the compiled kernels' threads) keeps its own partial dW and db, added in order."""
    need_x, need_w, need_b = needs
    wc = WideConv(x.shape, w, padding, dilation, out_hw)
    n, c, o, kk = wc.n, wc.c, wc.o, wc.kk
    parts = min(n, split_count(n * wc.p * c * kk * o, runtime.CONV_PARALLEL_MIN_MACS))
    gbuf = workspace("wide_g", (n, o, wc.gplane), g.dtype)
    item = gbuf.itemsize
    db_parts = np.zeros((parts, o), dtype=np.float64) if need_b else None
    wc.frame_grad(lib, gbuf, g, parts, db_parts)
    db = sum_partials(list(db_parts)).astype(g.dtype) if need_b else None
    dw = None
    if need_w:
        planes = workspace("wide_x", (n, c, wc.plane), g.dtype)
        wc.frame_planes(lib, planes, x, parts)
        x_taps = wc.taps(c, wc.plane)
        dw_parts = np.zeros((parts, o, c * kk), dtype=g.dtype)
        lib.xp_conv_wide_dw(ptr(planes), c * wc.plane, ptr(x_taps), x_taps.size, ptr(gbuf) + wc.reach * item,
                            o * wc.gplane, wc.gplane, o, wc.p16, n, wc.images_per_block(c * wc.plane + o * wc.gplane),
                            ptr(dw_parts), parts)
        dw = sum_partials(list(dw_parts)).reshape(w.shape)
    dx = None
    if need_x:
        g_taps = wc.taps(o, wc.gplane)
        wflip = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)
        dx = np.empty((n, c, wc.h, wc.w), dtype=g.dtype)
        scratch = workspace("wide_out", (parts, c, wc.q16), g.dtype)
        lib.xp_conv_wide(ptr(gbuf) + wc.q0 * item, o * wc.gplane, ptr(g_taps), g_taps.size, ptr(wflip), c, None,
                         wc.q16, wc.h, wc.wp, wc.pl, wc.w, ptr(scratch), c * wc.q16, ptr(dx), c * wc.h * wc.w,
                         wc.h * wc.w, n, parts)
    return dx, dw, db


def planar_conv_forward(x, w, b, padding, dilation, out_hw):
    """y (N, O, OH, OW) over channel-major (O, N, OH, OW) memory (NCHW-contiguous from the compiled
    kernel); the batch split over the workers."""
    lib = native.library() if x.dtype == np.float32 else None
    if lib is not None:
        return _native_conv_forward(lib, x, w, b, padding, dilation, out_hw)
    pc = PlanarConv(x, w, padding, dilation, out_hw)
    pc.share_input()
    o, n, oh, ow = pc.o, pc.n, pc.oh, pc.ow
    y = np.empty((o, n, oh, ow), dtype=x.dtype)
    bias = None if b is None else b.reshape(o, 1, 1, 1)

    runs = pc.runs(pc.xpad)

    def work(n0, n1):
        pc.frame_input(n0, n1)
        step = pc.chunk(n1 - n0)
        for a in range(n0, n1, step):
            z = min(n1, a + step)
            wide = workspace("planar_out", (o, z - a, oh, pc.wp), x.dtype)
            np.matmul(pc.wmat, pc.columns(runs, a, z), out=wide.reshape(o, -1))
            if bias is None:
                np.copyto(y[:, a:z], wide[..., :ow])
            else:
                np.add(wide[..., :ow], bias, out=y[:, a:z])

    parallel(work, n, blas=True, elements=n * pc.row * (pc.ckk + o))
    return y.transpose(1, 0, 2, 3)


def planar_conv_backward(g, x, w, padding, dilation, out_hw, needs):
    """(dx, dW, db) of planar_conv_forward, with G_w = dL/dy in wide rows, (O, N OH Wp), zero in the
    extra columns:
        dL/dW_mat = G_w X_col^T      dL/db = G_w 1      dX_col = W_mat^T G_w, folded back by one add
    of contiguous runs per kernel offset (col2im on the planes; a stride-1 convolution has no other
    overlap to handle). The zero extra columns make the wide rows contribute exactly the true sums.
    With a non-finite W, dx is folded from the exact columns instead (0 * inf in an extra column would
    reach it). A non-finite input value met only by an extra column turns 0 * inf into NaN in dW: the
    caller (conv.py) recomputes a non-finite dW in NHWC."""
    need_x, need_w, need_b = needs
    finite_w = bool(np.isfinite(w).all()) if need_x else True
    lib = native.library() if g.dtype == np.float32 == x.dtype else None
    if lib is not None and finite_w:
        return _native_conv_backward(lib, g, x, w, padding, dilation, out_hw, needs)
    pc = PlanarConv(x, w, padding, dilation, out_hw)
    o, n, c, oh, ow, wp = pc.o, pc.n, pc.c, pc.oh, pc.ow, pc.wp
    if need_w:
        pc.share_input()
    gw = workspace("planar_grad", (o, n, oh, wp), g.dtype)
    fold_x = need_x and finite_w
    dxpad = workspace("planar_dxpad", (c, n, pc.hp + 1, wp), g.dtype) if fold_x else None
    dx = np.empty((c, n, pc.h, pc.w), dtype=g.dtype) if fold_x else None
    wmat_t = pc.wmat.T
    x_runs = pc.runs(pc.xpad) if need_w else None
    dx_runs = pc.runs(dxpad, writeable=True) if fold_x else None

    def work(n0, n1):
        frame_into(gw[:, n0:n1].transpose(1, 2, 3, 0), nhwc(g[n0:n1]), 0, 0)
        db_part = column_sums(gw[:, n0:n1].reshape(o, -1).T) if need_b else None
        dw_part = None
        if need_w:
            pc.frame_input(n0, n1)
            dw_part = np.zeros((o, pc.ckk), dtype=g.dtype)
        if fold_x:
            dxpad[:, n0:n1] = 0
        step = pc.chunk(n1 - n0)
        for a in range(n0, n1, step):
            z = min(n1, a + step)
            grad = gw[:, a:z].reshape(o, -1)
            if need_w:
                part = workspace("planar_dw", (o, pc.ckk), g.dtype)
                np.matmul(grad, pc.columns(x_runs, a, z).T, out=part)
                np.add(dw_part, part, out=dw_part)
            if fold_x:
                dcols = workspace("planar_dcols", (pc.ckk, (z - a) * pc.row), g.dtype)
                np.matmul(wmat_t, grad, out=dcols)
                pc.fold(dx_runs, dcols, a, z)
        if fold_x:
            np.copyto(dx[:, n0:n1], dxpad[:, n0:n1, pc.pt:pc.pt + pc.h, pc.pl:pc.pl + pc.w])
        return db_part, dw_part

    results = parallel(work, n, blas=True, elements=n * pc.row * (pc.ckk + o))
    db = sum_partials([r[0] for r in results]) if need_b else None
    dw = sum_partials([r[1] for r in results]).reshape(w.shape) if need_w else None
    if fold_x:
        dx = dx.transpose(1, 0, 2, 3)
    if need_x and not fold_x:  # col2im of the exact columns only: the generic path's products and sums
        fold = Col2ImInputGrad(np.ascontiguousarray(nhwc(g)).reshape(-1, o), w, x.shape, (oh, ow), (1, 1),
                               padding, dilation, 1)
        fold(0, n)
        dx = fold.result()
    return dx, dw, db
