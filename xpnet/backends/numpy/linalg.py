"""Matrix products of the NumPy backend outside the batch-parallel kernels (``matmul``: nn.Linear's)."""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..kernels import register_kernel
from . import runtime
from .runtime import blas_threads, parallel, split_count

# products up to this many multiply-adds run with OpenBLAS pinned to one thread (on this thread, or on
# the kernels' workers when one part holds runtime.GEMM_PARALLEL_MIN_MACS); larger ones on OpenBLAS's
# threads, which share one packed copy of B (splitting rows over our workers packs it twice: ~10% slower
# on a 256x1024x1024 product, where the spinning afterwards costs relatively less)
MATMUL_WORKERS_MAX = 1 << 24

# OpenBLAS runs a product of up to 65536 x 4 multiply-adds (SMP_THRESHOLD_MIN x GEMM_MULTITHREAD_THRESHOLD in
# its interface/gemm.c) on the calling thread whatever its thread count (measured with 2 threads set:
# process CPU time / wall time 1.00 up to 64x64x128, float32 and float64, 1.2-1.45 from 64x128x128), so
# such a product is a plain np.matmul, without the pinning (~1.5 us of lock and two ctypes calls)
BLAS_SERIAL_MAX_MACS = 1 << 18


@register_kernel("numpy", kernels.MATMUL)
def matmul(a, b):
    """a @ b (a: (..., K), b: (K, N)). Up to BLAS_SERIAL_MAX_MACS multiply-adds, plain np.matmul. From
    there to MATMUL_WORKERS_MAX, OpenBLAS pinned to one thread: on the calling one below the GEMM
    threshold (runtime.GEMM_PARALLEL_MIN_MACS per part: every nn.Linear of a small MLP, with no pool,
    closure or output copy), else rows split over the workers, each with a single-threaded GEMM into
    its rows of the output. Beyond, OpenBLAS's own threads.

    Why not OpenBLAS's own threads: after a threaded call its idle threads spin for about 0.1 s
    (its THREAD_TIMEOUT) before sleeping, taking a core from the batch-parallel kernels that run right
    after (a 256-channel convolution backward measured 60 ms alone, 95 ms just after a threaded
    64x4096x10 product); on a busy 2-core machine a 64x128x128 product measured 16-21 ms threaded
    against 20 us pinned. A layer's products running on one thread or on our workers leave nothing
    spinning."""
    if b.ndim != 2 or a.ndim < 1 or a.dtype != b.dtype or not blas_threads.available:
        return np.matmul(a, b)
    m, k, n = math.prod(a.shape[:-1]), a.shape[-1], b.shape[1]
    macs = m * k * n
    if macs <= BLAS_SERIAL_MAX_MACS or macs > MATMUL_WORKERS_MAX:
        return np.matmul(a, b)
    if split_count(macs, runtime.GEMM_PARALLEL_MIN_MACS) <= 1:
        with blas_threads.single():  # also on this thread: a threaded GEMM would leave spinners
            return np.matmul(a, b)
    rows = a.reshape(m, k)
    out = np.empty((m, n), dtype=np.result_type(a, b))

    def work(r0, r1):
        np.matmul(rows[r0:r1], b, out=out[r0:r1])

    with blas_threads.single():  # held across the parts: the count is restored once, at the end
        parallel(work, m, blas=True, elements=macs, min_elements=runtime.GEMM_PARALLEL_MIN_MACS)
    return out.reshape(a.shape[:-1] + (n,))
