"""CuPy fast paths (xpnet/backends/cupy/) equal the generic Array-API code on the GPU, and
the whole conv/pool/batch-norm stack on CuPy matches NumPy. Run with ``pytest -m gpu`` on a CUDA machine;
skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.backends import kernels
from xpnet.backends.cupy import activation, conv, norm, pool
from xpnet.nn.functional import conv as conv_mod
from xpnet.nn.functional import pool as pool_mod

pytestmark = pytest.mark.gpu

TOL = {"float64": dict(rtol=1e-10, atol=1e-10), "float32": dict(rtol=1e-4, atol=1e-4)}

CONV_CASES = [
    (2, 3, 8, 8, 4, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    (3, 4, 7, 9, 6, (3, 2), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    (2, 4, 9, 8, 4, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    (2, 2, 10, 9, 3, (5, 5), (3, 2), ((2, 2), (1, 1)), (1, 1), 1),
    (2, 3, 9, 9, 2, (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 1),
    (2, 4, 6, 7, 6, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
    (2, 4, 7, 7, 4, (3, 3), (2, 1), ((1, 1), (0, 0)), (1, 2), 4),
    (2, 2, 6, 5, 3, (2, 2), (1, 1), ((0, 1), (0, 1)), (1, 1), 1),
    (2, 3, 23, 23, 4, (11, 11), (4, 4), ((2, 2), (2, 2)), (1, 1), 1),
]


@pytest.fixture
def cp():
    cupy = pytest.importorskip("cupy")
    return cupy


def _close(fast, generic, dtype):
    assert fast.dtype == generic.dtype
    assert fast.shape == generic.shape
    np.testing.assert_allclose(fast.get(), generic.get(), **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"case{i}" for i in range(len(CONV_CASES))])
def test_cupy_conv2d_equals_generic(cp, rng, case, chunked, dtype, monkeypatch):
    if chunked:
        monkeypatch.setattr(conv, "CHUNK_BYTES", 1)  # one image per chunk
    n, c, h, w, o, kernel, stride, padding, dilation, groups = case
    x = cp.asarray(rng.standard_normal((n, c, h, w)).astype(dtype))
    wt = cp.asarray(rng.standard_normal((o, c // groups) + kernel).astype(dtype))
    b = cp.asarray(rng.standard_normal(o).astype(dtype))
    out_hw = conv_mod.conv2d_output_size((h, w), kernel, stride, padding, dilation)
    yf, sf = conv.conv2d_forward(x, wt, b, stride, padding, dilation, groups, out_hw)
    yg, sg = conv_mod.conv2d_forward_generic(x, wt, b, stride, padding, dilation, groups, out_hw)
    _close(yf, yg, dtype)
    g = cp.asarray(rng.standard_normal(yg.shape).astype(dtype))
    for needs in ((True, True, True), (False, True, False), (True, False, False)):
        for a, bgen, need in zip(conv.conv2d_backward(g, sf, needs), conv_mod.conv2d_backward_generic(g, sg, needs),
                                 needs):
            assert (a is None) == (not need)
            if need:
                _close(a, bgen, dtype)


POOL_CASES = [
    ((2, 2), (2, 2), 0, (1, 1), False, 8, 8),
    ((3, 3), (2, 2), 1, (1, 1), False, 9, 8),
    ((3, 3), (1, 1), 1, (1, 1), False, 6, 5),
    ((3, 2), (2, 1), 1, (1, 1), True, 7, 8),
    ((2, 2), (3, 3), 1, (1, 1), True, 8, 7),
    ((3, 3), (1, 1), 1, (2, 2), False, 7, 7),
]


def _geometry(case):
    kernel, stride, p, dilation, ceil_mode, h, w = case
    pad = ((p, p), (p, p))
    return kernel, stride, pad, dilation, conv_mod.conv2d_output_size((h, w), kernel, stride, pad, dilation,
                                                                      ceil_mode=ceil_mode)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[f"case{i}" for i in range(len(POOL_CASES))])
def test_cupy_pools_equal_generic(cp, rng, case, dtype):
    kernel, stride, pad, dilation, out = _geometry(case)
    x = cp.asarray(rng.integers(0, 4, (2, 3) + case[5:]).astype(dtype))  # ties: the first maximum wins
    yf, sf = pool.max_pool2d_forward(x, kernel, stride, pad, dilation, out)
    yg, sg = pool_mod.max_pool2d_forward_generic(x, kernel, stride, pad, dilation, out)
    _close(yf, yg, dtype)
    g = cp.asarray(rng.standard_normal(yg.shape).astype(dtype))
    _close(pool.max_pool2d_backward(g, sf), pool_mod.max_pool2d_backward_generic(g, sg), dtype)
    if dilation != (1, 1):
        return
    x = cp.asarray(rng.standard_normal((2, 3) + case[5:]).astype(dtype))
    for count_include_pad in (True, False):
        for override in (None, 3):
            yf, sf = pool.avg_pool2d_forward(x, kernel, stride, pad, out, count_include_pad, override)
            yg, sg = pool_mod.avg_pool2d_forward_generic(x, kernel, stride, pad, out, count_include_pad, override)
            _close(yf, yg, dtype)
            _close(pool.avg_pool2d_backward(g, sf), pool_mod.avg_pool2d_backward_generic(g, sg), dtype)


def test_cupy_backend_uses_registered_kernels():
    backend = xpnet.get_backend("cupy")
    expected = {
        kernels.CONV2D_FORWARD: conv.conv2d_forward, kernels.CONV2D_BACKWARD: conv.conv2d_backward,
        kernels.MAX_POOL2D_FORWARD: pool.max_pool2d_forward, kernels.MAX_POOL2D_BACKWARD: pool.max_pool2d_backward,
        kernels.AVG_POOL2D_FORWARD: pool.avg_pool2d_forward, kernels.AVG_POOL2D_BACKWARD: pool.avg_pool2d_backward,
        kernels.RELU_FORWARD: activation.relu_forward, kernels.RELU_BACKWARD: activation.relu_backward,
        kernels.LOCAL_RESPONSE_NORM_FORWARD: norm.local_response_norm_forward,
        kernels.LOCAL_RESPONSE_NORM_BACKWARD: norm.local_response_norm_backward,
    }
    for name, fn in expected.items():
        assert backend.kernel(name) is fn


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("size", [1, 4, 5])
def test_cupy_lrn_equals_generic(cp, rng, size, dtype):
    from xpnet.nn.functional import norm as norm_mod

    x = cp.asarray(rng.standard_normal((3, 9, 6, 5)).astype(dtype))
    args = (size, 1e-2, 0.75, 2.0)
    yf, sf = norm.local_response_norm_forward(x, *args)
    yg, sg = norm_mod.lrn_forward_generic(x, *args)
    _close(yf, yg, dtype)
    g = cp.asarray(rng.standard_normal(x.shape).astype(dtype))
    _close(norm.local_response_norm_backward(g, sf), norm_mod.lrn_backward_generic(g, sg), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_cupy_relu_equals_generic(cp, rng, dtype):
    host = rng.standard_normal((3, 5, 7, 4)).astype(dtype)
    host[0, 0, 0, :3] = [np.nan, 0.0, -0.0]
    x = cp.asarray(host).transpose(0, 2, 3, 1)  # a strided view, as NHWC memory behind NCHW gives
    y, saved = activation.relu_forward(x)
    xn = host.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(y.get(), np.maximum(xn, 0))  # NaN stays NaN
    np.testing.assert_array_equal(saved.mask.get(), xn > 0)
    g = rng.standard_normal(xn.shape).astype(dtype)
    g[1, 1, 1, 1] = np.inf
    dx = activation.relu_backward(cp.asarray(g), saved)
    assert dx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(dx.get(), np.where(xn > 0, g, 0))


def test_cupy_float16_computes_in_float32(cp, rng):
    x = cp.asarray(rng.standard_normal((2, 3, 6, 6)).astype("float16"))
    w = cp.asarray(rng.standard_normal((4, 3, 3, 3)).astype("float16"))
    y, saved = conv.conv2d_forward(x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, (6, 6))
    assert y.dtype == cp.float16
    ref, _ = conv_mod.conv2d_forward_generic(x.astype(cp.float32), w.astype(cp.float32), None, (1, 1),
                                             ((1, 1), (1, 1)), (1, 1), 1, (6, 6))
    np.testing.assert_allclose(y.get().astype(np.float32), ref.get(), rtol=2e-2, atol=2e-2)
    dx, dw, _ = conv.conv2d_backward(cp.ones_like(y), saved, (True, True, False))
    assert dx.dtype == cp.float16 and dw.dtype == cp.float16


def test_cupy_network_matches_numpy(rng):
    """A conv-bn-relu-pool stack trained one step on CuPy gives NumPy's values and gradients."""
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
