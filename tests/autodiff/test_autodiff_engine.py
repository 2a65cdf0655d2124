"""The reverse-mode engine around the operations: no_grad, freeing the graph, accumulation,
device checks, error messages, retain_graph."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import xpnet
from xpnet.autodiff import Function


def _params(rng):
    w1 = xpnet.tensor(rng.standard_normal((4, 8)), requires_grad=True)
    w2 = xpnet.tensor(rng.standard_normal((8, 3)), requires_grad=True)
    return w1, w2


def _loss(x, w1, w2):
    hidden = (x @ w1).tanh()
    return hidden, (hidden @ w2).log_softmax(axis=1)[:, 0].mean() * -1.0


def test_no_grad_records_nothing(backend):
    x = xpnet.tensor(np.ones(3), requires_grad=True)
    with xpnet.no_grad():
        assert not xpnet.is_grad_enabled()
        y = (x * 2.0).exp().sum()
        with xpnet.enable_grad():
            z = x * 3.0
    assert y.grad_fn is None and not y.requires_grad
    assert z.grad_fn is not None and z.requires_grad
    assert xpnet.is_grad_enabled()

    @xpnet.no_grad()
    def doubled(t):
        return t * 2.0

    assert doubled(x).grad_fn is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_graph_is_freed_after_backward(backend):
    rng = np.random.default_rng(0)
    x = xpnet.tensor(rng.standard_normal((5, 4)))
    w1, w2 = _params(rng)

    def build():
        hidden, loss = _loss(x, w1, w2)
        return weakref.ref(hidden.data), weakref.ref(hidden.grad_fn), loss

    hidden_array, hidden_node, loss = build()
    gc.collect()
    assert hidden_array() is not None and hidden_node() is not None  # the graph holds them
    loss.backward()
    gc.collect()
    # ``loss`` is still alive, yet the activation it was computed from has been released
    assert hidden_array() is None
    assert hidden_node() is None
    assert w1.grad is not None and w2.grad is not None


class _KeepsAttribute(Function):
    """y = 3x, keeping an array as a plain context attribute (not through save_for_backward)."""

    kept = None

    @staticmethod
    def forward(ctx, x):
        ctx.scaled = x * 3.0
        _KeepsAttribute.kept = weakref.ref(ctx.scaled)
        return ctx.scaled + 0.0

    @staticmethod
    def backward(ctx, g):
        assert ctx.scaled is not None
        return g * 3.0


def test_context_attributes_are_released_after_backward(backend):
    x = xpnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = _KeepsAttribute.apply(x)
    node = y.grad_fn
    assert node.ctx is node and not node.freed  # forward's context is the graph's node
    loss = y.sum()
    gc.collect()
    assert _KeepsAttribute.kept() is not None
    loss.backward()
    gc.collect()
    # y and its node are still alive, but what forward left on the context is not
    assert _KeepsAttribute.kept() is None
    assert node.freed and repr(node) == "<_KeepsAttributeBackward>"
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])
    with pytest.raises(RuntimeError, match="a second time"):
        y.sum().backward()


def test_many_iterations_do_not_grow_memory(backend):
    rng = np.random.default_rng(1)
    x = xpnet.tensor(rng.standard_normal((5, 4)))
    w1, w2 = _params(rng)
    still_alive = 0

    def step():
        nonlocal still_alive
        w1.grad = None
        w2.grad = None
        hidden, loss = _loss(x, w1, w2)
        activation = weakref.ref(hidden.data)
        del hidden
        loss.backward()
        # released by backward itself, while the loss lives on, without waiting for gc
        still_alive += activation() is not None
        return loss

    for _ in range(20):
        step()
    gc.collect()
    objects_before = len(gc.get_objects())
    for _ in range(1000):
        loss = step()  # the last loss stays alive, as in a training loop
    gc.collect()
    objects_after = len(gc.get_objects())
    assert still_alive == 0
    assert objects_after - objects_before < 100, (objects_before, objects_after)
    assert loss.grad_fn is not None and w1.grad is not None


def test_gradients_accumulate_over_backward_calls(backend):
    x = xpnet.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    first = x.grad.numpy()
    np.testing.assert_allclose(first, [2.0, -4.0, 6.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)
    # a Tensor used twice in one graph gets both contributions
    x.grad = None
    (x * 2.0 + x.exp()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2.0 + np.exp([1.0, -2.0, 3.0]))
    assert x.grad.grad_fn is None and not x.grad.requires_grad


def test_backward_twice_needs_retain_graph(backend):
    x = xpnet.tensor(np.array([0.5, 1.5]), requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([0.5, 1.5]) * (1 + np.array([0.5, 1.5])))
    with pytest.raises(RuntimeError, match="a second time.*retain_graph=True"):
        y.backward()
    # a shared intermediate freed by one backward cannot be reused by another
    h = x * 3.0
    a, b = h.sum(), (h * h).sum()
    a.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        b.backward()


def _other_device_tensor(backend, data):
    """The same data on another device (strict's device1) or another backend (for numpy)."""
    if backend.name == "array_api_strict":
        with xpnet.use_backend("array_api_strict", "device1"):
            return xpnet.tensor(data)
    with xpnet.use_backend("array_api_strict"):
        return xpnet.tensor(data)


def test_device_mismatch_is_an_error_naming_the_op(backend):
    a = xpnet.tensor(np.ones((2, 2)), requires_grad=True)
    b = _other_device_tensor(backend, np.ones((2, 2)))
    for op, name in ((lambda: a + b, "Add"), (lambda: a @ b, "MatMul"),
                     (lambda: xpnet.concat([a, b]), "Concat"), (lambda: xpnet.where(a > 0, a, b), "Where"),
                     (lambda: xpnet.maximum(a, b), "Maximum")):
        with pytest.raises(xpnet.DeviceMismatchError, match=name) as info:
            op()
        assert "different devices" in str(info.value)
    if backend.name == "array_api_strict":
        assert "CPU_DEVICE" in str(info.value) and "device1" in str(info.value)


def test_errors_name_the_op_and_shapes(backend):
    a = xpnet.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: a has shape \(2, 3\) and b has shape \(2, 3\)"):
        a @ a
    with pytest.raises(ValueError, match="^Add: "):
        a + xpnet.tensor(np.ones(4))
    with pytest.raises(ValueError, match="^Reshape: "):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match="sum: axis 2 is out of range for an input of 2 dimensions"):
        a.sum(axis=2)
    with pytest.raises(TypeError, match="sum: got both axis=0 and dim=1"):
        xpnet.sum(a, axis=0, dim=1)
    with pytest.raises(ValueError, match=r"permute: \(0, 0\) is not a permutation"):
        a.permute(0, 0)
    with pytest.raises(ValueError, match=r"expand: cannot broadcast shape \(2, 3\) to \(2, 4\)"):
        a.expand(2, 4)
    with pytest.raises(TypeError, match="where: condition must be a boolean"):
        xpnet.where(a, a, a)

    class BadShape(Function):
        """y = 2x with a backward that returns the wrong shape."""

        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, g):
            return g[0, ...]

    with pytest.raises(RuntimeError, match=r"BadShape.backward returned a gradient of shape \(3,\) for an input of shape \(2, 3\)"):
        BadShape.apply(a).sum().backward()


