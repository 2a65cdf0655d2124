"""The MATMUL kernel (numpy/linalg.py: nn.Linear's products; CuPy has none, so Affine's ``a @ b``
runs there) equals the generic product over every implementation, and leaves the BLAS thread count
as it found it."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpnet
import kernel_cases
from kernel_cases import LOOKUP_IMPLS, matmul_generic, with_dtypes
from xpnet.backends.numpy import linalg as nlinalg
from xpnet.backends.numpy import runtime as nruntime
from xpnet.nn.functional.linear import Affine

MATMUL = Affine.matmul_kernel
TOL = dict(rtol=1e-5, atol=1e-5)

impl = kernel_cases.impl  # the fixture: the implementations (see kernel_cases.py)


@pytest.mark.parametrize("impl, dtype", with_dtypes(), indirect=["impl"])
def test_matmul_equals_generic(impl, dtype, monkeypatch):
    monkeypatch.setattr(nruntime, "GEMM_PARALLEL_MIN_MACS", 64)  # split the rows over the workers
    monkeypatch.setattr(nlinalg, "BLAS_SERIAL_MAX_MACS", 0)  # however small the product
    monkeypatch.setattr(nlinalg, "MATMUL_WORKERS_MAX", 1 << 13)  # a (100, 33) x (33, 5) product goes to np.matmul
    gen = np.random.default_rng(7)
    w = gen.standard_normal((5, 33)).astype(dtype)
    g = gen.standard_normal((40, 5)).astype(dtype)
    x = gen.standard_normal((40, 33)).astype(dtype)
    pairs = [(a, w.T) for a in (gen.standard_normal((2, 7, 33)).astype(dtype),  # leading dims flattened to rows
                                gen.standard_normal((40, 33)).astype(dtype).T.copy().T,  # a transposed (F-order) one
                                gen.standard_normal((0, 33)).astype(dtype),
                                gen.standard_normal((100, 33)).astype(dtype),
                                gen.standard_normal(33).astype(dtype))]
    pairs.append((g.T, x))  # dW = G^T X: both operands transposed views
    # other shapes and mixed dtypes are the plain product
    pairs += [(np.ones((2, 3, 4)), np.ones((2, 4, 5))), (np.ones((2, 3), dtype="float32"), np.ones((3, 2)))]
    matmul = impl.kernel(MATMUL)
    for a, b in pairs:
        expected = matmul_generic(a, b)
        for on in impl.arrays:
            out = on.host(matmul(on.put(a), on.put(b)))
            assert out.shape == expected.shape and out.dtype == expected.dtype
            np.testing.assert_allclose(out, expected, **TOL)
    # the batched product's values, and the mixed dtypes' promotion
    np.testing.assert_array_equal(matmul_generic(*pairs[-2]), np.full((2, 3, 5), 4.0))
    assert matmul_generic(*pairs[-1]).dtype == np.float64


@pytest.mark.parametrize("impl", ["numpy"], indirect=True)
def test_matmul_leaves_blas_thread_count(impl):
    if not nruntime.blas_threads.available:
        pytest.skip("no OpenBLAS thread control here")
    before = nruntime.blas_threads._get()
    impl.kernel(MATMUL)(np.ones((64, 128), dtype="float32"), np.ones((128, 10), dtype="float32"))
    assert nruntime.blas_threads._get() == before


@pytest.mark.parametrize("impl", LOOKUP_IMPLS, indirect=True)
def test_matmul_kernel_is_looked_up_by_affine(impl):
    expected = {"generic": None, "numpy": nlinalg.matmul, "cupy": None}  # None: Affine runs a @ b
    assert xpnet.get_backend(impl.backend).kernel(MATMUL) is expected[impl.name]


@pytest.mark.parametrize("impl", ["numpy"], indirect=True)
def test_matmul_splits_rows_only_above_the_gemm_threshold(impl, monkeypatch):
    """A product below twice runtime.GEMM_PARALLEL_MIN_MACS (every nn.Linear of a small MLP) is one
    np.matmul on the calling thread, with no call to parallel; above it the rows are split."""
    if not nruntime.blas_threads.available:
        pytest.skip("no OpenBLAS thread control here: every product is the plain np.matmul")
    monkeypatch.setattr(nruntime, "NUM_WORKERS", 2)
    calls = []
    real = nlinalg.parallel

    def spy(fn, n, **kw):
        calls.append((n, kw))
        return real(fn, n, **kw)

    monkeypatch.setattr(nlinalg, "parallel", spy)
    gen = np.random.default_rng(3)
    a, b = gen.standard_normal((64, 128)).astype("float32"), gen.standard_normal((128, 128)).astype("float32")
    before = nruntime.blas_threads._get()
    np.testing.assert_allclose(impl.kernel(MATMUL)(a, b), a @ b, **TOL)
    assert calls == [] and nruntime.blas_threads._get() == before
    monkeypatch.setattr(nruntime, "GEMM_PARALLEL_MIN_MACS", 64 * 128 * 128 // 2)  # exactly two parts' worth
    np.testing.assert_allclose(impl.kernel(MATMUL)(a, b), a @ b, **TOL)
    assert len(calls) == 1 and calls[0][0] == 64 and calls[0][1]["elements"] == 64 * 128 * 128
    assert nruntime.blas_threads._get() == before


@pytest.mark.parametrize("impl", ["numpy"], indirect=True)
def test_matmul_pins_the_blas_only_where_it_would_thread(impl, monkeypatch):
    """A product OpenBLAS runs on one thread anyway (up to BLAS_SERIAL_MAX_MACS) is a plain np.matmul;
    a larger one (below MATMUL_WORKERS_MAX) runs with OpenBLAS pinned to one thread."""
    blas = nruntime.blas_threads
    if not blas.available:
        pytest.skip("no OpenBLAS thread control here")
    entered = []
    real = blas._enter
    monkeypatch.setattr(blas, "_enter", lambda: (entered.append(1), real())[1])
    small = np.ones((8, 64), dtype="float32"), np.ones((64, 32), dtype="float32")
    assert math.prod(small[0].shape) * small[1].shape[1] <= nlinalg.BLAS_SERIAL_MAX_MACS
    np.testing.assert_array_equal(impl.kernel(MATMUL)(*small), np.full((8, 32), 64.0))
    assert entered == []
    large = np.ones((64, 128), dtype="float32"), np.ones((128, 128), dtype="float32")
    np.testing.assert_array_equal(impl.kernel(MATMUL)(*large), np.full((64, 128), 128.0))
    assert entered == [1]
