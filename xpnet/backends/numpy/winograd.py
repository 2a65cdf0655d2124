"""Winograd F(2x2, 3x3) for stride-1 3x3 convolutions: the forward, the input gradient (itself such a
convolution) and the weight gradient, with the transforms compiled (csrc/winograd.c).

Where it pays on a 2-core EPYC (ms, batch 64, forward / input gradient, Winograd against im2col):
64 ch. 32x32: 26 / 26 against 33 / 32; 128 ch. 16x16: 26 / 26 against 30 / 29; 256 ch. 8x8: 36 / 34
against 30 / 29; with AVX-512 8x8 pays too (WINOGRAD_MIN_PIXELS_AVX512). Both channel counts at least WINOGRAD_MIN_CHANNELS (thinner products are too
inefficient in the BLAS) and outputs of at least WINOGRAD_MIN_PIXELS (few tiles per image leave
the transforms and the strided products dominating); a chunk holds about WINOGRAD_ROWS tiles.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import native
from .layout import frame_into
from .native import ptr
from .runtime import blas_threads, workspace

WINOGRAD_MIN_CHANNELS = 32
WINOGRAD_MIN_PIXELS = 256
# where the compiled library has AVX-512 (16-float vectors) 8x8 outputs already pay: one layer's forward
# + backward, batch 64, ms, Winograd / im2col (``python scripts/conv_paths.py``, three runs on a 2-core
# Sapphire Rapids VM): 128->256 on 8x8 21.4-25.4 / 25.1-34.3, 256->256 on 8x8 40.5-52.7 / 53.7-65.1
WINOGRAD_MIN_PIXELS_AVX512 = 64
WINOGRAD_ROWS = 512
_WINO_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# U = G W G^T for every (c, o) at once: kron(G, G) (16, 9) times W's taps (9, C O), one small GEMM
_WINO_GG = np.kron(_WINO_G, _WINO_G).T


def winograd_library(w, stride, dilation, groups, dtype, out_hw):
    """The compiled library when this convolution runs as Winograd F(2x2, 3x3), else None."""
    if (tuple(w.shape[2:]) != (3, 3) or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or groups != 1
            or min(w.shape[0], w.shape[1]) < WINOGRAD_MIN_CHANNELS or dtype not in native.FLOATS):
        return None
    lib = native.library()
    if lib is None:
        return None
    least = WINOGRAD_MIN_PIXELS
    if native.vector_floats(lib) >= 16:
        least = min(least, WINOGRAD_MIN_PIXELS_AVX512)
    return lib if out_hw[0] * out_hw[1] >= least else None


class Winograd:
    """y = conv(x, W) (stride 1, 3x3) as Winograd F(2x2, 3x3) (Lavin and Gray, 2016): every 2x2 block
    of outputs from a 4x4 input tile with 16 multiplies per (input, output) channel pair instead of
    36, so the products cost 4/9 of im2col's. With U_k = (G W G^T)_k (C, O) and V_k the tiles'
    transformed inputs (tiles, C), k = 0..15:
        M_k = V_k U_k  (16 GEMMs)      y tile = A^T M A  (+ bias)
    The transforms (xp_wino_in / xp_wino_out) are compiled; the products run on chunks of about
    WINOGRAD_ROWS tiles. The input gradient of such a convolution is one too (of the framed G with
    the flipped, transposed kernel), so im2col.Stride1InputGrad runs through here as well. The weight
    gradient follows from y = A^T (U ⊙ V) A by the chain rule: dM = A dY A^T per 2x2 block of G,
    dU_k = sum over tiles V_k^T dM_k, dW = G^T dU G (weight_grad_part, weight_grad)."""

    def __init__(self, lib, w, bias, out_hw):
        o, c = w.shape[:2]
        self.lib, self.c, self.o = lib, c, o
        self.oh, self.ow = out_hw
        self.th, self.tw = -(-self.oh // 2), -(-self.ow // 2)
        self.hq, self.wq = 2 * self.th + 2, 2 * self.tw + 2
        taps = np.ascontiguousarray(w.reshape(o, c, 9).transpose(2, 1, 0)).reshape(9, c * o)
        with blas_threads.single():  # a threaded GEMM here would leave OpenBLAS threads spinning (see linalg)
            self.u = np.matmul(_WINO_GG.T.astype(w.dtype), taps).reshape(16, c, o)
        self.bias = None if bias is None else np.ascontiguousarray(bias, dtype=w.dtype)
        self.step = max(1, WINOGRAD_ROWS // (self.th * self.tw))

    @staticmethod
    def _stack(name, rows, cols, dtype):
        """16 (rows, cols) matrices in one workspace, each a little more than rows * cols apart: at
        exact multiples of a large power of two the transforms' 16 streams would share cache sets.
        Returns the (16, rows, cols) view and the element distance between the matrices."""
        k_stride = rows * cols + 64
        buf = workspace(name, (16 * k_stride,), dtype)
        item = buf.itemsize
        return as_strided(buf, (16, rows, cols), (k_stride * item, cols * item, item)), k_stride

    def _chunks(self, xh, top, left, n0, n1, dtype):
        """(a, z, V, its k stride) per chunk of images [n0, n1): V = B^T d B of every tile of the
        zero-framed images xh[a:z] placed at (top, left), as _stack's 16 matrices (tiles, C)."""
        tiles = self.th * self.tw
        transform_in = native.kernel(self.lib, "xp_wino_in", dtype)
        for a in range(n0, n1, self.step):
            z = min(n1, a + self.step)
            m = z - a
            framed = frame_into(workspace("wino_x", (m, self.hq, self.wq, self.c), dtype), xh[a:z], top, left)
            v, v_k = self._stack("wino_v", m * tiles, self.c, dtype)
            transform_in(ptr(framed), self.hq * self.wq * self.c, self.wq, self.c, m, self.th, self.tw, ptr(v),
                         self.c, v_k)
            yield a, z, v

    def weight_grad_part(self, xh, gh, top, left, n0, n1):
        """dU = sum over the tiles of images [n0, n1) of V_k^T dM_k, (16, C, O): the weight gradient
        before its transform (see weight_grad). dM = A dY A^T per 2x2 block of G."""
        o, tiles, dtype = self.o, self.th * self.tw, gh.dtype
        transform_grad = native.kernel(self.lib, "xp_wino_grad", dtype)
        du = np.zeros((16, self.c, o), dtype=dtype)
        part = workspace("wino_du", (16, self.c, o), dtype)
        for a, z, v in self._chunks(xh, top, left, n0, n1, dtype):
            grad = np.ascontiguousarray(gh[a:z])
            dm, dm_k = self._stack("wino_m", (z - a) * tiles, o, dtype)
            transform_grad(ptr(grad), self.oh * self.ow * o, o, z - a, self.th, self.tw, self.oh, self.ow, ptr(dm),
                           o, dm_k)
            np.matmul(v.transpose(0, 2, 1), dm, out=part)
            np.add(du, part, out=du)
        return du

    @staticmethod
    def weight_grad(du):
        """dW (9 C, O), rows in (i, j, c) order, from the summed dU (16, C, O): U = G W G^T, so
        dW = G^T dU G, one GEMM with kron(G, G)."""
        _, c, o = du.shape
        with blas_threads.single():
            return np.matmul(_WINO_GG.astype(du.dtype), du.reshape(16, c * o)).reshape(9 * c, o)

    def images(self, xh, top, left, y, n0, n1):
        """NHWC outputs y[n0:n1] (N, OH, OW, O) from NHWC input images xh[n0:n1], placed at (top, left)
        in the zero-framed tiles."""
        o, tiles = self.o, self.th * self.tw
        transform_out = native.kernel(self.lib, "xp_wino_out", y.dtype)
        bias = None if self.bias is None else ptr(self.bias)
        for a, z, v in self._chunks(xh, top, left, n0, n1, y.dtype):
            prod, m_k = self._stack("wino_m", (z - a) * tiles, o, y.dtype)
            np.matmul(v, self.u, out=prod)
            transform_out(ptr(prod), o, m_k, o, z - a, self.th, self.tw, bias, ptr(y[a]), self.oh * self.ow * o,
                          self.oh, self.ow)
