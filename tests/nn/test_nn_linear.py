"""Linear, Identity and Flatten: values and gradients against PyTorch, gradcheck, errors, default init."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpnet
import xpnet.nn as nn
import xpnet.nn.functional as F
from xpnet.autodiff import gradcheck, jvp
from nn_cases import arr, assert_close, copy_module_params, tensor, to_np, torch_tensor


@pytest.mark.parametrize("in_shape", [(5, 3), (2, 4, 3), (3,)], ids=["N,D", "B,T,D", "D"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(backend, rng, in_shape, bias):
    torch = pytest.importorskip("torch")
    layer = nn.Linear(3, 4, bias=bias, dtype="float64")
    ref = torch.nn.Linear(3, 4, bias=bias, dtype=torch.float64)
    copy_module_params(layer, ref, torch)
    x_host = rng.standard_normal(in_shape)
    g_host = rng.standard_normal(in_shape[:-1] + (4,))
    x = tensor(backend, x_host)
    y = layer(x)
    y.backward(arr(backend, g_host))
    xt = torch_tensor(torch, x_host)
    yt = ref(xt)
    yt.backward(torch.from_numpy(g_host))
    assert_close(y, yt)
    assert_close(x.grad, xt.grad)
    assert_close(layer.weight.grad, ref.weight.grad)
    if bias:
        assert_close(layer.bias.grad, ref.bias.grad)
    else:
        assert layer.bias is None and "bias" not in layer.state_dict()


def test_linear_gradcheck(backend, rng):
    x = tensor(backend, rng.standard_normal((4, 3)))
    w = tensor(backend, rng.standard_normal((2, 3)))
    b = tensor(backend, rng.standard_normal(2))
    assert gradcheck(F.linear, (x, w, b))
    x3 = tensor(backend, rng.standard_normal((2, 2, 3)))
    assert gradcheck(lambda x, w: F.linear(x, w), (x3, w))


def test_linear_jvp_matches_vjp(backend, rng):
    # <u, J t> = <J^T u, t> for the forward and reverse rules of one Function
    x, w, b = (tensor(backend, rng.standard_normal(s)) for s in ((4, 3), (2, 3), (2,)))
    tangents = tuple(tensor(backend, rng.standard_normal(s), requires_grad=False) for s in ((4, 3), (2, 3), (2,)))
    u = rng.standard_normal((4, 2))
    _, jt = jvp(F.linear, (x, w, b), tangents)
    F.linear(x, w, b).backward(arr(backend, u))
    lhs = float((u * to_np(jt)).sum())
    rhs = sum(float((to_np(p.grad) * to_np(t)).sum()) for p, t in zip((x, w, b), tangents))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_linear_input_errors(backend):
    layer = nn.Linear(3, 4)
    with pytest.raises(ValueError) as err:
        layer(xpnet.zeros(8, 5))
    assert str(err.value) == "Linear(in_features=3, out_features=4): expected input (..., 3), got (8, 5)"
    with pytest.raises(TypeError, match="float64.*float32"):
        layer(xpnet.zeros(8, 3, dtype="float64"))
    with pytest.raises(ValueError, match=r"expected input \(\.\.\., 3\)"):
        F.linear(xpnet.zeros(2, 2), layer.weight)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        F.linear(xpnet.zeros(2, 3), layer.weight, xpnet.zeros(3))


def test_linear_default_init_matches_torch_bounds(backend):
    torch = pytest.importorskip("torch")
    xpnet.manual_seed(0)
    layer = nn.Linear(400, 300)
    ref = torch.nn.Linear(400, 300)
    w, b = to_np(layer.weight), to_np(layer.bias)
    bound = 1 / math.sqrt(400)  # kaiming_uniform_(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert w.dtype == np.float32 and w.shape == (300, 400)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound
    assert float(ref.weight.detach().abs().max()) == pytest.approx(np.abs(w).max(), rel=1e-3)
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert w.std() == pytest.approx(float(ref.weight.detach().std()), rel=0.02)
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.95 * bound
    # the same seed gives the same weights on every CPU backend (one host generator)
    xpnet.manual_seed(0)
    again = nn.Linear(400, 300)
    np.testing.assert_array_equal(to_np(again.weight), w)


def test_linear_dtype_and_device_arguments():
    layer = nn.Linear(2, 3, dtype="float64")
    assert xpnet.float64 == layer.weight.dtype and xpnet.float64 == layer.bias.dtype
    strict = nn.Linear(2, 3, device="array_api_strict:device1")
    assert str(strict.weight.backend) == "array_api_strict:device1"
    with xpnet.use_backend("array_api_strict"):
        on_dev2 = nn.Linear(2, 3, device="device2")
    assert str(on_dev2.bias.backend) == "array_api_strict:device2"
    assert repr(layer) == "Linear(in_features=2, out_features=3, bias=True)"


def test_identity_and_flatten(backend, rng):
    x = tensor(backend, rng.standard_normal((2, 3, 4, 5)))
    assert nn.Identity(7, k=3)(x) is x
    flat = nn.Flatten()
    y = flat(x)
    assert y.shape == (2, 60)
    np.testing.assert_array_equal(to_np(y), to_np(x).reshape(2, 60))
    y.backward(arr(backend, np.arange(120.0).reshape(2, 60)))
    np.testing.assert_array_equal(to_np(x.grad), np.arange(120.0).reshape(2, 3, 4, 5))
    assert nn.Flatten(1, 2)(x).shape == (2, 12, 5)
    assert F.flatten(x).shape == (120,)
    assert repr(flat) == "Flatten(start_dim=1, end_dim=-1)"


def test_functional_namespace(backend):
    expected = {"linear", "flatten", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm",
                "local_response_norm", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softmax", "log_softmax",
                "dropout", "mse_loss", "l1_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
                "cross_entropy", "nll_loss", "multi_margin_loss", "pad"}
    assert set(F.__all__) == expected and all(callable(getattr(F, n)) for n in expected)
    padded = F.pad(xpnet.ones(1, 2), (1, 2), value=0.5)
    np.testing.assert_array_equal(to_np(padded), [[0.5, 1.0, 1.0, 0.5, 0.5]])