def test_custom_function_and_needs_input_grad(backend):
    seen = {}

    class Scale(Function):
        """y = a x for a Tensor a and x.        dL/da = Σ G x, dL/dx = a G"""

        @staticmethod
        def forward(ctx, a, x, offset=0.0):
            seen["needs"] = ctx.needs_input_grad
            ctx.save_for_backward(a, x)
            return a * x + offset

        @staticmethod
        def backward(ctx, g):
            a, x = ctx.saved_tensors
            return (g * x).sum() if ctx.needs_input_grad[0] else None, a * g

    a = xpnet.tensor(np.array(2.0))
    x = xpnet.tensor(np.array([1.0, 3.0]), requires_grad=True)
    y = Scale.apply(a, x, offset=1.0)
    np.testing.assert_allclose(y.numpy(), [3.0, 7.0])
    assert seen["needs"] == (False, True)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])
    assert a.grad is None


def test_tensor_method_table_is_complete(backend):
    x = xpnet.tensor(np.arange(6.0).reshape(2, 3) + 1.0)
    names = ("exp log sqrt abs tanh sigmoid relu clip sum mean max min var std reshape transpose permute "
             "flatten squeeze unsqueeze logsumexp softmax log_softmax maximum minimum argmax argmin view "
             "expand square split astype").split()
    calls = {"reshape": (3, 2), "view": (6,), "permute": (1, 0), "maximum": (x,), "minimum": (x,),
             "expand": (2, 3), "split": (1,), "unsqueeze": (0,), "astype": (xpnet.float32,)}
    for name in names:
        out = getattr(x, name)(*calls.get(name, ()))
        assert isinstance(out, (xpnet.Tensor, tuple)), name
    np.testing.assert_allclose((-x).numpy(), -x.numpy())
    np.testing.assert_allclose(x.clamp(2.0, 4.0).numpy(), np.clip(x.numpy(), 2.0, 4.0))


