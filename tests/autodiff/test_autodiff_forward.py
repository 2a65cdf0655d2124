"""Forward mode against reverse mode (<u, J v> = <Jᵀu, v>) for every operation, and the function
transforms jvp, vjp, grad and hessian."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.autodiff import Function, grad, hessian, jvp, vjp

from autodiff_cases import CASES


def _dot(a, b):
    return float(np.sum(xpnet.to_numpy(a) * xpnet.to_numpy(b)))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_forward_mode_matches_reverse_mode(backend, case):
    rng = np.random.default_rng(7)
    inputs = [xpnet.tensor(a) for a in case.inputs()]
    tangents = [xpnet.tensor(rng.standard_normal(t.shape)) for t in inputs]
    expected = case.fn(*inputs)
    out, tangent_out = jvp(case.fn, tuple(inputs), tuple(tangents))
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    assert tangent_out.shape == out.shape and xpnet.float64 == tangent_out.dtype
    assert out.grad_fn is None and tangent_out.grad_fn is None

    u = xpnet.tensor(rng.standard_normal(out.shape))
    _, cotangent_grads = vjp(case.fn, tuple(inputs), u)
    forward = _dot(u, tangent_out)
    reverse = sum(_dot(g, v) for g, v in zip(cotangent_grads, tangents))
    assert forward == pytest.approx(reverse, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "radd", "rmul"])
def test_forward_mode_tangent_of_the_smaller_operand_takes_the_output_shape(backend, op):
    # only the (3, 1) operand carries a tangent; the output, and so its tangent, is (3, 4)
    fns = {"add": lambda x, c: x + c, "sub": lambda x, c: x - c, "mul": lambda x, c: x * c,
           "div": lambda x, c: x / c, "pow": lambda x, c: x ** c, "radd": lambda x, c: c + x,
           "rmul": lambda x, c: c * x}
    rng = np.random.default_rng(3)
    x_host = rng.uniform(0.5, 1.5, (3, 1))
    c_host = rng.uniform(0.5, 1.5, (1, 4))
    t_host = rng.standard_normal((3, 1))
    c = xpnet.tensor(c_host)
    out, tangent = jvp(lambda x: fns[op](x, c), (xpnet.tensor(x_host),), (xpnet.tensor(t_host),))
    assert out.shape == tangent.shape == (3, 4)
    eps = 1e-6
    ahead = fns[op](xpnet.tensor(x_host + eps * t_host), c).numpy()
    behind = fns[op](xpnet.tensor(x_host - eps * t_host), c).numpy()
    np.testing.assert_allclose(tangent.numpy(), (ahead - behind) / (2 * eps), rtol=1e-6, atol=1e-8)


class CubeNoBackward(Function):
    """y = x³; dy = 3 x² dx in forward mode. Its backward fails, so jvp must not use it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        raise AssertionError("reverse mode must not run inside jvp")

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return 3 * x * x * t


