"""Registered fast paths equal the generic Array-API code: NumPy kernels on random inputs (float32 and
float64, NCHW- and NHWC-strided inputs, a geometry grid), and that the functional code uses them."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.backends import kernels
from xpnet.backends.numpy import activation as nact
from xpnet.backends.numpy import conv as nconv
from xpnet.backends.numpy import im2col as nim2col
from xpnet.backends.numpy import linalg as nlinalg
from xpnet.backends.numpy import native
from xpnet.backends.numpy import norm as nnorm
from xpnet.backends.numpy import planar as nplanar
from xpnet.backends.numpy import pool as npool
from xpnet.backends.numpy import runtime as nruntime
from xpnet.backends.numpy import winograd as nwino
from xpnet.nn.functional import conv as conv_mod
from xpnet.nn.functional import norm as norm_mod
from xpnet.nn.functional import pool as pool_mod

TOL = {"float64": dict(rtol=1e-11, atol=1e-11), "float32": dict(rtol=2e-5, atol=2e-5)}

# (N, C, H, W, O, kernel, stride, padding ((t, b), (l, r)), dilation, groups)
CONV_CASES = [
    (2, 3, 8, 8, 4, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    (3, 4, 7, 9, 6, (3, 2), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    (2, 4, 9, 8, 4, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    (2, 2, 10, 9, 3, (5, 5), (3, 2), ((2, 2), (1, 1)), (1, 1), 1),
    (2, 3, 9, 9, 2, (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 1),
    (2, 4, 6, 7, 6, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
    (2, 4, 7, 7, 4, (3, 3), (2, 1), ((1, 1), (0, 0)), (1, 2), 4),
    (2, 2, 6, 5, 3, (2, 2), (1, 1), ((0, 1), (0, 1)), (1, 1), 1),
    (1, 2, 5, 5, 2, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    (2, 3, 4, 4, 2, (3, 3), (1, 1), ((3, 3), (3, 3)), (1, 1), 1),
    (2, 3, 23, 23, 4, (11, 11), (4, 4), ((2, 2), (2, 2)), (1, 1), 1),
    # few channels, wide rows: the column matrix is built transposed (see numpy/im2col.py: im2col)
    (2, 1, 12, 12, 6, (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1),
    (2, 2, 9, 16, 3, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    (2, 1, 20, 20, 4, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    # odd output sizes and asymmetric padding: Winograd's 2x2 tiles cropped at the edges
    (3, 5, 7, 9, 6, (3, 3), (1, 1), ((0, 2), (2, 1)), (1, 1), 1),
    (2, 3, 5, 6, 2, (3, 3), (1, 1), ((0, 0), (1, 0)), (1, 1), 1),
]


def _layout(a, channels_last):
    """The same values, stored NCHW-contiguous or as an NCHW view of NHWC memory."""
    if not channels_last:
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _close(fast, generic, dtype):
    assert fast.dtype == generic.dtype == np.dtype(dtype)
    assert fast.shape == generic.shape
    np.testing.assert_allclose(fast, generic, **TOL[dtype])


def _out_hw(x, w, stride, padding, dilation):
    return conv_mod.conv2d_output_size(tuple(x.shape[-2:]), tuple(w.shape[2:]), stride, padding, dilation)


def _fast_conv(x, w, b, stride, padding, dilation, groups):
    """The NumPy conv2d_forward kernel, given the output size as Convolution2d.forward computes it."""
    return nconv.conv2d_forward(x, w, b, stride, padding, dilation, groups, _out_hw(x, w, stride, padding, dilation))


def _generic_conv(x, w, b, stride, padding, dilation, groups):
    return conv_mod.conv2d_forward_generic(x, w, b, stride, padding, dilation, groups,
                                           _out_hw(x, w, stride, padding, dilation))


def _native_or_skip():
    if native.library() is None:
        pytest.skip(f"compiled kernels: {native.status()}")


@pytest.fixture(params=["compiled", "numpy"])
def impl(request, monkeypatch):
    """Run a test on the compiled kernels (xpnet/backends/csrc) and on the pure-NumPy ones."""
    if request.param == "compiled":
        _native_or_skip()
    else:
        monkeypatch.setenv("XPNET_NATIVE", "0")
    return request.param


@pytest.mark.parametrize("dtype, path", [("float64", "planar"), ("float64", "nhwc_only"), ("float32", "native"),
                                         ("float32", "planar"), ("float32", "nhwc_only"), ("float32", "winograd"),
                                         ("float64", "winograd")])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"case{i}" for i in range(len(CONV_CASES))])
def test_conv2d_fast_equals_generic(rng, case, path, channels_last, dtype, monkeypatch):
    # "native": few-channel stride-1 float32 convolutions run the compiled wide-row kernels
    # (numpy/planar.py: WideConv); "planar": those run on NumPy's channel-major planes
    # (planar.py: PlanarConv); "nhwc_only": every convolution takes the NHWC im2col path
    # "winograd": every 3x3 stride-1 convolution (forward and input gradient) runs as Winograd
    # F(2x2, 3x3) (numpy/winograd.py), whatever its size
    if path in ("native", "winograd"):
        _native_or_skip()
    else:
        monkeypatch.setenv("XPNET_NATIVE", "0")
    if path in ("nhwc_only", "winograd"):
        monkeypatch.setattr(nplanar, "PLANAR_MAX_CHANNELS", 0)
    if path == "winograd":
        monkeypatch.setattr(nwino, "WINOGRAD_MIN_CHANNELS", 1)
        monkeypatch.setattr(nwino, "WINOGRAD_MIN_PIXELS", 1)
        monkeypatch.setattr(nwino, "WINOGRAD_ROWS", 5)  # several chunks, a ragged last one
    n, c, h, w, o, kernel, stride, padding, dilation, groups = case
    x = _layout(rng.standard_normal((n, c, h, w)).astype(dtype), channels_last)
    wt = rng.standard_normal((o, c // groups) + kernel).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    yf, sf = _fast_conv(x, wt, b, stride, padding, dilation, groups)
    yg, sg = _generic_conv(x, wt, b, stride, padding, dilation, groups)
    _close(yf, yg, dtype)
    g = _layout(rng.standard_normal(yg.shape).astype(dtype), not channels_last)
    for needs in ((True, True, True), (False, True, False), (True, False, False)):
        fast = nconv.conv2d_backward(g, sf, needs)
        generic = conv_mod.conv2d_backward_generic(g, sg, needs)
        for a, bgen, need in zip(fast, generic, needs):
            assert (a is None) == (not need) == (bgen is None)
            if need:
                _close(a, bgen, dtype)


def test_conv2d_fast_path_without_bias_and_repeated_calls(rng):
    # workspaces are reused across calls of different shapes: results must not leak between them
    for shape, o in (((2, 3, 9, 9), 4), ((1, 5, 4, 6), 2), ((2, 3, 9, 9), 4)):
        x = rng.standard_normal(shape).astype("float32")
        wt = rng.standard_normal((o, shape[1], 3, 3)).astype("float32")
        yf, sf = _fast_conv(x, wt, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
        yg, sg = _generic_conv(x, wt, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
        _close(yf, yg, "float32")
        g = rng.standard_normal(yg.shape).astype("float32")
        for a, b in zip(nconv.conv2d_backward(g, sf, (True, True, False))[:2],
                        conv_mod.conv2d_backward_generic(g, sg, (True, True, False))[:2]):
            _close(a, b, "float32")


def test_conv2d_chunking_matches_single_chunk(rng, monkeypatch):
    x = rng.standard_normal((5, 4, 6, 6))
    wt = rng.standard_normal((3, 4, 3, 3))
    args = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    y_one, s_one = _fast_conv(x, wt, None, *args)
    g = rng.standard_normal(y_one.shape)
    grads_one = nconv.conv2d_backward(g, s_one, (True, True, False))
    monkeypatch.setattr(nim2col, "CHUNK_BYTES", 1)  # one image per chunk
    y_many, s_many = _fast_conv(x, wt, None, *args)
    grads_many = nconv.conv2d_backward(g, s_many, (True, True, False))
    np.testing.assert_allclose(y_many, y_one, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_many[:2], grads_one[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


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


def _pool_geometry(case):
    kernel, stride, p, dilation, ceil_mode, h, w = case
    pad = ((p, p), (p, p))
    out = conv_mod.conv2d_output_size((h, w), kernel, stride, pad, dilation, ceil_mode=ceil_mode)
    return kernel, stride, pad, dilation, out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[f"case{i}" for i in range(len(POOL_CASES))])
def test_max_pool2d_fast_equals_generic(impl, rng, case, channels_last, dtype):
    kernel, stride, pad, dilation, out = _pool_geometry(case)
    # a coarse grid of values makes ties common: both must route them to the first maximum
    x = _layout(rng.integers(0, 4, (2, 3) + case[5:]).astype(dtype), channels_last)
    yf, sf = npool.max_pool2d_forward(x, kernel, stride, pad, dilation, out)
    yg, sg = pool_mod.max_pool2d_forward_generic(x, kernel, stride, pad, dilation, out)
    _close(yf, yg, dtype)
    g = _layout(rng.standard_normal(yg.shape).astype(dtype), not channels_last)
    _close(npool.max_pool2d_backward(g, sf), pool_mod.max_pool2d_backward_generic(g, sg), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[f"case{i}" for i in range(len(POOL_CASES))])
def test_max_pool2d_nan_and_inf_windows_match_generic(impl, rng, case, channels_last, dtype):
    # NaNs win their windows (the last NaN, as in PyTorch), -inf windows still pick a real element
    kernel, stride, pad, dilation, out = _pool_geometry(case)
    x = rng.integers(0, 4, (2, 3) + case[5:]).astype(dtype)
    x[0, 0, :2, :3] = np.nan
    x[1, 2] = -np.inf
    x[0, 1, 1, 1::2] = np.nan
    x = _layout(x, channels_last)
    with np.errstate(invalid="ignore"):
        yf, sf = npool.max_pool2d_forward(x, kernel, stride, pad, dilation, out)
        yg, sg = pool_mod.max_pool2d_forward_generic(x, kernel, stride, pad, dilation, out)
        np.testing.assert_array_equal(yf, yg)
        g = rng.standard_normal(yg.shape).astype(dtype)
        _close(npool.max_pool2d_backward(g, sf), pool_mod.max_pool2d_backward_generic(g, sg), dtype)


@pytest.mark.parametrize("case", POOL_CASES, ids=[f"case{i}" for i in range(len(POOL_CASES))])
def test_max_pool2d_fast_equals_generic_on_channel_major_planes(impl, rng, case):
    kernel, stride, pad, dilation, out = _pool_geometry(case)
    x = np.ascontiguousarray(rng.integers(0, 4, (3, 2) + case[5:]).astype("float32")).transpose(1, 0, 2, 3)
    yf, sf = npool.max_pool2d_forward(x, kernel, stride, pad, dilation, out)
    yg, sg = pool_mod.max_pool2d_forward_generic(x, kernel, stride, pad, dilation, out)
    _close(yf, yg, "float32")
    for g in (np.ascontiguousarray(rng.standard_normal(yg.shape[::-1]).astype("float32")).transpose(3, 2, 1, 0),
              np.ascontiguousarray(rng.standard_normal(yg.shape).astype("float32"))):
        _close(npool.max_pool2d_backward(g, sf), pool_mod.max_pool2d_backward_generic(g, sg), "float32")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[3] == (1, 1)],
                         ids=[f"case{i}" for i, c in enumerate(POOL_CASES) if c[3] == (1, 1)])
def test_avg_pool2d_fast_equals_generic(rng, case, count_include_pad, dtype):
    kernel, stride, pad, _, out = _pool_geometry(case)
    x = _layout(rng.standard_normal((2, 3) + case[5:]).astype(dtype), True)
    for override in (None, 3):
        yf, sf = npool.avg_pool2d_forward(x, kernel, stride, pad, out, count_include_pad, override)
        yg, sg = pool_mod.avg_pool2d_forward_generic(x, kernel, stride, pad, out, count_include_pad, override)
        _close(yf, yg, dtype)
        g = rng.standard_normal(yg.shape).astype(dtype)
        _close(npool.avg_pool2d_backward(g, sf), pool_mod.avg_pool2d_backward_generic(g, sg), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape,channels_last", [((7, 3), False), ((4, 3, 5), False), ((3, 4, 5, 6), False),
                                                 ((3, 4, 5, 6), True)], ids=["NC", "NCL", "NCHW", "NHWC"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_fast_equals_generic(impl, rng, shape, channels_last, training, affine, dtype):
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype) * 3 + 1
    if channels_last:
        x = _layout(x, True)
    gamma = rng.standard_normal(c).astype(dtype) if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None
    mean = None if training else rng.standard_normal(c).astype(dtype)
    var = None if training else (rng.random(c) + 0.5).astype(dtype)
    yf, sf, mf, vf = nnorm.batch_norm_forward(x, gamma, beta, mean, var, training, 1e-5)
    yg, sg, mg, vg = norm_mod.batch_norm_forward_generic(x, gamma, beta, mean, var, training, 1e-5)
    _close(yf, yg, dtype)
    if training:
        _close(mf, mg, dtype)
        _close(vf, vg, dtype)
    else:
        assert mf is None and vf is None
    g = rng.standard_normal(shape).astype(dtype)
    needs = (True, affine, affine)
    for a, b in zip(nnorm.batch_norm_backward(g, sf, needs), norm_mod.batch_norm_backward_generic(g, sg, needs)):
        assert (a is None) == (b is None)
        if a is not None:
            _close(a, b, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("size,beta", [(5, 0.75), (2, 0.5), (3, 1.0), (4, 0.6), (1, 0.75)])
@pytest.mark.parametrize("shape,channels_last", [((3, 7, 4, 5), True), ((3, 7, 4, 5), False), ((4, 6, 9), False)],
                         ids=["NHWC", "NCHW", "NCL"])
def test_local_response_norm_fast_equals_generic(rng, size, beta, shape, channels_last, dtype):
    x = rng.standard_normal(shape).astype(dtype) * 3
    if channels_last:
        x = _layout(x, True)
    yf, sf = nnorm.local_response_norm_forward(x, size, 0.5, beta, 1.5)
    yg, sg = norm_mod.lrn_forward_generic(x, size, 0.5, beta, 1.5)
    _close(yf, yg, dtype)
    g = rng.standard_normal(shape).astype(dtype)
    _close(nnorm.local_response_norm_backward(g, sf), norm_mod.lrn_backward_generic(g, sg), dtype)


def test_numpy_backend_uses_registered_kernels():
    backend = xpnet.get_backend("numpy")
    modules = {nconv: ("conv2d_forward", "conv2d_backward"),
               npool: ("max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"),
               nnorm: ("batch_norm_forward", "batch_norm_backward", "local_response_norm_forward",
                       "local_response_norm_backward"),
               nact: ("relu_forward", "relu_backward"), nlinalg: ("matmul",)}
    for module, names in modules.items():
        for name in names:
            assert backend.kernel(getattr(kernels, name.upper())) is getattr(module, name)
    assert xpnet.get_backend("array_api_strict").kernel(kernels.CONV2D_FORWARD) is None
    with pytest.raises(TypeError, match="expected a KernelName"):
        backend.kernel("conv2d_forward")  # a plain (possibly misspelled) string is refused


def test_fast_outputs_are_channels_last_and_float32(rng):
    # the layout contract that makes the next layer's im2col free
    o = nplanar.PLANAR_MAX_CHANNELS + 1
    x = rng.standard_normal((2, 3, 8, 8)).astype("float32")
    w = rng.standard_normal((o, 3, 3, 3)).astype("float32")
    y, _ = _fast_conv(x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    assert y.dtype == np.float32 and y.transpose(0, 2, 3, 1).flags.c_contiguous
    p, _ = npool.max_pool2d_forward(y, (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), (4, 4))
    assert p.dtype == np.float32 and p.transpose(0, 2, 3, 1).flags.c_contiguous
    bn, *_ = nnorm.batch_norm_forward(y, np.ones(o, "float32"), np.zeros(o, "float32"), None, None, True, 1e-5)
    assert bn.dtype == np.float32 and bn.transpose(0, 2, 3, 1).flags.c_contiguous


def test_few_channel_outputs_stay_channel_major(rng, monkeypatch):
    # NumPy's narrow stride-1 convolution writes (C, N, H, W) planes; ReLU, pooling and the backward keep them
    monkeypatch.setenv("XPNET_NATIVE", "0")
    x = rng.standard_normal((3, 1, 12, 12)).astype("float32")
    w = rng.standard_normal((6, 1, 5, 5)).astype("float32")
    y, saved = _fast_conv(x, w, None, (1, 1), ((2, 2), (2, 2)), (1, 1), 1)
    assert y.transpose(1, 0, 2, 3).flags.c_contiguous
    r, _ = nact.relu_forward(y)
    assert r.transpose(1, 0, 2, 3).flags.c_contiguous
    p, psaved = npool.max_pool2d_forward(r, (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), (6, 6))
    assert p.transpose(1, 0, 2, 3).flags.c_contiguous
    dp = npool.max_pool2d_backward(np.ascontiguousarray(p.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3), psaved)
    assert dp.transpose(1, 0, 2, 3).flags.c_contiguous
    w2 = rng.standard_normal((16, 6, 5, 5)).astype("float32")
    y2, saved2 = _fast_conv(p, w2, None, (1, 1), ((0, 0), (0, 0)), (1, 1), 1)
    dx, _, _ = nconv.conv2d_backward(np.ones(y2.shape, "float32"), saved2, (True, True, False))
    assert dx.transpose(1, 0, 2, 3).flags.c_contiguous


def test_compiled_few_channel_outputs_are_nchw_contiguous(rng):
    # the compiled kernels write NCHW; ReLU, pooling and the backward keep it
    _native_or_skip()
    x = rng.standard_normal((3, 1, 12, 12)).astype("float32")
    w = rng.standard_normal((6, 1, 5, 5)).astype("float32")
    y, _ = _fast_conv(x, w, None, (1, 1), ((2, 2), (2, 2)), (1, 1), 1)
    r, _ = nact.relu_forward(y)
    p, psaved = npool.max_pool2d_forward(r, (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), (6, 6))
    assert y.flags.c_contiguous and r.flags.c_contiguous and p.flags.c_contiguous
    w2 = rng.standard_normal((16, 6, 5, 5)).astype("float32")
    y2, saved2 = _fast_conv(p, w2, None, (1, 1), ((0, 0), (0, 0)), (1, 1), 1)
    dx, _, _ = nconv.conv2d_backward(np.ones(y2.shape, "float32"), saved2, (True, True, False))
    assert y2.flags.c_contiguous and dx.flags.c_contiguous


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("where", ["input", "weight"])
def test_planar_conv_non_finite_values_match_generic(rng, where, dtype):
    # the wide rows multiply zero gradients by input values past the output's width: 0 * inf must not
    # reach dW, nor an infinite weight's 0 * inf the input gradient (float32: the compiled kernels)
    x = rng.standard_normal((2, 2, 7, 7)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    if where == "input":
        x[0, 1, 3, 6] = np.inf
        x[1, 0, 6, 5] = np.nan
    else:
        w[1, 0, 2, 2] = np.inf
    args = ((1, 1), ((0, 0), (0, 0)), (1, 1), 1)
    assert nplanar.on_planes(w, (1, 1), 1)
    g = rng.standard_normal((2, 3, 5, 5)).astype(dtype)
    with np.errstate(invalid="ignore"):
        _, sf = _fast_conv(x, w, None, *args)
        _, sg = _generic_conv(x, w, None, *args)
        for a, b in zip(nconv.conv2d_backward(g, sf, (True, True, False))[:2],
                        conv_mod.conv2d_backward_generic(g, sg, (True, True, False))[:2]):
            np.testing.assert_allclose(a, b, **TOL[dtype])


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_kernels_work_in_a_forked_child(rng):
    """A forked data-loading worker inherits the kernel thread pool object without its threads."""
    import os

    x = rng.standard_normal((4, 3, 8, 8)).astype("float32")
    w = rng.standard_normal((4, 3, 3, 3)).astype("float32")
    expected, _ = _fast_conv(x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)  # the pool now exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            y, _ = _fast_conv(x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
            os.write(write, b"ok" if np.allclose(y, expected) else b"mismatch")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 16) == b"ok" and status == 0
    os.close(read)


def test_batch_norm_fast_statistics_stay_accurate_with_a_large_offset(impl, rng):
    # per-block shifting and Chan's merge: no cancellation when |mean| >> std (E[x^2] - E[x]^2 is off by 3e5 here)
    x = (rng.standard_normal((64, 8, 8, 16)) * 0.01 + 1000.0).astype("float32").transpose(0, 3, 1, 2)
    _, _, mean, var = nnorm.batch_norm_forward(x, None, None, None, None, True, 1e-5)
    exact = np.asarray(x, dtype=np.float64).transpose(0, 2, 3, 1).reshape(-1, 16)
    np.testing.assert_allclose(mean, exact.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, exact.var(0), rtol=2e-4)  # the generic float32 two-pass: ~7e-4


def test_release_workspaces_and_small_jobs(rng, monkeypatch):
    x = rng.standard_normal((6, 4, 9, 9)).astype("float32")
    w = rng.standard_normal((5, 4, 3, 3)).astype("float32")
    args = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    parallel, _ = _fast_conv(x, w, None, *args)
    assert any(store for store in nruntime._stores)
    nruntime.release_workspaces()
    assert not any(store for store in nruntime._stores)
    monkeypatch.setattr(nruntime, "PARALLEL_MIN_ELEMENTS", 1 << 40)  # every job now runs on the calling thread
    serial, _ = _fast_conv(x, w, None, *args)
    np.testing.assert_allclose(serial, parallel, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_backward_fast_path_equals_generic(impl, dtype):
    gen = np.random.default_rng(3)
    x = gen.standard_normal((4, 3, 5, 5)).astype(dtype)
    g = gen.standard_normal(x.shape).astype(dtype)
    mask = x > 0
    np.testing.assert_array_equal(nact.relu_backward(g, mask), np.where(mask, g, 0).astype(dtype))
    # an inf or NaN gradient where the mask is off gives 0, as the generic where does
    g[~mask] = np.inf
    g.flat[np.flatnonzero(~mask)[0]] = np.nan
    out = nact.relu_backward(g, mask)
    np.testing.assert_array_equal(out, np.where(mask, g, 0).astype(dtype))
    assert out.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_relu_fast_paths_equal_generic_in_blocks(impl, dtype, channels_last, monkeypatch):
    monkeypatch.setattr(nact, "ELEMENTWISE_BLOCK", 1000)  # many blocks, a ragged last one
    monkeypatch.setattr(nruntime, "PARALLEL_MIN_ELEMENTS", 256)  # split over the workers
    monkeypatch.setattr(nact, "ELEMENTWISE_PARALLEL_MIN", 256)
    gen = np.random.default_rng(5)
    x = _layout(gen.standard_normal((4, 6, 9, 11)).astype(dtype), channels_last)
    x[0, 0, 0, :3] = [np.nan, -0.0, 0.0]
    y, mask = nact.relu_forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    # numpy: the mask [x > 0]; compiled: y itself, which the backward reads as y > 0
    np.testing.assert_array_equal(mask, x > 0) if impl == "numpy" else np.testing.assert_array_equal(mask, y)
    assert y.dtype == x.dtype and y.strides == x.strides and mask.shape == x.shape
    g = _layout(gen.standard_normal(x.shape).astype(dtype), channels_last)
    out = nact.relu_backward(g, mask)
    np.testing.assert_array_equal(out, np.where(x > 0, g, 0))
    assert out.dtype == g.dtype and out.strides == g.strides
    # a non-finite gradient under the mask's zeros in one block gives 0 there, not NaN
    g[~(x > 0)] = np.inf
    np.testing.assert_array_equal(nact.relu_backward(g, mask), np.where(x > 0, g, 0))
    # a gradient laid out unlike the mask takes the whole-array path
    other = np.ascontiguousarray(g) if channels_last else _layout(np.array(g), True)
    np.testing.assert_array_equal(nact.relu_backward(other, mask), np.where(x > 0, other, 0))


def test_relu_forward_small_or_strided_input(impl):
    x = np.random.default_rng(6).standard_normal((3, 40, 50)).astype("float32")
    g = np.random.default_rng(7).standard_normal(x.shape).astype("float32")
    for arr, grad in ((x[:1, :2], g[:1, :2]), (x[:, ::2], g[:, ::2])):
        y, saved = nact.relu_forward(arr)
        np.testing.assert_array_equal(y, np.maximum(arr, 0))
        np.testing.assert_array_equal(nact.relu_backward(grad, saved), np.where(arr > 0, grad, 0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_fast_path_equals_numpy(dtype, monkeypatch):
    monkeypatch.setattr(nruntime, "PARALLEL_MIN_ELEMENTS", 64)  # split the rows over the workers
    monkeypatch.setattr(nlinalg, "MATMUL_WORKERS_MAX", 1 << 13)  # a (100, 33) x (33, 5) product goes to np.matmul
    gen = np.random.default_rng(7)
    w = gen.standard_normal((5, 33)).astype(dtype)
    for a in (gen.standard_normal((2, 7, 33)).astype(dtype),  # leading dims flattened to rows
              gen.standard_normal((40, 33)).astype(dtype).T.copy().T,  # a transposed (F-order) operand
              gen.standard_normal((0, 33)).astype(dtype),
              gen.standard_normal((100, 33)).astype(dtype),
              gen.standard_normal(33).astype(dtype)):
        out = nlinalg.matmul(a, w.T)
        expected = np.matmul(a, w.T)
        assert out.shape == expected.shape and out.dtype == expected.dtype
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # dW = G^T X: both operands transposed views
    g = gen.standard_normal((40, 5)).astype(dtype)
    x = gen.standard_normal((40, 33)).astype(dtype)
    np.testing.assert_allclose(nlinalg.matmul(g.T, x), g.T @ x, rtol=1e-5, atol=1e-5)
    # other shapes and mixed dtypes are plain np.matmul
    np.testing.assert_array_equal(nlinalg.matmul(np.ones((2, 3, 4)), np.ones((2, 4, 5))), np.full((2, 3, 5), 4.0))
    assert nlinalg.matmul(np.ones((2, 3), dtype="float32"), np.ones((3, 2))).dtype == np.float64


def test_matmul_fast_path_leaves_blas_thread_count(monkeypatch):
    if not nruntime.blas_threads.available:
        pytest.skip("no OpenBLAS thread control here")
    before = nruntime.blas_threads._get()
    nlinalg.matmul(np.ones((64, 128), dtype="float32"), np.ones((128, 10), dtype="float32"))
    assert nruntime.blas_threads._get() == before


def test_relu_backward_from_the_compiled_forward_without_the_library(rng, monkeypatch):
    # the compiled forward keeps y for the backward; switched off in between, NumPy reads y > 0
    _native_or_skip()
    x = rng.standard_normal((3, 4, 5, 6)).astype("float32")
    x[0, 0, 0, :2] = [np.nan, -0.0]
    y, saved = nact.relu_forward(x)
    assert saved is y
    g = rng.standard_normal(x.shape).astype("float32")
    monkeypatch.setenv("XPNET_NATIVE", "0")
    np.testing.assert_array_equal(nact.relu_backward(g, saved), np.where(x > 0, g, 0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_norm_split_over_workers_equals_generic(impl, rng, dtype, monkeypatch):
    # each worker's moments (shifted by its own first row) merge into the batch's; sums add
    monkeypatch.setattr(nruntime, "PARALLEL_MIN_ELEMENTS", 16)
    x = _layout((rng.standard_normal((5, 3, 4, 7)) * 2 + 50).astype(dtype), True)
    gamma, beta = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    yf, sf, mf, vf = nnorm.batch_norm_forward(x, gamma, beta, None, None, True, 1e-5)
    yg, sg, mg, vg = norm_mod.batch_norm_forward_generic(x, gamma, beta, None, None, True, 1e-5)
    for a, b in ((yf, yg), (mf, mg), (vf, vg)):
        _close(a, b, dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    for a, b in zip(nnorm.batch_norm_backward(g, sf, (True, True, True)),
                    norm_mod.batch_norm_backward_generic(g, sg, (True, True, True))):
        _close(a, b, dtype)
