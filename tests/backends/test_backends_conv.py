"""The conv2d kernel family (numpy/conv.py with im2col.py, planar.py, direct.py and winograd.py; cupy/conv.py)
equals the generic Array-API code: one case table (a geometry grid, float64 and float32, NCHW- and
NHWC-strided inputs) over every implementation and, for the NumPy and CuPy kernels, each way a
convolution can run there; then the NumPy kernels' workspaces, chunks and output layouts."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import kernel_cases
from kernel_cases import CUPY_ONLY, LOOKUP_IMPLS, NUMPY_IMPLS, case_ids, layout, reference, with_dtypes
from xpnet.backends import kernels
from xpnet.backends.cupy import conv as cupy_conv
from xpnet.backends.kernels import ConvForward, ConvGrads
from xpnet.backends.numpy import activation as nact
from xpnet.backends.numpy import conv as nconv
from xpnet.backends.numpy import direct as ndirect
from xpnet.backends.numpy import im2col as nim2col
from xpnet.backends.numpy import norm as nnorm
from xpnet.backends.numpy import planar as nplanar
from xpnet.backends.numpy import pool as npool
from xpnet.backends.numpy import winograd as nwino
from xpnet.nn.functional import conv as conv_mod
from xpnet.nn.functional.conv import Convolution2d

FORWARD, BACKWARD = Convolution2d.forward_kernel, Convolution2d.backward_kernel

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
    # output channels over one vector of the direct loops and a partial last one (see numpy/direct.py)
    (3, 5, 6, 5, 17, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    (2, 9, 5, 7, 40, (3, 3), (2, 1), ((1, 0), (2, 1)), (1, 1), 1),
]
NEEDS = ((True, True, True), (False, True, False), (True, False, False))
SAME_3X3 = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)  # stride, padding, dilation, groups

impl = kernel_cases.impl  # the fixture: the implementations (see kernel_cases.py)


def _route(name, monkeypatch):
    """The ways a convolution runs inside one implementation."""
    if name == "nhwc_only":  # every convolution takes the NHWC im2col path (no channel-major planes)
        monkeypatch.setattr(nplanar, "PLANAR_MAX_CHANNELS", 0)
    elif name == "winograd":  # every 3x3 stride-1 convolution, forward and input gradient, as F(2x2, 3x3)
        monkeypatch.setattr(nplanar, "PLANAR_MAX_CHANNELS", 0)
        monkeypatch.setattr(ndirect, "DIRECT_MAX_CHANNELS", 0)
        monkeypatch.setattr(nwino, "WINOGRAD_MIN_CHANNELS", 1)
        monkeypatch.setattr(nwino, "WINOGRAD_MIN_PIXELS", 1)
        monkeypatch.setattr(nwino, "WINOGRAD_ROWS", 5)  # several chunks, a ragged last one
    elif name == "direct":  # every one-group convolution through the compiled direct NHWC loops
        monkeypatch.setattr(nplanar, "PLANAR_MAX_CHANNELS", 0)
        monkeypatch.setattr(ndirect, "DIRECT_MAX_CHANNELS", 1 << 30)
        monkeypatch.setattr(ndirect, "DIRECT_MAX_PIXELS", 1 << 30)
    elif name == "chunked":  # one image per chunk
        monkeypatch.setattr(cupy_conv, "CHUNK_BYTES", 1)


# (implementation, route), the ways a convolution can run in each: numpy-planar: the defaults, few-channel
# stride-1 convolutions on NumPy's channel-major planes (planar.py: PlanarConv); numpy-nhwc_only: every
# one through NHWC im2col; numpy-compiled-wide_rows: the defaults, those few-channel ones on the compiled
# wide rows (planar.py: WideConv, float32 only); numpy-compiled-winograd: every 3x3 stride-1 one as
# Winograd F(2x2, 3x3) (winograd.py), in chunks; numpy-compiled-direct: every one-group one through the
# direct NHWC loops (direct.py, float32 only; strided ones take col2im for dx); cupy: whole batches, or one image per column chunk
ROUTES = [pytest.param("generic", None, id="generic"),
          pytest.param("numpy", "planar", id="numpy-planar"),
          pytest.param("numpy", "nhwc_only", id="numpy-nhwc_only"),
          pytest.param("numpy-compiled", "wide_rows", id="numpy-compiled-wide_rows"),
          pytest.param("numpy-compiled", "winograd", id="numpy-compiled-winograd"),
          pytest.param("numpy-compiled", "direct", id="numpy-compiled-direct"),
          pytest.param("cupy", "whole", id="cupy-whole", marks=pytest.mark.gpu),
          pytest.param("cupy", "chunked", id="cupy-chunked", marks=pytest.mark.gpu)]
# the compiled wide rows and direct loops are float32 only: in float64 those routes are numpy-planar's
# and numpy-nhwc_only's, not run twice
CONV_PARAMS = [p for p in with_dtypes(ROUTES, layouts=True)
               if not p.id.startswith(("numpy-compiled-wide_rows-float64", "numpy-compiled-direct-float64"))]


def _out_hw(x, w, stride, padding, dilation):
    return conv_mod.conv2d_output_size(tuple(x.shape[-2:]), tuple(w.shape[2:]), stride, padding, dilation)


def _generic(x, w, b, stride, padding, dilation, groups):
    return conv_mod.conv2d_forward_generic(x, w, b, stride, padding, dilation, groups,
                                           _out_hw(x, w, stride, padding, dilation))


def _generic_results(x, w, b, args, out_hw, g, needs_list):
    ref = conv_mod.conv2d_forward_generic(x, w, b, *args, out_hw)
    return ref, {needs: conv_mod.conv2d_backward_generic(g, ref.saved, needs) for needs in needs_list}


def _check(impl, x, w, b, args, g, needs_list=NEEDS):
    """The implementation's forward and backward on (x, w, b) and upstream gradient g (host arrays)
    against the generic code's on NumPy arrays (whose result types are checked too)."""
    dtype = x.dtype.name
    out_hw = _out_hw(x, w, *args[:3])
    if impl.name == "generic":  # on the strict arrays: every gradient at once (it is slow there)
        needs_list = (tuple(map(any, zip(*needs_list))),)
    ref, expected = reference(_generic_results, x, w, b, args, out_hw, g, needs_list)
    assert isinstance(ref, ConvForward), type(ref)
    for needs, grads in expected.items():
        assert isinstance(grads, ConvGrads), type(grads)
        assert all((a is None) == (not need) for a, need in zip(grads, needs))
    forward, backward = impl.kernel(FORWARD), impl.kernel(BACKWARD)
    for on in impl.arrays:
        out = forward(on.put(x), on.put(w), on.put(b), *args, out_hw)
        assert isinstance(out, ConvForward), type(out)
        impl.close(out.y, ref.y, dtype)
        for needs in needs_list:
            grads = backward(on.put(g), out.saved, needs)
            assert isinstance(grads, ConvGrads), type(grads)
            for got, want, need in zip(grads, expected[needs], needs):
                assert (got is None) == (not need) == (want is None)
                if need:
                    impl.close(got, want, dtype)


