"""Activation layers and functions: values and gradients against PyTorch, gradcheck, jvp, repr, errors."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.nn as nn
import xpnet.nn.functional as F
from xpnet.autodiff import gradcheck, jvp
from nn_cases import arr, assert_close, tensor, to_np, torch_tensor

# (id, xpnet module factory, torch module factory by name and kwargs)
CASES = [
    ("relu", lambda: nn.ReLU(), ("ReLU", {})),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), ("LeakyReLU", {"negative_slope": 0.2})),
    ("leaky_relu_default", lambda: nn.LeakyReLU(), ("LeakyReLU", {})),
    ("elu", lambda: nn.ELU(alpha=0.7), ("ELU", {"alpha": 0.7})),
    ("sigmoid", lambda: nn.Sigmoid(), ("Sigmoid", {})),
    ("tanh", lambda: nn.Tanh(), ("Tanh", {})),
    ("softmax_dim1", lambda: nn.Softmax(dim=1), ("Softmax", {"dim": 1})),
    ("softmax_default_last", lambda: nn.Softmax(), ("Softmax", {"dim": -1})),
    ("log_softmax_dim1", lambda: nn.LogSoftmax(dim=1), ("LogSoftmax", {"dim": 1})),
    ("log_softmax_dim0", lambda: nn.LogSoftmax(dim=0), ("LogSoftmax", {"dim": 0})),
]
IDS = [c[0] for c in CASES]


def _input(rng):
    # values away from 0 (the kinks) plus large magnitudes that overflow a naive exp
    x = rng.standard_normal((3, 4, 5)) * 3
    x = np.where(np.abs(x) < 0.05, 0.5, x)
    x[0, 0, :2] = [60.0, -60.0]
    x[1, 2, :] = [800.0, 1.0, -800.0, 2.0, 3.0]
    return x


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_activation_matches_torch(backend, rng, case):
    torch = pytest.importorskip("torch")
    _, make, (torch_name, kwargs) = case
    x_host = _input(rng)
    g_host = rng.standard_normal(x_host.shape)
    x = tensor(backend, x_host)
    y = make()(x)
    y.backward(arr(backend, g_host))
    xt = torch_tensor(torch, x_host)
    yt = getattr(torch.nn, torch_name)(**kwargs)(xt)
    yt.backward(torch.from_numpy(g_host))
    assert np.isfinite(to_np(y)).all()
    assert_close(y, yt)
    assert_close(x.grad, xt.grad)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_activation_gradcheck(backend, rng, case):
    layer = case[1]()
    x = tensor(backend, _input(rng)[:2, :2, :3] / 3 + 0.1)
    assert gradcheck(layer, (x,))


@pytest.mark.parametrize("name,fn", [("leaky_relu", lambda x: F.leaky_relu(x, 0.3)), ("elu", F.elu),
                                     ("log_softmax", lambda x: F.log_softmax(x, 0))])
def test_activation_jvp_matches_finite_difference(backend, rng, name, fn):
    x_host = rng.standard_normal((3, 4)) + 0.05
    t_host = rng.standard_normal((3, 4))
    _, tangent = jvp(fn, (tensor(backend, x_host),), (tensor(backend, t_host, requires_grad=False),))
    h = 1e-6
    plus = to_np(fn(tensor(backend, x_host + h * t_host, requires_grad=False)))
    minus = to_np(fn(tensor(backend, x_host - h * t_host, requires_grad=False)))
    np.testing.assert_allclose(to_np(tangent), (plus - minus) / (2 * h), atol=1e-7)


def test_functional_signatures(backend, rng):
    x = tensor(backend, rng.standard_normal((2, 3)))
    np.testing.assert_allclose(to_np(F.relu(x, inplace=True)), np.maximum(to_np(x), 0))
    np.testing.assert_allclose(to_np(F.softmax(x, dim=0)).sum(axis=0), np.ones(3))
    np.testing.assert_allclose(to_np(F.softmax(x)).sum(axis=1), np.ones(2))
    y32 = F.log_softmax(x, 1, dtype="float32")
    assert xpnet.float32 == y32.dtype
    y32.backward(arr(backend, np.ones((2, 3)), dtype="float32"))
    assert xpnet.float64 == x.grad.dtype


def test_activation_errors(backend):
    ints = xpnet.tensor([1, 2, 3])
    with pytest.raises(TypeError, match="relu: expected a floating-point input, got dtype int64"):
        F.relu(ints)
    with pytest.raises(ValueError, match="softmax: dim 2 is out of range"):
        F.softmax(xpnet.zeros(2, 3), dim=2)


def test_activation_repr():
    assert repr(nn.ReLU()) == "ReLU()"
    assert repr(nn.ReLU(inplace=True)) == "ReLU(inplace=True)"
    assert repr(nn.LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(nn.ELU()) == "ELU(alpha=1.0)"
    assert repr(nn.Softmax(dim=1)) == "Softmax(dim=1)"
    assert repr(nn.LogSoftmax()) == "LogSoftmax(dim=None)"
    assert repr(nn.Sigmoid()) == "Sigmoid()" and repr(nn.Tanh()) == "Tanh()"
