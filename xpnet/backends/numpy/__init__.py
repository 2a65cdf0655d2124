"""NumPy on the CPU: the default backend, and its fast kernels.

The Backend itself is below; the kernel modules register their fast paths (``register_kernel("numpy",
kernels.CONV2D_FORWARD)`` ...) when this package imports them, once:

    runtime.py     worker threads, BLAS thread pinning, per-thread workspaces
    allocator.py   glibc's malloc thresholds, fixed so that each step reuses the last one's pages
    layout.py      NCHW views of NHWC memory, zero frames, memory order
    conv.py        conv2d_forward / conv2d_backward: which way a convolution runs, the NHWC path
    im2col.py      im2col + GEMM, the stride-1 and col2im input gradients
    winograd.py    Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions
    planar.py      few-channel convolutions on channel-major planes, compiled on wide rows
    pool.py        max and average pooling
    norm.py        batch norm, local response norm
    activation.py  ReLU
    loss.py        softmax cross-entropy with class targets
    linalg.py      matmul
    optim.py       the SGD step
    native.py      build, cache, verify and load the C library (csrc/, one header: xpnet_kernels.h)
    header.py      the ctypes signatures, read from that header

Each kernel has the contract of the generic Array-API code (in ``xpnet/nn/functional`` and
``xpnet/optim``) and is tested equal to it (tests/backends/test_backends_*.py and the optimizer tests).
"""

from __future__ import annotations

import numpy as np
from array_api_compat import numpy as xp_numpy

from ..base import Backend


class NumpyBackend(Backend):
    name = "numpy"

    def owns(self, array) -> bool:
        return isinstance(array, (np.ndarray, np.generic))


def probe():
    return None


def parse_device(device):
    if device in (None, "cpu", 0, "0") or str(device) == "cpu":
        return "cpu", "cpu"
    raise ValueError(f"numpy backend: unknown device {device!r}; NumPy arrays live on 'cpu' only")


def make(device) -> NumpyBackend:
    dev, label = parse_device(device)
    return NumpyBackend(xp_numpy, dev, label)


def owns(array) -> bool:
    return isinstance(array, (np.ndarray, np.generic))


from . import activation, conv, linalg, loss, norm, optim, pool  # noqa: E402,F401  -- register the fast paths
from .allocator import tune as _tune_allocator  # noqa: E402

_tune_allocator()  # once, at import: see allocator.py
