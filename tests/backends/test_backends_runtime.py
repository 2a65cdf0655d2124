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
    assert kernel_cases.passes_in_forked_child(lambda: np.allclose(conv(x, w, None, *SAME_3X3, (8, 8))[0], expected))


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


def test_split_count_keeps_a_job_below_twice_its_threshold_on_the_calling_thread(monkeypatch):
    monkeypatch.setattr(nruntime, "NUM_WORKERS", 4)
    assert nruntime.split_count(1999, 1000) == 1  # each of two parts would hold less than 1000
    assert nruntime.split_count(2000, 1000) == 2
    assert nruntime.split_count(3999, 1000) == 3
    assert nruntime.split_count(10 ** 9, 1000) == 4  # never more parts than workers
    assert nruntime.split_count(0, 0) == 1
    monkeypatch.setattr(nruntime, "PARALLEL_MIN_ELEMENTS", 10)
    assert nruntime.split_count(25) == 2  # None: the default family's threshold, read at each call
    monkeypatch.setattr(nruntime, "NUM_WORKERS", 1)
    assert nruntime.split_count(10 ** 9, 1) == 1


def test_parallel_splits_by_the_threshold_it_is_given(monkeypatch):
    monkeypatch.setattr(nruntime, "NUM_WORKERS", 2)
    seen = []

    def fn(a, b):
        seen.append((a, b))
        return b - a

    assert nruntime.parallel(fn, 10, elements=1999, min_elements=1000) == [10] and seen == [(0, 10)]
    seen.clear()
    assert sorted(nruntime.parallel(fn, 10, elements=2000, min_elements=1000)) == [5, 5]
    assert sorted(seen) == [(0, 5), (5, 10)]
    monkeypatch.setattr(nruntime, "PARALLEL_MIN_ELEMENTS", 1 << 40)
    assert nruntime.parallel(fn, 10, elements=2000) == [10]  # no min_elements: the default family's


@pytest.mark.parametrize("impl", NUMPY_IMPLS, indirect=True)
def test_small_jobs_never_reach_the_pool(impl, monkeypatch):
    """The kernels of an MLP step (its products, ReLU, the SGD steps) below their thresholds run on the
    calling thread: the pool is never asked for, and the results are the generic ones."""
    from xpnet.backends import kernels
    from xpnet.backends.numpy import optim as nopt
    from xpnet.nn.functional.linear import Affine
    from xpnet.optim import SGD

    def no_pool():
        raise AssertionError("a small job was handed to the pool")

    monkeypatch.setattr(nruntime, "_executor", no_pool)
    gen = np.random.default_rng(2)
    x = gen.standard_normal((64, 128)).astype("float32")
    w = gen.standard_normal((128, 128)).astype("float32")
    matmul = impl.kernel(Affine.matmul_kernel)
    np.testing.assert_allclose(matmul(x, w), x @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(matmul(x.T, x), x.T @ x, rtol=1e-5, atol=1e-4)
    y, saved = impl.kernel(kernels.RELU_FORWARD)(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(impl.kernel(kernels.RELU_BACKWARD)(x, saved), np.where(x > 0, x, 0))
    group = dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)
    scalars = SGD.step_scalars({}, group)
    ws, gs = [w.copy(), x.copy()], [np.ones_like(w), np.ones_like(x)]
    compiled = impl.name == "numpy-compiled"  # without the library both decline
    assert nopt.sgd_step(ws[0], gs[0], {}, group, scalars) is (ws[0] if compiled else None)
    assert nopt.sgd_step_group(ws, gs, [{}, {}], group, scalars) is (ws if compiled else None)


def test_blas_pinning_nests_and_restores_the_count():
    blas = nruntime.blas_threads
    if not blas.available:
        pytest.skip("no OpenBLAS thread control here")
    before = blas._get()
    with blas.single():
        assert blas._get() == 1
        with blas.single():
            assert blas._get() == 1
        assert blas._get() == 1
    assert blas._get() == before
    with pytest.raises(KeyError):
        with blas.single():
            raise KeyError("inside")
    assert blas._get() == before and blas._depth == 0
