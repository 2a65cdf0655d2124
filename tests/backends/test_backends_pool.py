"""The pooling kernel family (numpy/pool.py, cupy/pool.py) equals the generic Array-API code: one
geometry table for max and average pooling over every implementation, in float64 and float32, on
NCHW- and NHWC-strided inputs and on channel-major planes, with ties, NaN and -inf windows."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import kernel_cases
from kernel_cases import LAYOUT_IMPLS, LOOKUP_IMPLS, case_ids, layout, reference, with_dtypes
from xpnet.backends.cupy import pool as cupy_pool
from xpnet.backends.kernels import PoolForward
from xpnet.backends.numpy import pool as npool
from xpnet.nn.functional import conv as conv_mod
from xpnet.nn.functional import pool as pool_mod
from xpnet.nn.functional.pool import AvgPool2dFunction, MaxPool2dFunction

MAX_FORWARD, MAX_BACKWARD = MaxPool2dFunction.forward_kernel, MaxPool2dFunction.backward_kernel
AVG_FORWARD, AVG_BACKWARD = AvgPool2dFunction.forward_kernel, AvgPool2dFunction.backward_kernel

# (kernel, stride, padding, dilation, ceil_mode, H, W)
POOL_CASES = [
    ((2, 2), (2, 2), 0, (1, 1), False, 8, 8),
    ((2, 2), (2, 2), 0, (1, 1), False, 7, 9),
    ((3, 3), (2, 2), 1, (1, 1), False, 9, 8),
    ((3, 3), (1, 1), 1, (1, 1), False, 6, 5),
    ((3, 2), (2, 1), 1, (1, 1), True, 7, 8),
    ((2, 2), (3, 3), 1, (1, 1), True, 8, 7),
    ((3, 3), (1, 1), 1, (2, 2), False, 7, 7),
]
AVG_CASES = [c for c in POOL_CASES if c[3] == (1, 1)]

impl = kernel_cases.impl  # the fixture: the implementations (see kernel_cases.py)


def _geometry(case):
    kernel, stride, p, dilation, ceil_mode, h, w = case
    pad = ((p, p), (p, p))
    out = conv_mod.conv2d_output_size((h, w), kernel, stride, pad, dilation, ceil_mode=ceil_mode)
    return kernel, stride, pad, dilation, out


def _generic_max(x, g, geometry):
    ref = pool_mod.max_pool2d_forward_generic(x, *geometry)
    return ref, pool_mod.max_pool2d_backward_generic(g, ref.saved)


def _generic_avg(x, g, args):
    ref = pool_mod.avg_pool2d_forward_generic(x, *args)
    return ref, pool_mod.avg_pool2d_backward_generic(g, ref.saved)


def _check_max(impl, x, g, geometry, exact_forward=False):
    """max_pool2d forward and backward of ``impl`` against the generic code's (host arrays)."""
    dtype = x.dtype.name
    ref, expected = reference(_generic_max, x, g, geometry)
    assert isinstance(ref, PoolForward)
    forward, backward = impl.kernel(MAX_FORWARD), impl.kernel(MAX_BACKWARD)
    for on in impl.arrays:
        out = forward(on.put(x), *geometry)
        assert isinstance(out, PoolForward), type(out)
        if exact_forward:  # NaNs in the same places
            np.testing.assert_array_equal(on.host(out.y), ref.y)
        impl.close(out.y, ref.y, dtype)
        impl.close(backward(on.put(g), out.saved), expected, dtype)


@pytest.mark.parametrize("impl, dtype, channels_last", with_dtypes(layouts=True), indirect=["impl"])
@pytest.mark.parametrize("case", POOL_CASES, ids=case_ids(POOL_CASES))
def test_max_pool2d_equals_generic(impl, rng, case, channels_last, dtype):
    geometry = _geometry(case)
    # a coarse grid of values makes ties common: every implementation routes them to the first maximum
    x = layout(rng.integers(0, 4, (2, 3) + case[5:]).astype(dtype), channels_last)
    g = layout(rng.standard_normal((2, 3) + geometry[-1]).astype(dtype), not channels_last)
    _check_max(impl, x, g, geometry)


