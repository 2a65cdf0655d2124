"""Dropout: keep rate and scaling statistics, gradient through the mask, eval identity, seeding."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.nn as nn
import xpnet.nn.functional as F
from xpnet.autodiff import gradcheck
from xpnet.nn.functional.dropout import Dropout as DropoutFunction
from nn_cases import arr, tensor, to_np


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_keep_rate_and_scaling(backend, p):
    layer = nn.Dropout(p)
    x = tensor(backend, np.full((200, 500), 2.0))
    y = to_np(layer(x))
    kept = y != 0
    n = kept.size
    # keep rate 1 - p within 5 binomial standard deviations
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[kept], 2.0 / (1 - p), rtol=1e-12)
    assert y.mean() == pytest.approx(2.0, abs=5 * 2.0 / (1 - p) * np.sqrt(p * (1 - p) / n))


def test_dropout_gradient_uses_the_same_mask(backend, rng):
    x_host = rng.standard_normal((50, 40))
    x = tensor(backend, x_host)
    y = F.dropout(x, p=0.3)
    g_host = rng.standard_normal((50, 40))
    y.backward(arr(backend, g_host))
    mask = to_np(y) / x_host  # 0 or 1/(1-p) per element
    assert set(np.round(np.unique(mask), 9)) == {0.0, round(1 / 0.7, 9)}
    np.testing.assert_allclose(to_np(x.grad), g_host * mask, rtol=1e-12)


def test_dropout_function_gradcheck(backend, rng):
    mask = arr(backend, (rng.random((3, 4)) < 0.6) / 0.6)
    assert gradcheck(lambda x: DropoutFunction.apply(x, mask), (tensor(backend, rng.standard_normal((3, 4))),))


def test_dropout_eval_and_edge_probabilities(backend, rng):
    x = tensor(backend, rng.standard_normal((4, 5)))
    layer = nn.Dropout(0.5).eval()
    assert not layer.training
    np.testing.assert_array_equal(to_np(layer(x)), to_np(x))
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(to_np(F.dropout(x, 1.0)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="probability p must be"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="between 0 and 1, got -0.1"):
        F.dropout(x, -0.1)
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25, inplace=False)"


def test_dropout_is_repeatable_and_equal_across_cpu_backends():
    masks = []
    for name in ("numpy", "array_api_strict"):
        with xpnet.use_backend(name) as b:
            xpnet.manual_seed(7)
            masks.append(to_np(F.dropout(xpnet.Tensor(b.from_host(np.ones((30, 30)))), 0.5)))
    np.testing.assert_array_equal(masks[0], masks[1])
    with xpnet.use_backend("numpy") as b:
        xpnet.manual_seed(7)
        first = to_np(F.dropout(xpnet.Tensor(b.from_host(np.ones((30, 30)))), 0.5))
        second = to_np(F.dropout(xpnet.Tensor(b.from_host(np.ones((30, 30)))), 0.5))
    np.testing.assert_array_equal(first, masks[0])
    assert not np.array_equal(second, first)  # each call draws a fresh mask
