"""Matrix products of the NumPy backend outside the batch-parallel kernels (``matmul``: nn.Linear's)."""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..kernels import register_kernel
from .runtime import blas_threads, parallel

# products up to this many multiply-adds run on the kernels' workers; larger ones on OpenBLAS's threads,
# which share one packed copy of B (splitting rows over our workers packs it twice: ~10% slower on a
# 256x1024x1024 product, where the spinning afterwards costs relatively less)
MATMUL_WORKERS_MAX = 1 << 24


@register_kernel("numpy", kernels.MATMUL)
def matmul(a, b):
    """a @ b (a: (..., K), b: (K, N)); a small product (see MATMUL_WORKERS_MAX) has its rows split
    over the workers with single-threaded GEMMs.

    Why not OpenBLAS's own threads: after a threaded call its idle threads spin for about 0.1 s
    (its THREAD_TIMEOUT) before sleeping, taking a core from the batch-parallel kernels that run right
    after (a 256-channel convolution backward measured 60 ms alone, 95 ms just after a threaded
    64x4096x10 product). A layer's products running on the same workers leave nothing spinning."""
    if not blas_threads.available or b.ndim != 2 or a.ndim < 1 or a.dtype != b.dtype:
        return np.matmul(a, b)
    if a.ndim == 1:
        with blas_threads.single():
            return np.matmul(a, b)
    m, k, n = math.prod(a.shape[:-1]), a.shape[-1], b.shape[1]
    if m * k * n > MATMUL_WORKERS_MAX:
        return np.matmul(a, b)
    rows = a.reshape(m, k)
    out = np.empty((m, n), dtype=np.result_type(a, b))

    def work(r0, r1):
        np.matmul(rows[r0:r1], b, out=out[r0:r1])

    with blas_threads.single():  # also when it stays on this thread: a threaded GEMM would leave spinners
        parallel(work, m, blas=True, elements=m * n * max(1, k // 64))
    return out.reshape(a.shape[:-1] + (n,))
