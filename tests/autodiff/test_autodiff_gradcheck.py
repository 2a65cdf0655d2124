"""Every operation passes gradcheck in float64 on every backend, broadcasting shapes included;
gradcheck itself catches wrong gradients and reports where."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.autodiff import Function, GradcheckError, gradcheck, numerical_grad
from xpnet.autodiff.ops import indexing

from autodiff_cases import CASES, OPS_COVERED, FUNCTION_MODULES


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op_gradcheck_float64(backend, case):
    inputs = [xpnet.tensor(a, requires_grad=True) for a in case.inputs()]
    assert all(xpnet.float64 == t.dtype for t in inputs)
    assert gradcheck(case.fn, inputs, atol=1e-7, rtol=1e-6)


def test_every_public_op_is_covered():
    public = set()
    for module in FUNCTION_MODULES:
        public.update(module.__all__)
    # aliases of covered ops and non-differentiable ops tested elsewhere
    aliases = {"subtract", "multiply", "divide", "true_divide", "power", "negative", "amax", "amin",
               "permute_dims", "expand_dims", "index_select", "eq", "ne", "lt", "le", "gt", "ge",
               "equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "argmax",
               "argmin"}
    missing = public - OPS_COVERED - aliases
    assert not missing, f"ops without a gradcheck case: {sorted(missing)}"


def test_index_add_sort_path_matches_one_hot(backend, monkeypatch):
    host = np.random.default_rng(3).standard_normal((3, 4))
    index = [2, 0, 2, 2, 1, 0]
    x = xpnet.tensor(host, requires_grad=True)
    y = x[index]
    seed = np.random.default_rng(4).standard_normal((6, 4))
    y.backward(xpnet.tensor(seed))
    one_hot = x.grad.numpy()
    expected = np.zeros((3, 4))
    np.add.at(expected, index, seed)
    np.testing.assert_allclose(one_hot, expected, rtol=1e-12, atol=1e-12)

    monkeypatch.setattr(indexing, "ONE_HOT_LIMIT", 0)
    x.grad = None
    x[index].backward(xpnet.tensor(seed))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda t: t[:, [3, 3, 0, 1]], [xpnet.tensor(host, requires_grad=True)])


class WrongSquare(Function):
    """y = x² with a deliberately wrong gradient: 2.1 x G instead of 2 x G."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2.1 * x * g


def test_gradcheck_reports_worst_element(backend):
    host = np.array([[0.5, -1.0, 3.0], [0.25, 2.0, -0.5]])
    a = xpnet.tensor(np.ones(3), requires_grad=True)
    x = xpnet.tensor(host, requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda a, x: WrongSquare.apply(x).sum() + a.sum(), (a, x))
    message = str(info.value)
    # worst element: the largest |x| has the largest error 0.1 |x|
    assert "input 1" in message and "element (0, 2)" in message
    assert "analytic gradient 6.3," in message and "numeric 6 (" in message


def test_gradcheck_only_checks_requires_grad_inputs(backend):
    host = np.array([1.0, 2.0])
    x = xpnet.tensor(host, requires_grad=True)
    c = xpnet.tensor(host)  # WrongSquare's gradient for c would fail, but c is not checked
    assert gradcheck(lambda x, c: x * WrongSquare.apply(c), (x, c))
    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(lambda x, c: x * WrongSquare.apply(c), (x, xpnet.tensor(host, requires_grad=True)))


def test_numerical_grad_values(backend):
    x = xpnet.tensor(np.array([0.3, -1.2, 2.0]))
    g = numerical_grad(lambda t: (t * t * t).sum(), x)
    assert isinstance(g, xpnet.Tensor) and xpnet.float64 == g.dtype
    np.testing.assert_allclose(g.numpy(), 3 * np.array([0.3, -1.2, 2.0]) ** 2, rtol=1e-9)
    # a non-scalar output: the gradient of <cotangent, f>
    w = np.array([1.0, -2.0, 0.5])
    g2 = numerical_grad(lambda t: t.exp(), (x,), cotangent=w)
    np.testing.assert_allclose(g2[0].numpy(), w * np.exp([0.3, -1.2, 2.0]), rtol=1e-9)


def test_numerical_grad_step_follows_the_magnitude_rule(backend):
    # with eps^(1/3) * max(1, |x|) the relative accuracy is the same for tiny and huge inputs
    for value in (1e6, 3e-3, -2e4):
        g = numerical_grad(lambda t: (t * t).sum(), xpnet.tensor(np.array([value])))
        np.testing.assert_allclose(g.numpy(), [2 * value], rtol=1e-8)


def test_gradcheck_float32_with_loose_tolerance(backend):
    x = xpnet.tensor(np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32), requires_grad=True)
    assert gradcheck(lambda t: (t.tanh() * 2.0).sum(), x, atol=1e-3, rtol=1e-2)
