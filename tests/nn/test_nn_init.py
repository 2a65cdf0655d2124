"""nn.init: gains, fan computation, and the statistics of every initializer, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpnet
import xpnet.nn as nn
from xpnet.nn import init
from nn_cases import to_np


def _param(backend, *shape, dtype="float32"):
    return nn.Parameter(backend.xp.zeros(shape, dtype=backend.dtype(dtype), device=backend.device))


def test_calculate_gain_matches_torch():
    torch = pytest.importorskip("torch")
    for name, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_normal_std(backend, mode):
    w = _param(backend, 256, 64, 3, 3)  # conv weight: fan_in = 64*9, fan_out = 256*9
    assert init.kaiming_normal_(w, mode=mode, nonlinearity="relu") is w
    fan = 64 * 9 if mode == "fan_in" else 256 * 9
    values = to_np(w)
    assert values.dtype == np.float32
    assert values.std() == pytest.approx(math.sqrt(2.0 / fan), rel=0.02)
    assert abs(values.mean()) < 0.05 * math.sqrt(2.0 / fan)


def test_kaiming_uniform_bound_and_std(backend):
    w = _param(backend, 300, 200)
    init.kaiming_uniform_(w, a=0.1, nonlinearity="leaky_relu")
    bound = math.sqrt(2.0 / (1 + 0.1 ** 2)) * math.sqrt(3.0 / 200)
    values = to_np(w)
    assert np.abs(values).max() <= bound * (1 + 1e-6) and np.abs(values).max() > 0.99 * bound
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_xavier(backend):
    w = _param(backend, 300, 200, dtype="float64")
    init.xavier_uniform_(w, gain=init.calculate_gain("tanh"))
    std = 5.0 / 3.0 * math.sqrt(2.0 / 500)
    values = to_np(w)
    assert values.dtype == np.float64
    assert np.abs(values).max() <= math.sqrt(3) * std and values.std() == pytest.approx(std, rel=0.02)
    init.xavier_normal_(w)
    assert to_np(w).std() == pytest.approx(math.sqrt(2.0 / 500), rel=0.02)


def test_simple_fills(backend):
    w = _param(backend, 100, 100)
    init.normal_(w, mean=3.0, std=0.5)
    assert to_np(w).mean() == pytest.approx(3.0, abs=0.02) and to_np(w).std() == pytest.approx(0.5, rel=0.03)
    init.uniform_(w, -2.0, 1.0)
    values = to_np(w)
    assert values.min() >= -2.0 and values.max() <= 1.0 and values.mean() == pytest.approx(-0.5, abs=0.03)
    init.constant_(w, 0.25)
    assert (to_np(w) == 0.25).all()
    init.zeros_(w)
    assert (to_np(w) == 0).all()
    init.ones_(w)
    assert (to_np(w) == 1).all()
    assert str(w.backend) == str(backend) and w.requires_grad and w.grad is None


def test_init_is_seeded(backend):
    xpnet.manual_seed(3)
    a = to_np(init.kaiming_normal_(_param(backend, 4, 5)))
    xpnet.manual_seed(3)
    b = to_np(init.kaiming_normal_(_param(backend, 4, 5)))
    np.testing.assert_array_equal(a, b)


def test_init_errors(backend):
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(_param(backend, 5))
    with pytest.raises(ValueError, match="mode 'fan_avg' is not supported"):
        init.kaiming_normal_(_param(backend, 3, 3), mode="fan_avg")
    with pytest.raises(TypeError, match="expected a Tensor or Parameter"):
        init.normal_(backend.xp.zeros((2, 2)))