class NoJvp(Function):
    """y = 2x, with no forward-mode rule."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return 2 * g


def test_jvp_uses_the_jvp_rules_not_reverse_mode(backend):
    x = xpnet.tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True)
    out, tangent = jvp(lambda t: CubeNoBackward.apply(t).exp(), x, xpnet.ones_like(x))
    x3 = np.array([1.0, -8.0, 0.125])
    np.testing.assert_allclose(out.numpy(), np.exp(x3))
    np.testing.assert_allclose(tangent.numpy(), np.exp(x3) * 3 * np.array([1.0, 4.0, 0.25]))
    assert x.grad is None


def test_jvp_through_a_function_without_rule_names_it(backend):
    x = xpnet.tensor(np.ones(2))
    with pytest.raises(TypeError, match="NoJvp has no jvp rule"):
        jvp(lambda t: NoJvp.apply(t), x, x)


def test_jvp_partial_tangents_and_tuple_outputs(backend):
    a = xpnet.tensor(np.array([1.0, 2.0]))
    b = xpnet.tensor(np.array([3.0, -1.0]))
    (p, q), (tp, tq) = jvp(lambda a, b: (a * b, b.exp()), (a, b), (xpnet.ones_like(a), None))
    np.testing.assert_allclose(tp.numpy(), [3.0, -1.0])  # d(ab)/da · 1 = b
    np.testing.assert_allclose(tq.numpy(), [0.0, 0.0])  # exp(b) has no tangent: zeros
    np.testing.assert_allclose(p.numpy(), [3.0, -2.0])
    # comparisons and argmax inside forward mode carry no tangent and do not fail
    out, t = jvp(lambda a: xpnet.where(a > 1.5, a * 2.0, a), a, xpnet.ones_like(a))
    np.testing.assert_allclose(t.numpy(), [1.0, 2.0])


def test_jvp_rejects_mismatched_tangent(backend):
    a = xpnet.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"jvp: tangent 0 has shape \(3,\), expected \(2, 3\)"):
        jvp(lambda t: t * 2.0, a, xpnet.tensor(np.ones(3)))


def test_vjp_bare_and_tuple_forms(backend):
    x = xpnet.tensor(np.array([0.5, -1.0, 2.0]))
    y = xpnet.tensor(np.array([1.0, 3.0, -2.0]))
    out, g = vjp(lambda t: t * t, x, xpnet.tensor(np.array([1.0, 0.5, -1.0])))
    np.testing.assert_allclose(g.numpy(), 2 * np.array([0.5, -1.0, 2.0]) * [1.0, 0.5, -1.0])
    assert out.grad_fn is None
    outs, (gx, gy) = vjp(lambda a, b: (a * b, a.sum()), (x, y),
                         (xpnet.tensor(np.ones(3)), xpnet.tensor(np.array(2.0))))
    np.testing.assert_allclose(gx.numpy(), np.array([1.0, 3.0, -2.0]) + 2.0)
    np.testing.assert_allclose(gy.numpy(), [0.5, -1.0, 2.0])
    # an input that f ignores gets a zero gradient
    _, (g0, g1) = vjp(lambda a, b: a * 3.0, (x, y), xpnet.tensor(np.ones(3)))
    np.testing.assert_array_equal(g1.numpy(), np.zeros(3))


def test_grad_transform(backend):
    f = lambda w, x: ((x @ w).tanh() ** 2).sum()  # noqa: E731
    w = xpnet.tensor(np.array([0.3, -0.2]))
    x = xpnet.tensor(np.array([[1.0, 2.0], [-1.0, 0.5], [0.0, 1.0]]))
    gw, gx = grad(f)(w, x)
    z = np.tanh(x.numpy() @ w.numpy())
    np.testing.assert_allclose(gw.numpy(), x.numpy().T @ (2 * z * (1 - z ** 2)), rtol=1e-12)
    np.testing.assert_allclose(grad(f, argnums=0)(w, x).numpy(), gw.numpy())
    assert isinstance(grad(lambda a: (a * a).sum())(w), xpnet.Tensor)
    with pytest.raises(ValueError, match="grad: f must return a one-element Tensor"):
        grad(lambda a: a * 2.0)(w)


def test_hessian_of_quadratic_form(backend):
    rng = np.random.default_rng(11)
    a = rng.standard_normal((4, 4))
    b = rng.standard_normal(4)
    x0 = rng.standard_normal(4)
    A, B = xpnet.tensor(a), xpnet.tensor(b)
    h = hessian(lambda x: 0.5 * (x @ (A @ x)) + (B * x).sum() + 3.0, xpnet.tensor(x0))
    np.testing.assert_allclose(h.numpy(), (a + a.T) / 2, rtol=1e-8, atol=1e-8)


def test_hessian_of_logistic_loss(backend):
    rng = np.random.default_rng(12)
    features = rng.standard_normal((20, 3))
    labels = rng.choice([-1.0, 1.0], 20)
    w0 = rng.standard_normal(3) * 0.5
    X, y = xpnet.tensor(features), xpnet.tensor(labels)

    def loss(w):  # Σ log(1 + exp(-y x·w))
        margin = -(y * (X @ w))
        return xpnet.logsumexp(xpnet.stack([xpnet.zeros_like(margin), margin], axis=1), axis=1).sum()

    h = hessian(loss, xpnet.tensor(w0))
    p = 1 / (1 + np.exp(-features @ w0))
    closed = features.T @ (features * (p * (1 - p))[:, None])
    np.testing.assert_allclose(h.numpy(), closed, rtol=1e-7, atol=1e-8)
    assert h.shape == (3, 3)


def test_hessian_of_matrix_input_has_doubled_shape(backend):
    x0 = np.array([[1.0, 2.0], [0.5, -1.0]])
    h = hessian(lambda x: (x ** 3).sum(), xpnet.tensor(x0))
    assert h.shape == (2, 2, 2, 2)
    expected = np.zeros((4, 4))
    expected[np.arange(4), np.arange(4)] = 6 * x0.reshape(-1)
    np.testing.assert_allclose(h.numpy().reshape(4, 4), expected, rtol=1e-7, atol=1e-7)
