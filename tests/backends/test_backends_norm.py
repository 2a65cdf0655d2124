"""The normalisation kernel families (numpy/norm.py; cupy/norm.py, which has local response norm
only: batch norm runs the generic code on CuPy arrays) equal the generic Array-API code: one case
table each for batch norm (forward y and batch statistics, dx, dgamma, dbeta) and local response
norm, over every implementation; then the NumPy batch norm's statistics (a large offset, the batch
split over the workers)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import kernel_cases
from kernel_cases import LOOKUP_IMPLS, NUMPY_IMPLS, layout, reference, with_dtypes
from xpnet.backends.cupy import norm as cupy_norm
from xpnet.backends.kernels import BatchNormForward, BatchNormGrads, LocalResponseNormForward
from xpnet.backends.numpy import norm as nnorm
from xpnet.backends.numpy import runtime as nruntime
from xpnet.nn.functional import norm as norm_mod
from xpnet.nn.functional.norm import BatchNormFunction, LocalResponseNormFunction

BN_FORWARD, BN_BACKWARD = BatchNormFunction.forward_kernel, BatchNormFunction.backward_kernel
LRN_FORWARD, LRN_BACKWARD = LocalResponseNormFunction.forward_kernel, LocalResponseNormFunction.backward_kernel
EPS = 1e-5

impl = kernel_cases.impl  # the fixture: the implementations (see kernel_cases.py)


def _generic_batch_norm(x, gamma, beta, mean, var, training, g, needs):
    ref = norm_mod.batch_norm_forward_generic(x, gamma, beta, mean, var, training, EPS)
    return ref, norm_mod.batch_norm_backward_generic(g, ref.saved, needs)


def _generic_lrn(x, args, g):
    ref = norm_mod.lrn_forward_generic(x, *args)
    return ref, norm_mod.lrn_backward_generic(g, ref.saved)


def _check_batch_norm(impl, x, gamma, beta, mean, var, training, g, needs):
    dtype = x.dtype.name
    ref, expected = reference(_generic_batch_norm, x, gamma, beta, mean, var, training, g, needs)
    assert isinstance(ref, BatchNormForward)
    assert isinstance(expected, BatchNormGrads)
    forward, backward = impl.kernel(BN_FORWARD), impl.kernel(BN_BACKWARD)
    for on in impl.arrays:
        out = forward(on.put(x), on.put(gamma), on.put(beta), on.put(mean), on.put(var), training, EPS)
        assert isinstance(out, BatchNormForward), type(out)
        impl.close(out.y, ref.y, dtype)
        if training:
            impl.close(out.batch_mean, ref.batch_mean, dtype)
            impl.close(out.batch_var, ref.batch_var, dtype)
        else:
            assert out.batch_mean is None and out.batch_var is None
        grads = backward(on.put(g), out.saved, needs)
        assert isinstance(grads, BatchNormGrads), type(grads)
        for got, want in zip(grads, expected):
            assert (got is None) == (want is None)
            if got is not None:
                impl.close(got, want, dtype)


@pytest.mark.parametrize("impl, dtype", with_dtypes(), indirect=["impl"])
@pytest.mark.parametrize("shape,channels_last", [((7, 3), False), ((4, 3, 5), False), ((3, 4, 5, 6), False),
                                                 ((3, 4, 5, 6), True)], ids=["NC", "NCL", "NCHW", "NHWC"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batch_norm_equals_generic(impl, rng, shape, channels_last, training, affine, dtype):
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype) * 3 + 1
    if channels_last:
        x = layout(x, True)
    gamma = rng.standard_normal(c).astype(dtype) if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None
    mean = None if training else rng.standard_normal(c).astype(dtype)
    var = None if training else (rng.random(c) + 0.5).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    _check_batch_norm(impl, x, gamma, beta, mean, var, training, g, (True, affine, affine))


@pytest.mark.parametrize("impl, dtype", with_dtypes(NUMPY_IMPLS), indirect=["impl"])
def test_batch_norm_split_over_workers_equals_generic(impl, rng, dtype, monkeypatch):
    # each worker's moments (shifted by its own first row) merge into the batch's; sums add
    monkeypatch.setattr(nruntime, "PARALLEL_MIN_ELEMENTS", 16)
    x = layout((rng.standard_normal((5, 3, 4, 7)) * 2 + 50).astype(dtype), True)
    gamma, beta = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    _check_batch_norm(impl, x, gamma, beta, None, None, True, g, (True, True, True))


@pytest.mark.parametrize("impl", NUMPY_IMPLS, indirect=True)
def test_batch_norm_statistics_stay_accurate_with_a_large_offset(impl, rng):
    # per-block shifting and Chan's merge: no cancellation when |mean| >> std (E[x^2] - E[x]^2 is off by 3e5 here)
    x = (rng.standard_normal((64, 8, 8, 16)) * 0.01 + 1000.0).astype("float32").transpose(0, 3, 1, 2)
    _, _, mean, var = impl.kernel(BN_FORWARD)(x, None, None, None, None, True, EPS)
    exact = np.asarray(x, dtype=np.float64).transpose(0, 2, 3, 1).reshape(-1, 16)
    np.testing.assert_allclose(mean, exact.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, exact.var(0), rtol=2e-4)  # the generic float32 two-pass: ~7e-4


# (size, alpha, beta, k)
LRN_CASES = [(5, 0.5, 0.75, 1.5), (2, 0.5, 0.5, 1.5), (3, 0.5, 1.0, 1.5), (4, 0.5, 0.6, 1.5), (1, 0.5, 0.75, 1.5),
             (4, 1e-2, 0.75, 2.0)]


@pytest.mark.parametrize("impl, dtype", with_dtypes(), indirect=["impl"])
@pytest.mark.parametrize("args", LRN_CASES, ids=[f"n{c[0]}-alpha{c[1]}-beta{c[2]}-k{c[3]}" for c in LRN_CASES])
@pytest.mark.parametrize("shape,channels_last", [((3, 7, 4, 5), True), ((3, 9, 6, 5), False), ((4, 6, 9), False)],
                         ids=["NHWC", "NCHW", "NCL"])
def test_local_response_norm_equals_generic(impl, rng, args, shape, channels_last, dtype):
    x = rng.standard_normal(shape).astype(dtype) * 3
    if channels_last:
        x = layout(x, True)
    g = rng.standard_normal(shape).astype(dtype)
    ref, expected = reference(_generic_lrn, x, args, g)
    assert isinstance(ref, LocalResponseNormForward)
    forward, backward = impl.kernel(LRN_FORWARD), impl.kernel(LRN_BACKWARD)
    for on in impl.arrays:
        out = forward(on.put(x), *args)
        assert isinstance(out, LocalResponseNormForward), type(out)
        impl.close(out.y, ref.y, dtype)
        impl.close(backward(on.put(g), out.saved), expected, dtype)


@pytest.mark.parametrize("impl", LOOKUP_IMPLS, indirect=True)
def test_norm_kernels_are_looked_up_by_the_functions(impl):
    names = (BN_FORWARD, BN_BACKWARD, LRN_FORWARD, LRN_BACKWARD)
    expected = {"generic": (None,) * 4,  # no fast path: the Functions run the generic code
                "numpy": (nnorm.batch_norm_forward, nnorm.batch_norm_backward, nnorm.local_response_norm_forward,
                          nnorm.local_response_norm_backward),
                "cupy": (None, None, cupy_norm.local_response_norm_forward, cupy_norm.local_response_norm_backward)}
    backend = xpnet.get_backend(impl.backend)
    assert tuple(backend.kernel(name) for name in names) == expected[impl.name]
