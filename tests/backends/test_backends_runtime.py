"""The NumPy kernels' runtime (numpy/runtime.py: the worker pool and the workspaces), seen through the
convolution kernel: it works in a forked child, its workspaces can be released, and a job too small
to split runs on the calling thread with the same results."""

from __future__ import annotations

import os

import numpy as np
import pytest

import kernel_cases
from kernel_cases import NUMPY_IMPLS
from xpnet.backends.numpy import runtime as nruntime
from xpnet.nn.functional.conv import Convolution2d

SAME_3X3 = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)  # stride, padding, dilation, groups

impl = kernel_cases.impl  # the fixture: the implementations (see kernel_cases.py)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("impl", NUMPY_IMPLS, indirect=True)
def test_kernels_work_in_a_forked_child(impl, rng):
    """A forked data-loading worker inherits the kernel thread pool object without its threads."""
    conv = impl.kernel(Convolution2d.forward_kernel)
    x = rng.standard_normal((4, 3, 8, 8)).astype("float32")
    w = rng.standard_normal((4, 3, 3, 3)).astype("float32")
    expected, _ = conv(x, w, None, *SAME_3X3, (8, 8))  # the pool now exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            y, _ = conv(x, w, None, *SAME_3X3, (8, 8))
            os.write(write, b"ok" if np.allclose(y, expected) else b"mismatch")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 16) == b"ok" and status == 0
    os.close(read)


@pytest.mark.parametrize("impl", NUMPY_IMPLS, indirect=True)
def test_release_workspaces_and_small_jobs(impl, rng, monkeypatch):
    conv = impl.kernel(Convolution2d.forward_kernel)
    x = rng.standard_normal((6, 4, 9, 9)).astype("float32")
    w = rng.standard_normal((5, 4, 3, 3)).astype("float32")
    parallel, _ = conv(x, w, None, *SAME_3X3, (9, 9))
    assert any(store for store in nruntime._stores)
    nruntime.release_workspaces()
    assert not any(store for store in nruntime._stores)
    monkeypatch.setattr(nruntime, "PARALLEL_MIN_ELEMENTS", 1 << 40)  # every job now runs on the calling thread
    serial, _ = conv(x, w, None, *SAME_3X3, (9, 9))
    np.testing.assert_allclose(serial, parallel, rtol=1e-6, atol=1e-6)
