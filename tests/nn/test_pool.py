"""MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: values and gradients against PyTorch, gradcheck, ties,
forward mode, errors and layer reprs."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.nn as nn
import xpnet.nn.functional as F
from xpnet.autodiff import gradcheck, jvp
from nn_cases import arr, assert_close, tensor, to_np, torch_tensor

# (kernel, stride, padding, dilation, ceil_mode, H, W)
POOL_GRID = [
    (2, None, 0, 1, False, 8, 6),
    (2, 2, 0, 1, False, 7, 9),
    (3, 2, 1, 1, False, 9, 8),
    (3, 1, 1, 1, False, 5, 6),
    ((3, 2), (2, 1), (1, 0), 1, False, 7, 6),
    (3, 2, 0, 1, True, 8, 8),
    (2, 3, 1, 1, True, 7, 9),
    (3, 3, 1, 1, True, 10, 8),
    (3, 1, 1, 2, False, 7, 7),
]


def _pid(case):
    return "-".join(str(v).replace(" ", "") for v in case[:5])


@pytest.mark.parametrize("case", POOL_GRID, ids=[_pid(c) for c in POOL_GRID])
def test_max_pool2d_matches_torch(backend, rng, case):
    torch = pytest.importorskip("torch")
    kernel, stride, padding, dilation, ceil_mode, h, w = case
    x_host = rng.standard_normal((2, 3, h, w))
    x = tensor(backend, x_host)
    y = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    xr = torch_tensor(torch, x_host)
    yr = torch.nn.functional.max_pool2d(xr, kernel, stride, padding, dilation, ceil_mode)
    assert_close(y, yr, atol=0)
    g = rng.standard_normal(y.shape)
    y.backward(arr(backend, g))
    yr.backward(torch.from_numpy(g))
    assert_close(x.grad, xr.grad)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", [c for c in POOL_GRID if c[3] == 1], ids=[_pid(c) for c in POOL_GRID if c[3] == 1])
def test_avg_pool2d_matches_torch(backend, rng, case, count_include_pad):
    torch = pytest.importorskip("torch")
    kernel, stride, padding, _, ceil_mode, h, w = case
    x_host = rng.standard_normal((2, 3, h, w))
    x = tensor(backend, x_host)
    y = F.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad)
    xr = torch_tensor(torch, x_host)
    yr = torch.nn.functional.avg_pool2d(xr, kernel, stride, padding, ceil_mode, count_include_pad)
    assert_close(y, yr)
    g = rng.standard_normal(y.shape)
    y.backward(arr(backend, g))
    yr.backward(torch.from_numpy(g))
    assert_close(x.grad, xr.grad)


def test_avg_pool2d_divisor_override(backend, rng):
    torch = pytest.importorskip("torch")
    x_host = rng.standard_normal((1, 2, 6, 5))
    x = tensor(backend, x_host)
    y = F.avg_pool2d(x, 3, 2, 1, divisor_override=5)
    xr = torch_tensor(torch, x_host)
    yr = torch.nn.functional.avg_pool2d(xr, 3, 2, 1, divisor_override=5)
    assert_close(y, yr)
    g = rng.standard_normal(y.shape)
    y.backward(arr(backend, g))
    yr.backward(torch.from_numpy(g))
    assert_close(x.grad, xr.grad)


@pytest.mark.parametrize("size,out", [((9, 8), (3, 3)), ((9, 8), (4, 5)), ((7, 7), 1), ((6, 10), (6, None)),
                                      ((5, 5), (7, 6)), ((13, 13), 6)])
def test_adaptive_avg_pool2d_matches_torch(backend, rng, size, out):
    torch = pytest.importorskip("torch")
    x_host = rng.standard_normal((2, 3) + size)
    x = tensor(backend, x_host)
    y = F.adaptive_avg_pool2d(x, out)
    xr = torch_tensor(torch, x_host)
    yr = torch.nn.functional.adaptive_avg_pool2d(xr, out)
    assert_close(y, yr)
    g = rng.standard_normal(y.shape)
    y.backward(arr(backend, g))
    yr.backward(torch.from_numpy(g))
    assert_close(x.grad, xr.grad)


def test_max_pool_ties_go_to_first_maximum(backend):
    torch = pytest.importorskip("torch")
    x_host = np.array([[[[1.0, 1.0, 0.0, 2.0],
                         [1.0, 0.5, 2.0, 2.0],
                         [3.0, 3.0, 3.0, 3.0],
                         [3.0, 3.0, 3.0, 3.0]]]])
    x = tensor(backend, x_host)
    y = F.max_pool2d(x, 2)
    y.backward(arr(backend, np.ones(y.shape)))
    xr = torch_tensor(torch, x_host)
    torch.nn.functional.max_pool2d(xr, 2).backward(torch.ones(1, 1, 2, 2, dtype=torch.float64))
    expected = np.array([[[[1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]]], dtype=float)
    assert np.array_equal(to_np(x.grad), expected)
    assert np.array_equal(xr.grad.numpy(), expected)
    # overlapping windows: a shared maximum collects the gradient of every window it wins
    x = tensor(backend, np.arange(16.0).reshape(1, 1, 4, 4))
    y = F.max_pool2d(x, 3, 1)
    y.backward(arr(backend, np.ones(y.shape)))
    assert to_np(x.grad)[0, 0, 3, 3] == 1 and to_np(x.grad).sum() == 4


def test_max_pool_nan_propagates_like_torch(backend):
    torch = pytest.importorskip("torch")
    x_host = np.array([[[[1.0, np.nan], [5.0, 2.0]]]])
    x = tensor(backend, x_host)
    y = F.max_pool2d(x, 2)
    assert np.isnan(to_np(y)).all()
    y.backward(arr(backend, np.ones((1, 1, 1, 1))))
    xr = torch_tensor(torch, x_host)
    torch.nn.functional.max_pool2d(xr, 2).backward(torch.ones(1, 1, 1, 1, dtype=torch.float64))
    assert np.array_equal(to_np(x.grad), xr.grad.numpy())


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", [(3, 2, 1, False), (2, 3, 1, True), (3, 1, 1, False)])
def test_max_pool_windows_of_minus_inf_route_to_an_input_element_like_torch(backend, kernel, stride, padding,
                                                                            ceil_mode):
    # padding never wins: a window whose input elements are all -inf sends its gradient to the first one
    torch = pytest.importorskip("torch")
    x_host = np.full((1, 2, 5, 4), -np.inf)
    x_host[0, 1, 2:, 1:] = np.arange(9.0).reshape(3, 3)
    x = tensor(backend, x_host)
    y = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)
    g_host = np.arange(1.0, 1.0 + np.prod(y.shape)).reshape(y.shape)
    y.backward(arr(backend, g_host))
    xr = torch_tensor(torch, x_host)
    yr = torch.nn.functional.max_pool2d(xr, kernel, stride, padding, ceil_mode=ceil_mode)
    yr.backward(torch.from_numpy(g_host))
    assert np.array_equal(to_np(y), yr.detach().numpy())
    assert np.array_equal(to_np(x.grad), xr.grad.numpy())


def test_pool_gradcheck(backend, rng):
    # distinct values keep the max pool's argmax away from ties under perturbation
    x = tensor(backend, rng.permutation(2 * 2 * 6 * 5).reshape(2, 2, 6, 5) * 0.1)
    assert gradcheck(lambda t: F.max_pool2d(t, 3, 2, 1), (x,))
    assert gradcheck(lambda t: F.max_pool2d(t, 2, 1, ceil_mode=True), (x,))
    assert gradcheck(lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False), (x,))
    assert gradcheck(lambda t: F.avg_pool2d(t, 2, 3, 1, ceil_mode=True), (x,))
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, (4, 3)), (x,))


@pytest.mark.parametrize("op", ["max", "avg", "adaptive"])
def test_pool_jvp_matches_vjp(backend, rng, op):
    fn = {"max": lambda t: F.max_pool2d(t, 3, 2, 1), "avg": lambda t: F.avg_pool2d(t, 3, 2, 1, True, False),
          "adaptive": lambda t: F.adaptive_avg_pool2d(t, (3, 4))}[op]
    x = tensor(backend, rng.standard_normal((2, 2, 7, 6)))
    t = tensor(backend, rng.standard_normal((2, 2, 7, 6)), requires_grad=False)
    y, jt = jvp(fn, (x,), (t,))
    u = rng.standard_normal(y.shape)
    fn(x).backward(arr(backend, u))
    assert float((u * to_np(jt)).sum()) == pytest.approx(float((to_np(x.grad) * to_np(t)).sum()), rel=1e-10)


def test_unbatched_pooling(backend, rng):
    x = tensor(backend, rng.standard_normal((3, 6, 4)))
    assert F.max_pool2d(x, 2).shape == (3, 3, 2)
    assert F.avg_pool2d(x, 2).shape == (3, 3, 2)
    y = F.max_pool2d(x, 2)
    y.backward(arr(backend, np.ones(y.shape)))
    assert to_np(x.grad).sum() == 3 * 3 * 2


def test_pool_errors(backend):
    x = xpnet.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="at most half of the kernel"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"output height \(H \+ 2P - D\(K-1\) - 1\)/S \+ 1"):
        F.max_pool2d(xpnet.zeros((1, 1, 2, 8)), 3)
    with pytest.raises(ValueError, match=r"expected input \(N, C, H, W\)"):
        F.avg_pool2d(xpnet.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="output_size must be >= 1"):
        F.adaptive_avg_pool2d(x, 0)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        nn.MaxPool2d(0)(x)


def test_pool_layers(backend, rng):
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.AvgPool2d(3, 2, 1)) == "AvgPool2d(kernel_size=3, stride=2, padding=1)"
    assert repr(nn.AdaptiveAvgPool2d((6, 6))) == "AdaptiveAvgPool2d(output_size=(6, 6))"
    x = tensor(backend, rng.standard_normal((2, 3, 8, 8)), dtype="float32")
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 4, 4)
    assert nn.MaxPool2d(3, 2, 1)(x).shape == (2, 3, 4, 4)
    assert nn.AvgPool2d(2, 1)(x).shape == (2, 3, 7, 7)
    assert nn.AdaptiveAvgPool2d((5, None))(x).shape == (2, 3, 5, 8)
    for layer in (nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(2)):
        y = layer(x)
        assert xpnet.float32 == y.dtype
        assert layer.state_dict() == {} and list(layer.parameters()) == []