def test_copy_moves_values_from_any_backend(backend):
    import numpy as np

    t = xpnet.zeros(2, 3)
    t.copy_(np.arange(3, dtype=np.float64))  # host NumPy, another dtype, broadcast along rows
    assert xpnet.float32 == t.dtype and xpnet.backend_of(t.data).name == backend.name
    np.testing.assert_array_equal(xpnet.to_numpy(t), [[0, 1, 2], [0, 1, 2]])
    other = xpnet.to_device(np.ones((2, 3)), "array_api_strict", "device2")
    t.copy_(other)
    assert xpnet.backends.describe_device(t.data) == str(backend)
    np.testing.assert_array_equal(xpnet.to_numpy(t), np.ones((2, 3)))


def _host(t):
    return np.array(xpnet.to_numpy(t.grad))


def test_leaf_gradients_never_alias_each_other_or_later_work(backend, rng):
    # Add hands the same G to both leaves: each keeps its own copy
    a = xpnet.tensor(rng.standard_normal(5), requires_grad=True)
    b = xpnet.tensor(rng.standard_normal(5), requires_grad=True)
    (a + b).sum().backward()
    assert a.grad.data is not b.grad.data
    # Affine and convolutions hand over new arrays (Function.owns_grads): a parameter's gradient
    # stays as it was while other layers of other shapes run their backward after it
    from xpnet import nn

    xpnet.manual_seed(0)
    lin, conv = nn.Linear(6, 4).double(), nn.Conv2d(2, 3, 3, padding=1).double()
    x = xpnet.tensor(rng.standard_normal((2, 6)))
    lin(x).sum().backward()
    kept = lin.weight.grad.data
    expected = _host(lin.weight)
    conv(xpnet.tensor(rng.standard_normal((2, 2, 5, 5)))).sum().backward()
    nn.Linear(6, 4).double()(xpnet.tensor(rng.standard_normal((3, 6)))).sum().backward()
    assert lin.weight.grad.data is kept
    np.testing.assert_array_equal(_host(lin.weight), expected)
    # the gradient of sum(x W^T + b): dW = 1^T x, db = N; a second backward accumulates
    np.testing.assert_allclose(expected, np.tile(xpnet.to_numpy(x).sum(0), (4, 1)), rtol=1e-12)
    lin(x).sum().backward()
    np.testing.assert_allclose(_host(lin.weight), 2 * expected, rtol=1e-12)
    np.testing.assert_allclose(_host(lin.bias), np.full(4, 4.0), rtol=1e-12)


@pytest.mark.parametrize("channels", [(1, 6), (3, 32), (20, 24)])
def test_convolution_weight_gradients_survive_later_convolutions(rng, channels):
    # every NumPy convolution path (compiled few-channel, planes, NHWC) returns arrays of its own
    from xpnet import nn

    c, o = channels
    xpnet.manual_seed(1)
    first, second = nn.Conv2d(c, o, 5, padding=2).float(), nn.Conv2d(c, o, 5, padding=2).float()
    x = xpnet.tensor(rng.standard_normal((4, c, 12, 12)).astype("float32"))
    first(x).sum().backward()
    kept_w, kept_b = _host(first.weight), _host(first.bias)
    second(xpnet.tensor(rng.standard_normal((4, c, 12, 12)).astype("float32"))).sum().backward()
    np.testing.assert_array_equal(_host(first.weight), kept_w)
    np.testing.assert_array_equal(_host(first.bias), kept_b)
    np.testing.assert_allclose(kept_b, np.full(o, 4 * 144.0), rtol=1e-5)