@pytest.mark.parametrize("impl, dtype, channels_last", with_dtypes(layouts=True), indirect=["impl"])
@pytest.mark.parametrize("case", POOL_CASES, ids=case_ids(POOL_CASES))
def test_max_pool2d_nan_and_inf_windows_match_generic(impl, rng, case, channels_last, dtype):
    # NaNs win their windows (the last NaN, as in PyTorch), -inf windows still pick a real element
    geometry = _geometry(case)
    x = rng.integers(0, 4, (2, 3) + case[5:]).astype(dtype)
    x[0, 0, :2, :3] = np.nan
    x[1, 2] = -np.inf
    x[0, 1, 1, 1::2] = np.nan
    x = layout(x, channels_last)
    g = rng.standard_normal((2, 3) + geometry[-1]).astype(dtype)
    with np.errstate(invalid="ignore"):
        _check_max(impl, x, g, geometry, exact_forward=True)


@pytest.mark.parametrize("impl", LAYOUT_IMPLS, indirect=True)
@pytest.mark.parametrize("case", POOL_CASES, ids=case_ids(POOL_CASES))
def test_max_pool2d_equals_generic_on_channel_major_planes(impl, rng, case):
    geometry = _geometry(case)
    x = np.ascontiguousarray(rng.integers(0, 4, (3, 2) + case[5:]).astype("float32")).transpose(1, 0, 2, 3)
    out_shape = (2, 3) + geometry[-1]
    # the gradient in the planes' layout, reversed, and NCHW-contiguous
    for g in (np.ascontiguousarray(rng.standard_normal(out_shape[::-1]).astype("float32")).transpose(3, 2, 1, 0),
              np.ascontiguousarray(rng.standard_normal(out_shape).astype("float32"))):
        _check_max(impl, x, g, geometry)


@pytest.mark.parametrize("impl, dtype, channels_last", with_dtypes(layouts=True), indirect=["impl"])
@pytest.mark.parametrize("case", AVG_CASES, ids=case_ids(AVG_CASES))
def test_avg_pool2d_equals_generic(impl, rng, case, channels_last, dtype):
    kernel, stride, pad, _, out = _geometry(case)
    x = layout(rng.standard_normal((2, 3) + case[5:]).astype(dtype), channels_last)
    g = rng.standard_normal((2, 3) + out).astype(dtype)
    forward, backward = impl.kernel(AVG_FORWARD), impl.kernel(AVG_BACKWARD)
    for count_include_pad in (True, False):
        for override in (None, 3):
            args = (kernel, stride, pad, out, count_include_pad, override)
            ref, expected = reference(_generic_avg, x, g, args)
            assert isinstance(ref, PoolForward)
            for on in impl.arrays:
                fast = forward(on.put(x), *args)
                assert isinstance(fast, PoolForward), type(fast)
                impl.close(fast.y, ref.y, dtype)
                impl.close(backward(on.put(g), fast.saved), expected, dtype)


@pytest.mark.parametrize("impl", LOOKUP_IMPLS, indirect=True)
def test_pool_kernels_are_looked_up_by_the_functions(impl):
    names = (MAX_FORWARD, MAX_BACKWARD, AVG_FORWARD, AVG_BACKWARD)
    expected = {"generic": (None,) * 4,  # no fast path: the Functions run the generic code
                "numpy": (npool.max_pool2d_forward, npool.max_pool2d_backward, npool.avg_pool2d_forward,
                          npool.avg_pool2d_backward),
                "cupy": (cupy_pool.max_pool2d_forward, cupy_pool.max_pool2d_backward, cupy_pool.avg_pool2d_forward,
                         cupy_pool.avg_pool2d_backward)}
    backend = xpnet.get_backend(impl.backend)
    assert tuple(backend.kernel(name) for name in names) == expected[impl.name]
