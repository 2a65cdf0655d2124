"""nn.utils: L1/L2 penalties (values, gradients, gradcheck) and the re-exported gradient clipping."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.nn as nn
from xpnet.autodiff import gradcheck
from nn_cases import tensor, to_np


def test_penalty_values_and_gradients(backend, rng):
    a_host, b_host = rng.standard_normal((3, 4)), rng.standard_normal(5)
    a, b = tensor(backend, a_host), tensor(backend, b_host)
    l1 = nn.utils.l1_penalty([a, b])
    assert float(l1) == pytest.approx(np.abs(a_host).sum() + np.abs(b_host).sum(), rel=1e-12)
    l1.backward()
    np.testing.assert_array_equal(to_np(a.grad), np.sign(a_host))
    a.grad = b.grad = None
    l2 = nn.utils.l2_penalty(p for p in (a, b))
    assert float(l2) == pytest.approx(0.5 * ((a_host ** 2).sum() + (b_host ** 2).sum()), rel=1e-12)
    l2.backward()
    np.testing.assert_allclose(to_np(a.grad), a_host, rtol=1e-12)  # the 1/2 makes dP/dw = w
    np.testing.assert_allclose(to_np(b.grad), b_host, rtol=1e-12)


def test_penalty_gradcheck(backend, rng):
    a, b = tensor(backend, rng.standard_normal((2, 3))), tensor(backend, rng.standard_normal(3))
    assert gradcheck(lambda a, b: nn.utils.l1_penalty([a, b]), (a, b))
    assert gradcheck(lambda a, b: nn.utils.l2_penalty([a, b]), (a, b))


def test_penalty_of_a_module_and_edge_cases(backend):
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1, bias=False))
    expected = sum(float((to_np(p) ** 2).sum()) for p in model.parameters()) / 2
    assert float(nn.utils.l2_penalty(model)) == pytest.approx(expected, rel=1e-6)
    assert float(nn.utils.l1_penalty([])) == 0.0
    with pytest.raises(TypeError, match="mixed dtypes"):
        nn.utils.l1_penalty([xpnet.zeros(2, dtype="float64"), xpnet.zeros(2)])
    with pytest.raises(TypeError, match="element 0 is a list"):
        nn.utils.l2_penalty([[1.0]])


def test_clip_functions_are_reexported():
    from xpnet.optim import clip

    assert nn.utils.clip_grad_norm_ is clip.clip_grad_norm_
    assert nn.utils.clip_grad_value_ is clip.clip_grad_value_