@pytest.mark.parametrize("impl, route, dtype, channels_last", CONV_PARAMS, indirect=["impl"])
@pytest.mark.parametrize("case", CONV_CASES, ids=case_ids(CONV_CASES))
def test_conv2d_equals_generic(impl, route, rng, case, channels_last, dtype, monkeypatch):
    _route(route, monkeypatch)
    n, c, h, w, o, kernel, stride, padding, dilation, groups = case
    x = layout(rng.standard_normal((n, c, h, w)).astype(dtype), channels_last)
    wt = rng.standard_normal((o, c // groups) + kernel).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    g_shape = (n, o) + _out_hw(x, wt, stride, padding, dilation)
    g = layout(rng.standard_normal(g_shape).astype(dtype), not channels_last)
    _check(impl, x, wt, b, (stride, padding, dilation, groups), g)


def test_conv2d_without_bias_and_repeated_calls(impl, rng):
    # workspaces are reused across calls of different shapes: results must not leak between them
    for shape, o in (((2, 3, 9, 9), 4), ((1, 5, 4, 6), 2), ((2, 3, 9, 9), 4)):
        x = rng.standard_normal(shape).astype("float32")
        wt = rng.standard_normal((o, shape[1], 3, 3)).astype("float32")
        g = rng.standard_normal((shape[0], o) + shape[2:]).astype("float32")
        _check(impl, x, wt, None, SAME_3X3, g, needs_list=((True, True, False),))


@pytest.mark.parametrize("impl, dtype", with_dtypes(), indirect=["impl"])
@pytest.mark.parametrize("where", ["input", "weight"])
def test_conv2d_non_finite_values_on_planes_match_generic(impl, rng, where, dtype):
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
    assert nplanar.on_planes(w, (1, 1), 1)  # the NumPy kernels run this one on channel-major planes
    g = rng.standard_normal((2, 3, 5, 5)).astype(dtype)
    forward, backward = impl.kernel(FORWARD), impl.kernel(BACKWARD)
    with np.errstate(invalid="ignore"):
        _, sg = _generic(x, w, None, *args)
        expected = conv_mod.conv2d_backward_generic(g, sg, (True, True, False))
        for on in impl.arrays:
            saved = forward(on.put(x), on.put(w), None, *args, (5, 5)).saved
            grads = backward(on.put(g), saved, (True, True, False))
            for got, want in zip(grads[:2], expected[:2]):
                np.testing.assert_allclose(on.host(got), want, **impl.tol[dtype])


@pytest.mark.parametrize("impl", NUMPY_IMPLS, indirect=True)
def test_conv2d_chunking_matches_single_chunk(impl, rng, monkeypatch):
    x = rng.standard_normal((5, 4, 6, 6))
    wt = rng.standard_normal((3, 4, 3, 3))
    forward, backward = impl.kernel(FORWARD), impl.kernel(BACKWARD)
    y_one, s_one = forward(x, wt, None, *SAME_3X3, (6, 6))
    g = rng.standard_normal(y_one.shape)
    grads_one = backward(g, s_one, (True, True, False))
    monkeypatch.setattr(nim2col, "CHUNK_BYTES", 1)  # one image per chunk
    y_many, s_many = forward(x, wt, None, *SAME_3X3, (6, 6))
    grads_many = backward(g, s_many, (True, True, False))
    np.testing.assert_allclose(y_many, y_one, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_many[:2], grads_one[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", LOOKUP_IMPLS, indirect=True)
def test_conv2d_kernels_are_looked_up_by_the_function(impl):
    assert (FORWARD, BACKWARD) == (kernels.CONV2D_FORWARD, kernels.CONV2D_BACKWARD)
    expected = {"generic": (None, None),  # no fast path: Convolution2d runs the generic code
                "numpy": (nconv.conv2d_forward, nconv.conv2d_backward),
                "cupy": (cupy_conv.conv2d_forward, cupy_conv.conv2d_backward)}
    backend = xpnet.get_backend(impl.backend)
    assert (backend.kernel(FORWARD), backend.kernel(BACKWARD)) == expected[impl.name]
    with pytest.raises(TypeError, match="expected a KernelName"):
        backend.kernel("conv2d_forward")  # a plain (possibly misspelled) string is refused


# --- the NumPy kernels' output layouts -------------------------------------------------------------

@pytest.mark.parametrize("impl", NUMPY_IMPLS, indirect=True)
def test_conv2d_outputs_are_channels_last_and_float32(impl, rng):
    # the layout contract that makes the next layer's im2col free, through pooling and batch norm
    o = nplanar.PLANAR_MAX_CHANNELS + 1
    x = rng.standard_normal((2, 3, 8, 8)).astype("float32")
    w = rng.standard_normal((o, 3, 3, 3)).astype("float32")
    y, _ = impl.kernel(FORWARD)(x, w, None, *SAME_3X3, (8, 8))
    assert y.dtype == np.float32 and y.transpose(0, 2, 3, 1).flags.c_contiguous
    p, _ = npool.max_pool2d_forward(y, (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), (4, 4))
    assert p.dtype == np.float32 and p.transpose(0, 2, 3, 1).flags.c_contiguous
    bn, *_ = nnorm.batch_norm_forward(y, np.ones(o, "float32"), np.zeros(o, "float32"), None, None, True, 1e-5)
    assert bn.dtype == np.float32 and bn.transpose(0, 2, 3, 1).flags.c_contiguous


@pytest.mark.parametrize("impl", ["numpy"], indirect=True)
def test_few_channel_outputs_stay_channel_major(impl, rng):
    # NumPy's narrow stride-1 convolution writes (C, N, H, W) planes; ReLU, pooling and the backward keep them
    x = rng.standard_normal((3, 1, 12, 12)).astype("float32")
    w = rng.standard_normal((6, 1, 5, 5)).astype("float32")
    y, saved = nconv.conv2d_forward(x, w, None, (1, 1), ((2, 2), (2, 2)), (1, 1), 1, (12, 12))
    assert y.transpose(1, 0, 2, 3).flags.c_contiguous
    r, _ = nact.relu_forward(y)
    assert r.transpose(1, 0, 2, 3).flags.c_contiguous
    p, psaved = npool.max_pool2d_forward(r, (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), (6, 6))
    assert p.transpose(1, 0, 2, 3).flags.c_contiguous
    dp = npool.max_pool2d_backward(np.ascontiguousarray(p.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3), psaved)
    assert dp.transpose(1, 0, 2, 3).flags.c_contiguous
    w2 = rng.standard_normal((16, 6, 5, 5)).astype("float32")
    y2, saved2 = nconv.conv2d_forward(p, w2, None, (1, 1), ((0, 0), (0, 0)), (1, 1), 1, (2, 2))
    dx, _, _ = nconv.conv2d_backward(np.ones(y2.shape, "float32"), saved2, (True, True, False))
    assert dx.transpose(1, 0, 2, 3).flags.c_contiguous


@pytest.mark.parametrize("impl", ["numpy-compiled"], indirect=True)
def test_compiled_few_channel_outputs_are_nchw_contiguous(impl, rng):
    # the compiled kernels write NCHW; ReLU, pooling and the backward keep it
    x = rng.standard_normal((3, 1, 12, 12)).astype("float32")
    w = rng.standard_normal((6, 1, 5, 5)).astype("float32")
    y, _ = nconv.conv2d_forward(x, w, None, (1, 1), ((2, 2), (2, 2)), (1, 1), 1, (12, 12))
    r, _ = nact.relu_forward(y)
    p, psaved = npool.max_pool2d_forward(r, (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), (6, 6))
    assert y.flags.c_contiguous and r.flags.c_contiguous and p.flags.c_contiguous
    w2 = rng.standard_normal((16, 6, 5, 5)).astype("float32")
    y2, saved2 = nconv.conv2d_forward(p, w2, None, (1, 1), ((0, 0), (0, 0)), (1, 1), 1, (2, 2))
    dx, _, _ = nconv.conv2d_backward(np.ones(y2.shape, "float32"), saved2, (True, True, False))
    assert y2.flags.c_contiguous and dx.flags.c_contiguous


# --- CuPy only ------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", CUPY_ONLY, indirect=True)
def test_conv2d_float16_computes_in_float32(impl, rng):
    import cupy as cp

    x = cp.asarray(rng.standard_normal((2, 3, 6, 6)).astype("float16"))
    w = cp.asarray(rng.standard_normal((4, 3, 3, 3)).astype("float16"))
    y, saved = impl.kernel(FORWARD)(x, w, None, *SAME_3X3, (6, 6))
    assert y.dtype == cp.float16
    ref, _ = conv_mod.conv2d_forward_generic(x.astype(cp.float32), w.astype(cp.float32), None, *SAME_3X3, (6, 6))
    np.testing.assert_allclose(y.get().astype(np.float32), ref.get(), rtol=2e-2, atol=2e-2)
    dx, dw, _ = impl.kernel(BACKWARD)(cp.ones_like(y), saved, (True, True, False))
    assert dx.dtype == cp.float16 and dw.dtype == cp.float16


@pytest.mark.gpu
def test_cupy_network_matches_numpy(rng):
    """A conv-bn-relu-pool stack run forward and backward on CuPy gives NumPy's values and gradients."""
    from xpnet import nn

    def build():
        xpnet.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, dtype="float64"), nn.BatchNorm2d(8, dtype="float64"),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 3, stride=2, padding=1, dtype="float64"),
                             nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1))

    x_host = rng.standard_normal((4, 3, 12, 12))
    grads = {}
    for name in ("numpy", "cupy"):
        with xpnet.use_backend("numpy"):
            model = build()  # the same initial weights for both, moved whole to the GPU
        model.to(backend=name)
        with xpnet.use_backend(name) as b:
            x = xpnet.Tensor(b.from_host(x_host), requires_grad=True)
            y = model(x)
            y.backward(b.from_host(np.ones(y.shape)))
            grads[name] = (xpnet.to_numpy(y), xpnet.to_numpy(x.grad),
                           [xpnet.to_numpy(p.grad) for p in model.parameters()])
    (yn, gxn, pn), (yc, gxc, pc) = grads["numpy"], grads["cupy"]
    np.testing.assert_allclose(yc, yn, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gxc, gxn, rtol=1e-9, atol=1e-9)
    for a, b in zip(pc, pn):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", ["numpy-compiled"], indirect=True)
@pytest.mark.parametrize("floats, side, expected", [(16, 8, True), (8, 8, False), (8, 16, True), (16, 7, False)])
def test_winograd_from_8x8_outputs_only_with_avx512(impl, monkeypatch, floats, side, expected):
    # the thresholds measured per instruction set (winograd.py): 8x8 pays with 16-float vectors only
    from xpnet.backends.numpy import native

    monkeypatch.setattr(native, "vector_floats", lambda lib: floats)
    w = np.zeros((64, 64, 3, 3), dtype=np.float32)
    lib = nwino.winograd_library(w, (1, 1), (1, 1), 1, w.dtype, (side, side))
    assert (lib is not None) == expected
