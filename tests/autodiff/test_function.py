"""Function.apply: its two-operand path (the arithmetic operators, two-argument Functions) gives
what its general path gives; which Functions have their gradient shapes checked by backward."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet import nn
from xpnet.autodiff import Function
from xpnet.autodiff import function as function_module
from xpnet.autodiff.ops import elementwise

OPS = {"add": (lambda x, y: x + y, elementwise.Add), "sub": (lambda x, y: x - y, elementwise.Sub),
       "mul": (lambda x, y: x * y, elementwise.Mul), "div": (lambda x, y: x / y, elementwise.Div)}

# each operand: a Tensor that requires grad ("grad"), a Tensor that does not ("const"), a
# Parameter ("param"), a Python float ("float"), a Python int ("int")
KINDS = [("grad", "grad"), ("grad", "const"), ("const", "grad"), ("const", "const"), ("grad", "float"),
         ("float", "grad"), ("int", "grad"), ("param", "grad"), ("grad", "param")]


def _operand(kind, host):
    if kind == "grad":
        return xpnet.tensor(host, requires_grad=True)
    if kind == "const":
        return xpnet.tensor(host)
    if kind == "param":
        return nn.Parameter(xpnet.tensor(host))
    return 1.75 if kind == "float" else 3


def _run(fn, kinds, hosts):
    """(output, its node's Function and needs_input_grad, the operands' gradients) for fn."""
    x, y = (_operand(k, h) for k, h in zip(kinds, hosts))
    out = fn(x, y)
    node = out.grad_fn
    meta = (out.requires_grad, None if node is None else (node.fn, node.needs_input_grad,
                                                          tuple(t is not None for t in node.inputs)))
    grads = []
    if out.requires_grad:
        out.backward(xpnet.tensor(np.linspace(-1.0, 1.5, out.numel()).reshape(out.shape)))
        grads = [xpnet.to_numpy(v.grad.data) for v in (x, y) if isinstance(v, xpnet.Tensor) and v.requires_grad]
    return xpnet.to_numpy(out.data), meta, grads


@pytest.mark.parametrize("kinds", KINDS, ids=["-".join(k) for k in KINDS])
@pytest.mark.parametrize("op", sorted(OPS))
def test_two_operand_path_gives_what_the_general_path_gives(backend, monkeypatch, op, kinds):
    rng = np.random.default_rng(5)
    hosts = (rng.uniform(0.5, 2.0, (3, 4)), rng.uniform(0.5, 2.0, (4,)))  # broadcast: (3, 4) with (4,)
    operator, cls = OPS[op]
    taken = []
    two = function_module._apply_two

    def counting(c, a, b):
        result = two(c, a, b)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(function_module, "_apply_two", counting)
    fast = _run(lambda a, b: cls.apply(a, b), kinds, hosts)
    assert taken == [True]  # the two-operand path ran, and did not decline
    monkeypatch.setattr(function_module, "_apply_two", lambda c, a, b: None)
    general = _run(lambda a, b: cls.apply(a, b), kinds, hosts)
    by_operator = _run(operator, kinds, hosts)  # the operators call the two-operand path directly

    for got in (fast, by_operator):
        np.testing.assert_array_equal(got[0], general[0])
        assert got[1] == general[1]
        assert len(got[2]) == len(general[2])
        for g, want in zip(got[2], general[2]):
            np.testing.assert_array_equal(g, want)
    if "grad" in kinds or "param" in kinds:
        assert general[1][0] and general[1][1][0] is cls


def test_two_operand_path_declines_what_only_the_general_path_handles(backend):
    x = xpnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    add = elementwise.Add
    raw = xpnet.tensor(np.array([3.0, 4.0])).data
    assert function_module._apply_two(add, x, raw) is None  # a raw array: apply unwraps and checks it
    assert function_module._apply_two(add, x, np.float64(2.0)) is None  # a NumPy scalar
    assert function_module._apply_two(add, 1.0, 2.0) is None  # no Tensor at all
    assert function_module._apply_two(add, x, "a") is None
    # and apply still gives the right answers for them
    np.testing.assert_array_equal((x + raw).numpy(), [4.0, 6.0])
    np.testing.assert_array_equal((x + np.float64(2.0)).numpy(), [3.0, 4.0])
    assert (x * np.float32(2.0)).dtype == x.dtype  # a NumPy scalar acts as the Python number


class _TwoOutputs(Function):
    """(x * k, x + k) for a Tensor x and a number k: two outputs through the two-operand path."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.k = k
        return x * k, x + k

    @staticmethod
    def backward(ctx, g_prod, g_sum):
        return g_prod * ctx.k + g_sum, None


def test_two_operand_path_records_multi_output_nodes(backend):
    x = xpnet.tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True)
    prod, total = _TwoOutputs.apply(x, 3.0)
    assert prod.grad_fn is total.grad_fn and prod.grad_fn.n_outputs == 2
    (prod.sum() + total.sum() * 2.0).backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0, 5.0])  # 3 + 2
    # only one output used: the other's gradient is taken as zero
    y = xpnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    _TwoOutputs.apply(y, 4.0)[1].sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [1.0, 1.0])


class _UserSquare(elementwise.Square):
    """A user's Function, here a subclass of one of xpnet's own."""


def test_gradient_shapes_are_checked_for_functions_defined_outside_xpnet():
    # a Function defined here (a user's, even a subclass of xpnet's own) has its gradients'
    # shapes checked; xpnet's own do not (the suite checks theirs against finite differences)
    assert _UserSquare.check_grad_shapes and _TwoOutputs.check_grad_shapes
    assert not elementwise.Add.check_grad_shapes and not elementwise.Mul.check_grad_shapes
    from xpnet.nn import functional  # noqa: F401 - loads the layers' Functions

    own = [c for c in _all_subclasses(Function) if c.__module__.startswith("xpnet.")]
    assert len(own) > 50 and not any(c.check_grad_shapes for c in own)

    class Trusted(elementwise.Add):
        check_grad_shapes = False  # a class that sets the flag keeps its own choice

    assert not Trusted.check_grad_shapes


def _all_subclasses(cls):
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out
