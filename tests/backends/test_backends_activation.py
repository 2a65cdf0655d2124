"""The ReLU kernel family (numpy/activation.py, cupy/activation.py) equals the generic code of the
ReLU Function (xpnet/autodiff/ops/elementwise.py) exactly: NaN and signed zeros in, infinite and NaN
gradients where the mask is off, contiguous and strided layouts, over every implementation; then the
NumPy kernels' blocks, layouts and the two kinds of saved value (a mask, or the compiled y)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import kernel_cases
from kernel_cases import (DTYPES, LOOKUP_IMPLS, NUMPY_IMPLS, layout, relu_backward_generic, relu_forward_generic,
                          with_dtypes)
from xpnet.autodiff.ops.elementwise import ReLU
from xpnet.backends.cupy import activation as cupy_act
from xpnet.backends.kernels import ReLUForward
from xpnet.backends.numpy import activation as nact
from xpnet.backends.numpy import native
from xpnet.backends.numpy import runtime as nruntime

FORWARD, BACKWARD = ReLU.forward_kernel, ReLU.backward_kernel

impl = kernel_cases.impl  # the fixture: the implementations (see kernel_cases.py)


def _check_saved(impl, on, out, x):
    """What each implementation keeps for its backward: the mask [x > 0], or (compiled) y itself."""
    if impl.name == "cupy":
        np.testing.assert_array_equal(on.host(out.saved.mask), x > 0)
    elif impl.name == "numpy-compiled" and x.dtype in (np.float32, np.float64):
        assert out.saved is out.y
    else:
        saved = on.host(out.saved)
        assert saved.dtype == np.bool_
        np.testing.assert_array_equal(saved, x > 0)


@pytest.mark.parametrize("impl, dtype, channels_last",  # (CuPy's ReLU runs on any strides: both layouts too)
                         with_dtypes(dtypes=DTYPES + ("float16",), layouts=NUMPY_IMPLS + ("cupy",)), indirect=["impl"])
def test_relu_equals_generic(impl, rng, channels_last, dtype):
    x = rng.standard_normal((3, 5, 7, 4)).astype(dtype)
    x[0, 0, 0, :3] = [np.nan, 0.0, -0.0]  # a NaN stays NaN; zeros are not > 0
    x = layout(x, channels_last)
    ref = relu_forward_generic(x)
    assert isinstance(ref, ReLUForward)
    g = layout(rng.standard_normal(x.shape).astype(dtype), channels_last)
    g[1, 1, 1, 1] = np.inf
    # an inf or NaN gradient where the mask is off gives 0, as the generic where does
    off = ~(x > 0)
    g[off] = np.inf
    g[np.unravel_index(np.flatnonzero(off)[0], x.shape)] = np.nan
    expected = relu_backward_generic(g, ref.saved)
    forward, backward = impl.kernel(FORWARD), impl.kernel(BACKWARD)
    for on in impl.arrays:
        out = forward(on.put(x))
        assert isinstance(out, ReLUForward), type(out)
        y = on.host(out.y)
        assert y.dtype == ref.y.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(y, ref.y)
        _check_saved(impl, on, out, x)
        dx = on.host(backward(on.put(g), out.saved))
        assert dx.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(dx, expected)
    if impl.numpy:  # the NumPy backward also takes the generic forward's mask
        np.testing.assert_array_equal(backward(g, ref.saved), expected)


def test_relu_small_or_strided_input(impl):
    x = np.random.default_rng(6).standard_normal((3, 40, 50)).astype("float32")
    g = np.random.default_rng(7).standard_normal(x.shape).astype("float32")
    forward, backward = impl.kernel(FORWARD), impl.kernel(BACKWARD)
    for arr, grad in ((x[:1, :2], g[:1, :2]), (x[:, ::2], g[:, ::2])):
        ref = relu_forward_generic(arr)
        expected = relu_backward_generic(grad, ref.saved)
        for on in impl.arrays:
            y, saved = forward(on.put(arr))
            np.testing.assert_array_equal(on.host(y), ref.y)
            np.testing.assert_array_equal(on.host(backward(on.put(grad), saved)), expected)


@pytest.mark.parametrize("impl, dtype, channels_last", with_dtypes(NUMPY_IMPLS, layouts=True),
                         indirect=["impl"])
def test_relu_numpy_kernels_in_blocks(impl, dtype, channels_last, monkeypatch):
    monkeypatch.setattr(nact, "ELEMENTWISE_BLOCK", 1000)  # many blocks, a ragged last one
    monkeypatch.setattr(nruntime, "ELEMENTWISE_PARALLEL_MIN", 256)  # split over the workers
    gen = np.random.default_rng(5)
    x = layout(gen.standard_normal((4, 6, 9, 11)).astype(dtype), channels_last)
    x[0, 0, 0, :3] = [np.nan, -0.0, 0.0]
    y, mask = impl.kernel(FORWARD)(x)
    np.testing.assert_array_equal(y, relu_forward_generic(x).y)
    # numpy: the mask [x > 0]; compiled: y itself, which the backward reads as y > 0
    np.testing.assert_array_equal(mask, x > 0) if impl.name == "numpy" else np.testing.assert_array_equal(mask, y)
    assert y.dtype == x.dtype and y.strides == x.strides and mask.shape == x.shape
    backward = impl.kernel(BACKWARD)
    g = layout(gen.standard_normal(x.shape).astype(dtype), channels_last)
    out = backward(g, mask)
    np.testing.assert_array_equal(out, np.where(x > 0, g, 0))
    assert out.dtype == g.dtype and out.strides == g.strides
    # a non-finite gradient under the mask's zeros in one block gives 0 there, not NaN
    g[~(x > 0)] = np.inf
    np.testing.assert_array_equal(backward(g, mask), np.where(x > 0, g, 0))
    # a gradient laid out unlike the mask takes the whole-array path
    other = np.ascontiguousarray(g) if channels_last else layout(np.array(g), True)
    np.testing.assert_array_equal(backward(other, mask), np.where(x > 0, other, 0))


@pytest.mark.parametrize("impl", ["numpy-compiled"], indirect=True)
def test_relu_backward_from_the_compiled_forward_without_the_library(impl, rng, monkeypatch):
    # the compiled forward keeps y for the backward; switched off in between, NumPy reads y > 0
    x = rng.standard_normal((3, 4, 5, 6)).astype("float32")
    x[0, 0, 0, :2] = [np.nan, -0.0]
    y, saved = impl.kernel(FORWARD)(x)
    assert saved is y
    g = rng.standard_normal(x.shape).astype("float32")
    monkeypatch.setitem(native._state, "enabled", False)  # XPNET_NATIVE=0
    np.testing.assert_array_equal(impl.kernel(BACKWARD)(g, saved), np.where(x > 0, g, 0))


@pytest.mark.parametrize("impl", LOOKUP_IMPLS, indirect=True)
def test_relu_kernels_are_looked_up_by_the_function(impl):
    expected = {"generic": (None, None),  # no fast path: ReLU runs its generic code
                "numpy": (nact.relu_forward, nact.relu_backward),
                "cupy": (cupy_act.relu_forward, cupy_act.relu_backward)}
    backend = xpnet.get_backend(impl.backend)
    assert (backend.kernel(FORWARD), backend.kernel(BACKWARD)) == expected[impl.name]
